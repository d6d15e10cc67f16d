//! Data-plane metrics in Prometheus form.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::NoLabelSet;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::policy::Name;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: RouteLabel,
    pub decision: &'static str,
    pub status: u16,
}

/// A route's name as a label value, shared with the policy (no copy per request); empty when
/// no route matched.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RouteLabel(pub Option<Name>);

impl EncodeLabelValue for RouteLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.0.as_ref().map_or("", Name::as_str))
    }
}

pub struct ProxyMetrics {
    /// Counted through [`ProxyMetrics::count_request`].
    requests: Family<RequestLabels, Counter>,
    /// The family's counters by label set, under a cheap hash: the family's own map uses
    /// SipHash, ~400 instructions a request for labels the policy names (route) and the gateway
    /// picks (decision, status), none of which a client can choose freely. Same counters,
    /// so the exposition is unchanged.
    /// Read without a lock, copied and swapped when a label set is first seen.
    request_counters: arc_swap::ArcSwap<crate::hashing::ConfigMap<RequestLabels, Counter>>,
    pub latency_seconds: DurationHistogram,
    pub auth_failures: Counter,
    pub rate_limited: Counter,
    /// Connections closed at accept because their client IP had too many open.
    pub connections_refused: Counter,
    /// WebSocket tunnels open now.
    pub tunnels_open: Gauge,
}

impl ProxyMetrics {
    pub fn new() -> Self {
        Self {
            requests: Family::default(),
            request_counters: Default::default(),
            // 50 µs to ~1.6 s in powers of two: the proxy hop lives at the low end.
            latency_seconds: DurationHistogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.00005, 2.0, 16,
            )),
            auth_failures: Counter::default(),
            rate_limited: Counter::default(),
            connections_refused: Counter::default(),
            tunnels_open: Gauge::default(),
        }
    }

    /// Counts one request under its labels.
    pub fn count_request(&self, labels: RequestLabels) {
        if let Some(c) = self.request_counters.load().get(&labels) {
            c.inc();
            return;
        }
        // The family's own counter: two threads adding the same label set share it.
        let counter = self.requests.get_or_create(&labels).clone();
        counter.inc();
        self.request_counters.rcu(|map| {
            let mut map = crate::hashing::ConfigMap::clone(map);
            map.insert(labels.clone(), counter.clone());
            map
        });
    }

    pub fn register(&self, r: &mut Registry) {
        r.register("proxy_requests", "Proxied requests by route, decision and status", self.requests.clone());
        r.register(
            "proxy_request_duration_seconds",
            "Time from request head to response head",
            self.latency_seconds.clone(),
        );
        r.register(
            "proxy_auth_failures",
            "Requests refused for a missing or invalid credential",
            self.auth_failures.clone(),
        );
        r.register("proxy_rate_limited", "Requests refused by a rate limit", self.rate_limited.clone());
        r.register(
            "proxy_connections_refused",
            "Connections closed at accept: their client IP already had proxy_connections_per_ip_max open",
            self.connections_refused.clone(),
        );
        r.register("proxy_tunnels_open", "WebSocket tunnels open now", self.tunnels_open.clone());
    }
}

/// A histogram of durations that records with atomics alone, encoded as prometheus-client's
/// `Histogram` is (the same bounds give the same text, checked by a test).
///
/// prometheus-client's `Histogram` takes a write lock for every observation. Every proxied
/// request records one, from every proxy thread, so the threads queued on that lock: a thread
/// preempted while holding it (the machine is shared with the load, the upstream and the audit
/// writer) put the others to sleep in futex waits, 2.4 % of the proxy threads' context
/// switches under load (`perf record -e sched:sched_switch`).
#[derive(Debug, Clone)]
pub struct DurationHistogram(Arc<Buckets>);

#[derive(Debug)]
struct Buckets {
    /// Upper bounds in seconds, as encoded, and in nanoseconds, as compared; ascending. The
    /// last bucket (`+Inf`) has none.
    bounds: Vec<f64>,
    bounds_ns: Vec<u64>,
    /// One per bound, and one for `+Inf`.
    counts: Vec<AtomicU64>,
    sum_ns: AtomicU64,
}

impl DurationHistogram {
    /// Buckets with these upper bounds (in seconds, ascending), and `+Inf`.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let bounds: Vec<f64> = bounds.into_iter().collect();
        let bounds_ns = bounds.iter().map(|b| (b * 1e9).round() as u64).collect();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self(Arc::new(Buckets { bounds, bounds_ns, counts, sum_ns: AtomicU64::new(0) }))
    }

    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let b = &self.0;
        let i = b.bounds_ns.iter().position(|bound| ns <= *bound).unwrap_or(b.bounds_ns.len());
        b.counts[i].fetch_add(1, Ordering::Relaxed);
        b.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let b = &self.0;
        let buckets: Vec<(f64, u64)> = b
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(b.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        // The count is the buckets' total, so the two always agree within one scrape.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = b.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

    fn text(name: &str, metric: impl prometheus_client::registry::Metric) -> String {
        let mut r = Registry::default();
        r.register(name, "help", metric);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        out
    }

    #[test]
    fn durations_are_counted_as_prometheus_client_counts_them() {
        let ours = DurationHistogram::new(exponential_buckets(0.00005, 2.0, 16));
        let theirs = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        // Below the first bound, on bounds, between them, and past the last (+Inf).
        for us in [1u64, 50, 51, 99, 100, 101, 1_000, 25_000, 1_638_400, 1_638_401, 5_000_000] {
            ours.observe(Duration::from_micros(us));
            theirs.observe(us as f64 / 1e6);
        }
        let (a, b) = (text("d", ours), text("d", theirs));
        // The sums are added in different orders (integer nanoseconds here, f64 seconds
        // there); every other line must be the same.
        let lines = |t: &str| t.lines().filter(|l| !l.starts_with("d_sum")).map(str::to_string).collect::<Vec<_>>();
        assert_eq!(lines(&a), lines(&b), "ours:\n{a}\ntheirs:\n{b}");
        let sum = |t: &str| t.lines().find_map(|l| l.strip_prefix("d_sum ")).unwrap().parse::<f64>().unwrap();
        assert!((sum(&a) - sum(&b)).abs() < 1e-9, "ours:\n{a}\ntheirs:\n{b}");
    }

    /// The first count of a label set goes through the family, later ones through the cached
    /// counter: the exposition counts both.
    #[test]
    fn requests_counted_through_the_cache_show_in_the_family() {
        let m = ProxyMetrics::new();
        let route = |n: &str| RouteLabel(Some(Name::try_from(n.to_string()).unwrap()));
        for _ in 0..3 {
            m.count_request(RequestLabels { route: route("api"), decision: "allow", status: 200 });
        }
        m.count_request(RequestLabels { route: route("api"), decision: "deny", status: 429 });
        m.count_request(RequestLabels { route: RouteLabel(None), decision: "deny", status: 400 });
        let mut r = Registry::default();
        m.register(&mut r);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        for line in [
            r#"proxy_requests_total{route="api",decision="allow",status="200"} 3"#,
            r#"proxy_requests_total{route="api",decision="deny",status="429"} 1"#,
            r#"proxy_requests_total{route="",decision="deny",status="400"} 1"#,
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing from:\n{out}");
        }
    }
}
