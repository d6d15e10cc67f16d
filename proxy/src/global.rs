//! Phase 5, rate-limit (global mode): spends tokens this node holds under quota leases.
//!
//! A `"mode": "global"` policy admits at most `limit` units per window across the cluster. The
//! state machine keeps, per (policy, subject, window), how many tokens it granted to each node
//! and never lets the sum pass the limit; this module is the node's side of that ledger. It
//! never talks to Raft: the quota task (`raft/src/quota.rs`) calls [`GlobalLimits::collect`]
//! for what to ask and give back, proposes one entry for all of it, and hands the answer to
//! [`GlobalLimits::granted`].
//!
//! The rules that make the limit strict:
//! - A node spends only tokens granted to it; tokens it cannot account for (a restart, a lost
//!   answer) are never spent, so they can only be lost, never counted twice.
//! - A grant belongs to one window of the cluster's agreed (leader-stamped) time. The node stops
//!   spending it at `sent + (window_end - ts)` on its own monotonic clock, where `sent` is when
//!   it asked and `ts` the entry's agreed time: never later than the window's end.
//! - Tokens go back only by an entry this node proposes after it stopped spending them.
//!
//! A hot subject asks for more when half of its last grant is spent, sized to its recent
//! demand, so it never waits. A request waits (bounded by `wait_max`) only when this node holds
//! nothing for its subject and the pool may still have tokens: the first request of a subject
//! on a node in a window, or a burst that outran the refill.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use crate::policy::{Name, RateLimitPolicy};

/// Tunables of the node's side of the quota leases.
#[derive(Debug, Clone)]
pub struct GlobalConfig {
    /// Longest a request waits for a grant when this node holds no tokens for its subject.
    pub wait_max: Duration,
    /// Tokens of a subject unused this long go back to the pool, for nodes that need them.
    pub idle_return: Duration,
    /// A grant is sized to cover this much of the subject's recent demand.
    pub lookahead: Duration,
    /// While the pool is empty, a node asks again at most this often (another node may have
    /// given tokens back).
    pub recheck: Duration,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        Self {
            wait_max: Duration::from_millis(250),
            idle_return: Duration::from_millis(200),
            lookahead: Duration::from_millis(500),
            recheck: Duration::from_millis(100),
        }
    }
}

/// What the quota task asks the leader for, per subject. These three types are also what the
/// `AcquireQuota` log entry carries and answers (`raft/src/operations/quota.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ask {
    pub policy: Name,
    pub subject: String,
    pub want: u64,
}

/// Tokens this node stopped spending and gives back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GiveBack {
    pub policy: Name,
    pub subject: String,
    pub window_start_ms: u64,
    pub n: u64,
}

/// The state machine's answer to one [`Ask`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub policy: Name,
    pub subject: String,
    pub window_start_ms: u64,
    pub window_ms: u64,
    /// The entry's agreed time: the node anchors the window's end on it.
    pub ts_ms: u64,
    pub limit: u64,
    pub granted: u64,
    /// Tokens left in the pool after this grant.
    pub available: u64,
}

/// The outcome of [`GlobalLimits::try_take`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Take {
    Admitted,
    /// Over the limit for this window.
    Refused {
        retry_after: Duration,
        limit: u64,
        window_s: u64,
    },
    /// Nothing held here yet; a grant has been asked for. Wait for [`GlobalLimits::changed`].
    Wait,
}

#[derive(Debug)]
struct Holding {
    /// The agreed-time window the tokens belong to; 0 before the first grant.
    window_start_ms: u64,
    /// When this node stops spending them (its own clock).
    valid_until: Instant,
    tokens: u64,
    limit: u64,
    window_s: u64,
    cost: u64,
    /// Size of the last grant, for the refill threshold.
    last_grant: u64,
    /// Units requested (admitted or not) since `demand_since`.
    demand: u64,
    demand_since: Instant,
    last_take: Instant,
    /// An ask is in flight or queued.
    asking: bool,
    in_flight: bool,
    /// The pool could not serve one more request at the last answer.
    pool_empty: bool,
    last_answer: Instant,
}

impl Holding {
    fn new(p: &RateLimitPolicy, now: Instant) -> Self {
        Self {
            window_start_ms: 0,
            valid_until: now,
            tokens: 0,
            limit: p.limit,
            window_s: p.window_s,
            cost: p.cost.max(1),
            last_grant: 0,
            demand: 0,
            demand_since: now,
            last_take: now,
            asking: false,
            in_flight: false,
            pool_empty: false,
            last_answer: now,
        }
    }

    fn live(&self, now: Instant) -> bool {
        self.window_start_ms != 0 && now < self.valid_until
    }
}

/// What the quota leases cost and how well they work, for `/metrics`.
#[derive(Default)]
pub struct GlobalMetrics {
    /// Quota entries this node proposed.
    pub entries: Counter,
    /// Entries that were not committed in time (no leader reachable).
    pub entry_failures: Counter,
    pub tokens_granted: Counter,
    pub tokens_given_back: Counter,
}

impl GlobalMetrics {
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register("global_limit_entries", "Quota lease entries proposed by this node", self.entries.clone());
        r.register(
            "global_limit_entry_failures",
            "Quota lease entries not committed in time (no leader reachable)",
            self.entry_failures.clone(),
        );
        r.register("global_limit_tokens_granted", "Tokens granted to this node", self.tokens_granted.clone());
        r.register(
            "global_limit_tokens_given_back",
            "Unused tokens this node gave back to the pool",
            self.tokens_given_back.clone(),
        );
    }
}

/// The tokens this node holds, per (policy, subject).
pub struct GlobalLimits {
    cfg: GlobalConfig,
    pub metrics: GlobalMetrics,
    holdings: Mutex<HashMap<Name, HashMap<Box<str>, Holding>>>,
    /// Wakes the quota task when there is something to ask for.
    work: Notify,
    /// Bumped on every answer; waiting requests watch it.
    answers: watch::Sender<u64>,
}

impl GlobalLimits {
    pub fn new(cfg: GlobalConfig) -> Self {
        Self {
            cfg,
            metrics: GlobalMetrics::default(),
            holdings: Mutex::default(),
            work: Notify::new(),
            answers: watch::Sender::new(0),
        }
    }

    pub fn config(&self) -> &GlobalConfig {
        &self.cfg
    }

    /// Subscribe before [`try_take`](Self::try_take) so that no answer is missed in between.
    pub fn changed(&self) -> watch::Receiver<u64> {
        self.answers.subscribe()
    }

    /// Charges `p.cost` to `subject` if this node holds the tokens. Never blocks on anything
    /// but a short in-memory lock.
    pub fn try_take(&self, p: &RateLimitPolicy, subject: &str, now: Instant) -> Take {
        let mut all = self.holdings.lock().expect("global limits lock");
        let by_subject = match all.get_mut(&p.name) {
            Some(m) => m,
            None => all.entry(p.name.clone()).or_default(),
        };
        let h = match by_subject.get_mut(subject) {
            Some(h) => h,
            None => by_subject.entry(subject.into()).or_insert_with(|| Holding::new(p, now)),
        };
        let cost = p.cost.max(1);
        h.cost = cost;
        h.limit = p.limit;
        h.window_s = p.window_s;
        h.demand += cost;
        h.last_take = now;
        if !h.live(now) {
            // The window ended: whatever was left lapsed with it.
            h.tokens = 0;
            h.pool_empty = false;
        }
        if h.tokens >= cost {
            h.tokens -= cost;
            // Refill when half of the last grant is gone, before anyone has to wait.
            if h.tokens * 2 < h.last_grant.max(cost) && !h.pool_empty && !h.asking {
                h.asking = true;
                self.work.notify_one();
            }
            return Take::Admitted;
        }
        if h.pool_empty && h.live(now) {
            if !h.asking && now.duration_since(h.last_answer) >= self.cfg.recheck {
                h.asking = true;
                self.work.notify_one();
            }
            return Take::Refused {
                retry_after: h.valid_until.saturating_duration_since(now),
                limit: h.limit,
                window_s: h.window_s,
            };
        }
        // Nothing held, and the pool may have some: ask, and let the caller wait.
        h.demand -= cost; // counted again when the request retries
        if !h.asking {
            h.asking = true;
            self.work.notify_one();
        }
        Take::Wait
    }

    /// Waits until there may be work for the quota task.
    pub async fn work(&self) {
        self.work.notified().await;
    }

    /// What to ask for and what to give back now. Marks the asks in flight; tokens given back
    /// are gone from this node before the caller proposes their return.
    pub fn collect(&self, now: Instant) -> (Vec<Ask>, Vec<GiveBack>) {
        let mut asks = Vec::new();
        let mut gives = Vec::new();
        let mut all = self.holdings.lock().expect("global limits lock");
        for (policy, by_subject) in all.iter_mut() {
            by_subject.retain(|subject, h| {
                let live = h.live(now);
                if h.asking && !h.in_flight {
                    h.in_flight = true;
                    asks.push(Ask { policy: policy.clone(), subject: subject.to_string(), want: self.want(h, now) });
                } else if live
                    && h.tokens > 0
                    && !h.in_flight
                    && now.duration_since(h.last_take) >= self.cfg.idle_return
                {
                    gives.push(GiveBack {
                        policy: policy.clone(),
                        subject: subject.to_string(),
                        window_start_ms: h.window_start_ms,
                        n: h.tokens,
                    });
                    self.metrics.tokens_given_back.inc_by(h.tokens);
                    h.tokens = 0;
                    h.last_grant = 0;
                }
                // Forget subjects idle for a whole window (and at least a minute).
                let forget_after = Duration::from_secs(h.window_s.max(60));
                h.in_flight || h.asking || live || now.duration_since(h.last_take) < forget_after
            });
        }
        all.retain(|_, m| !m.is_empty());
        (asks, gives)
    }

    /// How much to ask for: the recent demand over the lookahead, at least two requests' worth,
    /// at most the limit. A subject seen for the first time asks for a sixteenth of the limit
    /// (at most 100 requests' worth): enough for a burst, little to strand if it goes quiet.
    fn want(&self, h: &Holding, now: Instant) -> u64 {
        let elapsed = now.duration_since(h.demand_since).as_secs_f64().max(0.01);
        let rate = h.demand as f64 / elapsed;
        let by_rate = (rate * self.cfg.lookahead.as_secs_f64()).ceil() as u64;
        let first = (h.limit / 16).min(100 * h.cost);
        let want = if h.window_start_ms == 0 { first.max(by_rate) } else { by_rate };
        want.max(2 * h.cost).min(h.limit.max(h.cost))
    }

    /// The answer to asks sent at `sent`: adds the tokens and wakes waiting requests.
    pub fn granted(&self, grants: &[Grant], sent: Instant, now: Instant) {
        let mut all = self.holdings.lock().expect("global limits lock");
        for g in grants {
            let Some(h) = all.get_mut(&g.policy).and_then(|m| m.get_mut(g.subject.as_str())) else {
                continue; // forgotten meanwhile: the tokens are never spent (safe)
            };
            let end_ms = g.window_start_ms + g.window_ms;
            let valid_until = sent + Duration::from_millis(end_ms.saturating_sub(g.ts_ms));
            if g.window_start_ms != h.window_start_ms {
                h.window_start_ms = g.window_start_ms;
                h.tokens = 0;
            }
            h.valid_until = valid_until;
            h.tokens += g.granted;
            self.metrics.tokens_granted.inc_by(g.granted);
            h.limit = g.limit;
            h.last_grant = g.granted;
            h.pool_empty = g.available < h.cost;
            h.asking = false;
            h.in_flight = false;
            h.last_answer = now;
            h.demand = 0;
            h.demand_since = now;
        }
        drop(all);
        self.answers.send_modify(|n| *n += 1);
    }

    /// Settles the asks of an entry that [`granted`](Self::granted) did not answer (not
    /// committed in time, refused, or skipped for a policy that is gone): waiting requests give
    /// up, and the next request asks again. Answered asks are left alone.
    pub fn unanswered(&self, asks: &[Ask], now: Instant) {
        let mut all = self.holdings.lock().expect("global limits lock");
        let mut settled = false;
        for a in asks {
            if let Some(h) = all.get_mut(&a.policy).and_then(|m| m.get_mut(a.subject.as_str())).filter(|h| h.in_flight)
            {
                h.asking = false;
                h.in_flight = false;
                h.last_answer = now;
                settled = true;
            }
        }
        drop(all);
        if settled {
            self.answers.send_modify(|n| *n += 1);
        }
    }

    /// Tokens held for `subject` under `policy` (for tests and the debug endpoint).
    pub fn held(&self, policy: &Name, subject: &str) -> u64 {
        let all = self.holdings.lock().expect("global limits lock");
        all.get(policy).and_then(|m| m.get(subject)).map_or(0, |h| h.tokens)
    }
}

impl Default for GlobalLimits {
    fn default() -> Self {
        Self::new(GlobalConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{LimitMode, LimitSubject};

    fn policy(limit: u64) -> RateLimitPolicy {
        RateLimitPolicy::for_test("g", limit, LimitSubject::Key, LimitMode::Global)
    }

    fn grant(p: &RateLimitPolicy, granted: u64, available: u64, ts_ms: u64) -> Grant {
        Grant {
            policy: p.name.clone(),
            subject: "k".into(),
            window_start_ms: 60_000,
            window_ms: 60_000,
            ts_ms,
            limit: p.limit,
            granted,
            available,
        }
    }

    #[test]
    fn spends_only_what_was_granted() {
        let g = GlobalLimits::default();
        let p = policy(100);
        let t0 = Instant::now();
        assert_eq!(g.try_take(&p, "k", t0), Take::Wait);
        let (asks, gives) = g.collect(t0);
        assert_eq!(asks.len(), 1);
        assert!(gives.is_empty());
        g.granted(&[grant(&p, 3, 0, 70_000)], t0, t0);
        for _ in 0..3 {
            assert_eq!(g.try_take(&p, "k", t0), Take::Admitted);
        }
        match g.try_take(&p, "k", t0) {
            Take::Refused { retry_after, .. } => assert_eq!(retry_after, Duration::from_millis(50_000)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn grants_lapse_at_the_window_end_measured_from_the_ask() {
        let g = GlobalLimits::default();
        let p = policy(100);
        let t0 = Instant::now();
        g.try_take(&p, "k", t0);
        g.collect(t0);
        // Agreed time 119 s: one second left in the window [60 s, 120 s).
        g.granted(&[grant(&p, 50, 50, 119_000)], t0, t0 + Duration::from_millis(300));
        assert_eq!(g.try_take(&p, "k", t0 + Duration::from_millis(900)), Take::Admitted);
        assert_eq!(g.try_take(&p, "k", t0 + Duration::from_millis(1000)), Take::Wait);
    }

    #[test]
    fn idle_tokens_go_back_and_are_not_spent_after() {
        let g = GlobalLimits::default();
        let p = policy(100);
        let t0 = Instant::now();
        g.try_take(&p, "k", t0);
        g.collect(t0);
        g.granted(&[grant(&p, 10, 90, 61_000)], t0, t0);
        assert_eq!(g.try_take(&p, "k", t0), Take::Admitted);
        let later = t0 + Duration::from_secs(1);
        let (_, gives) = g.collect(later);
        assert_eq!(gives.len(), 1);
        assert_eq!(gives[0].n, 9);
        assert_eq!(g.held(&p.name, "k"), 0);
    }

    #[test]
    fn refills_at_half_before_running_out() {
        let g = GlobalLimits::default();
        let p = policy(1000);
        let t0 = Instant::now();
        g.try_take(&p, "k", t0);
        g.collect(t0);
        g.granted(&[grant(&p, 10, 990, 61_000)], t0, t0);
        for _ in 0..5 {
            assert_eq!(g.try_take(&p, "k", t0), Take::Admitted);
        }
        assert!(g.collect(t0).0.is_empty(), "5 of 10 left: not yet");
        assert_eq!(g.try_take(&p, "k", t0), Take::Admitted);
        let (asks, _) = g.collect(t0);
        assert_eq!(asks.len(), 1, "below half: asks while 4 tokens remain");
    }
}
