//! End to end on 3 nodes: policy written through one node is enforced by every node's proxy,
//! a revoke that returned is final everywhere, and every node's audit chain verifies.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::time::Duration;

use chaos_tests::fixture::{install, Fixture};
use chaos_tests::{EchoUpstream, TestCluster};
use serde_json::json;

/// Three nodes with the test policy installed and applied everywhere, and its upstream.
async fn three_nodes() -> (TestCluster, EchoUpstream, Fixture, Vec<u64>) {
    let c = TestCluster::start(3, &[]).await.unwrap();
    c.wait_leader(Duration::from_secs(10)).await.unwrap();
    let up = EchoUpstream::start().await;
    let f = install(&c, &up.url()).await;
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    c.wait_converged(&ids, Duration::from_secs(10)).await.unwrap();
    (c, up, f, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_policy_enforced_by_every_node() {
    let (c, up, f, ids) = three_nodes().await;
    let http = reqwest::Client::new();
    let get = |id: u64, path: &str, key: &str| {
        http.get(format!("{}{path}", c.nodes[&id].proxy_url())).bearer_auth(key.to_string()).send()
    };

    for id in &ids {
        assert_eq!(get(*id, "/orders/1", &f.reader_key).await.unwrap().status(), 200, "node {id}: the key works");
        assert_eq!(get(*id, "/admin/keys", &f.reader_key).await.unwrap().status(), 403, "node {id}: wrong role");
    }

    // A key created through one node works through every node the moment its 201 returns
    // (each member has applied it by then). Twenty rounds, through followers and the leader.
    for round in 0..20u64 {
        let via = ids[(round % 3) as usize];
        let (status, created) = c.post(via, "/v1/keys", json!({ "consumer": "acme" })).await.unwrap();
        assert_eq!(status, 201, "{created}");
        let key = created["key"].as_str().unwrap().to_string();
        for id in &ids {
            assert_eq!(get(*id, "/orders/1", &key).await.unwrap().status(), 200, "round {round}: via {via}, node {id}");
        }
    }

    // Over a (local, per-node) limit: 429 and the upstream sees nothing more.
    for _ in 0..3 {
        assert_eq!(get(2, "/limited/x", &f.reader_key).await.unwrap().status(), 200);
    }
    let hits = up.hits();
    let r = get(2, "/limited/x", &f.reader_key).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(up.hits(), hits);

    // A key about to expire, and a revoke through a follower: the instant the revoke returns,
    // no node accepts the key.
    let (_, short) = c.post(3, "/v1/keys", json!({ "consumer": "acme", "expires_in_s": 1 })).await.unwrap();
    let short_key = short["key"].as_str().unwrap().to_string();
    let leader = c.wait_leader(Duration::from_secs(5)).await.unwrap();
    let via = *ids.iter().find(|id| **id != leader).unwrap();
    let (status, body) = c.post(via, &format!("/v1/keys/{}/revoke", f.reader_id), json!({})).await.unwrap();
    assert_eq!(status, 200, "{body}");
    for id in &ids {
        assert_eq!(get(*id, "/orders/1", &f.reader_key).await.unwrap().status(), 401, "node {id}: revoked key");
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for id in &ids {
        assert_eq!(get(*id, "/orders/1", &short_key).await.unwrap().status(), 401, "node {id}: expired key");
    }

    // Audit: every node recorded its own decisions, the merged view holds all, chains verify.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, all) = c.get(1, "/v1/audit?limit=1000").await.unwrap();
    let events = all["events"].as_array().unwrap();
    for id in &ids {
        assert!(
            events.iter().any(|e| e["kind"] == "access" && e["node_id"] == *id && e["reason"] == "revoked"),
            "node {id}: the revoked-key refusal is in the merged audit trail"
        );
        let (_, v) = c.get(*id, "/v1/audit/verify").await.unwrap();
        assert_eq!(v["ok"], true, "node {id}: {v}");
    }
    assert_eq!(all["unreachable_nodes"], json!([]));

    // Every node exports its commit index beside its applied index; nothing is applied that is
    // not committed.
    for id in &ids {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let commit = c.metric(*id, "raftgate_raft_commit_index").await.unwrap();
            let applied = c.metric(*id, "raftgate_raft_applied_index").await.unwrap();
            if commit >= applied && applied > 20.0 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "node {id}: commit {commit}, applied {applied}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// bad-inputs J4: a node's audit chain cut back by 100 records, with its head rewritten to match
/// (which the chain alone cannot tell from an intact one), is found against the head its peers
/// witnessed before the cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_cut_back_with_a_forged_head_is_found_by_its_peers() {
    // `_up` keeps the upstream serving until the test ends.
    let (mut c, _up, f, _) = three_nodes().await;
    let http = reqwest::Client::new();
    let url = format!("{}/orders/1", c.nodes[&3].proxy_url());
    for _ in 0..150 {
        assert_eq!(http.get(&url).bearer_auth(&f.reader_key).send().await.unwrap().status(), 200);
    }
    // Wait until both peers witnessed node 3's head with those records in it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let witnessed = loop {
        let (_, v) = c.get(3, "/v1/audit/verify").await.unwrap();
        assert_eq!(v["ok"], true, "{v}");
        let seq = v["witnessed"]["seq"].as_u64().unwrap();
        if seq >= 150 && v["witnessed"]["by"].as_array().unwrap().len() == 2 {
            break seq;
        }
        assert!(tokio::time::Instant::now() < deadline, "never witnessed: {v}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Stop node 3 and cut its chain back by 100 records past what was witnessed, forging the head.
    c.node(3).stop();
    {
        let log = raftgate_storage::AuditLog::open(&c.nodes[&3].data_dir.join("audit")).unwrap();
        log.truncate_and_forge_head(witnessed - 100).unwrap();
        assert_eq!(log.verify().unwrap(), Ok(witnessed - 100), "on its own, the chain looks intact");
    }
    c.node(3).restart();
    c.wait_ready(Duration::from_secs(20)).await.unwrap();
    let (_, v) = c.get(3, "/v1/audit/verify").await.unwrap();
    assert_eq!(v["ok"], false, "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("witnessed") && error.contains(&witnessed.to_string()), "{v}");
    // The other nodes' chains are untouched.
    for id in [1, 2] {
        let (_, v) = c.get(id, "/v1/audit/verify").await.unwrap();
        assert_eq!(v["ok"], true, "node {id}: {v}");
    }
}

/// Audit retention on a real node: events older than `audit_retention_s` leave the store, the
/// chain still verifies from its new base, and the removal is itself an audit event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_past_their_retention_are_removed_and_the_chain_still_verifies() {
    let c = TestCluster::start(1, &["--audit-retention-s", "2"]).await.unwrap();
    c.wait_leader(Duration::from_secs(10)).await.unwrap();
    let up = EchoUpstream::start().await;
    let f = install(&c, &up.url()).await;
    let http = reqwest::Client::new();
    for _ in 0..20 {
        let r = http.get(format!("{}/orders/1", c.nodes[&1].proxy_url())).bearer_auth(&f.reader_key).send().await;
        assert_eq!(r.unwrap().status(), 200);
    }
    let access = |v: &serde_json::Value| {
        v["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "access" && e["path"] == "/orders/1").count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    // Recorded first (the store is written every 5 ms).
    loop {
        let (_, v) = c.get(1, "/v1/audit?limit=1000").await.unwrap();
        if access(&v) == 20 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not all recorded: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Older than 2 s within about 2 s, removed at a check (every second here); the chain
    // verifies all along.
    let v = loop {
        let (_, verified) = c.get(1, "/v1/audit/verify").await.unwrap();
        assert_eq!(verified["ok"], true, "{verified}");
        let (_, v) = c.get(1, "/v1/audit?limit=1000").await.unwrap();
        if access(&v) == 0 {
            assert!(verified["pruned_through"].as_u64().unwrap() >= 20, "{verified}");
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "not removed: {verified} {v}\n{}", c.logs());
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // The metrics say how much the store holds.
    let pruned = c.metric(1, "raftgate_audit_pruned_through").await.unwrap();
    let last = c.metric(1, "raftgate_audit_last_seq").await.unwrap();
    assert!(pruned >= 20.0 && last > pruned, "pruned through {pruned}, last {last}");
    // Each removal is recorded with the records it removed, `first..=last`.
    let removals: Vec<_> =
        v["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "audit" && e["reason"] == "pruned").collect();
    assert!(!removals.is_empty(), "the removal is recorded: {v}");
    for r in removals {
        let (first, last) = r["path"].as_str().unwrap().split_once("..=").unwrap();
        assert!(first.parse::<u64>().unwrap() <= last.parse::<u64>().unwrap(), "{r}");
    }
}
