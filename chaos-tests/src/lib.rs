//! The multi-process test harness: real `raftgate` node processes on loopback ports, each with
//! its own data dir, driven through their admin APIs and killed, paused and restarted with
//! signals, with a fault-injecting network (`faultnet`), disk faults, a recorded workload and
//! its checkers (`scenario`, `linearizability`), and the fault matrix (`matrix`).
//!
//! Every wait here is bounded: a test that cannot reach its condition fails with the nodes'
//! logs instead of hanging.

pub mod cluster;
pub mod faultnet;
pub mod fixture;
pub mod linearizability;
pub mod matrix;
pub mod node;
pub mod powerfs;
pub mod raw;
pub mod scenario;
pub mod scripted;
pub mod upstream;
pub mod webhook;

pub use cluster::{TestCluster, ADMIN_TOKEN};
pub use node::NodeProc;
pub use upstream::EchoUpstream;
pub use webhook::WebhookReceiver;
