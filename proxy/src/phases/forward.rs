//! Phase 6, forward: send the request (canonical path, cleaned headers, identity headers,
//! streaming body) to an upstream of the route and stream the answer back.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;

use crate::deny::Deny;
use crate::upstream::{Body, BoxError, Upstreams};

pub struct Outbound {
    pub method: Method,
    pub path_and_query: String,
    pub headers: http::HeaderMap,
    /// `None` for a request without a body, which makes it safe to retry on connect failure.
    pub body: Option<Incoming>,
    pub body_len_max: u64,
}

fn is_idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

fn is_connect_error(e: &hyper_util::client::legacy::Error) -> bool {
    e.is_connect()
}

pub async fn forward(
    upstreams: &Upstreams,
    route: &str,
    targets: &[String],
    out: Outbound,
    timeout: Duration,
) -> Result<Response<Body>, Deny> {
    let order = upstreams.order(route, targets);
    let retryable = out.body.is_none() && is_idempotent(&out.method);
    let mut headers = out.headers;
    let mut body =
        out.body.map(|b| http_body_util::Limited::new(b, out.body_len_max as usize).map_err(BoxError::from).boxed());
    // One retry at most, and only for requests that cannot have reached the upstream.
    let attempts = if retryable { order.len().min(2) } else { 1 };
    for (i, base) in order.iter().take(attempts).enumerate() {
        let uri: Uri = format!("{}{}", base.trim_end_matches('/'), out.path_and_query)
            .parse()
            .map_err(|_| Deny::new(StatusCode::BAD_GATEWAY, "bad_upstream_uri"))?;
        let b: Body = body.take().unwrap_or_else(|| Empty::new().map_err(|never| match never {}).boxed());
        let mut req = Request::builder().method(out.method.clone()).uri(uri);
        if let Some(h) = req.headers_mut() {
            // Only a request that may be retried keeps a copy of its headers.
            *h = if i + 1 < attempts { headers.clone() } else { std::mem::take(&mut headers) };
        }
        let req = req.body(b).map_err(|_| Deny::new(StatusCode::BAD_GATEWAY, "bad_upstream_request"))?;
        match tokio::time::timeout(timeout, upstreams.client().request(req)).await {
            Err(_) => {
                upstreams.report(base, false);
                return Err(Deny::new(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"));
            }
            Ok(Err(e)) => {
                upstreams.report(base, false);
                let connect = is_connect_error(&e);
                tracing::debug!(upstream = %base, error = %e, connect, "upstream request failed");
                if connect && i + 1 < attempts {
                    continue;
                }
                // A body over the limit surfaces here as a send error.
                if std::error::Error::source(&e).is_some_and(|s| s.to_string().contains("length limit exceeded")) {
                    return Err(Deny::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"));
                }
                return Err(Deny::new(
                    StatusCode::BAD_GATEWAY,
                    if connect { "upstream_unreachable" } else { "upstream_error" },
                ));
            }
            Ok(Ok(resp)) => {
                upstreams.report(base, !resp.status().is_server_error());
                let (mut parts, body) = resp.into_parts();
                super::headers::strip_hop_by_hop(&mut parts.headers);
                return Ok(Response::from_parts(parts, body.map_err(BoxError::from).boxed()));
            }
        }
    }
    Err(Deny::new(StatusCode::BAD_GATEWAY, "upstream_unreachable"))
}
