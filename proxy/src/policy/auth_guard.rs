//! The cluster-wide guard against credential guessing: failed authentications are counted per
//! client IP across every node, and an IP past the threshold in one window is blocked on every
//! node for `block_s` (0: alert only).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthGuard {
    /// Failed authentications from one IP, summed over all nodes, within one window.
    pub threshold: u64,
    pub window_s: u64,
    /// How long a guilty IP is refused everywhere; 0 only alerts.
    pub block_s: u64,
}
