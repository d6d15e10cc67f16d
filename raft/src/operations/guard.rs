//! The auth guard: failed authentications per client IP summed over every node, a block that
//! every node enforces, and key-expiry reminders. Alerts fire here, in `apply`, so each fires
//! once cluster-wide (see `alert.rs` for delivery).

use std::net::IpAddr;

use raftgate_proxy::policy::AuthGuard;
use serde::{Deserialize, Serialize};

use crate::command::{OpError, Outcome};
use crate::state::{AlertEvent, AuthFailureCount, GatewayState, Offender, PendingAlert, Writes};
use crate::NodeId;

/// IPs per report, at most (the data plane keeps no more between two reports).
pub const REPORT_IPS_MAX: usize = 4096;
/// Keys per reminder entry, at most.
pub const REMIND_KEYS_MAX: usize = 1000;

/// Sets (or with `None`, turns off) the auth guard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutAuthGuard {
    pub guard: Option<AuthGuard>,
}

impl PutAuthGuard {
    pub fn apply(&self, st: &mut GatewayState, w: &mut Writes) -> Result<Outcome, OpError> {
        st.set_auth_guard(self.guard, w);
        if self.guard.is_none_or(|g| g.block_s == 0) {
            let blocked: Vec<IpAddr> = st.policy.blocked_ips.keys().copied().collect();
            for ip in blocked {
                st.unblock_ip(ip, w);
            }
        }
        Ok(Outcome::Done)
    }
}

/// A node's failed authentications per IP and per known key since its last report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAuthFailures {
    pub node: NodeId,
    pub counts: Vec<(IpAddr, u64)>,
    pub keys: Vec<(String, u64)>,
}

impl ReportAuthFailures {
    pub fn apply(&self, st: &mut GatewayState, now_ms: u64, w: &mut Writes) -> Result<Outcome, OpError> {
        if self.counts.len() > REPORT_IPS_MAX || self.keys.len() > REPORT_IPS_MAX {
            return Err(OpError::invalid(format!("at most {REPORT_IPS_MAX} IPs and keys per report")));
        }
        st.expire_guard_state(now_ms, w);
        let Some(guard) = st.policy.auth_guard else {
            return Ok(Outcome::Done); // turned off meanwhile
        };
        let window_ms = guard.window_s.max(1).saturating_mul(1000);
        let window_start_ms = now_ms - now_ms % window_ms;
        let offenders = self
            .counts
            .iter()
            .map(|(ip, n)| (Offender::Ip(*ip), *n))
            .chain(self.keys.iter().map(|(k, n)| (Offender::Key(k.clone()), *n)));
        for (offender, n) in offenders {
            let mut c =
                st.auth_failures.get(&(window_start_ms, offender.clone())).cloned().unwrap_or(AuthFailureCount {
                    window_start_ms,
                    window_ms,
                    offender: offender.clone(),
                    count: 0,
                    fired: false,
                });
            c.count = c.count.saturating_add(n);
            let crossed = !c.fired && c.count >= guard.threshold;
            if crossed {
                c.fired = true;
            }
            let failures = c.count;
            st.put_auth_failures(c, w);
            if !crossed {
                continue;
            }
            let event = match &offender {
                Offender::Ip(ip) => {
                    // An IP is blocked everywhere; a key is not (its owner is not the guesser).
                    let blocked_until_ms = (guard.block_s > 0).then(|| now_ms + guard.block_s.saturating_mul(1000));
                    if let Some(until) = blocked_until_ms {
                        st.block_ip(*ip, until, w);
                    }
                    AlertEvent::FailedAuth { ip: *ip, failures, window_start_ms, window_ms, blocked_until_ms }
                }
                Offender::Key(key_id) => {
                    let Some(consumer) = st.policy.keys.get(key_id.as_str()).map(|k| k.consumer.clone()) else {
                        continue;
                    };
                    AlertEvent::FailedAuthKey { key_id: key_id.clone(), consumer, failures, window_start_ms, window_ms }
                }
            };
            let rules: Vec<_> = st.alert_rules.values().filter(|r| r.failed_auth).map(|r| r.name.clone()).collect();
            for rule in rules {
                let id = format!("{rule}/failed-auth/{window_start_ms}/{offender}");
                st.add_pending_alert(PendingAlert { id, rule, fired_at_ms: now_ms, event: event.clone() }, w);
            }
        }
        Ok(Outcome::Done)
    }
}

/// Keys the leader found expiring within some rule's reminder horizon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemindKeyExpiry {
    pub key_ids: Vec<String>,
}

impl RemindKeyExpiry {
    /// Re-checks every key at the agreed time: each (rule, key, expiry) fires once, only for
    /// a key that still exists, is not revoked and expires within the rule's horizon.
    pub fn apply(&self, st: &mut GatewayState, now_ms: u64, w: &mut Writes) -> Result<Outcome, OpError> {
        if self.key_ids.len() > REMIND_KEYS_MAX {
            return Err(OpError::invalid(format!("at most {REMIND_KEYS_MAX} keys per reminder")));
        }
        st.expire_guard_state(now_ms, w);
        let rules: Vec<_> =
            st.alert_rules.values().filter_map(|r| r.key_expiry_s.map(|s| (r.name.clone(), s))).collect();
        for key_id in &self.key_ids {
            let Some(k) = st.policy.keys.get(key_id.as_str()).cloned() else { continue };
            let Some(expires_at_ms) = k.expires_at_ms else { continue };
            if k.revoked_at_ms.is_some() || k.rotated_to.is_some() || expires_at_ms <= now_ms {
                continue;
            }
            for (rule, horizon_s) in &rules {
                if expires_at_ms - now_ms > horizon_s.saturating_mul(1000) {
                    continue;
                }
                let id = format!("{rule}/key-expiry/{key_id}/{expires_at_ms}");
                if st.alert_fired(&id) {
                    continue;
                }
                st.remember_fired(&id, expires_at_ms, w);
                st.add_pending_alert(
                    PendingAlert {
                        id,
                        rule: rule.clone(),
                        fired_at_ms: now_ms,
                        event: AlertEvent::KeyExpiry {
                            key_id: key_id.clone(),
                            consumer: k.consumer.clone(),
                            expires_at_ms,
                        },
                    },
                    w,
                );
            }
        }
        Ok(Outcome::Done)
    }
}
