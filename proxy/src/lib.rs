//! The data plane and the policy model it enforces.
//!
//! `policy` is the model the control plane replicates: consumers, API keys (and their wire
//! format), roles, routes and rate-limit policies, gathered in an immutable
//! [`policy::Policy`] snapshot that the state machine publishes after every applied change.
//! The rest is the proxy: [`server`] accepts connections, [`gateway::Gateway`] runs each
//! request through the phases in [`phases`] and records the decision in the audit queue.
//!
//! It must not depend on openraft, RocksDB or the `raft`/`storage` crates: the request path
//! reads a published snapshot and can never await consensus or disk by accident.

pub mod audit;
pub mod canonical;
pub mod clock;
pub mod deny;
pub mod fields;
pub mod framing;
pub mod freshness;
pub mod gateway;
pub mod global;
pub mod h1;
mod hashing;
pub mod limits;
pub mod metrics;
pub mod phases;
pub mod policy;
pub mod reply;
pub mod reports;
pub mod request;
pub mod server;
pub mod tls;
pub mod tunnel;
pub mod upstream;
