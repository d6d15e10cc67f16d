//! `/v1/routes`

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use raftgate_proxy::policy::{AuthMethod, Route};
use raftgate_raft::command::{Op, Outcome};
use raftgate_raft::operations::{DeleteRoute, PutRoute};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::AdminCaller;
use super::body::{name, read_barrier, JsonBody, ReadQuery};
use super::consumers::names;
use super::{write, AdminState, ApiError};

/// Caps keep a route's per-request work bounded.
const UPSTREAMS_MAX: usize = 32;
const HOSTS_MAX: usize = 32;
const LIMITS_PER_ROUTE_MAX: usize = 8;
const PREFIX_LEN_MAX: usize = 512;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRouteBody {
    path_prefix: String,
    upstreams: Vec<String>,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default = "api_key")]
    auth: Vec<AuthMethod>,
    #[serde(default)]
    rate_limits: Vec<String>,
    #[serde(default)]
    serve_stale: bool,
}

fn api_key() -> Vec<AuthMethod> {
    vec![AuthMethod::ApiKey]
}

fn view(r: &Route) -> Value {
    json!({
        "name": r.name, "path_prefix": r.path_prefix, "hosts": r.hosts, "methods": r.methods,
        "upstreams": r.upstreams, "auth": r.auth, "rate_limits": r.rate_limits, "serve_stale": r.serve_stale,
    })
}

fn check_prefix(p: &str) -> Result<(), ApiError> {
    let ok = p.starts_with('/')
        && p.len() <= PREFIX_LEN_MAX
        && !p.split('/').any(|s| s == "." || s == "..")
        && !p.contains(['?', '#', '%', '\\', ' ']);
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "path_prefix {p:?}: must start with '/', be a canonical path (no '.', '..', '%', '?', '#', '\\') of at most {PREFIX_LEN_MAX} bytes"
        )))
    }
}

fn check_upstream(u: &str) -> Result<(), ApiError> {
    // The data plane decides what it can send to (plain HTTP/1.1, no credentials, query or
    // fragment, a path it can write as it is): anything else would only ever get 502, so it is
    // refused here, where the operator sees why.
    if raftgate_proxy::upstream::is_usable_upstream(u) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "upstream {u:?}: write it as http://host[:port][/path] (plain HTTP; no credentials, query or fragment)"
        )))
    }
}

pub async fn put(
    State(state): State<AdminState>,
    caller: AdminCaller,
    headers: HeaderMap,
    Path(n): Path<String>,
    JsonBody(b): JsonBody<PutRouteBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let n = name(&n)?;
    check_prefix(&b.path_prefix)?;
    if b.upstreams.is_empty() || b.upstreams.len() > UPSTREAMS_MAX {
        return Err(ApiError::bad_request(format!("upstreams: give 1 to {UPSTREAMS_MAX} base URLs")));
    }
    b.upstreams.iter().try_for_each(|u| check_upstream(u))?;
    if b.hosts.len() > HOSTS_MAX || b.rate_limits.len() > LIMITS_PER_ROUTE_MAX || b.auth.is_empty() {
        return Err(ApiError::bad_request(format!(
            "at most {HOSTS_MAX} hosts and {LIMITS_PER_ROUTE_MAX} rate_limits; auth needs at least one method"
        )));
    }
    for m in &b.methods {
        if m.is_empty() || !m.bytes().all(|c| c.is_ascii_uppercase()) {
            return Err(ApiError::bad_request(format!("methods: {m:?} is not an upper-case method name")));
        }
    }
    let rate_limits = names(b.rate_limits, "rate_limits")?;
    {
        let v = state.cluster.view.load();
        if let Some(missing) = rate_limits.iter().find(|l| !v.policy.rate_limits.contains_key(*l)) {
            return Err(ApiError::bad_request(format!(
                "rate_limits: {missing} does not exist; create it with PUT /v1/rate-limits/{missing}"
            )));
        }
    }
    let route = Route {
        name: n,
        path_prefix: b.path_prefix,
        hosts: b.hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
        methods: b.methods,
        upstreams: b.upstreams,
        auth: b.auth,
        rate_limits,
        serve_stale: b.serve_stale,
    };
    let outcome = write(&state, &caller, &headers, Op::PutRoute(PutRoute { route: route.clone() })).await?;
    let status = if matches!(outcome, Outcome::Put { created: true }) { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(view(&route))))
}

pub async fn list(
    State(state): State<AdminState>,
    _c: AdminCaller,
    Query(q): Query<ReadQuery>,
) -> Result<Json<Value>, ApiError> {
    read_barrier(&state, &q).await?;
    let v = state.cluster.view.load();
    Ok(Json(json!({ "routes": v.policy.routes.values().map(view).collect::<Vec<_>>() })))
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
    let r = v.policy.routes.get(&n).ok_or_else(|| ApiError::not_found(format!("route {n} does not exist")))?;
    Ok(Json(view(r)))
}

pub async fn delete(
    State(state): State<AdminState>,
    caller: AdminCaller,
    headers: HeaderMap,
    Path(n): Path<String>,
) -> Result<Json<Value>, ApiError> {
    write(&state, &caller, &headers, Op::DeleteRoute(DeleteRoute { name: name(&n)? })).await?;
    Ok(Json(json!({ "deleted": n })))
}
