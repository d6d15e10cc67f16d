//! `/v1/alerts`: webhooks for global-limit thresholds, failed-authentication floods and keys
//! nearing expiry (extension).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use raftgate_proxy::policy::Name;
use raftgate_raft::command::{Op, Outcome};
use raftgate_raft::operations::{DeleteAlert, PutAlert};
use raftgate_raft::state::AlertRule;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::AdminCaller;
use super::body::{name, read_barrier, JsonBody, ReadQuery};
use super::{write, AdminState, ApiError};

const URL_LEN_MAX: usize = 2048;
const SECRET_LEN_MIN: usize = 16;
const SECRET_LEN_MAX: usize = 256;
const THRESHOLDS_MAX: usize = 8;
const RATE_LIMITS_MAX: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutAlertBody {
    url: String,
    secret: String,
    #[serde(default)]
    rate_limits: Vec<String>,
    #[serde(default)]
    thresholds: Vec<f64>,
    #[serde(default)]
    failed_auth: bool,
    key_expiry_s: Option<u64>,
}

/// Longest reminder horizon: a year.
const KEY_EXPIRY_S_MAX: u64 = 366 * 24 * 3600;

fn view(r: &AlertRule) -> Value {
    json!({
        "name": r.name,
        "url": r.url,
        "rate_limits": r.rate_limits,
        "thresholds": r.thresholds_permille.iter().map(|t| f64::from(*t) / 1000.0).collect::<Vec<_>>(),
        "failed_auth": r.failed_auth,
        "key_expiry_s": r.key_expiry_s,
    })
}

pub async fn put(
    State(state): State<AdminState>,
    caller: AdminCaller,
    headers: HeaderMap,
    Path(n): Path<String>,
    JsonBody(b): JsonBody<PutAlertBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let n = name(&n)?;
    let url: reqwest::Url = b.url.parse().map_err(|e| ApiError::bad_request(format!("url: {e}")))?;
    if url.scheme() != "http" || url.host().is_none() || b.url.len() > URL_LEN_MAX {
        return Err(ApiError::bad_request(format!(
            "url must be an http:// URL of at most {URL_LEN_MAX} bytes (https webhooks are not supported yet: \
             point it at a relay on your network)"
        )));
    }
    if !(SECRET_LEN_MIN..=SECRET_LEN_MAX).contains(&b.secret.len()) {
        return Err(ApiError::bad_request(format!("secret must be {SECRET_LEN_MIN} to {SECRET_LEN_MAX} bytes")));
    }
    if b.thresholds.len() > THRESHOLDS_MAX {
        return Err(ApiError::bad_request(format!("thresholds: at most {THRESHOLDS_MAX} fractions of the limit")));
    }
    if b.thresholds.is_empty() && !b.failed_auth && b.key_expiry_s.is_none() {
        return Err(ApiError::bad_request(
            "an alert must watch something: thresholds (global limits), failed_auth, or key_expiry_s",
        ));
    }
    if b.key_expiry_s.is_some_and(|s| s == 0 || s > KEY_EXPIRY_S_MAX) {
        return Err(ApiError::bad_request(format!("key_expiry_s must be 1 to {KEY_EXPIRY_S_MAX}")));
    }
    let mut thresholds_permille = Vec::with_capacity(b.thresholds.len());
    for t in &b.thresholds {
        if !(t.is_finite() && *t > 0.0 && *t <= 1.0) {
            return Err(ApiError::bad_request(format!("threshold {t}: each must be above 0 and at most 1")));
        }
        thresholds_permille.push((t * 1000.0).round().max(1.0) as u32);
    }
    thresholds_permille.sort_unstable();
    thresholds_permille.dedup();
    if b.rate_limits.len() > RATE_LIMITS_MAX {
        return Err(ApiError::bad_request(format!("rate_limits: at most {RATE_LIMITS_MAX}")));
    }
    let rate_limits = b.rate_limits.iter().map(|s| name(s)).collect::<Result<Vec<Name>, _>>()?;
    let rule = AlertRule {
        name: n,
        url: b.url,
        secret: b.secret,
        rate_limits,
        thresholds_permille,
        failed_auth: b.failed_auth,
        key_expiry_s: b.key_expiry_s,
    };
    let outcome = write(&state, &caller, &headers, Op::PutAlert(PutAlert { rule: rule.clone() })).await?;
    let status = if matches!(outcome, Outcome::Put { created: true }) { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(view(&rule))))
}

pub async fn list(
    State(state): State<AdminState>,
    _c: AdminCaller,
    Query(q): Query<ReadQuery>,
) -> Result<Json<Value>, ApiError> {
    read_barrier(&state, &q).await?;
    let v = state.cluster.view.load();
    Ok(Json(json!({
        "alerts": v.alert_rules.values().map(view).collect::<Vec<_>>(),
        "pending": v.pending_alerts.values().take(1000).map(crate::alerts::describe).collect::<Vec<_>>(),
        "pending_count": v.pending_alerts.len(),
    })))
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
    let r = v.alert_rules.get(&n).ok_or_else(|| ApiError::not_found(format!("alert {n} does not exist")))?;
    Ok(Json(view(r)))
}

pub async fn delete(
    State(state): State<AdminState>,
    caller: AdminCaller,
    headers: HeaderMap,
    Path(n): Path<String>,
) -> Result<Json<Value>, ApiError> {
    write(&state, &caller, &headers, Op::DeleteAlert(DeleteAlert { name: name(&n)? })).await?;
    Ok(Json(json!({ "deleted": n })))
}
