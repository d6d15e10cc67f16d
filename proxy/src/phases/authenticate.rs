//! Phase 3, authenticate: find the credential, check its format and checksum before any
//! lookup, find the key by public id, compare digests in constant time, check its state.

use http::StatusCode;

use crate::deny::Deny;
use crate::fields::Lookup;
use crate::policy::{ApiKey, Consumer, KeyState, ParsedKey, Policy};

/// Who is calling, as far as the gateway could establish.
pub struct Caller<'p> {
    pub key: &'p ApiKey,
    pub consumer: &'p Consumer,
    /// The key was rotated and is inside its grace period.
    pub deprecated: bool,
}

/// The other header a key may come in (a name constant: looking up by `&str` parses it anew on
/// every request).
pub static X_API_KEY: http::HeaderName = http::HeaderName::from_static("x-api-key");

/// Longest credential header value read at all; anything longer is refused before parsing.
const CREDENTIAL_LEN_MAX: usize = 8 * 1024;

/// The presented credential, if any, as sent (its format is [`authenticate`]'s to check).
/// Ambiguity (two headers, both kinds) is a 400.
pub fn credential(headers: &impl Lookup) -> Result<Option<&[u8]>, Deny> {
    let mut auth = headers.values(&http::header::AUTHORIZATION);
    let mut api_key = headers.values(&X_API_KEY);
    let (a1, a2) = (auth.next(), auth.next());
    let (k1, k2) = (api_key.next(), api_key.next());
    if a2.is_some() || k2.is_some() || (a1.is_some() && k1.is_some()) {
        return Err(Deny::bad_request("ambiguous_credentials"));
    }
    let raw = match (a1, k1) {
        (Some(a), None) => {
            if a.len() > CREDENTIAL_LEN_MAX {
                return Err(Deny::unauthorized("malformed"));
            }
            // `Bearer <token>`, the scheme in any case.
            match a.iter().position(|&b| b == b' ') {
                Some(sp) if a[..sp].eq_ignore_ascii_case(b"bearer") => &a[sp + 1..],
                _ => return Err(Deny::unauthorized("malformed")),
            }
        }
        (None, Some(k)) => {
            if k.len() > CREDENTIAL_LEN_MAX {
                return Err(Deny::unauthorized("malformed"));
            }
            k
        }
        _ => return Ok(None),
    };
    Ok(Some(raw))
}

/// Authenticates a presented key against the policy at `now_ms`.
pub fn authenticate<'p>(policy: &'p Policy, raw: &[u8], now_ms: u64) -> Result<Caller<'p>, Deny> {
    // Exact match only: a trailing space or changed case fails the length or checksum check,
    // and anything outside the key's alphabet (non-ASCII among it) the format check.
    let parsed = ParsedKey::parse(raw).map_err(|_| Deny::unauthorized("malformed"))?;
    // By `KeyId`, not `&str`: the map's comparisons are then between byte arrays, with no
    // UTF-8 check of the stored id at each step.
    let key = policy.keys.get(&parsed.key_id()).ok_or_else(|| Deny::unauthorized("unknown"))?;
    if !parsed.matches(&key.digest) {
        return Err(Deny::unauthorized("unknown"));
    }
    let deprecated = match key.state_at(now_ms) {
        KeyState::Active => false,
        KeyState::Grace => true,
        KeyState::Expired => return Err(Deny::unauthorized("expired")),
        KeyState::Revoked => return Err(Deny::unauthorized("revoked")),
        KeyState::Rotated => return Err(Deny::unauthorized("rotated")),
    };
    let consumer = policy.consumers.get(&key.consumer).ok_or_else(|| Deny::unauthorized("unknown_consumer"))?;
    Ok(Caller { key, consumer, deprecated })
}

/// The status every credential failure shares.
pub const UNAUTHORIZED: StatusCode = StatusCode::UNAUTHORIZED;

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};

    use super::*;

    fn presented(fields: &[(&http::HeaderName, &[u8])]) -> Result<Option<Vec<u8>>, &'static str> {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append((*n).clone(), HeaderValue::from_bytes(v).unwrap());
        }
        credential(&h).map(|c| c.map(<[u8]>::to_vec)).map_err(|d| d.reason)
    }

    #[test]
    fn the_credential_is_read_from_either_header_and_nothing_else() {
        let auth = &http::header::AUTHORIZATION;
        assert_eq!(presented(&[]), Ok(None));
        assert_eq!(presented(&[(auth, b"Bearer rgk_abc")]), Ok(Some(b"rgk_abc".to_vec())));
        // The scheme is case-insensitive (RFC 9110 §11.1); the token is taken as sent.
        assert_eq!(presented(&[(auth, b"bEARER rgk_abc ")]), Ok(Some(b"rgk_abc ".to_vec())));
        assert_eq!(presented(&[(&X_API_KEY, b"rgk_abc")]), Ok(Some(b"rgk_abc".to_vec())));
        for bad in [&b"Bearer"[..], b"Bearerrgk_abc", b"Basic rgk_abc", b"B\xc3\xa9arer rgk_abc"] {
            assert_eq!(presented(&[(auth, bad)]), Err("malformed"), "{bad:?}");
        }
        assert_eq!(presented(&[(auth, b"Bearer a"), (auth, b"Bearer a")]), Err("ambiguous_credentials"));
        assert_eq!(presented(&[(auth, b"Bearer a"), (&X_API_KEY, b"a")]), Err("ambiguous_credentials"));
    }

    /// Whatever the bytes, a token that is not a well-formed key is `malformed`, before any
    /// lookup: the wrong length, or the right length with a character outside the alphabet.
    #[test]
    fn a_token_outside_the_key_format_is_malformed() {
        let policy = Policy::default();
        let good = crate::policy::GeneratedKey::generate().key.into_bytes();
        let mut non_ascii = good.clone();
        non_ascii[20..22].copy_from_slice("é".as_bytes());
        let mut control = good.clone();
        control[30] = b'\t';
        for raw in [&b""[..], &good[1..], &non_ascii, &control] {
            assert_eq!(authenticate(&policy, raw, 0).err().map(|d| d.reason), Some("malformed"), "{raw:?}");
        }
        assert_eq!(authenticate(&policy, &good, 0).err().map(|d| d.reason), Some("unknown"));
    }
}
