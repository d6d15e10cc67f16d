//! Global rate limits on 3 nodes: L = 100 per minute per key, `"mode": "global"`.
//! 400 requests spread evenly, all on one node, and moving between nodes: the upstream sees at
//! most 100 of each key, and at least 95 while every node is healthy. Then a SIGKILL and a
//! SIGSTOP mid-window: still at most 100.
//!
//! The count is taken at the upstream (`x-gateway-key-id`), not from the client's 200s: a
//! request admitted by a node that dies before answering still counts.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
#![allow(clippy::disallowed_methods, reason = "windows are aligned to wall-clock time, as the cluster's are")]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chaos_tests::{EchoUpstream, TestCluster};
use serde_json::{json, Value};

const LIMIT: u64 = 100;

/// Which node request i goes to.
type Pick = Box<dyn Fn(usize) -> u64>;
const WINDOW_MS: u64 = 60_000;

async fn ok(c: &TestCluster, method: reqwest::Method, path: &str, body: Value) -> Value {
    let (status, reply) = c.req(1, method.clone(), path, Some(body)).await.unwrap();
    assert!((200..300).contains(&status), "{method} {path}: {status} {reply}");
    reply
}

/// A route `/g` under a global limit of 100 per minute per key, and `n` keys.
async fn install(c: &TestCluster, upstream: &str, n: usize) -> Vec<(String, String)> {
    use reqwest::Method;
    ok(c, Method::PUT, "/v1/roles/caller", json!({ "permissions": [{ "methods": ["GET"], "path": "/g/**" }] })).await;
    ok(
        c,
        Method::PUT,
        "/v1/rate-limits/global-100",
        json!({ "limit": LIMIT, "window_s": WINDOW_MS / 1000, "per": "key", "mode": "global" }),
    )
    .await;
    ok(
        c,
        Method::PUT,
        "/v1/routes/g",
        json!({ "path_prefix": "/g", "upstreams": [upstream], "rate_limits": ["global-100"] }),
    )
    .await;
    ok(c, Method::POST, "/v1/consumers", json!({ "name": "acme", "roles": ["caller"] })).await;
    let mut keys = Vec::new();
    for _ in 0..n {
        let k = ok(c, Method::POST, "/v1/keys", json!({ "consumer": "acme" })).await;
        keys.push((k["id"].as_str().unwrap().to_string(), k["key"].as_str().unwrap().to_string()));
    }
    keys
}

/// Three nodes (`faults`: every node-to-node link through the fault network), an upstream, the
/// policy and `n` keys, converged everywhere.
async fn setup(faults: bool, n: usize) -> (TestCluster, EchoUpstream, Vec<(String, String)>) {
    let c =
        if faults { TestCluster::start_with_faults(3, &[]).await } else { TestCluster::start(3, &[]).await }.unwrap();
    c.wait_leader(Duration::from_secs(10)).await.unwrap();
    let up = EchoUpstream::start().await;
    let keys = install(&c, &up.url(), n).await;
    c.wait_converged(&c.ids(), Duration::from_secs(10)).await.unwrap();
    (c, up, keys)
}

/// One request every 5 ms: 200 requests per second offered.
const PACE: Duration = Duration::from_millis(5);

/// Waits, if needed, until the current window (aligned to the epoch, like the cluster's) has
/// at least `margin` left, so that a scenario runs inside one window.
async fn window_with(margin: Duration) -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let left = WINDOW_MS - now % WINDOW_MS;
    if left < margin.as_millis() as u64 {
        tokio::time::sleep(Duration::from_millis(left + 200)).await;
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    now - now % WINDOW_MS
}

fn window_now() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    now - now % WINDOW_MS
}

/// Sends one request every [`PACE`] to the node `target(i)` picks, each on its own task so a
/// slow answer does not slow the pace; returns the statuses seen (0 = no answer).
async fn fire(c: &TestCluster, key: &str, n: usize, target: impl Fn(usize) -> u64) -> BTreeMap<u16, u64> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().unwrap();
    let mut tick = tokio::time::interval(PACE);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        tick.tick().await;
        let url = format!("{}/g/{i}", c.nodes[&target(i)].proxy_url());
        let req = http.get(url).bearer_auth(key);
        tasks.push(tokio::spawn(async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }));
    }
    let mut statuses = BTreeMap::new();
    for t in tasks {
        *statuses.entry(t.await.unwrap()).or_default() += 1;
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_limit_holds_under_every_load_pattern() {
    let (c, up, keys) = setup(false, 3).await;

    let window = window_with(Duration::from_secs(30)).await;
    let patterns: [(&str, Pick); 3] = [
        ("even", Box::new(|i| 1 + (i % 3) as u64)),
        ("one node", Box::new(|_| 2)),
        // Traffic moves to the next node every 40 requests (200 ms), round and round.
        ("moving", Box::new(|i| 1 + ((i / 40) % 3) as u64)),
    ];
    for ((name, target), (id, key)) in patterns.iter().zip(&keys) {
        let statuses = fire(&c, key, 400, target).await;
        // Requests still travelling when the last answer came back are counted too.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let admitted = up.hits_for_key(id);
        println!("{name}: {admitted} of {LIMIT} admitted; statuses {statuses:?}");
        assert!(admitted <= LIMIT, "{name}: {admitted} admitted, limit {LIMIT}; statuses {statuses:?}");
        assert!(admitted >= LIMIT * 95 / 100, "{name}: only {admitted} of {LIMIT} admitted; statuses {statuses:?}");
        assert_eq!(statuses.get(&200).copied().unwrap_or(0), admitted, "{name}: {statuses:?}");
        assert_eq!(statuses.values().sum::<u64>(), 400);
        assert!(
            statuses.keys().all(|s| *s == 200 || *s == 429),
            "{name}: only 200 and 429 expected when healthy: {statuses:?}"
        );
    }
    assert_eq!(window_now(), window, "the scenario ran inside one window");

    // The 429 says when the window ends.
    let http = reqwest::Client::new();
    let r = http.get(format!("{}/g/x", c.nodes[&1].proxy_url())).bearer_auth(&keys[1].1).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let left_s = (window + WINDOW_MS - now).div_ceil(1000);
    assert!(retry <= left_s + 1 && retry + 2 >= left_s, "Retry-After {retry} s, window ends in {left_s} s");
    assert_eq!(r.headers()["ratelimit-limit"], "100");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_limit_holds_when_nodes_die_mid_window() {
    let (mut c, up, keys) = setup(false, 1).await;
    let (id, key) = keys[0].clone();
    let ids = c.ids();

    let window = window_with(Duration::from_secs(40)).await;
    // Some traffic everywhere, so every node holds tokens.
    fire(&c, &key, 60, |i| 1 + (i % 3) as u64).await;
    // Crash one node and freeze another: the survivor has no quorum and may spend only what it
    // already holds.
    let leader = c.wait_leader(Duration::from_secs(5)).await.unwrap();
    let crashed = leader;
    let frozen = *ids.iter().find(|i| **i != leader).unwrap();
    let survivor = *ids.iter().find(|i| **i != crashed && **i != frozen).unwrap();
    c.node(crashed).kill();
    c.node(frozen).pause();
    let alone = fire(&c, &key, 150, |_| survivor).await;
    // Back to health: the frozen node resumes (with the tokens it held), the crashed one
    // restarts (its tokens are lost, never spent), and traffic goes everywhere again.
    c.node(frozen).resume();
    c.node(crashed).restart();
    c.wait_converged(&ids, Duration::from_secs(20)).await.unwrap();
    let after = fire(&c, &key, 190, |i| 1 + (i % 3) as u64).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let admitted = up.hits_for_key(&id);
    assert_eq!(window_now(), window, "the scenario ran inside one window");
    assert!(admitted <= LIMIT, "{admitted} admitted, limit {LIMIT}; alone {alone:?}, after {after:?}");
    // Not a goal under faults, but the cluster must not have stopped admitting altogether.
    assert!(admitted > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_limit_holds_across_a_partition() {
    let (c, up, keys) = setup(true, 1).await;
    let (id, key) = keys[0].clone();
    let ids = c.ids();

    let window = window_with(Duration::from_secs(40)).await;
    fire(&c, &key, 60, |i| 1 + (i % 3) as u64).await;
    // Cut the leader off: the majority elects another and goes on granting; the old leader
    // spends what it holds and can grant nothing more (its entries cannot commit).
    let leader = c.wait_leader(Duration::from_secs(5)).await.unwrap();
    c.net().isolate(leader, &ids);
    let during = fire(&c, &key, 200, |i| 1 + (i % 3) as u64).await;
    c.net().heal();
    c.wait_converged(&ids, Duration::from_secs(20)).await.unwrap();
    let after = fire(&c, &key, 140, |i| 1 + (i % 3) as u64).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let admitted = up.hits_for_key(&id);
    assert_eq!(window_now(), window, "the scenario ran inside one window");
    assert!(admitted <= LIMIT, "{admitted} admitted, limit {LIMIT}; during {during:?}, after {after:?}");
    assert!(admitted > 0);
}

/// Slow and one-way links mid-window: one follower's links delayed by 150 ms both ways, then
/// the leader's link to another follower cut in one direction only (it can be heard but not
/// answered, or the reverse). Whatever the network does, never more than the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_limit_holds_over_slow_and_one_way_links() {
    let (c, up, keys) = setup(true, 2).await;
    let ids = c.ids();

    let window = window_with(Duration::from_secs(40)).await;
    let leader = c.wait_leader(Duration::from_secs(5)).await.unwrap();
    let followers: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();

    // A slow follower: its grants take at least two delayed hops.
    for other in ids.iter().filter(|i| **i != followers[0]) {
        c.net().delay(followers[0], *other, Duration::from_millis(150));
        c.net().delay(*other, followers[0], Duration::from_millis(150));
    }
    let (slow_id, slow_key) = &keys[0];
    let slow = fire(&c, slow_key, 400, |i| 1 + (i % 3) as u64).await;
    c.net().heal();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let slow_admitted = up.hits_for_key(slow_id);
    println!("slow follower: {slow_admitted} of {LIMIT} admitted; statuses {slow:?}");

    // One-way: the leader cannot reach the other follower, which can still reach the leader.
    c.net().cut(leader, followers[1]);
    let (oneway_id, oneway_key) = &keys[1];
    let oneway = fire(&c, oneway_key, 400, |i| 1 + (i % 3) as u64).await;
    c.net().heal();
    c.wait_converged(&ids, Duration::from_secs(20)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let oneway_admitted = up.hits_for_key(oneway_id);
    println!("one-way link: {oneway_admitted} of {LIMIT} admitted; statuses {oneway:?}");

    assert_eq!(window_now(), window, "the scenario ran inside one window");
    assert!(slow_admitted <= LIMIT, "slow follower: {slow_admitted} admitted; {slow:?}");
    assert!(oneway_admitted <= LIMIT, "one-way link: {oneway_admitted} admitted; {oneway:?}");
}
