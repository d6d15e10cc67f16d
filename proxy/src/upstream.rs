//! Phase 6, forward: the upstreams of a route in round-robin order, passive ejection of failing
//! ones, and each proxy thread's pool of keep-alive HTTP/1.1 connections to them. The HTTP/1.1
//! exchange itself is in [`wire`].

pub mod wire;

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use tokio::net::TcpStream;

use arc_swap::ArcSwap;

use crate::clock::mono_ms;
use crate::hashing::ConfigMap;
use crate::reply::Reply;
use wire::WireError;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// Consecutive failures after which an upstream is ejected.
const EJECT_AFTER_FAILURES: u32 = 3;
/// How long an ejected upstream is skipped before it is tried again.
const EJECT_FOR_MS: u64 = 10_000;
/// Idle connections kept per upstream and proxy thread: enough for 64 busy client connections.
const POOL_IDLE_PER_UPSTREAM: usize = 128;
/// An idle pooled connection older than this is closed rather than reused.
const POOL_IDLE_FOR_MS: u64 = 60_000;
/// How often a thread's pool is swept of connections idle too long (also those of upstreams
/// no route names any more).
const POOL_SWEEP_EVERY_MS: u64 = 10_000;

#[derive(Default)]
struct Health {
    consecutive_failures: AtomicU32,
    /// On the monotonic clock ([`mono_ms`]): a step of the wall clock neither prolongs an
    /// ejection nor ends it early.
    ejected_until_ms: AtomicU64,
}

/// Tells upstreams apart in the per-thread pools.
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// Where an upstream base URL (`http://host[:port][/prefix]`) sends requests.
struct Endpoint {
    /// This upstream's connections in each thread's pool.
    key: u64,
    /// The host to connect to (an IPv6 literal without its brackets).
    host: String,
    port: u16,
    /// Sent as `Host` when the client sent none (HTTP/2 clients send `:authority`).
    authority: String,
    /// Prepended to the request's path, without a trailing `/`.
    prefix: String,
}

/// Whether the data plane can send requests to the upstream base URL `url`
/// (`http://host[:port][/prefix]`). The admin API refuses a route with any other, so a route it
/// accepted never answers 502 `bad_upstream_uri` for its URL alone.
pub fn is_usable_upstream(url: &str) -> bool {
    Endpoint::parts(url).is_some()
}

impl Endpoint {
    fn parse(url: &str) -> Option<Self> {
        let (host, port, authority, prefix) = Self::parts(url)?;
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        Some(Self { key, host, port, authority, prefix })
    }

    /// Host, port, authority and path prefix of a usable base URL. A fragment means nothing in
    /// a base URL, and the URI parser would drop it silently: refused.
    fn parts(url: &str) -> Option<(String, u16, String, String)> {
        if url.contains('#') {
            return None;
        }
        let uri: http::Uri = url.parse().ok()?;
        if uri.scheme() != Some(&http::uri::Scheme::HTTP) || uri.query().is_some() {
            return None;
        }
        let authority = uri.authority()?;
        if authority.as_str().contains('@') {
            return None;
        }
        let host = authority.host();
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host).to_string();
        let prefix = uri.path().trim_end_matches('/').to_string();
        if !wire::is_request_target(&prefix) {
            return None;
        }
        let port = match authority.port_u16() {
            Some(p) => p,
            // Anything after the host but a port that fits in 16 bits is an error.
            None if authority.as_str().len() == authority.host().len() => 80,
            None => return None,
        };
        Some((host, port, authority.to_string(), prefix))
    }
}

/// One upstream as a route names it, with its passive health.
pub struct Target {
    pub url: String,
    /// `None` if the URL cannot be used (not plain `http://`): its requests get 502.
    endpoint: Option<Endpoint>,
    health: Health,
}

/// Why a request could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("upstream URL is not http://host[:port][/prefix]")]
    BadTarget,
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    #[error(transparent)]
    Wire(#[from] WireError),
}

pub struct Upstreams {
    connect_timeout: Duration,
    /// Round-robin cursor per route name. Both maps are keyed by what operators configured, not
    /// by what clients send, so a cheap hash serves (SipHash cost ~250 instructions a lookup).
    cursors: RwLock<ConfigMap<String, Arc<AtomicUsize>>>,
    /// Every upstream seen, by base URL: parsed once, with its health. Read without a lock on
    /// every request; copied and swapped when a URL is first seen.
    targets: ArcSwap<ConfigMap<String, Arc<Target>>>,
}

impl Upstreams {
    pub fn new(connect_timeout: Duration) -> Self {
        Self { connect_timeout, cursors: RwLock::default(), targets: ArcSwap::default() }
    }

    fn target(&self, url: &str) -> Arc<Target> {
        if let Some(t) = self.targets.load().get(url) {
            return t.clone();
        }
        let fresh =
            Arc::new(Target { url: url.to_string(), endpoint: Endpoint::parse(url), health: Health::default() });
        let mut chosen = fresh.clone();
        // Two threads seeing a URL first at once end with one target (one health record).
        self.targets.rcu(|map| {
            let mut map = ConfigMap::clone(map);
            chosen = map.entry(url.to_string()).or_insert_with(|| fresh.clone()).clone();
            map
        });
        chosen
    }

    /// The first two upstreams of a route to try (a request is tried on two at most): round-robin
    /// start, ejected ones after every healthy one. Only as many are looked up as are needed.
    /// `now` is on the monotonic clock ([`mono_ms`]), read by the caller.
    pub fn order(&self, route: &str, upstreams: &[String], now: u64) -> [Option<Arc<Target>>; 2] {
        let n = upstreams.len();
        // A route with one upstream has no turn to take: no cursor to find and advance (an
        // atomic write to a line every proxy thread shares).
        let start = if n > 1 { self.cursor(route).fetch_add(1, Ordering::Relaxed) } else { 0 };
        let want = n.min(2);
        let mut picked: [Option<Arc<Target>>; 2] = [None, None];
        let mut k = 0;
        // Healthy ones in round-robin order first, then (if fewer than two were) ejected ones.
        for healthy_pass in [true, false] {
            for i in 0..n {
                if k == want {
                    return picked;
                }
                let target = self.target(&upstreams[(start + i) % n]);
                let ejected = target.health.ejected_until_ms.load(Ordering::Relaxed) > now;
                if ejected != healthy_pass {
                    picked[k] = Some(target);
                    k += 1;
                }
            }
        }
        picked
    }

    /// The round-robin cursor of `route`.
    fn cursor(&self, route: &str) -> Arc<AtomicUsize> {
        let found = self.cursors.read().expect("cursor lock").get(route).cloned();
        found
            .unwrap_or_else(|| self.cursors.write().expect("cursor lock").entry(route.to_string()).or_default().clone())
    }

    /// Sends one request to `target` on a pooled connection (or a new one) and returns once the
    /// response head has arrived; the body streams from the connection as it is read.
    ///
    /// A pooled connection can turn out to have been closed by the upstream while it sat idle.
    /// If nothing at all came back on it, a `replayable` request (idempotent, no body) is sent
    /// once more on a new connection, as it cannot have been acted on.
    pub async fn send(
        &self,
        target: &Target,
        req: &wire::Head<'_>,
        body: Option<Body>,
        replayable: bool,
        now: u64,
    ) -> Result<Reply, SendError> {
        // Without a declared length a body goes chunked.
        let chunked = body.is_some() && !req.headers.contains(&http::header::CONTENT_LENGTH);
        let (ep, head) = head_for(target, req, chunked)?;
        let method = req.method;
        if let Some(conn) = checkout(ep.key, now) {
            match wire::exchange(conn, &head, body, chunked, method, ep.key).await {
                Err(e) if replayable && e.is_closed_before_response() => {
                    tracing::debug!(upstream = %target.url, error = %e, "pooled connection was closed; sending again");
                    let conn = wire::Conn::new(self.connect(ep).await?);
                    return Ok(wire::exchange(conn, &head, None, false, method, ep.key).await?);
                }
                sent => return Ok(sent?),
            }
        }
        let conn = wire::Conn::new(self.connect(ep).await?);
        Ok(wire::exchange(conn, &head, body, chunked, method, ep.key).await?)
    }

    /// Sends a request that asks to switch protocols (a WebSocket handshake, with no body) on a
    /// new connection of its own, never a pooled one, and returns the upstream's answer. A 101
    /// carries the connection ([`Reply::upstream_side`]); any other answer is relayed as usual
    /// and its connection closed after it.
    pub async fn switch(&self, target: &Target, req: &wire::Head<'_>) -> Result<Reply, SendError> {
        let (ep, head) = head_for(target, req, false)?;
        let io = self.connect(ep).await?;
        Ok(match wire::switch(io, &head, req.method).await? {
            wire::Switch::Refused(resp) => resp,
            wire::Switch::Switched { head, io, early } => {
                let empty = http_body_util::BodyExt::map_err(http_body_util::Empty::<Bytes>::new(), |n| match n {});
                let mut reply = Reply::new(head.status, head.fields, http_body_util::BodyExt::boxed(empty));
                reply.upstream_side = Some(Box::new((io, early)));
                reply
            }
        })
    }

    async fn connect(&self, ep: &Endpoint) -> Result<TcpStream, SendError> {
        let io = match tokio::time::timeout(self.connect_timeout, TcpStream::connect((ep.host.as_str(), ep.port))).await
        {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => return Err(SendError::Connect(e)),
            Err(_) => return Err(SendError::Connect(std::io::ErrorKind::TimedOut.into())),
        };
        let _ = io.set_nodelay(true);
        Ok(io)
    }
}

/// Where a request goes and its head as written for that upstream.
fn head_for<'t>(target: &'t Target, req: &wire::Head<'_>, chunked: bool) -> Result<(&'t Endpoint, Vec<u8>), SendError> {
    let ep = target.endpoint.as_ref().ok_or(SendError::BadTarget)?;
    if !wire::is_request_target(req.path_and_query) {
        return Err(SendError::BadTarget);
    }
    let mut head = Vec::with_capacity(256 + (req.headers.len() + req.added.len()) * 48);
    wire::encode_head(&mut head, req, &ep.prefix, &ep.authority, chunked);
    Ok((ep, head))
}

struct Idle {
    conn: wire::Conn,
    since_ms: u64,
}

/// One proxy thread's idle upstream connections. Each thread has its own, so a connection is
/// only ever used by the runtime that registered it, and taking or returning one is a map
/// lookup with no lock.
#[derive(Default)]
struct Pool {
    idle: ConfigMap<u64, Vec<Idle>>,
    swept_ms: u64,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// Whether an idle connection can carry a request: the upstream has neither closed it nor sent
/// anything unasked. Costs no system call unless the socket has signalled something.
fn is_reusable(io: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// The most recently returned live connection to upstream `key`, if any (`now`: [`mono_ms`]).
fn checkout(key: u64, now: u64) -> Option<wire::Conn> {
    POOL.with(|p| {
        let mut pool = p.borrow_mut();
        let list = pool.idle.get_mut(&key)?;
        while let Some(idle) = list.pop() {
            if now.saturating_sub(idle.since_ms) > POOL_IDLE_FOR_MS {
                // The newest is too old: so are the rest.
                list.clear();
                break;
            }
            if is_reusable(&idle.conn.io) {
                return Some(idle.conn);
            }
        }
        None
    })
}

/// Returns a connection whose last response ended cleanly to the thread's pool.
fn checkin(key: u64, conn: wire::Conn) {
    let _ = POOL.try_with(|p| {
        let Ok(mut pool) = p.try_borrow_mut() else { return };
        let now = mono_ms();
        if now.saturating_sub(pool.swept_ms) > POOL_SWEEP_EVERY_MS {
            pool.swept_ms = now;
            pool.idle.retain(|_, list| {
                list.retain(|i| now.saturating_sub(i.since_ms) <= POOL_IDLE_FOR_MS);
                !list.is_empty()
            });
        }
        let list = pool.idle.entry(key).or_default();
        if list.len() >= POOL_IDLE_PER_UPSTREAM {
            list.remove(0);
        }
        list.push(Idle { conn, since_ms: now });
    });
}

impl Target {
    /// Records the outcome of a request to this upstream.
    pub fn report(&self, ok: bool) {
        let health = &self.health;
        if ok {
            // Most outcomes are successes on a healthy upstream: skip the write then.
            if health.consecutive_failures.load(Ordering::Relaxed) != 0 {
                health.consecutive_failures.store(0, Ordering::Relaxed);
            }
            return;
        }
        let failures = health.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= EJECT_AFTER_FAILURES {
            health.ejected_until_ms.store(mono_ms() + EJECT_FOR_MS, Ordering::Relaxed);
            tracing::warn!(upstream = %self.url, failures, "upstream ejected");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(order: &[Option<Arc<Target>>]) -> Vec<String> {
        order.iter().flatten().map(|t| t.url.clone()).collect()
    }

    #[test]
    fn round_robin_then_failing_upstream_goes_last() {
        let ups = Upstreams::new(Duration::from_secs(1));
        let targets = vec!["http://a".to_string(), "http://b".to_string()];
        assert_eq!(names(&ups.order("r", &targets, mono_ms())), ["http://a", "http://b"]);
        assert_eq!(names(&ups.order("r", &targets, mono_ms())), ["http://b", "http://a"]);
        // Two failures in a row do not eject; a success in between resets the count.
        let [Some(a), _] = ups.order("r", &targets, mono_ms()) else { panic!("two upstreams, none picked") };
        a.report(false);
        a.report(false);
        a.report(true);
        a.report(false);
        a.report(false);
        assert_eq!(names(&ups.order("r", &targets, mono_ms())), ["http://b", "http://a"]);
        assert_eq!(names(&ups.order("r", &targets, mono_ms())), ["http://a", "http://b"]);
        // The third in a row ejects it: it comes last whatever the cursor says.
        a.report(false);
        for _ in 0..4 {
            assert_eq!(names(&ups.order("r", &targets, mono_ms())), ["http://b", "http://a"]);
        }
        // Routes keep their own cursors; health is per upstream.
        assert_eq!(names(&ups.order("other", &targets, mono_ms())), ["http://b", "http://a"]);
        // A request is tried on two at most: of three, the healthy two come first, in turn.
        let three = vec!["http://a".to_string(), "http://b".to_string(), "http://c".to_string()];
        assert_eq!(names(&ups.order("three", &three, mono_ms())), ["http://b", "http://c"]);
        assert_eq!(names(&ups.order("three", &three, mono_ms())), ["http://b", "http://c"]);
        assert_eq!(names(&ups.order("three", &three, mono_ms())), ["http://c", "http://b"]);
        // One upstream: one candidate, and no cursor kept for it.
        assert_eq!(names(&ups.order("one", &targets[..1], mono_ms())), ["http://a"]);
        assert!(!ups.cursors.read().unwrap().contains_key("one"));
    }

    /// A pooled connection reads each response into the buffer the last one used: while the
    /// last one's header values and body are still held (a new buffer is taken) and once they
    /// are gone (the same memory is reused). Neither changes what an earlier answer holds.
    #[tokio::test]
    async fn a_pooled_connection_reuses_its_buffer_without_touching_earlier_answers() {
        use http_body_util::BodyExt;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut io, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (mut seen, mut buf) = (Vec::new(), [0u8; 4096]);
                    for word in ["first", "second", "third"] {
                        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            let n = io.read(&mut buf).await.unwrap();
                            assert!(n > 0, "the gateway closed the connection");
                            seen.extend_from_slice(&buf[..n]);
                        }
                        let end = seen.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                        seen.drain(..end);
                        let answer =
                            format!("HTTP/1.1 200 OK\r\nx-n: {word}\r\ncontent-length: {}\r\n\r\n{word}", word.len());
                        io.write_all(answer.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        let ups = Upstreams::new(Duration::from_secs(1));
        let [Some(target), _] = ups.order("r", &[url], mono_ms()) else { panic!("one upstream") };
        let headers = crate::fields::Fields::default();
        let head = wire::Head { method: &http::Method::GET, path_and_query: "/", headers: &headers, added: &[] };
        let ask = || async {
            let resp = ups.send(&target, &head, None, true, mono_ms()).await.unwrap().into_http();
            let (parts, body) = resp.into_parts();
            (parts.headers, body.collect().await.unwrap().to_bytes())
        };
        let (h1, b1) = ask().await;
        // The first answer is still held while the second is read.
        let (h2, b2) = ask().await;
        assert_eq!((&h1["x-n"], &b1[..]), (&http::HeaderValue::from_static("first"), &b"first"[..]));
        assert_eq!((&h2["x-n"], &b2[..]), (&http::HeaderValue::from_static("second"), &b"second"[..]));
        drop((h1, b1, h2, b2));
        // Nothing of the earlier answers is left: the third reuses the memory.
        let (h3, b3) = ask().await;
        assert_eq!((&h3["x-n"], &b3[..]), (&http::HeaderValue::from_static("third"), &b"third"[..]));
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "all three on one pooled connection");
    }

    #[test]
    fn only_plain_http_base_urls_are_used() {
        let ep = Endpoint::parse("http://[::1]:8080/v2/").expect("parses");
        assert_eq!(
            (ep.host.as_str(), ep.port, ep.authority.as_str(), ep.prefix.as_str()),
            ("::1", 8080, "[::1]:8080", "/v2")
        );
        let ep = Endpoint::parse("http://up.internal").expect("parses");
        assert_eq!((ep.port, ep.prefix.as_str()), (80, ""));
        for bad in
            ["https://up:443", "http://u:p@up:80", "http://up:80/?q=1", "http://up/#f", "up:80", "http://up:99999"]
        {
            assert!(Endpoint::parse(bad).is_none() && !is_usable_upstream(bad), "{bad}");
        }
    }
}
