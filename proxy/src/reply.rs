//! The gateway's answer to a request, as the server legs write it: status, header fields, body,
//! and what a protocol switch hands over.
//!
//! Why not `http::Response`: its `HeaderMap` (see [`crate::fields::Fields`] for what that
//! cost). HTTP/2 responses go to hyper, which takes an `http::Response`: [`Reply::into_http`]
//! builds one there.

use bytes::Bytes;
use http::StatusCode;
use tokio::net::TcpStream;

use crate::audit::AuditEvent;
use crate::fields::Fields;
use crate::upstream::Body;

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
