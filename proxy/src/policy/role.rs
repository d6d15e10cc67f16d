//! Roles grant permissions: a set of methods on a path pattern.

use serde::{Deserialize, Serialize};

use super::Name;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub name: Name,
    pub permissions: Vec<Permission>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub methods: MethodSet,
    pub path: PathPattern,
}

/// Upper-case HTTP methods, or `*` for any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct MethodSet(Vec<String>);

/// Longest method name accepted; real methods are short.
const METHOD_LEN_MAX: usize = 16;

impl TryFrom<Vec<String>> for MethodSet {
    type Error = String;
    fn try_from(methods: Vec<String>) -> Result<Self, String> {
        if methods.is_empty() {
            return Err("methods must list at least one method, or \"*\"".into());
        }
        for m in &methods {
            let ok =
                m == "*" || (!m.is_empty() && m.len() <= METHOD_LEN_MAX && m.bytes().all(|b| b.is_ascii_uppercase()));
            if !ok {
                return Err(format!("invalid method {m:?}: use upper-case names such as \"GET\", or \"*\""));
            }
        }
        Ok(Self(methods))
    }
}

impl From<MethodSet> for Vec<String> {
    fn from(m: MethodSet) -> Self {
        m.0
    }
}

impl MethodSet {
    pub fn allows(&self, method: &str) -> bool {
        self.0.iter().any(|m| m == "*" || m == method)
    }
}

/// A path pattern: literal segments, `*` for exactly one segment, and a final `**` for any
/// number of segments (including none). Matching is on canonical paths, segment by segment, so
/// `/orders/**` matches `/orders` and `/orders/1/items` but never `/orders-admin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PathPattern(String);

/// Longest pattern accepted.
const PATTERN_LEN_MAX: usize = 512;

impl TryFrom<String> for PathPattern {
    type Error = String;
    fn try_from(p: String) -> Result<Self, String> {
        if !p.starts_with('/') || p.len() > PATTERN_LEN_MAX {
            return Err(format!(
                "invalid path pattern {p:?}: it must start with '/' and be at most {PATTERN_LEN_MAX} bytes"
            ));
        }
        let segments: Vec<&str> = p[1..].split('/').collect();
        for (i, s) in segments.iter().enumerate() {
            let bad =
                *s == "." || *s == ".." || (*s == "**" && i + 1 != segments.len()) || s.contains(['?', '#', '%', '\\']);
            if bad {
                return Err(format!(
                    "invalid path pattern {p:?}: no '.', '..', '?', '#', '%' or '\\' segments, and '**' only at the end"
                ));
            }
        }
        Ok(Self(p))
    }
}

impl From<PathPattern> for String {
    fn from(p: PathPattern) -> Self {
        p.0
    }
}

impl PathPattern {
    /// Whether a canonical path (starting with '/', no dot segments) matches.
    pub fn matches(&self, path: &str) -> bool {
        let pattern = self.0.trim_end_matches('/');
        let path = path.trim_end_matches('/');
        let mut pat = pattern.split('/').skip(1);
        let mut segs = path.split('/').skip(1);
        loop {
            match (pat.next(), segs.next()) {
                (Some("**"), _) => return true,
                (None, None) => return true,
                (Some("*"), Some(_)) => {}
                (Some(p), Some(s)) if p == s => {}
                _ => return false,
            }
        }
    }
}

impl Role {
    pub fn allows(&self, method: &str, path: &str) -> bool {
        self.permissions.iter().any(|p| p.methods.allows(method) && p.path.matches(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> PathPattern {
        PathPattern::try_from(s.to_string()).unwrap()
    }

    #[test]
    fn pattern_matching() {
        assert!(pat("/orders/**").matches("/orders"));
        assert!(pat("/orders/**").matches("/orders/1/items"));
        assert!(!pat("/orders/**").matches("/orders-admin"));
        assert!(pat("/orders/*").matches("/orders/1"));
        assert!(!pat("/orders/*").matches("/orders/1/items"));
        assert!(!pat("/orders/*").matches("/orders"));
        assert!(pat("/").matches("/"));
        assert!(pat("/**").matches("/anything/at/all"));
        assert!(!pat("/admin/**").matches("/ADMIN/keys"));
    }

    #[test]
    fn pattern_validation() {
        for bad in ["orders", "/a/../b", "/**/x", "/a%2f", "/a?b"] {
            assert!(PathPattern::try_from(bad.to_string()).is_err(), "{bad}");
        }
        assert!(MethodSet::try_from(vec!["get".to_string()]).is_err());
        assert!(MethodSet::try_from(vec![]).is_err());
        assert!(MethodSet::try_from(vec!["GET".to_string()]).unwrap().allows("GET"));
        assert!(!MethodSet::try_from(vec!["GET".to_string()]).unwrap().allows("POST"));
    }
}
