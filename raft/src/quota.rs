//! The exchange task: the one place where what the data plane learns meets Raft — quota asks
//! and give-backs for global rate limits, and failed-authentication counts for the auth guard.
//!
//! It waits until the data plane wants tokens (or 50 ms pass, to give idle tokens back), takes
//! every pending ask and give-back from [`GlobalLimits::collect`], proposes them as one
//! [`AcquireQuota`] entry and hands the grants back. One entry is in flight at a time, so asks
//! that arrive meanwhile are batched into the next: the Raft write rate follows the number of
//! hot subjects and nodes, not the request rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use raftgate_proxy::global::{Ask, GiveBack, GlobalLimits};
use raftgate_proxy::reports::AuthFailureReports;
use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::command::{Op, Outcome, Response};
use crate::network::wire::Caller;
use crate::operations::{AcquireQuota, ReportAuthFailures, QUOTA_ITEMS_MAX};

/// How often idle tokens are looked for when nothing else wakes the task.
const SWEEP: Duration = Duration::from_millis(50);
/// How long one proposal may take before its asks are failed (waiting requests give up sooner).
const PROPOSE_DEADLINE: Duration = Duration::from_secs(1);

pub async fn run(
    cluster: Arc<Cluster>,
    limits: Arc<GlobalLimits>,
    reports: Arc<AuthFailureReports>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = limits.work() => {}
            _ = reports.work() => {}
            _ = tokio::time::sleep(SWEEP) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let report = reports.take();
        if !report.is_empty() {
            // Lost if not committed in time: the guard undercounts, never overcounts.
            let op =
                Op::ReportAuthFailures(ReportAuthFailures { node: cluster.id, counts: report.ips, keys: report.keys });
            let deadline = Instant::now() + PROPOSE_DEADLINE;
            if let Err(e) = cluster.propose(Caller::Node, Cluster::new_request_id(), op, deadline).await {
                tracing::debug!(error = %e, "failed-authentication report not committed in time");
            }
        }
        let (asks, gives) = limits.collect(Instant::now());
        if asks.is_empty() && gives.is_empty() {
            continue;
        }
        let mut asks = asks.into_iter().peekable();
        let mut gives = gives.into_iter().peekable();
        while asks.peek().is_some() || gives.peek().is_some() {
            let batch_gives: Vec<GiveBack> = gives.by_ref().take(QUOTA_ITEMS_MAX / 2).collect();
            let batch_asks: Vec<Ask> = asks.by_ref().take(QUOTA_ITEMS_MAX - batch_gives.len()).collect();
            exchange(&cluster, &limits, batch_asks, batch_gives).await;
        }
    }
}

async fn exchange(cluster: &Cluster, limits: &GlobalLimits, asks: Vec<Ask>, gives: Vec<GiveBack>) {
    let op = Op::AcquireQuota(AcquireQuota { node: cluster.id, asks: asks.clone(), gives });
    // `sent` is taken before proposing: the window's end is measured from it, so a node stops
    // spending no later than the agreed time says the window ends.
    let sent = Instant::now();
    limits.metrics.entries.inc();
    match cluster.propose(Caller::Node, Cluster::new_request_id(), op, sent + PROPOSE_DEADLINE).await {
        Ok(written) => match written.response {
            Response::Ok(Outcome::Quota(grants)) => limits.granted(&grants, sent, Instant::now()),
            other => tracing::warn!(?other, "quota entry refused"),
        },
        Err(e) => {
            // Outcome unknown: tokens granted by an entry we never heard back from are never
            // spent, and tokens we gave back are gone either way. Both errors are safe.
            tracing::debug!(error = %e, "quota entry not committed in time");
            limits.metrics.entry_failures.inc();
        }
    }
    // Asks without a grant (refused, not committed, or skipped because the policy is gone or
    // was made local) are settled, so that the next request asks again.
    limits.unanswered(&asks, Instant::now());
}
