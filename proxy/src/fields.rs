//! Header fields as the data plane holds them: [`Fields`], for requests and replies alike.
//!
//! Why not `http::HeaderMap`: it costs two allocations, a hash of the name for every field
//! added and every field looked up, and a second check of every value `httparse` has already
//! checked. A head carries a handful of fields, which the gateway looks up a few times and the
//! other leg writes in order: a short list does that with none of the hashing, and its values
//! are ranges of the head as it was read, which the list holds once (a `Bytes` per value was a
//! reference count taken and dropped for each). Measured: about 4,000 fewer instructions and 2
//! fewer allocations per proxied request, both directions together (docs/benchmarks.md,
//! session 16).
//!
//! Also here: the list both HTTP/1 head parsers (`h1.rs` for requests, `upstream/wire.rs` for
//! responses) fill while they read a head, each field's name and where its value lies in the
//! head. The values can only be sliced out once the whole head is split off the read buffer, so
//! the list is kept until then. It is the same memory on every request: each proxy thread keeps
//! one list and lends it out (parsing never awaits, so no two heads on a thread share it).

use std::cell::Cell;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

/// A field's name and its value's start and end in the head.
pub type Field = (HeaderName, usize, usize);

/// A list kept longer than this is let go (a head of many fields), so that a rare large head
/// does not hold memory for good.
const KEPT_MAX: usize = 128;

thread_local! {
    static KEPT: Cell<Vec<Field>> = const { Cell::new(Vec::new()) };
}

/// This thread's list, empty (`give_back` empties it), with room for `n` fields.
pub fn lend(n: usize) -> Vec<Field> {
    let mut v = KEPT.take();
    v.reserve(n);
    v
}

/// Gives the list back for the next head (a list dropped instead, as on an error, just costs
/// the next head an allocation).
pub fn give_back(mut v: Vec<Field>) {
    if v.capacity() <= KEPT_MAX {
        v.clear();
        KEPT.set(v);
    }
}

/// A field value. Every value is one that `HeaderValue` accepts (`\t`, space, and bytes
/// `0x21..=0x7e` and `0x80..=0xff`): either it is one already, or it was read from a head by
/// `httparse`, whose rule for field values is the same.
#[derive(Debug, Clone)]
enum Value {
    /// Where the value lies in the head it was read from ([`Fields`]'s `head`), checked by
    /// `httparse`.
    Parsed(usize, usize),
    Http(HeaderValue),
}

/// A head's fields, in the order they were read or will be written. Names repeat for fields sent
/// more than once. A lookup scans the list, which is bounded: an HTTP/1 request head holds at
/// most `headers_max` fields (100 unless configured; 431 beyond) and an upstream's at most 100
/// (502 beyond); an HTTP/2 request's fit its 64 KiB header list and are refused past
/// `headers_max` before most lookups.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    /// The head the parsed values lie in (empty for fields made otherwise).
    head: Bytes,
    list: Vec<(HeaderName, Value)>,
}

impl Fields {
    pub fn with_capacity(n: usize) -> Self {
        Self { head: Bytes::new(), list: Vec::with_capacity(n) }
    }

    /// The fields a parser found in `head` (each name with its value's range there, as
    /// `httparse` checked it: see [`Value`]), with room for `room` more. Empties `found`.
    pub(crate) fn parsed(head: Bytes, found: &mut Vec<Field>, room: usize) -> Self {
        let mut list = Vec::with_capacity(found.len() + room);
        for (name, start, end) in found.drain(..) {
            debug_assert!(start <= end && end <= head.len(), "a range outside the head");
            list.push((name, Value::Parsed(start, end)));
        }
        Self { head, list }
    }

    pub fn append(&mut self, name: HeaderName, value: HeaderValue) {
        self.list.push((name, Value::Http(value)));
    }

    /// Sets `name` to `value`, in place of every field of that name.
    pub fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        self.list.retain(|(n, _)| *n != name);
        self.append(name, value);
    }

    fn bytes<'a>(&'a self, v: &'a Value) -> &'a [u8] {
        match v {
            Value::Parsed(start, end) => &self.head[*start..*end],
            Value::Http(v) => v.as_bytes(),
        }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &HeaderName) -> Option<&[u8]> {
        self.list.iter().find(|(n, _)| n == name).map(|(_, v)| self.bytes(v))
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.list.iter().filter(move |(n, _)| n == name).map(|(_, v)| self.bytes(v))
    }

    pub fn contains(&self, name: &HeaderName) -> bool {
        self.list.iter().any(|(n, _)| n == name)
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &[u8])> {
        self.list.iter().map(|(n, v)| (n, self.bytes(v)))
    }

    /// The fields as a `HeaderMap` (for hyper).
    pub fn into_header_map(self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.list.len());
        for (name, value) in self.list {
            let value = match value {
                Value::Http(v) => v,
                // Cannot fail (see `Value`); a value that did would be left out, not sent.
                Value::Parsed(start, end) => match HeaderValue::from_maybe_shared(self.head.slice(start..end)) {
                    Ok(v) => v,
                    Err(_) => continue,
                },
            };
            map.append(name, value);
        }
        map
    }
}

impl From<HeaderMap> for Fields {
    /// The fields of an HTTP/2 request, as hyper read them.
    fn from(map: HeaderMap) -> Self {
        let mut out = Self::with_capacity(map.len());
        let mut last = None;
        for (name, value) in map {
            // `None`: another value of the name before it.
            if let Some(name) = name {
                last = Some(name);
            }
            if let Some(name) = &last {
                out.append(name.clone(), value);
            }
        }
        out
    }
}

/// Finding a field's values by name, in [`Fields`] or in a `HeaderMap` (the admin API's).
pub trait Lookup {
    /// Every value of `name`, in order.
    fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a;
}

impl Lookup for Fields {
    fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.get_all(name)
    }
}

impl Lookup for HeaderMap {
    fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.get_all(name).into_iter().map(HeaderValue::as_bytes)
    }
}

/// A field value as text, when it is visible ASCII, spaces and tabs only (what
/// `HeaderValue::to_str` accepts). A field value holds no control byte but tab (see [`Value`];
/// `HeaderValue` holds the same), so that is ASCII here: checked a word at a time, not byte by
/// byte.
pub fn text(value: &[u8]) -> Option<&str> {
    debug_assert!(HeaderValue::from_bytes(value).is_ok(), "not a field value");
    value.is_ascii().then(|| std::str::from_utf8(value).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use http::header::{CONTENT_LENGTH, SERVER};

    use super::*;
    #[test]
    fn fields_keep_their_order_and_repeats() {
        let mut found = vec![(SERVER, 8, 10)];
        let mut f = Fields::parsed(Bytes::from_static(b"Server: up\r\n"), &mut found, 0);
        assert!(found.is_empty());
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

    #[test]
    fn text_is_what_header_value_calls_a_str() {
        for v in [&b"Bearer rgk_x"[..], b"a\tb c", b"", b"caf\xc3\xa9", b"\x80", b"~"] {
            let by_http = HeaderValue::from_bytes(v).unwrap();
            assert_eq!(text(v), by_http.to_str().ok(), "{v:?}");
        }
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

    #[test]
    fn the_list_is_lent_empty_and_its_memory_comes_back() {
        let mut v = lend(4);
        v.push((http::header::HOST, 0, 1));
        let cap = v.capacity();
        let ptr = v.as_ptr();
        give_back(v);
        let again = lend(2);
        assert!(again.is_empty());
        assert_eq!((again.capacity(), again.as_ptr()), (cap, ptr));
        give_back(again);
        // Too large to keep: let go, and the next loan starts afresh.
        give_back(Vec::with_capacity(KEPT_MAX + 1));
        assert_eq!(lend(0).capacity(), cap);
    }
}
