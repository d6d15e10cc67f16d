//! The replicated state: the policy the data plane enforces plus what only the control plane
//! needs (admin tokens, the node registry, the request dedup table).
//!
//! Every mutation goes through a method here that updates memory and emits the matching record
//! write, so the in-memory view and the `state` column family can never drift apart.

use std::net::IpAddr;
use std::sync::Arc;

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

/// One (window, policy, subject) of a global rate limit; ordered by window first, so that
/// ended windows are found from the front.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuotaKey {
    pub window_start_ms: u64,
    pub policy: Name,
    pub subject: String,
}

/// The tokens granted for one [`QuotaKey`]: `granted` is the sum of `holders` and never
/// exceeds `limit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaLedger {
    pub window_ms: u64,
    pub limit: u64,
    pub granted: u64,
    /// Tokens each node holds (granted minus given back), by node id.
    pub holders: Vec<(NodeId, u64)>,
    /// Alert thresholds (permille) already fired in this window.
    pub fired_permille: Vec<u32>,
}

impl QuotaLedger {
    pub fn new(window_ms: u64) -> Self {
        Self { window_ms, limit: 0, granted: 0, holders: Vec::new(), fired_permille: Vec::new() }
    }

    pub fn held_by(&self, node: NodeId) -> u64 {
        self.holders.iter().find(|(n, _)| *n == node).map_or(0, |(_, t)| *t)
    }

    pub fn set_held(&mut self, node: NodeId, tokens: u64) {
        match self.holders.iter_mut().find(|(n, _)| *n == node) {
            Some(h) => h.1 = tokens,
            None => self.holders.push((node, tokens)),
        }
    }
}

/// A webhook for threshold alerts.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRule {
    pub name: Name,
    /// Where alerts are POSTed (http or https).
    pub url: String,
    /// The HMAC-SHA256 key of the `X-Raftgate-Signature` header; never shown by reads.
    pub secret: String,
    /// Global rate-limit policies watched; empty watches every global one.
    pub rate_limits: Vec<Name>,
    /// Fractions of the limit that fire, in permille (800 = 80 %), ascending.
    pub thresholds_permille: Vec<u32>,
    /// Fire when an IP passes the auth guard's threshold.
    pub failed_auth: bool,
    /// Fire this long before a key expires.
    pub key_expiry_s: Option<u64>,
}

impl std::fmt::Debug for AlertRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertRule")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("rate_limits", &self.rate_limits)
            .field("thresholds_permille", &self.thresholds_permille)
            .field("failed_auth", &self.failed_auth)
            .field("key_expiry_s", &self.key_expiry_s)
            .finish_non_exhaustive()
    }
}

/// An alert that fired and is not delivered yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAlert {
    /// Deterministic (rule, event and its window or key): receivers get it as
    /// `X-Raftgate-Alert-Id` and can drop a repeat.
    pub id: String,
    pub rule: Name,
    pub fired_at_ms: u64,
    pub event: AlertEvent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlertEvent {
    /// The tokens handed out for one subject of a global policy crossed a threshold.
    GlobalLimit {
        policy: Name,
        subject: String,
        window_start_ms: u64,
        window_ms: u64,
        limit: u64,
        threshold_permille: u32,
        granted: u64,
    },
    /// Failed authentications from one IP passed the auth guard's threshold.
    FailedAuth { ip: IpAddr, failures: u64, window_start_ms: u64, window_ms: u64, blocked_until_ms: Option<u64> },
    /// A known key was presented and refused (wrong secret, revoked, expired, rotated out) as
    /// often as the auth guard's threshold in one window.
    FailedAuthKey { key_id: String, consumer: Name, failures: u64, window_start_ms: u64, window_ms: u64 },
    /// A key expires soon.
    KeyExpiry { key_id: String, consumer: Name, expires_at_ms: u64 },
}

/// Who failed to authenticate: a client IP, or a known key presented with a wrong secret (or
/// after it was revoked, expired or rotated out).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Offender {
    Ip(IpAddr),
    Key(String),
}

impl std::fmt::Display for Offender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Offender::Ip(ip) => write!(f, "ip-{ip}"),
            Offender::Key(id) => write!(f, "key-{id}"),
        }
    }
}

/// Failed authentications of one offender in one window, summed over nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthFailureCount {
    pub window_start_ms: u64,
    pub window_ms: u64,
    pub offender: Offender,
    pub count: u64,
    pub fired: bool,
}

/// Pending alerts kept at most; past it new ones are not recorded (a webhook down for long
/// must not grow the state without bound).
pub const PENDING_ALERTS_MAX: usize = 10_000;

/// Persisted form of a ledger: the key travels in the value, so subjects need no escaping.
#[derive(Serialize, Deserialize)]
struct QuotaRecord {
    key: QuotaKey,
    ledger: QuotaLedger,
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
    /// Global rate-limit ledgers of windows that have not ended.
    quotas: OrdMap<QuotaKey, QuotaLedger>,
    pub alert_rules: OrdMap<Name, AlertRule>,
    pub pending_alerts: OrdMap<String, PendingAlert>,
    /// Ids of alerts that fired and must not fire again, with when they may be forgotten.
    fired_alerts: OrdMap<String, u64>,
    pub auth_failures: OrdMap<(u64, Offender), AuthFailureCount>,
    /// The same keys by window end, for expiry.
    quota_ends: OrdSet<(u64, QuotaKey)>,
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
    pub const QUOTA: &str = "g/";
    pub const ALERT_RULE: &str = "w/";
    pub const PENDING_ALERT: &str = "p/";
    pub const FIRED_ALERT: &str = "x/";
    pub const AUTH_FAILURES: &str = "f/";
    pub const BLOCKED_IP: &str = "b/";
    pub const AUTH_GUARD: &str = "z/auth-guard";
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
        self.insert_key(k);
    }

    /// The key's record with its consumer's name shared with the consumer table, so a million
    /// keys of one consumer hold one copy of the name.
    fn insert_key(&mut self, mut k: ApiKey) {
        if let Some((name, _)) = self.policy.consumers.get_key_value(&k.consumer) {
            k.consumer = name.clone();
        }
        self.policy.keys.insert(k.id, Arc::new(k));
    }

    /// A copy of a key's record, to change and put back.
    pub fn key(&self, id: &str) -> Option<ApiKey> {
        self.policy.keys.get(id).map(|k| ApiKey::clone(k))
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

    pub fn quota(&self, key: &QuotaKey) -> Option<&QuotaLedger> {
        self.quotas.get(key)
    }

    /// Ledgers of live windows (for the debug endpoint and tests).
    pub fn quotas(&self) -> impl Iterator<Item = (&QuotaKey, &QuotaLedger)> {
        self.quotas.iter()
    }

    fn quota_record_key(key: &QuotaKey) -> String {
        // Window first (big-endian hex) so records sort like the map; the subject is hashed
        // into the key to keep it short and free of separators.
        let digest = Sha256::digest(key.subject.as_bytes());
        format!("{}{:016x}/{}/{}", prefix::QUOTA, key.window_start_ms, key.policy, hex::encode(&digest[..12]))
    }

    pub fn put_quota(&mut self, key: QuotaKey, ledger: QuotaLedger, w: &mut Writes) {
        let rec_key = Self::quota_record_key(&key);
        w.put(rec_key, &QuotaRecord { key: key.clone(), ledger: ledger.clone() });
        self.quota_ends.insert((key.window_start_ms + ledger.window_ms, key.clone()));
        self.quotas.insert(key, ledger);
    }

    /// Drops the ledgers of windows that ended by `now_ms`: their tokens lapsed on every node.
    pub fn expire_quotas(&mut self, now_ms: u64, w: &mut Writes) {
        while let Some((end, key)) = self.quota_ends.get_min().cloned() {
            if end > now_ms {
                break;
            }
            self.quota_ends.remove(&(end, key.clone()));
            w.delete(Self::quota_record_key(&key));
            self.quotas.remove(&key);
        }
    }

    pub fn put_alert_rule(&mut self, r: AlertRule, w: &mut Writes) -> bool {
        w.put(format!("{}{}", prefix::ALERT_RULE, r.name), &r);
        self.alert_rules.insert(r.name.clone(), r).is_none()
    }

    pub fn delete_alert_rule(&mut self, name: &Name, w: &mut Writes) -> Option<AlertRule> {
        w.delete(format!("{}{}", prefix::ALERT_RULE, name));
        self.alert_rules.remove(name)
    }

    /// Whether an alert with this id already fired (and is remembered).
    pub fn alert_fired(&self, id: &str) -> bool {
        self.fired_alerts.contains_key(id) || self.pending_alerts.contains_key(id)
    }

    /// Remembers that an alert fired, until `forget_at_ms` (after which it cannot fire again
    /// anyway: its window ended or its key expired).
    pub fn remember_fired(&mut self, id: &str, forget_at_ms: u64, w: &mut Writes) {
        w.put(format!("{}{}", prefix::FIRED_ALERT, id), &(id.to_string(), forget_at_ms));
        self.fired_alerts.insert(id.to_string(), forget_at_ms);
    }

    pub fn set_auth_guard(&mut self, g: Option<raftgate_proxy::policy::AuthGuard>, w: &mut Writes) {
        match &g {
            Some(g) => w.put(prefix::AUTH_GUARD.to_string(), g),
            None => w.delete(prefix::AUTH_GUARD.to_string()),
        }
        self.policy.auth_guard = g;
    }

    pub fn put_auth_failures(&mut self, c: AuthFailureCount, w: &mut Writes) {
        w.put(format!("{}{:016x}/{}", prefix::AUTH_FAILURES, c.window_start_ms, c.offender), &c);
        self.auth_failures.insert((c.window_start_ms, c.offender.clone()), c);
    }

    pub fn block_ip(&mut self, ip: IpAddr, until_ms: u64, w: &mut Writes) {
        w.put(format!("{}{}", prefix::BLOCKED_IP, ip), &(ip, until_ms));
        self.policy.blocked_ips.insert(ip, until_ms);
    }

    pub fn unblock_ip(&mut self, ip: IpAddr, w: &mut Writes) {
        if self.policy.blocked_ips.remove(&ip).is_some() {
            w.delete(format!("{}{}", prefix::BLOCKED_IP, ip));
        }
    }

    /// Forgets what time made irrelevant: failure counts of ended windows, blocks that ran
    /// out, fired-alert ids past their horizon.
    pub fn expire_guard_state(&mut self, now_ms: u64, w: &mut Writes) {
        let ended: Vec<AuthFailureCount> =
            self.auth_failures.values().filter(|c| c.window_start_ms + c.window_ms <= now_ms).cloned().collect();
        for c in ended {
            w.delete(format!("{}{:016x}/{}", prefix::AUTH_FAILURES, c.window_start_ms, c.offender));
            self.auth_failures.remove(&(c.window_start_ms, c.offender));
        }
        let lapsed: Vec<IpAddr> =
            self.policy.blocked_ips.iter().filter(|(_, until)| **until <= now_ms).map(|(ip, _)| *ip).collect();
        for ip in lapsed {
            self.unblock_ip(ip, w);
        }
        let old: Vec<String> =
            self.fired_alerts.iter().filter(|(_, at)| **at <= now_ms).map(|(id, _)| id.clone()).collect();
        for id in old {
            w.delete(format!("{}{}", prefix::FIRED_ALERT, id));
            self.fired_alerts.remove(&id);
        }
    }

    /// Records a fired alert unless it is already pending or too many are.
    pub fn add_pending_alert(&mut self, a: PendingAlert, w: &mut Writes) {
        if self.pending_alerts.len() >= PENDING_ALERTS_MAX || self.pending_alerts.contains_key(&a.id) {
            return;
        }
        w.put(format!("{}{}", prefix::PENDING_ALERT, a.id), &a);
        self.pending_alerts.insert(a.id.clone(), a);
    }

    pub fn remove_pending_alert(&mut self, id: &str, w: &mut Writes) {
        if self.pending_alerts.remove(id).is_some() {
            w.delete(format!("{}{}", prefix::PENDING_ALERT, id));
        }
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
                st.insert_key(k);
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
            } else if key == prefix::AUTH_GUARD {
                st.policy.auth_guard = Some(decode(&value).map_err(bad)?);
            } else if key.starts_with(prefix::FIRED_ALERT) {
                let (id, at): (String, u64) = decode(&value).map_err(bad)?;
                st.fired_alerts.insert(id, at);
            } else if key.starts_with(prefix::AUTH_FAILURES) {
                let c: AuthFailureCount = decode(&value).map_err(bad)?;
                st.auth_failures.insert((c.window_start_ms, c.offender.clone()), c);
            } else if key.starts_with(prefix::BLOCKED_IP) {
                let (ip, until): (IpAddr, u64) = decode(&value).map_err(bad)?;
                st.policy.blocked_ips.insert(ip, until);
            } else if key.starts_with(prefix::ALERT_RULE) {
                let r: AlertRule = decode(&value).map_err(bad)?;
                st.alert_rules.insert(r.name.clone(), r);
            } else if key.starts_with(prefix::PENDING_ALERT) {
                let a: PendingAlert = decode(&value).map_err(bad)?;
                st.pending_alerts.insert(a.id.clone(), a);
            } else if key.starts_with(prefix::QUOTA) {
                let r: QuotaRecord = decode(&value).map_err(bad)?;
                st.quota_ends.insert((r.key.window_start_ms + r.ledger.window_ms, r.key.clone()));
                st.quotas.insert(r.key, r.ledger);
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
        for a in self.pending_alerts.values() {
            h.update(rec(a));
        }
        for f in self.fired_alerts.iter() {
            h.update(rec(&f));
        }
        for c in self.auth_failures.values() {
            h.update(rec(c));
        }
        for (k, l) in self.quotas.iter() {
            h.update(rec(k));
            h.update(rec(l));
        }
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
        for r in self.alert_rules.values() {
            h.update(rec(r));
        }
        h.update(rec(&p.auth_guard));
        for b in p.blocked_ips.iter() {
            h.update(rec(&b));
        }
    }
}
