//! Phase 4, authorize: the roles of the key and of its consumer grant permissions (methods and
//! path patterns, matched on the canonical path); anything not granted is 403.

use std::borrow::Cow;

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

/// The roles a caller holds, for the identity header: sorted, without repeats, comma-separated.
/// A single role (the common case: a consumer's one role, none on the key) is borrowed.
pub fn role_names<'p>(caller: &Caller<'p>) -> Cow<'p, str> {
    let (key, consumer) = (&caller.key.roles, &caller.consumer.roles);
    match (key.as_slice(), consumer.as_slice()) {
        ([], [only]) | ([only], []) => return Cow::Borrowed(only.as_str()),
        ([a], [b]) if a == b => return Cow::Borrowed(a.as_str()),
        _ => {}
    }
    let mut names: Vec<&str> = key.iter().chain(consumer.iter()).map(|n| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    Cow::Owned(names.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{ApiKey, Consumer, KeyId, Name};

    fn names(v: &[&str]) -> Vec<Name> {
        v.iter().map(|n| Name::try_from(n.to_string()).unwrap()).collect()
    }

    /// The borrowed shortcuts give what the general join gives, for every small combination.
    #[test]
    fn role_names_are_sorted_and_unique_whichever_way_they_are_built() {
        let pool = ["reader", "admin", "writer"];
        let mut lists: Vec<Vec<&str>> = vec![vec![]];
        for a in pool {
            lists.push(vec![a]);
            for b in pool {
                lists.push(vec![a, b]);
            }
        }
        for k in &lists {
            for c in &lists {
                let key = ApiKey {
                    id: KeyId::parse("abcdefghijkl").unwrap(),
                    digest: [0; 32],
                    consumer: Name::try_from("c".to_string()).unwrap(),
                    roles: names(k),
                    created_at_ms: 0,
                    expires_at_ms: None,
                    revoked_at_ms: None,
                    rotated_to: None,
                    grace_until_ms: None,
                };
                let consumer = Consumer {
                    name: key.consumer.clone(),
                    roles: names(c),
                    metadata: Default::default(),
                    created_at_ms: 0,
                };
                let caller = Caller { key: &key, consumer: &consumer, deprecated: false };
                let mut want: Vec<&str> = k.iter().chain(c.iter()).copied().collect();
                want.sort_unstable();
                want.dedup();
                assert_eq!(role_names(&caller), want.join(","), "key {k:?}, consumer {c:?}");
            }
        }
    }
}
