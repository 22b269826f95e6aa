//! The requester's ids: `seqid` names a reply topic (`{prefix}/client/{seqid}/{MODE}`),
//! `client_id` a requester the gateway remembers until its lease ends. Both are capped at
//! [`MAX_ID_LEN`] bytes, so that no request can make the gateway publish on a topic MQTT
//! cannot carry (65,535 bytes) or hold a large key per requester. A seqid is also recovered
//! from a body that is not JSON, so that a shell typo is answered.

use super::{ErrorCode, RequestError};

/// Longest `seqid` and `client_id` accepted, in bytes (UTF-8).
pub const MAX_ID_LEN: usize = 128;

/// A seqid becomes a topic level, so it may not contain `/` (another level), `+`, `#`
/// (wildcards, not allowed in a topic name) or NUL, and is at most [`MAX_ID_LEN`] bytes.
/// With `/`, or when only too long, the error can still be published (the requester
/// listens there; the publisher checks that the topic fits MQTT); with the others it
/// cannot, and is logged.
pub(super) fn check_seqid(seqid: &str) -> Result<(), RequestError> {
    if seqid.is_empty() {
        return Err(RequestError {
            code: ErrorCode::InvalidField,
            message: "seqid is empty: replies go to {prefix}/client/{seqid}/…".to_owned(),
            seqid: None,
        });
    }
    if let Some(bad) = seqid.chars().find(|c| matches!(c, '/' | '+' | '#' | '\0')) {
        return Err(RequestError {
            code: ErrorCode::InvalidField,
            message: format!(
                "seqid {:?} contains {bad:?}: it names the reply topic \
                 {{prefix}}/client/{{seqid}}/…, so it may not contain '/', '+' or '#'",
                shorten(seqid)
            ),
            seqid: (bad == '/').then(|| seqid.to_owned()),
        });
    }
    if seqid.len() > MAX_ID_LEN {
        return Err(RequestError {
            code: ErrorCode::InvalidField,
            message: format!(
                "seqid is {} bytes long; at most {MAX_ID_LEN} are accepted (it names the \
                 reply topic {{prefix}}/client/{{seqid}}/…)",
                seqid.len()
            ),
            seqid: Some(seqid.to_owned()),
        });
    }
    Ok(())
}

/// A `client_id` longer than [`MAX_ID_LEN`] bytes is refused (answered on the seqid).
pub(super) fn check_client_id(client_id: &str, seqid: Option<&str>) -> Result<(), RequestError> {
    if client_id.len() <= MAX_ID_LEN {
        return Ok(());
    }
    Err(RequestError {
        code: ErrorCode::InvalidField,
        message: format!(
            "client_id is {} bytes long; at most {MAX_ID_LEN} are accepted",
            client_id.len()
        ),
        seqid: seqid.map(str::to_owned),
    })
}

/// The seqid of a body that is not valid JSON, when its text still shows one:
/// `"seqid"`, optional white space, `:`, then a string without escapes or a number.
/// Hand-written (a dozen lines) rather than a regex crate for one pattern.
pub(super) fn salvage_seqid(payload: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(payload);
    let key = "\"seqid\"";
    let at = text.find(key)?;
    let rest = text.get(at + key.len()..)?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let seqid = if let Some(quoted) = rest.strip_prefix('"') {
        // a string with escapes is not guessed at
        let end = quoted.find(['"', '\\'])?;
        if quoted.get(end..)?.starts_with('\\') {
            return None;
        }
        quoted.get(..end)?
    } else {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '-'))
            .unwrap_or(rest.len());
        rest.get(..end)?
    };
    check_seqid(seqid).is_ok().then(|| seqid.to_owned())
}

/// The first 64 characters of an id that is too long to echo, for messages and logs.
pub(crate) fn shorten(id: &str) -> String {
    const SHOWN: usize = 64;
    match id.char_indices().nth(SHOWN) {
        Some((at, _)) => format!("{}… ({} bytes)", id.get(..at).unwrap_or(""), id.len()),
        None => id.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_longer_than_the_cap_are_refused_and_still_repliable() {
        let long = "s".repeat(MAX_ID_LEN + 1);
        let err = check_seqid(&long).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidField);
        assert_eq!(err.seqid.as_deref(), Some(long.as_str()));
        assert!(err.message.contains("129 bytes"), "{}", err.message);
        assert!(check_seqid(&"s".repeat(MAX_ID_LEN)).is_ok());
        let err = check_client_id(&long, Some("r1")).unwrap_err();
        assert_eq!(err.seqid.as_deref(), Some("r1"));
        assert!(check_client_id("fleet", None).is_ok());
    }

    #[test]
    fn a_seqid_is_salvaged_from_broken_json() {
        assert_eq!(
            salvage_seqid(br#"{"seqid": "s1", "channel": 1,,}"#).as_deref(),
            Some("s1")
        );
        assert_eq!(salvage_seqid(br#"{"seqid":42 "x"}"#).as_deref(), Some("42"));
        assert_eq!(salvage_seqid(br#"{seqid:"s1"}"#), None);
        assert_eq!(salvage_seqid(br#"{"seqid":"a+b" oops"#), None, "no topic");
        assert_eq!(salvage_seqid(br#"{"seqid":"a\"b"}"#), None, "escapes");
        assert_eq!(salvage_seqid(b"{\"seqid\":\"unterminated"), None);
        let long = format!(r#"{{"seqid":"{}""#, "x".repeat(MAX_ID_LEN + 1));
        assert_eq!(salvage_seqid(long.as_bytes()), None);
    }

    #[test]
    fn long_ids_are_shortened_for_messages() {
        assert_eq!(shorten("abc"), "abc");
        let s = shorten(&"é".repeat(100));
        assert!(s.starts_with(&"é".repeat(64)), "{s}");
        assert!(s.ends_with("(200 bytes)"), "{s}");
    }
}
