//! A client's request as the gateway takes it, from either server leg.
//!
//! Why not `http::Request`: its `HeaderMap` (see [`crate::fields::Fields`]), and its extensions
//! map for the three facts a leg tells the gateway, which are plain fields here.

use bytes::Bytes;
use http::{Method, Uri, Version};

use crate::fields::Fields;
use crate::server::ClientBody;

pub struct ClientRequest {
    pub method: Method,
    /// Origin form on HTTP/1 (anything else is refused); on HTTP/2, hyper puts `:scheme` and
    /// `:authority` in it.
    pub uri: Uri,
    pub version: Version,
    pub fields: Fields,
    pub body: ClientBody,
    /// It came over TLS (`X-Forwarded-Proto: https`).
    pub over_tls: bool,
    /// The HTTP/1 leg can hand this request's connection to a tunnel (it carries `Upgrade`):
    /// the gateway decides whether it becomes one (`crate::tunnel`).
    pub switchable: bool,
    /// The request-target as sent, when it holds a `#`: `Uri` drops a fragment without a word,
    /// and the gateway refuses one. Only the HTTP/1 leg sees the raw target.
    pub target_with_fragment: Option<Bytes>,
}

impl ClientRequest {
    /// An HTTP/2 request as hyper read it.
    pub fn from_hyper(req: hyper::Request<hyper::body::Incoming>, over_tls: bool) -> Self {
        let (parts, body) = req.into_parts();
        Self {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            fields: Fields::from(parts.headers),
            body: ClientBody::Hyper(body),
            over_tls,
            switchable: false,
            target_with_fragment: None,
        }
    }
}
