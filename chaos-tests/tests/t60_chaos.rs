//! Fault scenarios on 3 real nodes with a fault-injecting network (the CI quick subset of
//! ../shared/reference/faults.md). Each prints its seed, a result line per invariant and a
//! JSON report; `CHAOS_SEED=N` replays one.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::time::Duration;

use chaos_tests::fixture::install;
use chaos_tests::scenario::{check_converged_and_durable, time_to_write, Observer, Scenario, Workload, RECOVERY_BOUND};
use chaos_tests::{EchoUpstream, TestCluster};
use serde_json::json;

async fn cluster() -> TestCluster {
    let c = TestCluster::start_with_faults(3, &[]).await.unwrap();
    c.wait_leader(Duration::from_secs(10)).await.unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_kill_and_restart() {
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
    let (acked, attempts) = w.stop().await;
    sc.figure("writes", json!({ "acknowledged": acked.len(), "attempted": attempts }));
    check_converged_and_durable(&mut sc, &c, &acked).await;
    obs.check(&mut sc);
    sc.finish(&c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_partition_then_heal() {
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
    let (acked, _) = w.stop().await;
    check_converged_and_durable(&mut sc, &c, &acked).await;
    obs.check(&mut sc);
    sc.finish(&c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_isolated_then_heal() {
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
    let (acked, _) = w.stop().await;
    check_converged_and_durable(&mut sc, &c, &acked).await;
    let (_, v) = c.get(leader, "/v1/consumers/through-isolated-leader?consistency=stale").await.unwrap();
    sc.check("the refused write never appears", v["name"].is_null(), format!("{v}"));
    obs.check(&mut sc);
    sc.finish(&c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_paused_then_resumed() {
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
    let (acked, _) = w.stop().await;
    check_converged_and_durable(&mut sc, &c, &acked).await;
    obs.check(&mut sc);
    sc.finish(&c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_under_partition_is_never_falsely_final() {
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
    // The promise: if the revoke said 200, no node accepts the key. It may instead say that a
    // node has not confirmed (504) — never claim finality it cannot see.
    let ok =
        if status == 200 { accepted.is_empty() } else { status == 504 && accepted.iter().all(|id| *id == cut_off) };
    sc.check(
        "a revoke that returned 200 is final on every node",
        ok,
        format!("status {status} ({}), accepted by {accepted:?}", body["error"]["code"]),
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
