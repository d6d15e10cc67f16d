//! An API key's replicated record: everything but the secret, which is never stored.

use serde::{Deserialize, Serialize};

use super::{KeyId, Name};

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// The public id (the 12 characters after `rgk_`).
    pub id: KeyId,
    /// SHA-256 of the full key.
    pub digest: [u8; 32],
    pub consumer: Name,
    /// Roles of this key alone, added to its consumer's.
    pub roles: Vec<Name>,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub revoked_at_ms: Option<u64>,
    /// Set when the key was rotated: the id of its successor.
    pub rotated_to: Option<KeyId>,
    /// Set when the key was rotated: it keeps working until this time, then stops.
    pub grace_until_ms: Option<u64>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The digest is not a secret, but it has no business in logs either.
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("consumer", &self.consumer)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("revoked_at_ms", &self.revoked_at_ms)
            .finish_non_exhaustive()
    }
}

/// Whether a key can be used at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    Active,
    /// Rotated, still inside its grace period.
    Grace,
    Expired,
    Revoked,
    /// Rotated and past its grace period.
    Rotated,
}

impl ApiKey {
    pub fn state_at(&self, now_ms: u64) -> KeyState {
        if self.revoked_at_ms.is_some_and(|t| t <= now_ms) {
            return KeyState::Revoked;
        }
        if self.expires_at_ms.is_some_and(|t| t <= now_ms) {
            return KeyState::Expired;
        }
        match self.grace_until_ms {
            Some(t) if t <= now_ms => KeyState::Rotated,
            Some(_) => KeyState::Grace,
            None => KeyState::Active,
        }
    }
}
