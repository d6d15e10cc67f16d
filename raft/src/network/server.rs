//! The receiving side of the node-to-node channel: an axum router for the Raft listener.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use raftgate_storage::{decode, encode};
use serde::{de::DeserializeOwned, Serialize};

use super::wire::{path, Envelope, ForwardMembership, ForwardWrite, LeaderRefusal};
use crate::cluster::Cluster;
use crate::TypeConfig;

/// Largest message accepted on the Raft listener: a snapshot chunk (1 MiB by default) or an
/// AppendEntries batch, with headroom. Anything bigger is refused before it is buffered.
pub const RAFT_BODY_LEN_MAX: usize = 64 * 1024 * 1024;

pub fn router(cluster: Arc<Cluster>) -> Router {
    Router::new()
        .route(path::APPEND, post(append))
        .route(path::VOTE, post(vote))
        .route(path::SNAPSHOT, post(snapshot))
        .route(path::FORWARD, post(forward))
        .route(path::READ_INDEX, post(read_index))
        .route(path::MEMBERSHIP, post(membership))
        .route(path::STATUS, post(status))
        .route(path::PREVOTE, post(prevote))
        .layer(axum::extract::DefaultBodyLimit::max(RAFT_BODY_LEN_MAX))
        .with_state(cluster)
}

pub fn reply<T: Serialize>(value: &T) -> Response {
    match encode(value) {
        Ok(bytes) => (StatusCode::OK, bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Decodes an envelope and checks that it is meant for this incarnation of this node, from the
/// incarnation of the sender that the cluster registered.
pub fn open<T: DeserializeOwned>(cluster: &Cluster, body: &[u8]) -> Result<T, Response> {
    open_from(cluster, body).map(|(_, body)| body)
}

/// As [`open`], with the id of the node that sent it (checked against its registered data dir).
pub fn open_from<T: DeserializeOwned>(cluster: &Cluster, body: &[u8]) -> Result<(crate::NodeId, T), Response> {
    let env: Envelope<T> = decode(body).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()).into_response())?;
    if env.to != cluster.id {
        return Err((StatusCode::CONFLICT, format!("this is node {}, not node {}", cluster.id, env.to)).into_response());
    }
    if env.to_incarnation.is_some_and(|i| i != cluster.incarnation) {
        return Err((
            StatusCode::CONFLICT,
            format!("node {} has a different data dir than the cluster registered (wiped?)", cluster.id),
        )
            .into_response());
    }
    let registered = cluster.view.load().nodes.get(&env.from).and_then(|n| n.incarnation);
    if registered.is_some_and(|i| i != env.from_incarnation) {
        tracing::warn!(from = env.from, "refused a message from a node whose data dir was replaced");
        return Err(
            (StatusCode::CONFLICT, format!("node {} is registered with another data dir", env.from)).into_response()
        );
    }
    Ok((env.from, env.body))
}

async fn append(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    match open::<AppendEntriesRequest<TypeConfig>>(&c, &body) {
        Ok(req) => {
            let result = c.raft.append_entries(req).await;
            // Accepted as coming from the current leader (not refused for a higher vote).
            if matches!(&result, Ok(r) if !matches!(r, openraft::raft::AppendEntriesResponse::HigherVote(_))) {
                c.leader_contact.record();
            }
            reply(&result)
        }
        Err(r) => r,
    }
}

async fn prevote(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    match open::<crate::prevote::PreVoteRequest>(&c, &body) {
        Ok(req) => reply(&crate::prevote::answer(&c, &req)),
        Err(r) => r,
    }
}

async fn vote(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    match open::<VoteRequest<u64>>(&c, &body) {
        Ok(req) => reply(&c.raft.vote(req).await),
        Err(r) => r,
    }
}

async fn snapshot(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    match open::<InstallSnapshotRequest<TypeConfig>>(&c, &body) {
        Ok(req) => reply(&c.raft.install_snapshot(req).await),
        Err(r) => r,
    }
}

async fn forward(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    match open::<ForwardWrite>(&c, &body) {
        // The leader proposes directly and never forwards again: a stale view answers
        // NotLeader and the original node retries with its fresher view.
        Ok(fw) => reply(&c.write_as_leader(fw.caller, fw.request).await),
        Err(r) => r,
    }
}

async fn read_index(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    match open::<()>(&c, &body) {
        Ok(()) => reply(&c.read_index_as_leader().await),
        Err(r) => r,
    }
}

async fn membership(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    match open::<ForwardMembership>(&c, &body) {
        Ok(fm) => {
            let result: Result<(), LeaderRefusal> = c.change_membership_as_leader(fm.caller, fm.change).await;
            reply(&result)
        }
        Err(r) => r,
    }
}

async fn status(State(c): State<Arc<Cluster>>, body: Bytes) -> Response {
    match open::<()>(&c, &body) {
        Ok(()) => reply(&c.status()),
        Err(r) => r,
    }
}
