//! What recording an audit event costs a proxy thread, with the audit queue against the queue
//! it replaced in session 24: one bounded tokio mpsc channel shared by every thread, with a
//! shared count of the events sent. mimalloc is the allocator, as in the node.
//!
//! Two threads each do about 20 µs of work an event (a proxied request's CPU on a busy 2-core
//! host) and record one event after it, while a writer thread takes the events every 5 ms, as
//! the node's writer does. The cost is the rise in time per event over the same loop with no
//! event at all: building the event, recording it, and what the writer's taking and dropping
//! it costs the two cores. Rounds alternate none / queue / channel / channel / queue / none.
//!
//! Run: `cargo bench -p raftgate-proxy --bench audit_queue` (prints its figures; not a test).

use std::borrow::Cow;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftgate_proxy::audit::{AuditEvent, AuditQueue};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EVENTS: u64 = 50_000;
const ROUNDS: usize = 5;

fn event(n: u64) -> AuditEvent {
    AuditEvent {
        ts_ms: n,
        node_id: 1,
        kind: Cow::Borrowed("access"),
        decision: Cow::Borrowed("allow"),
        reason: Cow::Borrowed("ok"),
        key_id: Some("k_0123456789abcdef".to_string()),
        consumer: None,
        route: None,
        method: Cow::Borrowed("GET"),
        path: "/orders/1".to_string(),
        raw_path: None,
        status: 200,
        latency_us: 1,
        client_ip: "127.0.0.1".to_string(),
        policy_version: 1,
        bytes_in: None,
        bytes_out: None,
    }
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
    Queue,
    Channel,
}

/// Nanoseconds per event on each recording thread, and the events the writer took.
fn round(mode: Mode) -> (f64, u64) {
    let (queue, mut rx) = AuditQueue::new(65_536, 2);
    let (tx, mut chan) = tokio::sync::mpsc::channel::<AuditEvent>(65_536);
    let sent = AtomicU64::new(0);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            loop {
                let last = stop.load(Ordering::Relaxed);
                n += rx.take(4096, drop).unwrap_or(0) as u64;
                for _ in 0..4096 {
                    match chan.try_recv() {
                        Ok(_) => n += 1,
                        Err(_) => break,
                    }
                }
                if last {
                    break n;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let start = Instant::now();
    std::thread::scope(|s| {
        for i in 0..2 {
            let (queue, tx, sent) = (queue.clone(), tx.clone(), &sent);
            s.spawn(move || {
                queue.claim(i);
                let mut buf = [1u64; 512];
                for n in 0..EVENTS {
                    black_box(work(&mut buf, n));
                    match mode {
                        Mode::None => {}
                        Mode::Queue => queue.record(event(n)),
                        Mode::Channel => {
                            if tx.try_send(event(n)).is_ok() {
                                sent.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            });
        }
    });
    let ns = start.elapsed().as_nanos() as f64 / EVENTS as f64;
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    (ns, writer.join().expect("writer"))
}

fn main() {
    let mut figures: [Vec<f64>; 3] = Default::default();
    for _ in 0..ROUNDS {
        for mode in [Mode::None, Mode::Queue, Mode::Channel, Mode::Channel, Mode::Queue, Mode::None] {
            let (ns, taken) = round(mode);
            let expected = if mode == Mode::None { 0 } else { 2 * EVENTS };
            assert_eq!(taken, expected, "every event reaches the writer");
            figures[mode as usize].push(ns);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let base = median(&mut figures[0]);
    println!("per event, 2 recording threads, {EVENTS} events each, medians of {} rounds:", 2 * ROUNDS);
    println!("  no event: {base:.0} ns of work");
    for (name, i) in [("audit queue (a shard a thread)", 1), ("one shared channel and count (before)", 2)] {
        let v = &mut figures[i];
        let (lo, hi) = (v.iter().copied().fold(f64::MAX, f64::min), v.iter().copied().fold(0.0, f64::max));
        println!("  {name}: +{:.0} ns [{:.0}–{:.0}]", median(v) - base, lo - base, hi - base);
    }
}
