//! Admin authentication: `Authorization: Bearer <admin token>`, checked against the replicated
//! token digests. The leader checks again for writes. A token unknown here is looked up again
//! after one ReadIndex round trip, so a token created through any node works on every node at once.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use super::{AdminState, ApiError};

/// Longest token accepted; anything longer is refused before hashing.
const ADMIN_TOKEN_LEN_MAX: usize = 1024;

pub struct AdminCaller {
    /// SHA-256 of the presented token.
    pub digest: [u8; 32],
}

impl<S> FromRequestParts<S> for AdminCaller
where
    S: Send + Sync,
    AdminState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = AdminState::from_ref(state);
        let mut values = parts.headers.get_all(axum::http::header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(ApiError::unauthorized());
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .filter(|t| !t.is_empty() && t.len() <= ADMIN_TOKEN_LEN_MAX)
            .ok_or_else(ApiError::unauthorized)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // A token just created through another node may not be applied here yet: before
        // refusing, catch up with the leader's commit index once (one round trip) and look again.
        let known = state.cluster.is_admin(&digest)
            || (state.cluster.read_barrier_once().await.is_ok() && state.cluster.is_admin(&digest));
        if !known {
            return Err(ApiError::unauthorized());
        }
        Ok(Self { digest })
    }
}
