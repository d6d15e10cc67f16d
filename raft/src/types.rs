//! openraft's type config for raftgate.

use crate::command::{Request, Response};

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// raftgate's Raft types: commands in, responses out, nodes known by their Raft address.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = tokio::fs::File,
);

/// A random id a node draws when its data dir is created. The cluster records it; a node that
/// comes back with another one had its data wiped and must not rejoin under its old id.
pub type Incarnation = [u8; 16];
