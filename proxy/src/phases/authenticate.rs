//! Phase 3, authenticate: find the credential, check its format and checksum before any
//! lookup, find the key by public id, compare digests in constant time, check its state.

use http::StatusCode;

use crate::deny::Deny;
use crate::fields::{text, Lookup};
use crate::policy::{ApiKey, Consumer, KeyState, ParsedKey, Policy, KEY_LEN};

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

/// The presented credential, if any. Ambiguity (two headers, both kinds) is a 400.
pub fn credential(headers: &impl Lookup) -> Result<Option<&str>, Deny> {
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
            let s = text(a).ok_or_else(|| Deny::unauthorized("malformed"))?;
            match s.split_once(' ') {
                Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest,
                _ => return Err(Deny::unauthorized("malformed")),
            }
        }
        (None, Some(k)) => {
            if k.len() > CREDENTIAL_LEN_MAX {
                return Err(Deny::unauthorized("malformed"));
            }
            text(k).ok_or_else(|| Deny::unauthorized("malformed"))?
        }
        _ => return Ok(None),
    };
    Ok(Some(raw))
}

/// Authenticates a presented key against the policy at `now_ms`.
pub fn authenticate<'p>(policy: &'p Policy, raw: &str, now_ms: u64) -> Result<Caller<'p>, Deny> {
    // Exact match only: a trailing space or changed case fails the length or checksum check.
    if raw.len() != KEY_LEN {
        return Err(Deny::unauthorized("malformed"));
    }
    let parsed = ParsedKey::parse(raw).map_err(|_| Deny::unauthorized("malformed"))?;
    let key = policy.keys.get(parsed.id()).ok_or_else(|| Deny::unauthorized("unknown"))?;
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
