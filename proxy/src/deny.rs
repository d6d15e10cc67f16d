//! The one place that chooses client-visible statuses and bodies for refused requests. Bodies
//! are generic: no internal detail, no library error text, and one uniform body for every
//! credential failure, so a caller cannot tell a malformed key from a revoked one.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::fields::Fields;
use crate::reply::Reply;

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

    /// The client-visible body for this status: a constant, so a refusal (the whole of an
    /// invalid-key flood) formats and allocates nothing for it.
    fn public_body(&self) -> &'static str {
        macro_rules! body {
            ($code:literal, $message:literal) => {
                concat!("{\"error\":{\"code\":\"", $code, "\",\"message\":\"", $message, "\"}}")
            };
        }
        match self.status {
            StatusCode::BAD_REQUEST => body!("bad_request", "the request is malformed"),
            StatusCode::UNAUTHORIZED => body!("unauthorized", "a valid API key is required"),
            StatusCode::FORBIDDEN => body!("forbidden", "this key may not access this resource"),
            StatusCode::NOT_FOUND => body!("not_found", "no route matches this request"),
            StatusCode::PAYLOAD_TOO_LARGE => body!("payload_too_large", "the request body is too large"),
            StatusCode::URI_TOO_LONG => body!("uri_too_long", "the request URI is too long"),
            StatusCode::TOO_MANY_REQUESTS => body!("rate_limited", "rate limit exceeded; see Retry-After"),
            StatusCode::BAD_GATEWAY => body!("bad_gateway", "the upstream failed"),
            StatusCode::GATEWAY_TIMEOUT => body!("gateway_timeout", "the upstream did not answer in time"),
            StatusCode::SERVICE_UNAVAILABLE => body!("unavailable", "this gateway node cannot serve the request now"),
            _ => body!("error", "the request was refused"),
        }
    }

    pub fn into_reply(self) -> Reply {
        let body = Bytes::from_static(self.public_body().as_bytes());
        let mut fields = Fields::with_capacity(self.headers.len() + 1);
        fields.append(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in self.headers {
            fields.append(name, value);
        }
        Reply::new(self.status, fields, Full::new(body).map_err(|never| match never {}).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_body_is_the_documented_json() {
        for status in [400, 401, 403, 404, 408, 413, 414, 429, 431, 502, 503, 504] {
            let deny = Deny::new(StatusCode::from_u16(status).unwrap(), "x");
            let body: serde_json::Value = serde_json::from_str(deny.public_body()).unwrap();
            let error = &body["error"];
            assert!(error["code"].is_string() && error["message"].is_string(), "{status}: {body}");
            assert_eq!(body.as_object().unwrap().len(), 1, "{status}: {body}");
        }
        assert_eq!(
            Deny::unauthorized("revoked").public_body(),
            r#"{"error":{"code":"unauthorized","message":"a valid API key is required"}}"#
        );
    }
}
