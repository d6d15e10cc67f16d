//! `/v1/auth-guard` (extension): count failed authentications per client IP across the cluster
//! and block an IP on every node once it passes the threshold in one window.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use raftgate_proxy::policy::AuthGuard;
use raftgate_raft::command::Op;
use raftgate_raft::operations::PutAuthGuard;
use raftgate_raft::state::{AuthFailureCount, Offender};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::AdminCaller;
use super::body::{read_barrier, JsonBody, ReadQuery};
use super::{write, AdminState, ApiError};

const WINDOW_S_MAX: u64 = 24 * 3600;
const BLOCK_S_MAX: u64 = 30 * 24 * 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutGuardBody {
    threshold: u64,
    window_s: u64,
    #[serde(default)]
    block_s: u64,
}

fn view(state: &AdminState) -> Value {
    let v = state.cluster.view.load();
    let blocked: Vec<Value> =
        v.policy.blocked_ips.iter().map(|(ip, until)| json!({ "ip": ip.to_string(), "until_ms": until })).collect();
    // The current window's counts, highest first (at most 100).
    let mut counting: Vec<&AuthFailureCount> = v.auth_failures.values().collect();
    counting.sort_by_key(|c| std::cmp::Reverse(c.count));
    let counting: Vec<Value> = counting
        .into_iter()
        .take(100)
        .map(|c| {
            let (kind, who) = match &c.offender {
                Offender::Ip(ip) => ("ip", ip.to_string()),
                Offender::Key(id) => ("key_id", id.clone()),
            };
            json!({ kind: who, "failures": c.count, "window_start_ms": c.window_start_ms })
        })
        .collect();
    json!({ "guard": v.policy.auth_guard, "blocked_ips": blocked, "failures": counting })
}

pub async fn put(
    State(state): State<AdminState>,
    caller: AdminCaller,
    headers: HeaderMap,
    JsonBody(b): JsonBody<PutGuardBody>,
) -> Result<Json<Value>, ApiError> {
    if b.threshold == 0 {
        return Err(ApiError::bad_request("threshold must be at least 1"));
    }
    if b.window_s == 0 || b.window_s > WINDOW_S_MAX {
        return Err(ApiError::bad_request(format!("window_s must be 1 to {WINDOW_S_MAX}")));
    }
    if b.block_s > BLOCK_S_MAX {
        return Err(ApiError::bad_request(format!("block_s must be 0 (alert only) to {BLOCK_S_MAX}")));
    }
    let guard = AuthGuard { threshold: b.threshold, window_s: b.window_s, block_s: b.block_s };
    write(&state, &caller, &headers, Op::PutAuthGuard(PutAuthGuard { guard: Some(guard) })).await?;
    Ok(Json(view(&state)))
}

pub async fn get(
    State(state): State<AdminState>,
    _c: AdminCaller,
    Query(q): Query<ReadQuery>,
) -> Result<Json<Value>, ApiError> {
    read_barrier(&state, &q).await?;
    Ok(Json(view(&state)))
}

/// Turns the guard off and lifts every block.
pub async fn delete(
    State(state): State<AdminState>,
    caller: AdminCaller,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    write(&state, &caller, &headers, Op::PutAuthGuard(PutAuthGuard { guard: None })).await?;
    Ok(Json(view(&state)))
}
