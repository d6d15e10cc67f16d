//! Header hygiene for both directions, and the client IP.
//!
//! To the upstream: hop-by-hop headers (and any the `Connection` header names) are removed;
//! credentials are removed; every client-supplied header the gateway owns or that upstreams
//! commonly trust for routing or identity is removed, and then the gateway sets its own.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName, HeaderValue};

/// RFC 9110 hop-by-hop headers, plus proxy credentials.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Client-supplied headers an upstream might trust for identity or routing (Envoy
/// CVE-2023-27487, APISIX CVE-2022-24112): always removed before forwarding.
const SPOOFABLE: &[&str] = &[
    "authorization",
    "x-api-key",
    "x-original-url",
    "x-rewrite-url",
    "x-forwarded-uri",
    "x-envoy-original-path",
    "x-real-ip",
    "x-authenticated-user",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
];

/// The gateway's identity headers; anything starting with this prefix from a client is removed.
pub const IDENTITY_PREFIX: &str = "x-gateway-";

pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(*n);
    }
}

/// Cleans a request's headers for forwarding. `forwarded_for` is the chain to send upstream.
pub fn clean_request(h: &mut HeaderMap) {
    strip_hop_by_hop(h);
    for n in SPOOFABLE {
        h.remove(*n);
    }
    let identity: Vec<HeaderName> = h.keys().filter(|k| k.as_str().starts_with(IDENTITY_PREFIX)).cloned().collect();
    for n in identity {
        h.remove(n);
    }
}

pub fn set(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(HeaderName::from_static(name), v);
    }
}

/// The client's IP: the socket peer, unless the peer is a trusted proxy; then X-Forwarded-For
/// is read right to left, skipping trusted proxies, and the first untrusted address is the
/// client. An unparseable entry stops the walk at the last trusted hop (never leftward).
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let mut ip = peer.ip();
    if !trusted.contains(&ip) {
        return ip;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for entry in entries.iter().rev() {
        match entry.parse::<IpAddr>() {
            Ok(addr) => {
                ip = addr;
                if !trusted.contains(&addr) {
                    return addr;
                }
            }
            Err(_) => return ip,
        }
    }
    ip
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn client_ip_rules() {
        let peer: SocketAddr = "10.0.0.9:1234".parse().unwrap();
        let lb: IpAddr = "10.0.0.9".parse().unwrap();
        let lb2: IpAddr = "10.0.0.8".parse().unwrap();
        // Untrusted peer: XFF ignored.
        assert_eq!(client_ip(peer, &xff("1.2.3.4"), &[]), lb);
        // Trusted chain read right to left.
        assert_eq!(
            client_ip(peer, &xff("6.6.6.6, 1.2.3.4, 10.0.0.8"), &[lb, lb2]),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        // Unparseable rightmost: fall back to the peer, never leftward.
        assert_eq!(client_ip(peer, &xff("1.2.3.4, [::1]:80x"), &[lb]), lb);
    }

    #[test]
    fn cleaning_removes_what_the_gateway_owns() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "close, x-custom"),
            ("x-custom", "1"),
            ("x-gateway-consumer", "admin"),
            ("authorization", "Bearer x"),
            ("te", "trailers"),
            ("x-original-url", "/admin"),
            ("accept", "*/*"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        clean_request(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["accept"]);
    }
}
