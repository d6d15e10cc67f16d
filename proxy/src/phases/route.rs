//! Phase 2, route: pick the route for (host, method, canonical path). The longest matching
//! path prefix wins; prefixes match whole segments (`/orders` never matches `/orders-admin`).

use crate::policy::{Policy, Route};

/// Whether `prefix` covers `path` segment-wise.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

pub fn find<'p>(policy: &'p Policy, host: Option<&str>, method: &str, path: &str) -> Option<&'p Route> {
    policy
        .routes
        .values()
        .filter(|r| r.hosts.is_empty() || host.is_some_and(|h| r.hosts.iter().any(|rh| rh == h)))
        .filter(|r| r.methods.is_empty() || r.methods.iter().any(|m| m == method))
        .filter(|r| prefix_matches(&r.path_prefix, path))
        // Longest prefix first; a host-specific route beats a wildcard one of the same length.
        .max_by_key(|r| (r.path_prefix.trim_end_matches('/').len(), !r.hosts.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::prefix_matches;

    #[test]
    fn segment_prefixes() {
        assert!(prefix_matches("/orders", "/orders"));
        assert!(prefix_matches("/orders", "/orders/1"));
        assert!(prefix_matches("/orders/", "/orders/1"));
        assert!(!prefix_matches("/orders", "/orders-admin"));
        assert!(prefix_matches("/", "/anything"));
    }
}
