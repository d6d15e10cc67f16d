//! The proxy listener: HTTP/1.1 and HTTP/2 on one port, with header-read timeout, header
//! limits, a cap on concurrent connections and a bounded drain on shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::gateway::Gateway;

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
    /// HTTP/2 streams per connection.
    pub h2_streams_max: u32,
    /// How long in-flight requests get to finish on shutdown.
    pub drain_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            header_len_max: 64 * 1024,
            headers_max: 100,
            connections_max: 10_000,
            h2_streams_max: 256,
            drain_grace: Duration::from_secs(10),
        }
    }
}

/// Resolves once shutdown is requested (drops the watch guard before returning, so the
/// future stays `Send`).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Serves until `shutdown` turns true, then drains within the grace period.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    cfg: ServerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(cfg.connections_max));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size(cfg.header_len_max)
        .max_headers(cfg.headers_max)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.h2_streams_max)
        .max_header_list_size(cfg.header_len_max as u32);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stopped(&mut shutdown) => break,
        };
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        let gw = gateway.clone();
        let svc = service_fn(move |req| {
            let gw = gw.clone();
            async move { Ok::<_, Infallible>(gw.handle(req, peer).await) }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
    tracing::info!("proxy listener closed; draining connections");
    if tokio::time::timeout(cfg.drain_grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("proxy connections still open after the drain grace; closing them");
    }
}
