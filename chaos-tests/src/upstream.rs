//! A real upstream for data-plane tests: an HTTP/1.1 server on a loopback port that answers
//! every request with a JSON echo of what it received and counts what reached it. A path
//! ending in `/drip` is answered instead with a slow streaming body: [`DRIP_CHUNKS`] chunks of
//! `x\n`, [`DRIP_EVERY`] apart (a long-lived response, like server-sent events). One ending in
//! `/stall` is answered only after [`STALL`] (an upstream too slow to answer).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

#[derive(Clone)]
pub struct EchoUpstream {
    pub addr: std::net::SocketAddr,
    hits: Arc<AtomicU64>,
    last: Arc<Mutex<Value>>,
    /// When (wall ms) each request of a key arrived, by `x-gateway-key-id`.
    by_key: Arc<Mutex<BTreeMap<String, Vec<u64>>>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

#[derive(Clone)]
struct Counters {
    hits: Arc<AtomicU64>,
    last: Arc<Mutex<Value>>,
    /// When (wall ms) each request of a key arrived, by `x-gateway-key-id`.
    by_key: Arc<Mutex<BTreeMap<String, Vec<u64>>>>,
}

#[allow(clippy::disallowed_methods, reason = "the test upstream stamps arrivals to bucket them by window")]
fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Chunks in a `/drip` response, and the pause before each.
pub const DRIP_CHUNKS: u32 = 8;
pub const DRIP_EVERY: std::time::Duration = std::time::Duration::from_millis(300);

/// How long a `/stall` request waits before its answer.
pub const STALL: std::time::Duration = std::time::Duration::from_secs(5);

/// The `/drip` response body.
struct Drip {
    left: u32,
    pause: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl hyper::body::Body for Drip {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        std::task::ready!(std::future::Future::poll(self.pause.as_mut(), cx));
        self.left -= 1;
        let next = tokio::time::Instant::now() + DRIP_EVERY;
        self.pause.as_mut().reset(next);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(b"x\n")))))
    }
}

type EchoBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

async fn echo(req: Request<Incoming>, c: Counters) -> Result<Response<EchoBody>, Infallible> {
    let Counters { hits, last, by_key } = c;
    hits.fetch_add(1, Ordering::SeqCst);
    if let Some(id) = req.headers().get("x-gateway-key-id").and_then(|v| v.to_str().ok()) {
        by_key.lock().expect("lock").entry(id.to_string()).or_default().push(wall_ms());
    }
    let (parts, body) = req.into_parts();
    let mut headers = BTreeMap::new();
    for (k, v) in &parts.headers {
        headers
            .entry(k.as_str().to_string())
            .or_insert_with(Vec::new)
            .push(String::from_utf8_lossy(v.as_bytes()).to_string());
    }
    if parts.uri.path().ends_with("/stall") {
        tokio::time::sleep(STALL).await;
    }
    if parts.uri.path().ends_with("/drip") {
        let drip = Drip { left: DRIP_CHUNKS, pause: Box::pin(tokio::time::sleep(DRIP_EVERY)) };
        return Ok(Response::new(drip.boxed_unsync()));
    }
    let body_len = body.collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
    let v = json!({
        "method": parts.method.as_str(),
        "path_and_query": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or(""),
        "headers": headers,
        "body_len": body_len,
    });
    *last.lock().expect("lock") = v.clone();
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed_unsync())
        .expect("response"))
}

impl EchoUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicU64::new(0));
        let last = Arc::new(Mutex::new(Value::Null));
        let by_key = Arc::new(Mutex::new(BTreeMap::new()));
        let counters = Counters { hits: hits.clone(), last: last.clone(), by_key: by_key.clone() };
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let c = counters.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| echo(req, c.clone()));
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Self { addr, hits, last, by_key, task: Arc::new(task) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests that reached the upstream so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// Requests that reached the upstream with this `x-gateway-key-id`.
    pub fn hits_for_key(&self, key_id: &str) -> u64 {
        self.by_key.lock().expect("lock").get(key_id).map_or(0, |t| t.len() as u64)
    }

    /// Requests of this key by the epoch-aligned window (of `window_ms`) they arrived in:
    /// window number → count.
    pub fn hits_for_key_by_window(&self, key_id: &str, window_ms: u64) -> BTreeMap<u64, u64> {
        let mut out = BTreeMap::new();
        for t in self.by_key.lock().expect("lock").get(key_id).into_iter().flatten() {
            *out.entry(t / window_ms).or_default() += 1;
        }
        out
    }

    /// The echo of the last request that reached the upstream.
    pub fn last(&self) -> Value {
        self.last.lock().expect("lock").clone()
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}
