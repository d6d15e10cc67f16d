//! The gateway's answer to a request, as the server legs write it: status, header fields, body,
//! and what a protocol switch hands over.
//!
//! Why not `http::Response`: its `HeaderMap` costs two allocations, a hash of the name for every
//! field added and every field looked up, and a second check of every value the upstream leg
//! already had `httparse` check. A response carries a handful of fields, which the HTTP/1 leg
//! writes in order and looks up two or three times: a short list does that with none of the
//! hashing, and its values are views into the upstream's head, as they were read. Measured:
//! about 2,300 fewer instructions per proxied request (docs/benchmarks.md, session 16).
//! HTTP/2 responses go to hyper, which takes an `http::Response`: [`Reply::into_http`] builds
//! one there.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::net::TcpStream;

use crate::audit::AuditEvent;
use crate::upstream::Body;

/// A field value. Every value is one that `HeaderValue` accepts (`\t`, space, and bytes
/// `0x21..=0x7e` and `0x80..=0xff`): either it is one already, or it was read from an upstream's
/// head by `httparse`, whose rule for field values is the same.
#[derive(Debug, Clone)]
enum Value {
    /// A view into an upstream response head, checked by `httparse`.
    Parsed(Bytes),
    Http(HeaderValue),
}

impl Value {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Value::Parsed(b) => b,
            Value::Http(v) => v.as_bytes(),
        }
    }
}

/// A response's header fields, in the order they will be written. Names repeat for fields sent
/// more than once.
#[derive(Debug, Clone, Default)]
pub struct Fields(Vec<(HeaderName, Value)>);

impl Fields {
    pub fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    /// Adds a field read from an upstream's head; `value` is a view into that head, which
    /// `httparse` has checked (see [`Value`]).
    pub(crate) fn append_parsed(&mut self, name: HeaderName, value: Bytes) {
        self.0.push((name, Value::Parsed(value)));
    }

    pub fn append(&mut self, name: HeaderName, value: HeaderValue) {
        self.0.push((name, Value::Http(value)));
    }

    /// Sets `name` to `value`, in place of every field of that name.
    pub fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        self.0.retain(|(n, _)| *n != name);
        self.append(name, value);
    }

    /// The first value of `name`.
    pub fn get(&self, name: &HeaderName) -> Option<&[u8]> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_bytes())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.0.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_bytes())
    }

    pub fn contains(&self, name: &HeaderName) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &[u8])> {
        self.0.iter().map(|(n, v)| (n, v.as_bytes()))
    }

    /// The fields as a `HeaderMap` (for hyper).
    pub fn into_header_map(self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.0.len());
        for (name, value) in self.0 {
            let value = match value {
                Value::Http(v) => v,
                // Cannot fail (see `Value`); a value that did would be left out, not sent.
                Value::Parsed(b) => match HeaderValue::from_maybe_shared(b) {
                    Ok(v) => v,
                    Err(_) => continue,
                },
            };
            map.append(name, value);
        }
        map
    }
}

/// The answer to one request.
pub struct Reply {
    pub status: StatusCode,
    pub fields: Fields,
    pub body: Body,
    /// The upstream's side of a switched connection (a `101` to a WebSocket handshake): the
    /// socket, and what the upstream sent past its head. Its own: never from, or back to, the
    /// pool. (Boxed, as is the event below: they are rare, and every other reply is moved
    /// from phase to phase and leg.)
    pub upstream_side: Option<Box<(TcpStream, Bytes)>>,
    /// Set by the gateway on a `101` it lets through: the server leg may hand the client's
    /// connection over to a tunnel (`crate::tunnel`).
    pub switchable: bool,
    /// A `101`'s audit event, recorded again with how the tunnel ended
    /// (`Gateway::tunnel_closed`).
    pub tunnel_audit: Option<Box<AuditEvent>>,
}

impl Reply {
    pub fn new(status: StatusCode, fields: Fields, body: Body) -> Self {
        Self { status, fields, body, upstream_side: None, switchable: false, tunnel_audit: None }
    }

    /// As an `http::Response`, for hyper's HTTP/2 leg (which never switches protocols).
    pub fn into_http(self) -> http::Response<Body> {
        let mut resp = http::Response::new(self.body);
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.fields.into_header_map();
        resp
    }
}

#[cfg(test)]
mod tests {
    use http::header::{CONTENT_LENGTH, SERVER};

    use super::*;

    #[test]
    fn fields_keep_their_order_and_repeats() {
        let mut f = Fields::default();
        f.append_parsed(SERVER, Bytes::from_static(b"up"));
        f.append(HeaderName::from_static("x-a"), HeaderValue::from_static("1"));
        f.append(HeaderName::from_static("x-a"), HeaderValue::from_static("2"));
        f.append(CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert_eq!(f.get(&SERVER), Some(&b"up"[..]));
        let x_a = HeaderName::from_static("x-a");
        assert_eq!(f.get_all(&x_a).collect::<Vec<_>>(), [&b"1"[..], b"2"]);
        f.insert(x_a.clone(), HeaderValue::from_static("3"));
        let written: Vec<(&str, &[u8])> = f.iter().map(|(n, v)| (n.as_str(), v)).collect();
        assert_eq!(written, [("server", &b"up"[..]), ("content-length", b"5"), ("x-a", b"3")]);
        assert!(f.contains(&CONTENT_LENGTH) && !f.contains(&http::header::DATE));
        let map = f.into_header_map();
        assert_eq!(
            (map.len(), &map["server"], &map["x-a"]),
            (3, &HeaderValue::from_static("up"), &HeaderValue::from_static("3"))
        );
    }

    /// `append_parsed` relies on `httparse` accepting exactly the values `HeaderValue` does.
    #[test]
    fn httparse_and_header_value_accept_the_same_value_bytes() {
        for b in 0..=255u8 {
            let raw = [b"HTTP/1.1 200 OK\r\nx: a".as_slice(), &[b], b"a\r\n\r\n"].concat();
            let mut fields = [httparse::EMPTY_HEADER; 4];
            let parsed = httparse::Response::new(&mut fields).parse(&raw);
            let by_httparse = matches!(parsed, Ok(httparse::Status::Complete(_)));
            let by_http = HeaderValue::from_bytes(&[b'a', b, b'a']).is_ok();
            // A CR or LF ends the line (httparse then refuses the head); neither is a value byte.
            if b == b'\r' || b == b'\n' {
                assert!(!by_http, "{b:#x}");
                continue;
            }
            assert_eq!(by_httparse, by_http, "byte {b:#x}");
        }
    }
}
