//! Row 21: combined chaos, Jepsen-style. For a given time, faults chosen by the seed overlap:
//! kills and restarts, pauses, minority and leader partitions, one-way cuts, loss and latency.
//! Then everything heals and every invariant is checked, plus a final write through each node.
//! Beside the admin workloads, requests under a global limit go through random nodes the whole
//! time; afterwards the upstream's count per key must not pass the limit (I7).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::faultnet::Degradation;
use crate::fixture::{install, ok};
use crate::scenario::{settle, time_to_write, KeyWorkload, Observer, Scenario, Workload, RECOVERY_BOUND};
use crate::{EchoUpstream, TestCluster};

/// Runs combined chaos on `nodes` nodes for `span`.
pub async fn combined_chaos(nodes: u64, span: Duration) {
    let mut c = TestCluster::start_with_faults(nodes, &[]).await.expect("cluster starts");
    let mut sc = Scenario::new(&format!("combined_chaos_{nodes}_nodes"));
    let up = EchoUpstream::start().await;
    install(&c, &up.url()).await;
    let global = GlobalTraffic::start(&c, &up.url(), span).await;
    let obs = Observer::start(&c);
    let ids = c.ids();
    let w = Workload::start(&c, "cc");
    let kw = KeyWorkload::start(&c, sc.rng_u64());
    let started = Instant::now();
    let mut faults = Vec::new();
    // At most a minority is ever down or paused at once, so a quorum can always form again.
    let minority = ((nodes - 1) / 2) as usize;
    let mut down: Vec<u64> = Vec::new();
    let mut paused: Vec<u64> = Vec::new();
    while started.elapsed() < span {
        let roll = sc.rng_u64() % 8;
        let victim = sc.pick(&ids);
        let fault = match roll {
            0 if down.len() + paused.len() < minority && !down.contains(&victim) && !paused.contains(&victim) => {
                c.node(victim).kill();
                down.push(victim);
                format!("kill {victim}")
            }
            1 if down.len() + paused.len() < minority && !down.contains(&victim) && !paused.contains(&victim) => {
                c.node(victim).pause();
                paused.push(victim);
                format!("pause {victim}")
            }
            2 => {
                c.net().isolate(victim, &ids);
                format!("isolate {victim}")
            }
            3 => {
                let other = sc.pick(&ids);
                if other != victim {
                    c.net().cut(victim, other);
                }
                format!("cut {victim}->{other}")
            }
            4 => {
                let seed = sc.rng_u64();
                c.net().degrade_all(
                    &ids,
                    Degradation {
                        delay: Duration::from_millis(20),
                        jitter: Duration::from_millis(40),
                        loss_permille: 50,
                        reset_permille: 2,
                        seed,
                    },
                );
                "loss 5 %, 20–60 ms".to_string()
            }
            5 => {
                c.net().heal();
                "heal network".to_string()
            }
            _ => {
                // Bring back whoever is down or paused.
                for id in down.drain(..) {
                    c.node(id).restart();
                }
                for id in paused.drain(..) {
                    c.node(id).resume();
                }
                "restart and resume all".to_string()
            }
        };
        faults.push(json!({ "at_ms": started.elapsed().as_millis(), "fault": fault }));
        tokio::time::sleep(sc.jitter(Duration::from_millis(500), Duration::from_millis(2_000))).await;
    }
    c.net().heal();
    for id in down.drain(..) {
        c.node(id).restart();
    }
    for id in paused.drain(..) {
        c.node(id).resume();
    }
    sc.figure("faults", json!(faults));
    let t = time_to_write(&c, &ids, "cc-healed", Duration::from_secs(15)).await;
    sc.check(
        "writable within the bound after everything healed (restarts included: bound + 5 s)",
        t.is_some_and(|t| t <= RECOVERY_BOUND + Duration::from_secs(5)),
        format!("{t:?}"),
    );
    let mut final_ok = Vec::new();
    for &id in &ids {
        final_ok.push(time_to_write(&c, &[id], &format!("cc-final-{id}"), Duration::from_secs(5)).await.is_some());
    }
    sc.check("a final write through each node succeeds", final_ok.iter().all(|o| *o), format!("{final_ok:?}"));
    kw.finish(&mut sc).await;
    global.finish(&mut sc, &up).await;
    settle(sc, &c, w, obs).await;
}

/// A global limit of [`GLOBAL_LIMIT`] per key per [`GLOBAL_WINDOW_MS`] window, and traffic
/// above it through random nodes: one key per window, sent only well inside its window (from
/// 0.5 s after it starts to 1 s before it ends, by this machine's clock, which is the
/// cluster's). The check counts each key's arrivals at the upstream per window.
pub(crate) struct GlobalTraffic {
    task: tokio::task::JoinHandle<Vec<(String, u64)>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

const GLOBAL_LIMIT: u64 = 20;
const GLOBAL_WINDOW_MS: u64 = 10_000;

#[allow(clippy::disallowed_methods, reason = "the test lines its traffic up with the cluster's windows")]
fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl GlobalTraffic {
    pub(crate) async fn start(c: &TestCluster, upstream: &str, span: Duration) -> Self {
        use reqwest::Method;
        ok(
            c,
            Method::PUT,
            "/v1/rate-limits/cc-global",
            json!({ "limit": GLOBAL_LIMIT, "window_s": GLOBAL_WINDOW_MS / 1000, "per": "key", "mode": "global" }),
        )
        .await;
        ok(
            c,
            Method::PUT,
            "/v1/routes/cc-global",
            json!({ "path_prefix": "/limited/global", "upstreams": [upstream], "rate_limits": ["cc-global"] }),
        )
        .await;
        // One key per window the run can touch, made before any fault.
        let windows = span.as_millis() as u64 / GLOBAL_WINDOW_MS + 4;
        let mut keys = Vec::new();
        for _ in 0..windows {
            let k = ok(c, Method::POST, "/v1/keys", json!({ "consumer": "acme" })).await;
            keys.push((k["id"].as_str().unwrap().to_string(), k["key"].as_str().unwrap().to_string()));
        }
        c.wait_converged(&c.ids(), Duration::from_secs(10)).await.expect("converged");
        let proxies: Vec<String> = c.nodes.values().map(|n| n.proxy_url()).collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let st = stop.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().expect("client");
            let first = wall_ms() / GLOBAL_WINDOW_MS;
            let mut used: Vec<(String, u64)> = Vec::new();
            let mut i = 0usize;
            // Bounded by the keys made: one window each.
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                let now = wall_ms();
                let (window, into) = (now / GLOBAL_WINDOW_MS, now % GLOBAL_WINDOW_MS);
                let Some((id, key)) = keys.get((window - first) as usize) else { break };
                if !(500..=GLOBAL_WINDOW_MS - 1_000).contains(&into) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                if used.last().is_none_or(|(u, _)| u != id) {
                    used.push((id.clone(), window));
                }
                let url = format!("{}/limited/global/{i}", proxies[i % proxies.len()]);
                let req = http.get(url).bearer_auth(key);
                tokio::spawn(async move {
                    let _ = req.send().await;
                });
                i += 1;
                // 50 requests a second offered: 2.5 × the limit over the usable part of a window.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            used
        });
        Self { task, stop }
    }

    pub(crate) async fn finish(self, sc: &mut Scenario, up: &EchoUpstream) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let used = self.task.await.unwrap_or_default();
        // Requests still in flight land within their 3 s timeout.
        tokio::time::sleep(Duration::from_secs(3)).await;
        // The limit holds per key per window. A key is sent in one window, but a request held
        // up (at a paused node, say) can be admitted in the next window, under that window's
        // own allowance: so count by the window each request reached the upstream in.
        let mut admitted = Vec::new();
        let mut late = 0u64;
        let mut over = Vec::new();
        for (id, sent_in) in &used {
            for (window, n) in up.hits_for_key_by_window(id, GLOBAL_WINDOW_MS) {
                if window == *sent_in {
                    admitted.push(n);
                } else {
                    late += n;
                }
                if n > GLOBAL_LIMIT {
                    over.push(format!("key {id} in window {window}: {n}"));
                }
            }
        }
        sc.figure("global_limit_admitted_per_window", json!(admitted));
        sc.figure("global_limit_admitted_in_a_later_window", json!(late));
        sc.check(
            "a global limit was never exceeded in any window",
            over.is_empty(),
            if over.is_empty() {
                format!("{} windows, at most {GLOBAL_LIMIT} admitted per key in each", used.len())
            } else {
                over.join("; ")
            },
        );
    }
}
