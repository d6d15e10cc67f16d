//! The proxy listener: HTTP/1.1 (our own leg, `crate::h1`) and HTTP/2 (hyper) on one port, with
//! a cap on concurrent connections, a per-IP cap and a bounded drain on shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::gateway::{Carried, Gateway};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// A request head must arrive within this time (slowloris).
    pub header_read_timeout: Duration,
    /// Largest request head buffered (HTTP/1) — beyond it the client gets 431.
    pub header_len_max: usize,
    /// Most headers in one request.
    pub headers_max: usize,
    /// Connections served at once; more wait in the accept backlog.
    pub connections_max: usize,
    /// Connections open at once from one client IP (trusted proxies exempt); more are closed
    /// as soon as they are accepted, so one client cannot hold every slot (bad-inputs B8).
    pub connections_per_ip_max: u32,
    /// HTTP/2 streams per connection.
    pub h2_streams_max: u32,
    /// A connection with no request in flight for this long is closed gracefully (HTTP/2:
    /// GOAWAY; HTTP/1 keep-alive connections also close at `header_read_timeout`).
    pub idle_timeout: Duration,
    /// How long in-flight requests get to finish on shutdown.
    pub drain_grace: Duration,
    /// Proxy threads, each with its own single-threaded runtime (0 = one per CPU).
    pub threads: usize,
    /// Serve HTTPS with these settings (reloaded when their files change); plain HTTP if `None`.
    pub tls: Option<Arc<crate::tls::Tls>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            header_len_max: 64 * 1024,
            headers_max: crate::gateway::HEADERS_MAX_DEFAULT,
            connections_max: 10_000,
            connections_per_ip_max: 256,
            h2_streams_max: 256,
            idle_timeout: Duration::from_secs(60),
            drain_grace: Duration::from_secs(10),
            threads: 0,
            tls: None,
        }
    }
}

/// HTTP/2 streams a client may open and reset before the node has served them; one more gets
/// GOAWAY ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487; bad-inputs C1). hyper's default,
/// pinned here so an upgrade cannot loosen it unnoticed.
const H2_PENDING_RESETS_MAX: usize = 20;

/// HTTP/2 streams the node may reset for the client's own protocol errors on one connection;
/// one more gets GOAWAY ENHANCE_YOUR_CALM (RUSTSEC-2024-0003; bad-inputs C2). hyper's default,
/// pinned likewise.
const H2_LOCAL_ERROR_RESETS_MAX: usize = 1024;

/// Open connections per client IP, shared by every proxy thread.
#[derive(Default)]
struct PerIp {
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u32>>,
}

/// One open connection counted against its IP; released on drop.
struct IpSlot {
    table: Arc<PerIp>,
    ip: std::net::IpAddr,
}

impl PerIp {
    /// A slot for one more connection from `ip`, or `None` if it already has `max` open.
    fn take(self: Arc<Self>, ip: std::net::IpAddr, max: u32) -> Option<IpSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        drop(open);
        Some(IpSlot { table: self, ip })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A channel that turns true when `global` does (or when its sender is gone), fed by a task on
/// the calling thread's runtime.
fn local_shutdown(mut global: watch::Receiver<bool>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(*global.borrow());
    tokio::spawn(async move {
        stopped(&mut global).await;
        let _ = tx.send(true);
    });
    rx
}

/// Resolves once shutdown is requested (drops the watch guard before returning, so the
/// future stays `Send`).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The proxy threads to start for a configured count: 0 is one per CPU.
pub fn thread_count(configured: usize) -> usize {
    if configured == 0 {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    } else {
        configured
    }
}

/// Serves on `threads` dedicated threads, each a single-threaded runtime: a request, its
/// upstream connection and its response stay on one thread (no cross-thread wake-ups on the
/// hot path), and data-plane load cannot starve the runtime that runs Raft heartbeats.
///
/// One accept loop (on the first thread) deals accepted connections to the threads in turn.
/// Letting every thread accept from the shared listener instead left the balance to whichever
/// thread woke first: under load one thread took nearly every connection and the other cores
/// idled (measured: 714 against 78 CPU ticks over 8 s with 64 keep-alive connections). Returns
/// once every thread has drained after `shutdown`.
pub async fn serve_threads(
    listener: std::net::TcpListener,
    gateway: Arc<Gateway>,
    cfg: ServerConfig,
    shutdown: watch::Receiver<bool>,
) {
    let threads = thread_count(cfg.threads);
    let permits = Arc::new(Semaphore::new(cfg.connections_max));
    let per_ip = Arc::new(PerIp::default());
    let (queues, receivers): (Vec<_>, Vec<_>) = (0..threads).map(|_| mpsc::unbounded_channel::<Accepted>()).unzip();
    let mut acceptor = Some(Acceptor { listener, queues, permits, per_ip });
    let mut done = Vec::new();
    for (i, queue) in receivers.into_iter().enumerate() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        done.push(rx);
        let acceptor = acceptor.take();
        let (gateway, cfg, shutdown) = (gateway.clone(), cfg.clone(), shutdown.clone());
        let spawned = std::thread::Builder::new().name(format!("proxy-{i}")).spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("proxy runtime");
            // This thread's events go to an audit queue shard of its own.
            gateway.audit_queue().claim(i);
            rt.block_on(async move {
                if let Some(a) = acceptor {
                    tokio::spawn(a.run(gateway.clone(), cfg.connections_per_ip_max, shutdown.clone()));
                }
                serve_connections(queue, gateway, cfg, shutdown).await;
            });
            let _ = tx.send(());
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a proxy thread");
        }
    }
    for rx in done {
        let _ = rx.await;
    }
}

/// An accepted connection on its way to a proxy thread, with the slots it holds.
struct Accepted {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    ip_slot: Option<IpSlot>,
}

/// The accept loop: caps, then round-robin over the threads' queues.
struct Acceptor {
    listener: std::net::TcpListener,
    queues: Vec<mpsc::UnboundedSender<Accepted>>,
    permits: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
}

impl Acceptor {
    async fn run(self, gateway: Arc<Gateway>, per_ip_max: u32, mut shutdown: watch::Receiver<bool>) {
        let listener = match self.listener.set_nonblocking(true).and_then(|()| TcpListener::from_std(self.listener)) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "proxy listener");
                return;
            }
        };
        let mut next = 0usize;
        loop {
            let permit = tokio::select! {
                p = self.permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = stopped(&mut shutdown) => break,
            };
            let (stream, peer): (_, SocketAddr) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of descriptors, or a connection reset before it was accepted:
                        // back off briefly.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                },
                _ = stopped(&mut shutdown) => break,
            };
            // Trusted proxies carry many clients' connections; everyone else has a cap.
            let ip_slot = if gateway.cfg.trusted_proxies.contains(&peer.ip()) {
                None
            } else {
                match self.per_ip.clone().take(peer.ip(), per_ip_max) {
                    Some(slot) => Some(slot),
                    None => {
                        gateway.metrics.connections_refused.inc();
                        tracing::debug!(%peer, "closed at accept: too many connections from this IP");
                        continue; // dropping the stream closes it
                    }
                }
            };
            let _ = stream.set_nodelay(true);
            let Ok(stream) = stream.into_std() else { continue };
            let mut conn = Accepted { stream, peer, permit, ip_slot };
            // The next thread in turn; one whose runtime has gone is skipped.
            for _ in 0..self.queues.len() {
                let queue = &self.queues[next % self.queues.len()];
                next = next.wrapping_add(1);
                match queue.send(conn) {
                    Ok(()) => break,
                    Err(mpsc::error::SendError(back)) => conn = back,
                }
            }
        }
        // Dropping the queues tells every thread that no more connections come.
    }
}

/// Requests in flight on one connection, and when the last one started or ended.
struct Activity {
    inflight: std::sync::atomic::AtomicU32,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self { inflight: 0.into(), last_ms: crate::clock::mono_ms().into() })
    }

    /// Marks a request in flight until the guard drops (also when the request is cancelled).
    fn begin(self: &Arc<Self>) -> InFlight {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// How long the connection has had no request in flight (zero while one is).
    fn idle_for(&self) -> Duration {
        if self.inflight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(crate::clock::mono_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// One request in flight on a connection; when it drops, the connection's idle time starts.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_ms.store(crate::clock::mono_ms(), Ordering::Relaxed);
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted in flight until hyper drops it, so a long
/// streaming response is never taken for an idle connection.
///
/// When the body fails (an upstream that cut its answer short), the error is held back for one
/// turn: hyper writes out the head and the data it has before it sees the error and closes the
/// connection. The client then always gets the status and the part that arrived, and sees the
/// connection end early (as from nginx); handed the error in the same turn, hyper closed the
/// connection with the head still unsent, and the client saw nothing at all.
struct TrackedBody {
    inner: crate::upstream::Body,
    _in_flight: InFlight,
    failed: Option<crate::upstream::BoxError>,
}

impl hyper::body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = crate::upstream::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        if let Some(e) = self.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                // Pending once, with a wake: hyper flushes what it holds, then polls again.
                self.failed = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Drives one HTTP/2 connection to its end: closes it gracefully (in-flight requests finish,
/// GOAWAY) on shutdown or once it has been idle for `idle`.
async fn drive<C>(
    conn: C,
    activity: Arc<Activity>,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
    peer: SocketAddr,
) where
    C: GracefulConnection<Error = Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(conn);
    let check_every = (idle / 4).max(Duration::from_millis(25));
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + check_every, check_every);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    // When an idle close began: the client must answer the GOAWAY's PING before the connection
    // ends, and one that never does is dropped once still idle `idle` later.
    let mut idle_close_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                return;
            }
            _ = stopped(&mut shutdown), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = check.tick() => {
                let idle_for = activity.idle_for();
                match idle_close_at {
                    None if !closing && idle_for >= idle => {
                        tracing::debug!(%peer, "closing an idle connection");
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                        idle_close_at = Some(tokio::time::Instant::now());
                    }
                    Some(at) if at.elapsed() >= idle && idle_for >= idle => {
                        tracing::debug!(%peer, "dropping an idle connection that did not close");
                        return;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A request body as the gateway reads it, whichever leg received the request.
pub enum ClientBody {
    /// An HTTP/1 request whose head says it has no body.
    Empty,
    /// Read by the HTTP/1 leg ([`crate::h1`]).
    H1(crate::h1::H1Body),
    /// Read by hyper (HTTP/2).
    Hyper(hyper::body::Incoming),
}

impl hyper::body::Body for ClientBody {
    type Data = bytes::Bytes;
    type Error = crate::upstream::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::H1(b) => std::pin::Pin::new(b).poll_frame(cx),
            ClientBody::Hyper(b) => std::pin::Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::H1(b) => b.is_end_stream(),
            ClientBody::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            ClientBody::Empty => hyper::body::SizeHint::with_exact(0),
            ClientBody::H1(b) => b.size_hint(),
            ClientBody::Hyper(b) => b.size_hint(),
        }
    }
}

/// A connection whose first bytes were already read (to tell HTTP/2 from HTTP/1): reads give
/// those bytes first.
struct Prefixed<IO> {
    first: bytes::Bytes,
    io: IO,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.first.is_empty() {
            let n = self.first.len().min(buf.remaining());
            buf.put_slice(&self.first.split_to(n));
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What every connection of a thread shares.
#[derive(Clone)]
struct Shared {
    gateway: Arc<Gateway>,
    h2: auto::Builder<TokioExecutor>,
    h1: crate::h1::Settings,
    shutdown: watch::Receiver<bool>,
}

/// Serves one connection: HTTP/2 (by ALPN or its preface) through hyper, everything else
/// through the HTTP/1 leg.
async fn serve_one<IO>(mut io: IO, alpn_h2: bool, peer: SocketAddr, s: Shared)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut buf = bytes::BytesMut::with_capacity(16 * 1024);
    if alpn_h2 || crate::h1::sniff_h2(&mut io, &mut buf, s.h1.header_read_timeout).await {
        let activity = Activity::new();
        let act = activity.clone();
        let (gw, over_tls) = (s.gateway.clone(), s.h1.over_tls);
        let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let (gw, in_flight) = (gw.clone(), act.begin());
            let req = crate::request::ClientRequest::from_hyper(req, over_tls);
            async move {
                // Streams are served at once, so none shares a remembered key.
                let resp = gw.handle(req, peer, &mut Carried::default()).await.into_http();
                // In flight until the response body has been sent (or abandoned).
                Ok::<_, Infallible>(resp.map(|inner| TrackedBody { inner, _in_flight: in_flight, failed: None }))
            }
        });
        let io = TokioIo::new(Prefixed { first: buf.freeze(), io });
        let conn = s.h2.serve_connection(io, svc).into_owned();
        drive(conn, activity, s.h1.idle_timeout, s.shutdown, peer).await;
    } else if !buf.is_empty() {
        crate::h1::serve(io, buf, peer, s.gateway, s.h1, s.shutdown).await;
    }
}

/// One thread's connections: serves what the acceptor deals it until `shutdown`, then drains
/// within the grace period.
async fn serve_connections(
    mut queue: mpsc::UnboundedReceiver<Accepted>,
    gateway: Arc<Gateway>,
    cfg: ServerConfig,
    global_shutdown: watch::Receiver<bool>,
) {
    // This thread's own copy of the shutdown signal. An idle HTTP/1 connection waits on it
    // between requests, which adds and removes a waiter on the channel's waiter list (a mutex)
    // for every request; on the process-wide channel the proxy threads contended for that lock
    // and slept in futex waits when its holder was preempted (2.4 % of their context switches
    // under load). Here only this thread's connections use it.
    let mut shutdown = local_shutdown(global_shutdown);
    // Every connection task holds a clone of `open`; `all_closed` ends once all are gone.
    let (open, mut all_closed) = mpsc::channel::<()>(1);
    let mut h2 = auto::Builder::new(TokioExecutor::new()).http2_only();
    h2.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.h2_streams_max)
        .max_header_list_size(cfg.header_len_max as u32)
        .max_pending_accept_reset_streams(H2_PENDING_RESETS_MAX)
        .max_local_error_reset_streams(H2_LOCAL_ERROR_RESETS_MAX);
    let shared = Shared {
        gateway,
        h2,
        h1: crate::h1::Settings {
            header_read_timeout: cfg.header_read_timeout,
            header_len_max: cfg.header_len_max,
            headers_max: cfg.headers_max,
            idle_timeout: cfg.idle_timeout,
            over_tls: cfg.tls.is_some(),
        },
        shutdown: shutdown.clone(),
    };
    loop {
        let Accepted { stream, peer, permit, ip_slot } = tokio::select! {
            c = queue.recv() => match c { Some(c) => c, None => break },
            _ = stopped(&mut shutdown) => break,
        };
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, %peer, "cannot register an accepted connection");
                continue;
            }
        };
        // The connection's place under the caps and in the drain, until its task ends (a
        // WebSocket tunnel runs in that task too).
        let hold = (permit, ip_slot, open.clone());
        let s = shared.clone();
        match &cfg.tls {
            None => {
                tokio::spawn(async move {
                    serve_one(stream, false, peer, s).await;
                    drop(hold);
                });
            }
            Some(tls) => {
                // The handshake runs in the connection's task, bounded like a request head
                // (bad-inputs B9: a client that never sends its ClientHello).
                let acceptor = tls.acceptor();
                let handshake_timeout = cfg.header_read_timeout;
                tokio::spawn(async move {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            serve_one(stream, h2, peer, s).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                    drop(hold);
                });
            }
        }
    }
    // Open connections close gracefully on the shutdown signal; wait for them within the grace.
    drop(open);
    if tokio::time::timeout(cfg.drain_grace, all_closed.recv()).await.is_err() {
        tracing::warn!("proxy connections still open after the drain grace; closing them");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Poll, Wake, Waker};

    use bytes::Bytes;
    use http_body_util::BodyExt;
    use hyper::body::{Body, Frame};

    use super::*;
    use crate::upstream::BoxError;

    /// A body that yields what it was given, in order.
    struct Script(VecDeque<Result<Frame<Bytes>, BoxError>>);

    impl Body for Script {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// An upstream body that fails after some data: the data comes out, then one `Pending` with
    /// a wake-up (hyper writes what it holds), then the error. Handed the error in the same turn
    /// as the data, hyper closed the connection with nothing written (`1243b01`).
    #[test]
    fn a_failed_body_gives_its_data_a_turn_before_the_error() {
        let activity = Activity::new();
        let script = Script(VecDeque::from([Ok(Frame::data(Bytes::from_static(b"abc"))), Err("cut short".into())]));
        let mut body = TrackedBody { inner: script.boxed(), _in_flight: activity.begin(), failed: None };
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut poll = || Pin::new(&mut body).poll_frame(&mut cx);
        match poll() {
            Poll::Ready(Some(Ok(f))) => assert_eq!(f.into_data().ok(), Some(Bytes::from_static(b"abc"))),
            other => panic!("the data first, got {other:?}"),
        }
        assert!(poll().is_pending(), "the error is held back one turn");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "and the task is woken to take it");
        match poll() {
            Poll::Ready(Some(Err(e))) => assert_eq!(e.to_string(), "cut short"),
            other => panic!("then the error, got {other:?}"),
        }
        // The request stays in flight until the body is dropped.
        assert_eq!(activity.idle_for(), Duration::ZERO);
        drop(body);
        assert_eq!(activity.inflight.load(Ordering::SeqCst), 0);
    }
}
