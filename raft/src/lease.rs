//! The freshness lease (design-notes §1): a node may vouch for its policy only while a quorum
//! recently confirmed the leader it follows and it has applied what that leader had committed.
//!
//! Every `staleness / 8` the node notes its monotonic time `s`, asks the leader for a read index
//! (the leader answers only after confirming its leadership with a quorum, after the request
//! arrived: openraft's `ensure_linearizable`), waits until it has applied up to that index, and
//! extends its lease to `s + staleness`. A deposed leader cannot confirm a quorum, so it cannot
//! extend anyone's lease, itself included; a node cut off from the leader lapses within
//! `staleness` of its last good renewal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use raftgate_proxy::freshness::Freshness;
use tokio::sync::watch;

use crate::cluster::Cluster;

/// After a failed renewal (no leader yet, the leader died), try again this soon: a follower
/// must regain its lease through a new leader before the old lease lapses, or traffic on a
/// healthy survivor would see 503s during a failover.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(50);

pub async fn run(
    cluster: Arc<Cluster>,
    fresh: Arc<Freshness>,
    staleness: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    // Eight renewals per lease: a failover (~1.1 s with default timing) fits inside a lease that
    // was renewed at most staleness/8 before the leader died.
    let renew = staleness / 8;
    loop {
        let sent_at = Instant::now();
        // Bounded so one stuck call (a frozen leader) cannot hold the loop.
        let ok = matches!(tokio::time::timeout(renew * 2, cluster.read_barrier_once()).await, Ok(Ok(())));
        if ok {
            fresh.extend(sent_at, staleness);
        }
        let wait = if ok { renew.saturating_sub(sent_at.elapsed()) } else { RETRY_AFTER_FAILURE };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
        }
    }
}
