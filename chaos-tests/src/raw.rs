//! Raw HTTP/1 over TCP, for requests no well-behaved client would send (smuggling, slowloris).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `bytes`, then reads until the server closes or `wait` passes. Returns what was read
/// and whether the server closed the connection.
async fn send_and_read(port: u16, bytes: &[u8], wait: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + wait;
    let closed = loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Err(_) => break false,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    };
    (String::from_utf8_lossy(&out).to_string(), closed)
}

/// Sends `bytes` and reads until the server closes or `wait` passes. Returns what was read.
pub async fn exchange(port: u16, bytes: &[u8], wait: Duration) -> String {
    send_and_read(port, bytes, wait).await.0
}

/// The status code of the first response in `text`, if any.
pub fn status(text: &str) -> Option<u16> {
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// The first response's status, and whether the server closed the connection within `wait`.
pub async fn closes_within(port: u16, bytes: &[u8], wait: Duration) -> (Option<u16>, bool) {
    let (text, closed) = send_and_read(port, bytes, wait).await;
    (status(&text), closed)
}
