//! Issue an API key. The node that received the request generated the key; only its id and
//! digest are in the log.

use raftgate_proxy::policy::{ApiKey, KeyId, Name};
use serde::{Deserialize, Serialize};

use crate::command::{OpError, Outcome};
use crate::state::{GatewayState, Writes};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateKey {
    pub id: KeyId,
    pub digest: [u8; 32],
    pub consumer: Name,
    pub roles: Vec<Name>,
    pub expires_in_s: Option<u64>,
}

impl CreateKey {
    pub fn apply(&self, st: &mut GatewayState, now_ms: u64, w: &mut Writes) -> Result<Outcome, OpError> {
        if !st.policy.consumers.contains_key(&self.consumer) {
            return Err(OpError::not_found(format!("consumer {} does not exist", self.consumer)));
        }
        if st.policy.keys.contains_key(&self.id) {
            // 71 random bits make this practically impossible; refuse rather than overwrite.
            return Err(OpError::conflict("key id collision; retry"));
        }
        let key = ApiKey {
            id: self.id,
            digest: self.digest,
            consumer: self.consumer.clone(),
            roles: self.roles.clone(),
            created_at_ms: now_ms,
            expires_at_ms: self.expires_in_s.map(|s| now_ms.saturating_add(s.saturating_mul(1000))),
            revoked_at_ms: None,
            rotated_to: None,
            grace_until_ms: None,
        };
        st.put_key(key.clone(), w);
        Ok(Outcome::Key(key))
    }
}
