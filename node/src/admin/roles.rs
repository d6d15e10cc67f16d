//! `/v1/roles`

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use raftgate_proxy::policy::{Permission, Role};
use raftgate_raft::command::{Op, Outcome};
use raftgate_raft::operations::{DeleteRole, PutRole};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::AdminCaller;
use super::body::{name, read_barrier, JsonBody, ReadQuery};
use super::{write, AdminState, ApiError};

/// A role with more rules than this is a policy smell; keep checks on the hot path short.
const PERMISSIONS_MAX: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRoleBody {
    permissions: Vec<Permission>,
}

fn view(r: &Role) -> Value {
    json!({ "name": r.name, "permissions": r.permissions })
}

pub async fn put(
    State(state): State<AdminState>,
    caller: AdminCaller,
    headers: HeaderMap,
    Path(n): Path<String>,
    JsonBody(body): JsonBody<PutRoleBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let n = name(&n)?;
    if body.permissions.len() > PERMISSIONS_MAX {
        return Err(ApiError::bad_request(format!("at most {PERMISSIONS_MAX} permissions per role")));
    }
    let role = Role { name: n.clone(), permissions: body.permissions };
    let outcome =
        write(&state, &caller, &headers, Op::PutRole(PutRole { name: n, permissions: role.permissions.clone() }))
            .await?;
    let status = if matches!(outcome, Outcome::Put { created: true }) { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(view(&role))))
}

pub async fn list(
    State(state): State<AdminState>,
    _c: AdminCaller,
    Query(q): Query<ReadQuery>,
) -> Result<Json<Value>, ApiError> {
    read_barrier(&state, &q).await?;
    let v = state.cluster.view.load();
    Ok(Json(json!({ "roles": v.policy.roles.values().map(view).collect::<Vec<_>>() })))
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
    let r = v.policy.roles.get(&n).ok_or_else(|| ApiError::not_found(format!("role {n} does not exist")))?;
    Ok(Json(view(r)))
}

pub async fn delete(
    State(state): State<AdminState>,
    caller: AdminCaller,
    headers: HeaderMap,
    Path(n): Path<String>,
) -> Result<Json<Value>, ApiError> {
    write(&state, &caller, &headers, Op::DeleteRole(DeleteRole { name: name(&n)? })).await?;
    Ok(Json(json!({ "deleted": n })))
}
