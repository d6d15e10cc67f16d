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
    // An HTTP/1.0 client cannot read chunked: the chunked answer reaches it decoded and
    // delimited by the close of its connection.
    let text = exchange(e.port, b"GET /raw/chunked HTTP/1.0\r\nhost: x\r\n\r\n", Duration::from_secs(3)).await;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head: {text:?}"));
    let lower = head.to_ascii_lowercase();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(!lower.contains("transfer-encoding") && lower.contains("\r\nconnection: close"), "{head}");
    assert_eq!(body, "hello world");
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

/// One node started with `args` in front of the scripted upstream, with the fixture's policy
/// (keys, roles, the `/` route): the node, the upstream, the fixture and the proxy port.
async fn keyed_env(args: &[&str]) -> (TestCluster, ScriptedUpstream, chaos_tests::fixture::Fixture, u16) {
    let c = TestCluster::start(1, args).await.unwrap();
    c.wait_leader(Duration::from_secs(10)).await.unwrap();
    let up = ScriptedUpstream::start().await;
    let f = chaos_tests::fixture::install(&c, &up.url()).await;
    let port = c.nodes[&1].proxy_port;
    (c, up, f, port)
}

/// A WebSocket client on a raw connection: sends the handshake for `path` with `key` and
/// `extra` bytes in the same write, and reads the answer's head (and what came with it).
async fn ws_open(port: u16, path: &str, key: &str, extra: &[u8]) -> (tokio::net::TcpStream, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut out = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes();
    out.extend_from_slice(extra);
    s.write_all(&out).await.unwrap();
    let mut got = Vec::new();
    let mut tmp = [0u8; 4096];
    let end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut tmp)).await.unwrap().unwrap();
        assert!(n > 0, "closed before an answer: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    (s, head, got[end..].to_vec())
}

/// Reads from `s` until `want` bytes have arrived after `have`.
async fn ws_read(s: &mut tokio::net::TcpStream, mut have: Vec<u8>, want: usize) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut tmp = [0u8; 4096];
    while have.len() < want {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut tmp)).await.unwrap().unwrap();
        assert!(n > 0, "tunnel closed early: {:?}", String::from_utf8_lossy(&have));
        have.extend_from_slice(&tmp[..n]);
    }
    have
}

/// WebSocket handshakes go through every phase and, once the upstream switches, become tunnels
/// carrying bytes both ways on a connection of their own. Bytes a client sends before the 101
/// never reach an upstream that did not switch (bad-inputs A10), and a refused or failed
/// handshake never reaches the upstream at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_handshakes_become_tunnels() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (c, up, f, port) = keyed_env(&["--proxy-idle-timeout-ms", "1500"]).await;

    // Switched: the client gets the 101 with the upstream's own fields, then the upstream's
    // first bytes, then its early bytes echoed (sent upstream only after the switch), then
    // an echo of what it sends through the tunnel.
    let (mut s, head, rest) = ws_open(port, "/orders/ws-echo", &f.reader_key, b"early|").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    for field in ["upgrade: websocket", "connection: upgrade", "sec-websocket-accept: for-dghlihnhbxbszsbub25jzq=="] {
        assert!(head.contains(field), "{field} missing from {head}");
    }
    let greeting = "hello from upstream\nearly|";
    let got = ws_read(&mut s, rest, greeting.len()).await;
    assert_eq!(String::from_utf8_lossy(&got), greeting);
    s.write_all(b"ping").await.unwrap();
    assert_eq!(ws_read(&mut s, Vec::new(), 4).await, b"ping");
    // The upstream got the handshake with the gateway's identity and no credential.
    let sent = up.heads().into_iter().find(|h| h.contains("/orders/ws-echo")).expect("handshake reached the upstream");
    assert!(sent.contains("upgrade: websocket") && sent.contains("connection: upgrade"), "{sent}");
    assert!(sent.contains("x-gateway-consumer: acme") && !sent.contains("authorization"), "{sent}");
    assert!(sent.contains("sec-websocket-key: dghlihnhbxbszsbub25jzq=="), "{sent}");
    assert_eq!(c.metric(1, "raftgate_proxy_tunnels_open").await, Some(1.0));

    // An idle tunnel is closed after the idle timeout (1.5 s here).
    let mut tmp = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut tmp)).await.expect("idle tunnel closed");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while c.metric(1, "raftgate_proxy_tunnels_open").await != Some(0.0) {
        assert!(tokio::time::Instant::now() < deadline, "tunnel still counted open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Refused by the upstream: the client gets the refusal, and its early bytes never reach the
    // upstream (which counts every byte after the head for a second).
    let (mut s, head, rest) =
        ws_open(port, "/orders/ws-refuse", &f.reader_key, b"GET /orders/x HTTP/1.1\r\n\r\n").await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    // (Its early bytes, parsed as its next request, get their own answer: here a 401.)
    let answer = ws_read(&mut s, rest, 2).await;
    assert!(answer.starts_with(b"no"), "{:?}", String::from_utf8_lossy(&answer));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(up.stray(), 0, "bytes sent before the switch reached an upstream that refused it");

    // Refused by the gateway: wrong key, wrong role. The upstream never hears of them.
    let before = up.requests();
    let (_, head, _) = ws_open(port, "/orders/ws-echo", "rg_live_nope", b"early").await;
    assert!(head.starts_with("http/1.1 401"), "{head}");
    let (_, head, _) = ws_open(port, "/orders/ws-echo", &f.admin_key, b"early").await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    assert_eq!(up.requests(), before, "a refused handshake reached the upstream");

    // CONNECT (a tunnel to anywhere) is refused before any upstream, early payload and all.
    let reply = exchange(
        port,
        b"CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\nGET /orders/ok HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(up.requests(), before, "CONNECT reached the upstream");

    // Other upgrades are not offered upstream: h2c is dropped like any hop-by-hop header, and
    // the request is answered as a plain one.
    let reply = exchange(
        port,
        format!(
            "GET /orders/ok HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nUpgrade: h2c\r\n\
             Connection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nConnection: close\r\n\r\n",
            f.reader_key
        )
        .as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let plain = up.heads().into_iter().rev().find(|h| h.contains("/orders/ok")).unwrap();
    assert!(!plain.contains("upgrade") && !plain.contains("http2-settings"), "{plain}");

    // Every handshake was audited with its answer, and the tunnel's end with how it ended, how
    // long it lasted and the bytes it carried: in, `early|` and `ping`; out, the upstream's
    // greeting and the two echoes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, audit) = c.get(1, "/v1/audit?limit=1000").await.unwrap();
        let events: Vec<&serde_json::Value> = audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["path"].as_str().is_some_and(|p| p.starts_with("/orders/ws-")))
            .collect();
        let mut seen: Vec<(u64, String)> =
            events.iter().map(|v| (v["status"].as_u64().unwrap(), v["reason"].as_str().unwrap().to_string())).collect();
        seen.sort_unstable();
        if seen.len() == 5 {
            let statuses: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
            assert_eq!(statuses, [101, 101, 401, 403, 403], "{seen:?}");
            let closed = events.iter().find(|v| v["reason"] == "tunnel_idle").expect("the tunnel's end is audited");
            assert_eq!((closed["bytes_in"].as_u64(), closed["bytes_out"].as_u64()), (Some(10), Some(30)), "{closed}");
            assert!(closed["latency_us"].as_u64().unwrap() >= 1_500_000, "lasted past the idle timeout: {closed}");
            assert_eq!(closed["consumer"], "acme");
            let opened = events.iter().find(|v| v["status"] == 101 && v["reason"] == "ok").unwrap();
            assert_eq!(opened["key_id"], closed["key_id"]);
            assert!(opened["bytes_in"].is_null(), "{opened}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "audit {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A tunnel keeps its connection's slots after hyper has let go of the connection: with two
/// connections allowed per client IP, two open tunnels leave no room for a third connection,
/// and a tunnel that ends gives its slot back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_holds_its_connection_slot() {
    use chaos_tests::raw::closed_at_once;
    // `_up` keeps the upstream serving until the test ends.
    let (c, _up, f, port) = keyed_env(&["--proxy-connections-per-ip-max", "2"]).await;
    let here: std::net::IpAddr = [127, 0, 0, 1].into();
    let (first, head, _) = ws_open(port, "/orders/ws-echo", &f.reader_key, b"").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let (_second, head, _) = ws_open(port, "/orders/ws-echo", &f.reader_key, b"").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(closed_at_once(port, here, Duration::from_secs(2)).await, "a third connection got in beside two tunnels");
    // The client closes one tunnel; the upstream sees the end, and the slot comes back.
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while c.metric(1, "raftgate_proxy_tunnels_open").await != Some(1.0) {
        assert!(tokio::time::Instant::now() < deadline, "the closed tunnel is still counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!closed_at_once(port, here, Duration::from_secs(2)).await, "the ended tunnel kept its slot");
}
