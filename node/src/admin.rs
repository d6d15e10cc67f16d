//! The admin API: JSON over HTTP on every node, as `../shared/api-contract.md` describes.
//!
//! Writes go through [`raftgate_raft::cluster::Cluster::write`] (forwarded to the leader when
//! this node follows); reads are linearizable unless `?consistency=stale`. Every error leaves
//! through [`error::ApiError`], the one place that chooses statuses and JSON bodies.

mod alerts;
mod auth;
mod auth_guard;
mod body;
mod cluster;
mod consumers;
mod error;
mod keys;
mod rate_limits;
mod roles;
mod routes;
mod time;

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::routing::{get, post, put};
use axum::Router;
use raftgate_raft::cluster::Cluster;
use raftgate_raft::command::{Op, Outcome, RequestId, Response};
use raftgate_raft::network::wire::Caller;
use sha2::{Digest, Sha256};

pub use auth::AdminCaller;
pub use error::ApiError;
pub use time::rfc3339;

use raftgate_proxy::audit::AuditQueue;
use raftgate_proxy::gateway::Gateway;
use raftgate_storage::AuditLog;

#[derive(Clone)]
pub struct AdminState {
    pub cluster: Arc<Cluster>,
    /// The committed log index as this node's log store last saved it (`raftgate_raft_commit_index`).
    pub commit_index: Arc<std::sync::atomic::AtomicU64>,
    pub node_id: u64,
    /// This node's audit store, for queries and verification.
    pub audit: Arc<AuditLog>,
    /// Where admin actions are recorded (the same queue as data-plane decisions).
    pub audit_queue: AuditQueue,
    /// The data plane, for its metrics.
    pub gateway: Arc<Gateway>,
    /// This node's freshness lease, for `/v1/health`.
    pub fresh: Arc<raftgate_proxy::freshness::Freshness>,
    /// Set once this node has registered its data dir and, on a bootstrap start, has applied
    /// the bootstrap admin token: `/v1/health` says `ready` only after that.
    pub duties_done: Arc<std::sync::atomic::AtomicBool>,
    /// Every node's lease lasts at most this long: a write that takes access away waits this
    /// long (plus a margin) for members that do not confirm, after which they are fenced.
    pub staleness: std::time::Duration,
}

/// Wall-clock milliseconds for admin audit events (the data plane's clock: never backwards).
pub fn now_ms() -> u64 {
    raftgate_proxy::clock::now_ms()
}

/// Longest admin request body: policies are small; a megabyte is generous.
const ADMIN_BODY_LEN_MAX: usize = 1024 * 1024;

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/v1/health", get(cluster::health))
        .route("/metrics", get(cluster::metrics))
        .route("/v1/cluster", get(cluster::show))
        .route("/v1/debug/state", get(cluster::debug_state))
        .route("/v1/cluster/members", post(cluster::add_member))
        .route("/v1/cluster/members/{id}", axum::routing::delete(cluster::remove_member))
        .route("/v1/consumers", post(consumers::create).get(consumers::list))
        .route("/v1/consumers/{name}", get(consumers::get).delete(consumers::delete))
        .route("/v1/roles", get(roles::list))
        .route("/v1/roles/{name}", put(roles::put).get(roles::get).delete(roles::delete))
        .route("/v1/routes", get(routes::list))
        .route("/v1/routes/{name}", put(routes::put).get(routes::get).delete(routes::delete))
        .route("/v1/rate-limits", get(rate_limits::list))
        .route("/v1/rate-limits/{name}", put(rate_limits::put).get(rate_limits::get).delete(rate_limits::delete))
        .route("/v1/auth-guard", put(auth_guard::put).get(auth_guard::get).delete(auth_guard::delete))
        .route("/v1/alerts", get(alerts::list))
        .route("/v1/alerts/{name}", put(alerts::put).get(alerts::get).delete(alerts::delete))
        .route("/v1/keys", post(keys::create).get(keys::list))
        .route("/v1/keys/batch", post(keys::create_batch))
        .route("/v1/keys/{id}", get(keys::get))
        .route("/v1/keys/{id}/revoke", post(keys::revoke))
        .route("/v1/keys/{id}/rotate", post(keys::rotate))
        .route("/v1/self/rotate", post(keys::rotate_self))
        .route("/v1/audit", get(crate::audit::query))
        .route("/v1/audit/verify", get(crate::audit::verify))
        .fallback(|| async { ApiError::not_found("no such admin endpoint") })
        .layer(axum::middleware::map_response(error::json_errors))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::audit::record_admin))
        .layer(axum::extract::DefaultBodyLimit::max(ADMIN_BODY_LEN_MAX))
        .with_state(state)
}

/// How long a write that gives access (a new key, consumer or route) waits for the reachable
/// members to apply it before answering; healthy members take milliseconds.
const GRANT_WAIT_MAX: std::time::Duration = std::time::Duration::from_millis(500);

/// Longest `Idempotency-Key` accepted.
const IDEMPOTENCY_KEY_LEN_MAX: usize = 256;

/// The request id for a write: derived from the caller's `Idempotency-Key` when given (so a
/// client retry is applied once), random otherwise. The key is bound to the caller and to the
/// kind of write (`kind`): the same key sent with another kind of write is another request.
/// (Bound to the caller alone, a key reused across endpoints got the first write's stored
/// outcome, which the second endpoint could not read: a 500, found by schemathesis.)
fn request_id(caller: &auth::AdminCaller, headers: &HeaderMap, kind: &str) -> Result<RequestId, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(Cluster::new_request_id()),
        Some(v) if v.len() > IDEMPOTENCY_KEY_LEN_MAX || v.is_empty() => {
            Err(ApiError::bad_request(format!("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_LEN_MAX} bytes")))
        }
        Some(v) => {
            let mut h = Sha256::new();
            h.update(caller.digest);
            h.update(kind.as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            let d = h.finalize();
            let mut id = RequestId::default();
            id.copy_from_slice(&d[..16]);
            Ok(id)
        }
    }
}

/// Proposes `op` for an admin caller and turns a refusal into an API error.
///
/// A write that takes access away (revoke, rotate, deletes, role changes) answers only once
/// every member has applied it or has certainly fenced itself: a member that does not confirm
/// is waited for up to the staleness bound plus a margin, measured from when this node saw the
/// write applied (no earlier than the commit). Any lease that member held was granted before
/// the commit and has lapsed by then; a newer lease would have required applying the write.
async fn write(
    state: &AdminState,
    caller: &auth::AdminCaller,
    headers: &HeaderMap,
    op: Op,
) -> Result<Outcome, ApiError> {
    let id = request_id(caller, headers, op.kind())?;
    write_as(state, Caller::Admin(caller.digest), id, op).await
}

/// [`write`] for any caller, with the request id chosen.
async fn write_as(state: &AdminState, caller: Caller, id: RequestId, op: Op) -> Result<Outcome, ApiError> {
    let (narrows, grants) = (op.narrows_access(), op.grants_access());
    let written = state.cluster.write(caller, id, op).await?;
    let outcome = match written.response {
        Response::Ok(outcome) => outcome,
        Response::Err(e) => return Err(e.into()),
    };
    if narrows {
        // Clock rates drift a little between nodes: wait 10 % + 100 ms beyond the lease.
        let bound = state.staleness + state.staleness / 10 + std::time::Duration::from_millis(100);
        let fenced = state.cluster.wait_members_applied(written.index, bound, false).await;
        if !fenced.is_empty() {
            tracing::warn!(
                index = written.index,
                nodes = ?fenced,
                "narrowing write: nodes did not confirm; their leases have lapsed, so they are fenced"
            );
        }
    } else if grants {
        // A key used through another node right after its 201 must not meet a node that has
        // not applied it yet (docker-chaos saw that 401 once). Nothing is at stake for safety,
        // so the wait is short and skips members that do not answer.
        let behind = state.cluster.wait_members_applied(written.index, GRANT_WAIT_MAX, true).await;
        if !behind.is_empty() {
            tracing::debug!(index = written.index, nodes = ?behind, "granting write: nodes had not applied it yet");
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// `docs/openapi.json` names exactly the paths and methods the router above serves, so the
    /// document cannot fall behind an endpoint added or removed here.
    #[test]
    fn the_openapi_document_matches_the_router() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/openapi.json")).expect("docs/openapi.json is JSON");
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .expect("operations")
                    .keys()
                    .map(|m| (path.clone(), m.to_uppercase()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut served = BTreeSet::new();
        for line in include_str!("admin.rs").lines().map(str::trim) {
            let Some(rest) = line.strip_prefix(".route(\"") else { continue };
            let Some((path, handlers)) = rest.split_once('"') else { continue };
            for (call, method) in [("get(", "GET"), ("post(", "POST"), ("put(", "PUT"), ("delete(", "DELETE")] {
                if handlers.contains(call) {
                    served.insert((path.to_string(), method.to_string()));
                }
            }
        }
        assert!(served.len() > 30, "the router's routes were not found: {served:?}");
        let missing: Vec<_> = served.difference(&documented).collect();
        let stale: Vec<_> = documented.difference(&served).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "not documented: {missing:?}; documented, not served: {stale:?}"
        );
    }
}
