//! Create, replace and delete roles.

use raftgate_proxy::policy::{Name, Permission, Role};
use serde::{Deserialize, Serialize};

use crate::command::{OpError, Outcome};
use crate::state::{GatewayState, Writes};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRole {
    pub name: Name,
    pub permissions: Vec<Permission>,
}

impl PutRole {
    pub fn apply(&self, st: &mut GatewayState, w: &mut Writes) -> Result<Outcome, OpError> {
        let created = st.put_role(Role { name: self.name.clone(), permissions: self.permissions.clone() }, w);
        Ok(Outcome::Put { created })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRole {
    pub name: Name,
}

impl DeleteRole {
    /// A deleted role grants nothing; consumers and keys that name it keep the name, inert.
    pub fn apply(&self, st: &mut GatewayState, w: &mut Writes) -> Result<Outcome, OpError> {
        match st.delete_role(&self.name, w) {
            Some(_) => Ok(Outcome::Done),
            None => Err(OpError::not_found(format!("role {} does not exist", self.name))),
        }
    }
}
