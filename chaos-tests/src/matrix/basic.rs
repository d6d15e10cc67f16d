//! Faults of the CI quick subset on 3 nodes behind the fault network: kills, pauses,
//! partitions, and the revocation guarantees under them (../shared/reference/faults.md rows 2,
//! 4, 5, 11, I6).

use std::time::Duration;

use serde_json::json;

use crate::fixture::install;
use crate::scenario::{
    check_converged_and_durable, settle, time_to_write, wait_until, Observer, Scenario, Workload, RECOVERY_BOUND,
};
use crate::{EchoUpstream, TestCluster};

pub(crate) async fn cluster() -> TestCluster {
    let c = TestCluster::start_with_faults(3, &[]).await.unwrap();
    c.wait_leader(Duration::from_secs(10)).await.unwrap();
    c
}

pub async fn follower_kill_and_restart() {
    let mut c = cluster().await;
    let mut sc = Scenario::new("follower_kill");
    let obs = Observer::start(&c);
    let leader = c.wait_leader(Duration::from_secs(5)).await.unwrap();
    let followers: Vec<u64> = c.ids().into_iter().filter(|i| *i != leader).collect();
    let victim = sc.pick(&followers);
    let w = Workload::start(&c, "fk");
    tokio::time::sleep(sc.jitter(Duration::from_millis(200), Duration::from_millis(800))).await;
    c.node(victim).kill();
    let survivors: Vec<u64> = c.ids().into_iter().filter(|i| *i != victim).collect();
    let t = time_to_write(&c, &survivors, "fk-probe", Duration::from_secs(5)).await;
    sc.check("writes continue with a follower down", t.is_some(), format!("{t:?}"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.node(victim).restart();
    tokio::time::sleep(Duration::from_millis(500)).await;
    settle(sc, &c, w, obs).await;
}

pub async fn minority_partition_then_heal() {
    let c = cluster().await;
    let mut sc = Scenario::new("minority_partition");
    let obs = Observer::start(&c);
    let ids = c.ids();
    let minority = sc.pick(&ids);
    let majority: Vec<u64> = ids.iter().copied().filter(|i| *i != minority).collect();
    let w = Workload::start(&c, "mp");
    tokio::time::sleep(sc.jitter(Duration::from_millis(200), Duration::from_millis(800))).await;
    c.net().partition(&[&[minority], &majority]);
    let t = time_to_write(&c, &majority, "mp-majority", Duration::from_secs(5)).await;
    sc.check(
        "the majority side keeps taking writes",
        t.is_some_and(|t| t <= RECOVERY_BOUND + Duration::from_secs(1)),
        format!("{t:?}"),
    );
    sc.figure("majority_write_after_partition_ms", json!(t.map(|t| t.as_millis())));
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.net().heal();
    let t = time_to_write(&c, &ids, "mp-healed", Duration::from_secs(10)).await;
    sc.check(
        "writable again after heal within the bound",
        t.is_some_and(|t| t <= RECOVERY_BOUND),
        format!("{t:?} (bound {RECOVERY_BOUND:?})"),
    );
    sc.figure("recovery_after_heal_ms", json!(t.map(|t| t.as_millis())));
    settle(sc, &c, w, obs).await;
}

pub async fn leader_isolated_then_heal() {
    let c = cluster().await;
    let mut sc = Scenario::new("leader_isolated");
    let obs = Observer::start(&c);
    let ids = c.ids();
    let leader = c.wait_leader(Duration::from_secs(5)).await.unwrap();
    let rest: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
    let w = Workload::start(&c, "li");
    tokio::time::sleep(sc.jitter(Duration::from_millis(200), Duration::from_millis(800))).await;
    c.net().isolate(leader, &ids);
    let t = time_to_write(&c, &rest, "li-rest", Duration::from_secs(8)).await;
    sc.check(
        "the others elect a new leader and take writes",
        t.is_some_and(|t| t <= RECOVERY_BOUND + Duration::from_secs(1)),
        format!("{t:?}"),
    );
    sc.figure("new_leader_write_ms", json!(t.map(|t| t.as_millis())));
    // The isolated old leader cannot commit: a write through it must not succeed.
    let (status, _) = c.post(leader, "/v1/consumers", json!({ "name": "through-isolated-leader" })).await.unwrap();
    sc.check("the isolated old leader acknowledges nothing", status != 201, format!("status {status}"));
    c.net().heal();
    let t = time_to_write(&c, &ids, "li-healed", Duration::from_secs(10)).await;
    sc.check("writable through any node after heal", t.is_some_and(|t| t <= RECOVERY_BOUND), format!("{t:?}"));
    let (acked, _) = w.finish(&mut sc).await;
    check_converged_and_durable(&mut sc, &c, &acked).await;
    let (_, v) = c.get(leader, "/v1/consumers/through-isolated-leader?consistency=stale").await.unwrap();
    sc.check("the refused write never appears", v["name"].is_null(), format!("{v}"));
    obs.check(&mut sc);
    sc.finish(&c);
}

pub async fn leader_paused_then_resumed() {
    let mut c = cluster().await;
    let mut sc = Scenario::new("leader_pause");
    let obs = Observer::start(&c);
    let ids = c.ids();
    let leader = c.wait_leader(Duration::from_secs(5)).await.unwrap();
    let rest: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
    let w = Workload::start(&c, "lp");
    tokio::time::sleep(sc.jitter(Duration::from_millis(200), Duration::from_millis(800))).await;
    c.node(leader).pause();
    let t = time_to_write(&c, &rest, "lp-rest", Duration::from_secs(8)).await;
    sc.check(
        "the others take over while the leader is frozen",
        t.is_some_and(|t| t <= RECOVERY_BOUND + Duration::from_secs(1)),
        format!("{t:?}"),
    );
    sc.figure("takeover_ms", json!(t.map(|t| t.as_millis())));
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.node(leader).resume();
    settle(sc, &c, w, obs).await;
}

pub async fn revoke_under_partition_is_never_falsely_final() {
    let c = cluster().await;
    let mut sc = Scenario::new("revoke_under_partition");
    let up = EchoUpstream::start().await;
    let f = install(&c, &up.url()).await;
    let ids = c.ids();
    c.wait_converged(&ids, Duration::from_secs(10)).await.unwrap();
    let leader = c.wait_leader(Duration::from_secs(5)).await.unwrap();
    let followers: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
    let cut_off = sc.pick(&followers);
    let majority: Vec<u64> = ids.iter().copied().filter(|i| *i != cut_off).collect();
    c.net().partition(&[&[cut_off], &majority]);
    if std::env::var("CHAOS_DEBUG").is_ok() {
        let (_, v) = c.get(majority[0], "/v1/cluster").await.unwrap();
        println!("DEBUG cut_off={cut_off} leader={leader} via={} cluster={v}", majority[0]);
    }
    let started = std::time::Instant::now();
    let (status, body) = c.post(majority[0], &format!("/v1/keys/{}/revoke", f.reader_id), json!({})).await.unwrap();
    let took = started.elapsed();
    sc.figure("revoke", json!({ "status": status, "ms": took.as_millis() }));
    sc.check("the revoke returns within its bound plus a margin", took < Duration::from_secs(4), format!("{took:?}"));
    let http = reqwest::Client::new();
    let mut accepted = Vec::new();
    for id in &ids {
        let r =
            http.get(format!("{}/orders/1", c.nodes[id].proxy_url())).bearer_auth(&f.reader_key).send().await.unwrap();
        if r.status() == 200 {
            accepted.push(*id);
        }
    }
    // The promise: the revoke returns 200 once every node applied it or fenced itself, and from
    // that moment no node accepts the key (the cut-off node answers 503: it cannot vouch).
    sc.check("the revoke succeeds despite the partition", status == 200, format!("status {status}: {body}"));
    sc.check(
        "a revoke that returned 200 is final on every node",
        accepted.is_empty(),
        format!("accepted by {accepted:?}"),
    );
    c.net().heal();
    c.wait_converged(&ids, Duration::from_secs(20)).await.unwrap();
    let r = http
        .get(format!("{}/orders/1", c.nodes[&cut_off].proxy_url()))
        .bearer_auth(&f.reader_key)
        .send()
        .await
        .unwrap();
    sc.check(
        "after healing, the cut-off node rejects the key",
        r.status() == 401 || r.status() == 503,
        format!("{}", r.status()),
    );
    sc.finish(&c);
}

pub async fn isolated_node_fences_itself() {
    let c = cluster().await;
    let mut sc = Scenario::new("isolated_node_fences_itself");
    let up = EchoUpstream::start().await;
    let f = install(&c, &up.url()).await;
    // A route that opted into serving on last known policy.
    let lenient = json!({ "path_prefix": "/orders/lenient", "upstreams": [up.url()], "serve_stale": true });
    let (s, _) = c.req(1, reqwest::Method::PUT, "/v1/routes/lenient", Some(lenient)).await.unwrap();
    assert!(s == 201 || s == 200);
    let ids = c.ids();
    c.wait_converged(&ids, Duration::from_secs(10)).await.unwrap();
    let leader = c.wait_leader(Duration::from_secs(5)).await.unwrap();
    let followers: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
    let victim = sc.pick(&followers);
    let http = reqwest::Client::new();
    let base = c.nodes[&victim].proxy_url();
    let probe = |path: &'static str| {
        let (url, key, http) = (format!("{base}{path}"), f.reader_key.clone(), http.clone());
        async move { http.get(url).bearer_auth(key).send().await.unwrap().status().as_u16() }
    };
    sc.check("serves while connected", probe("/orders/1").await == 200, "");
    c.net().isolate(victim, &ids);
    let fenced_after = wait_until(Duration::from_secs(5), || async { probe("/orders/1").await == 503 }).await;
    sc.figure("fenced_after_ms", json!(fenced_after.map(|d| d.as_millis())));
    sc.check(
        "the isolated node stops vouching within its staleness bound",
        fenced_after.is_some_and(|d| d <= Duration::from_millis(2_000 + 600)),
        format!("{fenced_after:?} (bound 2 s + renewal slack)"),
    );
    sc.check("a serve_stale route keeps serving", probe("/orders/lenient/1").await == 200, "");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, audit) = c.get(victim, "/v1/audit?local=true&limit=50").await.unwrap();
    let reasons: Vec<String> =
        audit["events"].as_array().unwrap().iter().filter_map(|e| e["reason"].as_str().map(String::from)).collect();
    sc.check(
        "stale refusals and stale service are audited as such",
        reasons.iter().any(|r| r == "stale") && reasons.iter().any(|r| r == "ok_stale_policy"),
        format!("{reasons:?}"),
    );
    c.net().heal();
    let back = wait_until(Duration::from_secs(5), || async { probe("/orders/1").await == 200 }).await;
    sc.figure("fresh_again_after_heal_ms", json!(back.map(|d| d.as_millis())));
    sc.check("vouches again after healing", back.is_some(), format!("{back:?}"));
    sc.finish(&c);
}

pub async fn revoke_with_a_paused_follower() {
    let mut c = cluster().await;
    let mut sc = Scenario::new("revoke_with_paused_follower");
    let up = EchoUpstream::start().await;
    let f = install(&c, &up.url()).await;
    let ids = c.ids();
    c.wait_converged(&ids, Duration::from_secs(10)).await.unwrap();
    let leader = c.wait_leader(Duration::from_secs(5)).await.unwrap();
    let followers: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
    let frozen = sc.pick(&followers);
    c.node(frozen).pause();
    let started = std::time::Instant::now();
    let (status, body) = c.post(leader, &format!("/v1/keys/{}/revoke", f.reader_id), json!({})).await.unwrap();
    let took = started.elapsed();
    sc.figure("revoke_ms", json!(took.as_millis()));
    sc.check(
        "the revoke returns 200 within the staleness bound plus a margin",
        status == 200 && took < Duration::from_secs(4),
        format!("{status} after {took:?}: {body}"),
    );
    c.node(frozen).resume();
    // The instant the frozen node runs again it must not accept the key: 401 or 503, never 200.
    let http = reqwest::Client::new();
    let url = format!("{}/orders/1", c.nodes[&frozen].proxy_url());
    let r = http.get(url).bearer_auth(&f.reader_key).send().await.unwrap();
    sc.check("the resumed follower rejects the key", r.status() == 401 || r.status() == 503, format!("{}", r.status()));
    sc.finish(&c);
}
