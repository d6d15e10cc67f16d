//! The gateway: runs every request through the phases and records the decision.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{HeaderValue, StatusCode};

use crate::audit::{AuditEvent, AuditQueue};
use crate::canonical::canonicalize;
use crate::clock::{mono_ms_at, now_ms, now_ms_at};
use crate::deny::Deny;
use crate::fields::Fields;
use crate::limits::Limits;
use crate::metrics::{ProxyMetrics, RequestLabels, RouteLabel};
use crate::phases::authenticate::KeyMemo;
use crate::phases::forward::ExchangeTimer;
use crate::phases::{authenticate, authorize, forward, headers, rate_limit, route};
use crate::policy::{AuthMethod, KeyId, Name, ParsedKey, Policy};
use crate::reply::Reply;
use crate::request::ClientRequest;
use crate::upstream::Upstreams;

/// Data-plane limits and timeouts. Defaults are for a gateway in front of JSON APIs.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub node_id: u64,
    /// Largest request body forwarded (10 MiB).
    pub body_len_max: u64,
    /// Longest request URI (8 KiB, like most servers).
    pub uri_len_max: usize,
    pub upstream_connect_timeout: Duration,
    pub upstream_response_timeout: Duration,
    /// A request body must arrive completely within this time (408 otherwise).
    pub body_read_timeout: Duration,
    /// Peers whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Most header fields in one request (431 beyond). HTTP/1 heads with more never parse
    /// (the server's `headers_max`); HTTP/2 bounds only the header list's size, so a block of
    /// many short fields is counted here.
    pub headers_max: usize,
}

/// What a client connection carries from one request to the next: the key it last proved
/// ([`KeyMemo`]) and the timer its upstream exchanges are bounded by ([`ExchangeTimer`]). An
/// HTTP/1 connection keeps one; each HTTP/2 stream starts with a fresh one.
#[derive(Default)]
pub struct Carried {
    memo: KeyMemo,
    timer: ExchangeTimer,
}

/// Default for the most header fields in one request, on either protocol.
pub const HEADERS_MAX_DEFAULT: usize = 100;

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            body_len_max: 10 * 1024 * 1024,
            uri_len_max: 8 * 1024,
            upstream_connect_timeout: Duration::from_secs(2),
            upstream_response_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            trusted_proxies: Vec::new(),
            headers_max: HEADERS_MAX_DEFAULT,
        }
    }
}

pub struct Gateway {
    pub cfg: GatewayConfig,
    /// Whether this node may vouch for its policy (the freshness lease).
    fresh: Arc<crate::freshness::Freshness>,
    /// The policy published by the state machine; loaded once per request.
    policy: Arc<ArcSwap<Policy>>,
    pub limits: Limits,
    router: route::Router,
    upstreams: Upstreams,
    audit: AuditQueue,
    pub metrics: ProxyMetrics,
}

/// When a request is decided: its start on the monotonic clock, and the same moment on the wall
/// clock ([`now_ms_at`]), read once for every phase.
#[derive(Clone, Copy)]
struct Moment {
    started: Instant,
    now: u64,
}

/// Who sent a request: the client's address ([`headers::client_ip`]) and its text, formatted once
/// for the rate-limit subject, X-Forwarded-For and the audit event.
#[derive(Clone, Copy)]
struct Client<'a> {
    ip: IpAddr,
    text: &'a str,
}

/// What the phases learned, for the audit event.
#[derive(Default)]
struct Facts {
    route: Option<Name>,
    key_id: Option<String>,
    consumer: Option<Name>,
    path: String,
    /// The target as sent, when it is not `path` (see [`AuditEvent::raw_path`]).
    raw_path: Option<String>,
    /// Served on last known policy while stale (routes with `serve_stale` only).
    stale: bool,
}

impl Gateway {
    pub fn new(
        cfg: GatewayConfig,
        policy: Arc<ArcSwap<Policy>>,
        fresh: Arc<crate::freshness::Freshness>,
        audit: AuditQueue,
    ) -> Self {
        let upstreams = Upstreams::new(cfg.upstream_connect_timeout);
        Self {
            cfg,
            fresh,
            policy,
            limits: Limits::new(),
            router: route::Router::default(),
            upstreams,
            audit,
            metrics: ProxyMetrics::new(),
        }
    }

    pub fn audit_queue(&self) -> &AuditQueue {
        &self.audit
    }

    /// Handles one request end to end. Never fails: every outcome is a response. `carried`
    /// is what the request's connection kept from its requests before ([`Carried`]).
    pub async fn handle(&self, req: ClientRequest, peer: SocketAddr, carried: &mut Carried) -> Reply {
        let started = Instant::now();
        // The clock is read once: the decision's time (`started` on the wall clock; also when
        // freshness is judged), and (plus the latency) the event's.
        let now = now_ms_at(started);
        let policy = self.policy.load_full();
        let client_ip = headers::client_ip(peer, &req.fields, &self.cfg.trusted_proxies);
        let method = method_name(&req.method);
        // A request refused before its path was canonicalised is audited with the path as sent
        // (cut to 512 characters); taken only then, from this cheap copy of the URI.
        let uri = req.uri.clone();
        let mut facts = Facts::default();
        // Formatted once: the rate-limit subject, X-Forwarded-For and the audit event share it.
        let ip = headers::ip_text(client_ip);
        let when = Moment { started, now };
        let client = Client { ip: client_ip, text: &ip };
        let (mut resp, reason) = match self.run(req, &policy, when, client, &mut facts, carried).await {
            Ok(resp) if facts.stale => (resp, "ok_stale_policy"),
            Ok(resp) => (resp, "ok"),
            Err(deny) => {
                match deny.status {
                    StatusCode::UNAUTHORIZED => self.metrics.auth_failures.inc(),
                    StatusCode::TOO_MANY_REQUESTS => self.metrics.rate_limited.inc(),
                    _ => 0,
                };
                let reason = deny.reason;
                (deny.into_reply(), reason)
            }
        };
        if facts.path.is_empty() {
            facts.path = cut(uri.path());
        }
        let decision = if reason.starts_with("ok") { "allow" } else { "deny" };
        let status = resp.status.as_u16();
        let elapsed = started.elapsed();
        self.metrics.count_request(RequestLabels { route: RouteLabel(facts.route.clone()), decision, status });
        self.metrics.latency_seconds.observe(elapsed);
        let event = AuditEvent {
            ts_ms: now + elapsed.as_millis() as u64,
            node_id: self.cfg.node_id,
            kind: Cow::Borrowed("access"),
            decision: Cow::Borrowed(decision),
            reason: Cow::Borrowed(reason),
            key_id: facts.key_id,
            consumer: facts.consumer.as_ref().map(Name::shared),
            route: facts.route.as_ref().map(Name::shared),
            method,
            path: facts.path,
            raw_path: facts.raw_path,
            status,
            latency_us: elapsed.as_micros() as u64,
            client_ip: ip,
            policy_version: policy.version,
            bytes_in: None,
            bytes_out: None,
        };
        if status == 101 {
            resp.tunnel_audit = Some(Box::new(event.clone()));
        }
        self.audit.record(event);
        resp
    }

    /// Records the end of a WebSocket tunnel: the handshake's event again, with how the tunnel
    /// ended, how long it lasted and the bytes it carried each way.
    pub fn tunnel_closed(&self, handshake: AuditEvent, closed: crate::tunnel::Closed) {
        let mut e = handshake;
        e.ts_ms = now_ms();
        e.reason = Cow::Borrowed(closed.reason);
        e.latency_us = closed.lasted.as_micros() as u64;
        e.bytes_in = Some(closed.bytes_in);
        e.bytes_out = Some(closed.bytes_out);
        self.audit.record(e);
    }

    async fn run(
        &self,
        req: ClientRequest,
        policy: &Policy,
        when: Moment,
        client: Client<'_>,
        facts: &mut Facts,
        carried: &mut Carried,
    ) -> Result<Reply, Deny> {
        let Moment { started, now } = when;
        let Client { ip: client_ip, text: ip } = client;
        // An IP the cluster blocked for guessing credentials gets nothing, on any node.
        if !policy.blocked_ips.is_empty() {
            if let Some(until) = policy.blocked_ips.get(&client_ip).copied().filter(|u| *u > now) {
                let retry_s = (until - now).div_ceil(1000);
                return Err(Deny::new(StatusCode::FORBIDDEN, "ip_blocked")
                    .with_header(http::header::RETRY_AFTER, HeaderValue::from(retry_s)));
            }
        }
        let ClientRequest { method, uri, version, fields, body, over_tls, switchable, target_with_fragment } = req;
        // Phase 1: canonicalise (framing first: smuggling attempts never get further).
        let declared = check_framing(&fields, version)?;
        // A fragment is the client's own business (RFC 9110 §4.2.5) and never part of a
        // request-target: one that arrives is refused, not dropped, so that no reading of
        // `/public#/../admin` can differ from the one decided on (CVE-2021-32779). Only the
        // HTTP/1 leg sees the raw target; HTTP/2's `:path` reaches us with it already cut.
        if let Some(raw) = target_with_fragment {
            facts.raw_path = Some(cut(&String::from_utf8_lossy(&raw)));
            return Err(Deny::bad_request("fragment_in_target"));
        }
        if fields.len() > self.cfg.headers_max {
            return Err(Deny::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "too_many_headers"));
        }
        // HTTP/1 requests come in origin form; an absolute-form target is refused (a proxy
        // request, or a smuggling attempt). HTTP/2 always carries :scheme and :authority, which
        // hyper puts in the URI: those are the request's own, not an absolute form.
        if version < http::Version::HTTP_2 && (uri.scheme().is_some() || uri.authority().is_some()) {
            return Err(Deny::bad_request("absolute_form"));
        }
        if uri.path_and_query().map_or(0, |p| p.as_str().len()) > self.cfg.uri_len_max {
            return Err(Deny::new(StatusCode::URI_TOO_LONG, "uri_too_long"));
        }
        let canon = canonicalize(uri.path()).map_err(|e| Deny::bad_request(e.reason()))?;
        if canon != uri.path() {
            facts.raw_path = Some(cut(uri.path()));
        }
        // The audit event's path and what the later phases read: one string, not two.
        facts.path = canon;
        let canon: &str = &facts.path;
        let mut hosts = fields.get_all(&http::header::HOST);
        let (h1, h2) = (hosts.next(), hosts.next());
        if h2.is_some() {
            return Err(Deny::bad_request("duplicate_host"));
        }
        // The host, lowercased only when it is not already.
        let host: Option<Cow<'_, str>> = match (uri.authority(), h1) {
            (Some(a), Some(h)) if h != a.as_str().as_bytes() => return Err(Deny::bad_request("host_mismatch")),
            (Some(a), _) => Some(lowercase(a.host())),
            (None, Some(h)) => {
                let h = crate::fields::text(h).ok_or_else(|| Deny::bad_request("bad_host"))?;
                if h.contains('@') {
                    return Err(Deny::bad_request("bad_host"));
                }
                Some(lowercase(h.rsplit_once(':').map_or(h, |(name, port)| {
                    if port.bytes().all(|b| b.is_ascii_digit()) {
                        name
                    } else {
                        h
                    }
                })))
            }
            (None, None) => None,
        };

        // Phase 2: route.
        let route = self
            .router
            .find(policy, host.as_deref(), method.as_str(), canon)
            .ok_or_else(|| Deny::new(StatusCode::NOT_FOUND, "no_route"))?;
        facts.route = Some(route.name.clone());

        // Fail closed when this node cannot vouch for its policy: a revoke it has not seen may
        // already have returned elsewhere. Routes that opted into serve_stale go on, and their
        // audit events say so.
        if !self.fresh.is_fresh_at(started) {
            if !route.serve_stale {
                return Err(Deny::new(StatusCode::SERVICE_UNAVAILABLE, "stale")
                    .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
            facts.stale = true;
        }

        // Phase 3: authenticate.
        let presented = authenticate::credential(&fields)?;
        let anonymous_ok = route.auth.contains(&AuthMethod::None);
        // Keys are judged never earlier than the cluster's agreed time: a node restarted with
        // its clock set back still expires keys no later than the leader's clock says.
        let key_time = now.max(policy.time_ms);
        let caller = match presented {
            None if anonymous_ok => None,
            None => return Err(self.auth_failed(policy, client_ip, None, Deny::unauthorized("missing"))),
            Some(raw) => match authenticate::authenticate_remembered(policy, raw, key_time, &mut carried.memo) {
                Ok(c) => Some(c),
                Err(d) => {
                    // A known key refused (wrong secret, revoked, expired, rotated out) is
                    // counted against that key too; malformed and unknown ids are not.
                    let known = (policy.auth_guard.is_some() && d.reason != "malformed")
                        .then(|| ParsedKey::parse(raw).ok())
                        .flatten()
                        .map(|k| k.key_id())
                        .filter(|id| policy.keys.contains_key(id));
                    return Err(self.auth_failed(policy, client_ip, known.as_ref().map(KeyId::as_str), d));
                }
            },
        };
        if let Some(c) = &caller {
            // `as_str`, not `to_string`: Display would go through core::fmt.
            facts.key_id = Some(c.key.id.as_str().to_owned());
            facts.consumer = Some(c.consumer.name.clone());
        }

        // Phase 4: authorize.
        if let Some(c) = &caller {
            authorize::authorize(policy, c, method.as_str(), canon)?;
        }

        // Phase 5: rate-limit.
        let subjects = rate_limit::Subjects {
            key_id: facts.key_id.as_deref(),
            consumer: facts.consumer.as_ref().map(Name::as_str),
            client_ip: ip,
        };
        let tightest = rate_limit::check(&self.limits, policy, route, &subjects).await?;

        // Phase 6: forward.
        if declared.length.is_some_and(|n| n > self.cfg.body_len_max) {
            return Err(Deny::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"));
        }
        let has_body = declared.chunked
            || declared.length_not_zero
            || (version == http::Version::HTTP_2 && !hyper::body::Body::is_end_stream(&body));
        // A WebSocket handshake becomes a tunnel if the upstream agrees; the server leg hands
        // over the client's side of it once the 101 is written.
        let upgrade = switchable && !has_body && wants_websocket(&method, version, &fields);
        // The client's headers go on filtered as the upstream head is written
        // (`headers::Filter::request`); the gateway's own are added there.
        let roles = caller.as_ref().map(authorize::role_names);
        let mut added = forward::Added::new();
        added.push(&headers::X_FORWARDED_FOR, ip);
        added.push(&headers::X_FORWARDED_PROTO, if over_tls { "https" } else { "http" });
        if let Some(h) = &host {
            added.push(&headers::X_FORWARDED_HOST, h);
        }
        if let (Some(c), Some(roles)) = (&caller, &roles) {
            added.push(&headers::X_GATEWAY_CONSUMER, c.consumer.name.as_str());
            added.push(&headers::X_GATEWAY_KEY_ID, &c.key.id);
            added.push(&headers::X_GATEWAY_ROLES, roles);
        }
        if upgrade {
            // Hop-by-hop, so filtered out of the client's headers: the gateway asks for itself.
            added.push(&headers::CONNECTION, "upgrade");
            added.push(&headers::UPGRADE, "websocket");
        }
        let with_query;
        let path_and_query = match uri.query() {
            Some(q) => {
                with_query = format!("{canon}?{q}");
                with_query.as_str()
            }
            None => canon,
        };
        let out = forward::Outbound {
            method,
            path_and_query,
            headers: &fields,
            added,
            body: has_body.then_some(body),
            upgrade,
            body_len_max: self.cfg.body_len_max,
            body_read_timeout: self.cfg.body_read_timeout,
        };
        let mut resp = forward::forward(
            &self.upstreams,
            mono_ms_at(started),
            route.name.as_str(),
            &route.upstreams,
            out,
            self.cfg.upstream_response_timeout,
            &mut carried.timer,
        )
        .await?;
        if resp.status == StatusCode::SWITCHING_PROTOCOLS {
            resp.switchable = upgrade;
            resp.fields.insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
            resp.fields.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        if caller.as_ref().is_some_and(|c| c.deprecated) {
            resp.fields.insert(headers::DEPRECATION.clone(), HeaderValue::from_static("true"));
        }
        if let Some(limit) = tightest {
            resp.fields.insert(headers::RATELIMIT_LIMIT.clone(), HeaderValue::from(limit));
        }
        Ok(resp)
    }

    /// Records a request head the HTTP/1 leg refused before any phase saw it (`crate::h1`): 400
    /// (malformed), 431 (too large) or 408 (not complete in time); the connection was closed.
    /// Such a request still gets its audit event and its count, with what is known of it: the
    /// peer's address (an unparsed head has no X-Forwarded-For to believe), no route, method or
    /// path.
    pub fn refused_head(&self, peer: SocketAddr, status: StatusCode, reason: &'static str) {
        let version = self.policy.load().version;
        self.metrics.count_request(RequestLabels {
            route: RouteLabel(None),
            decision: "deny",
            status: status.as_u16(),
        });
        self.audit.record(AuditEvent {
            ts_ms: now_ms(),
            node_id: self.cfg.node_id,
            kind: Cow::Borrowed("access"),
            decision: Cow::Borrowed("deny"),
            reason: Cow::Borrowed(reason),
            key_id: None,
            consumer: None,
            route: None,
            method: Cow::Borrowed(""),
            path: String::new(),
            raw_path: None,
            status: status.as_u16(),
            latency_us: 0,
            client_ip: headers::ip_text(peer.ip()),
            policy_version: version,
            bytes_in: None,
            bytes_out: None,
        });
    }

    /// Counts a failed authentication against the client IP; past its allowance the answer
    /// becomes a cheap 429.
    fn auth_failed(&self, policy: &Policy, ip: IpAddr, key_id: Option<&str>, deny: Deny) -> Deny {
        if policy.auth_guard.is_some() {
            self.limits.auth_reports.record(ip, key_id);
        }
        match self.limits.failed_auth(ip) {
            Ok(()) => deny,
            Err(wait) => Deny::new(StatusCode::TOO_MANY_REQUESTS, "auth_flood")
                .with_header(http::header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1))),
        }
    }
}

/// The method as the audit trail records it: the standard ones without an allocation.
fn method_name(m: &http::Method) -> Cow<'static, str> {
    use http::Method;
    Cow::Borrowed(match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => return Cow::Owned(m.as_str().to_string()),
    })
}

/// Whether a request is a WebSocket opening handshake (RFC 6455 §4.1): an HTTP/1.1 GET with
/// `Upgrade: websocket` and `Connection: upgrade`. Other upgrades (`h2c` among them) are not
/// offered to upstreams: their `Upgrade` header is dropped like any hop-by-hop header.
fn wants_websocket(method: &http::Method, version: http::Version, fields: &Fields) -> bool {
    version == http::Version::HTTP_11
        && method == http::Method::GET
        && fields.get(&http::header::UPGRADE).is_some_and(|v| v.eq_ignore_ascii_case(b"websocket"))
        && fields
            .get_all(&http::header::CONNECTION)
            .any(|v| headers::connection_tokens(v).any(|t| t.eq_ignore_ascii_case(b"upgrade")))
}

/// A path for the audit trail: at most 512 characters.
/// `s` in lower case, copied only if it has an upper-case letter (host names seldom do).
fn lowercase(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

fn cut(path: &str) -> String {
    path.chars().take(512).collect()
}

/// What a request's framing headers declare about its body, read once by [`check_framing`]
/// for the forward phase (each header lookup hashes the name again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Declared {
    /// `Transfer-Encoding: chunked` (the only coding `check_framing` lets through).
    chunked: bool,
    /// The `Content-Length`, when there is one and it is a number.
    length: Option<u64>,
    /// A `Content-Length` other than exactly `0` (a body follows, or the value is refused later).
    length_not_zero: bool,
}

/// Refuses ambiguous HTTP/1 framing (request smuggling, RFC 9112 §6.1): Content-Length together
/// with Transfer-Encoding, Transfer-Encoding other than exactly `chunked`, more than one of
/// either, or Transfer-Encoding on HTTP/1.0. The connection is closed after the 400, because
/// the server can no longer know where the next request starts. Otherwise says what the
/// framing declares.
fn check_framing(h: &Fields, version: http::Version) -> Result<Declared, Deny> {
    let mut te = h.get_all(&http::header::TRANSFER_ENCODING);
    let mut cl = h.get_all(&http::header::CONTENT_LENGTH);
    let (te1, te2) = (te.next(), te.next());
    let (cl1, cl2) = (cl.next(), cl.next());
    let smuggling = || {
        Deny::bad_request("ambiguous_framing").with_header(http::header::CONNECTION, HeaderValue::from_static("close"))
    };
    match te1 {
        None if cl2.is_some() => Err(smuggling()),
        None => Ok(Declared {
            chunked: false,
            length: cl1.and_then(crate::framing::content_length),
            length_not_zero: cl1.is_some_and(|v| v != b"0"),
        }),
        Some(te1) => {
            if cl1.is_some() || te2.is_some() || te1 != b"chunked" || version == http::Version::HTTP_10 {
                return Err(smuggling());
            }
            Ok(Declared { chunked: true, length: None, length_not_zero: false })
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, Version};

    use super::*;

    fn framing(fields: &[(&'static str, &'static str)], version: Version) -> Result<Declared, &'static str> {
        let mut h = Fields::default();
        for (n, v) in fields {
            h.append(http::HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        check_framing(&h, version).map_err(|d| d.reason)
    }

    #[test]
    fn framing_is_read_once_into_what_the_forward_phase_needs() {
        let none = Declared { chunked: false, length: None, length_not_zero: false };
        assert_eq!(framing(&[], Version::HTTP_11), Ok(none));
        assert_eq!(framing(&[("content-length", "0")], Version::HTTP_11), Ok(Declared { length: Some(0), ..none }));
        assert_eq!(
            framing(&[("content-length", "12")], Version::HTTP_10),
            Ok(Declared { length: Some(12), length_not_zero: true, ..none })
        );
        // Not a number (only HTTP/2 can bring one this far): a body, no length to hold it to.
        assert_eq!(
            framing(&[("content-length", "1x")], Version::HTTP_2),
            Ok(Declared { length_not_zero: true, ..none })
        );
        assert_eq!(
            framing(&[("transfer-encoding", "chunked")], Version::HTTP_11),
            Ok(Declared { chunked: true, ..none })
        );
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for (fields, version) in [
            (&[("content-length", "1"), ("content-length", "1")][..], Version::HTTP_11),
            (&[("transfer-encoding", "chunked"), ("content-length", "1")][..], Version::HTTP_11),
            (&[("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")][..], Version::HTTP_11),
            (&[("transfer-encoding", "gzip")][..], Version::HTTP_11),
            (&[("transfer-encoding", "chunked")][..], Version::HTTP_10),
        ] {
            assert_eq!(framing(fields, version), Err("ambiguous_framing"), "{fields:?} {version:?}");
        }
    }
}
