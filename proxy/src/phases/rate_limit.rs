//! Phase 5, rate-limit: every policy the route names, charged to its subject (key, consumer,
//! client IP or route). `global` policies are enforced per node here until the cluster-wide
//! lease mechanism lands (issue 4); the docs say so.

use http::{HeaderName, HeaderValue, StatusCode};

use crate::deny::Deny;
use crate::limits::Limits;
use crate::policy::{LimitSubject, Policy, Route};

pub struct Subjects<'a> {
    pub key_id: Option<&'a str>,
    pub consumer: Option<&'a str>,
    pub client_ip: &'a str,
}

/// Charges every limit of the route; the first one exceeded refuses the request.
/// Returns the tightest limit for the `RateLimit-Limit` header of an admitted response.
pub fn check(limits: &Limits, policy: &Policy, route: &Route, s: &Subjects<'_>) -> Result<Option<u64>, Deny> {
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
        if let Err(e) = limits.check(p, subject) {
            let retry_s = e.retry_after.as_secs_f64().ceil().max(1.0) as u64;
            return Err(Deny::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited")
                .with_header(http::header::RETRY_AFTER, HeaderValue::from(retry_s))
                .with_header(HeaderName::from_static("ratelimit-limit"), HeaderValue::from(e.limit))
                .with_header(HeaderName::from_static("ratelimit-remaining"), HeaderValue::from(0u64))
                .with_header(HeaderName::from_static("ratelimit-reset"), HeaderValue::from(retry_s))
                .with_header(
                    HeaderName::from_static("ratelimit-policy"),
                    HeaderValue::from_str(&format!("{};w={}", e.limit, e.window_s))
                        .unwrap_or(HeaderValue::from_static("")),
                ));
        }
        tightest = Some(tightest.map_or(p.limit, |t| t.min(p.limit)));
    }
    Ok(tightest)
}
