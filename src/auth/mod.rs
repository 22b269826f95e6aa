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
use crate::control::access::Role;

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
/// loopback clients only. Either way, an `[[mqtt.users]]` user of the `viewer` or `admin`
/// role may log in with HTTP Basic (the console beyond loopback).
#[derive(Debug, Clone)]
pub struct ApiGuard {
    token: Secret,
    logins: Option<std::sync::Arc<ApiLogins>>,
}

impl ApiGuard {
    /// The guard `settings` configure, with `users` (`[[mqtt.users]]`) as Basic logins.
    pub fn new(settings: &HttpSettings, users: &[crate::config::MqttUser]) -> ApiGuard {
        let logins = users
            .iter()
            .any(|u| matches!(u.role, Role::Viewer | Role::Admin))
            .then(|| ApiLogins::new(users))
            .flatten()
            .map(std::sync::Arc::new);
        ApiGuard {
            token: settings.api_token.clone(),
            logins,
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
    let refused = match guard.admit(client, authorization) {
        Ok(()) => return next.run(request).await,
        Err(refused) => refused,
    };
    // an MQTT user's Basic login, when the configuration has such users
    let basic = authorization.and_then(basic_credentials);
    if let (Some(logins), Some((user, password)), Some(ip)) = (&guard.logins, basic, client) {
        return match logins.check(ip, user, password).await {
            Ok(()) => next.run(request).await,
            Err(refusal) => refusal.into_response(),
        };
    }
    let (status, reason) = refused;
    let mut response = (status, reason).into_response();
    if status == StatusCode::UNAUTHORIZED {
        let challenge = if guard.logins.is_some() {
            "Bearer, Basic realm=\"jt1078-gateway\""
        } else {
            "Bearer"
        };
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    response
}

/// User and password of `Authorization: Basic …`.
fn basic_credentials(authorization: &[u8]) -> Option<(String, String)> {
    use base64::Engine;
    let encoded = authorization.strip_prefix(b"Basic ")?.trim_ascii();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// `[[mqtt.users]]` of the `viewer` or `admin` role as API logins: the broker's checks
/// (argon2id, the first time, then a cached digest) behind the broker's brute-force brake.
pub struct ApiLogins {
    users: crate::control::auth::Authenticator,
    throttle: std::sync::Mutex<crate::control::auth::Throttle>,
}

impl std::fmt::Debug for ApiLogins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiLogins").finish_non_exhaustive()
    }
}

impl ApiLogins {
    /// `None` when the users do not load (the broker refuses to start on them anyway).
    fn new(users: &[crate::config::MqttUser]) -> Option<ApiLogins> {
        use crate::config::AllowAnonymous;
        use crate::control::auth::Authenticator;
        use argon2::password_hash::rand_core::{OsRng, RngCore};
        // no device logins, no anonymous one, and a gateway password nobody knows
        let nobody = format!(
            "{:032x}",
            u128::from(OsRng.next_u64()) << 64 | u128::from(OsRng.next_u64())
        );
        let users = Authenticator::new(users, "", AllowAnonymous::Never, nobody).ok()?;
        Some(ApiLogins {
            users,
            throttle: std::sync::Mutex::new(Default::default()),
        })
    }

    /// Whether `user` with `password` from `ip` may use the API.
    async fn check(
        self: &std::sync::Arc<Self>,
        ip: IpAddr,
        user: String,
        password: String,
    ) -> Result<(), (StatusCode, &'static str)> {
        use crate::control::access::Principal;
        use crate::control::auth::Admission;
        let admission = match self.throttle.lock() {
            Ok(mut throttle) => throttle.admit(ip, &user, tokio::time::Instant::now()),
            Err(_) => Admission::Refuse,
        };
        match admission {
            Admission::Wait(wait) => tokio::time::sleep(wait).await,
            Admission::Refuse => {
                return Err((
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many failed logins from this address; try again later\n",
                ));
            }
        }
        let this = std::sync::Arc::clone(self);
        let name = user.clone();
        // argon2id takes tens of milliseconds the first time: off the I/O thread
        let verdict = tokio::task::spawn_blocking(move || {
            this.users
                .authenticate(ip, "http-api", Some(&name), Some(&password))
                .map(|identity| identity.principal)
        })
        .await;
        match verdict {
            Ok(Ok(Principal::User {
                role: Role::Viewer | Role::Admin,
                ..
            })) => Ok(()),
            Ok(Ok(_)) => Err((
                StatusCode::FORBIDDEN,
                "this user's role may not use the API (viewer or admin may)\n",
            )),
            _ => {
                if let Ok(mut throttle) = self.throttle.lock() {
                    throttle.failed(ip, &user, tokio::time::Instant::now());
                }
                Err((StatusCode::FORBIDDEN, "wrong user or password\n"))
            }
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
            logins: None,
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
            logins: None,
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
