//! Create and delete consumers.

use std::collections::BTreeMap;

use raftgate_proxy::policy::{ApiKey, Consumer, Name};
use serde::{Deserialize, Serialize};

use crate::command::{OpError, Outcome};
use crate::state::{GatewayState, Writes};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutConsumer {
    pub name: Name,
    pub roles: Vec<Name>,
    pub metadata: BTreeMap<String, String>,
}

impl PutConsumer {
    /// Creates the consumer; a consumer of that name already existing is a conflict.
    pub fn apply(&self, st: &mut GatewayState, now_ms: u64, w: &mut Writes) -> Result<Outcome, OpError> {
        if st.policy.consumers.contains_key(&self.name) {
            return Err(OpError::conflict(format!("consumer {} already exists", self.name)));
        }
        let c = Consumer {
            name: self.name.clone(),
            roles: self.roles.clone(),
            metadata: self.metadata.clone(),
            created_at_ms: now_ms,
        };
        st.put_consumer(c.clone(), w);
        Ok(Outcome::Consumer(c))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteConsumer {
    pub name: Name,
}

impl DeleteConsumer {
    /// Deletes the consumer and revokes every key it still holds, in the same entry, so no node
    /// ever sees a key without its consumer.
    pub fn apply(&self, st: &mut GatewayState, now_ms: u64, w: &mut Writes) -> Result<Outcome, OpError> {
        if st.delete_consumer(&self.name, w).is_none() {
            return Err(OpError::not_found(format!("consumer {} does not exist", self.name)));
        }
        let owned: Vec<_> = st
            .policy
            .keys
            .values()
            .filter(|k| k.consumer == self.name && k.revoked_at_ms.is_none())
            .map(|k| ApiKey::clone(k))
            .collect();
        for mut k in owned {
            k.revoked_at_ms = Some(now_ms);
            st.put_key(k, w);
        }
        Ok(Outcome::Done)
    }
}
