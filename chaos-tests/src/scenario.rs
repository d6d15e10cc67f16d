//! Scenario machinery: a seed, an observer of every node's health, a write workload with a
//! recorded history, invariant checks and a JSON report.
//!
//! Every scenario prints its seed; `CHAOS_SEED=N` replays the same fault schedule (which node
//! is chosen, when faults start). Reports go to `$CHAOS_REPORT_DIR` (default: the system temp
//! dir under `raftgate-chaos/`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::linearizability as lin;
use crate::TestCluster;

/// The recovery bound the issue sets: a writable leader within 2 × election_timeout_max + 0.5 s
/// after a fault heals (defaults: 2 × 600 ms + 500 ms).
pub const RECOVERY_BOUND: Duration = Duration::from_millis(2 * 600 + 500);

pub struct Scenario {
    pub name: String,
    pub seed: u64,
    pub rng: StdRng,
    results: Vec<(String, bool, String)>,
    figures: BTreeMap<String, Value>,
}

impl Scenario {
    pub fn new(name: &str) -> Self {
        let seed = std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
        Self::with_seed(name, seed)
    }

    pub fn with_seed(name: &str, seed: u64) -> Self {
        println!("scenario {name}: seed {seed} (replay with CHAOS_SEED={seed})");
        Self {
            name: name.to_string(),
            seed,
            rng: StdRng::seed_from_u64(seed),
            results: Vec::new(),
            figures: BTreeMap::new(),
        }
    }

    /// A number drawn from the seed (for seeding degraded links, shuffles).
    pub fn rng_u64(&mut self) -> u64 {
        self.rng.gen()
    }

    /// A node chosen by the seed among `ids`.
    pub fn pick(&mut self, ids: &[u64]) -> u64 {
        ids[self.rng.gen_range(0..ids.len())]
    }

    /// A duration in `[lo, hi)` chosen by the seed.
    pub fn jitter(&mut self, lo: Duration, hi: Duration) -> Duration {
        lo + Duration::from_millis(self.rng.gen_range(0..(hi - lo).as_millis().max(1) as u64))
    }

    pub fn check(&mut self, invariant: &str, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        println!("  {} {invariant}: {detail}", if ok { "PASS" } else { "FAIL" });
        self.results.push((invariant.to_string(), ok, detail));
    }

    pub fn figure(&mut self, name: &str, value: Value) {
        println!("  figure {name}: {value}");
        self.figures.insert(name.to_string(), value);
    }

    /// Writes the report and fails the test if any invariant failed.
    pub fn finish(self, c: &TestCluster) {
        let dir = std::env::var("CHAOS_REPORT_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| std::env::temp_dir().join("raftgate-chaos"));
        let _ = std::fs::create_dir_all(&dir);
        let report = json!({
            "scenario": self.name,
            "seed": self.seed,
            "invariants": self.results.iter().map(|(n, ok, d)| json!({ "name": n, "pass": ok, "detail": d })).collect::<Vec<_>>(),
            "figures": self.figures,
        });
        let path = dir.join(format!("{}-{}.json", self.name, self.seed));
        let _ = std::fs::write(&path, serde_json::to_vec_pretty(&report).unwrap_or_default());
        println!("  report: {}", path.display());
        let failed: Vec<_> = self.results.iter().filter(|r| !r.1).map(|r| r.0.clone()).collect();
        assert!(failed.is_empty(), "scenario {} (seed {}) violated {failed:?}\n{}", self.name, self.seed, c.logs());
    }
}

/// One health sample.
#[derive(Debug, Clone)]
struct Sample {
    node: u64,
    term: u64,
    state: String,
    applied: u64,
}

/// Polls every node's `/v1/health` every 50 ms in the background and keeps what it saw.
pub struct Observer {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    pub fn start(c: &TestCluster) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let urls: Vec<(u64, String)> =
            c.nodes.values().map(|n| (n.id, format!("{}/v1/health", n.admin_url()))).collect();
        let s = samples.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().expect("client");
            loop {
                for (id, url) in &urls {
                    if let Ok(r) = http.get(url).send().await {
                        if let Ok(v) = r.json::<Value>().await {
                            s.lock().expect("lock").push(Sample {
                                node: *id,
                                term: v["term"].as_u64().unwrap_or(0),
                                state: v["state"].as_str().unwrap_or("").to_string(),
                                applied: v["last_applied"].as_u64().unwrap_or(0),
                            });
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self { samples, task }
    }

    /// Elections seen since `term`: terms after it in which some node was seen leading.
    pub fn elections_since(&self, term: u64) -> usize {
        self.leader_terms().iter().filter(|t| **t > term).count()
    }

    /// The terms in which some node was seen leading, so far.
    pub fn leader_terms(&self) -> BTreeSet<u64> {
        self.samples.lock().expect("lock").iter().filter(|s| s.state == "Leader").map(|s| s.term).collect()
    }

    /// Checks: at most one leader per term; per node, term and applied index never go back
    /// (`restarted` nodes may restart their count from disk, which must still not go back).
    pub fn check(self, sc: &mut Scenario) {
        self.task.abort();
        let samples = self.samples.lock().expect("lock").clone();
        let mut leaders: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
        let mut last: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        let mut backwards = Vec::new();
        for s in &samples {
            if s.state == "Leader" {
                leaders.entry(s.term).or_default().insert(s.node);
            }
            if let Some(&(t, a)) = last.get(&s.node) {
                if s.term < t || s.applied < a {
                    backwards.push(format!("node {}: term {t}→{}, applied {a}→{}", s.node, s.term, s.applied));
                }
            }
            last.insert(s.node, (s.term, s.applied));
        }
        let split: Vec<_> =
            leaders.iter().filter(|(_, l)| l.len() > 1).map(|(t, l)| format!("term {t}: {l:?}")).collect();
        sc.check(
            "one leader per term",
            split.is_empty(),
            if split.is_empty() { format!("{} terms observed", leaders.len()) } else { split.join("; ") },
        );
        sc.check(
            "term and applied index never go backwards",
            backwards.is_empty(),
            if backwards.is_empty() { format!("{} samples", samples.len()) } else { backwards.join("; ") },
        );
    }
}

/// Writes consumers through the given nodes until told to stop; records what was acknowledged.
pub struct Workload {
    /// Every insert and read with its start, end and outcome, for the linearizability check.
    history: Arc<Mutex<Vec<lin::Event>>>,
    acked: Arc<Mutex<BTreeSet<String>>>,
    attempts: Arc<Mutex<u64>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Workload {
    pub fn start(c: &TestCluster, name: &str) -> Self {
        let acked = Arc::new(Mutex::new(BTreeSet::new()));
        let history = Arc::new(Mutex::new(Vec::new()));
        let hist = history.clone();
        let attempts = Arc::new(Mutex::new(0u64));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let urls: Vec<String> = c.nodes.values().map(|n| format!("{}/v1/consumers", n.admin_url())).collect();
        let (a, n, st, prefix) = (acked.clone(), attempts.clone(), stop.clone(), name.to_string());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(12)).build().expect("client");
            let mut i = 0u64;
            let mut lcg = 0x2545_f491_4f6c_dd1d_u64;
            // Bounded: at most 10,000 operations, and the scenario stops it much sooner.
            while !st.load(std::sync::atomic::Ordering::Relaxed) && i < 10_000 {
                let url = &urls[(i as usize) % urls.len()];
                let name = format!("{prefix}-{i}");
                *n.lock().expect("lock") += 1;
                let start = Instant::now();
                let r = http.post(url).bearer_auth(crate::ADMIN_TOKEN).json(&json!({ "name": name })).send().await;
                let outcome = match r.as_ref().map(|r| r.status().as_u16()) {
                    Ok(201) => lin::Outcome::Ok,
                    // Refused by validation or state: it did not happen.
                    Ok(s) if (400..500).contains(&s) => lin::Outcome::Failed,
                    // 5xx, timeouts, broken connections: it may have happened.
                    _ => lin::Outcome::Unknown,
                };
                hist.lock().expect("lock").push(lin::Event {
                    start,
                    end: Instant::now(),
                    op: lin::Op::Insert { key: name.clone(), outcome },
                });
                if outcome == lin::Outcome::Ok {
                    a.lock().expect("lock").insert(name);
                }
                // A linearizable read of an earlier name through the next node.
                if i > 0 {
                    // Half the time the name just written (the interesting case: a read racing
                    // replication), otherwise an earlier one picked by a small LCG.
                    lcg = lcg.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                    let j = if i.is_multiple_of(2) { i - 1 } else { (lcg >> 33) % i };
                    let key = format!("{prefix}-{j}");
                    let url = format!("{}/{key}", urls[(i as usize + 1) % urls.len()]);
                    let start = Instant::now();
                    let r = http.get(url).bearer_auth(crate::ADMIN_TOKEN).send().await;
                    let present = match r.map(|r| r.status().as_u16()) {
                        Ok(200) => Some(true),
                        Ok(404) => Some(false),
                        _ => None,
                    };
                    hist.lock().expect("lock").push(lin::Event {
                        start,
                        end: Instant::now(),
                        op: lin::Op::Read { key, present },
                    });
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Self { history, acked, attempts, stop, task }
    }

    /// Stops the workload, checks its history for linearizability, and returns the acknowledged
    /// names and the number of attempts.
    pub async fn finish(self, sc: &mut Scenario) -> (BTreeSet<String>, u64) {
        let history = self.history.clone();
        let result = self.stop().await;
        let h = history.lock().expect("lock").clone();
        match lin::check(&h) {
            Ok(n) => sc.check("the admin history is linearizable", true, format!("{n} operations")),
            Err(v) => sc.check("the admin history is linearizable", false, format!("{v:?}")),
        }
        result
    }

    /// Stops the workload and returns the acknowledged names and the number of attempts.
    pub async fn stop(self) -> (BTreeSet<String>, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.task.await;
        let acked = self.acked.lock().expect("lock").clone();
        let attempts = *self.attempts.lock().expect("lock");
        (acked, attempts)
    }
}

/// After healing: every node converges to one state, and every acknowledged write is on every
/// node.
pub async fn check_converged_and_durable(sc: &mut Scenario, c: &TestCluster, acked: &BTreeSet<String>) {
    let ids = c.ids();
    let converged = c.wait_converged(&ids, Duration::from_secs(30)).await;
    sc.check(
        "all nodes converge to one state",
        converged.is_ok(),
        match &converged {
            Ok((i, h)) => format!("index {i}, hash {}", &h[..12]),
            Err(e) => e.to_string().lines().next().unwrap_or("").to_string(),
        },
    );
    let mut missing = Vec::new();
    for id in &ids {
        let names: BTreeSet<String> = match c.get(*id, "/v1/consumers?consistency=stale").await {
            Ok((200, body)) => body["consumers"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v["name"].as_str().map(String::from)).collect())
                .unwrap_or_default(),
            _ => BTreeSet::new(),
        };
        let lost: Vec<_> = acked.difference(&names).cloned().collect();
        if !lost.is_empty() {
            missing.push(format!("node {id} lacks {} (e.g. {})", lost.len(), lost[0]));
        }
    }
    sc.check(
        "every acknowledged write is on every node",
        missing.is_empty(),
        if missing.is_empty() { format!("{} acknowledged writes", acked.len()) } else { missing.join("; ") },
    );
}

/// The common end of a workload scenario: stop the workload and check its history, check that
/// all nodes converged with every acknowledged write, check the observer, write the report.
/// Returns the number of acknowledged writes and of attempts (also recorded as a figure).
pub async fn settle(mut sc: Scenario, c: &TestCluster, w: Workload, obs: Observer) -> (usize, u64) {
    let (acked, attempts) = w.finish(&mut sc).await;
    sc.figure("writes", json!({ "acknowledged": acked.len(), "attempted": attempts }));
    check_converged_and_durable(&mut sc, c, &acked).await;
    obs.check(&mut sc);
    sc.finish(c);
    (acked.len(), attempts)
}

/// Polls `done` every 50 ms until it says yes or `limit` passes; how long it took.
pub async fn wait_until<F, Fut>(limit: Duration, mut done: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < limit {
        if done().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Probes writes through `ids` (in turn) for `span`, each allowed `each` to succeed, `pause`
/// apart; (acknowledged, tried).
pub async fn probe_writes(
    c: &TestCluster,
    ids: &[u64],
    tag: &str,
    span: Duration,
    each: Duration,
    pause: Duration,
) -> (u32, u32) {
    let started = Instant::now();
    let (mut ok, mut tries) = (0u32, 0u32);
    while started.elapsed() < span {
        tries += 1;
        if time_to_write(c, ids, &format!("{tag}-probe-{tries}"), each).await.is_some() {
            ok += 1;
        }
        tokio::time::sleep(pause).await;
    }
    (ok, tries)
}

/// Time until a write through `via` succeeds, up to `limit`.
pub async fn time_to_write(c: &TestCluster, via: &[u64], tag: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut i = 0usize;
    while start.elapsed() < limit {
        let id = via[i % via.len()];
        if let Ok((201, _)) = c.post(id, "/v1/consumers", json!({ "name": format!("{tag}-{i}") })).await {
            return Some(start.elapsed());
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Key and policy operations through random nodes, beside the consumer [`Workload`]: create
/// a key, use it through a random node's proxy, rotate or revoke it, change a role or a rate
/// limit. After a revoke returned, every node must refuse the key at once (401, or 503 from a
/// node that cannot vouch): that is checked on the spot. Needs the test fixture (consumer
/// `acme` with role `reader`, a route for `/orders`).
pub struct KeyWorkload {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<KeyLog>,
    proxies: Vec<String>,
}

#[derive(Default)]
struct KeyLog {
    /// Outcomes by operation: (ok, failed, unknown).
    ops: BTreeMap<&'static str, (u64, u64, u64)>,
    revokes_checked: u64,
    violations: Vec<String>,
    /// Keys whose revoke returned 200 (id, secret): checked again once the scenario healed.
    revoked: Vec<(String, String)>,
}

impl KeyLog {
    fn record(&mut self, op: &'static str, status: Option<u16>) {
        let e = self.ops.entry(op).or_default();
        match status {
            Some(s) if (200..300).contains(&s) => e.0 += 1,
            Some(s) if (400..500).contains(&s) => e.1 += 1,
            _ => e.2 += 1,
        }
    }
}

impl KeyWorkload {
    pub fn start(c: &TestCluster, seed: u64) -> Self {
        let admin: Vec<String> = c.nodes.values().map(|n| n.admin_url()).collect();
        let proxy: Vec<String> = c.nodes.values().map(|n| n.proxy_url()).collect();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let st = stop.clone();
        let proxies = proxy.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(12)).build().expect("client");
            let mut rng = StdRng::seed_from_u64(seed);
            let mut log = KeyLog::default();
            let status = |r: Result<reqwest::Response, reqwest::Error>| r.ok().map(|r| r.status().as_u16());
            // Bounded: at most 2,000 rounds; the scenario stops it much sooner.
            for i in 0..2_000u32 {
                if st.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let via = &admin[rng.gen_range(0..admin.len())];
                let r = http
                    .post(format!("{via}/v1/keys"))
                    .bearer_auth(crate::ADMIN_TOKEN)
                    .json(&json!({ "consumer": "acme" }))
                    .send()
                    .await;
                let created = match r {
                    Ok(r) if r.status() == 201 => r.json::<Value>().await.ok(),
                    other => {
                        log.record("create_key", status(other));
                        None
                    }
                };
                if let Some(k) = created {
                    log.record("create_key", Some(201));
                    let (id, key) =
                        (k["id"].as_str().unwrap_or("").to_string(), k["key"].as_str().unwrap_or("").to_string());
                    let p = &proxy[rng.gen_range(0..proxy.len())];
                    let used = http.get(format!("{p}/orders/{i}")).bearer_auth(&key).send().await;
                    log.record("use_key", status(used));
                    let via = &admin[rng.gen_range(0..admin.len())];
                    if rng.gen_bool(0.5) {
                        let r = http
                            .post(format!("{via}/v1/keys/{id}/revoke"))
                            .bearer_auth(crate::ADMIN_TOKEN)
                            .json(&json!({}))
                            .send()
                            .await;
                        let s = status(r);
                        log.record("revoke_key", s);
                        if s == Some(200) {
                            // Final on every node from the moment it returned.
                            log.revokes_checked += 1;
                            log.revoked.push((id.clone(), key.clone()));
                            for p in &proxy {
                                if let Ok(r) = http.get(format!("{p}/orders/{i}")).bearer_auth(&key).send().await {
                                    if r.status() == 200 {
                                        log.violations.push(format!("{p} accepted key {id} after its revoke returned"));
                                    }
                                }
                            }
                        }
                    } else {
                        let r = http
                            .post(format!("{via}/v1/keys/{id}/rotate"))
                            .bearer_auth(crate::ADMIN_TOKEN)
                            .json(&json!({ "grace_s": 0 }))
                            .send()
                            .await;
                        log.record("rotate_key", status(r));
                    }
                }
                if i % 5 == 0 {
                    let via = &admin[rng.gen_range(0..admin.len())];
                    let limit = rng.gen_range(100..1000);
                    let r = http
                        .put(format!("{via}/v1/rate-limits/wl-{}", i % 3))
                        .bearer_auth(crate::ADMIN_TOKEN)
                        .json(&json!({ "limit": limit, "window_s": 60, "per": "key" }))
                        .send()
                        .await;
                    log.record("put_rate_limit", status(r));
                    let r = http
                        .put(format!("{via}/v1/roles/wl-{}", i % 3))
                        .bearer_auth(crate::ADMIN_TOKEN)
                        .json(&json!({ "permissions": [{ "methods": ["GET"], "path": format!("/wl/{limit}/**") }] }))
                        .send()
                        .await;
                    log.record("put_role", status(r));
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            log
        });
        Self { stop, task, proxies }
    }

    /// Stops the workload and checks: no node accepted a key after its revoke returned, then
    /// or now (after every fault of the scenario: crashes, power cuts, restarts).
    pub async fn finish(self, sc: &mut Scenario) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut log = self.task.await.unwrap_or_default();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
        // Bounded: the workload revokes at most one key per round.
        for (id, key) in &log.revoked {
            for p in &self.proxies {
                if let Ok(r) = http.get(format!("{p}/orders/final")).bearer_auth(key).send().await {
                    if r.status() == 200 {
                        log.violations.push(format!("{p} accepted revoked key {id} after the scenario healed"));
                    }
                }
            }
        }
        let ops: BTreeMap<&str, Value> = log
            .ops
            .iter()
            .map(|(k, (ok, failed, unknown))| (*k, json!({ "ok": ok, "failed": failed, "unknown": unknown })))
            .collect();
        sc.figure("key_operations", json!(ops));
        sc.check(
            "no node accepted a key after its revoke returned",
            log.violations.is_empty(),
            if log.violations.is_empty() {
                format!("{} revokes checked on every node, then and at the end", log.revokes_checked)
            } else {
                log.violations.join("; ")
            },
        );
    }
}
