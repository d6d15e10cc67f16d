//! The replicated control plane: openraft's type config, the commands, the deterministic state
//! machine and the node-to-node network.
//!
//! Configuration flows one way: an admin request becomes a [`command::Request`], Raft commits
//! it, [`app::GatewayApp`] applies it and publishes an immutable [`raftgate_proxy::policy::Policy`]
//! that the data plane reads. Traffic never flows through here.
//!
//! It must not: read a clock, randomness or do I/O inside `apply` (time comes from the
//! leader-stamped `ts_ms` of each request), or know about HTTP status codes of the admin API.

pub mod app;
pub mod clock;
pub mod cluster;
pub mod command;
pub mod lease;
pub mod network;
pub mod operations;
pub mod prevote;
pub mod quota;
pub mod state;
mod types;

pub use types::{Incarnation, NodeId, TypeConfig};

/// The openraft handle for this crate's type config.
pub type Raft = openraft::Raft<TypeConfig>;
