//! The one place that reads the wall clock. Only the leader reads it, to stamp commands; the
//! state machine uses the stamped value, never this.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, never going backwards within this process.
#[derive(Debug, Default)]
pub struct Clock {
    /// The largest value handed out so far.
    last_ms: AtomicU64,
}

impl Clock {
    #[allow(clippy::disallowed_methods, reason = "this type is the one sanctioned wall-clock reader")]
    pub fn now_ms(&self) -> u64 {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let prev = self.last_ms.fetch_max(wall, Ordering::Relaxed);
        prev.max(wall)
    }
}
