//! The data plane's one wall-clock reader (expiry checks, audit timestamps), also used by the
//! leader to stamp commands (`raftgate_raft::clock`).
//!
//! It never goes backwards: it is the monotonic clock plus the largest (wall − monotonic)
//! offset seen so far. A backward step of the system clock (an NTP step, an operator's `date`)
//! is ignored: time runs on at the monotonic rate, so a key does not live past its expiry and a
//! rate-limit window does not repeat. A forward step is taken at once (it errs towards denying:
//! keys expire and windows roll early by at most the step). The process keeps the larger
//! offset until it restarts.
//!
//! Chaos tests shift it with `RAFTGATE_CLOCK_SKEW`: the name of a file holding a signed number
//! of milliseconds added to the system clock, re-read at most every 100 ms (off unless set).

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub const CLOCK_SKEW_ENV: &str = "RAFTGATE_CLOCK_SKEW";

struct WallClock {
    epoch: Instant,
    /// Largest (wall − monotonic) seen, in ms.
    offset: AtomicI64,
    skew_file: Option<PathBuf>,
    /// The skew read last, and when (monotonic ms + 1; 0 = never).
    skew_ms: AtomicI64,
    skew_read_at: AtomicU64,
}

static CLOCK: LazyLock<WallClock> = LazyLock::new(|| WallClock {
    epoch: Instant::now(),
    offset: AtomicI64::new(i64::MIN),
    skew_file: std::env::var_os(CLOCK_SKEW_ENV).map(PathBuf::from),
    skew_ms: AtomicI64::new(0),
    skew_read_at: AtomicU64::new(0),
});

impl WallClock {
    fn skew(&self, mono_ms: u64) -> i64 {
        let Some(file) = &self.skew_file else { return 0 };
        let read_at = self.skew_read_at.load(Ordering::Relaxed);
        if read_at == 0 || mono_ms + 1 >= read_at + 100 {
            let skew = std::fs::read_to_string(file).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
            self.skew_ms.store(skew, Ordering::Relaxed);
            self.skew_read_at.store(mono_ms + 1, Ordering::Relaxed);
        }
        self.skew_ms.load(Ordering::Relaxed)
    }

    #[allow(clippy::disallowed_methods, reason = "the one sanctioned wall-clock reader")]
    fn now_ms(&self) -> u64 {
        let mono = self.epoch.elapsed().as_millis() as u64;
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        let offset = wall + self.skew(mono) - mono as i64;
        let kept = self.offset.fetch_max(offset, Ordering::Relaxed).max(offset);
        (mono as i64 + kept).max(0) as u64
    }
}

/// Milliseconds since the Unix epoch; never goes backwards (see the module docs).
pub fn now_ms() -> u64 {
    CLOCK.now_ms()
}

/// Milliseconds on the monotonic clock since the process first read this clock: for measuring
/// spans (idle connections), never for timestamps.
pub fn mono_ms() -> u64 {
    CLOCK.epoch.elapsed().as_millis() as u64
}

/// Whether the clock-skew hook is on (for the node's startup warning).
pub fn skew_hook() -> Option<&'static std::path::Path> {
    CLOCK.skew_file.as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_goes_backwards_and_follows_the_wall_clock() {
        let c = WallClock {
            epoch: Instant::now(),
            offset: AtomicI64::new(i64::MIN),
            skew_file: None,
            skew_ms: AtomicI64::new(0),
            skew_read_at: AtomicU64::new(0),
        };
        let mut last = 0;
        for _ in 0..1000 {
            let now = c.now_ms();
            assert!(now >= last);
            last = now;
        }
        #[allow(clippy::disallowed_methods, reason = "comparing with the system clock")]
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!(last.abs_diff(wall) < 1000, "{last} vs {wall}");
        // A backward step: the offset seen before is kept.
        c.offset.fetch_add(30_000, Ordering::Relaxed);
        assert!(c.now_ms() >= wall + 29_000);
    }
}
