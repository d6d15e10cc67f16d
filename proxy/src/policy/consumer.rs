//! A consumer: who calls the API (a team, an app, a partner). Keys belong to consumers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Name;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumer {
    pub name: Name,
    /// Roles every key of this consumer holds, in addition to the key's own.
    pub roles: Vec<Name>,
    /// Free-form labels for operators (team, contact); never used in decisions.
    pub metadata: BTreeMap<String, String>,
    /// Leader-stamped creation time.
    pub created_at_ms: u64,
}
