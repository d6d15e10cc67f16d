//! The fault-matrix runner: every scenario of ../shared/reference/faults.md that raftgate faces,
//! then combined chaos (row 21) on 3 and 5 nodes for the rest of the time given.
//!
//! ```sh
//! cargo run --release -p chaos-tests --bin chaos -- --all --seed 42 --duration 10m
//! cargo run --release -p chaos-tests --bin chaos -- --only packet_loss,slow_disk --seed 7
//! cargo run --release -p chaos-tests --bin chaos -- --list
//! ```
//!
//! Each scenario gets its own seed, derived from `--seed` (printed, so any one replays alone
//! with `CHAOS_SEED=<its seed>`). Prints a result line per scenario and writes
//! `matrix-<seed>.json` next to the scenarios' own reports (`$CHAOS_REPORT_DIR`, default
//! `$TMPDIR/raftgate-chaos`). Exits 1 if any scenario failed.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chaos_tests::matrix::{combined, ALL};
use rand::{Rng, SeedableRng};
use serde_json::json;

struct Args {
    all: bool,
    only: Vec<String>,
    seed: u64,
    duration: Duration,
    list: bool,
}

fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().with_context(|| format!("bad duration {s:?}: use e.g. 90s, 10m, 1h"))?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => bail!("bad duration {s:?}: use e.g. 90s, 10m, 1h"),
    })
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args { all: false, only: Vec::new(), seed: rand::random(), duration: Duration::ZERO, list: false };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--all" => a.all = true,
            "--list" => a.list = true,
            "--only" => a.only = it.next().context("--only needs names")?.split(',').map(String::from).collect(),
            "--seed" => a.seed = it.next().context("--seed needs a number")?.parse().context("--seed")?,
            "--duration" => a.duration = parse_duration(&it.next().context("--duration needs a value")?)?,
            other => bail!("unknown flag {other} (flags: --all, --only a,b, --seed N, --duration 10m, --list)"),
        }
    }
    if !a.all && a.only.is_empty() && !a.list {
        bail!("say what to run: --all, --only name,name, or --list");
    }
    Ok(a)
}

/// Runs one scenario in its own task, so that a violated invariant (a panic) is a result.
async fn run_one(name: &str, seed: u64, f: impl std::future::Future<Output = ()> + Send + 'static) -> (bool, f64) {
    // Scenarios read their seed from the environment (that is how a test replays one).
    std::env::set_var("CHAOS_SEED", seed.to_string());
    println!("==> {name} (seed {seed})");
    let started = Instant::now();
    let ok = tokio::spawn(f).await.is_ok();
    let secs = started.elapsed().as_secs_f64();
    println!("<== {name}: {} in {secs:.1} s", if ok { "PASS" } else { "FAIL" });
    (ok, secs)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    if args.list {
        for e in ALL {
            println!("{:<40} rows {:<24} {}", e.name, e.rows, if e.quick { "(CI quick subset)" } else { "" });
        }
        println!("{:<40} rows {:<24}", "combined_chaos (3 and 5 nodes, --duration)", "21");
        return Ok(());
    }
    for name in &args.only {
        if !ALL.iter().any(|e| e.name == name) && name != "combined_chaos" {
            bail!("no scenario named {name} (see --list)");
        }
    }
    println!("matrix seed {} (replay with --seed {})", args.seed, args.seed);
    let started = Instant::now();
    let mut results = Vec::new();
    let mut seeds = rand::rngs::StdRng::seed_from_u64(args.seed);
    for e in ALL {
        let seed: u64 = seeds.gen();
        if !args.all && !args.only.iter().any(|n| n == e.name) {
            continue;
        }
        let (ok, secs) = run_one(e.name, seed, (e.run)()).await;
        results.push(json!({ "scenario": e.name, "rows": e.rows, "seed": seed, "pass": ok, "seconds": secs }));
    }
    // Row 21 for whatever time is left: rounds of up to a minute, alternating 3 and 5 nodes.
    if args.all || args.only.iter().any(|n| n == "combined_chaos") {
        let mut round = 0u64;
        loop {
            let left = args.duration.saturating_sub(started.elapsed());
            let span = left.min(Duration::from_secs(60));
            // At least one round when asked for, however short the duration.
            if round > 0 && span < Duration::from_secs(10) {
                break;
            }
            let span = span.max(Duration::from_secs(10));
            let nodes = if round.is_multiple_of(2) { 3 } else { 5 };
            let seed: u64 = seeds.gen();
            let name = format!("combined_chaos_{nodes}_nodes");
            let (ok, secs) = run_one(&name, seed, combined::combined_chaos(nodes, span)).await;
            results.push(json!({ "scenario": name, "rows": "21", "seed": seed, "pass": ok, "seconds": secs }));
            round += 1;
        }
    }
    let failed: Vec<&str> =
        results.iter().filter(|r| r["pass"] == false).filter_map(|r| r["scenario"].as_str()).collect();
    println!("\nscenario                                  result  seconds  seed");
    for r in &results {
        println!(
            "{:<41} {:<7} {:>7.1}  {}",
            r["scenario"].as_str().unwrap_or(""),
            if r["pass"] == true { "pass" } else { "FAIL" },
            r["seconds"].as_f64().unwrap_or(0.0),
            r["seed"]
        );
    }
    let dir = std::env::var("CHAOS_REPORT_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join("raftgate-chaos"));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("matrix-{}.json", args.seed));
    let summary = json!({ "seed": args.seed, "seconds": started.elapsed().as_secs_f64(), "results": results });
    std::fs::write(&path, serde_json::to_vec_pretty(&summary)?)?;
    println!("{} scenarios, {} failed; summary: {}", results.len(), failed.len(), path.display());
    if !failed.is_empty() {
        bail!("failed: {failed:?}");
    }
    Ok(())
}
