//! Issue many API keys of one consumer in one log entry: bulk provisioning at one fsync per
//! batch instead of one per key.

use raftgate_proxy::policy::{ApiKey, KeyId, Name};
use serde::{Deserialize, Serialize};

use crate::command::{OpError, Outcome};
use crate::state::{GatewayState, Writes};

/// Keys per batch: one entry stays under ~100 KB and applies in milliseconds.
pub const KEYS_PER_BATCH_MAX: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateKeys {
    pub consumer: Name,
    pub roles: Vec<Name>,
    pub expires_in_s: Option<u64>,
    /// `(id, digest)` of each generated key.
    pub keys: Vec<(KeyId, [u8; 32])>,
}

impl CreateKeys {
    /// All or nothing: a missing consumer or an id collision refuses the whole batch.
    pub fn apply(&self, st: &mut GatewayState, now_ms: u64, w: &mut Writes) -> Result<Outcome, OpError> {
        if self.keys.len() > KEYS_PER_BATCH_MAX {
            return Err(OpError::invalid(format!("at most {KEYS_PER_BATCH_MAX} keys per batch")));
        }
        if !st.policy.consumers.contains_key(&self.consumer) {
            return Err(OpError::not_found(format!("consumer {} does not exist", self.consumer)));
        }
        let mut seen = std::collections::BTreeSet::new();
        if self.keys.iter().any(|(id, _)| st.policy.keys.contains_key(id) || !seen.insert(id)) {
            return Err(OpError::conflict("key id collision; retry"));
        }
        for (id, digest) in &self.keys {
            st.put_key(
                ApiKey {
                    id: *id,
                    digest: *digest,
                    consumer: self.consumer.clone(),
                    roles: self.roles.clone(),
                    created_at_ms: now_ms,
                    expires_at_ms: self.expires_in_s.map(|s| now_ms.saturating_add(s.saturating_mul(1000))),
                    revoked_at_ms: None,
                    rotated_to: None,
                    grace_until_ms: None,
                },
                w,
            );
        }
        Ok(Outcome::Put { created: true })
    }
}
