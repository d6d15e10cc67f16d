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
///
/// Held as written (its serialised form) and split into segments once, when it is parsed, so
/// that authorizing a request splits only the request's path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PathPattern {
    text: String,
    segments: Box<[Segment]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    /// `*`: exactly one segment.
    One,
    /// A final `**`: whatever follows, or nothing.
    Rest,
}

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
        // A trailing '/' is not a segment of its own, in the pattern as in the path.
        let segments = p
            .trim_end_matches('/')
            .split('/')
            .skip(1)
            .map(|s| match s {
                "**" => Segment::Rest,
                "*" => Segment::One,
                s => Segment::Literal(s.into()),
            })
            .collect();
        Ok(Self { text: p, segments })
    }
}

impl From<PathPattern> for String {
    fn from(p: PathPattern) -> Self {
        p.text
    }
}

impl PathPattern {
    /// Whether a canonical path (starting with '/', no dot segments) matches.
    pub fn matches(&self, path: &str) -> bool {
        let mut segs = path.trim_end_matches('/').split('/').skip(1);
        for want in &*self.segments {
            let seg = match want {
                Segment::Rest => return true,
                _ => segs.next(),
            };
            match (want, seg) {
                (Segment::One, Some(_)) => {}
                (Segment::Literal(l), Some(s)) if **l == *s => {}
                _ => return false,
            }
        }
        segs.next().is_none()
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
        assert!(!pat("/").matches("/a"));
        assert!(pat("/orders/").matches("/orders"));
        assert!(pat("/orders").matches("/orders/"));
        assert!(!pat("/orders/*/items").matches("/orders/1"));
        assert!(pat("/orders/*/items").matches("/orders/1/items/"));
        assert!(!pat("/orders/*/items").matches("/orders/1/items/2"));
        // Written and read back as the text it was given.
        assert_eq!(String::from(pat("/orders/*/")), "/orders/*/");
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
