//! The one place that chooses client-visible statuses and bodies for refused requests. Bodies
//! are generic: no internal detail, no library error text, and one uniform body for every
//! credential failure, so a caller cannot tell a malformed key from a revoked one.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::upstream::Body;

/// A refused request: the status, the audit reason, and extra response headers.
#[derive(Debug)]
pub struct Deny {
    pub status: StatusCode,
    /// Audit reason, e.g. `malformed`, `revoked`, `forbidden`, `rate_limited`.
    pub reason: &'static str,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Deny {
    pub fn new(status: StatusCode, reason: &'static str) -> Self {
        Self { status, reason, headers: Vec::new() }
    }

    pub fn bad_request(reason: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason)
    }

    /// Every credential failure: missing, malformed, unknown, expired, revoked, rotated.
    pub fn unauthorized(reason: &'static str) -> Self {
        let mut d = Self::new(StatusCode::UNAUTHORIZED, reason);
        d.headers.push((http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        d
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    fn public_code(&self) -> (&'static str, &'static str) {
        match self.status {
            StatusCode::BAD_REQUEST => ("bad_request", "the request is malformed"),
            StatusCode::UNAUTHORIZED => ("unauthorized", "a valid API key is required"),
            StatusCode::FORBIDDEN => ("forbidden", "this key may not access this resource"),
            StatusCode::NOT_FOUND => ("not_found", "no route matches this request"),
            StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
            StatusCode::URI_TOO_LONG => ("uri_too_long", "the request URI is too long"),
            StatusCode::TOO_MANY_REQUESTS => ("rate_limited", "rate limit exceeded; see Retry-After"),
            StatusCode::BAD_GATEWAY => ("bad_gateway", "the upstream failed"),
            StatusCode::GATEWAY_TIMEOUT => ("gateway_timeout", "the upstream did not answer in time"),
            StatusCode::SERVICE_UNAVAILABLE => ("unavailable", "this gateway node cannot serve the request now"),
            _ => ("error", "the request was refused"),
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let (code, message) = self.public_code();
        let body = format!("{{\"error\":{{\"code\":\"{code}\",\"message\":\"{message}\"}}}}");
        let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in self.headers {
            h.append(name, value);
        }
        resp
    }
}
