//! Names of consumers, roles, routes and rate limits: `[a-z0-9][a-z0-9_.-]{0,63}`.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest name accepted, in bytes; long enough for any sensible identifier, short enough to
/// keep keys and logs compact.
pub const NAME_LEN_MAX: usize = 64;

/// Shared, not copied: a million keys of one consumer hold one allocation of its name (see
/// `GatewayState::put_key`, which interns it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(Arc<str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name {0:?}: names are 1 to 64 characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit")]
pub struct NameError(pub String);

impl Name {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let bytes = s.as_bytes();
        let first_ok = bytes.first().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest_ok =
            bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
        if first_ok && rest_ok && bytes.len() <= NAME_LEN_MAX {
            Ok(Self(Arc::from(s)))
        } else {
            Err(NameError(s.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name's one allocation, shared (an audit event holds it without copying).
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::parse(&s)
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0.to_string()
    }
}

/// Lookups by `&str` in maps keyed by names.
impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        for ok in ["a", "0", "orders-api", "a.b_c-d", &"x".repeat(64)] {
            assert!(Name::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "_a", "A", "a b", "a/b", "ä", &"x".repeat(65), "a\n"] {
            assert!(Name::parse(bad).is_err(), "{bad:?}");
        }
    }
}
