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

/// Puts every error the admin API answers in its JSON form, also those axum produces on its own:
/// a query string or path segment its extractors cannot parse (plain text), a method the path
/// does not serve (405, empty). Headers such as `Allow` are kept. Schemathesis found the plain
/// text 400s against docs/openapi.json.
pub async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let code = match status {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { text };
    let mut out = ApiError::new(status, code, message).into_response();
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().append(name, value.clone());
        }
    }
    out
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
