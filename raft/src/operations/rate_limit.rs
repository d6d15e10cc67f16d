//! Create, replace and delete rate-limit policies.

use raftgate_proxy::policy::{Name, RateLimitPolicy};
use serde::{Deserialize, Serialize};

use crate::command::{OpError, Outcome};
use crate::state::{GatewayState, Writes};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRateLimit {
    pub limit: RateLimitPolicy,
}

impl PutRateLimit {
    pub fn apply(&self, st: &mut GatewayState, w: &mut Writes) -> Result<Outcome, OpError> {
        let created = st.put_rate_limit(self.limit.clone(), w);
        Ok(Outcome::Put { created })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRateLimit {
    pub name: Name,
}

impl DeleteRateLimit {
    /// A policy still named by a route cannot go: the route would silently lose its limit.
    pub fn apply(&self, st: &mut GatewayState, w: &mut Writes) -> Result<Outcome, OpError> {
        if let Some(r) = st.policy.routes.values().find(|r| r.rate_limits.contains(&self.name)) {
            return Err(OpError::conflict(format!("rate limit {} is used by route {}", self.name, r.name)));
        }
        match st.delete_rate_limit(&self.name, w) {
            Some(_) => Ok(Outcome::Done),
            None => Err(OpError::not_found(format!("rate limit {} does not exist", self.name))),
        }
    }
}
