//! Raw HTTP/1 over TCP, for requests no well-behaved client would send (smuggling, slowloris).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `bytes`, then reads until the server closes or `wait` passes. Returns what was read
/// and whether the server closed the connection.
pub async fn send_and_read(port: u16, bytes: &[u8], wait: Duration) -> (String, bool) {
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

    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;

    /// Error codes (RFC 9113 §7).
    pub const PROTOCOL_ERROR: u32 = 0x1;
    pub const REFUSED_STREAM: u32 = 0x7;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;

    /// A frame the server sent.
    #[derive(Debug, Clone)]
    pub struct Frame {
        pub kind: u8,
        pub flags: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    impl Frame {
        /// The error code of a RST_STREAM or GOAWAY frame.
        pub fn error_code(&self) -> Option<u32> {
            let at = match self.kind {
                RST_STREAM => 0,
                GOAWAY => 4,
                _ => return None,
            };
            Some(u32::from_be_bytes(self.payload.get(at..at + 4)?.try_into().ok()?))
        }

        /// The `:status` of a response HEADERS frame that is the first response on its
        /// connection (so the HPACK dynamic table is still empty: see [`status_of`]).
        pub fn status(&self) -> Option<u16> {
            (self.kind == HEADERS).then(|| status_of(&self.payload)).flatten()
        }
    }

    /// What the server sent on one connection: its frames, and whether it closed.
    #[derive(Debug, Default)]
    pub struct Reply {
        pub frames: Vec<Frame>,
        pub closed: bool,
    }

    impl Reply {
        /// The error code the server reset `stream` with, if it did.
        pub fn reset(&self, stream: u32) -> Option<u32> {
            self.frames.iter().find(|f| f.kind == RST_STREAM && f.stream == stream)?.error_code()
        }

        /// The GOAWAY's error code, if the server sent one.
        pub fn goaway(&self) -> Option<u32> {
            self.frames.iter().find(|f| f.kind == GOAWAY)?.error_code()
        }

        /// Response HEADERS frames sent for `stream`.
        pub fn responses(&self, stream: u32) -> impl Iterator<Item = &Frame> {
            self.frames.iter().filter(move |f| f.kind == HEADERS && f.stream == stream)
        }

        /// The frame types, in order.
        pub fn kinds(&self) -> Vec<u8> {
            self.frames.iter().map(|f| f.kind).collect()
        }
    }

    /// The `:status` at the head of a response header block, decoded without a dynamic table:
    /// an indexed static entry (200, 204, 206, 304, 400, 404, 500) or a literal whose name is
    /// the static `:status` and whose value is digits, plain or Huffman-coded. A server puts
    /// `:status` first; with an empty dynamic table it can only be one of these forms.
    pub fn status_of(block: &[u8]) -> Option<u16> {
        let b0 = *block.first()?;
        if b0 & 0x80 != 0 {
            return [200, 204, 206, 304, 400, 404, 500].get(usize::from(b0 & 0x7f).checked_sub(8)?).copied();
        }
        let name = if b0 & 0xc0 == 0x40 { b0 & 0x3f } else { b0 & 0x0f };
        if !(8..=14).contains(&name) {
            return None;
        }
        let (h, len) = (block.get(1)? & 0x80 != 0, usize::from(block.get(1)? & 0x7f));
        let value = block.get(2..2 + len)?;
        let digits = if h { huffman_digits(value)? } else { std::str::from_utf8(value).ok()?.to_string() };
        digits.parse().ok()
    }

    /// Decodes a Huffman-coded string of ASCII digits (RFC 7541 Appendix B: '0'–'2' are the
    /// 5-bit codes 0–2, '3'–'9' the 6-bit codes 25–31); anything else is `None`.
    fn huffman_digits(bytes: &[u8]) -> Option<String> {
        let bits: Vec<u8> = bytes.iter().flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1)).collect();
        let take = |at: usize, n: usize| -> Option<u8> {
            bits.get(at..at + n).map(|s| s.iter().fold(0u8, |acc, b| (acc << 1) | b))
        };
        let (mut out, mut at) = (String::new(), 0);
        while at < bits.len() {
            // The rest is padding if it is all ones (the EOS prefix), shorter than a byte.
            if bits.len() - at < 8 && bits[at..].iter().all(|b| *b == 1) {
                break;
            }
            match take(at, 5)? {
                v @ 0..=2 => {
                    out.push(char::from(b'0' + v));
                    at += 5;
                }
                _ => match take(at, 6)? {
                    v @ 25..=31 => {
                        out.push(char::from(b'3' + v - 25));
                        at += 6;
                    }
                    _ => return None,
                },
            }
        }
        Some(out)
    }

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

    /// Connects, sends the preface and SETTINGS, waits for the server's SETTINGS and
    /// acknowledges them, so the server's limits (concurrent streams, header list size) are in
    /// force from the first request.
    pub async fn connect_acked(port: u16) -> TcpStream {
        let mut s = connect(port).await;
        let r = read_until(&mut s, std::time::Duration::from_secs(5), |r| {
            r.frames.iter().any(|f| f.kind == SETTINGS && f.flags & ACK == 0)
        })
        .await;
        assert!(!r.closed, "the server closed the connection during the handshake: {r:?}");
        s.write_all(&frame(SETTINGS, ACK, 0, &[])).await.expect("settings ack");
        s
    }

    /// Reads frames until `done` holds for what has been read, the server closes, or `wait`
    /// passes. Answers the server's PINGs, as a live client does.
    pub async fn read_until(s: &mut TcpStream, wait: std::time::Duration, done: impl Fn(&Reply) -> bool) -> Reply {
        read_frames_until(s, wait, true, done).await
    }

    /// As [`read_until`], but never answers a PING: a client that has gone quiet.
    pub async fn read_until_deaf(s: &mut TcpStream, wait: std::time::Duration, done: impl Fn(&Reply) -> bool) -> Reply {
        read_frames_until(s, wait, false, done).await
    }

    async fn read_frames_until(
        s: &mut TcpStream,
        wait: std::time::Duration,
        ack_pings: bool,
        done: impl Fn(&Reply) -> bool,
    ) -> Reply {
        let deadline = tokio::time::Instant::now() + wait;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        let mut reply = Reply::default();
        loop {
            match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    reply.closed = true;
                    return reply;
                }
                Err(_) => return reply,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            }
            // Take every whole frame read so far.
            let mut at = 0;
            while at + 9 <= buf.len() {
                let len = (usize::from(buf[at]) << 16) | (usize::from(buf[at + 1]) << 8) | usize::from(buf[at + 2]);
                if at + 9 + len > buf.len() {
                    break;
                }
                let f = Frame {
                    kind: buf[at + 3],
                    flags: buf[at + 4],
                    stream: u32::from_be_bytes([buf[at + 5], buf[at + 6], buf[at + 7], buf[at + 8]]) & 0x7fff_ffff,
                    payload: buf[at + 9..at + 9 + len].to_vec(),
                };
                if ack_pings && f.kind == PING && f.flags & ACK == 0 {
                    let _ = s.write_all(&frame(PING, ACK, 0, &f.payload)).await;
                }
                reply.frames.push(f);
                at += 9 + len;
            }
            buf.drain(..at);
            if done(&reply) {
                return reply;
            }
        }
    }

    /// Reads frames until the server closes or `wait` passes: the frame types seen, and
    /// whether the connection was closed.
    pub async fn read_frames(s: &mut TcpStream, wait: std::time::Duration) -> (Vec<u8>, bool) {
        let r = read_until(s, wait, |_| false).await;
        (r.kinds(), r.closed)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn status_forms() {
            assert_eq!(status_of(&[0x88]), Some(200));
            assert_eq!(status_of(&[0x8c]), Some(400));
            assert_eq!(status_of(&[0x48, 0x03, b'4', b'0', b'3']), Some(403));
            // "431" Huffman-coded: 011010 011001 00001, then 111 padding.
            assert_eq!(status_of(&[0x48, 0x82, 0b0110_1001, 0b1001_0000, 0b1111_1111][..4]), None);
            assert_eq!(status_of(&[0x48, 0x83, 0b0110_1001, 0b1001_0000, 0b1111_1111]), Some(431));
            // "429": 011010 00010 011111, then 1 padding bit.
            assert_eq!(status_of(&[0x48, 0x83, 0b0110_1000, 0b0100_1111, 0b1111_1111]), Some(429));
            assert_eq!(status_of(&[0x41, 0x01, b'x']), None);
        }
    }
}
