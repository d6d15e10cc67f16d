//! Global rate-limit benchmark. Prints its figures; it is not a test.
//!
//! 1. Accuracy: admitted / L per window, on 3 and 5 nodes, under even, skewed (80 % on one
//!    node) and moving load (the hot node changes every 2 s), offered at 3 × L and 1.2 × L per
//!    window (at 1.2 × L, tokens stranded on a node would show).
//! 2. Cost: data-plane req/s and latency under a global limit vs a local one (wrk, 64
//!    connections, against one node of 3), and the Raft entries per second the global limit
//!    caused.
//! 3. Revoke latency with every node healthy (p50/p99).
//!
//! ```sh
//! bench/global-bench.sh            # nginx as the upstream, then this binary
//! cargo run --release -p chaos-tests --bin bench-global-limits -- --windows 3 --seconds 10
//! ```

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed benchmark")]
#![allow(clippy::disallowed_methods, reason = "windows are aligned to wall-clock time, as the cluster's are")]

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use chaos_tests::{EchoUpstream, TestCluster};
use serde_json::{json, Value};

/// Accuracy windows are 10 s with L = 1000: long enough for many grants, short enough to run.
const WINDOW_S: u64 = 10;
const LIMIT: u64 = 1000;

struct Args {
    windows: u64,
    seconds: u64,
    revokes: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args { windows: 3, seconds: 10, revokes: 50 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v: u64 = it.next().context("flag needs a value")?.parse()?;
        match flag.as_str() {
            "--windows" => a.windows = v,
            "--seconds" => a.seconds = v,
            "--revokes" => a.revokes = v as usize,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

async fn ok(c: &TestCluster, method: reqwest::Method, path: &str, body: Value) -> anyhow::Result<Value> {
    let (status, reply) = c.req(1, method.clone(), path, Some(body)).await?;
    if !(200..300).contains(&status) {
        bail!("{method} {path}: {status} {reply}");
    }
    Ok(reply)
}

async fn install(c: &TestCluster, upstream: &str) -> anyhow::Result<()> {
    use reqwest::Method;
    ok(c, Method::PUT, "/v1/roles/caller", json!({ "permissions": [{ "methods": ["GET"], "path": "/**" }] })).await?;
    ok(
        c,
        Method::PUT,
        "/v1/rate-limits/acc",
        json!({ "limit": LIMIT, "window_s": WINDOW_S, "per": "key", "mode": "global" }),
    )
    .await?;
    ok(
        c,
        Method::PUT,
        "/v1/rate-limits/big-global",
        json!({ "limit": 1_000_000_000u64, "window_s": 60, "per": "key", "mode": "global" }),
    )
    .await?;
    ok(c, Method::PUT, "/v1/rate-limits/big-local", json!({ "limit": 1_000_000_000u64, "window_s": 60, "per": "key" }))
        .await?;
    for (route, prefix, limit) in
        [("acc", "/acc", "acc"), ("global", "/global", "big-global"), ("local", "/local", "big-local")]
    {
        ok(
            c,
            Method::PUT,
            &format!("/v1/routes/{route}"),
            json!({ "path_prefix": prefix, "upstreams": [upstream], "rate_limits": [limit] }),
        )
        .await?;
    }
    ok(c, Method::POST, "/v1/consumers", json!({ "name": "bench", "roles": ["caller"] })).await?;
    Ok(())
}

async fn new_key(c: &TestCluster) -> anyhow::Result<(String, String)> {
    let k = ok(c, reqwest::Method::POST, "/v1/keys", json!({ "consumer": "bench" })).await?;
    Ok((k["id"].as_str().context("id")?.to_string(), k["key"].as_str().context("key")?.to_string()))
}

/// Offers `offered` × L over one window, paced, to the nodes `pattern` picks; returns admitted / L as
/// counted by the upstream.
async fn one_window(c: &TestCluster, up: &EchoUpstream, n: u64, pattern: &str, offered: f64) -> anyhow::Result<f64> {
    let (id, key) = new_key(c).await?;
    let window_ms = WINDOW_S * 1000;
    // Start at the next window boundary.
    tokio::time::sleep(Duration::from_millis(window_ms - now_ms() % window_ms + 20)).await;
    let start = Instant::now();
    let total = (offered * LIMIT as f64) as u64;
    let every = Duration::from_millis(window_ms - 500) / total as u32;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(3)).build()?;
    let mut tick = tokio::time::interval(every);
    let mut tasks = Vec::with_capacity(total as usize);
    let urls: Vec<String> = (1..=n).map(|i| format!("{}/acc/x", c.nodes[&i].proxy_url())).collect();
    for i in 0..total {
        tick.tick().await;
        let t = start.elapsed().as_secs();
        let node = match pattern {
            "even" => i % n,
            // 80 % on node 1, the rest spread over the others.
            "skewed" => {
                if i % 5 < 4 {
                    0
                } else {
                    1 + i % (n - 1)
                }
            }
            // The hot node changes every 2 s.
            _ => (t / 2) % n,
        };
        let req = http.get(&urls[node as usize]).bearer_auth(&key);
        tasks.push(tokio::spawn(async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }));
    }
    for t in tasks {
        t.await?;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(up.hits_for_key(&id) as f64 / LIMIT as f64)
}

async fn accuracy(n: u64, windows: u64) -> anyhow::Result<()> {
    let c = TestCluster::start(n, &[]).await?;
    c.wait_leader(Duration::from_secs(10)).await?;
    let up = EchoUpstream::start().await;
    install(&c, &up.url()).await?;
    c.wait_converged(&c.ids(), Duration::from_secs(10)).await?;
    for offered in [3.0, 1.2] {
        for pattern in ["even", "skewed", "moving"] {
            let mut ratios = Vec::new();
            for _ in 0..windows {
                ratios.push(one_window(&c, &up, n, pattern, offered).await?);
            }
            let min = ratios.iter().copied().fold(f64::MAX, f64::min);
            let max = ratios.iter().copied().fold(0.0, f64::max);
            println!(
                "accuracy nodes={n} load={pattern:<6} L={LIMIT}/{WINDOW_S}s offered={offered}L windows={windows}: admitted/L min {min:.3} max {max:.3}"
            );
        }
    }
    Ok(())
}

fn wrk(url: &str, key: &str, seconds: u64) -> anyhow::Result<(f64, String, String)> {
    let out = Command::new("wrk")
        .args([
            "-t2",
            "-c64",
            &format!("-d{seconds}s"),
            "--latency",
            "-H",
            &format!("Authorization: Bearer {key}"),
            url,
        ])
        .output()
        .context("wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |prefix: &str, idx: usize| {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(idx).map(str::to_string))
            .unwrap_or_default()
    };
    let rps: f64 = field("Requests/sec", 1).parse().unwrap_or(0.0);
    Ok((rps, field("50%", 1), field("99%", 1)))
}

/// Open-loop latency at a fixed rate with oha (`BENCH_OHA` = its path): p50 and p99 in ms,
/// corrected for coordinated omission, and the success rate.
fn oha(oha: &str, url: &str, key: &str, rate: u64, seconds: u64) -> anyhow::Result<(f64, f64, f64)> {
    let out = Command::new(oha)
        .args(["-z", &format!("{seconds}s"), "-q", &rate.to_string(), "-c", "64", "--no-tui", "--latency-correction"])
        .args(["--output-format", "json", "-H", &format!("Authorization: Bearer {key}"), url])
        .output()
        .context("oha")?;
    let v: Value = serde_json::from_slice(&out.stdout).context("oha's JSON")?;
    let p = |q: &str| v["latencyPercentiles"][q].as_f64().unwrap_or(f64::NAN) * 1000.0;
    Ok((p("p50"), p("p99"), v["summary"]["successRate"].as_f64().unwrap_or(0.0)))
}

async fn last_index(c: &TestCluster) -> u64 {
    let mut best = 0;
    for id in c.ids() {
        if let Some(h) = c.health(id).await {
            best = best.max(h["last_applied"].as_u64().unwrap_or(0));
        }
    }
    best
}

async fn cost_and_revokes(seconds: u64, revokes: usize) -> anyhow::Result<()> {
    let c = TestCluster::start(3, &[]).await?;
    c.wait_leader(Duration::from_secs(10)).await?;
    // A fast static upstream (nginx, from bench/global-bench.sh) when given, so that the
    // gateway and not the echo server is what is measured.
    let up = EchoUpstream::start().await;
    let upstream = std::env::var("BENCH_UPSTREAM").unwrap_or_else(|_| up.url());
    install(&c, &upstream).await?;
    c.wait_converged(&c.ids(), Duration::from_secs(10)).await?;
    let (_, key) = new_key(&c).await?;
    println!("upstream for throughput: {upstream}");
    let base = c.nodes[&1].proxy_url();
    if std::env::var("BENCH_UPSTREAM").is_ok() {
        let (rps, p50, p99) = wrk(&format!("{upstream}/"), &key, seconds)?;
        println!("throughput peer: wrk straight to the upstream (nginx): {rps:.0} req/s, p50 {p50}, p99 {p99}");
    }
    for (name, path) in [("local", "/local/x"), ("global", "/global/x"), ("local", "/local/x"), ("global", "/global/x")]
    {
        let before = last_index(&c).await;
        let t0 = Instant::now();
        let (rps, p50, p99) = wrk(&format!("{base}{path}"), &key, seconds)?;
        let entries = last_index(&c).await.saturating_sub(before);
        println!(
            "throughput limit={name:<6} wrk -c64 -t2 {seconds}s on node 1 of 3: {rps:.0} req/s, p50 {p50}, p99 {p99}; Raft entries {entries} ({:.1}/s)",
            entries as f64 / t0.elapsed().as_secs_f64()
        );
    }

    // Latency at a fixed rate, open loop: what a global limit adds over a local one at p99.
    if let Ok(oha_bin) = std::env::var("BENCH_OHA") {
        let rate = 5000;
        let mut rows = vec![];
        if std::env::var("BENCH_UPSTREAM").is_ok() {
            rows.push(("upstream direct", format!("{upstream}/")));
        }
        rows.push(("local", format!("{base}/local/x")));
        rows.push(("global", format!("{base}/global/x")));
        rows.push(("local", format!("{base}/local/x")));
        rows.push(("global", format!("{base}/global/x")));
        for (name, url) in rows {
            let (p50, p99, ok) = oha(&oha_bin, &url, &key, rate, seconds)?;
            println!(
                "fixed rate {rate} req/s (oha -c64, {seconds}s, corrected) {name:<15}: p50 {p50:.2} ms, p99 {p99:.2} ms, success {ok:.4}"
            );
        }
    }

    // Revokes with every node healthy, through a follower and through the leader alternately.
    let mut lat = Vec::with_capacity(revokes);
    let ids = c.ids();
    for i in 0..revokes {
        let (id, _) = new_key(&c).await?;
        let via = ids[i % ids.len()];
        let t0 = Instant::now();
        let (status, body) = c.post(via, &format!("/v1/keys/{id}/revoke"), json!({})).await?;
        if status != 200 {
            bail!("revoke: {status} {body}");
        }
        lat.push(t0.elapsed());
    }
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    println!("revoke latency, 3 healthy nodes, {revokes} revokes: p50 {:?} p99 {:?}", p(0.5), p(0.99));
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = parse_args()?;
    cost_and_revokes(a.seconds, a.revokes).await?;
    accuracy(3, a.windows).await?;
    accuracy(5, a.windows).await?;
    Ok(())
}
