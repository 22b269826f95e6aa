//! Signed play URLs (`http.play_secret`): `?expires=UNIX_SECONDS&sig=HEX` where `sig` is
//! the lowercase hex HMAC-SHA256, keyed with the secret, of `"{path}:{expires}"` and
//! `path` is the URL's path without its query (`/live/13800138000_1.flv`).
//!
//! Pure: the time is an argument, nothing here reads a clock or a socket. The signature is
//! compared in constant time (`hmac`'s `verify_slice`); the MAC is checked before the
//! expiry, so "expired" is only ever said of a URL this gateway signed.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Length of a signature in hex digits (32 bytes).
const SIG_HEX_LEN: usize = 64;

/// Signs and checks play URLs with one secret (cheap to clone: the keyed MAC state is
/// computed once and cloned per use).
#[derive(Clone)]
pub struct PlaySigner {
    mac: HmacSha256,
}

/// Why a play was refused; its `Display` is the 403 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlayDenied {
    /// No `expires` or no `sig` in the query.
    #[error(
        "this play needs a signed URL (?expires=UNIX_SECONDS&sig=HEX, http.play_secret is \
         set): {missing} is missing"
    )]
    Missing {
        /// The parameter not found.
        missing: &'static str,
    },
    /// `expires` is not a number of seconds.
    #[error("expires must be UNIX seconds (digits only)")]
    BadExpires,
    /// `sig` is not 64 hex digits.
    #[error("sig must be 64 hex digits (HMAC-SHA256)")]
    BadSignatureFormat,
    /// The signature is not the one of this path and expiry.
    #[error(
        "the signature does not match this path and expiry (forged or signed for another path)"
    )]
    Forged,
    /// A genuine signature whose time is past.
    #[error("the signed URL expired at {expires} (now {now}); ask for a new one")]
    Expired {
        /// The URL's `expires`.
        expires: u64,
        /// The time of the check.
        now: u64,
    },
}

impl std::fmt::Debug for PlaySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlaySigner(<redacted>)")
    }
}

impl PlaySigner {
    /// A signer keyed with `secret` (any length; HMAC accepts every key).
    pub fn new(secret: &[u8]) -> PlaySigner {
        let mac = match HmacSha256::new_from_slice(secret) {
            Ok(mac) => mac,
            // HMAC hashes a long key and pads a short one: no length is invalid
            Err(hmac::digest::InvalidLength) => unreachable_key(),
        };
        PlaySigner { mac }
    }

    /// The lowercase hex signature of `path` until `expires`.
    pub fn signature(&self, path: &str, expires: u64) -> String {
        let tag = self.tag(path, expires).finalize().into_bytes();
        let mut hex = String::with_capacity(SIG_HEX_LEN);
        for byte in tag {
            hex.push(hex_digit(byte >> 4));
            hex.push(hex_digit(byte & 0xf));
        }
        hex
    }

    /// The query that makes `path` playable until `expires`: `expires=…&sig=…`.
    pub fn query(&self, path: &str, expires: u64) -> String {
        format!("expires={expires}&sig={}", self.signature(path, expires))
    }

    /// `url` (absolute, or a path) with the signature of its own path appended.
    pub fn sign_url(&self, url: &str, expires: u64) -> String {
        self.sign_url_as(url, path_of(url), expires)
    }

    /// `url` with the signature of `path` appended: for a URL whose own path does not name
    /// the stream (SRS's WHEP endpoint carries it in the query).
    pub fn sign_url_as(&self, url: &str, path: &str, expires: u64) -> String {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}{}", self.query(path, expires))
    }

    /// Whether `query` (without the `?`; other parameters may be there too) signs `path`
    /// at time `now` (UNIX seconds).
    pub fn verify(&self, path: &str, query: &str, now: u64) -> Result<(), PlayDenied> {
        self.verify_any(&[path], query, now)
    }

    /// Whether `query` signs one of `paths` at `now`: for a stream that has more than one
    /// path (SRS reports `/{app}/{stream}`, its HTTP-FLV URL ends in `.flv`).
    pub fn verify_any(&self, paths: &[&str], query: &str, now: u64) -> Result<(), PlayDenied> {
        let (expires, sig) = signature_params(query)?;
        let expires_secs: u64 = match expires.parse() {
            Ok(secs) if expires.bytes().all(|b| b.is_ascii_digit()) => secs,
            _ => return Err(PlayDenied::BadExpires),
        };
        let tag = decode_hex(sig).ok_or(PlayDenied::BadSignatureFormat)?;
        let genuine = paths
            .iter()
            .any(|path| self.tag(path, expires_secs).verify_slice(&tag).is_ok());
        if !genuine {
            return Err(PlayDenied::Forged);
        }
        if expires_secs < now {
            return Err(PlayDenied::Expired {
                expires: expires_secs,
                now,
            });
        }
        Ok(())
    }

    /// The MAC of `"{path}:{expires}"`, not yet finalised.
    fn tag(&self, path: &str, expires: u64) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(path.as_bytes());
        mac.update(b":");
        mac.update(expires.to_string().as_bytes());
        mac
    }
}

/// The path of `url` without its query: what is signed. `url` may be absolute
/// (`http://host:port/live/x.flv?a=1`) or a path.
pub fn path_of(url: &str) -> &str {
    let rest = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |at| &rest[at..]),
        None => url,
    };
    rest.split_once('?').map_or(rest, |(path, _)| path)
}

/// The raw `expires` and `sig` of a query (the first of each).
fn signature_params(query: &str) -> Result<(&str, &str), PlayDenied> {
    let query = query.strip_prefix('?').unwrap_or(query);
    let (mut expires, mut sig) = (None, None);
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("expires", value)) if expires.is_none() => expires = Some(value),
            Some(("sig", value)) if sig.is_none() => sig = Some(value),
            _ => {}
        }
    }
    match (expires, sig) {
        (Some(expires), Some(sig)) => Ok((expires, sig)),
        (None, _) => Err(PlayDenied::Missing { missing: "expires" }),
        (Some(_), None) => Err(PlayDenied::Missing { missing: "sig" }),
    }
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(nibble & 0xf)])
}

/// The 32 bytes of a 64-digit hex string (either case), or `None`.
fn decode_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != SIG_HEX_LEN {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        let high = char::from(*pair.first()?).to_digit(16)?;
        let low = char::from(*pair.get(1)?).to_digit(16)?;
        *byte = u8::try_from(high * 16 + low).ok()?;
    }
    Some(out)
}

#[cold]
fn unreachable_key() -> HmacSha256 {
    // `Hmac::new_from_slice` fails for no key length; should that ever change, an empty
    // key (still a keyed MAC no one else computes without the code) beats a panic
    match HmacSha256::new_from_slice(b"") {
        Ok(mac) => mac,
        Err(_) => unreachable_key(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/live/13800138000_1.flv";

    #[test]
    fn a_signature_is_the_hmac_sha256_of_path_and_expiry() {
        // the reference value, from `printf '%s' '/live/13800138000_1.flv:1700000000' |
        // openssl dgst -sha256 -hmac s3cret`
        let signer = PlaySigner::new(b"s3cret");
        let sig = signer.signature(PATH, 1_700_000_000);
        assert_eq!(
            sig,
            "d35649f0377495f41bb68d3545870554b11112d3ece3575ba76c8aa2547a0e6e"
        );
    }

    #[test]
    fn valid_expired_forged_wrong_path_and_missing() {
        let signer = PlaySigner::new(b"s3cret");
        let now = 1_700_000_000;
        let query = signer.query(PATH, now + 60);
        assert_eq!(signer.verify(PATH, &query, now), Ok(()));
        assert_eq!(
            signer.verify(PATH, &format!("?a=1&{query}&b=2"), now),
            Ok(())
        );
        // expired by one second
        let old = signer.query(PATH, now - 1);
        assert_eq!(
            signer.verify(PATH, &old, now),
            Err(PlayDenied::Expired {
                expires: now - 1,
                now
            })
        );
        // valid until the second it names
        assert_eq!(signer.verify(PATH, &signer.query(PATH, now), now), Ok(()));
        // forged: another secret, a changed expiry, a flipped digit
        let other = PlaySigner::new(b"guess").query(PATH, now + 60);
        assert_eq!(signer.verify(PATH, &other, now), Err(PlayDenied::Forged));
        let longer = query.replace(
            &format!("expires={}", now + 60),
            &format!("expires={}", now + 600),
        );
        assert_eq!(signer.verify(PATH, &longer, now), Err(PlayDenied::Forged));
        // wrong path
        assert_eq!(
            signer.verify("/live/13800138000_2.flv", &query, now),
            Err(PlayDenied::Forged)
        );
        // missing, malformed
        assert_eq!(
            signer.verify(PATH, "", now),
            Err(PlayDenied::Missing { missing: "expires" })
        );
        assert_eq!(
            signer.verify(PATH, &format!("expires={}", now + 60), now),
            Err(PlayDenied::Missing { missing: "sig" })
        );
        assert_eq!(
            signer.verify(PATH, "expires=-1&sig=00", now),
            Err(PlayDenied::BadExpires)
        );
        assert_eq!(
            signer.verify(PATH, "expires=+5&sig=00", now),
            Err(PlayDenied::BadExpires)
        );
        assert_eq!(
            signer.verify(PATH, &format!("expires={}&sig=zz", now + 60), now),
            Err(PlayDenied::BadSignatureFormat)
        );
        let upper = query
            .to_uppercase()
            .replace("EXPIRES", "expires")
            .replace("SIG", "sig");
        assert_eq!(
            signer.verify(PATH, &upper, now),
            Ok(()),
            "hex of either case"
        );
        // a multi-byte character where a hex digit should be is refused, not a panic
        let odd = format!("expires={}&sig={}", now + 60, "é".repeat(32));
        assert_eq!(
            signer.verify(PATH, &odd, now),
            Err(PlayDenied::BadSignatureFormat)
        );
    }

    #[test]
    fn urls_are_signed_over_their_path() {
        let signer = PlaySigner::new(b"k");
        let url = signer.sign_url("http://gw:9531/live/13800138000_1.flv", 5);
        assert!(url.starts_with("http://gw:9531/live/13800138000_1.flv?expires=5&sig="));
        let (path, query) = url.split_once('?').unwrap();
        assert_eq!(signer.verify(path_of(path), query, 5), Ok(()));
        let whep = signer.sign_url_as(
            "http://srs:1985/rtc/v1/whep/?app=live&stream=x",
            "/live/x",
            5,
        );
        assert!(whep.contains("stream=x&expires=5&sig="), "{whep}");
        let query = whep.split_once('?').unwrap().1;
        assert_eq!(
            signer.verify_any(&["/live/x.flv", "/live/x"], query, 1),
            Ok(())
        );
        assert_eq!(path_of("/live/a.flv?x=1"), "/live/a.flv");
        assert_eq!(path_of("https://h:1/a/b?c"), "/a/b");
        assert_eq!(path_of("https://h:1"), "/");
    }

    proptest::proptest! {
        /// Any query and path are refused or accepted, never a panic; a query made of
        /// arbitrary bytes is never accepted.
        #[test]
        fn any_query_is_answered_without_panic(path in ".*", query in ".*", now in proptest::prelude::any::<u64>()) {
            let signer = PlaySigner::new(b"k");
            proptest::prop_assert!(signer.verify(&path, &query, now).is_err());
            let signed = signer.query(&path, now);
            proptest::prop_assert_eq!(signer.verify(&path, &signed, now), Ok(()));
        }
    }

    #[test]
    fn the_debug_form_hides_the_key() {
        assert_eq!(
            format!("{:?}", PlaySigner::new(b"s3cret")),
            "PlaySigner(<redacted>)"
        );
    }
}
