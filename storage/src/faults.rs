//! Disk-fault injection for the chaos tests: makes synced writes fail (EIO, ENOSPC) or slow, as
//! a failing or slow disk would, so tests can check that a node stops rather than acknowledge
//! what it did not persist.
//!
//! Off unless the environment variable `RAFTGATE_DISK_FAULTS` names a file when the node starts
//! (the node logs a warning then). The file is read before every synced write, so a test can
//! start and stop a fault while the node runs. Its content is one of:
//! - empty or missing: no fault;
//! - `eio`: every synced write fails with EIO, as a failing fsync does;
//! - `enospc`: every synced write fails with ENOSPC;
//! - `delay <ms>`: every synced write takes that much longer, as on a slow disk;
//! - `crash-before <point>` or `crash-after <point>`: the process aborts (no cleanup, as a
//!   power cut or SIGKILL would leave it) just before or just after the write at `point`:
//!   `append`, `vote`, `committed`, `truncate`, `purge` (synced), `apply` (a state
//!   machine batch), `install` (a snapshot install).
//! - `audit-eio` or `audit-delay <ms>`: only the audit store's writes fail or slow down (an
//!   audit disk that is full or slow while the Raft store is fine).
//! - `audit-panic`: the audit store's next write panics, before it takes any lock, as a bug in
//!   the audit writer would (it stops; what it would have stored is counted as dropped).
//!
//! A slow write blocks the calling thread, exactly as RocksDB's own synced write does.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

pub const DISK_FAULTS_ENV: &str = "RAFTGATE_DISK_FAULTS";

fn fault_file() -> Option<&'static PathBuf> {
    static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
    FILE.get_or_init(|| std::env::var_os(DISK_FAULTS_ENV).map(PathBuf::from)).as_ref()
}

/// Whether fault injection is on (for the startup warning).
pub fn enabled() -> Option<&'static std::path::Path> {
    fault_file().map(PathBuf::as_path)
}

/// A place where storage writes: the crash points, and whether the write is synced (only
/// synced writes fail or slow down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Point {
    Append,
    Vote,
    Committed,
    Truncate,
    Purge,
    Apply,
    Install,
    /// A write to the audit store.
    Audit,
}

impl Point {
    fn name(self) -> &'static str {
        match self {
            Point::Append => "append",
            Point::Vote => "vote",
            Point::Committed => "committed",
            Point::Truncate => "truncate",
            Point::Purge => "purge",
            Point::Apply => "apply",
            Point::Install => "install",
            Point::Audit => "audit",
        }
    }

    fn synced(self) -> bool {
        !matches!(self, Point::Apply | Point::Audit)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Fault {
    Eio,
    Enospc,
    Delay(Duration),
    CrashBefore(String),
    CrashAfter(String),
    AuditEio,
    AuditDelay(Duration),
    AuditPanic,
}

fn parse(text: &str) -> Option<Fault> {
    let mut words = text.split_whitespace();
    match words.next()? {
        "eio" => Some(Fault::Eio),
        "enospc" => Some(Fault::Enospc),
        "delay" => words.next()?.parse().ok().map(|ms| Fault::Delay(Duration::from_millis(ms))),
        "crash-before" => words.next().map(|p| Fault::CrashBefore(p.to_string())),
        "crash-after" => words.next().map(|p| Fault::CrashAfter(p.to_string())),
        "audit-eio" => Some(Fault::AuditEio),
        "audit-delay" => words.next()?.parse().ok().map(|ms| Fault::AuditDelay(Duration::from_millis(ms))),
        "audit-panic" => Some(Fault::AuditPanic),
        _ => None,
    }
}

fn current() -> Option<Fault> {
    let file = fault_file()?;
    parse(&std::fs::read_to_string(file).unwrap_or_default())
}

fn crash(when: &str, point: Point) -> ! {
    eprintln!("raftgate: injected crash {when} {} (RAFTGATE_DISK_FAULTS)", point.name());
    std::process::abort()
}

/// Called before the write at `point`: fails or slows a synced write, or crashes, if the fault
/// file says so.
pub(crate) fn before(point: Point) -> Result<(), std::io::Error> {
    match current() {
        None => Ok(()),
        Some(Fault::CrashBefore(p)) if p == point.name() => crash("before", point),
        Some(Fault::Eio) if point.synced() => Err(std::io::Error::from_raw_os_error(5)),
        Some(Fault::Enospc) if point.synced() => Err(std::io::Error::from_raw_os_error(28)),
        Some(Fault::Delay(d)) if point.synced() => {
            std::thread::sleep(d);
            Ok(())
        }
        Some(Fault::AuditEio) if point == Point::Audit => Err(std::io::Error::from_raw_os_error(5)),
        Some(Fault::AuditDelay(d)) if point == Point::Audit => {
            std::thread::sleep(d);
            Ok(())
        }
        Some(Fault::AuditPanic) if point == Point::Audit => {
            panic!("injected panic in an audit store write (RAFTGATE_DISK_FAULTS)")
        }
        Some(_) => Ok(()),
    }
}

/// Called after the write at `point` returned, before anyone is told: crashes if the fault
/// file says so.
pub(crate) fn after(point: Point) {
    if let Some(Fault::CrashAfter(p)) = current() {
        if p == point.name() {
            crash("after", point);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_faults() {
        assert_eq!(parse(""), None);
        assert_eq!(parse("eio\n"), Some(Fault::Eio));
        assert_eq!(parse("enospc"), Some(Fault::Enospc));
        assert_eq!(parse("delay 200"), Some(Fault::Delay(Duration::from_millis(200))));
        assert_eq!(parse("delay"), None);
        assert_eq!(parse("nonsense"), None);
        assert_eq!(parse("crash-after append"), Some(Fault::CrashAfter("append".into())));
        assert_eq!(parse("crash-before"), None);
        assert_eq!(parse("audit-eio"), Some(Fault::AuditEio));
        assert_eq!(parse("audit-delay 50"), Some(Fault::AuditDelay(Duration::from_millis(50))));
        assert_eq!(parse("audit-panic"), Some(Fault::AuditPanic));
    }
}
