//! One file per replicated operation. Each operation is a plain struct that already carries
//! everything random or secret-derived (a new key's id and digest), computed before it was
//! proposed; its `apply` reads time only from the entry, so it is deterministic by construction.

mod alert;
mod bootstrap_admin_token;
mod consumer;
mod create_key;
mod create_keys;
mod guard;
mod node;
mod quota;
mod rate_limit;
mod revoke_key;
mod role;
mod rotate_key;
mod route;

pub use alert::{AlertDone, DeleteAlert, PutAlert, ALERT_RULES_MAX};
pub use bootstrap_admin_token::BootstrapAdminToken;
pub use consumer::{DeleteConsumer, PutConsumer};
pub use create_key::CreateKey;
pub use create_keys::{CreateKeys, KEYS_PER_BATCH_MAX};
pub use guard::{PutAuthGuard, RemindKeyExpiry, ReportAuthFailures, REMIND_KEYS_MAX, REPORT_IPS_MAX};
pub use node::{RegisterNode, RetireNode};
pub use quota::{AcquireQuota, QUOTA_ITEMS_MAX};
pub use rate_limit::{DeleteRateLimit, PutRateLimit};
pub use revoke_key::RevokeKey;
pub use role::{DeleteRole, PutRole};
pub use rotate_key::{RotateKey, GRACE_S_MAX};
pub use route::{DeleteRoute, PutRoute};

use crate::command::{Op, OpError, Outcome};
use crate::state::{GatewayState, Writes};

/// Applies one operation at the agreed time `now_ms`.
pub fn apply(op: &Op, st: &mut GatewayState, now_ms: u64, w: &mut Writes) -> Result<Outcome, OpError> {
    match op {
        Op::PutConsumer(o) => o.apply(st, now_ms, w),
        Op::DeleteConsumer(o) => o.apply(st, now_ms, w),
        Op::PutRole(o) => o.apply(st, w),
        Op::DeleteRole(o) => o.apply(st, w),
        Op::PutRoute(o) => o.apply(st, w),
        Op::DeleteRoute(o) => o.apply(st, w),
        Op::PutRateLimit(o) => o.apply(st, w),
        Op::DeleteRateLimit(o) => o.apply(st, w),
        Op::CreateKey(o) => o.apply(st, now_ms, w),
        Op::CreateKeys(o) => o.apply(st, now_ms, w),
        Op::RevokeKey(o) => o.apply(st, now_ms, w),
        Op::RotateKey(o) => o.apply(st, now_ms, w),
        Op::BootstrapAdminToken(o) => o.apply(st, now_ms, w),
        Op::RegisterNode(o) => o.apply(st, w),
        Op::RetireNode(o) => o.apply(st, w),
        Op::AcquireQuota(o) => o.apply(st, now_ms, w),
        Op::PutAlert(o) => o.apply(st, w),
        Op::DeleteAlert(o) => o.apply(st, w),
        Op::AlertDone(o) => o.apply(st, w),
        Op::PutAuthGuard(o) => o.apply(st, w),
        Op::ReportAuthFailures(o) => o.apply(st, now_ms, w),
        Op::RemindKeyExpiry(o) => o.apply(st, now_ms, w),
    }
}
