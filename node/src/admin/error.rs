//! The one place that maps errors to admin API statuses and `{"error": {"code", "message"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use raftgate_raft::cluster::ClusterError;
use raftgate_raft::command::{OpError, OpErrorCode};

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid admin token is required: Authorization: Bearer <token>",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        match e.code {
            OpErrorCode::NotFound => Self::new(StatusCode::NOT_FOUND, "not_found", e.message),
            OpErrorCode::Conflict => Self::new(StatusCode::CONFLICT, "conflict", e.message),
            OpErrorCode::Invalid => Self::bad_request(e.message),
        }
    }
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::Forbidden => Self::new(StatusCode::FORBIDDEN, "forbidden", "the leader refused this caller"),
            ClusterError::NoLeader => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "no_leader", "no leader is reachable; retry shortly")
            }
            ClusterError::Timeout(m) => Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", m),
            ClusterError::Invalid(m) => Self::bad_request(m),
            ClusterError::Unavailable(m) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m),
        }
    }
}
