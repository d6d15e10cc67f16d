//! Install the bootstrap admin token, once, at the cluster's first start.

use raftgate_proxy::policy::Name;
use serde::{Deserialize, Serialize};

use crate::command::{OpError, Outcome};
use crate::state::{AdminToken, GatewayState, Writes};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapAdminToken {
    pub digest: [u8; 32],
}

impl BootstrapAdminToken {
    /// Only a cluster with no admin token at all takes one this way; every node proposes the
    /// token from its file at start, and all but the first proposal are no-ops.
    pub fn apply(&self, st: &mut GatewayState, now_ms: u64, w: &mut Writes) -> Result<Outcome, OpError> {
        if !st.admin_tokens.is_empty() {
            return Ok(Outcome::Done);
        }
        let name = Name::parse("bootstrap").expect("valid name");
        st.put_admin_token(
            AdminToken { name, digest: self.digest, roles: vec!["admin".into()], created_at_ms: now_ms },
            w,
        );
        Ok(Outcome::Done)
    }
}
