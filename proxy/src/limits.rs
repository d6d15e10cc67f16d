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

type Keyed = DefaultKeyedRateLimiter<Subject>;

/// Subjects up to this many bytes are held in place: an IP address in text (at most 45), a key
/// id, most consumer names.
const SUBJECT_INLINE: usize = 46;

/// A rate-limit subject as the limiters key it. A short one is held in place, so that checking
/// a limit allocates nothing (a `String` per check was one allocation and one free per limited
/// request); a longer one is copied to the heap. Two subjects are equal, and hash alike, when
/// their text is, whichever way they are held.
#[derive(Clone, Debug)]
enum Subject {
    Inline { len: u8, bytes: [u8; SUBJECT_INLINE] },
    Heap(Box<str>),
}

impl Subject {
    fn new(s: &str) -> Self {
        if s.len() <= SUBJECT_INLINE {
            let mut bytes = [0; SUBJECT_INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Subject::Inline { len: s.len() as u8, bytes }
        } else {
            Subject::Heap(s.into())
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Subject::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Subject::Heap(s) => s.as_bytes(),
        }
    }
}

impl PartialEq for Subject {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Subject {}

impl std::hash::Hash for Subject {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state)
    }
}

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
        let key = Subject::new(subject);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{LimitMode, LimitSubject};
    use std::hash::{BuildHasher, RandomState};

    #[test]
    fn subjects_are_equal_by_text_whichever_way_they_are_held() {
        let h = RandomState::new();
        for len in [0, 1, SUBJECT_INLINE - 1, SUBJECT_INLINE, SUBJECT_INLINE + 1, 300] {
            let text: String = "k".repeat(len);
            let (a, b) = (Subject::new(&text), Subject::new(&text));
            assert!(matches!(a, Subject::Inline { .. }) == (len <= SUBJECT_INLINE), "{len} bytes");
            assert_eq!(a.as_bytes(), text.as_bytes());
            assert_eq!(a, b);
            assert_eq!(h.hash_one(&a), h.hash_one(&b));
            if len <= SUBJECT_INLINE {
                // The same text held on the heap.
                let heap = Subject::Heap(text.clone().into());
                assert_eq!(a, heap, "{len} bytes");
                assert_eq!(h.hash_one(&a), h.hash_one(&heap), "{len} bytes");
            }
            assert_ne!(a, Subject::new(&format!("{text}x")));
        }
        // A prefix is another subject, even with the padding's zero bytes after it.
        assert_ne!(Subject::new("10.0.0.1"), Subject::new("10.0.0.1\0"));
    }

    #[test]
    fn each_subject_has_its_own_allowance() {
        let limits = Limits::new();
        let p = RateLimitPolicy::for_test("p", 2, LimitSubject::Ip, LimitMode::Local);
        let long = "c".repeat(SUBJECT_INLINE + 10);
        for subject in ["10.0.0.1", "2001:db8::1", long.as_str()] {
            assert!(limits.check(&p, subject).is_ok());
            assert!(limits.check(&p, subject).is_ok());
            let over = limits.check(&p, subject).expect_err(subject);
            assert_eq!((over.limit, over.window_s), (2, 60));
        }
        // Neither a longer nor a shorter text shares an allowance with one that is used up.
        assert!(limits.check(&p, &format!("{long}c")).is_ok());
        assert!(limits.check(&p, "10.0.0.").is_ok());
    }
}
