//! The data plane and the policy model it enforces.
//!
//! For now this crate holds the policy model: consumers, API keys (and their wire format),
//! roles, routes and rate-limit policies, gathered in an immutable [`policy::Policy`] snapshot
//! that the state machine publishes after every applied change.
//!
//! It must not depend on openraft, RocksDB or the `raft`/`storage` crates: the request path
//! reads a published snapshot and can never await consensus or disk by accident.

pub mod policy;
