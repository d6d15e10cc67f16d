//! The replicated state: the policy the data plane enforces plus what only the control plane
//! needs (admin tokens, the node registry, the request dedup table).
//!
//! Every mutation goes through a method here that updates memory and emits the matching record
//! write, so the in-memory view and the `state` column family can never drift apart.

use imbl::{OrdMap, OrdSet};
use raftgate_proxy::policy::{ApiKey, Consumer, Name, Policy, RateLimitPolicy, Role, Route};
use raftgate_storage::{decode, encode, RecordWrites};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::command::{RequestId, Response};
use crate::{Incarnation, NodeId};

/// How long a request id is remembered. A forwarded write that is retried after a timeout comes
/// back within seconds; fifteen minutes covers any client retry loop with a wide margin.
pub const DEDUP_WINDOW_MS: u64 = 15 * 60 * 1000;
/// At most this many request ids are remembered, oldest forgotten first, so a burst of writes
/// cannot grow memory without bound (≈ 100k × 300 B = 30 MB).
pub const DEDUP_LEN_MAX: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminToken {
    pub name: Name,
    /// SHA-256 of the token; the token itself is never stored.
    pub digest: [u8; 32],
    pub roles: Vec<String>,
    pub created_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    /// Drawn when the node's data dir was created; `None` until the node registers.
    pub incarnation: Option<Incarnation>,
    /// Removed from the cluster; the id is never accepted again.
    pub retired: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DedupEntry {
    ts_ms: u64,
    response: Response,
}

/// The whole replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayState {
    pub policy: Policy,
    pub admin_tokens: OrdMap<Name, AdminToken>,
    pub nodes: OrdMap<NodeId, NodeRecord>,
    dedup: OrdMap<RequestId, DedupEntry>,
    /// The same entries ordered by time, for eviction.
    dedup_by_time: OrdSet<(u64, RequestId)>,
}

/// Record key prefixes, one per kind; the byte after the prefix letter is '/'.
mod prefix {
    pub const CONSUMER: &str = "c/";
    pub const KEY: &str = "k/";
    pub const ROLE: &str = "r/";
    pub const ROUTE: &str = "t/";
    pub const LIMIT: &str = "l/";
    pub const ADMIN_TOKEN: &str = "a/";
    pub const NODE: &str = "n/";
    pub const DEDUP: &str = "q/";
    pub const CLOCK: &str = "z/clock";
}

fn rec<T: Serialize>(value: &T) -> Vec<u8> {
    encode(value).expect("in-memory state always encodes")
}

/// Collects the record writes of one batch of entries.
pub struct Writes<'a>(pub &'a mut RecordWrites);

impl Writes<'_> {
    fn put<T: Serialize>(&mut self, key: String, value: &T) {
        self.0.push((key.into_bytes(), Some(rec(value))));
    }
    fn delete(&mut self, key: String) {
        self.0.push((key.into_bytes(), None));
    }
}

impl GatewayState {
    pub fn now_ms(&self) -> u64 {
        self.policy.time_ms
    }

    /// Advances the agreed clock to a command's stamp; it never goes backwards, even if a new
    /// leader's wall clock is behind the old one's.
    pub fn advance_clock(&mut self, index: u64, ts_ms: u64, w: &mut Writes) {
        self.policy.version = index;
        if ts_ms > self.policy.time_ms {
            self.policy.time_ms = ts_ms;
            w.put(prefix::CLOCK.to_string(), &self.policy.time_ms);
        }
    }

    pub fn put_consumer(&mut self, c: Consumer, w: &mut Writes) -> bool {
        w.put(format!("{}{}", prefix::CONSUMER, c.name), &c);
        self.policy.consumers.insert(c.name.clone(), c).is_none()
    }

    pub fn delete_consumer(&mut self, name: &Name, w: &mut Writes) -> Option<Consumer> {
        w.delete(format!("{}{}", prefix::CONSUMER, name));
        self.policy.consumers.remove(name)
    }

    pub fn put_key(&mut self, k: ApiKey, w: &mut Writes) {
        w.put(format!("{}{}", prefix::KEY, k.id), &k);
        self.policy.keys.insert(k.id.clone(), k);
    }

    pub fn put_role(&mut self, r: Role, w: &mut Writes) -> bool {
        w.put(format!("{}{}", prefix::ROLE, r.name), &r);
        self.policy.roles.insert(r.name.clone(), r).is_none()
    }

    pub fn delete_role(&mut self, name: &Name, w: &mut Writes) -> Option<Role> {
        w.delete(format!("{}{}", prefix::ROLE, name));
        self.policy.roles.remove(name)
    }

    pub fn put_route(&mut self, r: Route, w: &mut Writes) -> bool {
        w.put(format!("{}{}", prefix::ROUTE, r.name), &r);
        self.policy.routes.insert(r.name.clone(), r).is_none()
    }

    pub fn delete_route(&mut self, name: &Name, w: &mut Writes) -> Option<Route> {
        w.delete(format!("{}{}", prefix::ROUTE, name));
        self.policy.routes.remove(name)
    }

    pub fn put_rate_limit(&mut self, l: RateLimitPolicy, w: &mut Writes) -> bool {
        w.put(format!("{}{}", prefix::LIMIT, l.name), &l);
        self.policy.rate_limits.insert(l.name.clone(), l).is_none()
    }

    pub fn delete_rate_limit(&mut self, name: &Name, w: &mut Writes) -> Option<RateLimitPolicy> {
        w.delete(format!("{}{}", prefix::LIMIT, name));
        self.policy.rate_limits.remove(name)
    }

    pub fn put_admin_token(&mut self, t: AdminToken, w: &mut Writes) {
        w.put(format!("{}{}", prefix::ADMIN_TOKEN, t.name), &t);
        self.admin_tokens.insert(t.name.clone(), t);
    }

    pub fn put_node(&mut self, n: NodeRecord, w: &mut Writes) {
        // Big-endian hex keeps records in id order.
        w.put(format!("{}{:016x}", prefix::NODE, n.id), &n);
        self.nodes.insert(n.id, n);
    }

    /// A stored response if this request id was already applied.
    pub fn dedup_lookup(&self, id: &RequestId) -> Option<Response> {
        self.dedup.get(id).map(|e| e.response.clone())
    }

    /// Remembers a response and forgets ids that are too old or too many.
    pub fn dedup_remember(&mut self, id: RequestId, ts_ms: u64, response: Response, w: &mut Writes) {
        let entry = DedupEntry { ts_ms, response };
        w.put(format!("{}{}", prefix::DEDUP, hex::encode(id)), &entry);
        if let Some(old) = self.dedup.insert(id, entry) {
            self.dedup_by_time.remove(&(old.ts_ms, id));
        }
        self.dedup_by_time.insert((ts_ms, id));
        let horizon = self.now_ms().saturating_sub(DEDUP_WINDOW_MS);
        while let Some(&(t, old_id)) = self.dedup_by_time.get_min() {
            if t >= horizon && self.dedup.len() <= DEDUP_LEN_MAX {
                break;
            }
            self.dedup_by_time.remove(&(t, old_id));
            self.dedup.remove(&old_id);
            w.delete(format!("{}{}", prefix::DEDUP, hex::encode(old_id)));
        }
    }

    /// Rebuilds the state from persisted records.
    pub fn restore(records: &mut dyn Iterator<Item = (Box<[u8]>, Box<[u8]>)>) -> Result<Self, String> {
        let mut st = GatewayState::default();
        for (key, value) in records {
            let key = std::str::from_utf8(&key).map_err(|e| format!("record key is not utf-8: {e}"))?;
            let bad = |e: raftgate_storage::CodecError| format!("record {key}: {e}");
            if key == prefix::CLOCK {
                st.policy.time_ms = decode(&value).map_err(bad)?;
            } else if key.starts_with(prefix::CONSUMER) {
                let c: Consumer = decode(&value).map_err(bad)?;
                st.policy.consumers.insert(c.name.clone(), c);
            } else if key.starts_with(prefix::KEY) {
                let k: ApiKey = decode(&value).map_err(bad)?;
                st.policy.keys.insert(k.id.clone(), k);
            } else if key.starts_with(prefix::ROLE) {
                let r: Role = decode(&value).map_err(bad)?;
                st.policy.roles.insert(r.name.clone(), r);
            } else if key.starts_with(prefix::ROUTE) {
                let r: Route = decode(&value).map_err(bad)?;
                st.policy.routes.insert(r.name.clone(), r);
            } else if key.starts_with(prefix::LIMIT) {
                let l: RateLimitPolicy = decode(&value).map_err(bad)?;
                st.policy.rate_limits.insert(l.name.clone(), l);
            } else if key.starts_with(prefix::ADMIN_TOKEN) {
                let t: AdminToken = decode(&value).map_err(bad)?;
                st.admin_tokens.insert(t.name.clone(), t);
            } else if key.starts_with(prefix::NODE) {
                let n: NodeRecord = decode(&value).map_err(bad)?;
                st.nodes.insert(n.id, n);
            } else if let Some(id_hex) = key.strip_prefix(prefix::DEDUP) {
                let entry: DedupEntry = decode(&value).map_err(bad)?;
                let mut id = RequestId::default();
                hex::decode_to_slice(id_hex, &mut id).map_err(|e| format!("record {key}: {e}"))?;
                st.dedup_by_time.insert((entry.ts_ms, id));
                st.dedup.insert(id, entry);
            } else {
                return Err(format!("unknown record kind {key:?}: written by a newer raftgate?"));
            }
        }
        Ok(st)
    }

    /// A digest of everything replicated; equal on every node that applied the same log.
    pub fn state_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.policy.time_ms.to_be_bytes());
        self.hash_entities(&mut h);
        for (id, e) in self.dedup.iter() {
            h.update(id);
            h.update(rec(e));
        }
        hex::encode(h.finalize())
    }

    /// A digest of the entities only (consumers, keys, roles, routes, limits, admin tokens,
    /// nodes), without the clock and the dedup table: it changes only when policy changes.
    pub fn policy_hash(&self) -> String {
        let mut h = Sha256::new();
        self.hash_entities(&mut h);
        hex::encode(h.finalize())
    }

    fn hash_entities(&self, h: &mut Sha256) {
        let p = &self.policy;
        for c in p.consumers.values() {
            h.update(rec(c));
        }
        for k in p.keys.values() {
            h.update(rec(k));
        }
        for r in p.roles.values() {
            h.update(rec(r));
        }
        for r in p.routes.values() {
            h.update(rec(r));
        }
        for l in p.rate_limits.values() {
            h.update(rec(l));
        }
        for t in self.admin_tokens.values() {
            h.update(rec(t));
        }
        for n in self.nodes.values() {
            h.update(rec(n));
        }
    }
}
