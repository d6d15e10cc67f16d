//! The fault matrix of ../shared/reference/faults.md on real nodes behind the fault-injecting
//! network: one named test per scenario. The scenarios live in `chaos_tests::matrix`, shared
//! with the runner (`cargo run --release -p chaos-tests --bin chaos -- --all`). Each prints its
//! seed, a result line per invariant and a JSON report; `CHAOS_SEED=N` replays one.

#![allow(clippy::unwrap_used, reason = "tests: a failed unwrap is a failed test")]

use chaos_tests::matrix::{basic, clock, dataplane, disk, network, power, process};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_one_node() {
    power::power_loss_one_node().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_whole_cluster() {
    power::power_loss_whole_cluster().await;
}

/// The power-loss disk itself, through a real mount: after a cut, a file holds what was synced
/// and nothing more; a file never synced is empty; a file renamed before its data was synced
/// is there, empty (the classic crash bug the disk must be able to show).
#[test]
fn power_loss_disk_keeps_only_synced_writes() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let (platter, mnt) = (dir.path().join("platter"), dir.path().join("mnt"));
    std::fs::create_dir_all(&platter).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let mut disk = chaos_tests::powerfs::PowerFs::mount(&platter, &mnt).expect("mount (needs root and /dev/fuse)");
    let mut synced = std::fs::File::create(mnt.join("synced")).unwrap();
    synced.write_all(b"kept|").unwrap();
    synced.sync_data().unwrap();
    synced.write_all(b"lost").unwrap();
    assert_eq!(std::fs::read(mnt.join("synced")).unwrap(), b"kept|lost", "reads see unsynced writes");
    std::fs::write(mnt.join("never-synced"), b"lost").unwrap();
    std::fs::write(mnt.join("tmp"), b"lost").unwrap();
    std::fs::rename(mnt.join("tmp"), mnt.join("renamed")).unwrap();
    std::fs::create_dir(mnt.join("sub")).unwrap();
    let mut nested = std::fs::File::create(mnt.join("sub/nested")).unwrap();
    nested.write_all(b"nested").unwrap();
    nested.sync_all().unwrap();
    drop((synced, nested));
    assert!(disk.unsynced_bytes() >= 12, "{}", disk.unsynced_bytes());
    let report = disk.cut(None);
    assert_eq!(report.kept_bytes, 0);
    assert!(report.unsynced_bytes >= 12);
    disk.restore_power().unwrap();
    assert_eq!(std::fs::read(mnt.join("synced")).unwrap(), b"kept|");
    assert_eq!(std::fs::read(mnt.join("never-synced")).unwrap(), b"");
    assert_eq!(std::fs::read(mnt.join("renamed")).unwrap(), b"");
    assert!(!mnt.join("tmp").exists());
    assert_eq!(std::fs::read(mnt.join("sub/nested")).unwrap(), b"nested");
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_sink_slow_then_failing() {
    dataplane::audit_sink_slow_then_failing().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_plane_flood_during_raft_ops() {
    dataplane::data_plane_flood_during_raft_ops().await;
}
