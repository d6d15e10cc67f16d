//! Phase 1, canonicalise: one canonical path per request, computed once. RBAC checks it and the
//! upstream receives it, so the two can never disagree (Envoy CVE-2019-9901, Istio
//! CVE-2021-31920).
//!
//! Rules: origin-form only; percent-encoded `.` `/` `\` NUL and anything that does not decode to
//! valid UTF-8 are rejected (an encoded `%` is refused, so nothing can be double-decoded downstream); `\`, `;` and `#` are
//! rejected; empty segments are merged; `.` and `..` are resolved, and escaping the root is
//! rejected. Percent-encodings that remain are forwarded as received.

/// Why a path was refused; every variant is a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotOriginForm,
    EncodedSeparator,
    BadPercentEncoding,
    ForbiddenCharacter,
    EscapesRoot,
}

impl PathError {
    pub fn reason(self) -> &'static str {
        match self {
            PathError::NotOriginForm => "path_not_origin_form",
            PathError::EncodedSeparator => "path_encoded_separator",
            PathError::BadPercentEncoding => "path_bad_encoding",
            PathError::ForbiddenCharacter => "path_forbidden_character",
            PathError::EscapesRoot => "path_escapes_root",
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A byte no path may hold, encoded or not: `\`, `;`, `#` and control characters.
fn refused(b: u8) -> bool {
    matches!(b, b'\\' | b';' | b'#' | 0..=0x1f | 0x7f)
}

/// Checks one segment's percent-encodings: they must decode (once) to valid UTF-8 that holds
/// no `.`, `/`, `\` or NUL.
fn check_segment(seg: &str) -> Result<(), PathError> {
    let bytes = seg.as_bytes();
    if bytes.iter().any(|&b| refused(b)) {
        return Err(PathError::ForbiddenCharacter);
    }
    if !seg.contains('%') {
        return Ok(());
    }
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let (Some(h), Some(l)) = (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
            else {
                return Err(PathError::BadPercentEncoding);
            };
            let b = h << 4 | l;
            if matches!(b, b'.' | b'/' | b'\\' | 0) {
                return Err(PathError::EncodedSeparator);
            }
            // An encoded '%' is how double-decoding attacks start (%252e → %2e → .): refuse it.
            if b == b'%' {
                return Err(PathError::BadPercentEncoding);
            }
            decoded.push(b);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    // Overlong forms such as %c0%ae are invalid UTF-8.
    std::str::from_utf8(&decoded).map_err(|_| PathError::BadPercentEncoding)?;
    Ok(())
}

/// Canonicalises the path of a request target (without the query).
pub fn canonicalize(path: &str) -> Result<String, PathError> {
    if already_canonical(path) {
        return Ok(path.to_owned());
    }
    resolve(path)
}

/// Whether `path` is its own canonical form, as nearly every request's path is: it starts with
/// `/`, holds no byte that is refused or percent-encoded, no empty segment but a trailing one
/// (`//`) and no segment that starts with a dot (`/.`, so `/.well-known` takes the long way,
/// and comes out unchanged). A scan of the bytes and no allocation but the copy, where
/// [`resolve`] splits the path into segments and joins them again; a proptest holds the two to
/// the same answers.
fn already_canonical(path: &str) -> bool {
    let b = path.as_bytes();
    b.first() == Some(&b'/')
        && b.iter().all(|&c| c != b'%' && !refused(c))
        && !b.windows(2).any(|w| w[0] == b'/' && (w[1] == b'/' || w[1] == b'.'))
}

/// The general case: segment by segment, resolving `.` and `..` and merging empty segments.
fn resolve(path: &str) -> Result<String, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let trailing_slash = path.len() > 1 && path.ends_with('/');
    for seg in segments {
        check_segment(seg)?;
        match seg {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(PathError::EscapesRoot);
                }
            }
            s => out.push(s),
        }
    }
    let mut canon = String::with_capacity(path.len());
    for s in &out {
        canon.push('/');
        canon.push_str(s);
    }
    if canon.is_empty() || trailing_slash {
        canon.push('/');
    }
    Ok(canon)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn the_short_way_gives_what_the_long_way_gives(path in "/?[/a.b]{0,12}") {
            if already_canonical(&path) {
                prop_assert_eq!(resolve(&path), Ok(path.clone()));
            }
            prop_assert_eq!(canonicalize(&path), resolve(&path));
        }

        #[test]
        fn refused_bytes_never_take_the_short_way(path in "/?[/a.%2eE;#\\\\\x00b]{0,12}") {
            prop_assert_eq!(canonicalize(&path), resolve(&path));
        }
    }

    #[test]
    fn plain_paths_take_the_short_way() {
        for p in ["/", "/api", "/api/v1/orders/", "/caf\u{e9}"] {
            assert!(already_canonical(p), "{p}");
        }
        for p in ["", "api", "//api", "/api/./x", "/.well-known", "/a%41", "/a;b", "/a\\b", "/a#b"] {
            assert!(!already_canonical(p), "{p}");
        }
        assert_eq!(canonicalize("/.well-known/x").unwrap(), "/.well-known/x");
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canonicalize("/public/../admin/keys").unwrap(), "/admin/keys");
        assert_eq!(canonicalize("//admin/keys").unwrap(), "/admin/keys");
        assert_eq!(canonicalize("/public//..//admin").unwrap(), "/admin");
        assert_eq!(canonicalize("/a/./b/").unwrap(), "/a/b/");
        assert_eq!(canonicalize("/").unwrap(), "/");
        assert_eq!(canonicalize("/orders/%41").unwrap(), "/orders/%41");
        assert_eq!(canonicalize("/caf%C3%A9").unwrap(), "/caf%C3%A9");
    }

    #[test]
    fn rejections() {
        use PathError::*;
        let cases = [
            ("/public/%2e%2e/admin", EncodedSeparator),
            ("/public/.%2E/admin", EncodedSeparator),
            ("/public/%2E%2E%2Fadmin", EncodedSeparator),
            ("/admin%2Fkeys", EncodedSeparator),
            ("/admin%5Ckeys", EncodedSeparator),
            ("/admin\\keys", ForbiddenCharacter),
            ("/admin;x=1/keys", ForbiddenCharacter),
            ("/admin#x", ForbiddenCharacter),
            ("/public/%252e%252e/admin", BadPercentEncoding),
            ("/%c0%ae%c0%ae/admin", BadPercentEncoding),
            ("/admin%00.json", EncodedSeparator),
            ("/public/../..", EscapesRoot),
            ("/../../etc/passwd", EscapesRoot),
            ("/a%zz", BadPercentEncoding),
            ("http://x/", NotOriginForm),
        ];
        for (p, want) in cases {
            let got = canonicalize(p);
            assert_eq!(got, Err(want), "{p}");
        }
    }
}
