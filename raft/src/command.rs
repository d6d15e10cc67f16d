//! What goes into the Raft log and what comes out of applying it.

use serde::{Deserialize, Serialize};

use crate::operations::{
    AcquireQuota, AlertDone, BootstrapAdminToken, CreateKey, CreateKeys, DeleteAlert, DeleteConsumer, DeleteRateLimit,
    DeleteRole, DeleteRoute, PutAlert, PutAuthGuard, PutConsumer, PutRateLimit, PutRole, PutRoute, RegisterNode,
    RemindKeyExpiry, ReportAuthFailures, RetireNode, RevokeKey, RotateKey,
};
use raftgate_proxy::policy::{ApiKey, Consumer};

/// A unique id per admin request; a retry carries the same id and `apply` answers it from the
/// dedup table instead of applying twice.
pub type RequestId = [u8; 16];

/// One log entry's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub request_id: RequestId,
    /// Stamped by the leader just before it proposes; the state machine's only notion of time.
    pub ts_ms: u64,
    pub op: Op,
}

/// Every replicated operation; each lives in its own file under `operations/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    PutConsumer(PutConsumer),
    DeleteConsumer(DeleteConsumer),
    PutRole(PutRole),
    DeleteRole(DeleteRole),
    PutRoute(PutRoute),
    DeleteRoute(DeleteRoute),
    PutRateLimit(PutRateLimit),
    DeleteRateLimit(DeleteRateLimit),
    CreateKey(CreateKey),
    CreateKeys(CreateKeys),
    RevokeKey(RevokeKey),
    RotateKey(RotateKey),
    BootstrapAdminToken(BootstrapAdminToken),
    RegisterNode(RegisterNode),
    RetireNode(RetireNode),
    AcquireQuota(AcquireQuota),
    PutAlert(PutAlert),
    DeleteAlert(DeleteAlert),
    AlertDone(AlertDone),
    PutAuthGuard(PutAuthGuard),
    ReportAuthFailures(ReportAuthFailures),
    RemindKeyExpiry(RemindKeyExpiry),
}

impl Op {
    /// The operation's name: what an idempotency key is bound to besides the caller, so a key
    /// reused for another kind of write can never be answered with that write's outcome.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::PutConsumer(_) => "put_consumer",
            Op::DeleteConsumer(_) => "delete_consumer",
            Op::PutRole(_) => "put_role",
            Op::DeleteRole(_) => "delete_role",
            Op::PutRoute(_) => "put_route",
            Op::DeleteRoute(_) => "delete_route",
            Op::PutRateLimit(_) => "put_rate_limit",
            Op::DeleteRateLimit(_) => "delete_rate_limit",
            Op::CreateKey(_) => "create_key",
            Op::CreateKeys(_) => "create_keys",
            Op::RevokeKey(_) => "revoke_key",
            Op::RotateKey(_) => "rotate_key",
            Op::BootstrapAdminToken(_) => "bootstrap_admin_token",
            Op::RegisterNode(_) => "register_node",
            Op::RetireNode(_) => "retire_node",
            Op::AcquireQuota(_) => "acquire_quota",
            Op::PutAlert(_) => "put_alert",
            Op::DeleteAlert(_) => "delete_alert",
            Op::AlertDone(_) => "alert_done",
            Op::PutAuthGuard(_) => "put_auth_guard",
            Op::ReportAuthFailures(_) => "report_auth_failures",
            Op::RemindKeyExpiry(_) => "remind_key_expiry",
        }
    }

    /// Operations a node may propose for itself, without an admin token.
    pub fn is_node_internal(&self) -> bool {
        matches!(
            self,
            Op::BootstrapAdminToken(_)
                | Op::RegisterNode(_)
                | Op::RetireNode(_)
                | Op::AcquireQuota(_)
                | Op::AlertDone(_)
                | Op::ReportAuthFailures(_)
                | Op::RemindKeyExpiry(_)
        )
    }

    /// Operations that give access (a new key, consumer or route); their callers wait, briefly,
    /// until every reachable node applied them, so what a 201 created works on every healthy
    /// node at once.
    pub fn grants_access(&self) -> bool {
        matches!(self, Op::CreateKey(_) | Op::CreateKeys(_) | Op::PutConsumer(_) | Op::PutRoute(_))
    }

    /// Operations that take access away; their callers wait until every node applied them.
    pub fn narrows_access(&self) -> bool {
        matches!(self, Op::RevokeKey(_) | Op::DeleteConsumer(_) | Op::DeleteRole(_) | Op::PutRole(_) | Op::RotateKey(_))
    }
}

/// The result of applying one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Ok(Outcome),
    Err(OpError),
}

impl Default for Response {
    /// Blank and membership entries answer with this.
    fn default() -> Self {
        Response::Ok(Outcome::Done)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Done,
    /// `true` when the entity was created rather than replaced.
    Put {
        created: bool,
    },
    Consumer(Consumer),
    Key(ApiKey),
    /// One grant per ask of an [`AcquireQuota`], in order (asks for unknown policies are skipped).
    Quota(Vec<raftgate_proxy::global::Grant>),
}

/// A deterministic refusal: every node reaches the same one for the same entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct OpError {
    pub code: OpErrorCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpErrorCode {
    NotFound,
    Conflict,
    Invalid,
}

impl OpError {
    pub fn not_found(message: impl Into<String>) -> Self {
        Self { code: OpErrorCode::NotFound, message: message.into() }
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self { code: OpErrorCode::Conflict, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self { code: OpErrorCode::Invalid, message: message.into() }
    }
}
