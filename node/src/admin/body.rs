//! Request bodies and query strings, with errors in the API's JSON form.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::ApiError;

/// A JSON body; malformed JSON, wrong types and unknown fields are all a 400 that says which.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), "bad_request", e.body_text()))?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    pub consistency: Option<String>,
}

/// Makes the read linearizable unless the caller asked for `?consistency=stale`.
pub async fn read_barrier(state: &super::AdminState, q: &ReadQuery) -> Result<(), ApiError> {
    match q.consistency.as_deref() {
        None | Some("linearizable") => Ok(state.cluster.read_barrier().await?),
        Some("stale") => Ok(()),
        Some(other) => Err(ApiError::bad_request(format!("consistency={other}: use \"stale\" or \"linearizable\""))),
    }
}

/// Parses a path segment as a name, or answers 400.
pub fn name(s: &str) -> Result<raftgate_proxy::policy::Name, ApiError> {
    raftgate_proxy::policy::Name::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))
}
