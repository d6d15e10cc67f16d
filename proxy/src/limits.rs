//! Phase 5, rate-limit (local mode): per-node GCRA limiters from governor, keyed by subject;
//! global mode is in [`crate::global`].
//! Also the per-IP limiter on failed authentications that makes an invalid-key flood cheap.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::global::GlobalLimits;
use crate::hashing::ConfigMap;
use crate::policy::{Name, RateLimitPolicy};
use crate::reports::AuthFailureReports;

/// Failed authentications allowed per client IP: a burst of 20, refilled at 10 per second.
/// A client with a valid key never meets it; a scanner is slowed to a trickle after 20 tries.
const FAILED_AUTH_PER_IP_PER_S: u32 = 10;
const FAILED_AUTH_BURST: u32 = 20;

type Keyed = DefaultKeyedRateLimiter<String>;

/// One policy's limiter and the parameters it was built from.
#[derive(Clone)]
struct Entry {
    policy: RateLimitPolicy,
    limiter: Arc<Keyed>,
}

/// Over a limit: which policy and when to retry.
#[derive(Debug, Clone)]
pub struct Exceeded {
    pub policy: Name,
    pub limit: u64,
    pub window_s: u64,
    pub retry_after: Duration,
}

pub struct Limits {
    /// Local-mode limiters by policy name, rebuilt when a policy's parameters change. Read on
    /// every request without a lock (a lock's reader count is a line every proxy thread
    /// writes); copied and swapped on the rare change.
    by_policy: ArcSwap<ConfigMap<Name, Entry>>,
    /// Global-mode tokens this node holds under quota leases.
    pub global: Arc<GlobalLimits>,
    /// Failed authentications per IP, to be reported to the cluster (when the guard is on).
    pub auth_reports: Arc<AuthFailureReports>,
    failed_auth: RateLimiter<IpAddr, governor::state::keyed::DefaultKeyedStateStore<IpAddr>, DefaultClock>,
    clock: DefaultClock,
}

fn quota(p: &RateLimitPolicy) -> Quota {
    let limit = u32::try_from(p.limit).unwrap_or(u32::MAX).max(1);
    // Replenish one unit every window/limit, with a burst of the whole limit: at most `limit`
    // in any window once the bucket is drained.
    let period = Duration::from_secs(p.window_s.max(1)) / limit;
    Quota::with_period(period.max(Duration::from_nanos(1)))
        .expect("period is positive")
        .allow_burst(NonZeroU32::new(limit).expect("limit ≥ 1"))
}

impl Limits {
    pub fn new() -> Self {
        let q = Quota::per_second(NonZeroU32::new(FAILED_AUTH_PER_IP_PER_S).expect("nonzero"))
            .allow_burst(NonZeroU32::new(FAILED_AUTH_BURST).expect("nonzero"));
        Self {
            by_policy: ArcSwap::default(),
            global: Arc::new(GlobalLimits::default()),
            auth_reports: Arc::new(AuthFailureReports::default()),
            failed_auth: RateLimiter::keyed(q),
            clock: DefaultClock::default(),
        }
    }

    /// Makes the limiter of `p` (or remakes it, if `p` changed), for when [`Limits::check`]
    /// found none for it. Two threads making the same one at once end with one of them, which
    /// both use.
    fn limiter(&self, p: &RateLimitPolicy) -> Arc<Keyed> {
        let fresh = Arc::new(RateLimiter::keyed(quota(p)));
        let mut chosen = fresh.clone();
        self.by_policy.rcu(|map| {
            let mut map = ConfigMap::clone(map);
            match map.get(&p.name) {
                Some(e) if e.policy == *p => chosen = e.limiter.clone(),
                _ => {
                    map.insert(p.name.clone(), Entry { policy: p.clone(), limiter: fresh.clone() });
                    chosen = fresh.clone();
                }
            }
            map
        });
        chosen
    }

    /// Charges `p.cost` to `subject` under policy `p`.
    pub fn check(&self, p: &RateLimitPolicy, subject: &str) -> Result<(), Exceeded> {
        let cost = NonZeroU32::new(u32::try_from(p.cost).unwrap_or(u32::MAX).max(1)).expect("≥ 1");
        let exceeded =
            |retry_after| Exceeded { policy: p.name.clone(), limit: p.limit, window_s: p.window_s, retry_after };
        // Subjects are small strings; a String key per check is the price of a keyed store.
        let key = subject.to_string();
        // The usual case checks without taking a reference to the limiter (two more atomic
        // writes to a line every proxy thread shares).
        let checked =
            self.by_policy.load().get(&p.name).filter(|e| e.policy == *p).map(|e| e.limiter.check_key_n(&key, cost));
        match checked.unwrap_or_else(|| self.limiter(p).check_key_n(&key, cost)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(exceeded(not_until.wait_time_from(self.clock.now()))),
            Err(_) => Err(exceeded(Duration::from_secs(p.window_s))),
        }
    }

    /// Records a failed authentication from `ip`; `Err` once that IP is over its allowance.
    pub fn failed_auth(&self, ip: IpAddr) -> Result<(), Duration> {
        self.failed_auth.check_key(&ip).map_err(|n| n.wait_time_from(self.clock.now()))
    }

    /// Forgets idle subjects so the keyed stores do not grow without bound.
    pub fn housekeeping(&self) {
        for e in self.by_policy.load().values() {
            e.limiter.retain_recent();
            e.limiter.shrink_to_fit();
        }
        self.failed_auth.retain_recent();
        self.failed_auth.shrink_to_fit();
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new()
    }
}
