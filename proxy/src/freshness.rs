//! Whether this node may vouch for its policy right now.
//!
//! The control plane extends a lease (see `raftgate_raft::lease`) each time the leader confirms
//! its leadership with a quorum *after* the node asked, and the node has applied up to the
//! index the leader then named. The lease runs on this node's monotonic clock from the moment
//! it sent the request, so a delayed answer can only shorten it. The data plane reads one
//! atomic per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Freshness {
    /// Zero point of this node's monotonic clock, in this process.
    epoch: Instant,
    /// Fresh until this many milliseconds after `epoch` (0: never was).
    fresh_until_ms: AtomicU64,
}

impl Freshness {
    pub fn new() -> Self {
        Self { epoch: Instant::now(), fresh_until_ms: AtomicU64::new(0) }
    }

    fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Extends the lease to `sent_at + lease` (never shortens it).
    pub fn extend(&self, sent_at: Instant, lease: Duration) {
        self.fresh_until_ms.fetch_max(self.ms(sent_at + lease), Ordering::Release);
    }

    pub fn is_fresh(&self) -> bool {
        self.is_fresh_at(Instant::now())
    }

    /// Whether the lease covered instant `at`. The gateway asks at the moment it took the
    /// request's time, before it loaded the policy: if the lease held then, every write
    /// acknowledged before then is in the policy it loaded after.
    pub fn is_fresh_at(&self, at: Instant) -> bool {
        self.ms(at) < self.fresh_until_ms.load(Ordering::Acquire)
    }

    /// Milliseconds of lease left (0 when stale).
    pub fn remaining_ms(&self) -> u64 {
        self.fresh_until_ms.load(Ordering::Acquire).saturating_sub(self.ms(Instant::now()))
    }
}

impl Default for Freshness {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_runs_from_the_send_time() {
        let f = Freshness::new();
        assert!(!f.is_fresh(), "a node that never had a lease is stale");
        let sent = Instant::now();
        f.extend(sent, Duration::from_millis(200));
        assert!(f.is_fresh());
        // An older lease never shortens a newer one.
        f.extend(sent - Duration::from_secs(10), Duration::from_millis(1));
        assert!(f.is_fresh());
        std::thread::sleep(Duration::from_millis(250));
        assert!(!f.is_fresh(), "the lease lapses on this node's own clock");
    }
}
