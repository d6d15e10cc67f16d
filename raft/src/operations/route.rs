//! Create, replace and delete routes.

use raftgate_proxy::policy::{Name, Route};
use serde::{Deserialize, Serialize};

use crate::command::{OpError, Outcome};
use crate::state::{GatewayState, Writes};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRoute {
    pub route: Route,
}

impl PutRoute {
    /// Two routes may not claim the same prefix for the same hosts and methods: which one wins
    /// would depend on naming, a trap for operators.
    pub fn apply(&self, st: &mut GatewayState, w: &mut Writes) -> Result<Outcome, OpError> {
        let r = &self.route;
        let clash = st.policy.routes.values().find(|o| {
            o.name != r.name && o.path_prefix == r.path_prefix && o.hosts == r.hosts && o.methods == r.methods
        });
        if let Some(o) = clash {
            return Err(OpError::conflict(format!("route {} already serves path prefix {}", o.name, r.path_prefix)));
        }
        let created = st.put_route(r.clone(), w);
        Ok(Outcome::Put { created })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRoute {
    pub name: Name,
}

impl DeleteRoute {
    pub fn apply(&self, st: &mut GatewayState, w: &mut Writes) -> Result<Outcome, OpError> {
        match st.delete_route(&self.name, w) {
            Some(_) => Ok(Outcome::Done),
            None => Err(OpError::not_found(format!("route {} does not exist", self.name))),
        }
    }
}
