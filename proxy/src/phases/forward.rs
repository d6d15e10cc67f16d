//! Phase 6, forward: send the request (canonical path, cleaned headers, identity headers,
//! streaming body) to an upstream of the route and stream the answer back.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Frame, Incoming, SizeHint};

use crate::deny::Deny;
use crate::upstream::{Body, BoxError, Upstreams};

pub struct Outbound {
    pub method: Method,
    pub path_and_query: String,
    pub headers: http::HeaderMap,
    /// `None` for a request without a body, which makes it safe to retry on connect failure.
    pub body: Option<Incoming>,
    pub body_len_max: u64,
    /// The whole request body must arrive within this time (a body trickled a byte at a time
    /// gets 408 instead of holding a connection and an upstream request open).
    pub body_read_timeout: Duration,
}

/// The request body did not arrive within its deadline.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within its deadline")]
pub struct BodyTimeout;

/// A request body with a deadline for the whole of it.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether an error's chain holds a [`BodyTimeout`].
fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<BodyTimeout>().is_some() {
            return true;
        }
        cur = err.source();
    }
    false
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
    let deadline = out.body_read_timeout;
    let mut body = out.body.map(|b| {
        let limited = http_body_util::Limited::new(b, out.body_len_max as usize).map_err(BoxError::from).boxed();
        DeadlineBody { inner: limited, deadline: Box::pin(tokio::time::sleep(deadline)) }.boxed()
    });
    // One retry at most, and only for requests that cannot have reached the upstream.
    let attempts = if retryable { order.len().min(2) } else { 1 };
    for (i, (base, health)) in order.iter().take(attempts).enumerate() {
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
        match tokio::time::timeout(timeout, upstreams.request(req)).await {
            Err(_) => {
                health.report(base, false);
                return Err(Deny::new(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"));
            }
            Ok(Err(e)) => {
                health.report(base, false);
                let connect = is_connect_error(&e);
                tracing::debug!(upstream = %base, error = %e, connect, "upstream request failed");
                if connect && i + 1 < attempts {
                    continue;
                }
                if is_body_timeout(&e) {
                    // The rest of the body is not worth waiting for: close the connection.
                    return Err(Deny::new(StatusCode::REQUEST_TIMEOUT, "body_timeout")
                        .with_header(http::header::CONNECTION, http::HeaderValue::from_static("close")));
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
                health.report(base, !resp.status().is_server_error());
                let (mut parts, body) = resp.into_parts();
                super::headers::strip_hop_by_hop(&mut parts.headers);
                return Ok(Response::from_parts(parts, body.map_err(BoxError::from).boxed()));
            }
        }
    }
    Err(Deny::new(StatusCode::BAD_GATEWAY, "upstream_unreachable"))
}
