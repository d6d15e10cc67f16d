//! Power loss (../shared/reference/faults.md R2, R3, R4): every node's data dir is on a disk
//! that keeps unsynced writes in memory ([`crate::powerfs`]). A power cut kills the node and
//! drops what it had not synced, or tears it (a random prefix survives, the last write cut
//! mid-way: a torn log tail). A node must come back from what its disk holds with its vote and
//! every log entry it acknowledged; the cluster must lose nothing it acknowledged, keep one
//! leader per term, and keep every revoke final and every global limit.

use std::time::Duration;

use rand::SeedableRng;
use serde_json::json;

use crate::fixture::install;
use crate::matrix::combined::GlobalTraffic;
use crate::scenario::{settle, time_to_write, KeyWorkload, Observer, Scenario, Workload, RECOVERY_BOUND};
use crate::{EchoUpstream, TestCluster};

/// Compaction often, so that cuts also land in snapshot builds and log purges.
const TIMING: [&str; 2] = ["--snapshot-logs-since-last", "60"];

/// Three nodes on power-loss disks with the test policy, and the upstream it routes to.
async fn start(name: &str) -> (TestCluster, Scenario, EchoUpstream) {
    let c = TestCluster::start_on_power_loss_disks(3, &TIMING).await.expect("cluster starts on power-loss disks");
    let sc = Scenario::new(name);
    let up = EchoUpstream::start().await;
    install(&c, &up.url()).await;
    (c, sc, up)
}

/// R2 and R4: one node at a time loses power, the leader and then a follower, four times; the
/// last two cuts tear the unsynced tail instead of dropping it.
pub async fn power_loss_one_node() {
    let (mut c, mut sc, _up) = start("power_loss_one_node").await;
    let obs = Observer::start(&c);
    let ids = c.ids();
    let w = Workload::start(&c, "pl");
    let kw = KeyWorkload::start(&c, sc.rng_u64());
    let mut cuts = Vec::new();
    let mut lost_bytes = 0;
    let mut all_back = true;
    for round in 0..4 {
        tokio::time::sleep(sc.jitter(Duration::from_millis(400), Duration::from_millis(1_200))).await;
        let leader = c.wait_leader(Duration::from_secs(10)).await.expect("a leader");
        let victim = if round % 2 == 0 {
            leader
        } else {
            sc.pick(&ids.iter().copied().filter(|i| *i != leader).collect::<Vec<_>>())
        };
        let torn = round >= 2;
        let mut rng = rand::rngs::StdRng::seed_from_u64(sc.rng_u64());
        let report = c.node(victim).power_cut(if torn { Some(&mut rng) } else { None }).expect("power cut");
        lost_bytes += report.unsynced_bytes - report.kept_bytes;
        let live: Vec<u64> = ids.iter().copied().filter(|i| *i != victim).collect();
        let failover = time_to_write(&c, &live, &format!("pl-live-{round}"), Duration::from_secs(5)).await;
        tokio::time::sleep(sc.jitter(Duration::from_millis(100), Duration::from_millis(600))).await;
        c.node(victim).restart();
        let back = c.wait_ready(Duration::from_secs(20)).await.is_ok() && c.node(victim).is_running();
        all_back &= back;
        let rejoin = time_to_write(&c, &[victim], &format!("pl-back-{round}"), Duration::from_secs(10)).await;
        cuts.push(json!({
            "node": victim, "was_leader": victim == leader, "torn": torn,
            "unsynced_bytes": report.unsynced_bytes, "kept_bytes": report.kept_bytes, "files": report.files,
            "others_writable_ms": failover.map(|t| t.as_millis()), "back": back,
            "writable_through_it_ms": rejoin.map(|t| t.as_millis()),
        }));
    }
    sc.figure("power_cuts", json!(cuts));
    sc.check(
        "the cuts dropped writes the node had not synced (the fault is real)",
        lost_bytes > 0,
        format!("{lost_bytes} unsynced bytes lost"),
    );
    sc.check("every node restarts from what its disk kept after a power cut", all_back, format!("{} cuts", cuts.len()));
    let t = time_to_write(&c, &ids, "pl-end", Duration::from_secs(10)).await;
    sc.check("writable through every node at the end", t.is_some_and(|t| t <= RECOVERY_BOUND), format!("{t:?}"));
    kw.finish(&mut sc).await;
    settle(sc, &c, w, obs).await;
}

/// R3 and R4: the whole cluster loses power at once, three times (the third tears every
/// node's unsynced tail), with admin writes, key revokes and global-limit traffic going on.
/// Nothing acknowledged may be lost, and no revoke or global limit undone.
pub async fn power_loss_whole_cluster() {
    let (mut c, mut sc, up) = start("power_loss_whole_cluster").await;
    let global = GlobalTraffic::start(&c, &up.url(), Duration::from_secs(30)).await;
    let obs = Observer::start(&c);
    let ids = c.ids();
    let w = Workload::start(&c, "pw");
    let kw = KeyWorkload::start(&c, sc.rng_u64());
    let mut cuts = Vec::new();
    let mut lost_bytes = 0;
    for round in 0..3 {
        tokio::time::sleep(sc.jitter(Duration::from_millis(1_500), Duration::from_millis(3_500))).await;
        let torn = round == 2;
        let term_before = c.max_term().await;
        // Every process dies first, then every disk loses what it had not synced.
        for &id in &ids {
            c.node(id).kill();
        }
        let mut reports = Vec::new();
        for &id in &ids {
            let mut rng = rand::rngs::StdRng::seed_from_u64(sc.rng_u64());
            let r = c.node(id).power_cut(if torn { Some(&mut rng) } else { None }).expect("power cut");
            lost_bytes += r.unsynced_bytes - r.kept_bytes;
            reports.push(json!({ "node": id, "unsynced_bytes": r.unsynced_bytes, "kept_bytes": r.kept_bytes }));
        }
        tokio::time::sleep(sc.jitter(Duration::from_millis(200), Duration::from_millis(1_000))).await;
        for &id in &ids {
            c.node(id).restart();
        }
        let ready = c.wait_ready(Duration::from_secs(30)).await.is_ok();
        let t = time_to_write(&c, &ids, &format!("pw-back-{round}"), Duration::from_secs(15)).await;
        let term_after = c.max_term().await;
        cuts.push(json!({ "torn": torn, "disks": reports, "ready": ready, "writable_ms": t.map(|t| t.as_millis()),
                          "term_before": term_before, "term_after": term_after }));
        sc.check(&format!("the cluster is writable again after power cut {round}"), t.is_some(), format!("{t:?}"));
    }
    sc.figure("power_cuts", json!(cuts));
    sc.check(
        "the cuts dropped writes the nodes had not synced (the fault is real)",
        lost_bytes > 0,
        format!("{lost_bytes} unsynced bytes lost"),
    );
    kw.finish(&mut sc).await;
    global.finish(&mut sc, &up).await;
    settle(sc, &c, w, obs).await;
}
