//! Phase 4, authorize: the roles of the key and of its consumer grant permissions (methods and
//! path patterns, matched on the canonical path); anything not granted is 403.

use crate::deny::Deny;
use crate::phases::authenticate::Caller;
use crate::policy::Policy;
use http::StatusCode;

pub fn authorize(policy: &Policy, caller: &Caller<'_>, method: &str, path: &str) -> Result<(), Deny> {
    let granted = caller
        .key
        .roles
        .iter()
        .chain(caller.consumer.roles.iter())
        .filter_map(|name| policy.roles.get(name))
        .any(|role| role.allows(method, path));
    if granted {
        Ok(())
    } else {
        Err(Deny::new(StatusCode::FORBIDDEN, "forbidden"))
    }
}

/// The roles a caller holds, for the identity header.
pub fn role_names(caller: &Caller<'_>) -> String {
    let mut names: Vec<&str> =
        caller.key.roles.iter().chain(caller.consumer.roles.iter()).map(|n| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.join(",")
}
