//! Process faults: a paused follower, a rolling restart with SIGTERM, a leader kill on 5
//! nodes (../shared/reference/faults.md rows 1 on 5 nodes, 3 and 12).

use std::time::Duration;

use serde_json::json;

use crate::scenario::{settle, time_to_write, Observer, Scenario, Workload, RECOVERY_BOUND};
use crate::TestCluster;

/// Row 12: a follower frozen for 2 × the election timeout, then resumed. No leader change; it
/// catches up.
pub async fn follower_paused_then_resumed() {
    let mut c = TestCluster::start_with_faults(3, &[]).await.expect("cluster starts");
    let mut sc = Scenario::new("follower_pause");
    let obs = Observer::start(&c);
    let ids = c.ids();
    let leader = c.wait_leader(Duration::from_secs(10)).await.expect("a leader");
    let followers: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
    let frozen = sc.pick(&followers);
    let w = Workload::start(&c, "fp");
    tokio::time::sleep(sc.jitter(Duration::from_millis(200), Duration::from_millis(600))).await;
    let term_before = c.max_term().await;
    c.node(frozen).pause();
    let live: Vec<u64> = ids.iter().copied().filter(|i| *i != frozen).collect();
    let t = time_to_write(&c, &live, "fp-live", Duration::from_secs(3)).await;
    sc.check("writes go on with a follower frozen", t.is_some(), format!("{t:?}"));
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    c.node(frozen).resume();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let elections = obs.elections_since(term_before);
    sc.check("no leader change", elections == 0, format!("{elections} elections"));
    settle(sc, &c, w, obs).await;
}

/// Row 3: every node in turn is stopped with SIGTERM and started again, the leader last, as in
/// an upgrade. openraft 0.9 has no leader transfer: expect one election, for the leader's turn.
pub async fn rolling_restart() {
    let mut c = TestCluster::start_with_faults(3, &[]).await.expect("cluster starts");
    let mut sc = Scenario::new("rolling_restart");
    let obs = Observer::start(&c);
    let ids = c.ids();
    let w = Workload::start(&c, "rr");
    let leader = c.wait_leader(Duration::from_secs(10)).await.expect("a leader");
    let mut order: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
    order.push(leader);
    let term_before = c.max_term().await;
    let mut outages = Vec::new();
    for id in order {
        let status = c.node(id).stop();
        sc.check(
            &format!("node {id} stops cleanly on SIGTERM"),
            status.is_some_and(|s| s.success()),
            format!("{status:?}"),
        );
        let others: Vec<u64> = ids.iter().copied().filter(|i| *i != id).collect();
        let t = time_to_write(&c, &others, &format!("rr-{id}"), Duration::from_secs(5)).await;
        outages.push(t.map(|t| t.as_millis()));
        sc.check(
            &format!("writable while node {id} is down"),
            t.is_some_and(|t| t <= RECOVERY_BOUND),
            format!("{t:?}"),
        );
        c.node(id).restart();
        c.wait_ready(Duration::from_secs(20)).await.expect("ready again");
    }
    let elections = obs.elections_since(term_before);
    sc.figure("write_unavailability_ms", json!(outages));
    sc.check("one election at most, for the leader's restart", elections <= 1, format!("{elections} elections"));
    settle(sc, &c, w, obs).await;
}

/// Row 1 on 5 nodes: the leader is killed under writes and started again after 2 s.
pub async fn leader_kill_5_nodes() {
    let mut c = TestCluster::start_with_faults(5, &[]).await.expect("cluster starts");
    let mut sc = Scenario::new("leader_kill_5_nodes");
    let obs = Observer::start(&c);
    let ids = c.ids();
    let w = Workload::start(&c, "lk5");
    tokio::time::sleep(sc.jitter(Duration::from_millis(200), Duration::from_millis(800))).await;
    let leader = c.wait_leader(Duration::from_secs(5)).await.expect("a leader");
    c.node(leader).kill();
    let rest: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
    let t = time_to_write(&c, &rest, "lk5-rest", Duration::from_secs(5)).await;
    sc.check(
        "a new leader takes writes within the bound",
        t.is_some_and(|t| t <= RECOVERY_BOUND + Duration::from_millis(500)),
        format!("{t:?}"),
    );
    sc.figure("failover_ms", json!(t.map(|t| t.as_millis())));
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.node(leader).restart();
    tokio::time::sleep(Duration::from_millis(500)).await;
    settle(sc, &c, w, obs).await;
}
