//! Phase 5, rate-limit: every policy the route names, charged to its subject (key, consumer,
//! client IP or route), in the order the route lists them. `local` policies are per-node
//! governor limiters ([`crate::limits`]); `global` ones spend tokens this node holds under
//! quota leases granted through Raft ([`crate::global`]), waiting (at most `wait_max`) only
//! when this node holds none for the subject yet.

use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue, StatusCode};

use crate::deny::Deny;
use crate::global::Take;
use crate::limits::Limits;
use crate::policy::{LimitMode, LimitSubject, Policy, Route};

pub struct Subjects<'a> {
    pub key_id: Option<&'a str>,
    pub consumer: Option<&'a str>,
    pub client_ip: &'a str,
}

/// Charges every limit of the route; the first one exceeded refuses the request.
/// Returns the tightest limit for the `RateLimit-Limit` header of an admitted response.
pub async fn check(limits: &Limits, policy: &Policy, route: &Route, s: &Subjects<'_>) -> Result<Option<u64>, Deny> {
    let mut tightest: Option<u64> = None;
    for name in &route.rate_limits {
        let Some(p) = policy.rate_limits.get(name) else { continue };
        // Without a key, per-key and per-consumer limits fall back to the client IP.
        let subject = match p.per {
            LimitSubject::Key => s.key_id.unwrap_or(s.client_ip),
            LimitSubject::Consumer => s.consumer.unwrap_or(s.client_ip),
            LimitSubject::Ip => s.client_ip,
            LimitSubject::Route => route.name.as_str(),
        };
        match p.mode {
            LimitMode::Local => {
                if let Err(e) = limits.check(p, subject) {
                    return Err(too_many(e.retry_after, e.limit, e.window_s, "rate_limited"));
                }
            }
            LimitMode::Global => global(limits, p, subject).await?,
        }
        tightest = Some(tightest.map_or(p.limit, |t| t.min(p.limit)));
    }
    Ok(tightest)
}

async fn global(limits: &Limits, p: &crate::policy::RateLimitPolicy, subject: &str) -> Result<(), Deny> {
    let g = &limits.global;
    let deadline = Instant::now() + g.config().wait_max;
    // The common case takes tokens without touching the answer channel.
    let mut answers = None;
    loop {
        match g.try_take(p, subject, Instant::now()) {
            Take::Admitted => return Ok(()),
            Take::Refused { retry_after, limit, window_s } => {
                return Err(too_many(retry_after, limit, window_s, "rate_limited"))
            }
            Take::Wait => {
                let Some(rx) = answers.as_mut() else {
                    // Subscribe, then look once more: an answer may have come in between.
                    let mut rx = g.changed();
                    rx.borrow_and_update();
                    answers = Some(rx);
                    continue;
                };
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
                    // No grant in time (no leader reachable, or a slow commit): refuse rather
                    // than guess. The client may retry in a second.
                    return Err(too_many(Duration::from_secs(1), p.limit, p.window_s, "global_limit_unavailable"));
                }
            }
        }
    }
}

fn too_many(retry_after: Duration, limit: u64, window_s: u64, reason: &'static str) -> Deny {
    let retry_s = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    Deny::new(StatusCode::TOO_MANY_REQUESTS, reason)
        .with_header(http::header::RETRY_AFTER, HeaderValue::from(retry_s))
        .with_header(HeaderName::from_static("ratelimit-limit"), HeaderValue::from(limit))
        .with_header(HeaderName::from_static("ratelimit-remaining"), HeaderValue::from(0u64))
        .with_header(HeaderName::from_static("ratelimit-reset"), HeaderValue::from(retry_s))
        .with_header(
            HeaderName::from_static("ratelimit-policy"),
            HeaderValue::from_str(&format!("{limit};w={window_s}")).unwrap_or(HeaderValue::from_static("")),
        )
}
