//! The immutable policy snapshot the data plane reads.
//!
//! The state machine owns the only mutable copy; after each applied batch it publishes a clone.
//! The maps are persistent (structural sharing), so a clone is O(1) and an update O(log n):
//! publishing after every write stays cheap with a million keys.

use imbl::OrdMap;

use std::net::IpAddr;
use std::sync::Arc;

use super::{ApiKey, AuthGuard, Consumer, KeyId, Name, RateLimitPolicy, Role, Route};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The Raft log index of the last entry this policy reflects; audit events name it.
    pub version: u64,
    /// Leader-stamped time of the last applied command: the cluster's agreed "now" at `version`.
    pub time_ms: u64,
    pub consumers: OrdMap<Name, Consumer>,
    /// By public key id. Each record sits behind an `Arc`: a B-tree leaf then holds 16
    /// pointers rather than 16 records, so copy-on-write after a change copies little and a
    /// sparsely filled leaf wastes little (see docs/ARCHITECTURE.md, "memory").
    pub keys: OrdMap<KeyId, Arc<ApiKey>>,
    pub roles: OrdMap<Name, Role>,
    pub routes: OrdMap<Name, Route>,
    pub rate_limits: OrdMap<Name, RateLimitPolicy>,
    /// Counting failed authentications cluster-wide, and blocking guilty IPs (off when `None`).
    pub auth_guard: Option<AuthGuard>,
    /// IPs refused on every node until the agreed time given.
    pub blocked_ips: OrdMap<IpAddr, u64>,
}
