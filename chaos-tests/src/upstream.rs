//! A real upstream for data-plane tests: an HTTP/1.1 server on a loopback port that answers
//! every request with a JSON echo of what it received and counts what reached it.

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
    task: Arc<tokio::task::JoinHandle<()>>,
}

async fn echo(
    req: Request<Incoming>,
    hits: Arc<AtomicU64>,
    last: Arc<Mutex<Value>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    hits.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let mut headers = BTreeMap::new();
    for (k, v) in &parts.headers {
        headers
            .entry(k.as_str().to_string())
            .or_insert_with(Vec::new)
            .push(String::from_utf8_lossy(v.as_bytes()).to_string());
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
        .body(Full::new(Bytes::from(v.to_string())))
        .expect("response"))
}

impl EchoUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicU64::new(0));
        let last = Arc::new(Mutex::new(Value::Null));
        let (h, l) = (hits.clone(), last.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (h, l) = (h.clone(), l.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| echo(req, h.clone(), l.clone()));
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Self { addr, hits, last, task: Arc::new(task) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests that reached the upstream so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
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
