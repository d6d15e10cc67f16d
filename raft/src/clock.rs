//! The leader's clock for stamping commands; the state machine uses the stamped value, never
//! this. It is the data plane's clock (`raftgate_proxy::clock`): it never goes backwards, and a
//! backward step of the system clock is ignored (time runs on at the monotonic rate).

use std::sync::atomic::{AtomicU64, Ordering};

/// Milliseconds since the Unix epoch, never going backwards within this process.
#[derive(Debug, Default)]
pub struct Clock {
    /// The largest value handed out so far.
    last_ms: AtomicU64,
}

impl Clock {
    pub fn now_ms(&self) -> u64 {
        let now = raftgate_proxy::clock::now_ms();
        let prev = self.last_ms.fetch_max(now, Ordering::Relaxed);
        prev.max(now)
    }
}
