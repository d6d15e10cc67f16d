//! Row 17 and R12: the leader's system clock jumps. Raft timing is monotonic and unaffected;
//! the agreed time (leader-stamped `ts`, never decreasing) decides expiry and windows.
//!
//! A backward step is ignored by the node's clock (time runs on at the monotonic rate), so a
//! key expires on time and nothing is stamped earlier than before. A forward step is taken at
//! once: keys that the new agreed time has passed are refused by every node alike.

use std::time::Duration;

use serde_json::json;

use crate::fixture::install;
use crate::scenario::{settle, Observer, Scenario, Workload};
use crate::{EchoUpstream, TestCluster};

/// Creates a key for `acme` through `via`, expiring in `expires_in_s`; (key, expires_at).
async fn key(c: &TestCluster, via: u64, expires_in_s: u64) -> (String, String) {
    let (status, body) =
        c.post(via, "/v1/keys", json!({ "consumer": "acme", "expires_in_s": expires_in_s })).await.expect("call");
    assert_eq!(status, 201, "{body}");
    (body["key"].as_str().expect("key").to_string(), body["expires_at"].as_str().expect("expires_at").to_string())
}

/// The statuses every node's proxy answers for a key.
async fn answers(c: &TestCluster, key: &str) -> Vec<u16> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    for n in c.nodes.values() {
        let r = http.get(format!("{}/orders/1", n.proxy_url())).bearer_auth(key).send().await.expect("proxy");
        out.push(r.status().as_u16());
    }
    out
}

pub async fn leader_clock_jumps() {
    let c = TestCluster::start_with_faults(3, &[]).await.expect("cluster starts");
    let mut sc = Scenario::new("leader_clock_jumps");
    let up = EchoUpstream::start().await;
    install(&c, &up.url()).await;
    let obs = Observer::start(&c);
    let w = Workload::start(&c, "cj");
    let leader = c.wait_leader(Duration::from_secs(10)).await.expect("a leader");

    // A backward step of 30 s on the leader (an NTP step back).
    let (k1, exp1) = key(&c, leader, 3).await;
    c.nodes[&leader].set_clock_skew(-30_000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, exp2) = key(&c, leader, 3).await;
    sc.check("agreed time does not go back with the leader's clock", exp2 > exp1, format!("{exp1} then {exp2}"));
    sc.check("the key works before its expiry", answers(&c, &k1).await.iter().all(|s| *s == 200), "");
    tokio::time::sleep(Duration::from_millis(3_300)).await;
    let after = answers(&c, &k1).await;
    sc.check(
        "the key expires on time on every node, the leader included",
        after.iter().all(|s| *s == 401),
        format!("{after:?} 3.6 s after creation (expires after 3 s)"),
    );

    // A forward step of 30 s: stamps jump ahead; a key the new agreed time has passed is
    // refused by every node alike.
    let (k3, _) = key(&c, leader, 20).await;
    c.nodes[&leader].set_clock_skew(30_000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (k4, _) = key(&c, leader, 60).await;
    let (s3, s4) = (answers(&c, &k3).await, answers(&c, &k4).await);
    sc.figure("after_forward_step", json!({ "20s_key_before_step": s3, "60s_key_after_step": s4 }));
    sc.check(
        "after a forward step every node refuses a key the agreed time has passed",
        s3.iter().all(|s| *s == 401),
        format!("{s3:?}"),
    );
    sc.check("and accepts one that is still valid", s4.iter().all(|s| *s == 200), format!("{s4:?}"));
    c.nodes[&leader].set_clock_skew(0);
    settle(sc, &c, w, obs).await;
}
