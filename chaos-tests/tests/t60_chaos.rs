//! The fault matrix of ../shared/reference/faults.md on real nodes behind the fault-injecting
//! network: one named test per scenario. The scenarios live in `chaos_tests::matrix`, shared
//! with the runner (`cargo run --release -p chaos-tests --bin chaos -- --all`). Each prints its
//! seed, a result line per invariant and a JSON report; `CHAOS_SEED=N` replays one.

use chaos_tests::matrix::{basic, clock, disk, network, process};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_kill_and_restart() {
    basic::follower_kill_and_restart().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_partition_then_heal() {
    basic::minority_partition_then_heal().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_isolated_then_heal() {
    basic::leader_isolated_then_heal().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_paused_then_resumed() {
    basic::leader_paused_then_resumed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_under_partition_is_never_falsely_final() {
    basic::revoke_under_partition_is_never_falsely_final().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_node_fences_itself() {
    basic::isolated_node_fences_itself().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_with_a_paused_follower() {
    basic::revoke_with_a_paused_follower().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_loss() {
    network::packet_loss().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_spikes() {
    network::latency_and_spikes().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_leader_to_follower() {
    network::one_way_leader_to_follower().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_follower_mute() {
    network::one_way_follower_mute().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_partition_5_nodes() {
    network::bridge_partition_5_nodes().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_partition_5_nodes() {
    network::minority_partition_5_nodes().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn majority_loss() {
    network::majority_loss().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_partitions() {
    network::flapping_partitions().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_paused_then_resumed() {
    process::follower_paused_then_resumed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart() {
    process::rolling_restart().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_5_nodes() {
    process::leader_kill_5_nodes().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_follower() {
    disk::disk_full_follower().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_failure_on_leader() {
    disk::sync_failure_on_leader().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_disk() {
    disk::slow_disk().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_durability_boundaries() {
    disk::crash_at_durability_boundaries().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_clock_jumps() {
    clock::leader_clock_jumps().await;
}
