//! Phase 6, forward: send the request (canonical path, cleaned headers, identity headers,
//! streaming body) to an upstream of the route and stream the answer back.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};

use crate::deny::Deny;
use crate::fields::Fields;
use crate::reply::Reply;
use crate::upstream::wire::{Head, WireError};
use crate::upstream::{Body, BoxError, SendError, Upstreams};

pub struct Outbound<'a> {
    pub method: Method,
    pub path_and_query: &'a str,
    /// The client's headers, as received: what goes upstream is filtered as the head is written.
    pub headers: &'a Fields,
    /// The gateway's own headers (identity, `X-Forwarded-*`).
    pub added: Added<'a>,
    /// `None` for a request without a body, which makes it safe to retry on connect failure.
    pub body: Option<crate::server::ClientBody>,
    /// A WebSocket handshake: sent on a connection of its own, whose 101 answer becomes a
    /// tunnel (`crate::tunnel`).
    pub upgrade: bool,
    pub body_len_max: u64,
    /// The whole request body must arrive within this time (a body trickled a byte at a time
    /// gets 408 instead of holding a connection and an upstream request open).
    pub body_read_timeout: Duration,
}

/// The most headers the gateway adds: `X-Forwarded-For`, `-Proto` and `-Host`, the three
/// identity headers, and `Connection` and `Upgrade` for a WebSocket handshake.
pub const ADDED_MAX: usize = 8;

/// The gateway's own headers for one request, held on the stack (a `Vec` here was one more
/// allocation per request).
pub struct Added<'a> {
    fields: [(&'static http::HeaderName, &'a str); ADDED_MAX],
    len: usize,
}

impl<'a> Added<'a> {
    pub fn new() -> Self {
        Self { fields: [(&crate::phases::headers::X_FORWARDED_FOR, ""); ADDED_MAX], len: 0 }
    }

    /// Adds a header. Panics past [`ADDED_MAX`], which only a new header the gateway sets
    /// without raising the bound could reach.
    pub fn push(&mut self, name: &'static http::HeaderName, value: &'a str) {
        self.fields[self.len] = (name, value);
        self.len += 1;
    }

    pub fn as_slice(&self) -> &[(&'static http::HeaderName, &'a str)] {
        &self.fields[..self.len]
    }
}

impl Default for Added<'_> {
    fn default() -> Self {
        Self::new()
    }
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

/// The timer an exchange with an upstream is bounded by, kept by the client connection from
/// one request to the next ([`crate::gateway::Carried`]).
///
/// A `tokio::time::timeout` per request put a new entry into the runtime's timer wheel and
/// took it out again as the request ended: about 600 instructions a proxied request
/// (docs/benchmarks.md, session 27). Kept, the timer is only moved: tokio moves an entry to a
/// later deadline by updating it in place, and re-files it only if its old deadline passes
/// first (an idle connection's task is then woken once, for nothing). Each exchange is still
/// bounded from the moment it starts, as before.
#[derive(Default)]
pub struct ExchangeTimer(Option<Pin<Box<tokio::time::Sleep>>>);

impl ExchangeTimer {
    /// Bounds `fut` to `limit` from now: `None` if the time ran out first. The work is polled
    /// first, as `tokio::time::timeout` does, so that an answer ready when the time is up still
    /// counts. `fut` is polled where the caller pinned it: moved into a future of its own, the
    /// exchange's state (the largest part of a request's) was copied twice more a request.
    fn bound<'a, F: Future>(
        &'a mut self,
        limit: Duration,
        mut fut: Pin<&'a mut F>,
    ) -> impl Future<Output = Option<F::Output>> + 'a {
        let deadline = tokio::time::Instant::now() + limit;
        match &mut self.0 {
            Some(t) => t.as_mut().reset(deadline),
            None => self.0 = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        let timer = self.0.as_mut().expect("set above");
        std::future::poll_fn(move |cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            timer.as_mut().poll(cx).map(|()| None)
        })
    }
}

/// `now_mono_ms` is the request's start on the monotonic clock ([`crate::clock::mono_ms_at`]),
/// for the upstreams' ejections and the pool's idle ages. Each attempt gets `timeout`, timed
/// with the connection's `timer`.
pub async fn forward(
    upstreams: &Upstreams,
    now_mono_ms: u64,
    route: &str,
    targets: &[String],
    out: Outbound<'_>,
    timeout: Duration,
    timer: &mut ExchangeTimer,
) -> Result<Reply, Deny> {
    let order = upstreams.order(route, targets, now_mono_ms);
    let retryable = out.body.is_none() && is_idempotent(&out.method);
    let deadline = out.body_read_timeout;
    let mut body = out.body.map(|b| {
        let limited = http_body_util::Limited::new(b, out.body_len_max as usize).map_err(BoxError::from).boxed();
        DeadlineBody { inner: limited, deadline: Box::pin(tokio::time::sleep(deadline)) }.boxed()
    });
    // One retry at most, and only for requests that cannot have reached the upstream.
    let attempts = if retryable { order.iter().flatten().count() } else { 1 };
    let head = Head {
        method: &out.method,
        path_and_query: out.path_and_query,
        headers: out.headers,
        added: out.added.as_slice(),
    };
    for (i, target) in order.iter().flatten().take(attempts).enumerate() {
        let sent = std::pin::pin!(async {
            if out.upgrade {
                upstreams.switch(target, &head).await
            } else {
                upstreams.send(target, &head, body.take(), retryable, now_mono_ms).await
            }
        });
        match timer.bound(timeout, sent).await {
            None => {
                target.report(false);
                return Err(Deny::new(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"));
            }
            Some(Err(SendError::BadTarget)) => return Err(Deny::new(StatusCode::BAD_GATEWAY, "bad_upstream_uri")),
            // The client's body failed, not the upstream: its health is unchanged.
            Some(Err(SendError::Wire(WireError::RequestBody(e)))) => {
                if is_body_timeout(&*e) {
                    // The rest of the body is not worth waiting for: close the connection.
                    return Err(Deny::new(StatusCode::REQUEST_TIMEOUT, "body_timeout")
                        .with_header(http::header::CONNECTION, http::HeaderValue::from_static("close")));
                }
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    return Err(Deny::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"));
                }
                tracing::debug!(error = %e, "request body failed");
                return Err(Deny::bad_request("body_incomplete")
                    .with_header(http::header::CONNECTION, http::HeaderValue::from_static("close")));
            }
            Some(Err(e)) => {
                target.report(false);
                let connect = matches!(e, SendError::Connect(_));
                tracing::debug!(upstream = %target.url, error = %e, connect, "upstream request failed");
                if connect && i + 1 < attempts {
                    continue;
                }
                return Err(Deny::new(
                    StatusCode::BAD_GATEWAY,
                    if connect { "upstream_unreachable" } else { "upstream_error" },
                ));
            }
            // Hop-by-hop headers were left out as the response head was read.
            Some(Ok(resp)) => {
                target.report(!resp.status.is_server_error());
                return Ok(resp);
            }
        }
    }
    Err(Deny::new(StatusCode::BAD_GATEWAY, "upstream_unreachable"))
}

#[cfg(test)]
mod tests {
    use std::future::pending;
    use std::pin::pin;
    use std::time::Instant;

    use super::*;

    /// One timer, kept across exchanges, bounds each from its own start: it runs out no
    /// earlier than the limit, works again once it has run out, and a later exchange is
    /// not cut off at an earlier one's deadline. (Timers never fire early, and the work is
    /// polled before the timer, so a stalled machine cannot fail these.)
    #[tokio::test(flavor = "current_thread")]
    async fn a_kept_timer_bounds_each_exchange_from_its_own_start() {
        let mut timer = ExchangeTimer::default();
        let limit = Duration::from_millis(300);

        let start = Instant::now();
        assert_eq!(timer.bound(limit, pin!(pending::<()>())).await, None, "an upstream that never answers");
        assert!(start.elapsed() >= limit);

        // Run out, then set again: an answer in time counts.
        assert_eq!(timer.bound(limit, pin!(async { 7 })).await, Some(7));

        // Set at t = 0 for t = 300 ms by an exchange that answered at once; the next one
        // starts at t = 200 ms and answers at t = 350 ms, inside its own 300 ms.
        let first = Instant::now();
        assert_eq!(timer.bound(limit, pin!(async { 1 })).await, Some(1));
        tokio::time::sleep_until((first + Duration::from_millis(200)).into()).await;
        let slow = async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            2
        };
        assert_eq!(timer.bound(limit, pin!(slow)).await, Some(2), "cut off at the earlier exchange's deadline");

        let start = Instant::now();
        assert_eq!(timer.bound(limit, pin!(pending::<()>())).await, None);
        assert!(start.elapsed() >= limit);
    }
}
