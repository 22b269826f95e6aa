//! [`Secret`]: a configured password, token or key that never shows in `print-config`,
//! logs, `/api/*` or error messages.
//!
//! It deserializes from a plain string like any other setting; its `Serialize`, `Debug`
//! and `Display` print [`REDACTED`] (or `""` when it is empty, so an operator still sees
//! that it is unset). The only way to the text is [`Secret::expose`], which makes every
//! use of a secret's value greppable.

use serde::{Deserialize, Serialize};

/// `a == b` in a time that depends only on their lengths (`subtle`, made for this: a
/// hand-written fold may be compiled into an early exit).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// What a set secret prints as.
pub const REDACTED: &str = "<redacted>";

/// A secret setting (a password, token, key or password hash).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `text`.
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The secret's text: for the code that uses it (a MAC key, a comparison), never for
    /// output.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this secret, compared in a time that does not depend on where
    /// they differ (bearer tokens, hook tokens, passwords).
    pub fn matches(&self, given: &[u8]) -> bool {
        constant_time_eq(given, self.0.as_bytes())
    }

    /// Unset (the empty string).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What is shown instead of the text.
    fn shown(&self) -> &'static str {
        if self.0.is_empty() { "" } else { REDACTED }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.shown())
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.shown())
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.shown())
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Secret, Self::Err> {
        Ok(Secret::new(text))
    }
}

/// `#[serde(serialize_with = "…")]` for a plain `String` field that holds a secret (one
/// whose type must stay `String`, e.g. a TURN credential also taken from requests).
pub fn serialize_redacted<S: serde::Serializer>(
    text: &str,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(if text.is_empty() { "" } else { REDACTED })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_reads_as_text_and_shows_redacted() {
        let secret: Secret = serde_json::from_str("\"hunter2\"").unwrap();
        assert_eq!(secret.expose(), "hunter2");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"<redacted>\"");
        assert_eq!(format!("{secret:?}"), "\"<redacted>\"");
        assert_eq!(secret.to_string(), REDACTED);
        let unset = Secret::default();
        assert!(unset.is_empty());
        assert_eq!(serde_json::to_string(&unset).unwrap(), "\"\"");
        assert_eq!(unset.to_string(), "");
    }
}
