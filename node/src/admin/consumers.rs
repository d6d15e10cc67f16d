//! `/v1/consumers`

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use raftgate_proxy::policy::{Consumer, Name};
use raftgate_raft::command::{Op, Outcome};
use raftgate_raft::operations::{DeleteConsumer, PutConsumer};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::AdminCaller;
use super::body::{name, read_barrier, JsonBody, ReadQuery};
use super::time::rfc3339;
use super::{write, AdminState, ApiError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateConsumer {
    name: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    metadata: BTreeMap<String, Value>,
}

/// Metadata is for people; each value is kept as a string (numbers and booleans are accepted
/// and stored in their JSON spelling).
const METADATA_ENTRIES_MAX: usize = 64;
const METADATA_VALUE_LEN_MAX: usize = 1024;

fn metadata(m: BTreeMap<String, Value>) -> Result<BTreeMap<String, String>, ApiError> {
    if m.len() > METADATA_ENTRIES_MAX {
        return Err(ApiError::bad_request(format!("metadata has more than {METADATA_ENTRIES_MAX} entries")));
    }
    m.into_iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "metadata.{k}: values must be strings, numbers or booleans"
                    )))
                }
            };
            if k.len() > 128 || s.len() > METADATA_VALUE_LEN_MAX {
                return Err(ApiError::bad_request(format!(
                    "metadata.{k}: keys ≤ 128 bytes, values ≤ {METADATA_VALUE_LEN_MAX} bytes"
                )));
            }
            Ok((k, s))
        })
        .collect()
}

pub fn names(list: Vec<String>, field: &str) -> Result<Vec<Name>, ApiError> {
    list.iter().map(|r| Name::parse(r).map_err(|e| ApiError::bad_request(format!("{field}: {e}")))).collect()
}

pub fn view(c: &Consumer) -> Value {
    json!({
        "name": c.name,
        "roles": c.roles,
        "metadata": c.metadata,
        "created_at": rfc3339(c.created_at_ms),
    })
}

pub async fn create(
    State(state): State<AdminState>,
    caller: AdminCaller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateConsumer>,
) -> Result<impl IntoResponse, ApiError> {
    let op = Op::PutConsumer(PutConsumer {
        name: name(&body.name)?,
        roles: names(body.roles, "roles")?,
        metadata: metadata(body.metadata)?,
    });
    match write(&state, &caller, &headers, op).await? {
        Outcome::Consumer(c) => Ok((StatusCode::CREATED, Json(view(&c)))),
        other => {
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("unexpected outcome {other:?}")))
        }
    }
}

pub async fn list(
    State(state): State<AdminState>,
    _c: AdminCaller,
    Query(q): Query<ReadQuery>,
) -> Result<Json<Value>, ApiError> {
    read_barrier(&state, &q).await?;
    let v = state.cluster.view.load();
    Ok(Json(json!({ "consumers": v.policy.consumers.values().map(view).collect::<Vec<_>>() })))
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
    let c = v.policy.consumers.get(&n).ok_or_else(|| ApiError::not_found(format!("consumer {n} does not exist")))?;
    Ok(Json(view(c)))
}

pub async fn delete(
    State(state): State<AdminState>,
    caller: AdminCaller,
    headers: HeaderMap,
    Path(n): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let op = Op::DeleteConsumer(DeleteConsumer { name: name(&n)? });
    write(&state, &caller, &headers, op).await?;
    Ok(Json(json!({ "deleted": n })))
}
