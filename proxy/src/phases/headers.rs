//! Header hygiene for both directions, and the client IP.
//!
//! To the upstream: hop-by-hop headers (and any the `Connection` header names) are removed;
//! credentials are removed; every client-supplied header the gateway owns or that upstreams
//! commonly trust for routing or identity is removed, and then the gateway sets its own.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName, HeaderValue};

/// RFC 9110 hop-by-hop headers, plus proxy credentials.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authorization"
            | "proxy-authenticate"
    )
}

/// Client-supplied headers an upstream might trust for identity or routing (Envoy
/// CVE-2023-27487, APISIX CVE-2022-24112): always removed before forwarding.
fn is_spoofable(name: &str) -> bool {
    matches!(
        name,
        "authorization"
            | "x-api-key"
            | "x-original-url"
            | "x-rewrite-url"
            | "x-forwarded-uri"
            | "x-envoy-original-path"
            | "x-real-ip"
            | "x-authenticated-user"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "forwarded"
    )
}

/// The gateway's identity headers; anything starting with this prefix from a client is removed.
pub const IDENTITY_PREFIX: &str = "x-gateway-";

/// Headers the gateway sets on the way to the upstream.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_GATEWAY_CONSUMER: HeaderName = HeaderName::from_static("x-gateway-consumer");
pub static X_GATEWAY_KEY_ID: HeaderName = HeaderName::from_static("x-gateway-key-id");
pub static X_GATEWAY_ROLES: HeaderName = HeaderName::from_static("x-gateway-roles");

/// Removes the headers `doomed` picks, in one pass over the names present (a request carries a
/// handful; checking each forbidden name against the map instead cost a name parse and a hash
/// per forbidden name, most of them absent).
fn remove_where(h: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    let names: Vec<HeaderName> = h.keys().filter(|k| doomed(k)).cloned().collect();
    for n in names {
        h.remove(n);
    }
}

/// Removes hop-by-hop headers, and any header the `Connection` header names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    strip(h, false);
}

/// Cleans a request's headers for forwarding: hop-by-hop, credentials, spoofable and identity
/// headers go; the gateway then sets its own.
pub fn clean_request(h: &mut HeaderMap) {
    strip(h, true);
}

fn strip(h: &mut HeaderMap, request: bool) {
    let named: Vec<HeaderName> = h
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    remove_where(h, |k| {
        let n = k.as_str();
        is_hop_by_hop(n) || named.contains(k) || (request && (is_spoofable(n) || n.starts_with(IDENTITY_PREFIX)))
    });
}

/// Sets `name` to `value`, unless `value` cannot be a header value.
pub fn set(h: &mut HeaderMap, name: &HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name.clone(), v);
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
        .get_all(&X_FORWARDED_FOR)
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
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "7.7.7.7"),
            ("proxy-authorization", "Basic x"),
            ("x-gateway-key-id", "forged"),
            ("user-agent", "t"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        let mut response = h.clone();
        clean_request(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, vec!["accept", "user-agent"]);
        // A response keeps everything but the hop-by-hop headers.
        strip_hop_by_hop(&mut response);
        let mut left: Vec<&str> = response.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            vec![
                "accept",
                "authorization",
                "user-agent",
                "x-forwarded-for",
                "x-gateway-consumer",
                "x-gateway-key-id",
                "x-original-url"
            ]
        );
    }
}
