//! Threshold alerts: a global limit of 100 per minute with a webhook at 50 % and 100 %. Each
//! threshold reaches the receiver exactly once in the window, signed with the rule's secret,
//! even though the leader that delivered the first one is killed before the second fires and
//! the first delivery attempt is refused. Both deliveries are in the audit trail.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
#![allow(clippy::disallowed_methods, reason = "windows are aligned to wall-clock time, as the cluster's are")]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chaos_tests::{EchoUpstream, TestCluster, WebhookReceiver};
use serde_json::{json, Value};

const SECRET: &str = "a-webhook-secret-for-tests";
const WINDOW_MS: u64 = 60_000;

async fn ok(c: &TestCluster, via: u64, method: reqwest::Method, path: &str, body: Value) -> Value {
    let (status, reply) = c.req(via, method.clone(), path, Some(body)).await.unwrap();
    assert!((200..300).contains(&status), "{method} {path}: {status} {reply}");
    reply
}

async fn fire(c: &TestCluster, key: &str, n: usize, nodes: &[u64]) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().unwrap();
    for i in 0..n {
        let url = format!("{}/g/{i}", c.nodes[&nodes[i % nodes.len()]].proxy_url());
        let _ = http.get(url).bearer_auth(key).send().await;
    }
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_fire_once_per_threshold_across_a_leader_kill() {
    use reqwest::Method;
    let mut c = TestCluster::start(3, &[]).await.unwrap();
    c.wait_leader(Duration::from_secs(10)).await.unwrap();
    let up = EchoUpstream::start().await;
    let hook = WebhookReceiver::start().await;
    ok(&c, 1, Method::PUT, "/v1/roles/caller", json!({ "permissions": [{ "methods": ["GET"], "path": "/g/**" }] }))
        .await;
    ok(
        &c,
        1,
        Method::PUT,
        "/v1/rate-limits/global-100",
        json!({ "limit": 100, "window_s": 60, "per": "key", "mode": "global" }),
    )
    .await;
    ok(
        &c,
        1,
        Method::PUT,
        "/v1/routes/g",
        json!({ "path_prefix": "/g", "upstreams": [up.url()], "rate_limits": ["global-100"] }),
    )
    .await;
    ok(&c, 1, Method::POST, "/v1/consumers", json!({ "name": "acme", "roles": ["caller"] })).await;
    let key =
        ok(&c, 1, Method::POST, "/v1/keys", json!({ "consumer": "acme" })).await["key"].as_str().unwrap().to_string();
    let rule = json!({ "url": hook.url(), "secret": SECRET, "rate_limits": ["global-100"], "thresholds": [0.5, 1.0] });
    ok(&c, 2, Method::PUT, "/v1/alerts/ops", rule).await;
    // Reads never show the secret.
    let (_, shown) = c.get(3, "/v1/alerts/ops").await.unwrap();
    assert!(!shown.to_string().contains(SECRET), "{shown}");
    let ids = c.ids();
    c.wait_converged(&ids, Duration::from_secs(10)).await.unwrap();

    // Inside one window: cross 50 % (the first attempt is refused, the retry delivers).
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    if WINDOW_MS - now % WINDOW_MS < 40_000 {
        tokio::time::sleep(Duration::from_millis(WINDOW_MS - now % WINDOW_MS + 200)).await;
    }
    hook.fail_next(1);
    fire(&c, &key, 60, &ids).await;
    wait_for("the 50 % alert", Duration::from_secs(15), || hook.deliveries().len() == 1).await;
    let first = hook.deliveries()[0].clone();
    assert_eq!(first.json()["threshold"], 0.5, "{}", first.body);
    // Its delivery is recorded cluster-wide before the leader goes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = c.get(1, "/v1/alerts").await.unwrap();
        if v["pending_count"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the delivered alert is still pending: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Kill the leader; the new one must neither repeat the first alert nor miss the second.
    let leader = c.wait_leader(Duration::from_secs(5)).await.unwrap();
    c.node(leader).kill();
    let survivors: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
    c.wait_leader(Duration::from_secs(10)).await.unwrap();
    fire(&c, &key, 150, &survivors).await;
    wait_for("the 100 % alert", Duration::from_secs(15), || hook.deliveries().len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let all = hook.deliveries();
    assert_eq!(all.len(), 2, "exactly one delivery per threshold: {all:?}");
    let second = &all[1];
    assert_eq!(second.json()["threshold"], 1.0, "{}", second.body);
    assert_ne!(first.alert_id, second.alert_id);
    assert_eq!(first.json()["window_start_ms"], second.json()["window_start_ms"]);
    for d in &all {
        assert!(d.signed_with(SECRET), "signature of {}", d.body);
        assert!(!d.signed_with("another-secret-entirely"));
        assert_eq!(d.json()["id"], d.alert_id.as_str());
    }

    // Both deliveries are in the audit trail (the first on the killed node: bring it back).
    c.node(leader).restart();
    c.wait_converged(&ids, Duration::from_secs(20)).await.unwrap();
    let (_, audit) = c.get(survivors[0], "/v1/audit?limit=1000").await.unwrap();
    let delivered: Vec<&Value> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "alert" && e["reason"] == "delivered")
        .collect();
    assert_eq!(delivered.len(), 2, "{delivered:?}");
}
