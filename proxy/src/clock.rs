//! The data plane's one wall-clock reader (expiry checks, audit timestamps).

use std::time::{SystemTime, UNIX_EPOCH};

#[allow(clippy::disallowed_methods, reason = "the data plane's one sanctioned wall-clock reader")]
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
