//! An upstream that answers with exact bytes, for the cases a well-behaved server never
//! produces: connections closed without a word, chunked bodies with trailers, bodies that end at
//! close, lengths that are missing, conflicting or cut short, interim and early answers, and
//! heads that are not HTTP at all. The last path segment picks the answer (see [`answer`]).
//! `ws-echo` and `ws-refuse` answer WebSocket handshakes: the first switches and echoes what it
//! is sent, the second refuses and counts any byte that still arrives ([`ScriptedUpstream::stray`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct ScriptedUpstream {
    pub addr: std::net::SocketAddr,
    connections: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    stray: Arc<AtomicU64>,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

/// What one connection's handler shares with the test.
#[derive(Clone)]
struct Seen {
    requests: Arc<AtomicU64>,
    stray: Arc<AtomicU64>,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ScriptedUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind scripted upstream");
        let addr = listener.local_addr().expect("local addr");
        let (connections, requests) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (stray, heads) = (Arc::new(AtomicU64::new(0)), Arc::default());
        let seen = Seen { requests: requests.clone(), stray: Arc::clone(&stray), heads: Arc::clone(&heads) };
        let conns = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                conns.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, seen.clone()));
            }
        });
        Self { addr, connections, requests, stray, heads, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Request heads read so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Bytes that arrived after a refused WebSocket handshake's head (there should be none).
    pub fn stray(&self) -> u64 {
        self.stray.load(Ordering::SeqCst)
    }

    /// The request heads read so far (lower-cased), oldest first.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What happens to the connection after an answer.
enum Then {
    KeepAlive,
    Close,
}

/// The answer to a request whose path ends in `name`, and whether to read its body first.
fn answer(name: &str) -> (Vec<u8>, Then) {
    let fixed = |s: &str, then| (s.as_bytes().to_vec(), then);
    match name {
        "ok" => fixed("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", Then::KeepAlive),
        "empty" => fixed("HTTP/1.1 204 No Content\r\n\r\n", Then::KeepAlive),
        "zero" => fixed("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", Then::KeepAlive),
        // Keep-alive by the headers, then closed anyway: the next request on it finds it shut.
        "close-after" => fixed("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", Then::Close),
        "chunked" => fixed(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n\
             5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-sum: 11\r\n\r\n",
            Then::KeepAlive,
        ),
        "eof" => fixed("HTTP/1.1 200 OK\r\n\r\nuntil close", Then::Close),
        "cl-te" => fixed(
            "HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n4\r\nwire\r\n0\r\n\r\n",
            Then::KeepAlive,
        ),
        "bad-length" => fixed("HTTP/1.1 200 OK\r\ncontent-length: abc\r\n\r\nok", Then::Close),
        "two-lengths" => fixed("HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok", Then::Close),
        "garbage" => fixed("SSH-2.0-OpenSSH_9.2\r\n\r\n", Then::Close),
        "switch" => {
            fixed("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n", Then::Close)
        }
        "huge-head" => {
            let mut s = String::from("HTTP/1.1 200 OK\r\n");
            for i in 0..20 {
                s.push_str(&format!("x-pad-{i}: {}\r\n", "p".repeat(4000)));
            }
            s.push_str("content-length: 0\r\n\r\n");
            (s.into_bytes(), Then::Close)
        }
        "cut" => fixed("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", Then::Close),
        _ => fixed("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n", Then::KeepAlive),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads until `buf` holds `n` bytes, or the peer closes.
async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> bool {
    let mut tmp = vec![0u8; 64 * 1024];
    while buf.len() < n {
        match s.read(&mut tmp).await {
            Ok(0) | Err(_) => return false,
            Ok(k) => buf.extend_from_slice(&tmp[..k]),
        }
    }
    true
}

/// Reads until `buf` contains `needle`; its end offset.
async fn fill_until(s: &mut TcpStream, buf: &mut Vec<u8>, needle: &[u8]) -> Option<usize> {
    let mut tmp = vec![0u8; 64 * 1024];
    loop {
        if let Some(i) = find(buf, needle) {
            return Some(i + needle.len());
        }
        match s.read(&mut tmp).await {
            Ok(0) | Err(_) => return None,
            Ok(k) => buf.extend_from_slice(&tmp[..k]),
        }
    }
}

/// A WebSocket handshake: switch (`accept`) and then echo every byte back until the peer closes,
/// with a greeting sent in the same write as the 101; or refuse with a 403 and count whatever
/// else arrives on the connection in the next second.
async fn websocket(mut s: TcpStream, mut buf: Vec<u8>, head: &str, accept: bool, seen: Seen) {
    if !accept {
        let _ = s.write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\nno").await;
        let mut stray = buf.len() as u64;
        let mut tmp = vec![0u8; 64 * 1024];
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(k) = s.read(&mut tmp).await {
                if k == 0 {
                    break;
                }
                stray += k as u64;
            }
        })
        .await;
        seen.stray.fetch_add(stray, Ordering::SeqCst);
        return;
    }
    let key = head.lines().find_map(|l| l.strip_prefix("sec-websocket-key:")).unwrap_or("").trim().to_string();
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
         sec-websocket-accept: for-{key}\r\n\r\nhello from upstream\n"
    );
    if s.write_all(answer.as_bytes()).await.is_err() {
        return;
    }
    // Anything that came with the head is the new protocol's already.
    if !buf.is_empty() && s.write_all(&buf).await.is_err() {
        return;
    }
    buf.clear();
    let mut tmp = vec![0u8; 64 * 1024];
    while let Ok(k) = s.read(&mut tmp).await {
        if k == 0 || s.write_all(&tmp[..k]).await.is_err() {
            break;
        }
    }
    let _ = s.shutdown().await;
}

/// Closes after a last answer without resetting it away: shut the write side, then read and
/// drop what the peer still sends (for a while) before the socket goes.
async fn linger_close(mut s: TcpStream) {
    let _ = s.shutdown().await;
    let mut tmp = vec![0u8; 64 * 1024];
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(k) = s.read(&mut tmp).await {
            if k == 0 {
                break;
            }
        }
    })
    .await;
}

async fn serve(mut s: TcpStream, seen: Seen) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = fill_until(&mut s, &mut buf, b"\r\n\r\n").await else { return };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        buf.drain(..end);
        seen.requests.fetch_add(1, Ordering::SeqCst);
        seen.heads.lock().unwrap_or_else(|e| e.into_inner()).push(head.clone());
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        let name = path.split('?').next().unwrap_or("").rsplit('/').next().unwrap_or("").to_string();
        if name == "ws-echo" || name == "ws-refuse" {
            return websocket(s, buf, &head, name == "ws-echo", seen).await;
        }
        let length =
            head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
        let chunked = head.contains("transfer-encoding: chunked");
        if name == "early-413" {
            // Refuses the upload from its head alone, before reading any of it.
            let _ =
                s.write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            linger_close(s).await;
            return;
        }
        if name == "continue" {
            // An interim answer first (unasked), then the body's length once it is all read.
            let _ = s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
        }
        // The request body, by its length or up to the last chunk.
        let read = match (length, chunked) {
            (Some(n), _) => fill(&mut s, &mut buf, n).await.then_some(n),
            (None, true) => fill_until(&mut s, &mut buf, b"0\r\n\r\n").await,
            (None, false) => Some(0),
        };
        let Some(body_len) = read else { return };
        buf.drain(..body_len);
        let (bytes, then) = if name == "continue" {
            let n = length.unwrap_or(0).to_string();
            (format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{n}", n.len()).into_bytes(), Then::KeepAlive)
        } else {
            answer(&name)
        };
        if s.write_all(&bytes).await.is_err() {
            return;
        }
        if let Then::Close = then {
            linger_close(s).await;
            return;
        }
    }
}
