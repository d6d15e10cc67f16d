//! Audit events and the bounded queue that takes them off the request path.
//!
//! The queue is sharded: each proxy thread records into a shard of its own (claimed when the
//! thread starts, [`AuditQueue::claim`]), and every other thread (the admin API, alerts) into one
//! shard they share. A shard is a mutex-guarded buffer that only its own thread and, once a
//! tick, the writer touch, so recording an event takes an uncontended lock on a cache line the
//! recording core already holds. A single channel shared by every thread had each request's
//! event move several contended cache lines between the cores (its permit count, its tail,
//! its slot flags).
//!
//! An event is encoded as it is recorded, into its shard's byte buffer, by the queue's
//! [`Encoder`] (the node's: the bytes the audit store keeps), so the writer reads each shard's
//! events as one run of bytes that a single core wrote. Queued as structs, each event was half
//! a dozen allocations of the recording core's that the writer's core fetched line by line,
//! encoded and freed (remote frees, and reference counts on lines the proxy threads share).
//!
//! Overflow policy: when the queue is full (by events, or by the bytes they take, so that
//! events with long paths cannot make it hold more memory than that) the newest event is
//! dropped and counted
//! (`raftgate_audit_dropped`), and a warning is logged at most once a second. The request
//! is never delayed by the audit trail. The writer behind the queue (in `node`) hash-chains the
//! events into the node's append-only audit store. When the store cannot be written (a full or
//! failing disk), the writer keeps the batch it holds and retries it, counting each failure
//! (`raftgate_audit_write_errors`); it takes nothing more from the queue meanwhile, so
//! the queue fills and further events meet the overflow policy above. If the writer stops
//! altogether (a bug: it panicked), the events it held and those still queued are counted as
//! dropped, and so is every event recorded after. Nothing is dropped without being counted.

use std::borrow::Cow;
use std::cell::Cell;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use serde::{Deserialize, Serialize};

/// Queue length: at 20k requests/s this is three seconds of events, enough to ride out a slow
/// disk without holding unbounded memory (~64k × ~150 B encoded ≈ 10 MB).
pub const AUDIT_QUEUE_LEN_MAX: usize = 65_536;
/// The most bytes the queue's events take, encoded. Typical events (~150 B) meet the length
/// bound long before this one; events with paths near the longest URI accepted (8 KiB) would
/// otherwise let the length bound alone hold over half a gigabyte.
pub const AUDIT_QUEUE_BYTES_MAX: usize = 64 << 20;

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

/// Appends the bytes to be stored for an event to `out`, or returns false (an event it cannot
/// encode is counted as dropped, and whatever it appended is cut off again).
pub type Encoder = fn(&AuditEvent, &mut Vec<u8>) -> bool;

/// The sending side, cloned into every request handler.
#[derive(Clone)]
pub struct AuditQueue {
    shared: Arc<Shared>,
    /// Held by every sender and by no receiver: the receiver sees the queue closed once the
    /// last sender is gone.
    _open: Arc<()>,
}

/// The receiving side, for the writer.
pub struct AuditReceiver {
    shared: Arc<Shared>,
    open: Weak<()>,
    /// The events being handed to the writer: a shard's whole buffer, swapped out (the shard
    /// gets this one, empty, in its place), or under a backlog one batch moved out. Empty
    /// between takes, unless a take's `each` panicked.
    spare: Records,
    /// How many of `spare`'s events have been handed over. If `each` panics, the rest go to
    /// the next take, or are counted as dropped when the receiver is.
    handed: usize,
    /// The shard the next take starts at, so that under a backlog no shard waits behind the
    /// others for long.
    start: usize,
}

struct Shared {
    shards: Box<[Shard]>,
    encode: Encoder,
    /// The most events the shards hold together.
    len_max: usize,
    /// A shard holding fewer than this takes an event without looking at the others.
    share: usize,
    /// The most bytes the shards' events take together, and each shard's share of them, as
    /// for the length.
    bytes_max: usize,
    bytes_share: usize,
    /// The receiver is gone (the writer stopped): events are counted as dropped, not queued.
    /// Written once; read on every record, it stays in every core's cache.
    receiver_gone: AtomicBool,
    stats: Arc<AuditStats>,
}

/// One thread's part of the queue. Aligned to two cache lines so that no two shards share one
/// (nor the lines the hardware prefetches in pairs).
#[repr(align(128))]
#[derive(Default)]
struct Shard {
    events: Mutex<Records>,
    /// `events.len()`, readable without the lock: the queue's depth and the overflow check.
    len: AtomicUsize,
    /// The bytes `events` holds, likewise.
    size: AtomicUsize,
}

/// Encoded events back to back in one buffer: a queue shard's, and the writer's batch (which
/// reuses it batch after batch; a `Vec` per event was two allocations and two frees an event).
#[derive(Default)]
pub struct Records {
    bytes: Vec<u8>,
    /// Where each event ends in `bytes`.
    ends: Vec<usize>,
}

impl Records {
    /// Keeps an encoded event behind the others.
    pub fn push(&mut self, event: &[u8]) {
        self.bytes.extend_from_slice(event);
        self.ends.push(self.bytes.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The events, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Event `i`'s bytes.
    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    /// Moves the first `k` of `from`'s events (some, not all) to this buffer, which is empty.
    fn move_front(&mut self, from: &mut Records, k: usize) {
        debug_assert!(self.ends.is_empty() && 0 < k && k < from.len());
        let cut = from.ends[k - 1];
        self.bytes.extend_from_slice(&from.bytes[..cut]);
        self.ends.extend_from_slice(&from.ends[..k]);
        from.bytes.drain(..cut);
        from.ends.drain(..k);
        from.ends.iter_mut().for_each(|end| *end -= cut);
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

thread_local! {
    /// The shard this thread records into, as claimed; `usize::MAX` (the shared shard) if none.
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The largest buffer kept for reuse between takes: a backlog's capacity is given back.
const SPARE_CAPACITY_MAX: usize = 16_384;
const SPARE_BYTES_MAX: usize = SPARE_CAPACITY_MAX * 256;

#[derive(Debug, Default)]
pub struct AuditStats {
    pub dropped: AtomicU64,
    /// Failed writes to the audit store (each retried).
    pub write_errors: AtomicU64,
    last_warn_s: AtomicU64,
}

impl AuditQueue {
    /// A queue holding at most `len_max` events, taking at most `bytes_max` bytes encoded,
    /// with shards of their own for `threads` recording threads (the proxy threads; see
    /// [`AuditQueue::claim`]) and one for every other thread, and its receiving end, for the
    /// writer (a thread of its own, in `node`). Events are queued as `encode` makes them.
    pub fn new(len_max: usize, bytes_max: usize, threads: usize, encode: Encoder) -> (Self, AuditReceiver) {
        let shards: Box<[Shard]> = (0..=threads).map(|_| Shard::default()).collect();
        let share = len_max / shards.len();
        let bytes_share = bytes_max / shards.len();
        let shared = Arc::new(Shared {
            shards,
            encode,
            len_max,
            share,
            bytes_max,
            bytes_share,
            receiver_gone: false.into(),
            stats: Arc::default(),
        });
        let open = Arc::new(());
        let rx = AuditReceiver {
            shared: shared.clone(),
            open: Arc::downgrade(&open),
            spare: Records::default(),
            handed: 0,
            start: 0,
        };
        (Self { shared, _open: open }, rx)
    }

    /// Makes the calling thread record into shard `i` from now on: one of the `threads` given
    /// to [`AuditQueue::new`], which no other thread should claim. A thread that claims none,
    /// or one beyond them, records into the shard every such thread shares. The claim is the
    /// thread's (a thread-local), so it holds for any queue the thread records into.
    pub fn claim(&self, i: usize) {
        SHARD.with(|s| s.set(i));
    }

    pub fn record(&self, event: AuditEvent) {
        let shared = &*self.shared;
        let shard = &shared.shards[SHARD.with(Cell::get).min(shared.shards.len() - 1)];
        let mut events = shard.events.lock().unwrap_or_else(PoisonError::into_inner);
        // Within its share a shard needs no look at the others; past it, the queue is full
        // only when all of them together are. (Threads recording at once can each see room for
        // one more: the bound can be passed by at most one event a thread.) The flag is read
        // under the lock, so an event is either queued before the receiver's drop counts what
        // is left, or counted here.
        let full = (events.len() >= shared.share && shared.depth() >= shared.len_max)
            || (events.bytes.len() >= shared.bytes_share && shared.size() >= shared.bytes_max);
        let why = if full {
            "audit queue full"
        } else if shared.receiver_gone.load(Ordering::Relaxed) {
            "audit writer stopped"
        } else {
            // Bytes past the last event's end are an encoding that never finished (an encoder
            // that panicked): they are cut off, as are those of an event the encoder refuses.
            let start = events.ends.last().copied().unwrap_or(0);
            events.bytes.truncate(start);
            if (shared.encode)(&event, &mut events.bytes) {
                let end = events.bytes.len();
                events.ends.push(end);
                shard.len.store(events.len(), Ordering::Relaxed);
                shard.size.store(end, Ordering::Relaxed);
                return;
            }
            events.bytes.truncate(start);
            "an audit event could not be encoded"
        };
        drop(events);
        let dropped = shared.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let now_s = crate::clock::now_ms() / 1000;
        if shared.stats.last_warn_s.swap(now_s, Ordering::Relaxed) != now_s {
            tracing::warn!(dropped, "{why}: events are being dropped");
        }
    }

    /// The writer has stopped (its receiver is gone): every event is now dropped and counted.
    pub fn writer_stopped(&self) -> bool {
        self.shared.receiver_gone.load(Ordering::Relaxed)
    }

    /// Events waiting in the queue (not those the writer has taken).
    pub fn depth(&self) -> usize {
        self.shared.depth()
    }

    pub fn stats(&self) -> &AuditStats {
        &self.shared.stats
    }

    /// The figures, shared with the writer (which must not hold a sender: the queue closes
    /// when the last sender goes).
    pub fn stats_handle(&self) -> Arc<AuditStats> {
        self.shared.stats.clone()
    }
}

impl Shared {
    fn depth(&self) -> usize {
        self.shards.iter().map(|s| s.len.load(Ordering::Relaxed)).sum()
    }

    /// The bytes the queued events take.
    fn size(&self) -> usize {
        self.shards.iter().map(|s| s.size.load(Ordering::Relaxed)).sum()
    }
}

impl AuditReceiver {
    /// Hands up to `max` waiting events to `each`, encoded, each thread's in the order it
    /// recorded them, and returns how many, or `None` once every sender is gone and this take
    /// found every shard empty: nothing more will come. No shard is locked while `each` runs.
    pub fn take(&mut self, max: usize, mut each: impl FnMut(&[u8])) -> Option<usize> {
        // The last sender's drop releases the count; this acquire makes every event it
        // recorded before visible below.
        let closed = self.is_closed();
        fence(Ordering::Acquire);
        // A take whose `each` panicked left the events it had not handed over: they go first.
        let mut taken = self.hand_over(&mut each);
        let n = self.shared.shards.len();
        for k in 0..n {
            let room = max.saturating_sub(taken);
            if room == 0 {
                break;
            }
            let shard = &self.shared.shards[(self.start + k) % n];
            // An empty shard is skipped without its lock; a stale zero only leaves its
            // events for the next take (and once closed, every shard is locked).
            if !closed && shard.len.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let mut events = shard.events.lock().unwrap_or_else(PoisonError::into_inner);
            if events.len() <= room {
                // All of them: the shard gets the empty buffer, and the lock is held for a swap.
                std::mem::swap(&mut *events, &mut self.spare);
            } else {
                self.spare.move_front(&mut events, room);
            }
            shard.len.store(events.len(), Ordering::Relaxed);
            shard.size.store(events.bytes.len(), Ordering::Relaxed);
            drop(events);
            taken += self.hand_over(&mut each);
        }
        self.start = (self.start + 1) % n;
        (!closed || taken > 0).then_some(taken)
    }

    /// Hands `spare`'s events to `each` and empties it; returns how many. They are counted one
    /// at a time, so that if `each` panics, those it has not had are handed over by the next
    /// take, or counted as dropped by the receiver's drop.
    fn hand_over(&mut self, each: &mut impl FnMut(&[u8])) -> usize {
        let n = self.spare.len() - self.handed;
        while self.handed < self.spare.len() {
            let i = self.handed;
            self.handed += 1;
            each(self.spare.get(i));
        }
        self.spare.clear();
        self.handed = 0;
        self.spare.bytes.shrink_to(SPARE_BYTES_MAX);
        self.spare.ends.shrink_to(SPARE_CAPACITY_MAX);
        n
    }

    /// Every sender is gone: nothing more will be recorded (some may still wait to be taken).
    pub fn is_closed(&self) -> bool {
        self.open.strong_count() == 0
    }
}

/// With the receiver gone nothing will store what is queued: it is counted as dropped, and so
/// is every event recorded from now on (`AuditQueue::record`).
impl Drop for AuditReceiver {
    fn drop(&mut self) {
        // Set before any shard is locked below: a record that takes a shard's lock after this
        // drop has sees it through that lock, and one before left its event to be counted here.
        self.shared.receiver_gone.store(true, Ordering::Relaxed);
        let mut lost = self.spare.len() - self.handed;
        for shard in self.shared.shards.iter() {
            let mut events = shard.events.lock().unwrap_or_else(PoisonError::into_inner);
            lost += events.len();
            events.clear();
            shard.len.store(0, Ordering::Relaxed);
            shard.size.store(0, Ordering::Relaxed);
        }
        self.shared.stats.dropped.fetch_add(lost as u64, Ordering::Relaxed);
        if lost > 0 {
            tracing::error!(lost, "the audit writer stopped with events queued: they are counted as dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events as JSON: the queue keeps whatever bytes its encoder makes.
    fn encode(e: &AuditEvent, out: &mut Vec<u8>) -> bool {
        serde_json::to_writer(out, e).is_ok()
    }

    fn decode(bytes: &[u8]) -> AuditEvent {
        serde_json::from_slice(bytes).expect("an event the test encoded")
    }

    fn event(ts_ms: u64) -> AuditEvent {
        AuditEvent {
            ts_ms,
            node_id: 1,
            kind: Cow::Borrowed("access"),
            decision: Cow::Borrowed("allow"),
            reason: Cow::Borrowed("ok"),
            key_id: None,
            consumer: None,
            route: None,
            method: Cow::Borrowed("GET"),
            path: "/".into(),
            raw_path: None,
            status: 200,
            latency_us: 1,
            client_ip: "127.0.0.1".into(),
            policy_version: 1,
            bytes_in: None,
            bytes_out: None,
        }
    }

    #[test]
    fn every_thread_gets_its_events_through_in_order() {
        let (q, mut rx) = AuditQueue::new(1000, 1 << 20, 2, encode);
        // Two threads with shards of their own, and one (this) on the shared shard.
        std::thread::scope(|s| {
            for i in 0..2 {
                let q = q.clone();
                s.spawn(move || {
                    q.claim(i);
                    (0..100).for_each(|n| q.record(event(i as u64 * 1000 + n)));
                });
            }
        });
        (0..100).for_each(|n| q.record(event(5000 + n)));
        assert_eq!(q.depth(), 300);
        let mut out = Vec::new();
        assert_eq!(rx.take(1000, |b| out.push(decode(b))), Some(300));
        assert_eq!(out.len(), 300);
        assert_eq!(q.depth(), 0);
        for base in [0, 1000, 5000] {
            let mine: Vec<u64> = out.iter().map(|e| e.ts_ms).filter(|t| (base..base + 100).contains(t)).collect();
            assert_eq!(mine, (base..base + 100).collect::<Vec<_>>(), "thread {base}'s events, in order");
        }
    }

    #[test]
    fn a_take_stops_at_its_limit_and_the_next_goes_on_from_there() {
        let (q, mut rx) = AuditQueue::new(1000, 1 << 20, 1, encode);
        (0..10).for_each(|n| q.record(event(n)));
        let mut out = Vec::new();
        assert_eq!(rx.take(4, |b| out.push(decode(b))), Some(4));
        assert_eq!(out.iter().map(|e| e.ts_ms).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(q.depth(), 6);
        out.clear();
        assert_eq!(rx.take(100, |b| out.push(decode(b))), Some(6));
        assert_eq!(out.iter().map(|e| e.ts_ms).collect::<Vec<_>>(), [4, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn a_full_queue_drops_the_newest_and_counts_it() {
        let (q, mut rx) = AuditQueue::new(10, 1 << 20, 1, encode);
        // One busy thread may use the whole bound, not only its shard's share of it.
        (0..15).for_each(|n| q.record(event(n)));
        assert_eq!(q.depth(), 10);
        assert_eq!(q.stats().dropped.load(Ordering::Relaxed), 5);
        let mut out = Vec::new();
        rx.take(100, |b| out.push(decode(b)));
        assert_eq!(out.iter().map(|e| e.ts_ms).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
        // Room again once the writer has taken them.
        q.record(event(99));
        assert_eq!(q.depth(), 1);
        assert_eq!(q.stats().dropped.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn a_queue_full_in_bytes_drops_the_newest_and_counts_it() {
        // Events of over 500 bytes (a 500-character path); 1,000 bytes for the whole queue,
        // 500 a shard.
        let long = |n| AuditEvent { path: "/p".repeat(250), ..event(n) };
        let (q, mut rx) = AuditQueue::new(100, 1000, 1, encode);
        // A shard past its share of the bytes takes another while the queue is under its bound.
        (0..5).for_each(|n| q.record(long(n)));
        assert_eq!(q.depth(), 2);
        assert_eq!(q.stats().dropped.load(Ordering::Relaxed), 3);
        // Short events are refused too while the bytes are spent.
        q.record(event(5));
        assert_eq!(q.stats().dropped.load(Ordering::Relaxed), 4);
        let mut out = Vec::new();
        assert_eq!(rx.take(100, |b| out.push(decode(b))), Some(2));
        assert_eq!(out.iter().map(|e| e.ts_ms).collect::<Vec<_>>(), [0, 1]);
        // Room again once the writer has taken them.
        q.record(long(6));
        assert_eq!(q.depth(), 1);
        assert_eq!(q.stats().dropped.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn events_the_writer_will_never_take_are_counted_as_dropped() {
        let (q, rx) = AuditQueue::new(100, 1 << 20, 1, encode);
        (0..3).for_each(|n| q.record(event(n)));
        drop(rx);
        assert_eq!(q.stats().dropped.load(Ordering::Relaxed), 3, "the queued ones");
        q.record(event(3));
        assert_eq!(q.stats().dropped.load(Ordering::Relaxed), 4, "and each one after");
        assert_eq!(q.depth(), 0);
        assert!(q.writer_stopped());
    }

    #[test]
    fn an_event_the_encoder_refuses_is_counted_as_dropped() {
        // It gets halfway through the odd ones.
        fn refuse_odd(e: &AuditEvent, out: &mut Vec<u8>) -> bool {
            if e.ts_ms % 2 == 1 {
                out.extend_from_slice(b"{\"ts_ms\":");
                return false;
            }
            encode(e, out)
        }
        let (q, mut rx) = AuditQueue::new(100, 1 << 20, 1, refuse_odd);
        (0..6).for_each(|n| q.record(event(n)));
        assert_eq!(q.depth(), 3);
        assert_eq!(q.stats().dropped.load(Ordering::Relaxed), 3);
        let mut out = Vec::new();
        assert_eq!(rx.take(100, |b| out.push(decode(b))), Some(3));
        assert_eq!(out.iter().map(|e| e.ts_ms).collect::<Vec<_>>(), [0, 2, 4]);
    }

    #[test]
    fn events_not_yet_handed_over_when_the_taker_panics_are_counted_as_dropped() {
        let (q, mut rx) = AuditQueue::new(100, 1 << 20, 1, encode);
        (0..10).for_each(|n| q.record(event(n)));
        let mut seen = 0;
        let taking = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rx.take(100, |_| {
                seen += 1;
                assert!(seen < 4, "a writer bug");
            })
        }));
        assert!(taking.is_err());
        assert_eq!(seen, 4, "the fourth was handed over when the taker panicked");
        drop(rx);
        assert_eq!(q.stats().dropped.load(Ordering::Relaxed), 6, "the six never handed over");
    }

    #[test]
    fn a_take_after_one_that_panicked_hands_over_what_that_one_had_not() {
        let (q, mut rx) = AuditQueue::new(100, 1 << 20, 1, encode);
        (0..10).for_each(|n| q.record(event(n)));
        let taking = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rx.take(100, |b| assert!(decode(b).ts_ms < 3, "a writer bug"))
        }));
        assert!(taking.is_err());
        (10..12).for_each(|n| q.record(event(n)));
        let mut out = Vec::new();
        assert_eq!(rx.take(100, |b| out.push(decode(b))), Some(8));
        assert_eq!(out.iter().map(|e| e.ts_ms).collect::<Vec<_>>(), [4, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(q.depth(), 0);
        assert_eq!(q.stats().dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_queue_is_finished_only_when_every_sender_is_gone_and_it_is_empty() {
        let (q, mut rx) = AuditQueue::new(100, 1 << 20, 1, encode);
        let mut out = Vec::new();
        assert_eq!(rx.take(100, |b| out.push(decode(b))), Some(0), "open and empty: more may come");
        q.record(event(1));
        let q2 = q.clone();
        drop(q);
        assert!(!rx.is_closed());
        q2.record(event(2));
        drop(q2);
        assert!(rx.is_closed());
        assert_eq!(rx.take(1, |b| out.push(decode(b))), Some(1), "closed, but an event was still there");
        assert_eq!(rx.take(1, |b| out.push(decode(b))), Some(1));
        assert_eq!(rx.take(1, |b| out.push(decode(b))), None, "closed and empty");
        assert_eq!(out.iter().map(|e| e.ts_ms).collect::<Vec<_>>(), [1, 2]);
    }
}
