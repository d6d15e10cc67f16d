//! The replicated control plane on real processes: 3 nodes on loopback ports, real RocksDB
//! (../shared/reference/faults.md rows 1, 18, 19, 20 and the whole-cluster restart).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::TestCluster;

/// The shipped defaults, spelled out: heartbeat 100 ms, election timeout 300–600 ms.
const TIMING: &[&str] =
    &["--heartbeat-ms", "100", "--election-timeout-ms-min", "300", "--election-timeout-ms-max", "600"];

async fn create_consumer(c: &TestCluster, via: u64, name: &str) -> anyhow::Result<u16> {
    Ok(c.post(via, "/v1/consumers", json!({ "name": name })).await?.0)
}

pub async fn write_through_follower_is_readable_linearizably_on_every_node() -> anyhow::Result<()> {
    let c = TestCluster::start(3, TIMING).await?;
    let leader = c.wait_leader(Duration::from_secs(10)).await?;
    let follower = *c.nodes.keys().find(|id| **id != leader).unwrap();
    assert_eq!(create_consumer(&c, follower, "acme").await?, 201, "{}", c.logs());
    for id in c.nodes.keys() {
        // No waiting: a linearizable read must see a write that was acknowledged before it began.
        let (status, body) = c.get(*id, "/v1/consumers/acme").await?;
        assert_eq!(status, 200, "node {id}: {body}");
        assert_eq!(body["name"], "acme");
    }
    // A conflicting create through another follower is refused by the state machine.
    let other = *c.nodes.keys().find(|id| **id != leader && **id != follower).unwrap();
    assert_eq!(create_consumer(&c, other, "acme").await?, 409);
    Ok(())
}

pub async fn leader_kill_during_writes_loses_no_acknowledged_write() -> anyhow::Result<()> {
    let mut c = TestCluster::start(3, TIMING).await?;
    let leader = c.wait_leader(Duration::from_secs(10)).await?;
    let survivors: Vec<u64> = c.nodes.keys().copied().filter(|id| *id != leader).collect();
    let mut acked = BTreeSet::new();
    for i in 0..40 {
        let name = format!("before-{i}");
        if create_consumer(&c, survivors[i % 2], &name).await? == 201 {
            acked.insert(name);
        }
    }
    assert_eq!(acked.len(), 40, "a healthy cluster acknowledges every write");

    c.node(leader).kill();
    let killed_at = Instant::now();
    let mut first_ok = None;
    for i in 0..400 {
        let name = format!("after-{i}");
        // Bounded per call: the harness client times out at 20 s; the node's own deadline is 10 s.
        if let Ok(201) = create_consumer(&c, survivors[i % 2], &name).await {
            first_ok.get_or_insert_with(|| killed_at.elapsed());
            acked.insert(name);
            if acked.len() >= 80 {
                break;
            }
        }
    }
    let failover = first_ok.expect("writes succeed again after the leader died");
    println!("failover: first successful write {failover:?} after SIGKILL of the leader");
    assert!(failover < Duration::from_secs(2), "failover took {failover:?}\n{}", c.logs());

    c.node(leader).restart();
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    c.wait_converged(&ids, Duration::from_secs(20)).await?;
    for id in &ids {
        let (_, body) = c.get(*id, "/v1/consumers?consistency=stale").await?;
        let names: BTreeSet<String> =
            body["consumers"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap().to_string()).collect();
        let missing: Vec<_> = acked.difference(&names).collect();
        assert!(missing.is_empty(), "node {id} lost acknowledged writes: {missing:?}");
    }
    Ok(())
}

pub async fn follower_that_missed_compaction_catches_up_by_snapshot() -> anyhow::Result<()> {
    let mut args = TIMING.to_vec();
    args.extend(["--snapshot-logs-since-last", "50"]);
    let mut c = TestCluster::start(3, &args).await?;
    let leader = c.wait_leader(Duration::from_secs(10)).await?;
    let lagger = *c.nodes.keys().find(|id| **id != leader).unwrap();
    c.node(lagger).stop();
    for i in 0..300 {
        assert_eq!(create_consumer(&c, leader, &format!("c-{i}")).await?, 201);
    }
    let metrics = c.nodes[&leader].admin_url() + "/metrics";
    // Snapshots are built in the background: wait (bounded) for the purge that follows one.
    let started = Instant::now();
    let mut purged = 0;
    while purged <= 100 && started.elapsed() < Duration::from_secs(10) {
        let text = reqwest::get(&metrics).await?.text().await?;
        purged = metric(&text, "raftgate_raft_purged_index");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(purged > 100, "leader compacted its log (purged index {purged})");

    c.node(lagger).restart();
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    c.wait_converged(&ids, Duration::from_secs(30)).await?;
    let text = reqwest::get(c.nodes[&lagger].admin_url() + "/metrics").await?.text().await?;
    assert!(metric(&text, "raftgate_raft_snapshot_index") > 0, "the lagging node installed a snapshot");
    let (status, body) = c.get(lagger, "/v1/consumers/c-299?consistency=stale").await?;
    assert_eq!(status, 200, "{body}");
    Ok(())
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub async fn members_join_and_leave_while_writes_go_on() -> anyhow::Result<()> {
    let mut c = TestCluster::start(3, TIMING).await?;
    let leader = c.wait_leader(Duration::from_secs(10)).await?;
    let addr = c.spawn_joiner(4);

    let writer = async {
        let mut ok = 0;
        for i in 0..60 {
            if create_consumer(&c, 1 + (i % 3), &format!("w-{i}")).await.unwrap_or(0) == 201 {
                ok += 1;
            }
        }
        ok
    };
    let join = c.post(leader, "/v1/cluster/members", json!({ "id": 4, "raft_addr": addr }));
    let (ok, joined) = tokio::join!(writer, join);
    let (status, body) = joined?;
    assert_eq!(status, 200, "join: {body}\n{}", c.logs());
    assert!(ok >= 55, "writes kept succeeding during the join ({ok}/60)");

    let (_, cluster) = c.get(4, "/v1/cluster").await?;
    let voters: Vec<u64> = cluster["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["voter"] == true)
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(voters, vec![1, 2, 3, 4]);

    // Remove the leader itself, through another node.
    let via = if leader == 4 { 1 } else { 4 };
    let (status, body) = c.req(via, reqwest::Method::DELETE, &format!("/v1/cluster/members/{leader}"), None).await?;
    assert_eq!(status, 200, "remove leader: {body}\n{}", c.logs());
    let survivors: Vec<u64> = c.nodes.keys().copied().filter(|id| *id != leader).collect();
    // The remaining three elect a new leader and keep taking writes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if create_consumer(&c, survivors[0], "after-removal").await? == 201 {
            break;
        }
        assert!(Instant::now() < deadline, "no writes after removing the leader\n{}", c.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.wait_converged(&survivors, Duration::from_secs(20)).await?;
    // A removed id is never reused.
    let removed_addr = c.nodes[&leader].raft_addr();
    let (status, body) =
        c.post(survivors[0], "/v1/cluster/members", json!({ "id": leader, "raft_addr": removed_addr })).await?;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("never reused"), "{body}");
    Ok(())
}

pub async fn whole_cluster_restart_keeps_everything() -> anyhow::Result<()> {
    let mut c = TestCluster::start(3, TIMING).await?;
    c.wait_leader(Duration::from_secs(10)).await?;
    assert_eq!(create_consumer(&c, 1, "acme").await?, 201);
    let (status, key) = c.post(2, "/v1/keys", json!({ "consumer": "acme" })).await?;
    assert_eq!(status, 201);
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    c.wait_converged(&ids, Duration::from_secs(10)).await?;
    let before = c.policy_hash(1).await?;
    for id in &ids {
        let status = c.node(*id).stop().expect("node was running");
        assert!(status.success(), "node {id} exits cleanly on SIGTERM: {status:?}");
    }
    for id in &ids {
        c.node(*id).restart();
    }
    c.wait_leader(Duration::from_secs(15)).await?;
    c.wait_converged(&ids, Duration::from_secs(20)).await?;
    for id in &ids {
        assert_eq!(c.policy_hash(*id).await?, before, "node {id}: same policy after a full restart");
    }
    let (status, body) = c.get(3, &format!("/v1/keys/{}", key["id"].as_str().unwrap())).await?;
    assert_eq!(status, 200, "{body}");
    Ok(())
}

pub async fn wiped_node_cannot_rejoin_under_its_old_id() -> anyhow::Result<()> {
    let mut c = TestCluster::start(3, TIMING).await?;
    let leader = c.wait_leader(Duration::from_secs(10)).await?;
    let victim = *c.nodes.keys().find(|id| **id != leader).unwrap();
    for i in 0..20 {
        assert_eq!(create_consumer(&c, leader, &format!("c-{i}")).await?, 201);
    }
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    c.wait_converged(&ids, Duration::from_secs(10)).await?;
    c.node(victim).kill();
    c.node(victim).wipe();
    c.node(victim).restart();
    // The rest keeps working and is never disturbed by the impostor.
    let others: Vec<u64> = ids.iter().copied().filter(|id| *id != victim).collect();
    for i in 0..20 {
        assert_eq!(create_consumer(&c, others[i % 2], &format!("d-{i}")).await?, 201, "{}", c.logs());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in &others {
        assert!(c.node(*id).is_running(), "node {id} survived the wiped node's return\n{}", c.logs());
    }
    c.wait_converged(&others, Duration::from_secs(10)).await?;
    // The wiped node received nothing under its old id.
    let consumers = c.get(victim, "/v1/consumers?consistency=stale").await.ok();
    let count = consumers.and_then(|(_, b)| b["consumers"].as_array().map(|a| a.len())).unwrap_or(0);
    assert_eq!(count, 0, "the wiped node must not be fed the cluster's log under its old id");
    Ok(())
}
