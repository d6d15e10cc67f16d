//! `/v1/keys`: issue, inspect, revoke and rotate API keys. The secret appears in the creation
//! (and rotation) response only; reads never show it or its digest.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use raftgate_proxy::policy::{ApiKey, GeneratedKey, KEY_PREFIX};
use raftgate_raft::cluster::Cluster;
use raftgate_raft::command::{Op, Outcome};
use raftgate_raft::network::wire::Caller;
use raftgate_raft::operations::{CreateKey, CreateKeys, RevokeKey, RotateKey, KEYS_PER_BATCH_MAX};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::auth::AdminCaller;
use super::body::{name, read_barrier, JsonBody};
use super::consumers::names;
use super::time::rfc3339;
use super::{write, AdminState, ApiError};

/// Longest expiry accepted at creation: ten years.
const EXPIRES_IN_S_MAX: u64 = 10 * 365 * 24 * 3600;
/// Default grace period of a rotation: one hour.
const GRACE_S_DEFAULT: u64 = 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    consumer: String,
    #[serde(default)]
    roles: Vec<String>,
    expires_in_s: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    consumer: String,
    count: usize,
    #[serde(default)]
    roles: Vec<String>,
    expires_in_s: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    grace_s: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    consumer: Option<String>,
    consistency: Option<String>,
}

fn opt_time(ms: Option<u64>) -> Value {
    ms.map(|m| Value::String(rfc3339(m))).unwrap_or(Value::Null)
}

/// Metadata only: never the secret, never its digest.
pub fn view(k: &ApiKey, now_ms: u64) -> Value {
    json!({
        "id": k.id,
        "prefix": format!("{KEY_PREFIX}{}", k.id),
        "consumer": k.consumer,
        "roles": k.roles,
        "state": k.state_at(now_ms),
        "created_at": rfc3339(k.created_at_ms),
        "expires_at": opt_time(k.expires_at_ms),
        "revoked_at": opt_time(k.revoked_at_ms),
        "rotated_to": k.rotated_to,
        "grace_until": opt_time(k.grace_until_ms),
    })
}

fn id_param(id: &str) -> Result<&str, ApiError> {
    let id = id.strip_prefix(KEY_PREFIX).unwrap_or(id);
    if id.len() == raftgate_proxy::policy::KEY_ID_LEN && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(id)
    } else {
        Err(ApiError::bad_request(format!("{id:?} is not a key id (12 base62 characters)")))
    }
}

fn created(key: &ApiKey, secret: &str) -> Json<Value> {
    Json(json!({
        "id": key.id,
        "key": secret,
        "consumer": key.consumer,
        "roles": key.roles,
        "expires_at": opt_time(key.expires_at_ms),
    }))
}

pub async fn create(
    State(state): State<AdminState>,
    caller: AdminCaller,
    headers: HeaderMap,
    JsonBody(b): JsonBody<CreateKeyBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if b.expires_in_s.is_some_and(|s| s == 0 || s > EXPIRES_IN_S_MAX) {
        return Err(ApiError::bad_request(format!("expires_in_s must be 1 to {EXPIRES_IN_S_MAX}")));
    }
    let generated = GeneratedKey::generate();
    let op = Op::CreateKey(CreateKey {
        id: generated.id,
        digest: generated.digest,
        consumer: name(&b.consumer)?,
        roles: names(b.roles, "roles")?,
        expires_in_s: b.expires_in_s,
    });
    match write(&state, &caller, &headers, op).await? {
        // A retry with the same Idempotency-Key returns the first attempt's key record; its
        // secret was shown once and cannot be shown again, so refuse rather than mislead.
        Outcome::Key(k) if k.id == generated.id => Ok((StatusCode::CREATED, created(&k, &generated.key))),
        Outcome::Key(k) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_created",
            format!("this Idempotency-Key already created key {}; its secret was shown once and is not stored", k.id),
        )),
        other => {
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("unexpected outcome {other:?}")))
        }
    }
}

/// `POST /v1/keys/batch` (extension): up to 1000 keys of one consumer in one log entry.
pub async fn create_batch(
    State(state): State<AdminState>,
    caller: AdminCaller,
    headers: HeaderMap,
    JsonBody(b): JsonBody<BatchBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if b.count == 0 || b.count > KEYS_PER_BATCH_MAX {
        return Err(ApiError::bad_request(format!("count must be 1 to {KEYS_PER_BATCH_MAX}")));
    }
    if b.expires_in_s.is_some_and(|s| s == 0 || s > EXPIRES_IN_S_MAX) {
        return Err(ApiError::bad_request(format!("expires_in_s must be 1 to {EXPIRES_IN_S_MAX}")));
    }
    let generated: Vec<GeneratedKey> = (0..b.count).map(|_| GeneratedKey::generate()).collect();
    let consumer = name(&b.consumer)?;
    let op = Op::CreateKeys(CreateKeys {
        consumer: consumer.clone(),
        roles: names(b.roles, "roles")?,
        expires_in_s: b.expires_in_s,
        keys: generated.iter().map(|g| (g.id, g.digest)).collect(),
    });
    write(&state, &caller, &headers, op).await?;
    let v = state.cluster.view.load();
    // A retried Idempotency-Key finds the first batch's ids, not these: refuse to show secrets
    // that were never stored.
    if !v.policy.keys.contains_key(&generated[0].id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_created",
            "this Idempotency-Key already created a batch; its secrets were shown once",
        ));
    }
    let keys: Vec<Value> = generated.iter().map(|g| json!({ "id": g.id, "key": g.key })).collect();
    Ok((StatusCode::CREATED, Json(json!({ "consumer": consumer, "keys": keys }))))
}

pub async fn get(
    State(state): State<AdminState>,
    _c: AdminCaller,
    Path(id): Path<String>,
    Query(q): Query<super::body::ReadQuery>,
) -> Result<Json<Value>, ApiError> {
    let id = id_param(&id)?;
    read_barrier(&state, &q).await?;
    let v = state.cluster.view.load();
    let k = v.policy.keys.get(id).ok_or_else(|| ApiError::not_found(format!("key {id} does not exist")))?;
    Ok(Json(view(k, v.policy.time_ms)))
}

pub async fn list(
    State(state): State<AdminState>,
    _c: AdminCaller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let consumer = q.consumer.as_deref().map(name).transpose()?;
    read_barrier(&state, &super::body::ReadQuery { consistency: q.consistency }).await?;
    let v = state.cluster.view.load();
    let now = v.policy.time_ms;
    let keys: Vec<Value> = v
        .policy
        .keys
        .values()
        .filter(|k| consumer.as_ref().is_none_or(|c| &k.consumer == c))
        .map(|k| view(k, now))
        .collect();
    Ok(Json(json!({ "keys": keys })))
}

pub async fn revoke(
    State(state): State<AdminState>,
    caller: AdminCaller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = id_param(&id)?.to_string();
    match write(&state, &caller, &headers, Op::RevokeKey(RevokeKey { id })).await? {
        Outcome::Key(k) => Ok(Json(view(&k, k.revoked_at_ms.unwrap_or(0)))),
        other => {
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("unexpected outcome {other:?}")))
        }
    }
}

pub async fn rotate(
    State(state): State<AdminState>,
    caller: AdminCaller,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let old_id = id_param(&id)?.to_string();
    let grace_s = rotate_grace(&body)?;
    let generated = GeneratedKey::generate();
    let op = Op::RotateKey(RotateKey { old_id, new_id: generated.id, new_digest: generated.digest, grace_s });
    match write(&state, &caller, &headers, op).await? {
        Outcome::Key(k) if k.id == generated.id => Ok((StatusCode::CREATED, created(&k, &generated.key))),
        Outcome::Key(k) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_created",
            format!(
                "this Idempotency-Key already rotated to key {}; its secret was shown once and is not stored",
                k.id
            ),
        )),
        other => {
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("unexpected outcome {other:?}")))
        }
    }
}

/// The optional rotate body: no body means the default grace period.
fn rotate_grace(body: &[u8]) -> Result<u64, ApiError> {
    let b: RotateBody = if body.iter().all(u8::is_ascii_whitespace) {
        RotateBody::default()
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
    };
    let grace_s = b.grace_s.unwrap_or(GRACE_S_DEFAULT);
    if grace_s > raftgate_raft::operations::GRACE_S_MAX {
        return Err(ApiError::bad_request(format!(
            "grace_s must be at most {}",
            raftgate_raft::operations::GRACE_S_MAX
        )));
    }
    Ok(grace_s)
}

/// The permission a key's roles must grant for it to rotate itself.
pub const SELF_ROTATE_METHOD: &str = "POST";
pub const SELF_ROTATE_PATH: &str = "/_self/rotate";

/// `POST /v1/self/rotate` (extension): a key rotates itself, authenticated by the key (as on
/// the proxy: `Authorization: Bearer` or `X-API-Key`), not by an admin token. Its roles must
/// grant `POST /_self/rotate`. The answer is the successor, shown once; the old key works
/// until its grace period ends. The leader re-checks that the old key is still active.
pub async fn rotate_self(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let view = state.cluster.view.load_full();
    let policy = &view.policy;
    let raw = raftgate_proxy::phases::authenticate::credential(&headers)
        .map_err(|_| ApiError::unauthorized())?
        .ok_or_else(ApiError::unauthorized)?;
    let caller = raftgate_proxy::phases::authenticate::authenticate(policy, raw, crate::admin::now_ms())
        .map_err(|_| ApiError::unauthorized())?;
    if caller.deprecated {
        return Err(ApiError::new(StatusCode::CONFLICT, "conflict", "this key was already rotated; use its successor"));
    }
    raftgate_proxy::phases::authorize::authorize(policy, &caller, SELF_ROTATE_METHOD, SELF_ROTATE_PATH).map_err(
        |_| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this key's roles do not grant {SELF_ROTATE_METHOD} {SELF_ROTATE_PATH}"),
            )
        },
    )?;
    let grace_s = rotate_grace(&body)?;
    let old_id = caller.key.id.to_string();
    let generated = GeneratedKey::generate();
    let op = Op::RotateKey(RotateKey {
        old_id: old_id.clone(),
        new_id: generated.id,
        new_digest: generated.digest,
        grace_s,
    });
    let who = Sha256::digest(old_id.as_bytes()).into();
    let outcome = super::write_as(&state, Caller::Key(who), Cluster::new_request_id(), op).await?;
    let mut resp = match outcome {
        Outcome::Key(k) => (StatusCode::CREATED, created(&k, &generated.key)).into_response(),
        other => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("unexpected outcome {other:?}"),
            ))
        }
    };
    resp.extensions_mut().insert(crate::audit::AuditKeyId(old_id));
    Ok(resp)
}
