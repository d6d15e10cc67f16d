//! WebSocket tunnels: once an upstream has answered a client's handshake with `101 Switching
//! Protocols`, the client's connection and the upstream's are joined and bytes flow both ways
//! until either side closes, the tunnel has been idle for the proxy's idle timeout, or the node
//! shuts down.
//!
//! The gateway decides (every phase runs on the handshake, which is audited with status 101)
//! and opens the upstream connection; the 101 reply carries the upstream's end to the
//! HTTP/1 leg (`crate::h1`), which writes the 101 and hands [`run`] its own connection.
//! The upstream connection is the tunnel's own: it never came from, and never returns to, the
//! pool.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::clock::mono_ms;

/// A client connection handed over by the server leg that read the handshake, with the bytes
/// the client sent past its request head (they go upstream first).
pub struct Own {
    pub io: Box<dyn ClientIo>,
    pub early: Bytes,
}

/// A client connection a tunnel can run on.
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientIo for T {}

/// Both ends of a tunnel, taken from a 101 response.
pub struct Tunnel {
    upstream: TcpStream,
    /// Bytes the upstream sent right after its 101: the client gets them first.
    early: Bytes,
}

impl Tunnel {
    /// The tunnel a 101 reply carries, if it carries one (the upstream's end is taken from it).
    pub fn take(reply: &mut crate::reply::Reply) -> Option<Self> {
        if !reply.switchable {
            return None;
        }
        let (upstream, early) = *reply.upstream_side.take()?;
        Some(Self { upstream, early })
    }
}

/// How a tunnel ended, for the event that records it.
#[derive(Debug, Clone, Copy)]
pub struct Closed {
    /// `tunnel_closed` (a side closed), `tunnel_failed` (an I/O error), `tunnel_idle` (nothing
    /// either way for the idle timeout) or `tunnel_shutdown` (the node is stopping).
    pub reason: &'static str,
    pub lasted: Duration,
    /// Bytes from the client to the upstream, and from the upstream to the client.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Joins the two connections until one side closes (the other is then shut down for writing and
/// drained), neither has sent anything for `idle`, or `shutdown` is signalled. `open` counts the
/// tunnels running. `client` is the client's connection, handed over by the server leg.
pub async fn run(t: Tunnel, client: Own, idle: Duration, mut shutdown: watch::Receiver<bool>, open: Gauge) -> Closed {
    let started = std::time::Instant::now();
    open.inc();
    let last = Arc::new(AtomicU64::new(mono_ms()));
    let mut client =
        Watched { io: client.io, last: last.clone(), read: client.early.len() as u64, early: client.early };
    let mut upstream = Watched { io: t.upstream, last, read: t.early.len() as u64, early: t.early };
    let reason = join(&mut client, &mut upstream, idle, &mut shutdown).await;
    open.dec();
    Closed { reason, lasted: started.elapsed(), bytes_in: client.read, bytes_out: upstream.read }
}

async fn join(
    client: &mut Watched<Box<dyn ClientIo>>,
    upstream: &mut Watched<TcpStream>,
    idle: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> &'static str {
    let failed = |e: std::io::Error| {
        tracing::debug!(error = %e, "tunnel failed");
        "tunnel_failed"
    };
    if !upstream.early.is_empty() {
        let early = std::mem::take(&mut upstream.early);
        let sent = async {
            client.write_all(&early).await?;
            client.flush().await
        };
        if let Err(e) = sent.await {
            return failed(e);
        }
    }
    if !client.early.is_empty() {
        let early = std::mem::take(&mut client.early);
        if let Err(e) = upstream.write_all(&early).await {
            return failed(e);
        }
    }
    let last = client.last.clone();
    let copy = tokio::io::copy_bidirectional(client, upstream);
    tokio::pin!(copy);
    let check_every = (idle / 4).max(Duration::from_millis(25));
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + check_every, check_every);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = &mut copy => return match r {
                Ok((to_upstream, to_client)) => {
                    tracing::debug!(to_upstream, to_client, "tunnel closed");
                    "tunnel_closed"
                }
                Err(e) => failed(e),
            },
            _ = shutdown.wait_for(|s| *s) => {
                tracing::debug!("tunnel closed for shutdown");
                return "tunnel_shutdown";
            }
            _ = check.tick() => {
                if mono_ms().saturating_sub(last.load(Ordering::Relaxed)) >= idle.as_millis() as u64 {
                    tracing::debug!(?idle, "tunnel closed: idle");
                    return "tunnel_idle";
                }
            }
        }
    }
}

/// A connection whose reads mark the tunnel as active and are counted (with the bytes that came
/// before the switch, `early`, which go to the other side first).
struct Watched<T> {
    io: T,
    last: Arc<AtomicU64>,
    read: u64,
    early: Bytes,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.last.store(mono_ms(), Ordering::Relaxed);
            self.read += (buf.filled().len() - before) as u64;
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
