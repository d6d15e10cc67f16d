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
    /// The monotonic millisecond (+ 1; 0 = never) in which the wall clock was last read: it is
    /// read at most once a millisecond, however many requests ask, so a forward step is taken
    /// within a millisecond of it.
    wall_read_at: AtomicU64,
}

static CLOCK: LazyLock<WallClock> = LazyLock::new(|| WallClock {
    epoch: Instant::now(),
    offset: AtomicI64::new(i64::MIN),
    skew_file: std::env::var_os(CLOCK_SKEW_ENV).map(PathBuf::from),
    skew_ms: AtomicI64::new(0),
    skew_read_at: AtomicU64::new(0),
    wall_read_at: AtomicU64::new(0),
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

    /// The time at monotonic instant `at` (a moment just read, such as a request's start).
    #[allow(clippy::disallowed_methods, reason = "the one sanctioned wall-clock reader")]
    fn now_ms_at(&self, at: Instant) -> u64 {
        let mono = at.saturating_duration_since(self.epoch).as_millis() as u64;
        // Each proxy thread asks for every request; within a millisecond the answer only moves
        // with the monotonic clock, so the wall clock (another clock read, and the skew hook's
        // check) is consulted once a millisecond. The mark is a plain store: two threads that
        // both read the wall clock in the same millisecond agree through `offset`. Both loads
        // are relaxed, so the mark can be seen before the first offset is: a thread that finds
        // no offset yet reads the wall clock itself rather than answer from nothing.
        let mut seen = self.offset.load(Ordering::Relaxed);
        if self.wall_read_at.load(Ordering::Relaxed) != mono + 1 || seen == i64::MIN {
            let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
            let offset = wall + self.skew(mono) - mono as i64;
            // Written only when it grows (rarely: a forward step, or the first read), so the
            // line stays shared between the proxy threads' cores.
            if offset > seen {
                seen = self.offset.fetch_max(offset, Ordering::Relaxed).max(offset);
            }
            self.wall_read_at.store(mono + 1, Ordering::Relaxed);
        }
        (mono as i64 + seen).max(0) as u64
    }
}

/// Milliseconds since the Unix epoch; never goes backwards (see the module docs).
pub fn now_ms() -> u64 {
    CLOCK.now_ms_at(Instant::now())
}

/// [`now_ms`] at `at`, a monotonic instant the caller has just read for its own use (a
/// request's start): one clock read serves both.
pub fn now_ms_at(at: Instant) -> u64 {
    CLOCK.now_ms_at(at)
}

/// Milliseconds on the monotonic clock since the process first read this clock: for measuring
/// spans (idle connections), never for timestamps.
pub fn mono_ms() -> u64 {
    mono_ms_at(Instant::now())
}

/// [`mono_ms`] at `at` (see [`now_ms_at`]).
pub fn mono_ms_at(at: Instant) -> u64 {
    at.saturating_duration_since(CLOCK.epoch).as_millis() as u64
}

/// Calls `f` with the current time as an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110
/// §5.6.7) for a response's `Date` field. Formatted at most once a second per thread.
pub fn http_date(f: impl FnOnce(&[u8])) {
    thread_local! {
        static CACHED: std::cell::RefCell<(u64, [u8; 29])> = const { std::cell::RefCell::new((0, [0; 29])) };
    }
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        let mono = mono_ms() + 1;
        if mono >= c.0 {
            let now = now_ms();
            c.1 = format_http_date(now / 1000);
            // Valid until the wall clock's next second.
            c.0 = mono + (1000 - now % 1000);
        }
        f(&c.1)
    });
}

/// Formats seconds since the Unix epoch as an IMF-fixdate.
fn format_http_date(secs: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm, for days >= 0).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    let two = |out: &mut [u8; 29], at: usize, n: u64| {
        out[at] = b'0' + (n / 10 % 10) as u8;
        out[at + 1] = b'0' + (n % 10) as u8;
    };
    two(&mut out, 5, day);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    two(&mut out, 12, year / 100);
    two(&mut out, 14, year % 100);
    two(&mut out, 17, rem / 3600);
    two(&mut out, 20, rem / 60 % 60);
    two(&mut out, 23, rem % 60);
    out
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
            wall_read_at: AtomicU64::new(0),
        };
        let mut last = 0;
        for _ in 0..1000 {
            let now = c.now_ms_at(Instant::now());
            assert!(now >= last);
            last = now;
        }
        #[allow(clippy::disallowed_methods, reason = "comparing with the system clock")]
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!(last.abs_diff(wall) < 1000, "{last} vs {wall}");
        // A backward step: the offset seen before is kept.
        c.offset.fetch_add(30_000, Ordering::Relaxed);
        assert!(c.now_ms_at(Instant::now()) >= wall + 29_000);
    }

    #[test]
    fn a_forward_step_is_taken_within_a_millisecond() {
        let dir = std::env::temp_dir().join(format!("raftgate-clock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("skew");
        std::fs::write(&file, "0").unwrap();
        let c = WallClock {
            epoch: Instant::now(),
            offset: AtomicI64::new(i64::MIN),
            skew_file: Some(file.clone()),
            skew_ms: AtomicI64::new(0),
            skew_read_at: AtomicU64::new(0),
            wall_read_at: AtomicU64::new(0),
        };
        let before = c.now_ms_at(Instant::now());
        // Within one millisecond the wall clock is not read again: the same instant gives the
        // same time, whatever the wall clock did meanwhile.
        let at = Instant::now();
        let first = c.now_ms_at(at);
        std::fs::write(&file, "60000").unwrap();
        c.skew_read_at.store(0, Ordering::Relaxed);
        assert_eq!(c.now_ms_at(at), first, "read again within the same millisecond");
        // The next millisecond sees the step (the skew hook stands in for the system clock).
        std::thread::sleep(std::time::Duration::from_millis(2));
        let after = c.now_ms_at(Instant::now());
        assert!(after >= before + 60_000, "{after} < {before} + 60000");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn http_dates_are_imf_fixdates() {
        for (secs, text) in [
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (1_795_935_599, "Sun, 29 Nov 2026 06:59:59 GMT"),
            (4_102_444_800, "Fri, 01 Jan 2100 00:00:00 GMT"),
        ] {
            assert_eq!(std::str::from_utf8(&format_http_date(secs)).unwrap(), text, "{secs}");
        }
        http_date(|d| assert_eq!(d.len(), 29));
    }
}
