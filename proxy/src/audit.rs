//! Audit events and the bounded queue that takes them off the request path.
//!
//! Overflow policy: when the queue is full the newest event is dropped and counted
//! (`raftgate_audit_dropped`), and a warning is logged at most once a second. The request
//! is never delayed by the audit trail. The writer behind the queue (in `node`) hash-chains the
//! events into the node's append-only audit store. When the store cannot be written (a full or
//! failing disk), the writer keeps the batch it holds and retries it, counting each failure
//! (`raftgate_audit_write_errors`); it takes nothing more from the queue meanwhile, so
//! the queue fills and further events meet the overflow policy above. Nothing is dropped
//! without being counted.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Queue length: at 20k requests/s this is three seconds of events, enough to ride out a slow
/// disk without holding unbounded memory (~64k × ~300 B ≈ 20 MB).
pub const AUDIT_QUEUE_LEN_MAX: usize = 65_536;

/// One decision, for the audit trail. Never holds a secret: keys appear by public id only.
///
/// The fixed words are `'static` and route and consumer names are shared with the policy, so
/// recording a request's event copies only what is its own (path, key id, client IP). The
/// encoding is the same as plain strings: stored events read back unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub ts_ms: u64,
    pub node_id: u64,
    /// `access` for data-plane decisions, `admin` for admin API actions.
    pub kind: Cow<'static, str>,
    /// `allow` or `deny`.
    pub decision: Cow<'static, str>,
    /// Why: `ok`, `malformed`, `unknown`, `revoked`, `forbidden`, `rate_limited`, ...
    pub reason: Cow<'static, str>,
    pub key_id: Option<String>,
    pub consumer: Option<Arc<str>>,
    pub route: Option<Arc<str>>,
    pub method: Cow<'static, str>,
    /// The canonical path the decision was made on; the path as sent when the request was
    /// refused before it could be canonicalised.
    pub path: String,
    /// The request-target as the client sent it, when it differs from `path`: dot segments or
    /// duplicate slashes resolved (`/admin/../admin/keys`), or a fragment refused
    /// (`/public#/../admin`). Cut to 512 characters. Added in format version 2 of stored events.
    pub raw_path: Option<String>,
    pub status: u16,
    pub latency_us: u64,
    pub client_ip: String,
    /// The applied log index of the policy that decided.
    pub policy_version: u64,
    /// Bytes the client sent through a WebSocket tunnel, and bytes it was sent: on the event
    /// that closes one (`tunnel_*` reasons) only. Added in format version 2.
    pub bytes_in: Option<u64>,
    pub bytes_out: Option<u64>,
}

/// The sending side, cloned into every request handler.
#[derive(Clone)]
pub struct AuditQueue {
    tx: mpsc::Sender<AuditEvent>,
    stats: Arc<AuditStats>,
}

#[derive(Debug, Default)]
pub struct AuditStats {
    pub dropped: AtomicU64,
    /// Failed writes to the audit store (each retried).
    pub write_errors: AtomicU64,
    pub enqueued: AtomicU64,
    last_warn_s: AtomicU64,
}

impl AuditQueue {
    /// A queue and its receiving end, for the writer (a thread of its own, in `node`).
    pub fn new(len: usize) -> (Self, mpsc::Receiver<AuditEvent>) {
        let (tx, rx) = mpsc::channel(len);
        (Self { tx, stats: Arc::default() }, rx)
    }

    pub fn record(&self, event: AuditEvent) {
        match self.tx.try_send(event) {
            Ok(()) => {
                self.stats.enqueued.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                let now_s = crate::clock::now_ms() / 1000;
                if self.stats.last_warn_s.swap(now_s, Ordering::Relaxed) != now_s {
                    tracing::warn!(dropped, "audit queue full: events are being dropped");
                }
            }
        }
    }

    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    pub fn stats(&self) -> &AuditStats {
        &self.stats
    }

    /// The figures, shared with the writer (which must not hold a sender: the queue closes
    /// when the last sender goes).
    pub fn stats_handle(&self) -> Arc<AuditStats> {
        self.stats.clone()
    }
}
