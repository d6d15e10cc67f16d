//! `/v1/rate-limits`

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use raftgate_proxy::policy::{LimitMode, LimitSubject, RateLimitPolicy};
use raftgate_raft::command::{Op, Outcome};
use raftgate_raft::operations::{DeleteRateLimit, PutRateLimit};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::AdminCaller;
use super::body::{name, read_barrier, JsonBody, ReadQuery};
use super::{write, AdminState, ApiError};

/// Longest window: 31 days covers monthly quotas.
const WINDOW_S_MAX: u64 = 31 * 24 * 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutLimitBody {
    limit: u64,
    window_s: u64,
    per: LimitSubject,
    #[serde(default = "local")]
    mode: LimitMode,
    #[serde(default = "one")]
    cost: u64,
}

fn local() -> LimitMode {
    LimitMode::Local
}
fn one() -> u64 {
    1
}

fn view(l: &RateLimitPolicy) -> Value {
    json!({ "name": l.name, "limit": l.limit, "window_s": l.window_s, "per": l.per, "mode": l.mode, "cost": l.cost })
}

pub async fn put(
    State(state): State<AdminState>,
    caller: AdminCaller,
    headers: HeaderMap,
    Path(n): Path<String>,
    JsonBody(b): JsonBody<PutLimitBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let n = name(&n)?;
    if b.limit == 0 {
        return Err(ApiError::bad_request("limit must be at least 1 (delete the policy to stop admitting)"));
    }
    if b.window_s == 0 || b.window_s > WINDOW_S_MAX {
        return Err(ApiError::bad_request(format!("window_s must be 1 to {WINDOW_S_MAX}")));
    }
    if b.cost == 0 || b.cost > b.limit {
        return Err(ApiError::bad_request("cost must be at least 1 and at most limit"));
    }
    let l = RateLimitPolicy { name: n, limit: b.limit, window_s: b.window_s, per: b.per, mode: b.mode, cost: b.cost };
    let outcome = write(&state, &caller, &headers, Op::PutRateLimit(PutRateLimit { limit: l.clone() })).await?;
    let status = if matches!(outcome, Outcome::Put { created: true }) { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(view(&l))))
}

pub async fn list(
    State(state): State<AdminState>,
    _c: AdminCaller,
    Query(q): Query<ReadQuery>,
) -> Result<Json<Value>, ApiError> {
    read_barrier(&state, &q).await?;
    let v = state.cluster.view.load();
    Ok(Json(json!({ "rate_limits": v.policy.rate_limits.values().map(view).collect::<Vec<_>>() })))
}

pub async fn get(
    State(state): State<AdminState>,
    _c: AdminCaller,
    Path(n): Path<String>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<Value>, ApiError> {
    let n = name(&n)?;
    read_barrier(&state, &q).await?;
    let v = state.cluster.view.load();
    let l =
        v.policy.rate_limits.get(&n).ok_or_else(|| ApiError::not_found(format!("rate limit {n} does not exist")))?;
    Ok(Json(view(l)))
}

pub async fn delete(
    State(state): State<AdminState>,
    caller: AdminCaller,
    headers: HeaderMap,
    Path(n): Path<String>,
) -> Result<Json<Value>, ApiError> {
    write(&state, &caller, &headers, Op::DeleteRateLimit(DeleteRateLimit { name: name(&n)? })).await?;
    Ok(Json(json!({ "deleted": n })))
}
