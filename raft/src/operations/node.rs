//! The node registry: which incarnation of each node id is the real one, and which ids are
//! retired for good.

use serde::{Deserialize, Serialize};

use crate::command::{OpError, Outcome};
use crate::state::{GatewayState, NodeRecord, Writes};
use crate::{Incarnation, NodeId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterNode {
    pub id: NodeId,
    pub incarnation: Incarnation,
}

impl RegisterNode {
    /// The first registration of an id wins. Another incarnation under the same id means that
    /// node's data dir was wiped: it must join again under a new id.
    pub fn apply(&self, st: &mut GatewayState, w: &mut Writes) -> Result<Outcome, OpError> {
        match st.nodes.get(&self.id) {
            Some(n) if n.retired => {
                Err(OpError::conflict(format!("node id {} was removed from the cluster and is never reused", self.id)))
            }
            Some(NodeRecord { incarnation: Some(i), .. }) if *i != self.incarnation => Err(OpError::conflict(format!(
                "node id {} is registered with another data dir; a wiped node must join under a new id",
                self.id
            ))),
            Some(NodeRecord { incarnation: Some(_), .. }) => Ok(Outcome::Done),
            _ => {
                st.put_node(NodeRecord { id: self.id, incarnation: Some(self.incarnation), retired: false }, w);
                Ok(Outcome::Done)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetireNode {
    pub id: NodeId,
}

impl RetireNode {
    pub fn apply(&self, st: &mut GatewayState, w: &mut Writes) -> Result<Outcome, OpError> {
        let incarnation = st.nodes.get(&self.id).and_then(|n| n.incarnation);
        st.put_node(NodeRecord { id: self.id, incarnation, retired: true }, w);
        Ok(Outcome::Done)
    }
}
