//! Phase 2, route: pick the route for (host, method, canonical path). The longest matching
//! path prefix wins; prefixes match whole segments (`/orders` never matches `/orders-admin`);
//! among routes of the same prefix, one naming the host beats one for any host, then one
//! naming the method beats one for any method (so `POST /orders` to a write service beside
//! `/orders` for everything else does what it says, whatever the two are called), and after
//! that the last by name wins.
//!
//! The routes are indexed by prefix ([`Router`]), so finding one costs a hash lookup per
//! distinct prefix length, not a comparison per route: with 1,000 routes a linear scan took a
//! fifth of the gateway's throughput (docs/benchmarks.md).

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use imbl::OrdMap;

use crate::policy::{Name, Policy, Route};

/// Whether `prefix` covers `path` segment-wise.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Finds routes through an index of the current policy's routes, rebuilt when they change.
pub struct Router {
    index: ArcSwap<RouteIndex>,
}

impl Default for Router {
    fn default() -> Self {
        Self { index: ArcSwap::from_pointee(RouteIndex::build(&OrdMap::new())) }
    }
}

impl Router {
    /// The route for a request under `policy`. The index is rebuilt the first time a policy
    /// with other routes is seen (a policy that changed only keys or limits shares its routes
    /// map with the last one, which `ptr_eq` sees in O(1)).
    pub fn find<'p>(&self, policy: &'p Policy, host: Option<&str>, method: &str, path: &str) -> Option<&'p Route> {
        // The route is the policy's own (the index only names it), so no name is cloned.
        let index = self.index.load();
        if index.routes.ptr_eq(&policy.routes) {
            return index.find(host, method, path).and_then(|name| policy.routes.get(name));
        }
        let fresh = Arc::new(RouteIndex::build(&policy.routes));
        self.index.store(fresh.clone());
        fresh.find(host, method, path).and_then(|name| policy.routes.get(name))
    }
}

/// Routes by their path prefix without trailing slashes.
struct RouteIndex {
    /// The map this index was built from.
    routes: OrdMap<Name, Route>,
    /// The routes of each prefix, in name order, with what decides between them.
    by_prefix: HashMap<String, Vec<Candidate>>,
    /// The distinct prefix lengths, longest first: a path is looked up at each that ends on
    /// one of its segment boundaries, so an attacker's long path costs no more lookups than
    /// the policy has prefix lengths.
    lengths: Vec<usize>,
}

struct Candidate {
    name: Name,
    hosts: Vec<String>,
    methods: Vec<String>,
}

impl Candidate {
    /// What decides between routes of one prefix that both match: naming the host, then
    /// naming the method.
    fn specificity(&self) -> (bool, bool) {
        (!self.hosts.is_empty(), !self.methods.is_empty())
    }
}

impl RouteIndex {
    fn build(routes: &OrdMap<Name, Route>) -> Self {
        let mut by_prefix: HashMap<String, Vec<Candidate>> = HashMap::new();
        for r in routes.values() {
            let c = Candidate { name: r.name.clone(), hosts: r.hosts.clone(), methods: r.methods.clone() };
            by_prefix.entry(r.path_prefix.trim_end_matches('/').to_string()).or_default().push(c);
        }
        let mut lengths: Vec<usize> = by_prefix.keys().map(String::len).collect();
        lengths.sort_unstable_by(|a, b| b.cmp(a));
        lengths.dedup();
        Self { routes: routes.clone(), by_prefix, lengths }
    }

    fn find(&self, host: Option<&str>, method: &str, path: &str) -> Option<&Name> {
        for &len in &self.lengths {
            // The empty prefix covers every path; any other must end where a segment does.
            if len > 0 && !(len == path.len() || (len < path.len() && path.as_bytes()[len] == b'/')) {
                continue;
            }
            let Some(candidates) = self.by_prefix.get(&path[..len]) else { continue };
            let mut best: Option<&Candidate> = None;
            for c in candidates {
                if !c.hosts.is_empty() && !host.is_some_and(|h| c.hosts.iter().any(|ch| ch == h)) {
                    continue;
                }
                if !c.methods.is_empty() && !c.methods.iter().any(|m| m == method) {
                    continue;
                }
                // Host-specific first, then method-specific; of equals, the later one.
                if best.is_none_or(|b| c.specificity() >= b.specificity()) {
                    best = Some(c);
                }
            }
            if let Some(b) = best {
                return Some(&b.name);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::AuthMethod;
    use proptest::prelude::*;

    #[test]
    fn segment_prefixes() {
        assert!(prefix_matches("/orders", "/orders"));
        assert!(prefix_matches("/orders", "/orders/1"));
        assert!(prefix_matches("/orders/", "/orders/1"));
        assert!(!prefix_matches("/orders", "/orders-admin"));
        assert!(prefix_matches("/", "/anything"));
    }

    /// The definition the index must agree with: every route tried in name order, the longest
    /// prefix, then host-specific, then method-specific first, the last of equals.
    fn find_linear<'p>(policy: &'p Policy, host: Option<&str>, method: &str, path: &str) -> Option<&'p Route> {
        policy
            .routes
            .values()
            .filter(|r| r.hosts.is_empty() || host.is_some_and(|h| r.hosts.iter().any(|rh| rh == h)))
            .filter(|r| r.methods.is_empty() || r.methods.iter().any(|m| m == method))
            .filter(|r| prefix_matches(&r.path_prefix, path))
            .max_by_key(|r| (r.path_prefix.trim_end_matches('/').len(), !r.hosts.is_empty(), !r.methods.is_empty()))
    }

    fn route(name: &str, prefix: &str, hosts: &[&str], methods: &[&str]) -> Route {
        Route {
            name: Name::try_from(name.to_string()).unwrap(),
            path_prefix: prefix.to_string(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            upstreams: vec!["http://127.0.0.1:1".into()],
            auth: vec![AuthMethod::ApiKey],
            rate_limits: vec![],
            serve_stale: false,
        }
    }

    fn policy(routes: Vec<Route>) -> Policy {
        Policy { routes: routes.into_iter().map(|r| (r.name.clone(), r)).collect(), ..Policy::default() }
    }

    #[test]
    fn the_index_follows_the_policy_it_is_given() {
        let router = Router::default();
        let a = policy(vec![route("a", "/orders", &[], &[]), route("b", "/", &[], &[])]);
        assert_eq!(router.find(&a, None, "GET", "/orders/1").map(|r| r.name.as_str()), Some("a"));
        assert_eq!(router.find(&a, None, "GET", "/ordersx").map(|r| r.name.as_str()), Some("b"));
        // Another policy with other routes: the index is rebuilt, not reused.
        let b = policy(vec![route("c", "/orders/1", &["api.example"], &["GET"])]);
        assert_eq!(router.find(&b, Some("api.example"), "GET", "/orders/1/x").map(|r| r.name.as_str()), Some("c"));
        assert_eq!(router.find(&b, None, "GET", "/orders/1").map(|r| r.name.as_str()), None);
        assert_eq!(router.find(&a, None, "GET", "/orders").map(|r| r.name.as_str()), Some("a"));
        // Of one prefix, a route naming the method beats one for any method, whatever the names.
        let c = policy(vec![route("a-write", "/orders", &[], &["POST"]), route("orders", "/orders", &[], &[])]);
        assert_eq!(router.find(&c, None, "POST", "/orders/1").map(|r| r.name.as_str()), Some("a-write"));
        assert_eq!(router.find(&c, None, "GET", "/orders/1").map(|r| r.name.as_str()), Some("orders"));
        // A long path of many segments is looked up once per prefix length only.
        let long = "/a".repeat(4000);
        assert_eq!(router.find(&a, None, "GET", &long).map(|r| r.name.as_str()), Some("b"));
    }

    fn any_route() -> impl Strategy<Value = Route> {
        (
            "[a-d]{1,2}",
            prop::sample::select(vec!["/", "", "/a", "/a/", "/a/b", "/a/b/", "/ab", "/a/bc", "/b", "/a//", "/é"]),
            prop::collection::vec(prop::sample::select(vec!["x.test", "y.test"]), 0..2),
            prop::collection::vec(prop::sample::select(vec!["GET", "POST"]), 0..2),
        )
            .prop_map(|(name, prefix, hosts, methods)| route(&name, prefix, &hosts, &methods))
    }

    proptest! {
        /// Whatever the routes and the request, the index picks the route the definition picks.
        #[test]
        fn the_index_agrees_with_trying_every_route(
            routes in prop::collection::vec(any_route(), 0..12),
            host in prop::option::of(prop::sample::select(vec!["x.test", "y.test", "z.test"])),
            method in prop::sample::select(vec!["GET", "POST", "PUT"]),
            path in prop::sample::select(vec!["/", "/a", "/a/", "/a/b", "/a/b/", "/a/b/c", "/ab", "/ab/c", "/a/bc", "/b", "/bb", "/é", "/é/x", "/a/é"]),
        ) {
            let p = policy(routes);
            let want = find_linear(&p, host, method, path).map(|r| r.name.clone());
            let got = Router::default().find(&p, host, method, path).map(|r| r.name.clone());
            prop_assert_eq!(got, want);
        }
    }
}
