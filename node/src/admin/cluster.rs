//! `/v1/health`, `/v1/cluster`, membership changes and `/metrics`.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use raftgate_raft::network::wire::{Caller, MembershipChange};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::AdminCaller;
use super::body::{JsonBody, ReadQuery};
use super::{AdminState, ApiError};

pub async fn health(State(state): State<AdminState>) -> Json<Value> {
    let s = state.cluster.status();
    Json(json!({
        "node_id": s.node_id,
        "state": s.state,
        "leader_id": s.leader_id,
        "term": s.term,
        "last_applied": s.last_applied,
        "fresh": state.fresh.is_fresh(),
        "lease_remaining_ms": state.fresh.remaining_ms(),
        "ready": state.fresh.is_fresh() && state.duties_done.load(std::sync::atomic::Ordering::Acquire),
    }))
}

pub async fn show(
    State(state): State<AdminState>,
    _c: AdminCaller,
    Query(q): Query<ReadQuery>,
) -> Result<Json<Value>, ApiError> {
    // Like every read: linearizable unless asked otherwise, so a membership change that
    // returned is in the answer of every node (`?consistency=stale` answers from this node's
    // view at once, also while there is no quorum).
    super::body::read_barrier(&state, &q).await?;
    let members: Vec<Value> = state
        .cluster
        .members()
        .await
        .into_iter()
        .map(|(id, addr, voter, status)| {
            json!({
                "id": id,
                "raft_addr": addr,
                "voter": voter,
                "reachable": status.is_some(),
                "state": status.as_ref().map(|s| s.state.clone()),
                "last_applied": status.as_ref().map(|s| s.last_applied),
            })
        })
        .collect();
    let s = state.cluster.status();
    Ok(Json(json!({ "leader_id": s.leader_id, "term": s.term, "members": members })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    id: u64,
    raft_addr: String,
}

pub async fn add_member(
    State(state): State<AdminState>,
    caller: AdminCaller,
    JsonBody(b): JsonBody<AddMember>,
) -> Result<Json<Value>, ApiError> {
    // HOST:PORT, like --peers: host names are normal in containers.
    let valid = b
        .raft_addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok() && !host.contains(['/', '@', ' ']));
    if !valid {
        return Err(ApiError::bad_request(format!("raft_addr {:?} is not HOST:PORT", b.raft_addr)));
    }
    let change = MembershipChange::Add { id: b.id, raft_addr: b.raft_addr.clone() };
    state.cluster.change_membership(Caller::Admin(caller.digest), change).await?;
    Ok(Json(json!({ "id": b.id, "raft_addr": b.raft_addr, "voter": true })))
}

pub async fn remove_member(
    State(state): State<AdminState>,
    caller: AdminCaller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: u64 = id.parse().map_err(|_| ApiError::bad_request(format!("{id:?} is not a node id")))?;
    state.cluster.change_membership(Caller::Admin(caller.digest), MembershipChange::Remove { id }).await?;
    Ok(Json(json!({ "removed": id })))
}

/// `GET /v1/debug/state`: this node's applied index and a digest of its whole replicated
/// state, for convergence checks (equal digests at equal indexes on every node), and of its
/// entities alone (`policy_hash`, unchanged by refused writes and clock ticks). O(state).
pub async fn debug_state(State(state): State<AdminState>, _c: AdminCaller) -> Json<Value> {
    let v = state.cluster.view.load();
    Json(json!({
        "node_id": state.node_id,
        "last_applied": v.policy.version,
        "state_hash": v.state_hash(),
        "policy_hash": v.policy_hash(),
        "keys": v.policy.keys.len(),
        "registered_nodes": v.nodes.values().filter(|n| n.incarnation.is_some() && !n.retired).map(|n| n.id).collect::<Vec<_>>(),
        "consumers": v.policy.consumers.len(),
    }))
}

/// Prometheus text format. No token needed, like most exporters: it carries no secrets.
pub async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let m = state.cluster.raft.metrics().borrow().clone();
    let mut registry = Registry::with_prefix("raftgate");
    let gauge = |registry: &mut Registry, name: &str, help: &str, v: i64| {
        let g = Gauge::<i64>::default();
        g.set(v);
        registry.register(name, help, g);
    };
    gauge(&mut registry, "raft_term", "Current Raft term", m.current_term as i64);
    gauge(
        &mut registry,
        "raft_leader_id",
        "Current leader's node id (-1 when unknown)",
        m.current_leader.map(|l| l as i64).unwrap_or(-1),
    );
    gauge(
        &mut registry,
        "raft_is_leader",
        "1 when this node is the leader",
        i64::from(m.current_leader == Some(state.node_id)),
    );
    gauge(&mut registry, "raft_last_log_index", "Index of the last log entry", m.last_log_index.unwrap_or(0) as i64);
    gauge(
        &mut registry,
        "raft_commit_index",
        "Index of the last entry this node knows to be committed",
        state.commit_index.load(std::sync::atomic::Ordering::Relaxed) as i64,
    );
    gauge(
        &mut registry,
        "raft_applied_index",
        "Index of the last applied entry",
        m.last_applied.map(|l| l.index).unwrap_or(0) as i64,
    );
    gauge(
        &mut registry,
        "raft_snapshot_index",
        "Index of the last snapshot",
        m.snapshot.map(|l| l.index).unwrap_or(0) as i64,
    );
    gauge(
        &mut registry,
        "raft_purged_index",
        "Index up to which the log was purged",
        m.purged.map(|l| l.index).unwrap_or(0) as i64,
    );
    gauge(
        &mut registry,
        "raft_millis_since_quorum_ack",
        "On the leader: ms since a quorum last acknowledged (-1 elsewhere)",
        m.millis_since_quorum_ack.map(|v| v as i64).unwrap_or(-1),
    );
    let v = state.cluster.view.load();
    gauge(&mut registry, "keys", "API keys in the replicated state", v.policy.keys.len() as i64);
    gauge(&mut registry, "consumers", "Consumers in the replicated state", v.policy.consumers.len() as i64);
    let (depth, dropped, write_errors) = crate::audit::queue_figures(&state.audit_queue);
    gauge(&mut registry, "audit_queue_depth", "Audit events waiting to be written", depth);
    gauge(
        &mut registry,
        "audit_dropped",
        "Audit events dropped and counted: the queue was full, or the audit writer had stopped (total)",
        dropped,
    );
    gauge(
        &mut registry,
        "audit_writer_up",
        "1 while the audit writer runs; 0 once it has stopped on a bug (every event is then dropped)",
        i64::from(!state.audit_queue.writer_stopped()),
    );
    gauge(
        &mut registry,
        "audit_write_errors",
        "Failed writes to the audit store, each retried (total; a full or failing audit disk)",
        write_errors,
    );
    let last_seq = state.audit.last_seq() as i64;
    gauge(&mut registry, "audit_last_seq", "Number of the newest record in this node's audit chain", last_seq);
    // One point read of a small key: cheap enough for a scrape, and not on the request path.
    gauge(
        &mut registry,
        "audit_pruned_through",
        "Last audit record removed by audit_retention_s (0: none); last_seq minus this is what the store holds",
        state.audit.base().map_or(-1, |b| b.seq as i64),
    );
    state.gateway.metrics.register(&mut registry);
    state.gateway.limits.global.metrics.register(&mut registry);
    let mut out = String::new();
    if encode(&mut out, &registry).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed").into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out).into_response()
}
