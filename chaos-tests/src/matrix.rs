//! The fault matrix of ../shared/reference/faults.md as named scenarios, callable from the
//! tests (`tests/t60_chaos.rs`, `tests/t10_cluster.rs`) and from the matrix runner
//! (`cargo run --release -p chaos-tests --bin chaos -- --all`).
//!
//! Every scenario starts its own cluster on loopback ports, prints its seed (`CHAOS_SEED=N`
//! replays it), checks its invariants and panics on a violation (so a test fails and the
//! runner records a failure).

#![allow(clippy::unwrap_used, reason = "scenarios are tests: a failed unwrap is a failed scenario")]

pub mod basic;
pub mod clock;
pub mod cluster;
pub mod combined;
pub mod dataplane;
pub mod disk;
pub mod network;
pub mod power;
pub mod process;

use std::future::Future;
use std::pin::Pin;

pub type ScenarioFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One row of the matrix.
pub struct Entry {
    pub name: &'static str,
    /// The rows of faults.md it covers.
    pub rows: &'static str,
    /// Part of the CI quick subset (runs in the README's test command).
    pub quick: bool,
    pub run: fn() -> ScenarioFuture,
}

macro_rules! entry {
    ($name:literal, $rows:literal, $quick:literal, $f:path) => {
        Entry { name: $name, rows: $rows, quick: $quick, run: || Box::pin($f()) }
    };
    ($name:literal, $rows:literal, $quick:literal, result $f:path) => {
        Entry { name: $name, rows: $rows, quick: $quick, run: || Box::pin(async { $f().await.unwrap() }) }
    };
}

/// Every scenario, in the order of faults.md.
pub const ALL: &[Entry] = &[
    entry!("leader_kill_during_writes", "1, R1", true, result cluster::leader_kill_during_writes_loses_no_acknowledged_write),
    entry!("leader_kill_5_nodes", "1 (5 nodes)", false, process::leader_kill_5_nodes),
    entry!("follower_kill_and_restart", "2", true, basic::follower_kill_and_restart),
    entry!("rolling_restart", "3, R23", false, process::rolling_restart),
    entry!("minority_partition", "4, R9", true, basic::minority_partition_then_heal),
    entry!("minority_partition_5_nodes", "4 (5 nodes)", false, network::minority_partition_5_nodes),
    entry!("leader_isolated", "5, R10", true, basic::leader_isolated_then_heal),
    entry!("majority_loss", "6", false, network::majority_loss),
    entry!("one_way_leader_to_follower", "7 (NetRecv)", false, network::one_way_leader_to_follower),
    entry!("one_way_follower_mute", "7 (NetSend)", false, network::one_way_follower_mute),
    entry!("bridge_partition_5_nodes", "8", false, network::bridge_partition_5_nodes),
    entry!("packet_loss", "9", false, network::packet_loss),
    entry!("latency_and_spikes", "10", false, network::latency_and_spikes),
    entry!("leader_pause", "11, R13", true, basic::leader_paused_then_resumed),
    entry!("follower_pause", "12", false, process::follower_paused_then_resumed),
    entry!("disk_full_follower", "13, R7", false, disk::disk_full_follower),
    entry!("sync_failure_on_leader", "13, 14, R6", false, disk::sync_failure_on_leader),
    entry!("slow_disk", "15, R8", false, disk::slow_disk),
    entry!("crash_at_durability_boundaries", "16, R2, R16", false, disk::crash_at_durability_boundaries),
    entry!("power_loss_one_node", "R2, R4", true, power::power_loss_one_node),
    entry!("power_loss_whole_cluster", "R3, R4, I6, I7", false, power::power_loss_whole_cluster),
    entry!("leader_clock_jumps", "17, R12", false, clock::leader_clock_jumps),
    entry!("membership_change_under_writes", "18, R14", true, result cluster::members_join_and_leave_while_writes_go_on),
    entry!("snapshot_catch_up", "19", true, result cluster::follower_that_missed_compaction_catches_up_by_snapshot),
    entry!("wiped_node_rejoin", "20, R15", true, result cluster::wiped_node_cannot_rejoin_under_its_old_id),
    entry!("whole_cluster_restart", "R3", true, result cluster::whole_cluster_restart_keeps_everything),
    entry!("linearizable_reads_through_followers", "I2", true, result cluster::write_through_follower_is_readable_linearizably_on_every_node),
    entry!("flapping_partitions", "R11", false, network::flapping_partitions),
    entry!("audit_sink_slow_then_failing", "R20, J5", false, dataplane::audit_sink_slow_then_failing),
    entry!("data_plane_flood_during_raft_ops", "R21", false, dataplane::data_plane_flood_during_raft_ops),
    entry!("revoke_under_partition", "R17, I6", true, basic::revoke_under_partition_is_never_falsely_final),
    entry!("revoke_with_paused_follower", "I6", true, basic::revoke_with_a_paused_follower),
    entry!("isolated_node_fences_itself", "I6 (fail closed), R9", true, basic::isolated_node_fences_itself),
    entry!("combined_chaos_3_nodes", "21", false, combined_3),
];

fn combined_3() -> impl Future<Output = ()> + Send {
    combined::combined_chaos(3, std::time::Duration::from_secs(20))
}
