//! Node-to-node traffic on the Raft listener: Raft RPCs, forwarded admin writes, read-index
//! requests and status probes. Every call has a timeout; every message is wrapped in an
//! [`wire::Envelope`] that names both ends and their incarnations, so a node whose data dir was
//! wiped can neither receive replication nor disturb elections under its old id.

pub mod client;
pub mod server;
pub mod wire;

pub use client::{NetworkFactory, PeerRpc};
