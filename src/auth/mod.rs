//! Who may use the HTTP listener: signed play URLs ([`PlayAccess`], `http.play_secret`),
//! the `/api/*` guard ([`ApiGuard`], `http.api_token`), the client address behind trusted
//! proxies ([`TrustedProxies`], `http.trusted_proxies`), and [`Secret`], the type of every
//! setting that must never be printed.
//!
//! The checks themselves are pure (`play_url`, `client_addr`); this module adds only the
//! clock and the axum middleware. It names no stream, hub or protocol of the gateway's.

pub mod client_addr;
pub mod play_url;
pub mod secret;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use client_addr::{ClientAddr, Forwarding, TrustedProxies};
pub use play_url::{PlayDenied, PlaySigner};
pub use secret::Secret;

use crate::config::HttpSettings;

/// The play-URL policy of `[http]`: open (no `http.play_secret`) or signed (cheap to
/// clone).
#[derive(Debug, Clone, Default)]
pub struct PlayAccess {
    signer: Option<PlaySigner>,
    ttl: Duration,
}

impl PlayAccess {
    /// The policy `settings` configure.
    pub fn new(settings: &HttpSettings) -> PlayAccess {
        let secret = &settings.play_secret;
        PlayAccess {
            signer: (!secret.is_empty()).then(|| PlaySigner::new(secret.expose().as_bytes())),
            ttl: settings.play_ttl,
        }
    }

    /// Whether plays need a signature.
    pub fn is_signed(&self) -> bool {
        self.signer.is_some()
    }

    /// Whether a play of `path` with `query` (without `?`) may go on now.
    pub fn check(&self, path: &str, query: Option<&str>) -> Result<(), PlayDenied> {
        self.check_any(&[path], query)
    }

    /// Whether a play of a stream known by any of `paths` may go on now.
    pub fn check_any(&self, paths: &[&str], query: Option<&str>) -> Result<(), PlayDenied> {
        match &self.signer {
            None => Ok(()),
            Some(signer) => signer.verify_any(paths, query.unwrap_or_default(), unix_now()),
        }
    }

    /// `url` signed over its own path for `http.play_ttl` (unchanged when open).
    pub fn sign(&self, url: &str) -> String {
        self.sign_as(url, play_url::path_of(url))
    }

    /// `url` signed over `path` for `http.play_ttl` (unchanged when open).
    pub fn sign_as(&self, url: &str, path: &str) -> String {
        self.sign_for(url, path, self.ttl)
            .unwrap_or_else(|| url.to_owned())
    }

    /// `url` signed over `path`, valid for `ttl` from now; `None` when open.
    pub fn sign_for(&self, url: &str, path: &str, ttl: Duration) -> Option<String> {
        let signer = self.signer.as_ref()?;
        let expires = unix_now().saturating_add(ttl.as_secs());
        Some(signer.sign_url_as(url, path, expires))
    }
}

/// The `/api/*` guard: with `http.api_token`, `Authorization: Bearer {token}`; without,
/// loopback clients only.
#[derive(Debug, Clone)]
pub struct ApiGuard {
    token: Secret,
}

impl ApiGuard {
    /// The guard `settings` configure.
    pub fn new(settings: &HttpSettings) -> ApiGuard {
        ApiGuard {
            token: settings.api_token.clone(),
        }
    }

    /// Whether a request from `client` with `authorization` may use the API; the status
    /// and reason when not.
    fn admit(
        &self,
        client: Option<IpAddr>,
        authorization: Option<&[u8]>,
    ) -> Result<(), (StatusCode, &'static str)> {
        if self.token.is_empty() {
            return match client {
                Some(ip) if is_loopback(ip) => Ok(()),
                _ => Err((
                    StatusCode::FORBIDDEN,
                    "the API answers loopback clients only while http.api_token is unset\n",
                )),
            };
        }
        let Some(given) = authorization.and_then(|value| value.strip_prefix(b"Bearer ")) else {
            return Err((
                StatusCode::UNAUTHORIZED,
                "the API needs Authorization: Bearer <http.api_token>\n",
            ));
        };
        if self.token.matches(given.trim_ascii()) {
            Ok(())
        } else {
            Err((StatusCode::FORBIDDEN, "wrong API token\n"))
        }
    }
}

/// Middleware for the `/api/*` routes (`axum::middleware::from_fn_with_state`).
pub async fn guard_api(State(guard): State<ApiGuard>, request: Request, next: Next) -> Response {
    let client = request
        .extensions()
        .get::<ClientAddr>()
        .map(|c| c.0)
        .or_else(|| {
            request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip())
        });
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match guard.admit(client, authorization) {
        Ok(()) => next.run(request).await,
        Err((status, reason)) => {
            let mut response = (status, reason).into_response();
            if status == StatusCode::UNAUTHORIZED {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            response
        }
    }
}

/// Seconds since the UNIX epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// 127.0.0.0/8 and ::1, also as an IPv4-mapped IPv6 address (a dual-stack listener's view
/// of an IPv4 client).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
        || matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_guard_wants_loopback_or_the_token() {
        let open = ApiGuard {
            token: Secret::default(),
        };
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(open.admit(ip("127.0.0.1"), None).is_ok());
        assert!(open.admit(ip("::1"), None).is_ok());
        assert!(open.admit(ip("::ffff:127.0.0.1"), None).is_ok());
        let (status, reason) = open.admit(ip("192.0.2.1"), None).unwrap_err();
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(reason.contains("loopback"));
        assert!(open.admit(None, None).is_err());

        let guarded = ApiGuard {
            token: Secret::new("t0ken"),
        };
        assert_eq!(
            guarded.admit(ip("127.0.0.1"), None).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            guarded
                .admit(ip("192.0.2.1"), Some(b"Bearer nope"))
                .unwrap_err()
                .0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            guarded
                .admit(ip("192.0.2.1"), Some(b"Basic dDBrZW4="))
                .unwrap_err()
                .0,
            StatusCode::UNAUTHORIZED
        );
        assert!(
            guarded
                .admit(ip("192.0.2.1"), Some(b"Bearer t0ken"))
                .is_ok()
        );
    }

    #[test]
    fn comparison_is_exact() {
        assert!(secret::constant_time_eq(b"abc", b"abc"));
        assert!(!secret::constant_time_eq(b"abc", b"abd"));
        assert!(!secret::constant_time_eq(b"abc", b"ab"));
        assert!(Secret::new("abc").matches(b"abc"));
        assert!(!Secret::new("abc").matches(b"abcd"));
    }
}
