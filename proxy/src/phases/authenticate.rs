//! Phase 3, authenticate: find the credential, check its format and checksum before any
//! lookup, find the key by public id, compare digests in constant time, check its state.

use http::StatusCode;
use zeroize::Zeroize;

use crate::deny::Deny;
use crate::fields::Lookup;
use crate::policy::{same_secret, ApiKey, Consumer, KeyId, KeyState, ParsedKey, Policy, KEY_LEN};

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

/// The key a connection last proved, so that the same key on its next request skips the format
/// check and the SHA-256 digest, most of this phase's work (keep-alive clients send one key on
/// every request of a connection).
///
/// What a recall proves is what the full check proves: the presented bytes equal the
/// remembered ones (compared in constant time), their digest was checked against `digest` when
/// they were remembered, and the key the current policy holds under `id` still has that
/// digest. So the presented key hashes to the stored digest of the key in force now. Everything
/// else (expiry, revocation, rotation, the consumer) is checked against the request's own
/// policy snapshot on every request, remembered or not: a key revoked or re-issued under the
/// same id since it was remembered is refused as before.
///
/// One per HTTP/1 connection (a connection's requests are served one at a time); an HTTP/2
/// stream gets a new one. The remembered key is zeroed when it is replaced or dropped.
#[derive(Default)]
pub struct KeyMemo(Option<Remembered>);

struct Remembered {
    /// The key as presented.
    full: [u8; KEY_LEN],
    id: KeyId,
    /// The stored digest `full` was checked against.
    digest: [u8; 32],
}

impl Drop for Remembered {
    fn drop(&mut self) {
        self.full.zeroize();
    }
}

impl KeyMemo {
    /// The key the policy holds for `raw`, if `raw` is the key remembered and the policy's key
    /// under its id still has the digest `raw` was checked against.
    fn recall<'p>(&self, policy: &'p Policy, raw: &[u8]) -> Option<&'p ApiKey> {
        let r = self.0.as_ref()?;
        // Keys all have `KEY_LEN` bytes, so the length tells nothing secret.
        let raw: &[u8; KEY_LEN] = raw.try_into().ok()?;
        if !same_secret(&r.full, raw) {
            return None;
        }
        policy.keys.get(&r.id).map(|k| &**k).filter(|k| k.digest == r.digest)
    }

    fn remember(&mut self, raw: &[u8], id: KeyId, digest: [u8; 32]) {
        if let Ok(full) = <[u8; KEY_LEN]>::try_from(raw) {
            self.0 = Some(Remembered { full, id, digest });
        }
    }
}

/// Authenticates a presented key against the policy at `now_ms`.
pub fn authenticate<'p>(policy: &'p Policy, raw: &[u8], now_ms: u64) -> Result<Caller<'p>, Deny> {
    authenticate_remembered(policy, raw, now_ms, &mut KeyMemo::default())
}

/// [`authenticate`], recalling the key `memo` holds if it is `raw`, and remembering `raw` in it
/// once its digest has matched.
pub fn authenticate_remembered<'p>(
    policy: &'p Policy,
    raw: &[u8],
    now_ms: u64,
    memo: &mut KeyMemo,
) -> Result<Caller<'p>, Deny> {
    let key = match memo.recall(policy, raw) {
        Some(key) => key,
        None => {
            // Exact match only: a trailing space or changed case fails the length or checksum
            // check, and anything outside the key's alphabet (non-ASCII among it) the format
            // check.
            let parsed = ParsedKey::parse(raw).map_err(|_| Deny::unauthorized("malformed"))?;
            // By `KeyId`, not `&str`: the map's comparisons are then between byte arrays, with
            // no UTF-8 check of the stored id at each step.
            let id = parsed.key_id();
            let key = policy.keys.get(&id).ok_or_else(|| Deny::unauthorized("unknown"))?;
            if !parsed.matches(&key.digest) {
                return Err(Deny::unauthorized("unknown"));
            }
            memo.remember(raw, id, key.digest);
            key
        }
    };
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

    /// A policy with consumer `c` and one key of it per generated key given.
    fn policy_with(keys: &[&crate::policy::GeneratedKey]) -> Policy {
        let c = crate::policy::Name::parse("c").unwrap();
        let mut p = Policy::default();
        p.consumers.insert(
            c.clone(),
            Consumer { name: c.clone(), roles: Vec::new(), metadata: Default::default(), created_at_ms: 0 },
        );
        for k in keys {
            let key = ApiKey {
                id: k.id,
                digest: k.digest,
                consumer: c.clone(),
                roles: Vec::new(),
                created_at_ms: 0,
                expires_at_ms: None,
                revoked_at_ms: None,
                rotated_to: None,
                grace_until_ms: None,
            };
            p.keys.insert(k.id, std::sync::Arc::new(key));
        }
        p
    }

    /// Changes the key `id` in a copy of `p`.
    fn with_key(p: &Policy, id: &KeyId, change: impl FnOnce(&mut ApiKey)) -> Policy {
        let mut p = p.clone();
        let mut key = ApiKey::clone(&p.keys[id]);
        change(&mut key);
        p.keys.insert(*id, std::sync::Arc::new(key));
        p
    }

    /// A connection's remembered key skips the digest, and nothing else: every refusal the full
    /// check gives for that key, it still gives, whichever policy the request is decided on.
    #[test]
    fn a_remembered_key_is_checked_against_each_request_s_policy() {
        let (k1, k2) = (crate::policy::GeneratedKey::generate(), crate::policy::GeneratedKey::generate());
        let (raw1, raw2) = (k1.key.as_bytes(), k2.key.as_bytes());
        let policy = policy_with(&[&k1, &k2]);
        let now = 1_000;
        let mut memo = KeyMemo::default();
        let reason = |p: &Policy, raw: &[u8], memo: &mut KeyMemo| {
            authenticate_remembered(p, raw, now, memo).err().map(|d| d.reason)
        };
        assert!(memo.recall(&policy, raw1).is_none());
        assert_eq!(reason(&policy, raw1, &mut memo), None);
        // Remembered: the next request with the same key is recalled, not hashed again.
        assert!(memo.recall(&policy, raw1).is_some_and(|k| k.id == k1.id));
        assert_eq!(reason(&policy, raw1, &mut memo), None);

        // Refused on a later policy like any key: revoked, expired, rotated past its grace,
        // deleted, or its consumer gone.
        let revoked = with_key(&policy, &k1.id, |k| k.revoked_at_ms = Some(now - 1));
        assert_eq!(reason(&revoked, raw1, &mut memo), Some("revoked"));
        let expired = with_key(&policy, &k1.id, |k| k.expires_at_ms = Some(now - 1));
        assert_eq!(reason(&expired, raw1, &mut memo), Some("expired"));
        let rotated = with_key(&policy, &k1.id, |k| {
            k.rotated_to = Some(k2.id);
            k.grace_until_ms = Some(now - 1);
        });
        assert_eq!(reason(&rotated, raw1, &mut memo), Some("rotated"));
        let mut deleted = policy.clone();
        deleted.keys.remove(&k1.id);
        assert_eq!(reason(&deleted, raw1, &mut memo), Some("unknown"));
        let mut orphaned = policy.clone();
        orphaned.consumers.clear();
        assert_eq!(reason(&orphaned, raw1, &mut memo), Some("unknown_consumer"));
        // The same id with another secret (a stored digest the remembered key was never
        // checked against) is not recalled: the full check refuses the old key.
        let reissued = with_key(&policy, &k1.id, |k| k.digest = k2.digest);
        assert!(memo.recall(&reissued, raw1).is_none());
        assert_eq!(reason(&reissued, raw1, &mut memo), Some("unknown"));
        // Inside a rotation's grace it works, deprecated, remembered or not.
        let grace = with_key(&policy, &k1.id, |k| {
            k.rotated_to = Some(k2.id);
            k.grace_until_ms = Some(now + 1);
        });
        assert!(authenticate_remembered(&grace, raw1, now, &mut memo).is_ok_and(|c| c.deprecated));
        assert!(authenticate_remembered(&grace, raw1, now, &mut memo).is_ok_and(|c| c.deprecated));

        // Any other bytes go through the full check: one character changed is malformed (its
        // checksum), and another valid key replaces the remembered one.
        let mut changed = raw1.to_vec();
        changed[KEY_LEN / 2] = if changed[KEY_LEN / 2] == b'a' { b'b' } else { b'a' };
        assert_eq!(reason(&policy, &changed, &mut memo), Some("malformed"));
        assert_eq!(reason(&policy, raw2, &mut memo), None);
        assert!(memo.recall(&policy, raw1).is_none());
        assert!(memo.recall(&policy, raw2).is_some_and(|k| k.id == k2.id));
        // A refused key is not remembered.
        let stranger = crate::policy::GeneratedKey::generate();
        assert_eq!(reason(&policy, stranger.key.as_bytes(), &mut memo), Some("unknown"));
        assert!(memo.recall(&policy, raw2).is_some());
    }
}
