//! Threshold alerts: webhook rules, and the record that a fired alert was delivered.
//!
//! An alert fires inside `apply` (see `quota.rs`): when the tokens granted for a (policy,
//! subject, window) cross a rule's threshold, a pending alert with a deterministic id is added
//! to the state, once per threshold per window, on every node alike. The leader delivers
//! pending alerts (`node/src/alerts.rs`) and proposes [`AlertDone`]; a new leader delivers
//! whatever is still pending, so an alert survives leader changes.

use raftgate_proxy::policy::Name;
use serde::{Deserialize, Serialize};

use crate::command::{OpError, Outcome};
use crate::state::{AlertRule, GatewayState, Writes};

/// Most rules a cluster keeps; each is checked on every quota grant.
pub const ALERT_RULES_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutAlert {
    pub rule: AlertRule,
}

impl PutAlert {
    pub fn apply(&self, st: &mut GatewayState, w: &mut Writes) -> Result<Outcome, OpError> {
        if st.alert_rules.len() >= ALERT_RULES_MAX && !st.alert_rules.contains_key(&self.rule.name) {
            return Err(OpError::conflict(format!("at most {ALERT_RULES_MAX} alert rules")));
        }
        let created = st.put_alert_rule(self.rule.clone(), w);
        Ok(Outcome::Put { created })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteAlert {
    pub name: Name,
}

impl DeleteAlert {
    /// Pending alerts of the rule go with it: there is nowhere left to deliver them.
    pub fn apply(&self, st: &mut GatewayState, w: &mut Writes) -> Result<Outcome, OpError> {
        if st.delete_alert_rule(&self.name, w).is_none() {
            return Err(OpError::not_found(format!("alert {} does not exist", self.name)));
        }
        let orphans: Vec<String> =
            st.pending_alerts.values().filter(|p| p.rule == self.name).map(|p| p.id.clone()).collect();
        for id in orphans {
            st.remove_pending_alert(&id, w);
        }
        Ok(Outcome::Done)
    }
}

/// A pending alert was delivered (`delivered`), or given up on after its retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertDone {
    pub id: String,
    pub delivered: bool,
    pub attempts: u32,
}

impl AlertDone {
    /// Idempotent: a second report for the same alert (two leaders raced) changes nothing.
    pub fn apply(&self, st: &mut GatewayState, w: &mut Writes) -> Result<Outcome, OpError> {
        st.remove_pending_alert(&self.id, w);
        Ok(Outcome::Done)
    }
}
