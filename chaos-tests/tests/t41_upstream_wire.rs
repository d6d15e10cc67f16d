//! What the node does with what an upstream sends: a real node process in front of
//! [`ScriptedUpstream`], which answers with exact bytes. Connections are reused only after an
//! answer whose end was certain; a connection the upstream closed while idle costs an idempotent
//! request nothing; every framing RFC 9112 allows reaches the client intact; a malformed or
//! ambiguous answer is a 502, never a guess; an early answer to an upload is relayed.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::time::Duration;

use chaos_tests::fixture::ok;
use chaos_tests::raw::exchange;
use chaos_tests::scripted::ScriptedUpstream;
use chaos_tests::TestCluster;
use serde_json::json;

struct Env {
    c: TestCluster,
    up: ScriptedUpstream,
    http: reqwest::Client,
    proxy: String,
    port: u16,
}

/// One node, one public route `/raw` → the scripted upstream.
async fn env() -> Env {
    let c = TestCluster::start(1, &[]).await.unwrap();
    c.wait_leader(Duration::from_secs(10)).await.unwrap();
    let up = ScriptedUpstream::start().await;
    let route = json!({ "path_prefix": "/raw", "upstreams": [up.url()], "auth": ["none"] });
    ok(&c, reqwest::Method::PUT, "/v1/routes/raw", route).await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let proxy = c.nodes[&1].proxy_url();
    let port = c.nodes[&1].proxy_port;
    Env { c, up, http, proxy, port }
}

impl Env {
    async fn get(&self, name: &str) -> (u16, Result<String, reqwest::Error>) {
        let resp = self.http.get(format!("{}/raw/{name}", self.proxy)).send().await;
        let resp = resp.unwrap_or_else(|e| panic!("GET /raw/{name}: {e:?}"));
        (resp.status().as_u16(), resp.text().await)
    }

    /// The audit reasons of the node's access events for `/raw/{name}`, once there are `n` (the
    /// writer stores events a moment after the answer; waits up to 5 s).
    async fn reasons(&self, name: &str, n: usize) -> Vec<String> {
        let path = format!("/raw/{name}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (s, audit) = self.c.get(1, "/v1/audit?limit=1000").await.unwrap();
            assert_eq!(s, 200, "{audit}");
            let found: Vec<String> = audit["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| v["kind"] == "access" && v["path"] == path.as_str())
                .map(|v| v["reason"].as_str().unwrap_or_default().to_string())
                .collect();
            if found.len() >= n || tokio::time::Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_reused_and_a_silent_close_costs_nothing() {
    let e = env().await;
    // One client connection, forty requests: the node keeps its upstream connection.
    for i in 0..40 {
        let (status, body) = e.get("ok").await;
        assert_eq!((status, body.unwrap().as_str()), (200, "ok"), "request {i}");
    }
    assert_eq!(e.up.requests(), 40);
    assert!(e.up.connections() <= 2, "{} upstream connections for 40 requests", e.up.connections());
    // The upstream closes after every answer without saying so. Whether the node sees the close
    // before reusing the connection or only when it is sent on, every GET is answered, and the
    // upstream reads each exactly once.
    let before = e.up.connections();
    for i in 0..40 {
        let (status, body) = e.get("close-after").await;
        assert_eq!((status, body.unwrap().as_str()), (200, "ok"), "request {i}");
    }
    assert_eq!(e.up.requests(), 80);
    // Each connection the `ok` requests left pooled (one, or two when the proxy threads each
    // kept one) may carry one of them; every other answer needed a new connection, as the one
    // before it had been closed. A closed connection used again would show as fewer.
    assert!(
        e.up.connections() - before >= 40 - before,
        "a closed connection was reused: {} new connections for 40 answers that each closed theirs ({before} before)",
        e.up.connections() - before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_framing_reaches_the_client_intact() {
    let e = env().await;
    // Chunked with extensions and trailers; the trailers are dropped, the data is whole.
    assert_eq!(e.get("chunked").await.1.unwrap(), "hello world");
    // No length: the body ends when the upstream closes.
    assert_eq!(e.get("eof").await.1.unwrap(), "until close");
    // Both Transfer-Encoding and Content-Length: chunked wins (and the connection is not reused).
    let before = e.up.connections();
    assert_eq!(e.get("cl-te").await.1.unwrap(), "wire");
    assert_eq!(e.get("cl-te").await.1.unwrap(), "wire");
    assert_eq!(e.up.connections() - before, 2, "a connection after an ambiguous answer was reused");
    // A chunked answer is reusable: these need at most one new connection per proxy thread
    // (the client's connections may be on either).
    let before = e.up.connections();
    for _ in 0..10 {
        assert_eq!(e.get("chunked").await.1.unwrap(), "hello world");
    }
    assert!(e.up.connections() - before <= 2, "{} connections for 10 answers", e.up.connections() - before);
    // Answers with nothing after the head (204, a zero length) leave their connection reusable.
    let before = e.up.connections();
    for name in ["empty", "zero"].repeat(5) {
        let (status, body) = e.get(name).await;
        assert_eq!((status, body.unwrap().as_str()), (if name == "empty" { 204 } else { 200 }, ""));
    }
    assert!(e.up.connections() - before <= 2, "{} connections for 10 empty answers", e.up.connections() - before);
    // HEAD: the length is the GET's, no body follows, and the connection stays usable.
    let head = e.http.head(format!("{}/raw/ok", e.proxy)).send().await.unwrap();
    let length = head.headers().get("content-length").map(|v| v.to_str().unwrap().to_string());
    assert_eq!((head.status().as_u16(), length.as_deref()), (200, Some("2")));
    assert_eq!(e.get("ok").await.1.unwrap(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_ambiguous_answers_are_502() {
    let e = env().await;
    for name in ["bad-length", "two-lengths", "garbage", "switch", "huge-head"] {
        assert_eq!(e.get(name).await.0, 502, "{name}");
        assert_eq!(e.reasons(name, 1).await, ["upstream_error"], "{name}");
    }
    // A body cut short is never passed off as complete: the client's read fails.
    let (status, body) = e.get("cut").await;
    assert_eq!(status, 200);
    assert!(body.is_err(), "a 10-byte body cut at 3 bytes read as {body:?}");
    // The node still serves.
    assert_eq!(e.get("ok").await.1.unwrap(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_stream_and_early_answers_are_relayed() {
    let e = env().await;
    // 1 MiB with a length, and 1 MiB chunked (no length): the upstream reads all of it, after an
    // interim 100 it sent unasked.
    let mib = vec![b'x'; 1 << 20];
    let r = e.http.post(format!("{}/raw/continue", e.proxy)).body(mib.clone()).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.text().await.unwrap()), (200, "1048576".to_string()));
    let mut chunked =
        b"POST /raw/ok HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
    for c in mib.chunks(64 * 1024) {
        chunked.extend(format!("{:x}\r\n", c.len()).as_bytes());
        chunked.extend(c);
        chunked.extend(b"\r\n");
    }
    chunked.extend(b"0\r\n\r\n");
    let reply = exchange(e.port, &chunked, Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 200") && reply.ends_with("\r\n\r\nok"), "{reply:?}");
    // The upstream refuses an upload from its head: the client gets that 413, not a 502, even
    // though it has sent only part of the 4 MiB it announced.
    let head = "POST /raw/early-413 HTTP/1.1\r\nhost: x\r\ncontent-length: 4194304\r\n\r\n";
    let mut req = head.as_bytes().to_vec();
    req.extend(std::iter::repeat_n(b'y', 64 * 1024));
    let reply = exchange(e.port, &req, Duration::from_secs(3)).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply:?}");
}
