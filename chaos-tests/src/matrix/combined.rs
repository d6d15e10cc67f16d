//! Row 21: combined chaos, Jepsen-style. For a given time, faults chosen by the seed overlap:
//! kills and restarts, pauses, minority and leader partitions, one-way cuts, loss and latency.
//! Then everything heals and every invariant is checked, plus a final write through each node.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::faultnet::Degradation;
use crate::fixture::install;
use crate::scenario::{settle, time_to_write, KeyWorkload, Observer, Scenario, Workload, RECOVERY_BOUND};
use crate::{EchoUpstream, TestCluster};

/// Runs combined chaos on `nodes` nodes for `span`.
pub async fn combined_chaos(nodes: u64, span: Duration) {
    let mut c = TestCluster::start_with_faults(nodes, &[]).await.expect("cluster starts");
    let mut sc = Scenario::new(&format!("combined_chaos_{nodes}_nodes"));
    let up = EchoUpstream::start().await;
    install(&c, &up.url()).await;
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
    settle(sc, &c, w, obs).await;
}
