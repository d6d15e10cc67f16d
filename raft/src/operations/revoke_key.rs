//! Revoke an API key. Revocation is permanent and idempotent.

use serde::{Deserialize, Serialize};

use crate::command::{OpError, Outcome};
use crate::state::{GatewayState, Writes};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeKey {
    pub id: String,
}

impl RevokeKey {
    pub fn apply(&self, st: &mut GatewayState, now_ms: u64, w: &mut Writes) -> Result<Outcome, OpError> {
        let Some(mut key) = st.key(&self.id) else {
            return Err(OpError::not_found(format!("key {} does not exist", self.id)));
        };
        if key.revoked_at_ms.is_none() {
            key.revoked_at_ms = Some(now_ms);
            st.put_key(key.clone(), w);
        }
        Ok(Outcome::Key(key))
    }
}
