//! The replicated control plane on real processes: 3 nodes on loopback ports, real RocksDB.
//! The scenarios live in `chaos_tests::matrix::cluster`, shared with the matrix runner.

use chaos_tests::matrix::cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_through_follower_is_readable_linearizably_on_every_node() -> anyhow::Result<()> {
    cluster::write_through_follower_is_readable_linearizably_on_every_node().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_during_writes_loses_no_acknowledged_write() -> anyhow::Result<()> {
    cluster::leader_kill_during_writes_loses_no_acknowledged_write().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_that_missed_compaction_catches_up_by_snapshot() -> anyhow::Result<()> {
    cluster::follower_that_missed_compaction_catches_up_by_snapshot().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_and_leave_while_writes_go_on() -> anyhow::Result<()> {
    cluster::members_join_and_leave_while_writes_go_on().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restart_keeps_everything() -> anyhow::Result<()> {
    cluster::whole_cluster_restart_keeps_everything().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_node_cannot_rejoin_under_its_old_id() -> anyhow::Result<()> {
    cluster::wiped_node_cannot_rejoin_under_its_old_id().await
}
