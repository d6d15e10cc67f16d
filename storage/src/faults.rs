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
//! - `delay <ms>`: every synced write takes that much longer, as on a slow disk.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Eio,
    Enospc,
    Delay(Duration),
}

fn parse(text: &str) -> Option<Fault> {
    let mut words = text.split_whitespace();
    match words.next()? {
        "eio" => Some(Fault::Eio),
        "enospc" => Some(Fault::Enospc),
        "delay" => words.next()?.parse().ok().map(|ms| Fault::Delay(Duration::from_millis(ms))),
        _ => None,
    }
}

/// Called before every synced write; fails or slows it if a fault is set.
pub(crate) fn before_synced_write() -> Result<(), std::io::Error> {
    let Some(file) = fault_file() else { return Ok(()) };
    let text = std::fs::read_to_string(file).unwrap_or_default();
    match parse(&text) {
        None => Ok(()),
        Some(Fault::Eio) => Err(std::io::Error::from_raw_os_error(5)),
        Some(Fault::Enospc) => Err(std::io::Error::from_raw_os_error(28)),
        Some(Fault::Delay(d)) => {
            std::thread::sleep(d);
            Ok(())
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
    }
}
