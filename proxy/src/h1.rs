//! The HTTP/1.1 server leg: reads request heads, frames request bodies, writes responses, and
//! keeps the connection alive between requests, on the connection's own task.
//!
//! Why not hyper's server: its dispatcher, head parser and encoder cost about 13,000
//! instructions a request, as much as nginx spends on a whole request (docs/benchmarks.md).
//! This leg parses with `httparse` (hyper's own parser, so the same heads are refused), builds
//! the [`ClientRequest`] the gateway takes, and writes the [`Reply`]'s head and a small body in
//! one write. HTTP/2 connections (a TLS ALPN of `h2`, or the prior-knowledge preface) still go to
//! hyper (`crate::server`).
//!
//! What the leg guarantees (bad-inputs A and B):
//! - a head must be complete within `header_read_timeout` (408 once it has begun; an idle
//!   keep-alive connection just closes), in at most `header_len_max` bytes and `headers_max`
//!   fields (431 beyond either); anything `httparse` or the `http` types refuse gets 400; each
//!   such refusal is audited (`Gateway::refused_head`) and closes the connection;
//! - a request body is framed once, here: `Content-Length` (digits only) or `Transfer-Encoding:
//!   chunked` on HTTP/1.1. With both, the length is dropped and the connection closes after the
//!   response (RFC 9112 §6.3); any other framing (several lengths, another coding, a coding on
//!   HTTP/1.0) leaves the body unread for the gateway to refuse, and the connection closes;
//! - a body is read only once the gateway asks for it (so `Expect: 100-continue` gets its
//!   `100` only then, and a refused upload is never read); a body left unread closes the
//!   connection unless it is already all in the buffer;
//! - a response whose body fails or falls short of its length closes the connection without
//!   the chunked terminator, so the client sees it end early.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TRANSFER_ENCODING, UPGRADE};
use http::{Method, StatusCode, Uri, Version};
use hyper::body::{Body as _, Frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use crate::deny::Deny;
use crate::fields::Fields;
use crate::framing::{decode, Decoded, Framing};
use crate::gateway::{Carried, Gateway};
use crate::phases::headers::connection_tokens;
use crate::reply::Reply;
use crate::request::ClientRequest;
use crate::server::ClientBody;
use crate::upstream::BoxError;

/// How much is read from the socket at once.
const READ_CHUNK: usize = 16 * 1024;
/// Fields parsed into an array on the stack first; a head with more is parsed again into one
/// of `headers_max` (filling 100 empty fields per request costs more than parsing a head).
const FEW_HEADERS: usize = 24;
/// Response body pieces up to this size are copied behind the head and written with it.
const COALESCE_MAX: usize = 16 * 1024;

/// A connection's settings.
#[derive(Clone)]
pub struct Settings {
    pub header_read_timeout: Duration,
    pub header_len_max: usize,
    pub headers_max: usize,
    /// A tunnel (after a WebSocket upgrade) idle this long is closed.
    pub idle_timeout: Duration,
    pub over_tls: bool,
}

/// The start of an HTTP/2 connection with prior knowledge (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until `buf` either holds the HTTP/2 preface (`true`) or cannot be its start (`false`,
/// also at end of stream or error: the HTTP/1 leg then answers or closes).
pub async fn sniff_h2<IO: AsyncRead + Unpin>(io: &mut IO, buf: &mut BytesMut, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let n = buf.len().min(H2_PREFACE.len());
        if buf[..n] != H2_PREFACE[..n] {
            return false;
        }
        if n == H2_PREFACE.len() {
            return true;
        }
        buf.reserve(READ_CHUNK);
        match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return false,
        }
    }
}

/// A request body read from an HTTP/1 connection: the connection's task decodes it and hands
/// it over piece by piece, once the body is first polled.
pub struct H1Body {
    want: Option<oneshot::Sender<()>>,
    rx: mpsc::Receiver<Piece>,
    ended: bool,
}

enum Piece {
    Data(Bytes),
    End,
    Failed(&'static str),
}

/// The body was cut short or could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("request body: {0}")]
pub struct BodyError(&'static str);

impl hyper::body::Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(want) = self.want.take() {
            let _ = want.send(());
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Piece::Data(d))) => Poll::Ready(Some(Ok(Frame::data(d)))),
            Poll::Ready(Some(Piece::End)) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Piece::Failed(why))) => {
                self.ended = true;
                Poll::Ready(Some(Err(Box::new(BodyError(why)))))
            }
            // The connection went away without saying the body ended.
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(Some(Err(Box::new(BodyError("connection closed")))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

/// What a request head says about its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFraming {
    /// Framed as it says (a zero length is no body).
    Known(Framing),
    /// Framing the gateway refuses (`ambiguous_framing`); the connection cannot be reused.
    Ambiguous,
}

/// A parsed request head.
struct Parsed {
    req: ClientRequest,
    framing: BodyFraming,
    keep_alive: bool,
    expect_continue: bool,
}

/// Why a head was refused before any phase saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Malformed,
    TooLarge,
    /// The head began but was not complete within the header-read deadline (slowloris).
    Timeout,
}

impl Refusal {
    fn status(self) -> (StatusCode, &'static str) {
        match self {
            Refusal::Malformed => (StatusCode::BAD_REQUEST, "malformed_head"),
            Refusal::TooLarge => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "head_too_large"),
            Refusal::Timeout => (StatusCode::REQUEST_TIMEOUT, "head_timeout"),
        }
    }
}

/// Parses one request head at the start of `buf` and consumes it; `None` if it is not all
/// there yet.
fn parse_head(buf: &mut BytesMut, len_max: usize, headers_max: usize) -> Result<Option<Parsed>, Refusal> {
    let mut few = [httparse::EMPTY_HEADER; FEW_HEADERS];
    let mut all;
    let mut parsed = httparse::Request::new(&mut few);
    let mut result = parsed.parse(buf);
    if let Err(httparse::Error::TooManyHeaders) = result {
        all = vec![httparse::EMPTY_HEADER; headers_max];
        parsed = httparse::Request::new(&mut all);
        result = parsed.parse(buf);
    }
    let len = match result {
        // However much arrived in one read, a head is held to its limit.
        Ok(httparse::Status::Complete(len)) if len > len_max => return Err(Refusal::TooLarge),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= len_max => return Err(Refusal::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Err(_) => return Err(Refusal::Malformed),
    };
    let method = Method::from_bytes(parsed.method.unwrap_or("").as_bytes()).map_err(|_| Refusal::Malformed)?;
    let version = if parsed.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
    let http11 = version == Version::HTTP_11;
    // Values (and the target) are kept as offsets into the head, then sliced from it once it is
    // split off the buffer: no copy per value.
    let base = buf.as_ptr() as usize;
    let offsets = |s: &[u8]| (s.as_ptr() as usize - base, s.as_ptr() as usize - base + s.len());
    let target = offsets(parsed.path.unwrap_or("").as_bytes());
    let mut fields = crate::fields::lend(parsed.headers.len());
    let (mut te, mut te_chunked, mut lengths, mut length) = (0usize, false, 0usize, None::<u64>);
    let (mut close, mut keep_alive_asked, mut expect_continue, mut upgrade) = (false, false, false, false);
    for f in parsed.headers.iter() {
        let name = crate::phases::headers::header_name(f.name.as_bytes()).map_err(|_| Refusal::Malformed)?;
        if name == TRANSFER_ENCODING {
            te += 1;
            te_chunked = f.value.eq_ignore_ascii_case(b"chunked");
        } else if name == CONTENT_LENGTH {
            lengths += 1;
            length = Some(crate::framing::content_length(f.value).ok_or(Refusal::Malformed)?);
        } else if name == CONNECTION {
            for t in connection_tokens(f.value) {
                close |= t.eq_ignore_ascii_case(b"close");
                keep_alive_asked |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name == UPGRADE {
            upgrade = true;
        } else if name == EXPECT && http11 {
            expect_continue = f.value.eq_ignore_ascii_case(b"100-continue");
        }
        let (start, end) = offsets(f.value);
        fields.push((name, start, end));
    }
    let framing = match (te, lengths) {
        (0, 0) => BodyFraming::Known(Framing::Length(0)),
        (0, 1) => BodyFraming::Known(Framing::Length(length.unwrap_or(0))),
        // RFC 9112 §6.3: chunked wins over a length, which is dropped; the connection is closed
        // after the response, since the client may have meant the length.
        (1, _) if te_chunked && http11 => {
            if lengths > 0 {
                close = true;
                fields.retain(|(n, _, _)| n != CONTENT_LENGTH);
            }
            BodyFraming::Known(Framing::CHUNKED)
        }
        _ => BodyFraming::Ambiguous,
    };
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target.0..target.1)).map_err(|_| Refusal::Malformed)?;
    // `Uri` drops a fragment without a word; the gateway refuses one, so it is told.
    let target_with_fragment = head[target.0..target.1].contains(&b'#').then(|| head.slice(target.0..target.1));
    let headers = Fields::parsed(head, &mut fields, 0);
    crate::fields::give_back(fields);
    let req = ClientRequest {
        method,
        uri,
        version,
        // Only a handshake can become a tunnel (the gateway decides whether it is one).
        switchable: upgrade,
        fields: headers,
        body: ClientBody::Empty,
        over_tls: false,
        target_with_fragment,
    };
    let keep_alive = !close && (http11 || keep_alive_asked) && framing != BodyFraming::Ambiguous;
    Ok(Some(Parsed { req, framing, keep_alive, expect_continue }))
}

/// Serves HTTP/1.1 requests on `io` until the client closes, a head does not arrive in time,
/// a response ends the connection, or shutdown. `buf` holds what was already read.
pub async fn serve<IO>(
    mut io: IO,
    mut buf: BytesMut,
    peer: SocketAddr,
    gateway: Arc<Gateway>,
    settings: Settings,
    mut shutdown: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut out = Vec::with_capacity(1024);
    // The key this connection last proved and its upstream exchanges' timer, for its next
    // request.
    let mut carried = Carried::default();
    // The head's deadline is kept here; the timer is set lazily: it stays at an earlier
    // deadline, and when that one passes it is set to the current one, if that is still ahead.
    // So a busy keep-alive connection moves its timer once per timeout, not once per request
    // (each move takes it out of the runtime's timer wheel and puts it back).
    let head_timer = tokio::time::sleep(settings.header_read_timeout);
    let mut head_timer = pin!(head_timer);
    loop {
        // Read a head.
        let head_deadline = tokio::time::Instant::now() + settings.header_read_timeout;
        let parsed = loop {
            // (An empty buffer, the usual state between keep-alive requests, is not parsed.)
            match if buf.is_empty() {
                Ok(None)
            } else {
                parse_head(&mut buf, settings.header_len_max, settings.headers_max)
            } {
                Ok(Some(p)) => break p,
                Ok(None) => {}
                Err(r) => return refuse(&mut io, &gateway, peer, r, &mut out).await,
            }
            buf.reserve(READ_CHUNK);
            let idle = buf.is_empty();
            tokio::select! {
                biased;
                r = io.read_buf(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                // A head that began and did not finish gets 408 and an audit event, as nginx
                // answers one; an idle keep-alive connection just closes.
                () = &mut head_timer => {
                    if tokio::time::Instant::now() < head_deadline {
                        head_timer.as_mut().reset(head_deadline);
                        continue;
                    }
                    tracing::debug!(%peer, "request head not received in time");
                    if !buf.is_empty() {
                        refuse(&mut io, &gateway, peer, Refusal::Timeout, &mut out).await;
                    }
                    return;
                }
                // Between requests the connection just closes; a head in progress may finish.
                // (The guard `wait_for` returns is dropped inside, so the task stays `Send`.)
                () = async { let _ = shutdown.wait_for(|s| *s).await; }, if idle => return,
            }
        };
        let Parsed { mut req, framing, mut keep_alive, expect_continue } = parsed;
        req.over_tls = settings.over_tls;
        let is_head = req.method == Method::HEAD;
        let http10 = req.version == Version::HTTP_10;
        let mut framing = match framing {
            BodyFraming::Known(f) => f,
            BodyFraming::Ambiguous => Framing::Done,
        };
        if framing == Framing::Length(0) {
            framing = Framing::Done;
        }
        let (mut resp, body_done) = if framing == Framing::Done {
            let resp = gateway.handle(req, peer, &mut carried).await;
            (resp, true)
        } else {
            let (want_tx, want_rx) = oneshot::channel();
            let (tx, rx) = mpsc::channel(1);
            let body = H1Body { want: Some(want_tx), rx, ended: false };
            // A request with a body is never a handshake.
            req.switchable = false;
            req.body = ClientBody::H1(body);
            let handler = gateway.handle(req, peer, &mut carried);
            let mut handler = pin!(handler);
            let feeding = feed(&mut io, &mut buf, &mut framing, tx, want_rx, expect_continue);
            let mut feeding = pin!(feeding);
            let mut fed = None;
            let resp = loop {
                tokio::select! {
                    biased;
                    resp = &mut handler => break resp,
                    ok = &mut feeding, if fed.is_none() => fed = Some(ok),
                }
            };
            (resp, fed == Some(true))
        };
        // A body the gateway did not read: what already arrived may be skipped; otherwise the
        // next request's start is unknown.
        let body_done = body_done || skip_buffered(&mut framing, &mut buf);
        keep_alive &= body_done && !*shutdown.borrow();
        if resp.status == StatusCode::SWITCHING_PROTOCOLS {
            let Some(tunnel) = crate::tunnel::Tunnel::take(&mut resp) else {
                return;
            };
            out.clear();
            encode_head(&mut out, resp.status, &resp.fields, HeadFraming::None, true, http10);
            if io.write_all(&out).await.is_err() || io.flush().await.is_err() {
                return;
            }
            let handshake = resp.tunnel_audit.take();
            let client = crate::tunnel::Own { io: Box::new(io), early: buf.split().freeze() };
            let open = gateway.metrics.tunnels_open.clone();
            let closed = crate::tunnel::run(tunnel, client, settings.idle_timeout, shutdown, open).await;
            if let Some(handshake) = handshake {
                gateway.tunnel_closed(*handshake, closed);
            }
            return;
        }
        match write_response(&mut io, resp, is_head, keep_alive, http10, &mut out).await {
            Ok(true) if keep_alive => {}
            _ => {
                let _ = io.shutdown().await;
                return;
            }
        }
    }
}

/// Answers a head refused before any phase ran, records it, and ends the connection.
async fn refuse<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    gateway: &Gateway,
    peer: SocketAddr,
    r: Refusal,
    out: &mut Vec<u8>,
) {
    let (status, reason) = r.status();
    gateway.refused_head(peer, status, reason);
    let resp = Deny::new(status, reason).into_reply();
    let _ = write_response(io, resp, false, false, false, out).await;
    let _ = io.shutdown().await;
}

/// Hands the request body to the gateway as it asks for it. `true` once the body has been read
/// to its end; `false` if it failed, or if the gateway dropped it first.
async fn feed<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    buf: &mut BytesMut,
    framing: &mut Framing,
    tx: mpsc::Sender<Piece>,
    want: oneshot::Receiver<()>,
    expect_continue: bool,
) -> bool {
    if want.await.is_err() {
        return false;
    }
    // Asked to wait for a `100 Continue` and not sent on regardless: the body is wanted now.
    if expect_continue
        && buf.is_empty()
        && (io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() || io.flush().await.is_err())
    {
        let _ = tx.send(Piece::Failed("connection closed")).await;
        return false;
    }
    loop {
        let piece = match decode(framing, buf) {
            Ok(Decoded::Data(d)) => Piece::Data(d),
            Ok(Decoded::End) => {
                let _ = tx.send(Piece::End).await;
                return true;
            }
            Ok(Decoded::More) => {
                buf.reserve(READ_CHUNK);
                match io.read_buf(buf).await {
                    Ok(n) if n > 0 => continue,
                    _ => Piece::Failed("connection closed"),
                }
            }
            Err(why) => Piece::Failed(why),
        };
        let failed = matches!(piece, Piece::Failed(_));
        if tx.send(piece).await.is_err() || failed {
            return false;
        }
        if *framing == Framing::Done {
            let _ = tx.send(Piece::End).await;
            return true;
        }
    }
}

/// Skips a request body the gateway did not read if all of it is already buffered: `true` if
/// the connection is then at the next request's start.
fn skip_buffered(framing: &mut Framing, buf: &mut BytesMut) -> bool {
    loop {
        match decode(framing, buf) {
            Ok(Decoded::Data(_)) => {}
            Ok(Decoded::End) => return true,
            Ok(Decoded::More) | Err(_) => return false,
        }
    }
}

/// How the response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadFraming {
    /// No body follows (1xx, 204, 304, a HEAD request's answer).
    None,
    /// A `Content-Length` is (or has been put) in the head.
    Length(u64),
    Chunked,
    /// The body ends when the connection closes (an HTTP/1.0 client, length unknown).
    Close,
}

/// Writes `resp`. `Ok(true)` if the connection may carry another request after it.
async fn write_response<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    resp: Reply,
    is_head: bool,
    keep_alive: bool,
    http10: bool,
    out: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let Reply { status, fields, mut body, .. } = resp;
    let declared = fields.get(&CONTENT_LENGTH).and_then(crate::framing::content_length);
    let hint = body.size_hint().exact();
    let bodiless = status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        HeadFraming::None
    } else if let Some(n) = declared {
        if is_head {
            HeadFraming::None
        } else {
            HeadFraming::Length(n)
        }
    } else if let Some(n) = hint {
        // Put in the head (also for HEAD: the length the body would have had).
        HeadFraming::Length(n)
    } else if is_head {
        HeadFraming::None
    } else if http10 {
        HeadFraming::Close
    } else {
        HeadFraming::Chunked
    };
    let keep_alive = keep_alive
        && framing != HeadFraming::Close
        && !fields.get_all(&CONNECTION).any(|v| connection_tokens(v).any(|t| t.eq_ignore_ascii_case(b"close")));
    out.clear();
    // A length the head already holds is not written twice.
    let added = if declared.is_some() { HeadFraming::None } else { framing };
    encode_head(out, status, &fields, added, keep_alive, http10);
    // The head's values are views into the upstream connection's read buffer, which the
    // connection reuses only once nothing else holds it: let them go before the body streams.
    drop(fields);
    let send_body = !is_head && framing != HeadFraming::None;
    if !send_body {
        io.write_all(out).await?;
        io.flush().await?;
        return Ok(keep_alive);
    }
    let mut written = 0u64;
    let mut complete = false;
    loop {
        // Whatever the body has ready goes behind the head; the socket is written when it has
        // nothing more for now.
        let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
            Poll::Ready(f) => f,
            Poll::Pending => {
                if !out.is_empty() {
                    io.write_all(out).await?;
                    io.flush().await?;
                    out.clear();
                }
                poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            }
        };
        let data = match frame {
            None => {
                complete = true;
                break;
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "response body failed; closing the connection");
                break;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) if !d.is_empty() => d,
                // Trailers are not relayed.
                _ => continue,
            },
        };
        let mut data = data;
        if let HeadFraming::Length(n) = framing {
            if written + data.len() as u64 > n {
                // More than the head announced: never sent, the connection ends here.
                data.truncate((n - written) as usize);
                written = n;
                put(io, out, &data).await?;
                break;
            }
        }
        written += data.len() as u64;
        if framing == HeadFraming::Chunked {
            put_number(out, data.len() as u64, 16);
            out.extend_from_slice(b"\r\n");
            put(io, out, &data).await?;
            out.extend_from_slice(b"\r\n");
        } else {
            put(io, out, &data).await?;
        }
    }
    let whole = complete && framing.is_whole(written);
    if whole && framing == HeadFraming::Chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    if !out.is_empty() {
        io.write_all(out).await?;
    }
    io.flush().await?;
    Ok(keep_alive && whole)
}

impl HeadFraming {
    /// Whether `written` bytes are the whole body this framing announced.
    fn is_whole(self, written: u64) -> bool {
        match self {
            HeadFraming::Length(n) => written == n,
            _ => true,
        }
    }
}

/// Adds `data` to the pending output, or writes the output and then `data` when it is large.
async fn put<IO: AsyncWrite + Unpin>(io: &mut IO, out: &mut Vec<u8>, data: &[u8]) -> std::io::Result<()> {
    if out.len() + data.len() <= COALESCE_MAX {
        out.extend_from_slice(data);
        return Ok(());
    }
    if !out.is_empty() {
        io.write_all(out).await?;
        out.clear();
    }
    io.write_all(data).await
}

/// Writes `n` in base 10 or 16 (lower case), without going through `core::fmt`.
fn put_number(out: &mut Vec<u8>, mut n: u64, base: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[(n % base) as usize];
        n /= base;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Writes the status line and the header fields; `framing` adds `Content-Length` or
/// `Transfer-Encoding: chunked` where the head does not hold them yet.
fn encode_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    fields: &Fields,
    framing: HeadFraming,
    keep_alive: bool,
    http10: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // Whether the fields hold a date and a `Connection`, noted as they are written.
    let (mut dated, mut connection) = (false, false);
    for (name, value) in fields.iter() {
        dated |= name == DATE;
        connection |= name == CONNECTION;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        HeadFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            put_number(out, n, 10);
            out.extend_from_slice(b"\r\n");
        }
        HeadFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        HeadFraming::None | HeadFraming::Close => {}
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        crate::clock::http_date(|d| out.extend_from_slice(d));
        out.extend_from_slice(b"\r\n");
    }
    if status != StatusCode::SWITCHING_PROTOCOLS && !connection {
        if !keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        } else if http10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn parse(raw: &str) -> Result<Option<Parsed>, Refusal> {
        parse_head(&mut BytesMut::from(raw.as_bytes()), 4096, 100)
    }

    #[test]
    fn heads_are_framed_once() {
        let p = parse("POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello").unwrap().unwrap();
        assert_eq!((p.framing, p.keep_alive), (BodyFraming::Known(Framing::Length(5)), true));
        assert_eq!(p.req.uri.path_and_query().unwrap().as_str(), "/a?b=1");
        assert_eq!(p.req.fields.get(&http::header::HOST), Some(&b"x"[..]));
        // Chunked wins over a length, which is dropped, and the connection will close.
        let p = parse("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap().unwrap();
        assert_eq!((p.framing, p.keep_alive), (BodyFraming::Known(Framing::CHUNKED), false));
        assert!(p.req.fields.get(&CONTENT_LENGTH).is_none());
        // `Uri` cuts a fragment off; the target as sent goes with the request for the gateway.
        let p = parse("GET /public#/../admin HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!(p.req.uri.path(), "/public");
        assert_eq!(p.req.target_with_fragment.as_deref(), Some(&b"/public#/../admin"[..]));
        assert!(parse("GET /public HTTP/1.1\r\n\r\n").unwrap().unwrap().req.target_with_fragment.is_none());
        // A head with `Upgrade` may become a tunnel (the gateway decides); one without, never.
        let upgrade = "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        assert!(parse(upgrade).unwrap().unwrap().req.switchable);
        assert!(!parse("GET /ws HTTP/1.1\r\nConnection: Upgrade\r\n\r\n").unwrap().unwrap().req.switchable);
        // Everything else with a coding, or two lengths, is left for the gateway to refuse.
        for raw in [
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        ] {
            let p = parse(raw).unwrap().unwrap();
            assert_eq!((p.framing, p.keep_alive), (BodyFraming::Ambiguous, false), "{raw:?}");
        }
        // A length that is not plain digits is a malformed head.
        for bad in ["+5", "-1", "0x10", "5 5", "", "99999999999999999999"] {
            let raw = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(parse(&raw).err(), Some(Refusal::Malformed), "{bad:?}");
        }
        // Keep-alive: HTTP/1.1 unless closed, HTTP/1.0 only when asked.
        assert!(!parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap().unwrap().keep_alive);
        assert!(!parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap().keep_alive);
        assert!(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap().unwrap().keep_alive);
        assert!(parse("POST / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n").unwrap().unwrap().expect_continue);
        // Incomplete heads ask for more; too many fields are too large; junk is malformed.
        assert!(parse("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        let big = format!("GET / HTTP/1.1\r\nx-big: {}\r\n\r\n", "v".repeat(4096));
        assert_eq!(parse(&big).err(), Some(Refusal::TooLarge), "a whole head over the limit");
        assert_eq!(parse(&big[..4100]).err(), Some(Refusal::TooLarge), "the start of one");
        let many: String = (0..101).map(|i| format!("x-h{i}: v\r\n")).collect();
        assert_eq!(parse(&format!("GET / HTTP/1.1\r\n{many}\r\n")).err(), Some(Refusal::TooLarge));
        let some: String = (0..60).map(|i| format!("x-h{i}: v\r\n")).collect();
        assert_eq!(parse(&format!("GET / HTTP/1.1\r\n{some}\r\n")).unwrap().unwrap().req.fields.len(), 60);
        for bad in ["GET / HTTP/1.1\r\nX A: 1\r\n\r\n", "GET / HTTP/2.0\r\n\r\n", "G@T / HTTP/1.1\r\n\r\n"] {
            assert_eq!(parse(bad).err(), Some(Refusal::Malformed), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Whatever arrives, the parser answers (a request, "more", or a refusal) and never
        /// panics; a head it accepts is consumed from the buffer.
        #[test]
        fn any_bytes_get_an_answer(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut buf = BytesMut::from(&bytes[..]);
            if let Ok(Some(_)) = parse_head(&mut buf, 256, 8) {
                proptest::prop_assert!(buf.len() < bytes.len());
            }
        }

        /// A well-formed head with any field values httparse allows comes out as sent.
        #[test]
        fn heads_come_out_as_sent(
            path in "/[a-zA-Z0-9._~%/-]{0,40}(\\?[a-z0-9=&]{0,20})?",
            values in proptest::collection::vec("[ -~]{0,30}", 0..6),
        ) {
            let mut raw = format!("GET {path} HTTP/1.1\r\n");
            for (i, v) in values.iter().enumerate() {
                raw.push_str(&format!("x-f{i}: {v}\r\n"));
            }
            raw.push_str("\r\nNEXT");
            let mut buf = BytesMut::from(raw.as_bytes());
            let p = parse_head(&mut buf, 4096, 100).unwrap().unwrap();
            proptest::prop_assert_eq!(p.req.uri.path_and_query().map(|p| p.as_str()), Some(path.as_str()));
            for (i, v) in values.iter().enumerate() {
                let name = http::HeaderName::from_bytes(format!("x-f{i}").as_bytes()).unwrap();
                let got = p.req.fields.get(&name).map(<[u8]>::to_vec);
                proptest::prop_assert_eq!(got, Some(v.trim().as_bytes().to_vec()));
            }
            proptest::prop_assert_eq!(&buf[..], b"NEXT");
        }
    }

    #[test]
    fn numbers_are_written_as_format_would() {
        for n in [0u64, 7, 10, 255, 4096, 65_535, u64::MAX] {
            let (mut dec, mut hex) = (Vec::new(), Vec::new());
            put_number(&mut dec, n, 10);
            put_number(&mut hex, n, 16);
            assert_eq!(
                (String::from_utf8(dec).unwrap(), String::from_utf8(hex).unwrap()),
                (n.to_string(), format!("{n:x}"))
            );
        }
    }

    #[test]
    fn response_heads_carry_their_framing() {
        let mut fields = Fields::default();
        fields.append(http::HeaderName::from_static("x-a"), HeaderValue::from_static("1"));
        fields.append(DATE, HeaderValue::from_static("Sun, 29 Nov 2026 06:00:00 GMT"));
        let mut out = Vec::new();
        encode_head(&mut out, StatusCode::OK, &fields, HeadFraming::Length(12), true, false);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "HTTP/1.1 200 OK\r\nx-a: 1\r\ndate: Sun, 29 Nov 2026 06:00:00 GMT\r\ncontent-length: 12\r\n\r\n"
        );
        out.clear();
        encode_head(&mut out, StatusCode::OK, &fields, HeadFraming::Chunked, false, false);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.ends_with("transfer-encoding: chunked\r\nconnection: close\r\n\r\n"), "{text}");
        out.clear();
        let undated = Fields::default();
        encode_head(&mut out, StatusCode::OK, &undated, HeadFraming::None, true, true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\r\ndate: ") && text.ends_with("GMT\r\nconnection: keep-alive\r\n\r\n"), "{text}");
    }
}
