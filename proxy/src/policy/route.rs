//! Routes: which requests go to which upstreams, how callers authenticate, which limits apply.

use serde::{Deserialize, Serialize};

use super::Name;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub name: Name,
    /// Matched segment-wise against the canonical path; the longest matching prefix wins.
    pub path_prefix: String,
    /// Host names this route answers for; empty means any.
    pub hosts: Vec<String>,
    /// Methods this route answers for; empty means any.
    pub methods: Vec<String>,
    /// Base URLs (`http://host:port`), used round-robin.
    pub upstreams: Vec<String>,
    pub auth: Vec<AuthMethod>,
    /// Names of rate-limit policies applied to every request on this route.
    pub rate_limits: Vec<Name>,
    /// Opt-in: keep serving on the last known policy when this node is stale. The promise that
    /// a returned revoke is final does not hold for such a route.
    pub serve_stale: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    ApiKey,
    /// No credential: the route is public (limits by IP or route still apply).
    None,
}
