//! A webhook receiver for alert tests: records every POST (headers and body) and answers 200,
//! or a chosen failure status for the first few calls.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use sha2::Sha256;
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Delivery {
    pub alert_id: String,
    pub signature: String,
    pub body: String,
}

impl Delivery {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// Whether the signature is `sha256=` + HMAC-SHA256(secret, body).
    pub fn signed_with(&self, secret: &str) -> bool {
        let Some(hex_sig) = self.signature.strip_prefix("sha256=") else { return false };
        let Ok(sig) = hex::decode(hex_sig) else { return false };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(self.body.as_bytes());
        mac.verify_slice(&sig).is_ok()
    }
}

#[derive(Clone)]
pub struct WebhookReceiver {
    pub addr: std::net::SocketAddr,
    got: Arc<Mutex<Vec<Delivery>>>,
    /// Calls still to be refused with 503 before answering 200.
    fail_next: Arc<AtomicU32>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

async fn handle(
    req: Request<Incoming>,
    got: Arc<Mutex<Vec<Delivery>>>,
    fail_next: Arc<AtomicU32>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header =
        |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string).unwrap_or_default();
    let (alert_id, signature) = (header("x-raftgate-alert-id"), header("x-raftgate-signature"));
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        return Ok(Response::builder().status(503).body(Full::new(Bytes::new())).expect("response"));
    }
    got.lock().expect("lock").push(Delivery { alert_id, signature, body: String::from_utf8_lossy(&body).to_string() });
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

impl WebhookReceiver {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind webhook");
        let addr = listener.local_addr().expect("addr");
        let got: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let fail_next = Arc::new(AtomicU32::new(0));
        let (g, f) = (got.clone(), fail_next.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (g, f) = (g.clone(), f.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(req, g.clone(), f.clone()));
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Self { addr, got, fail_next, task: Arc::new(task) }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Refuse the next `n` calls with 503 (to exercise retries).
    pub fn fail_next(&self, n: u32) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Every delivery accepted so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().expect("lock").clone()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}
