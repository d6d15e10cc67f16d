//! Control-plane benchmark: admin write throughput and latency, leader failover time, and memory
//! and snapshot catch-up time with many keys. Prints its figures; it is not a test.
//!
//! ```sh
//! cargo run --release -p chaos-tests --bin bench-control-plane -- --clients 64 --seconds 10 --kills 10 --keys 1000000
//! ```

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chaos_tests::TestCluster;
use serde_json::json;

struct Args {
    nodes: u64,
    clients: usize,
    seconds: u64,
    kills: usize,
    keys: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args { nodes: 3, clients: 64, seconds: 10, kills: 10, keys: 100_000 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v: u64 = it.next().context("flag needs a value")?.parse()?;
        match flag.as_str() {
            "--nodes" => a.nodes = v,
            "--clients" => a.clients = v as usize,
            "--seconds" => a.seconds = v,
            "--kills" => a.kills = v as usize,
            "--keys" => a.keys = v,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn rss_mib(pid: u32) -> f64 {
    chaos_tests::node::rss_kib(pid) as f64 / 1024.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let timing: [&str; 0] = [];
    let c = TestCluster::start(args.nodes, &timing).await?;
    c.wait_leader(Duration::from_secs(10)).await?;
    c.post(1, "/v1/consumers", json!({ "name": "bench" })).await?;
    let c = Arc::new(tokio::sync::RwLock::new(c));

    // 1. Key creations with concurrent clients through every node.
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let (c, stop) = (c.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let node = 1 + (i as u64 % args.nodes);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = c.read().await.post(node, "/v1/keys", json!({ "consumer": "bench" })).await;
                match r {
                    Ok((201, _)) => lat.push(t.elapsed()),
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        lat.extend(l);
        errors += e;
    }
    lat.sort();
    println!(
        "key creations: {} clients, {} nodes, fsync on: {:.0}/s, p50 {:.1} ms, p99 {:.1} ms, errors {}",
        args.clients,
        args.nodes,
        lat.len() as f64 / args.seconds as f64,
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        errors
    );

    // 2. Failover: SIGKILL the leader, time to the first successful write through a survivor.
    let mut failovers = Vec::new();
    for k in 0..args.kills {
        let mut g = c.write().await;
        let leader = g.wait_leader(Duration::from_secs(15)).await?;
        let survivor = *g.nodes.keys().find(|id| **id != leader).expect("a survivor");
        g.node(leader).kill();
        let t = Instant::now();
        loop {
            if let Ok((201, _)) = g.post(survivor, "/v1/consumers", json!({ "name": format!("failover-{k}") })).await {
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!("no write within 30 s of killing the leader\n{}", g.logs());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        failovers.push(t.elapsed());
        g.node(leader).restart();
        let ids: Vec<u64> = g.nodes.keys().copied().collect();
        g.wait_converged(&ids, Duration::from_secs(30)).await?;
    }
    failovers.sort();
    println!(
        "failover (SIGKILL leader → first successful write), {} kills: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        failovers.len(),
        percentile(&failovers, 0.5).as_secs_f64() * 1e3,
        percentile(&failovers, 0.99).as_secs_f64() * 1e3,
        failovers.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );

    // 3. Many keys: memory per node, then a new node's catch-up through a snapshot.
    let g = c.read().await;
    let batch = 1000u64;
    let t = Instant::now();
    let mut made = 0u64;
    while made < args.keys {
        let n = batch.min(args.keys - made);
        let (status, body) =
            g.post(1 + made / batch % args.nodes, "/v1/keys/batch", json!({ "consumer": "bench", "count": n })).await?;
        if status != 201 {
            bail!("batch create: {status} {body}");
        }
        made += n;
    }
    println!(
        "loaded {made} keys in {:.1} s ({:.0} keys/s, batches of {batch})",
        t.elapsed().as_secs_f64(),
        made as f64 / t.elapsed().as_secs_f64()
    );
    drop(g);
    let mut g = c.write().await;
    let ids: Vec<u64> = g.nodes.keys().copied().collect();
    g.wait_converged(&ids, Duration::from_secs(120)).await?;
    for id in &ids {
        if let Some(pid) = g.node(*id).pid() {
            println!("node {id}: resident memory {:.0} MiB with {made} keys", rss_mib(pid));
        }
    }
    let new_id = 100;
    let addr = g.spawn_joiner(new_id);
    let leader = g.wait_leader(Duration::from_secs(10)).await?;
    let t = Instant::now();
    // The join call returns once the learner caught up and became a voter; with a big state
    // that takes longer than the harness's 20 s request timeout, so the figure is taken from
    // convergence below, whatever the call answers.
    match g.post(leader, "/v1/cluster/members", json!({ "id": new_id, "raft_addr": addr })).await {
        Ok((200, _)) => {}
        Ok((status, body)) => bail!("join: {status} {body}"),
        Err(e) => println!("join call: {e} (waiting for convergence anyway)"),
    }
    let mut all = ids.clone();
    all.push(new_id);
    if let Err(e) = g.wait_converged(&all, Duration::from_secs(300)).await {
        bail!("{e}\n{}", g.logs());
    }
    println!("new node caught up (snapshot with {made} keys) and converged in {:.1} s", t.elapsed().as_secs_f64());
    if let Some(pid) = g.node(new_id).pid() {
        println!("node {new_id}: resident memory {:.0} MiB after catch-up", rss_mib(pid));
        // The install's one big write batch goes through a memtable that RocksDB flushes in
        // the background; measure again once that is done.
        tokio::time::sleep(Duration::from_secs(15)).await;
        println!("node {new_id}: resident memory {:.0} MiB 15 s later", rss_mib(pid));
        if let Some(hold) = std::env::var("BENCH_HOLD_S").ok().and_then(|s| s.parse().ok()) {
            println!("holding the cluster for {hold} s (node {new_id} is pid {pid})");
            tokio::time::sleep(Duration::from_secs(hold)).await;
        }
        for id in &ids {
            if let Some(pid) = g.node(*id).pid() {
                println!("node {id}: resident memory {:.0} MiB 15 s later", rss_mib(pid));
            }
        }
    }
    Ok(())
}
