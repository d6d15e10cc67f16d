//! The freshness lease (design-notes §1): a node may vouch for its policy only while a quorum
//! recently confirmed the leader it follows and it has applied what that leader had committed.
//!
//! Every `renew` interval the node notes its monotonic time `s`, asks the leader for a read
//! index (the leader answers only after confirming its leadership with a quorum, after the
//! request arrived: openraft's `ensure_linearizable`), waits until it has applied up to that
//! index, and extends its lease to `s + staleness`. A deposed leader cannot confirm a quorum, so
//! it cannot extend anyone's lease, itself included; a node cut off from the leader lapses
//! within `staleness` of its last good renewal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use raftgate_proxy::freshness::Freshness;
use tokio::sync::watch;

use crate::cluster::Cluster;

pub async fn run(
    cluster: Arc<Cluster>,
    fresh: Arc<Freshness>,
    staleness: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    // Four renewals per lease: one lost or slow renewal never makes a healthy node stale.
    let renew = staleness / 4;
    loop {
        let sent_at = Instant::now();
        // Bounded by the renewal interval so one stuck call cannot hold the loop.
        if let Ok(Ok(())) = tokio::time::timeout(renew * 2, cluster.read_barrier_once()).await {
            fresh.extend(sent_at, staleness);
        }
        let elapsed = sent_at.elapsed();
        tokio::select! {
            _ = tokio::time::sleep(renew.saturating_sub(elapsed)) => {}
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
        }
    }
}
