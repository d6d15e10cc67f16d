//! TLS on the proxy listener, against a real node: HTTPS over HTTP/1.1 and HTTP/2 (ALPN), the
//! certificate reloaded without a restart, a broken renewal ignored, a client that never sends
//! its ClientHello cut off at the handshake deadline (bad-inputs B9), a ClientHello followed by
//! a close handled without a spin (B10), a bad certificate at startup refused by name, and a
//! WebSocket tunnel inside a TLS session.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chaos_tests::fixture::install;
use chaos_tests::{EchoUpstream, TestCluster};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A test CA and leaf certificates for `localhost` signed by it.
struct Pki {
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        Self { ca, ca_key }
    }

    /// (certificate PEM, key PEM, certificate DER) of a new leaf.
    fn leaf(&self) -> (String, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &self.ca, &self.ca_key)
            .unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

struct Answer {
    version: http::Version,
    status: u16,
    body: String,
    /// The DER of the certificate the server presented.
    peer: Vec<u8>,
}

/// Writes a new leaf as `proxy.crt` and `proxy.key` in `dir`: their paths, and the leaf's DER.
fn write_leaf(pki: &Pki, dir: &std::path::Path) -> (String, String, Vec<u8>) {
    let (cert_path, key_path) = (dir.join("proxy.crt"), dir.join("proxy.key"));
    let (cert, key, der) = pki.leaf();
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    (cert_path.display().to_string(), key_path.display().to_string(), der)
}

/// A TLS session with the node's proxy on `port` for `localhost`, trusting `ca`, offering `alpn`.
async fn tls_connect(
    port: u16,
    ca: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// One HTTPS GET with the key, offering `alpn`.
async fn https(port: u16, ca: &CertificateDer<'static>, alpn: &[&[u8]], path: &str, key: &str) -> Answer {
    let tls = tls_connect(port, ca, alpn).await;
    let peer = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let resp = if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        let req = http::Request::get(format!("https://localhost{path}"))
            .header("authorization", format!("Bearer {key}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header("host", "localhost")
            .header("authorization", format!("Bearer {key}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        send.send_request(req).await.unwrap()
    };
    let (version, status) = (resp.version(), resp.status().as_u16());
    let body = String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).to_string();
    Answer { version, status, body, peer }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_h2_and_reload_without_restart() {
    let pki = Pki::new();
    let ca = CertificateDer::from(pki.ca.der().to_vec());
    let dir = tempfile::tempdir().unwrap();
    let (cp, kp, der1) = write_leaf(&pki, dir.path());
    let c = TestCluster::start(
        1,
        &["--proxy-tls-cert-file", &cp, "--proxy-tls-key-file", &kp, "--proxy-header-read-timeout-ms", "1000"],
    )
    .await
    .unwrap();
    c.wait_leader(Duration::from_secs(10)).await.unwrap();
    let up = EchoUpstream::start().await;
    let f = install(&c, &up.url()).await;
    let port = c.nodes[&1].proxy_port;

    // HTTP/1.1 and HTTP/2 over TLS; the upstream hears it came over https.
    let a = https(port, &ca, &[b"http/1.1"], "/orders/1", &f.reader_key).await;
    assert_eq!((a.version, a.status), (http::Version::HTTP_11, 200), "{}", a.body);
    assert!(a.body.contains(r#""x-forwarded-proto":["https"]"#), "{}", a.body);
    assert_eq!(a.peer, der1);
    let a = https(port, &ca, &[b"h2", b"http/1.1"], "/orders/1", &f.reader_key).await;
    assert_eq!((a.version, a.status), (http::Version::HTTP_2, 200), "{}", a.body);
    // The same policy decisions over TLS: a bad key is 401.
    let a = https(port, &ca, &[b"h2"], "/orders/1", "rgk_nonsense").await;
    assert_eq!(a.status, 401);

    // A renewed certificate is served to new connections within the reload period.
    let (cert2, key2, der2) = pki.leaf();
    std::fs::write(&kp, &key2).unwrap();
    std::fs::write(&cp, &cert2).unwrap();
    let started = Instant::now();
    loop {
        let a = https(port, &ca, &[b"h2"], "/orders/1", &f.reader_key).await;
        if a.peer == der2 {
            assert_eq!(a.status, 200);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(6), "the renewed certificate was not picked up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A broken renewal is refused and the working certificate stays in service.
    std::fs::write(&cp, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n").unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let a = https(port, &ca, &[b"h2"], "/orders/1", &f.reader_key).await;
    assert_eq!((a.status, a.peer == der2), (200, true), "the previous certificate stays");

    // B9: a client that connects and never sends its ClientHello is cut off at the handshake
    // deadline (the header-read timeout, 1 s here).
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "closed, not left open: {r:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "closed at the handshake deadline: {:?}", started.elapsed());

    // B10: a ClientHello and then a close leaves the node serving (no spin, no crash).
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let hello = [0x16u8, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00];
    s.write_all(&hello).await.unwrap();
    drop(s);
    let a = https(port, &ca, &[b"http/1.1"], "/orders/1", &f.reader_key).await;
    assert_eq!(a.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_certificate_at_startup_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("missing.crt");
    let key = dir.path().join("missing.key");
    let out = std::process::Command::new(chaos_tests::node::raftgate_bin())
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--proxy-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0"])
        .arg("--proxy-tls-cert-file")
        .arg(&cert)
        .arg("--proxy-tls-key-file")
        .arg(&key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("proxy_tls_cert_file") && err.contains("missing.crt"), "{err}");
    // Only one of the pair: refused, naming the missing one.
    let out = std::process::Command::new(chaos_tests::node::raftgate_bin())
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data2"))
        .arg("--proxy-tls-cert-file")
        .arg(&cert)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("proxy_tls_key_file"), "{err}");
}

/// A WebSocket handshake over TLS (HTTP/1.1 by ALPN) becomes a tunnel like one in the clear:
/// the 101 comes back over TLS, and bytes cross both ways inside the TLS session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_tls_becomes_a_tunnel() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cp, kp, _) = write_leaf(&pki, dir.path());
    let c = TestCluster::start(1, &["--proxy-tls-cert-file", &cp, "--proxy-tls-key-file", &kp]).await.unwrap();
    c.wait_leader(Duration::from_secs(10)).await.unwrap();
    let up = chaos_tests::scripted::ScriptedUpstream::start().await;
    let f = install(&c, &up.url()).await;

    let ca = CertificateDer::from(pki.ca.der().to_vec());
    let mut tls = tls_connect(c.nodes[&1].proxy_port, &ca, &[b"http/1.1"]).await;
    let handshake = format!(
        "GET /orders/ws-echo HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        f.reader_key
    );
    tls.write_all(handshake.as_bytes()).await.unwrap();
    // The head, then the upstream's greeting, then an echo of what the client sends.
    let greeting = "hello from upstream\n";
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            if got.len() >= i + 4 + greeting.len() {
                break i + 4;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert_eq!(&got[head_end..], greeting.as_bytes());
    tls.write_all(b"over tls").await.unwrap();
    let mut echo = Vec::new();
    while echo.len() < 8 {
        let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "tunnel closed early");
        echo.extend_from_slice(&buf[..n]);
    }
    assert_eq!(echo, b"over tls");
    // The upstream heard that the client came over https.
    let sent = up.heads().into_iter().find(|h| h.contains("/orders/ws-echo")).unwrap();
    assert!(sent.contains("x-forwarded-proto: https"), "{sent}");
}
