//! Pre-vote, built beside openraft 0.9 (which has none): a node that cannot win an election
//! does not start one.
//!
//! Without it, a node cut off from the leader (a minority partition, or deaf to the leader on a
//! one-way cut) times out, votes for itself in term after term, and when the link heals its
//! high term makes the healthy leader step down: one needless election, a second or two
//! without writes (found by the `minority_partition_5_nodes` chaos scenario).
//!
//! How: openraft starts an election only while `runtime_config().elect` is on. This task keeps
//! it on only while an election could succeed, and off while a leader is heard from (so a
//! node resumed after a pause, whose timers have all expired, asks before it campaigns). Every
//! tick, a follower that has not accepted an
//! AppendEntries from a leader for `election_timeout_min` asks every voter `PreVote`; a voter
//! grants it only if it is not a leader, has not itself heard from a leader for
//! `election_timeout_min`, and the asker's log is at least as long as its own. With a majority
//! of grants (itself included) elections are on; otherwise off, and the node waits, with its
//! term unchanged, for the leader to reach it again.
//!
//! Safety does not depend on this: openraft's own vote still decides. A wrong pre-vote answer
//! costs liveness at worst (one wasted term, or a node that waits a tick longer).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::network::wire::path;
use crate::NodeId;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVoteRequest {
    /// The asker's last log index.
    pub last_log_index: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVoteResponse {
    pub granted: bool,
}

/// When this node last accepted an AppendEntries from a leader, in ms since `epoch`.
#[derive(Debug)]
pub struct LeaderContact {
    epoch: Instant,
    /// 0 = never.
    last_ms: AtomicU64,
}

impl Default for LeaderContact {
    fn default() -> Self {
        Self { epoch: Instant::now(), last_ms: AtomicU64::new(0) }
    }
}

impl LeaderContact {
    pub fn record(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(ms.max(1), Ordering::Relaxed);
    }

    /// Whether a leader was heard from within `window`.
    pub fn within(&self, window: Duration) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        last != 0 && self.epoch.elapsed().as_millis() as u64 <= last + window.as_millis() as u64
    }
}

/// The answer this node gives to a `PreVote`.
pub fn answer(cluster: &Cluster, req: &PreVoteRequest) -> PreVoteResponse {
    let m = cluster.raft.metrics().borrow().clone();
    let window = Duration::from_millis(cluster.raft_config().election_timeout_min);
    let granted = m.state != ServerState::Leader
        && !cluster.leader_contact.within(window)
        && req.last_log_index >= m.last_log_index;
    PreVoteResponse { granted }
}

/// Keeps openraft's elections on only while a pre-vote round would win.
pub async fn run(cluster: Arc<Cluster>, mut shutdown: watch::Receiver<bool>) {
    let config = cluster.raft_config();
    let window = Duration::from_millis(config.election_timeout_min);
    let tick = Duration::from_millis((config.heartbeat_interval / 2).max(20));
    // An RPC answer later than this is no use: the election timer would have fired.
    let ask_timeout = Duration::from_millis((config.election_timeout_min / 2).max(50));
    let mut elect = true;
    loop {
        let m = cluster.raft.metrics().borrow().clone();
        let voters: Vec<(NodeId, String)> = m
            .membership_config
            .membership()
            .voter_ids()
            .filter(|id| *id != cluster.id)
            .filter_map(|id| m.membership_config.membership().get_node(&id).map(|n| (id, n.addr.clone())))
            .collect();
        let is_voter = m.membership_config.membership().voter_ids().any(|id| id == cluster.id);
        let want = if m.state == ServerState::Leader || !is_voter {
            // Leading, or not electing: nothing to hold back.
            true
        } else if cluster.leader_contact.within(window) {
            // A leader is alive: no election is needed. Off, not merely idle: a node that was
            // paused wakes with stale timers and must not campaign before it asks around.
            false
        } else {
            let req = PreVoteRequest { last_log_index: m.last_log_index };
            let asks = voters.iter().map(|(id, addr)| {
                let (cluster, req) = (cluster.clone(), req.clone());
                async move {
                    cluster
                        .rpc()
                        .call::<_, PreVoteResponse>(*id, addr, path::PREVOTE, req, ask_timeout)
                        .await
                        .is_ok_and(|r| r.granted)
                }
            });
            let granted = futures::future::join_all(asks).await.into_iter().filter(|g| *g).count() + 1;
            granted * 2 > voters.len() + 1
        };
        if want != elect {
            tracing::info!(
                elections = want,
                "pre-vote: {}",
                if want {
                    "a majority would vote; elections on"
                } else {
                    "no majority would vote; holding elections off"
                }
            );
            elect = want;
        }
        cluster.raft.runtime_config().elect(want);
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => return,
        }
    }
}
