//! Quota leases for `"mode": "global"` rate limits: one entry carries a node's asks for tokens
//! and the tokens it gives back, for many subjects at once.
//!
//! The ledger keeps, per (policy, subject, window), the tokens granted to each node; a grant
//! never lets their sum pass the policy's limit. Windows are fixed, aligned to the Unix epoch,
//! and chosen by the entry's agreed time, so every node agrees which window a grant is for; a
//! window's ledger is dropped once the agreed time passes its end. Grants are log entries, so
//! a new leader inherits them and never hands the same tokens out twice.

use raftgate_proxy::global::{Ask, GiveBack, Grant};
use raftgate_proxy::policy::LimitMode;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::command::{OpError, Outcome};
use crate::state::{AlertEvent, GatewayState, PendingAlert, QuotaKey, QuotaLedger, Writes};
use crate::NodeId;

/// Asks plus give-backs per entry, at most; a node with more hot subjects sends several.
pub const QUOTA_ITEMS_MAX: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcquireQuota {
    pub node: NodeId,
    pub asks: Vec<Ask>,
    pub gives: Vec<GiveBack>,
}

/// Longest subject accepted (key ids, IPs, consumer and route names are all far shorter).
const SUBJECT_LEN_MAX: usize = 256;

impl AcquireQuota {
    pub fn apply(&self, st: &mut GatewayState, now_ms: u64, w: &mut Writes) -> Result<Outcome, OpError> {
        if self.asks.len() + self.gives.len() > QUOTA_ITEMS_MAX {
            return Err(OpError::invalid(format!("at most {QUOTA_ITEMS_MAX} quota items per entry")));
        }
        st.expire_quotas(now_ms, w);
        // Give-backs first: tokens returned in the same entry can go to another subject's ask.
        for g in &self.gives {
            let key =
                QuotaKey { window_start_ms: g.window_start_ms, policy: g.policy.clone(), subject: g.subject.clone() };
            if let Some(mut ledger) = st.quota(&key).cloned() {
                let held = ledger.held_by(self.node);
                let n = g.n.min(held);
                ledger.set_held(self.node, held - n);
                ledger.granted -= n;
                st.put_quota(key, ledger, w);
            }
        }
        let nodes = (st.nodes.values().filter(|n| !n.retired).count() as u64).max(1);
        let mut grants = Vec::with_capacity(self.asks.len());
        for a in &self.asks {
            let Some(p) = st.policy.rate_limits.get(&a.policy).filter(|p| p.mode == LimitMode::Global).cloned() else {
                continue; // deleted or made local meanwhile: the node stops asking
            };
            if a.subject.len() > SUBJECT_LEN_MAX {
                continue;
            }
            let window_ms = p.window_s.max(1).saturating_mul(1000);
            let window_start_ms = now_ms - now_ms % window_ms;
            let key = QuotaKey { window_start_ms, policy: a.policy.clone(), subject: a.subject.clone() };
            let mut ledger = st.quota(&key).cloned().unwrap_or_else(|| QuotaLedger::new(window_ms));
            // A limit lowered mid-window takes effect for what is not yet granted.
            ledger.limit = p.limit;
            let available = ledger.limit.saturating_sub(ledger.granted);
            // One grant is at most half of a fair share (limit / 2 × nodes), and at most half of
            // what is left once the pool is half gone: the last tokens go in small pieces to
            // whoever still has demand, and little sits on a node whose traffic moved away.
            let cost = p.cost.max(1);
            let share = ledger.limit.div_ceil(2 * nodes).max(cost);
            let tail = if available * 2 <= ledger.limit { available.div_ceil(2).max(cost) } else { available };
            let cap = share.min(tail);
            let granted = a.want.min(available).min(cap);
            if granted > 0 {
                let held = ledger.held_by(self.node);
                ledger.set_held(self.node, held + granted);
                ledger.granted += granted;
            }
            fire_alerts(st, &key, &mut ledger, now_ms, w);
            let available = ledger.limit.saturating_sub(ledger.granted);
            st.put_quota(key, ledger, w);
            grants.push(Grant {
                policy: a.policy.clone(),
                subject: a.subject.clone(),
                window_start_ms,
                window_ms,
                ts_ms: now_ms,
                limit: p.limit,
                granted,
                available,
            });
        }
        Ok(Outcome::Quota(grants))
    }
}

/// Fires the thresholds the tokens handed out for `key` crossed for the first time in this
/// window, once for every rule watching the policy that has them.
fn fire_alerts(st: &mut GatewayState, key: &QuotaKey, ledger: &mut QuotaLedger, now_ms: u64, w: &mut Writes) {
    if st.alert_rules.is_empty() || ledger.limit == 0 {
        return;
    }
    let crossed = |t: u32| u128::from(ledger.granted) * 1000 >= u128::from(t) * u128::from(ledger.limit);
    let rules = st.alert_rules.clone();
    let watching = rules.values().filter(|r| r.rate_limits.is_empty() || r.rate_limits.contains(&key.policy));
    let mut newly: Vec<u32> = Vec::new();
    for rule in watching {
        for &t in &rule.thresholds_permille {
            if !crossed(t) || ledger.fired_permille.contains(&t) {
                continue;
            }
            if !newly.contains(&t) {
                newly.push(t);
            }
            let subject_digest = hex::encode(&sha2::Sha256::digest(key.subject.as_bytes())[..6]);
            let id = format!("{}/{}/{}/{}/{}", rule.name, key.policy, key.window_start_ms, t, subject_digest);
            st.add_pending_alert(
                PendingAlert {
                    id,
                    rule: rule.name.clone(),
                    fired_at_ms: now_ms,
                    event: AlertEvent::GlobalLimit {
                        policy: key.policy.clone(),
                        subject: key.subject.clone(),
                        window_start_ms: key.window_start_ms,
                        window_ms: ledger.window_ms,
                        limit: ledger.limit,
                        threshold_permille: t,
                        granted: ledger.granted,
                    },
                },
                w,
            );
        }
    }
    ledger.fired_permille.extend(newly);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use raftgate_proxy::policy::{LimitSubject, Name, RateLimitPolicy};
    use raftgate_storage::RecordWrites;

    use super::*;

    fn state(limit: u64) -> GatewayState {
        let mut st = GatewayState::default();
        let mut w = RecordWrites::new();
        let p = RateLimitPolicy {
            name: Name::parse("g").unwrap(),
            limit,
            window_s: 60,
            per: LimitSubject::Key,
            mode: LimitMode::Global,
            cost: 1,
        };
        st.put_rate_limit(p, &mut Writes(&mut w));
        st
    }

    fn ask(node: NodeId, subject: &str, want: u64) -> AcquireQuota {
        AcquireQuota {
            node,
            asks: vec![Ask { policy: Name::parse("g").unwrap(), subject: subject.into(), want }],
            gives: vec![],
        }
    }

    fn granted(o: Outcome) -> Vec<Grant> {
        match o {
            Outcome::Quota(g) => g,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn grants_stop_at_the_limit_and_shrink_near_it() {
        // One registered node (none here counts as one): a grant is at most half the limit.
        let mut st = state(100);
        let mut w = RecordWrites::new();
        let g = granted(ask(1, "k", 80).apply(&mut st, 61_000, &mut Writes(&mut w)).unwrap());
        assert_eq!((g[0].granted, g[0].available, g[0].window_start_ms), (50, 50, 60_000));
        let g = granted(ask(2, "k", 80).apply(&mut st, 62_000, &mut Writes(&mut w)).unwrap());
        assert_eq!(g[0].granted, 25, "half of what is left once the pool is half gone");
        let g = granted(ask(3, "k", 80).apply(&mut st, 63_000, &mut Writes(&mut w)).unwrap());
        assert_eq!(g[0].granted, 13);
        let g = granted(ask(3, "k", 80).apply(&mut st, 63_500, &mut Writes(&mut w)).unwrap());
        assert_eq!((g[0].granted, g[0].available), (6, 6));
        // A new window starts with the whole limit again, and the old ledger is dropped.
        let g = granted(ask(3, "k", 30).apply(&mut st, 120_000, &mut Writes(&mut w)).unwrap());
        assert_eq!((g[0].granted, g[0].window_start_ms), (30, 120_000));
        assert_eq!(st.quotas().count(), 1);
    }

    #[test]
    fn given_back_tokens_can_be_granted_again_but_only_what_was_held() {
        let mut st = state(10);
        let mut w = RecordWrites::new();
        assert_eq!(granted(ask(1, "k", 10).apply(&mut st, 61_000, &mut Writes(&mut w)).unwrap())[0].granted, 5);
        let give = |node, n| AcquireQuota {
            node,
            asks: vec![],
            gives: vec![GiveBack {
                policy: Name::parse("g").unwrap(),
                subject: "k".into(),
                window_start_ms: 60_000,
                n,
            }],
        };
        // Node 2 holds nothing: its give-back changes nothing.
        give(2, 10).apply(&mut st, 61_500, &mut Writes(&mut w)).unwrap();
        assert_eq!(granted(ask(2, "k", 10).apply(&mut st, 61_600, &mut Writes(&mut w)).unwrap())[0].granted, 3);
        assert_eq!(granted(ask(2, "k", 10).apply(&mut st, 61_700, &mut Writes(&mut w)).unwrap())[0].granted, 1);
        assert_eq!(granted(ask(2, "k", 10).apply(&mut st, 61_800, &mut Writes(&mut w)).unwrap())[0].granted, 1);
        assert_eq!(granted(ask(2, "k", 10).apply(&mut st, 61_900, &mut Writes(&mut w)).unwrap())[0].granted, 0);
        give(1, 4).apply(&mut st, 62_000, &mut Writes(&mut w)).unwrap();
        assert_eq!(granted(ask(2, "k", 10).apply(&mut st, 62_100, &mut Writes(&mut w)).unwrap())[0].granted, 2);
    }

    proptest! {
        /// Whatever nodes ask for and give back, in any order, the tokens held per window never
        /// pass the limit, and the ledger's total is the sum of its holders.
        #[test]
        fn never_more_than_the_limit(
            limit in 1u64..500,
            ops in proptest::collection::vec((1u64..=5, 0u64..200, any::<bool>(), 0u64..3, 0u64..90_000), 1..200),
        ) {
            let mut st = state(limit);
            let mut w = RecordWrites::new();
            let mut now = 60_000;
            for (node, n, is_give, subject, dt) in ops {
                now += dt / 100;
                let subject = format!("s{subject}");
                let op = if is_give {
                    AcquireQuota { node, asks: vec![], gives: vec![GiveBack {
                        policy: Name::parse("g").unwrap(), subject, window_start_ms: now - now % 60_000, n }] }
                } else {
                    ask(node, &subject, n)
                };
                op.apply(&mut st, now, &mut Writes(&mut w)).unwrap();
                for (_, l) in st.quotas() {
                    prop_assert!(l.granted <= l.limit);
                    prop_assert_eq!(l.granted, l.holders.iter().map(|(_, t)| t).sum::<u64>());
                }
            }
        }
    }
}
