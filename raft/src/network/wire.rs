//! The messages of the node-to-node channel. Encoded with the versioned codec of `storage`.

use serde::{Deserialize, Serialize};

use crate::command::{Request, Response};
use crate::{Incarnation, NodeId};

/// Path prefixes on the Raft listener.
pub mod path {
    pub const APPEND: &str = "/raft/append";
    pub const VOTE: &str = "/raft/vote";
    pub const SNAPSHOT: &str = "/raft/snapshot";
    pub const FORWARD: &str = "/raft/forward";
    pub const READ_INDEX: &str = "/raft/read-index";
    pub const MEMBERSHIP: &str = "/raft/membership";
    pub const STATUS: &str = "/raft/status";
    pub const PREVOTE: &str = "/raft/prevote";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub from: NodeId,
    pub from_incarnation: Incarnation,
    pub to: NodeId,
    /// What the sender's replicated registry says the target's incarnation is, if known.
    pub to_incarnation: Option<Incarnation>,
    pub body: T,
}

/// Who asked for a write, re-checked by the leader itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Caller {
    /// SHA-256 of the admin token the client presented.
    Admin([u8; 32]),
    /// A node proposing one of the node-internal operations for itself.
    Node,
    /// An API key rotating itself (self-service), by SHA-256 of its public id: the node that
    /// took the request checked the secret and the permission; only `RotateKey` of that key.
    Key([u8; 32]),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardWrite {
    pub caller: Caller,
    pub request: Request,
}

/// Why the leader did not carry out a forwarded call.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum LeaderRefusal {
    #[error("not the leader (leader is {leader:?})")]
    NotLeader { leader: Option<(NodeId, String)> },
    #[error("caller is not allowed to do this")]
    Forbidden,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unavailable(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Written {
    pub index: u64,
    pub response: Response,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembershipChange {
    Add { id: NodeId, raft_addr: String },
    Remove { id: NodeId },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardMembership {
    pub caller: Caller,
    pub change: MembershipChange,
}

/// A node's view of itself, for `/v1/health`, `/v1/cluster` and the chaos checkers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeStatus {
    pub node_id: NodeId,
    pub incarnation: Incarnation,
    pub state: String,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub last_applied: u64,
    pub last_log_index: u64,
}
