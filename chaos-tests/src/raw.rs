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

/// Drips `bytes` one at a time, `every` apart, and reports how long the server took to close
/// the connection (`None` if it was still open after all bytes or `limit`).
pub async fn drip_until_closed(port: u16, bytes: &[u8], every: Duration, limit: Duration) -> Option<Duration> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 1024];
    for b in bytes {
        if started.elapsed() > limit {
            return None;
        }
        if s.write_all(&[*b]).await.is_err() {
            return Some(started.elapsed());
        }
        // Between bytes, watch for the server closing (or answering, then closing).
        match tokio::time::timeout(every, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    None
}

/// Opens `n` connections from `source` that send nothing, and keeps them open.
pub async fn idle_connections(port: u16, source: std::net::IpAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.bind((source, 0).into()).expect("bind source address");
        out.push(sock.connect(([127, 0, 0, 1], port).into()).await.expect("connect"));
    }
    out
}

/// Whether the server closes a fresh, silent connection from `source` within `wait`.
pub async fn closed_at_once(port: u16, source: std::net::IpAddr, wait: Duration) -> bool {
    let mut conns = idle_connections(port, source, 1).await;
    let mut buf = [0u8; 16];
    matches!(tokio::time::timeout(wait, conns[0].read(&mut buf)).await, Ok(Ok(0)) | Ok(Err(_)))
}

/// Sends `head` at once, then a body of `len` bytes one byte `every` apart, reading whatever the
/// server answers; stops when the server closes or `limit` passes. Returns what was read and
/// whether the server closed the connection.
pub async fn trickle_body(port: u16, head: &[u8], len: usize, every: Duration, limit: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    s.write_all(head).await.expect("send head");
    let started = tokio::time::Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let mut sent = 0;
    while started.elapsed() < limit {
        if sent < len {
            if s.write_all(b"x").await.is_err() {
                // The server closed its side; read what it said.
                while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
                    if n == 0 {
                        break;
                    }
                    out.extend_from_slice(&buf[..n]);
                }
                return (String::from_utf8_lossy(&out).to_string(), true);
            }
            sent += 1;
        }
        match tokio::time::timeout(every, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).to_string(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    (String::from_utf8_lossy(&out).to_string(), false)
}

/// Raw HTTP/2 frames over cleartext (prior knowledge), for floods no well-behaved client sends.
pub mod h2 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const GOAWAY: u8 = 0x7;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;

    /// One frame: 9-byte header and payload.
    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// An HPACK header block of literal fields without indexing (no Huffman), lengths < 127.
    pub fn block(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (name, value) in fields {
            b.push(0x00);
            b.push(name.len() as u8);
            b.extend_from_slice(name.as_bytes());
            b.push(value.len() as u8);
            b.extend_from_slice(value.as_bytes());
        }
        b
    }

    /// Connects and sends the client preface and an empty SETTINGS frame.
    pub async fn connect(port: u16) -> TcpStream {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.expect("preface");
        s.write_all(&frame(SETTINGS, 0, 0, &[])).await.expect("settings");
        s
    }

    /// Reads frames until the server closes or `wait` passes: the frame types seen, and
    /// whether the connection was closed.
    pub async fn read_frames(s: &mut TcpStream, wait: std::time::Duration) -> (Vec<u8>, bool) {
        let deadline = tokio::time::Instant::now() + wait;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        let closed = loop {
            match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Err(_) => break false,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let mut kinds = Vec::new();
        let mut at = 0;
        while at + 9 <= buf.len() {
            let len = (usize::from(buf[at]) << 16) | (usize::from(buf[at + 1]) << 8) | usize::from(buf[at + 2]);
            kinds.push(buf[at + 3]);
            at += 9 + len;
        }
        (kinds, closed)
    }
}
