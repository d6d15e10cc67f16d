//! HTTP/1.1 to the upstreams, on the proxy thread's own task: the request head written in one
//! buffer, the response head parsed with `httparse`, and the response body decoded as the client
//! reads it, with the connection going back to the thread's pool the moment its body ends.
//!
//! Why not hyper's client: it drives each upstream connection in a task of its own and hands
//! every request and response across a channel to it, a wake-up of that task and one back per
//! request, plus its pool's map lookups; that was a third of the proxy's instructions per request
//! (docs/benchmarks.md). Here the client's own connection task writes the request and reads the
//! answer: no extra task, no channel.
//!
//! What an upstream may send is checked as strictly as what a client may: a head over
//! [`HEAD_LEN_MAX`] bytes or [`HEADERS_MAX`] fields, a malformed or ambiguous length, or a body
//! cut short is an error (the client gets 502 or a reset body), and a connection is reused only
//! after a response whose end was certain (RFC 9112 §6.3, §9.3).

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderName, Method, StatusCode};
use hyper::body::{Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{checkin, BoxError};
use crate::fields::Fields;
use crate::framing::{decode, Decoded, Framing};
use crate::phases::headers::{connection_tokens, is_header_value, Filter};
use crate::reply::Reply;

/// Largest response head accepted from an upstream.
pub const HEAD_LEN_MAX: usize = 64 * 1024;
/// Most header fields in one response head.
pub const HEADERS_MAX: usize = 100;
/// How much is read from the socket at once.
const READ_CHUNK: usize = 16 * 1024;

/// Why an exchange with an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed or closed before a whole response head arrived.
    #[error("upstream connection: {0}")]
    Io(#[from] std::io::Error),
    /// The upstream answered with something that is not a usable HTTP/1.1 response head.
    #[error("bad response from the upstream: {0}")]
    BadResponse(&'static str),
    /// Reading the client's request body failed (too large, too slow, or the client went away).
    #[error("request body: {0}")]
    RequestBody(BoxError),
}

impl WireError {
    /// Nothing came back on a connection taken from the pool: the upstream most likely closed
    /// it while it sat idle, so the request never reached an application.
    pub fn is_closed_before_response(&self) -> bool {
        match self {
            WireError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            ),
            _ => false,
        }
    }
}

/// A request as it goes upstream.
pub struct Head<'a> {
    pub method: &'a Method,
    /// The canonical path and the query, as checked by [`is_request_target`].
    pub path_and_query: &'a str,
    /// The client's headers: what [`Filter::request`] keeps of them is sent.
    pub headers: &'a Fields,
    /// The gateway's own headers (identity, `X-Forwarded-*`); one whose value could not be
    /// sent as it is ([`is_header_value`]) is left out.
    pub added: &'a [(&'a HeaderName, &'a str)],
}

/// Writes the request head into `buf`, Host first: the client's, or `host` if it sent none
/// (HTTP/2 clients send `:authority` instead). `prefix` goes before the path; `chunked` adds the
/// framing for a body of unknown length. The client's headers are filtered as they are written,
/// so no header map is edited on the way.
pub fn encode_head(buf: &mut Vec<u8>, head: &Head<'_>, prefix: &str, host: &str, chunked: bool) {
    buf.extend_from_slice(head.method.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(prefix.as_bytes());
    buf.extend_from_slice(head.path_and_query.as_bytes());
    buf.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    match head.headers.get(&http::header::HOST) {
        Some(h) => buf.extend_from_slice(h),
        None => buf.extend_from_slice(host.as_bytes()),
    }
    buf.extend_from_slice(b"\r\n");
    let filter = Filter::request(head.headers);
    for (name, value) in head.headers.iter() {
        if name == http::header::HOST || !filter.keeps(name) {
            continue;
        }
        put_field(buf, name.as_str(), value);
    }
    for (name, value) in head.added {
        if is_header_value(value) {
            put_field(buf, name.as_str(), value.as_bytes());
        }
    }
    if chunked {
        buf.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    buf.extend_from_slice(b"\r\n");
}

fn put_field(buf: &mut Vec<u8>, name: &str, value: &[u8]) {
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

/// Whether `s` may stand in a request line as written: visible ASCII only, so nothing in it can
/// end the line or split the target.
pub fn is_request_target(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic())
}

/// A connection to an upstream and its read buffer. The buffer goes back to the pool with the
/// connection, empty: the next response is read into the same memory once the last one's
/// pieces (its header values and body chunks are views into it) have been dropped, which
/// saves a 16 KiB allocation and the shared header that splitting it needs, per request.
pub struct Conn {
    pub io: TcpStream,
    pub buf: BytesMut,
}

impl Conn {
    /// A new connection, with a buffer of its own.
    pub fn new(io: TcpStream) -> Self {
        Self { io, buf: BytesMut::with_capacity(READ_CHUNK) }
    }
}

/// One request-response exchange on `conn`. `body` (if any) is streamed after the head, chunked
/// unless the head carries a Content-Length; an upstream that answers before it has read the
/// whole body is answered from then on (and its connection is not reused).
pub async fn exchange(
    conn: Conn,
    head: &[u8],
    body: Option<super::Body>,
    chunked: bool,
    method: &Method,
    pool_key: u64,
) -> Result<Reply, WireError> {
    let Conn { mut io, mut buf } = conn;
    let mut body_sent = true;
    match body {
        None => io.write_all(head).await?,
        Some(body) => {
            io.write_all(head).await?;
            match send_body(&mut io, &mut buf, body, chunked).await {
                Ok(finished) => body_sent = finished,
                // The upstream may have answered and closed before reading everything (a 413,
                // say): its answer is worth more than the write error.
                Err(WireError::Io(e)) => {
                    body_sent = false;
                    if buf.is_empty() && io.try_read_buf(&mut buf).unwrap_or(0) == 0 {
                        return Err(WireError::Io(e));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    let Answer::Final(resp, framing, keep_alive) = read_head(&mut io, &mut buf, method, false).await? else {
        unreachable!("a switch is an error unless it was asked for");
    };
    let body = UpstreamBody { io: Some(io), buf, framing, keep_alive: keep_alive && body_sent, pool_key };
    Ok(with_body(resp, body))
}

/// A response head as read: the status and the fields that go on to the client.
pub struct ResponseHead {
    pub status: StatusCode,
    pub fields: Fields,
}

/// The response with `body` streaming from its connection.
fn with_body(head: ResponseHead, mut body: UpstreamBody) -> Reply {
    if body.framing == Framing::Length(0) {
        // Nothing follows the head (HEAD, 204, 304, a zero length): hyper never polls a body
        // that says it has ended, so the connection goes back to the pool now or never.
        body.finish();
    }
    Reply::new(head.status, head.fields, http_body_util::BodyExt::boxed(body))
}

/// What an upstream answered to a request to switch protocols (a WebSocket handshake).
pub enum Switch {
    /// `101 Switching Protocols`: the head (hop-by-hop fields left out), the connection, and
    /// whatever the upstream already sent past the head (the first bytes of the new protocol).
    Switched { head: ResponseHead, io: TcpStream, early: Bytes },
    /// Any other final answer, relayed as usual; its connection is never pooled.
    Refused(Reply),
}

/// Sends a request that asks to switch protocols on a connection of its own, and reads the
/// answer. Nothing but the head is written: bytes the client sent after its request head stay
/// with the client's connection until the upstream has agreed (bad-inputs A10), and an upstream
/// that refuses never sees them, on this connection or another.
pub async fn switch(mut io: TcpStream, head: &[u8], method: &Method) -> Result<Switch, WireError> {
    io.write_all(head).await?;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    match read_head(&mut io, &mut buf, method, true).await? {
        Answer::Switched(head) => Ok(Switch::Switched { head, io, early: buf.freeze() }),
        Answer::Final(resp, framing, _) => {
            let body = UpstreamBody { io: Some(io), buf, framing, keep_alive: false, pool_key: 0 };
            Ok(Switch::Refused(with_body(resp, body)))
        }
    }
}

/// Streams the request body. Returns `false` if the upstream started answering first (what it
/// sent is left in `buf`), `true` once the whole body is sent. The socket is watched for an
/// answer both while waiting for the client's next piece and while writing one, so an upstream
/// that refuses an upload and stops reading is heard at once instead of stalling the write.
async fn send_body(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    mut body: super::Body,
    chunked: bool,
) -> Result<bool, WireError> {
    use http_body_util::BodyExt;
    loop {
        let frame = tokio::select! {
            biased;
            f = body.frame() => f,
            r = io.readable() => {
                r?;
                if answered(io, buf)? {
                    return Ok(false);
                }
                continue;
            }
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => return Err(WireError::RequestBody(e)),
            // Trailers from the client are not forwarded.
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
        };
        let sent = if chunked {
            let size = format!("{:x}\r\n", data.len());
            write_watching(io, buf, size.as_bytes()).await?
                && write_watching(io, buf, &data).await?
                && write_watching(io, buf, b"\r\n").await?
        } else {
            write_watching(io, buf, &data).await?
        };
        if !sent {
            return Ok(false);
        }
    }
    if chunked && !write_watching(io, buf, b"0\r\n\r\n").await? {
        return Ok(false);
    }
    Ok(true)
}

/// Writes all of `data` unless the upstream answers first (`false`).
async fn write_watching(io: &TcpStream, buf: &mut BytesMut, mut data: &[u8]) -> Result<bool, WireError> {
    while !data.is_empty() {
        tokio::select! {
            biased;
            r = io.writable() => {
                r?;
                match io.try_write(data) {
                    Ok(n) => data = &data[n..],
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(WireError::Io(e)),
                }
            }
            r = io.readable() => {
                r?;
                if answered(io, buf)? {
                    return Ok(false);
                }
            }
        }
    }
    Ok(true)
}

/// Reads what the upstream sent while the body was going out: `true` if it is (the start of) a
/// final answer. `100 Continue` (to a forwarded `Expect`, or unasked) asks for the rest.
fn answered(io: &TcpStream, buf: &mut BytesMut) -> Result<bool, WireError> {
    buf.reserve(READ_CHUNK);
    match io.try_read_buf(buf) {
        Ok(0) => Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into())),
        Ok(_) => Ok(!skip_interim(buf)),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(WireError::Io(e)),
    }
}

/// Consumes the interim (1xx, not 101) answers at the start of `buf`. `true` if no final answer
/// is complete yet (what is left is empty or the start of a head).
fn skip_interim(buf: &mut BytesMut) -> bool {
    loop {
        if buf.is_empty() {
            return true;
        }
        let mut fields = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut parsed = httparse::Response::new(&mut fields);
        match parsed.parse(buf) {
            Ok(httparse::Status::Complete(len)) if parsed.code.is_some_and(|c| (100..200).contains(&c) && c != 101) => {
                buf.advance(len);
            }
            Ok(httparse::Status::Partial) => return buf.len() < HEAD_LEN_MAX,
            _ => return false,
        }
    }
}

/// Reads into `buf` once, failing on end of stream.
async fn read_more(io: &mut TcpStream, buf: &mut BytesMut) -> Result<(), WireError> {
    buf.reserve(READ_CHUNK);
    // Through `AsyncRead`, which takes a short read as "drained" and skips the read that would
    // only say EAGAIN (`try_read_buf` does not).
    match tokio::io::AsyncReadExt::read_buf(io, buf).await? {
        0 => Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into())),
        _ => Ok(()),
    }
}

/// A final answer: how its body is delimited and whether the connection may carry another
/// request after it; or, where one was asked for, a protocol switch.
enum Answer {
    Final(ResponseHead, Framing, bool),
    Switched(ResponseHead),
}

/// Reads the final response head (interim 1xx answers are skipped). `101` is an answer only if
/// `upgrade` says the request asked for it; unasked, it is an error.
async fn read_head(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    method: &Method,
    upgrade: bool,
) -> Result<Answer, WireError> {
    loop {
        if buf.is_empty() {
            read_more(io, buf).await?;
        }
        match parse_head(buf, method, upgrade)? {
            Some(Parsed::Interim) => continue,
            Some(Parsed::Final(resp, framing, keep_alive)) => return Ok(Answer::Final(resp, framing, keep_alive)),
            Some(Parsed::Switched(resp)) => return Ok(Answer::Switched(resp)),
            None if buf.len() >= HEAD_LEN_MAX => return Err(WireError::BadResponse("head too large")),
            None => read_more(io, buf).await?,
        }
    }
}

enum Parsed {
    /// A 1xx answer other than 101 (consumed from the buffer).
    Interim,
    Final(ResponseHead, Framing, bool),
    /// `101 Switching Protocols` to a request that asked for it (consumed from the buffer).
    Switched(ResponseHead),
}

/// Parses one response head at the start of `buf` and consumes it; `None` if it is not all
/// there yet. `upgrade`: the request asked to switch protocols, so `101` is an answer.
fn parse_head(buf: &mut BytesMut, method: &Method, upgrade: bool) -> Result<Option<Parsed>, WireError> {
    // Most answers have a handful of fields: parse into a small array first, and only into the
    // full one when that is too small (filling 100 empty fields costs more than parsing a head).
    let mut few = [httparse::EMPTY_HEADER; 16];
    let mut all;
    let mut parsed = httparse::Response::new(&mut few);
    let mut result = parsed.parse(buf);
    if let Err(httparse::Error::TooManyHeaders) = result {
        all = [httparse::EMPTY_HEADER; HEADERS_MAX];
        parsed = httparse::Response::new(&mut all);
        result = parsed.parse(buf);
    }
    let len = match result {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(WireError::BadResponse("too many headers")),
        Err(_) => return Err(WireError::BadResponse("malformed head")),
    };
    let code = parsed.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| WireError::BadResponse("bad status"))?;
    let switched = status == StatusCode::SWITCHING_PROTOCOLS;
    if switched && !upgrade {
        // Only a WebSocket handshake asks for a switch; anything else must not get one.
        return Err(WireError::BadResponse("unrequested protocol switch"));
    }
    if status.is_informational() && !switched {
        buf.advance(len);
        return Ok(Some(Parsed::Interim));
    }
    let http11 = parsed.version == Some(1);
    // Values are kept as offsets into the head, then sliced from it once it is split off the
    // buffer: no copy per value.
    let base = buf.as_ptr() as usize;
    let mut fields = crate::fields::lend(parsed.headers.len());
    let filter =
        Filter::response(parsed.headers.iter().filter(|f| f.name.eq_ignore_ascii_case("connection")).map(|f| f.value));
    let (mut te_chunked, mut te_other, mut length, mut close) = (false, false, None::<u64>, !http11);
    let mut content_length_kept = false;
    for f in parsed.headers.iter() {
        let name = crate::phases::headers::header_name(f.name.as_bytes())
            .map_err(|_| WireError::BadResponse("bad header name"))?;
        if name == TRANSFER_ENCODING {
            // Only the last coding decides the framing; any coding after `chunked` makes the
            // body end at close.
            let last = f.value.rsplit(|b| *b == b',').next().unwrap_or(b"");
            if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                te_chunked = true;
                te_other = false;
            } else {
                te_other = true;
            }
        } else if name == CONTENT_LENGTH {
            // A list of equal values is one value (RFC 9112 §6.3); anything else is an error.
            for v in f.value.split(|b| *b == b',') {
                let n = crate::framing::content_length(v).ok_or(WireError::BadResponse("bad content-length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(WireError::BadResponse("conflicting content-length"));
                }
                length = Some(n);
            }
        } else if name == CONNECTION {
            for t in connection_tokens(f.value) {
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !http11 && t.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                }
            }
        }
        if filter.keeps(&name) {
            content_length_kept |= name == CONTENT_LENGTH;
            let start = f.value.as_ptr() as usize - base;
            fields.push((name, start, start + f.value.len()));
        }
    }
    let bodiless = *method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        Framing::Length(0)
    } else if te_chunked || te_other {
        // Transfer-Encoding overrides Content-Length, but a response with both may have been
        // crafted to desynchronise: never reuse its connection.
        if length.is_some() || te_other {
            close = true;
        }
        // The length is not the body's: passed on, it would cut the client's copy short.
        if content_length_kept {
            fields.retain(|(n, _, _)| n != CONTENT_LENGTH);
        }
        if te_other {
            Framing::Close
        } else {
            Framing::CHUNKED
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        close = true;
        Framing::Close
    };
    let head = buf.split_to(len).freeze();
    // Room for the fields the gateway adds (the tightest limit, `Deprecation`).
    let out = Fields::parsed(head, &mut fields, 2);
    crate::fields::give_back(fields);
    let resp = ResponseHead { status, fields: out };
    if switched {
        return Ok(Some(Parsed::Switched(resp)));
    }
    Ok(Some(Parsed::Final(resp, framing, !close)))
}

/// The upstream's response body, read as the client's side asks for it. It owns the connection,
/// and returns it to the pool as soon as the body has ended cleanly on a reusable connection.
struct UpstreamBody {
    io: Option<TcpStream>,
    buf: BytesMut,
    framing: Framing,
    keep_alive: bool,
    pool_key: u64,
}

impl UpstreamBody {
    /// The body has ended: the connection goes back to the pool if nothing else is pending on it.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(io) = self.io.take() {
            if self.keep_alive && self.buf.is_empty() {
                checkin(self.pool_key, Conn { io, buf: std::mem::take(&mut self.buf) });
            }
        }
    }

    /// Reads more from the socket. `Ok(false)` at end of stream.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, BoxError>> {
        let Some(io) = self.io.as_mut() else { return Poll::Ready(Ok(false)) };
        self.buf.reserve(READ_CHUNK);
        let n = ready!(tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut self.buf))?;
        Poll::Ready(Ok(n > 0))
    }

    /// Decodes what the buffer holds; the connection goes back to the pool the moment the body
    /// has ended, even as its last piece is handed out.
    fn decode(&mut self) -> Result<Decoded, BoxError> {
        let d = decode(&mut self.framing, &mut self.buf).map_err(WireError::BadResponse)?;
        if self.framing == Framing::Done && self.io.is_some() {
            self.finish();
        }
        Ok(d)
    }
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match this.decode() {
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Decoded::End) => return Poll::Ready(None),
                Ok(Decoded::More) => {}
                Err(e) => {
                    this.framing = Framing::Done;
                    this.io = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            match ready!(this.poll_read(cx)) {
                Ok(true) => {}
                Ok(false) if this.framing == Framing::Close => {
                    this.framing = Framing::Done;
                    this.io = None;
                    return Poll::Ready(None);
                }
                Ok(false) => {
                    this.framing = Framing::Done;
                    this.io = None;
                    return Poll::Ready(Some(Err(WireError::BadResponse("body cut short").into())));
                }
                Err(e) => {
                    this.framing = Framing::Done;
                    this.io = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn parse(raw: &[u8], method: &Method) -> Result<Option<(StatusCode, Framing, bool, usize)>, WireError> {
        let mut buf = BytesMut::from(raw);
        Ok(parse_head(&mut buf, method, false)?.map(|p| match p {
            Parsed::Interim => (StatusCode::CONTINUE, Framing::Done, false, buf.len()),
            Parsed::Final(r, f, k) => (r.status, f, k, buf.len()),
            Parsed::Switched(_) => unreachable!("no switch was asked for"),
        }))
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let get = Method::GET;
        let (s, f, k, rest) = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n", &get).unwrap().unwrap();
        assert_eq!((s, f, k, rest), (StatusCode::OK, Framing::Length(3), true, 3));
        // HEAD, 204 and 304 have no body whatever the length says.
        let (_, f, k, _) = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n", &Method::HEAD).unwrap().unwrap();
        assert_eq!((f, k), (Framing::Length(0), true));
        let (_, f, _, _) = parse(b"HTTP/1.1 304 Not Modified\r\n\r\n", &get).unwrap().unwrap();
        assert_eq!(f, Framing::Length(0));
        // Chunked wins over a length, and such a connection is not reused.
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n";
        assert_eq!(parse(raw, &get).unwrap().unwrap().1, Framing::CHUNKED);
        assert!(!parse(raw, &get).unwrap().unwrap().2);
        // No length: the body ends at close.
        let (_, f, k, _) = parse(b"HTTP/1.1 200 OK\r\n\r\n", &get).unwrap().unwrap();
        assert_eq!((f, k), (Framing::Close, false));
        // A coding after chunked: ends at close too.
        let (_, f, k, _) =
            parse(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n", &get).unwrap().unwrap();
        assert_eq!((f, k), (Framing::Close, false));
        // HTTP/1.0 and Connection: close are not reused.
        assert!(!parse(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", &get).unwrap().unwrap().2);
        assert!(!parse(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n", &get).unwrap().unwrap().2);
        // Equal lengths are one length; different ones, or junk, are errors.
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\n", &get).unwrap().unwrap().1,
            Framing::Length(2)
        );
        for bad in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0x10\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"NOTHTTP 200 OK\r\n\r\n",
        ] {
            assert!(parse(bad, &get).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // Hop-by-hop headers, and those Connection names, stay behind; the rest go on as sent.
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\n\
               Server: up\r\ncontent-length: 0\r\n\r\n"[..],
        );
        let Some(Parsed::Final(resp, _, keep)) = parse_head(&mut buf, &get, false).unwrap() else { panic!("final") };
        let names: Vec<&str> = resp.fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!((names, keep, buf.len()), (vec!["server", "content-length"], true, 0));
        assert_eq!(resp.fields.get(&http::header::SERVER), Some(&b"up"[..]));
        // Up to HEADERS_MAX fields are read (past the first, smaller array); one more is an error.
        let many = |n: usize| {
            let mut s = String::from("HTTP/1.1 200 OK\r\n");
            for i in 0..n - 1 {
                s.push_str(&format!("x-f{i}: v\r\n"));
            }
            s + "content-length: 0\r\n\r\n"
        };
        let (_, f, _, _) = parse(many(HEADERS_MAX).as_bytes(), &get).unwrap().unwrap();
        assert_eq!(f, Framing::Length(0));
        assert!(parse(many(HEADERS_MAX + 1).as_bytes(), &get).is_err());
        // Interim answers are consumed; a partial head asks for more.
        let (s, _, _, rest) = parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n", &get).unwrap().unwrap();
        assert_eq!((s, rest), (StatusCode::CONTINUE, 17));
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-le", &get).unwrap().is_none());
    }

    #[test]
    fn a_switch_is_an_answer_only_when_asked_for() {
        let get = Method::GET;
        let raw = &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi"[..];
        assert!(parse_head(&mut BytesMut::from(raw), &get, false).is_err(), "unasked");
        let mut buf = BytesMut::from(raw);
        let Some(Parsed::Switched(resp)) = parse_head(&mut buf, &get, true).unwrap() else { panic!("switched") };
        // The hop-by-hop fields stay behind (the gateway writes its own); the rest go on, and
        // what follows the head is the new protocol's, left in the buffer.
        let names: Vec<&str> = resp.fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["sec-websocket-accept"]);
        assert_eq!(&buf[..], b"\x81\x02hi");
        // Asked for, but answered otherwise: a final answer as usual.
        let mut buf = BytesMut::from(&b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n"[..]);
        assert!(matches!(parse_head(&mut buf, &get, true).unwrap(), Some(Parsed::Final(..))));
    }

    #[test]
    fn request_heads_are_written_as_sent() {
        let mut h = Fields::default();
        h.insert(HeaderName::from_static("x-a"), HeaderValue::from_static("1"));
        let mut interim = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2"[..]);
        assert!(skip_interim(&mut interim));
        assert_eq!(&interim[..], b"HTTP/1.1 2");
        assert!(!skip_interim(&mut BytesMut::from(&b"HTTP/1.1 413 Too Large\r\n\r\n"[..])));
        h.insert(HeaderName::from_static("authorization"), HeaderValue::from_static("Bearer secret"));
        h.insert(HeaderName::from_static("connection"), HeaderValue::from_static("x-hop"));
        h.insert(HeaderName::from_static("x-hop"), HeaderValue::from_static("2"));
        let fwd = HeaderName::from_static("x-forwarded-for");
        let roles = HeaderName::from_static("x-gateway-roles");
        let added = [(&fwd, "10.0.0.1"), (&roles, "a\r\nx-evil: 1")];
        let mut buf = Vec::new();
        let head = Head { method: &Method::POST, path_and_query: "/p?q=1", headers: &h, added: &added };
        encode_head(&mut buf, &head, "/base", "up:8080", true);
        assert_eq!(
            String::from_utf8_lossy(&buf),
            "POST /base/p?q=1 HTTP/1.1\r\nhost: up:8080\r\nx-a: 1\r\nx-forwarded-for: 10.0.0.1\r\n\
             transfer-encoding: chunked\r\n\r\n"
        );
        h.insert(http::header::HOST, HeaderValue::from_static("client.example"));
        buf.clear();
        let head = Head { method: &Method::GET, path_and_query: "/", headers: &h, added: &[] };
        encode_head(&mut buf, &head, "", "up:8080", false);
        assert_eq!(String::from_utf8_lossy(&buf), "GET / HTTP/1.1\r\nhost: client.example\r\nx-a: 1\r\n\r\n");
        assert!(is_request_target("/a%20b?c=d&e"));
        assert!(!is_request_target("/a b"));
        assert!(!is_request_target("/a\r\nx: y"));
    }
}
