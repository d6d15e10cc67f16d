//! Rate-limit policies, named and shared by routes.

use serde::{Deserialize, Serialize};

use super::Name;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitPolicy {
    pub name: Name,
    /// Requests (or cost units) admitted per window.
    pub limit: u64,
    pub window_s: u64,
    pub per: LimitSubject,
    pub mode: LimitMode,
    /// Units charged per request.
    pub cost: u64,
}

#[cfg(test)]
impl RateLimitPolicy {
    /// A policy for tests: `limit` a minute per `per`, cost 1.
    pub fn for_test(name: &str, limit: u64, per: LimitSubject, mode: LimitMode) -> Self {
        Self { name: Name::parse(name).expect("a valid name"), limit, window_s: 60, per, mode, cost: 1 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitSubject {
    Key,
    Consumer,
    Ip,
    Route,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitMode {
    /// Each node enforces the limit on its own traffic.
    Local,
    /// The limit holds across the whole cluster.
    Global,
}
