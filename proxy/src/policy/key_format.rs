//! The API key wire format, modelled on GitHub's tokens.
//!
//! `rgk_` + 12 base62 characters of public id + 32 base62 characters of secret + 6 base62
//! characters of CRC-32 over everything before it: 54 characters in all. The prefix makes keys
//! recognisable to secret scanners; the checksum lets the gateway reject a mistyped or forged
//! key without touching any state. The 32-character secret carries 190 bits from the OS CSPRNG.
//! Only a SHA-256 digest of the whole key is ever stored; SHA-256 suffices (no slow hash) because
//! the secret is random, not a password.

use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const KEY_PREFIX: &str = "rgk_";
/// Public id length: 12 base62 characters ≈ 71 bits, so ids never collide in practice.
pub const KEY_ID_LEN: usize = 12;
/// Secret length: 32 base62 characters ≈ 190 bits of CSPRNG output (≥ 128 required).
const KEY_SECRET_LEN: usize = 32;
/// CRC-32 fits in 6 base62 characters (62^6 > 2^32).
const KEY_CHECKSUM_LEN: usize = 6;
pub const KEY_LEN: usize = KEY_PREFIX.len() + KEY_ID_LEN + KEY_SECRET_LEN + KEY_CHECKSUM_LEN;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("key has the wrong length")]
    Length,
    #[error("key does not start with {KEY_PREFIX}")]
    Prefix,
    #[error("key has a character outside base62")]
    Alphabet,
    #[error("key checksum does not match")]
    Checksum,
}

/// A key's public id: the 12 base62 characters after `rgk_`. Held inline (no heap), so the
/// key table of a million keys costs no allocation per id. Serialised as its string, so the
/// persisted and JSON forms are those of a plain `String`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId([u8; KEY_ID_LEN]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid key id {0:?}: a key id is 12 characters of 0-9, A-Z, a-z")]
pub struct KeyIdError(pub String);

impl KeyId {
    pub fn parse(s: &str) -> Result<Self, KeyIdError> {
        let bytes = s.as_bytes();
        match <[u8; KEY_ID_LEN]>::try_from(bytes) {
            Ok(id) if id.iter().all(u8::is_ascii_alphanumeric) => Ok(Self(id)),
            _ => Err(KeyIdError(s.chars().take(40).collect())),
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("key ids are ascii")
    }
}

/// Lookups by `&str`: byte order of the id equals `str` order, as `Borrow` requires.
impl std::borrow::Borrow<str> for KeyId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl std::ops::Deref for KeyId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl TryFrom<String> for KeyId {
    type Error = KeyIdError;
    fn try_from(s: String) -> Result<Self, KeyIdError> {
        Self::parse(&s)
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> String {
        id.as_str().to_string()
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<str> for KeyId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<String> for KeyId {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

/// A freshly generated key. The full key leaves the node once, in the creation response.
pub struct GeneratedKey {
    pub id: KeyId,
    pub key: String,
    pub digest: [u8; 32],
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("GeneratedKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// A key whose format and checksum are valid; it may still be unknown or revoked.
#[derive(Clone, Copy)]
pub struct ParsedKey<'a> {
    /// The whole key: `KEY_LEN` ASCII characters, the prefix and base62.
    full: &'a [u8],
}

impl<'a> ParsedKey<'a> {
    /// Checks length, prefix, alphabet and checksum, in that order, without any lookup. Takes
    /// bytes, as a header value arrives: the alphabet check is the only text check a key needs.
    pub fn parse(full: &'a [u8]) -> Result<Self, KeyFormatError> {
        if full.len() != KEY_LEN {
            return Err(KeyFormatError::Length);
        }
        let body = full.strip_prefix(KEY_PREFIX.as_bytes()).ok_or(KeyFormatError::Prefix)?;
        if !body.iter().all(u8::is_ascii_alphanumeric) {
            return Err(KeyFormatError::Alphabet);
        }
        let (payload, checksum) = full.split_at(KEY_LEN - KEY_CHECKSUM_LEN);
        if encode_checksum(crc32fast::hash(payload)) != checksum {
            return Err(KeyFormatError::Checksum);
        }
        Ok(Self { full })
    }

    fn id_bytes(&self) -> &'a [u8] {
        &self.full[KEY_PREFIX.len()..KEY_PREFIX.len() + KEY_ID_LEN]
    }

    /// The public id part, which names the key in the admin API and the audit trail.
    pub fn id(&self) -> &'a str {
        std::str::from_utf8(self.id_bytes()).expect("a parsed key is ascii")
    }

    /// The public id as a [`KeyId`], for lookups (its characters were checked by `parse`).
    pub fn key_id(&self) -> KeyId {
        KeyId(self.id_bytes().try_into().expect("a parsed key has an id of KEY_ID_LEN characters"))
    }

    pub fn digest(&self) -> [u8; 32] {
        digest_bytes(self.full)
    }

    /// Compares this key's digest with a stored one in constant time.
    pub fn matches(&self, stored: &[u8; 32]) -> bool {
        same_secret(&self.digest(), stored)
    }
}

/// Whether `a` and `b` are equal, in constant time: every pair of bytes is looked at, whatever
/// differs, and only the OR of their differences decides, through `subtle`'s comparison of one
/// byte (its optimisation barrier). `subtle`'s own comparison of slices puts a barrier on each
/// byte, which keeps the compiler from combining them: measured with callgrind, about 800
/// instructions for 32 bytes, against a few dozen here.
pub fn same_secret<const N: usize>(a: &[u8; N], b: &[u8; N]) -> bool {
    let differ = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    differ.ct_eq(&0).into()
}

pub fn digest_key(full: &str) -> [u8; 32] {
    digest_bytes(full.as_bytes())
}

/// The one definition of a key's stored digest, for keys issued and keys presented alike.
fn digest_bytes(full: &[u8]) -> [u8; 32] {
    Sha256::digest(full).into()
}

impl GeneratedKey {
    /// Generates a new key from the OS CSPRNG.
    pub fn generate() -> Self {
        let id = KeyId::parse(&random_base62(KEY_ID_LEN)).expect("base62 of the id length");
        let secret = random_base62(KEY_SECRET_LEN);
        let payload = format!("{KEY_PREFIX}{id}{secret}");
        let checksum = encode_checksum(crc32fast::hash(payload.as_bytes()));
        let key = format!("{payload}{}", std::str::from_utf8(&checksum).expect("base62 is ascii"));
        let digest = digest_key(&key);
        Self { id, key, digest }
    }
}

fn random_base62(len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        OsRng.fill_bytes(&mut buf);
        // Rejection sampling keeps every character equally likely: 248 = 4 × 62.
        for &b in buf.iter().filter(|&&b| b < 248) {
            if out.len() == len {
                break;
            }
            out.push(BASE62[(b % 62) as usize] as char);
        }
    }
    out
}

/// The checksum's base62 digits (no allocation: every presented key is checked with it).
fn encode_checksum(mut crc: u32) -> [u8; KEY_CHECKSUM_LEN] {
    let mut digits = [b'0'; KEY_CHECKSUM_LEN];
    for d in digits.iter_mut().rev() {
        *d = BASE62[(crc % 62) as usize];
        crc /= 62;
    }
    digits
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_keys_parse_and_match() {
        let k = GeneratedKey::generate();
        assert_eq!(k.key.len(), KEY_LEN);
        let parsed = ParsedKey::parse(k.key.as_bytes()).unwrap();
        assert_eq!(parsed.id(), k.id.as_str());
        assert_eq!(KeyId::parse(parsed.id()), Ok(k.id));
        assert_eq!(parsed.key_id(), k.id);
        assert!(parsed.matches(&k.digest));
        assert!(!format!("{k:?}").contains(&k.key[KEY_PREFIX.len() + KEY_ID_LEN..]));
    }

    #[test]
    fn rejects_malformed_keys() {
        let k = GeneratedKey::generate().key;
        assert_eq!(ParsedKey::parse(&k.as_bytes()[1..]).err(), Some(KeyFormatError::Length));
        assert_eq!(ParsedKey::parse(format!("{k} ").as_bytes()).err(), Some(KeyFormatError::Length));
        assert_eq!(ParsedKey::parse(format!("xyz_{}", &k[4..]).as_bytes()).err(), Some(KeyFormatError::Prefix));
        assert_eq!(ParsedKey::parse(k.replacen('_', "%", 1).as_bytes()).err(), Some(KeyFormatError::Prefix));
        let mut bad = k.clone().into_bytes();
        bad[10] = b'-';
        assert_eq!(ParsedKey::parse(&bad).err(), Some(KeyFormatError::Alphabet));
        assert_eq!(
            ParsedKey::parse(format!("rgk_{}", k[4..].to_uppercase()).as_bytes()).err(),
            Some(KeyFormatError::Checksum)
        );
    }

    #[test]
    fn key_ids_round_trip_and_reject() {
        let id = KeyId::parse("AbC123xyz789").unwrap();
        assert_eq!(id.as_str(), "AbC123xyz789");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"AbC123xyz789\"");
        assert_eq!(serde_json::from_str::<KeyId>("\"AbC123xyz789\"").unwrap(), id);
        for bad in ["", "AbC123xyz78", "AbC123xyz7890", "AbC123xyz78-", "AbC123xyz78\u{e9}"] {
            assert!(KeyId::parse(bad).is_err(), "{bad:?}");
        }
        let mut ids: Vec<KeyId> =
            ["b00000000000", "B00000000000", "a00000000000"].iter().map(|s| KeyId::parse(s).unwrap()).collect();
        let mut strs: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        strs.sort();
        ids.sort();
        assert_eq!(ids.iter().map(|i| i.as_str()).collect::<Vec<_>>(), strs, "id order is str order");
    }

    proptest! {
        /// Any single-character change to a valid key is caught by the checksum (or format).
        #[test]
        fn single_substitution_is_rejected(pos in 4usize..KEY_LEN, c in 0usize..62) {
            let k = GeneratedKey::generate().key;
            let mut bytes = k.clone().into_bytes();
            prop_assume!(bytes[pos] != BASE62[c]);
            bytes[pos] = BASE62[c];
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert!(ParsedKey::parse(changed.as_bytes()).is_err());
        }

        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,80}") {
            let _ = ParsedKey::parse(s.as_bytes());
        }
    }

    #[test]
    fn same_secret_tells_equal_from_any_single_difference() {
        let a: [u8; KEY_LEN] = std::array::from_fn(|i| i as u8);
        assert!(same_secret(&a, &a));
        for i in 0..KEY_LEN {
            for bit in 0..8 {
                let mut b = a;
                b[i] ^= 1 << bit;
                assert!(!same_secret(&a, &b), "byte {i} bit {bit}");
            }
        }
    }
}
