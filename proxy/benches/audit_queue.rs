//! What an audit event costs the cores: recording it on a proxy thread, and the writer's taking
//! it and putting it into its batch. Two designs, side by side:
//! - the audit queue as it is: each event encoded as it is recorded, into its thread's shard;
//!   the writer copies the bytes into its batch;
//! - session 24's queue: each thread's shard held the events as structs (half a dozen heap
//!   allocations each); the writer took them, encoded them into its batch and freed them.
//!
//! The encoding is the stored format (a version byte, then bincode's standard configuration),
//! here through bincode for both designs (the node writes the same bytes by hand, faster), and
//! the allocator mimalloc, as in the node. Two threads each do about 20 µs of work an event (a
//! proxied request's CPU on a busy 2-core host) and record one event after it, while a writer
//! thread takes the events every 5 ms, as the node's writer does. Figures per event: the rise
//! in the recording threads' time over the same loop with no event at all, and the writer's
//! busy time (taking and batching, clocked around each take). Rounds alternate
//! none / encoded / structs / structs / encoded / none.
//!
//! Run: `cargo bench -p raftgate-proxy --bench audit_queue` (prints its figures; not a test).

use std::borrow::Cow;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftgate_proxy::audit::{AuditEvent, AuditQueue};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EVENTS: u64 = 50_000;
const ROUNDS: usize = 5;

/// A proxied request's event, as the gateway builds it: route and consumer shared with the
/// policy, the key id, path and client IP its own.
fn event(n: u64, route: &Arc<str>, consumer: &Arc<str>) -> AuditEvent {
    AuditEvent {
        ts_ms: 1_765_000_000_000 + n,
        node_id: 1,
        kind: Cow::Borrowed("access"),
        decision: Cow::Borrowed("allow"),
        reason: Cow::Borrowed("ok"),
        key_id: Some("JL0SgL0Znpcf".to_string()),
        consumer: Some(consumer.clone()),
        route: Some(route.clone()),
        method: Cow::Borrowed("GET"),
        path: "/orders/1".to_string(),
        raw_path: None,
        status: 200,
        latency_us: 180,
        client_ip: "127.0.0.1".to_string(),
        policy_version: 42,
        bytes_in: None,
        bytes_out: None,
    }
}

/// A stored event's bytes (event format 2), as bincode writes them.
fn encode(e: &AuditEvent, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    out.push(2);
    let ok = bincode::serde::encode_into_std_write(e, out, bincode::config::standard()).is_ok();
    if !ok {
        out.truncate(start);
    }
    ok
}

/// About 20 µs of work on a private buffer.
#[inline(never)]
fn work(buf: &mut [u64; 512], seed: u64) -> u64 {
    let mut x = seed;
    for _ in 0..36 {
        for v in buf.iter_mut() {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(*v);
            *v = x;
        }
    }
    x
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    None,
    Encoded,
    Structs,
}

/// The writer's batch, as the node's writer keeps it.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

/// Per event: nanoseconds on each recording thread, the writer's busy nanoseconds, and the
/// events the writer took.
fn round(mode: Mode) -> (f64, f64, u64) {
    let (queue, mut rx) = AuditQueue::new(65_536, 64 << 20, 2, encode);
    // Session 24's shards: a mutex over each thread's events.
    let shards: Arc<[Mutex<Vec<AuditEvent>>; 2]> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, shards) = (stop.clone(), shards.clone());
        std::thread::spawn(move || {
            let (mut n, mut busy) = (0u64, Duration::ZERO);
            let mut batch = Batch::default();
            let mut spare = Vec::new();
            loop {
                let last = stop.load(Ordering::Relaxed);
                let t = Instant::now();
                n += rx
                    .take(4096, |e| {
                        batch.bytes.extend_from_slice(e);
                        batch.ends.push(batch.bytes.len());
                    })
                    .unwrap_or(0) as u64;
                for shard in shards.iter() {
                    std::mem::swap(&mut *shard.lock().expect("shard lock"), &mut spare);
                    for e in spare.drain(..) {
                        if encode(&e, &mut batch.bytes) {
                            batch.ends.push(batch.bytes.len());
                        }
                        n += 1;
                    }
                }
                black_box(&batch);
                batch.bytes.clear();
                batch.ends.clear();
                busy += t.elapsed();
                if last {
                    break (n, busy);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let (route, consumer): (Arc<str>, Arc<str>) = ("api".into(), "bench".into());
    let start = Instant::now();
    std::thread::scope(|s| {
        for i in 0..2 {
            let (queue, shards, route, consumer) = (queue.clone(), &shards, &route, &consumer);
            s.spawn(move || {
                queue.claim(i);
                let mut buf = [1u64; 512];
                for n in 0..EVENTS {
                    black_box(work(&mut buf, n));
                    match mode {
                        Mode::None => {}
                        Mode::Encoded => queue.record(event(n, route, consumer)),
                        Mode::Structs => shards[i].lock().expect("shard lock").push(event(n, route, consumer)),
                    }
                }
            });
        }
    });
    let ns = start.elapsed().as_nanos() as f64 / EVENTS as f64;
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    let (taken, busy) = writer.join().expect("writer");
    (ns, busy.as_nanos() as f64 / (2 * EVENTS) as f64, taken)
}

fn main() {
    let mut recording: [Vec<f64>; 3] = Default::default();
    let mut writing: [Vec<f64>; 3] = Default::default();
    for _ in 0..ROUNDS {
        for mode in [Mode::None, Mode::Encoded, Mode::Structs, Mode::Structs, Mode::Encoded, Mode::None] {
            let (ns, writer_ns, taken) = round(mode);
            let expected = if mode == Mode::None { 0 } else { 2 * EVENTS };
            assert_eq!(taken, expected, "every event reaches the writer");
            recording[mode as usize].push(ns);
            writing[mode as usize].push(writer_ns);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let range = |v: &[f64], base: f64| {
        let (lo, hi) = (v.iter().copied().fold(f64::MAX, f64::min), v.iter().copied().fold(0.0, f64::max));
        format!("[{:.0}–{:.0}]", lo - base, hi - base)
    };
    let base = median(&mut recording[0]);
    println!("per event, 2 recording threads, {EVENTS} events each, medians of {} rounds:", 2 * ROUNDS);
    println!("  no event: {base:.0} ns of work");
    for (name, i) in
        [("encoded as recorded (the queue)", 1), ("queued as structs, encoded by the writer (session 24)", 2)]
    {
        let r = median(&mut recording[i]);
        let w = median(&mut writing[i]);
        println!(
            "  {name}: recording +{:.0} ns {}, writer {w:.0} ns {}, together {:.0} ns",
            r - base,
            range(&recording[i], base),
            range(&writing[i], 0.0),
            r - base + w
        );
    }
}
