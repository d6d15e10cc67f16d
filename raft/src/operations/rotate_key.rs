//! Rotate an API key: issue a successor and let the old key work until its grace period ends.

use raftgate_proxy::policy::{ApiKey, KeyId, KeyState};
use serde::{Deserialize, Serialize};

use crate::command::{OpError, Outcome};
use crate::state::{GatewayState, Writes};

/// Longest grace period accepted: 30 days. A rotation that leaves the old key alive longer is a
/// second key, and should be created as one.
pub const GRACE_S_MAX: u64 = 30 * 24 * 3600;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateKey {
    pub old_id: String,
    pub new_id: KeyId,
    pub new_digest: [u8; 32],
    pub grace_s: u64,
}

impl RotateKey {
    pub fn apply(&self, st: &mut GatewayState, now_ms: u64, w: &mut Writes) -> Result<Outcome, OpError> {
        let Some(mut old) = st.key(&self.old_id) else {
            return Err(OpError::not_found(format!("key {} does not exist", self.old_id)));
        };
        match old.state_at(now_ms) {
            KeyState::Active => {}
            other => return Err(OpError::conflict(format!("key {} cannot be rotated: it is {other:?}", self.old_id))),
        }
        if st.policy.keys.contains_key(&self.new_id) {
            return Err(OpError::conflict("key id collision; retry"));
        }
        let new = ApiKey {
            id: self.new_id,
            digest: self.new_digest,
            consumer: old.consumer.clone(),
            roles: old.roles.clone(),
            created_at_ms: now_ms,
            expires_at_ms: old.expires_at_ms,
            revoked_at_ms: None,
            rotated_to: None,
            grace_until_ms: None,
        };
        old.rotated_to = Some(self.new_id);
        old.grace_until_ms = Some(now_ms.saturating_add(self.grace_s.min(GRACE_S_MAX) * 1000));
        st.put_key(old, w);
        st.put_key(new.clone(), w);
        Ok(Outcome::Key(new))
    }
}
