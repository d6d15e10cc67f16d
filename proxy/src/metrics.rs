//! Data-plane metrics in Prometheus form.

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
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
    pub requests: Family<RequestLabels, Counter>,
    pub latency_seconds: Histogram,
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
            // 50 µs to ~1.6 s in powers of two: the proxy hop lives at the low end.
            latency_seconds: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.00005, 2.0, 16,
            )),
            auth_failures: Counter::default(),
            rate_limited: Counter::default(),
            connections_refused: Counter::default(),
            tunnels_open: Gauge::default(),
        }
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

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}
