//! The node's audit trail: the writer that drains the data plane's queue into the hash-chained
//! store, the admin-action recorder, and cluster-wide queries (`GET /v1/audit` asks every
//! member over the node-to-node channel and merges newest first).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::atomic::Ordering;

use raftgate_proxy::audit::{AuditEvent, AuditQueue, AuditReceiver, AuditStats};
use raftgate_raft::cluster::Cluster;
use raftgate_raft::network::client::RpcFailure;
use raftgate_raft::network::server::{open, open_from, reply};
use raftgate_storage::{AuditLog, ChainHead};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::admin::{AdminState, ApiError};

/// Events written per batch: one RocksDB write (and at most one fsync) per batch. A full batch
/// is followed by the next at once, without waiting for the tick (see [`writer`]).
const WRITE_BATCH_LEN_MAX: usize = 4096;
/// Most events one query returns.
const QUERY_LIMIT_MAX: usize = 1000;
const QUERY_LIMIT_DEFAULT: usize = 100;
/// How long a query waits for each peer's part; a slow or dead peer is left out and named.
const PEER_QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Path of the audit query on the Raft listener: events in today's shape.
const RAFT_AUDIT_PATH: &str = "/raft/audit/v2";
/// The same query answered in format 1's shape (no `raw_path`), for nodes not yet upgraded; a
/// node asks it of a peer that does not know [`RAFT_AUDIT_PATH`] (one not yet upgraded).
const RAFT_AUDIT_PATH_V1: &str = "/raft/audit";

/// Where a node sends the head of its chain for its peers to witness, and asks them what they
/// witnessed of it (bad-inputs J4: a chain cut back with a forged head is found against them).
const RAFT_WITNESS_PATH: &str = "/raft/audit/witness";
const RAFT_WITNESSED_PATH: &str = "/raft/audit/witnessed";
/// How often a node sends its head to peers that have not witnessed it yet. Records newer than
/// the last witnessed head can be cut without trace; this bounds that window.
const WITNESS_INTERVAL: Duration = Duration::from_secs(5);

/// Format version of stored audit events. 2 added `raw_path`, `bytes_in` and `bytes_out`;
/// records written as version 1 read back with none. Every other persisted value is still `raftgate_storage::FORMAT_VERSION`.
const EVENT_FORMAT: u8 = 2;

/// An audit event as format 1 stored it and as nodes before format 2 exchange it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AuditEventV1 {
    ts_ms: u64,
    node_id: u64,
    kind: String,
    decision: String,
    reason: String,
    key_id: Option<String>,
    consumer: Option<String>,
    route: Option<String>,
    method: String,
    path: String,
    status: u16,
    latency_us: u64,
    client_ip: String,
    policy_version: u64,
}

impl From<AuditEventV1> for AuditEvent {
    fn from(e: AuditEventV1) -> Self {
        AuditEvent {
            ts_ms: e.ts_ms,
            node_id: e.node_id,
            kind: e.kind.into(),
            decision: e.decision.into(),
            reason: e.reason.into(),
            key_id: e.key_id,
            consumer: e.consumer.map(Into::into),
            route: e.route.map(Into::into),
            method: e.method.into(),
            path: e.path,
            raw_path: None,
            status: e.status,
            latency_us: e.latency_us,
            client_ip: e.client_ip,
            policy_version: e.policy_version,
            bytes_in: None,
            bytes_out: None,
        }
    }
}

impl From<AuditEvent> for AuditEventV1 {
    fn from(e: AuditEvent) -> Self {
        AuditEventV1 {
            ts_ms: e.ts_ms,
            node_id: e.node_id,
            kind: e.kind.into_owned(),
            decision: e.decision.into_owned(),
            reason: e.reason.into_owned(),
            key_id: e.key_id,
            consumer: e.consumer.map(|c| c.to_string()),
            route: e.route.map(|r| r.to_string()),
            method: e.method.into_owned(),
            path: e.path,
            status: e.status,
            latency_us: e.latency_us,
            client_ip: e.client_ip,
            policy_version: e.policy_version,
        }
    }
}

/// The stored bytes of an event (format [`EVENT_FORMAT`]).
/// (Events are encoded as they are queued instead: [`encode_into`].)
#[cfg(test)]
fn encode_event(e: &AuditEvent) -> Result<Vec<u8>, raftgate_storage::CodecError> {
    raftgate_storage::encode_versioned(EVENT_FORMAT, e, 256)
}

/// The audit queue's encoder: appends an event's stored bytes (format [`EVENT_FORMAT`]) to
/// `out`, on the thread that records it.
///
/// Written by hand: the bytes `encode_versioned(EVENT_FORMAT, e)` gives (bincode's standard
/// config: the fields in order, integers as varints, strings and options as bincode writes
/// them), checked against it by a property test. Through serde it cost about 940
/// instructions an event, on the proxy thread of every request (docs/benchmarks.md, session
/// 27). The struct is taken apart field by field, so a field added to [`AuditEvent`] does not
/// compile here until it is written (and [`EVENT_FORMAT`] bumped).
pub fn encode_into(e: &AuditEvent, out: &mut Vec<u8>) -> bool {
    use raftgate_storage::{put_bytes, put_varint};
    let AuditEvent {
        ts_ms,
        node_id,
        kind,
        decision,
        reason,
        key_id,
        consumer,
        route,
        method,
        path,
        raw_path,
        status,
        latency_us,
        client_ip,
        policy_version,
        bytes_in,
        bytes_out,
    } = e;
    fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
        match s {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                put_bytes(out, s.as_bytes());
            }
        }
    }
    fn put_opt_int(out: &mut Vec<u8>, n: Option<u64>) {
        match n {
            None => out.push(0),
            Some(n) => {
                out.push(1);
                put_varint(out, n);
            }
        }
    }
    // Every integer takes at most 9 bytes, every string's length as much, each option a byte
    // more: one reservation, so the buffer grows at most once an event.
    let strings =
        [kind.len(), decision.len(), reason.len(), method.len(), path.len(), client_ip.len()].iter().sum::<usize>()
            + key_id.as_ref().map_or(0, String::len)
            + consumer.as_ref().map_or(0, |c| c.len())
            + route.as_ref().map_or(0, |r| r.len())
            + raw_path.as_ref().map_or(0, String::len);
    out.reserve(1 + 17 * 10 + strings);
    out.push(EVENT_FORMAT);
    put_varint(out, *ts_ms);
    put_varint(out, *node_id);
    put_bytes(out, kind.as_bytes());
    put_bytes(out, decision.as_bytes());
    put_bytes(out, reason.as_bytes());
    put_opt_str(out, key_id.as_deref());
    put_opt_str(out, consumer.as_deref());
    put_opt_str(out, route.as_deref());
    put_bytes(out, method.as_bytes());
    put_bytes(out, path.as_bytes());
    put_opt_str(out, raw_path.as_deref());
    put_varint(out, u64::from(*status));
    put_varint(out, *latency_us);
    put_bytes(out, client_ip.as_bytes());
    put_varint(out, *policy_version);
    put_opt_int(out, *bytes_in);
    put_opt_int(out, *bytes_out);
    true
}

/// Reads a stored event of any format this build knows.
fn decode_event(bytes: &[u8]) -> Result<AuditEvent, raftgate_storage::CodecError> {
    match raftgate_storage::split_version(bytes)? {
        (1, body) => raftgate_storage::decode_body::<AuditEventV1>(body).map(Into::into),
        (EVENT_FORMAT, body) => raftgate_storage::decode_body(body),
        (found, _) => Err(raftgate_storage::CodecError::UnknownVersion { found, newest: EVENT_FORMAT }),
    }
}

/// Encoded events taken from the queue and waiting for the store.
type Held = raftgate_proxy::audit::Records;

/// How often the writer drains the queue. The writer polls on this tick instead of waiting on
/// the channel, so a request that records an event never wakes another thread (that wake-up
/// was the largest single cost on the proxy path). Events are visible in queries within it.
const WRITE_INTERVAL: Duration = Duration::from_millis(5);

/// Longest pause between retries of a batch the store refused.
const RETRY_INTERVAL_MAX: Duration = Duration::from_secs(1);

/// Starts the writer on a thread of its own (`audit-writer`); it ends once the queue has
/// closed and everything in it is stored (or, with the store refusing, counted as dropped).
///
/// A plain thread, not a task: every tick on the runtime woke a worker for the timer, handed
/// the batch to a blocking thread for the RocksDB write, and woke the worker again when it
/// was done, three thread wake-ups a batch where a sleeping thread needs one (`futex` and the
/// scheduler were 15 % of the writer's CPU, docs/benchmarks.md, session 17).
pub fn spawn_writer(
    log: Arc<AuditLog>,
    rx: AuditReceiver,
    stats: Arc<AuditStats>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("audit-writer".into()).spawn(move || {
        let mut held = Held::default();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| writer(&log, rx, &stats, &mut held)));
        if let Err(panic) = run {
            // A bug. The queue's receiver, dropped in the unwind, counted what was queued and
            // counts everything recorded from now on; the batch in hand is counted here.
            let lost = held.len();
            stats.dropped.fetch_add(lost as u64, Ordering::Relaxed);
            tracing::error!(lost, "the audit writer panicked: audit events are being dropped (and counted)");
            std::panic::resume_unwind(panic);
        }
    })
}

/// Drains the queue into the store until the queue closes and is empty. A batch the store
/// refuses is kept and retried (backing off to once a second) before anything more is taken
/// from the queue, so a full or failing audit disk costs the queue's bound in memory and then
/// counted drops, never a silent loss.
///
/// `held` (the events taken from the queue, encoded, waiting for the store; reused batch after
/// batch) is the caller's, so that what it holds can be counted if the writer panics.
fn writer(log: &AuditLog, mut rx: AuditReceiver, stats: &AuditStats, held: &mut Held) {
    let mut retry_in = WRITE_INTERVAL;
    // Every sender is gone and the queue is empty.
    let mut finished = false;
    // A backlog is drained batch after batch; the tick paces the writer only once it has caught
    // up. Waiting for the tick after every full batch capped the writer at a batch per tick,
    // and a flood of refused requests (every one audited) outran it: measured, 73,852 events
    // dropped in one `proxy-bench.sh 3 5 64` run, most during the 80,000 req/s flood and 429
    // cases.
    let mut backlog = false;
    // Ticks are kept to a fixed cadence, as a runtime interval keeps them: a write that took
    // 3 ms is followed by the next drain 2 ms later, not 5 (sleeping a whole interval after
    // every write stretched each cycle by the write's length under load). A tick missed
    // altogether is not made up in a burst.
    let mut next_tick = Instant::now();
    loop {
        if !backlog {
            next_tick += WRITE_INTERVAL;
            let now = Instant::now();
            match next_tick.checked_duration_since(now) {
                Some(wait) => std::thread::sleep(wait),
                None => next_tick = now,
            }
        }
        backlog = false;
        if held.is_empty() {
            let taken = rx.take(WRITE_BATCH_LEN_MAX, |e| held.push(e));
            finished = taken.is_none();
            backlog = taken == Some(WRITE_BATCH_LEN_MAX);
        }
        if !held.is_empty() {
            match log.append(held.iter()) {
                // Stored: the buffers are kept for the next batch.
                Ok(_) => {
                    retry_in = WRITE_INTERVAL;
                    held.clear();
                }
                Err(e) => {
                    let errors = stats.write_errors.fetch_add(1, Ordering::Relaxed) + 1;
                    if errors.is_power_of_two() || retry_in >= RETRY_INTERVAL_MAX {
                        tracing::error!(error = %e, errors, held = held.len(), "audit write failed; retrying");
                    }
                    if rx.is_closed() {
                        // Shutting down with the store refusing: these are lost, and counted (the
                        // receiver's drop counts those still queued).
                        stats.dropped.fetch_add(held.len() as u64, Ordering::Relaxed);
                        return;
                    }
                    std::thread::sleep(retry_in);
                    retry_in = (retry_in * 2).min(RETRY_INTERVAL_MAX);
                    continue;
                }
            }
        }
        if finished {
            return;
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub consumer: Option<String>,
    pub key: Option<String>,
    pub decision: Option<String>,
    /// Unix milliseconds or RFC 3339 (`2026-11-28T08:00:00Z`).
    pub since: Option<String>,
    pub limit: Option<usize>,
    /// Only this node's events (used between nodes; also useful to operators).
    #[serde(default)]
    pub local: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Filter {
    consumer: Option<String>,
    key: Option<String>,
    decision: Option<String>,
    since_ms: u64,
    limit: usize,
}

fn parse_since(s: &str) -> Option<u64> {
    if let Ok(ms) = s.parse::<u64>() {
        return Some(ms);
    }
    // YYYY-MM-DDTHH:MM:SS[.mmm]Z
    let b = s.as_bytes();
    if b.len() < 20 || !s.ends_with('Z') || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d, hh, mm, ss) = (n(0..4)?, n(5..7)?, n(8..10)?, n(11..13)?, n(14..16)?, n(17..19)?);
    let ms = if b.get(19) == Some(&b'.') { s.get(20..s.len() - 1)?.get(..3)?.parse::<i64>().ok()? } else { 0 };
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + ms).ok()
}

impl AuditQuery {
    fn filter(&self) -> Result<Filter, ApiError> {
        let since_ms = match &self.since {
            None => 0,
            Some(s) => parse_since(s).ok_or_else(|| {
                ApiError::bad_request("since: give Unix milliseconds or RFC 3339 like 2026-11-28T08:00:00Z")
            })?,
        };
        if let Some(d) = &self.decision {
            if d != "allow" && d != "deny" {
                return Err(ApiError::bad_request("decision: \"allow\" or \"deny\""));
            }
        }
        let limit = self.limit.unwrap_or(QUERY_LIMIT_DEFAULT);
        if limit == 0 || limit > QUERY_LIMIT_MAX {
            return Err(ApiError::bad_request(format!("limit: 1 to {QUERY_LIMIT_MAX}")));
        }
        let key = self.key.as_deref().map(|k| k.strip_prefix("rgk_").unwrap_or(k).to_string());
        Ok(Filter { consumer: self.consumer.clone(), key, decision: self.decision.clone(), since_ms, limit })
    }
}

/// This node's matching events, newest first.
fn local_events(log: &AuditLog, f: &Filter) -> Vec<AuditEvent> {
    let mut out = Vec::new();
    let result = log.scan_newest(|_, body| {
        let Ok(e) = decode_event(body) else { return true };
        if e.ts_ms < f.since_ms {
            return false;
        }
        let keep = f.consumer.as_ref().is_none_or(|c| e.consumer.as_deref() == Some(c.as_str()))
            && f.key.as_ref().is_none_or(|k| e.key_id.as_ref() == Some(k))
            && f.decision.as_ref().is_none_or(|d| e.decision == d.as_str());
        if keep {
            out.push(e);
        }
        out.len() < f.limit
    });
    if let Err(e) = result {
        tracing::error!(error = %e, "audit scan failed");
    }
    out
}

fn view(e: &AuditEvent) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    v["ts"] = json!(crate::admin::rfc3339(e.ts_ms));
    v
}

/// `GET /v1/audit`: the cluster's events, newest first.
pub async fn query(
    State(state): State<AdminState>,
    _c: crate::admin::AdminCaller,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let f = q.filter()?;
    let log = state.audit.clone();
    let f2 = f.clone();
    let mut events = tokio::task::spawn_blocking(move || local_events(&log, &f2)).await.unwrap_or_default();
    let mut unreachable = Vec::new();
    if !q.local {
        let members = state.cluster.members_addrs();
        let calls = members.into_iter().filter(|(id, _)| *id != state.node_id).map(|(id, addr)| {
            let rpc = state.cluster.rpc().clone();
            let f = f.clone();
            async move {
                let r = rpc.call::<_, Vec<AuditEvent>>(id, &addr, RAFT_AUDIT_PATH, &f, PEER_QUERY_TIMEOUT).await;
                // A peer not yet upgraded answers in format 1's shape, on the older path.
                let r = match r {
                    Err(RpcFailure::Rejected(why)) if why.starts_with("404") => rpc
                        .call::<_, Vec<AuditEventV1>>(id, &addr, RAFT_AUDIT_PATH_V1, &f, PEER_QUERY_TIMEOUT)
                        .await
                        .map(|evs| evs.into_iter().map(AuditEvent::from).collect()),
                    r => r,
                };
                (id, r)
            }
        });
        for (id, r) in futures::future::join_all(calls).await {
            match r {
                Ok(mut evs) => events.append(&mut evs),
                Err(e) => {
                    tracing::warn!(node = id, error = %e, "audit query: node did not answer");
                    unreachable.push(id);
                }
            }
        }
    }
    events.sort_by(|a, b| b.ts_ms.cmp(&a.ts_ms).then(b.node_id.cmp(&a.node_id)));
    events.truncate(f.limit);
    Ok(Json(json!({ "events": events.iter().map(view).collect::<Vec<_>>(), "unreachable_nodes": unreachable })))
}

/// `GET /v1/audit/verify`: checks this node's chain, then checks it against the latest head
/// of it that its peers witnessed (so a chain cut back with a forged head fails too).
pub async fn verify(State(state): State<AdminState>, _c: crate::admin::AdminCaller) -> Result<Json<Value>, ApiError> {
    let log = state.audit.clone();
    let r =
        tokio::task::spawn_blocking(move || Ok::<_, raftgate_storage::AuditError>((log.verify()?, log.base()?.seq)))
            .await
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (n, pruned_through) = match r {
        Ok((Ok(n), base)) => (n, base),
        Ok((Err(brk), _)) => {
            return Ok(Json(json!({ "node_id": state.node_id, "ok": false, "error": brk.to_string() })))
        }
        Err(e) => return Err(ApiError::bad_request(e.to_string())),
    };
    let me = state.node_id;
    let calls =
        state.cluster.members_addrs().into_iter().filter(|(id, _)| *id != me).map(|(id, addr)| {
            let rpc = state.cluster.rpc().clone();
            async move {
                (id, rpc.call::<_, Option<ChainHead>>(id, &addr, RAFT_WITNESSED_PATH, me, PEER_QUERY_TIMEOUT).await)
            }
        });
    let (mut witnessed, mut by, mut unreachable) = (None::<ChainHead>, Vec::new(), Vec::new());
    for (id, r) in futures::future::join_all(calls).await {
        match r {
            Ok(Some(h)) => {
                by.push(id);
                if witnessed.is_none_or(|w| h.seq > w.seq) {
                    witnessed = Some(h);
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(node = id, error = %e, "audit verify: node did not say what it witnessed");
                unreachable.push(id);
            }
        }
    }
    let seq = witnessed.map_or(0, |w| w.seq);
    let checked = match witnessed {
        Some(w) => {
            let log = state.audit.clone();
            tokio::task::spawn_blocking(move || log.check_witnessed(w))
                .await
                .map_err(|e| ApiError::bad_request(e.to_string()))?
                .map_err(|e| ApiError::bad_request(e.to_string()))?
        }
        None => Ok(()),
    };
    let witness = json!({ "seq": seq, "by": by, "unreachable_nodes": unreachable });
    Ok(Json(match checked {
        Ok(()) => {
            json!({ "node_id": me, "ok": true, "records": n, "pruned_through": pruned_through, "witnessed": witness })
        }
        Err(brk) => json!({ "node_id": me, "ok": false, "error": brk.to_string(), "witnessed": witness }),
    }))
}

/// The last record older than `cutoff_ms`, from the records' own timestamps (found by
/// bisection: records are appended in time order, to within the few milliseconds a batch
/// spans, or under a backlog the seconds the backlog spans, as the writer takes each proxy
/// thread's events in turn; so a retention cut can be off by that much). A record that cannot
/// be read is taken for a new one; [`AuditLog::prune_through`] then stops before it in any
/// case, since it does not verify.
pub fn last_older_than(log: &AuditLog, cutoff_ms: u64) -> Result<Option<u64>, raftgate_storage::AuditError> {
    let (mut lo, mut hi) = (log.base()?.seq + 1, log.last_seq());
    let ts = |seq: u64| -> Result<u64, raftgate_storage::AuditError> {
        match log.body(seq) {
            Ok(body) => Ok(body.and_then(|b| decode_event(&b).ok()).map_or(u64::MAX, |e| e.ts_ms)),
            // The entry holding it cannot be read (a damaged group): taken for new, as above.
            Err(raftgate_storage::AuditError::Codec(_)) => Ok(u64::MAX),
            Err(e) => Err(e),
        }
    };
    if lo > hi || ts(lo)? >= cutoff_ms {
        return Ok(None);
    }
    // Invariant: record `lo` is older than the cutoff; the answer is in lo..=hi.
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if ts(mid)? < cutoff_ms {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(Some(lo))
}

/// Removes this node's audit events older than `retention` (never the newest), checking every
/// quarter of the retention period (but not more often than once a second, nor less often than
/// once an hour). Each removal is
/// itself an audit event (kind `audit`, reason `pruned`, `path` the records removed as
/// `first..=last`), so the chain says what was removed and when.
pub async fn retention(
    cluster: Arc<Cluster>,
    log: Arc<AuditLog>,
    queue: AuditQueue,
    retention: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let every = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let started = std::time::Instant::now();
        let cutoff = crate::admin::now_ms().saturating_sub(retention.as_millis() as u64);
        let l = log.clone();
        let pruned = tokio::task::spawn_blocking(move || match last_older_than(&l, cutoff)? {
            Some(seq) => l.prune_through(seq),
            None => Ok(None),
        })
        .await;
        let (first, last) = match pruned {
            Ok(Ok(Some(range))) => range,
            Ok(Ok(None)) | Err(_) => continue,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "audit retention: could not remove old events; retrying later");
                continue;
            }
        };
        tracing::info!(first, last, "audit retention: removed events older than the retention period");
        queue.record(AuditEvent {
            ts_ms: crate::admin::now_ms(),
            node_id: cluster.id,
            kind: "audit".into(),
            decision: "allow".into(),
            reason: "pruned".into(),
            key_id: None,
            consumer: None,
            route: None,
            method: "".into(),
            path: format!("{first}..={last}"),
            raw_path: None,
            status: 200,
            latency_us: started.elapsed().as_micros() as u64,
            client_ip: String::new(),
            policy_version: cluster.view.load().policy.version,
            bytes_in: None,
            bytes_out: None,
        });
    }
}

/// Sends this node's chain head to every peer that has not witnessed it yet, every
/// [`WITNESS_INTERVAL`], until shutdown. A peer that cannot be reached (or, before this
/// release, does not know the path) is tried again next time.
pub async fn send_witness(cluster: Arc<Cluster>, log: Arc<AuditLog>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut sent: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
    let mut tick = tokio::time::interval(WITNESS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        // Only a head on disk: one a power loss could take back would read as a truncation.
        let l = log.clone();
        let head = match tokio::task::spawn_blocking(move || l.durable_head()).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "audit head could not be synced; not sent to peers");
                continue;
            }
            Err(_) => continue,
        };
        if head.seq == 0 {
            continue;
        }
        let due: Vec<_> = cluster
            .members_addrs()
            .into_iter()
            .filter(|(id, _)| *id != cluster.id && sent.get(id).is_none_or(|s| *s < head.seq))
            .collect();
        let calls = due.into_iter().map(|(id, addr)| {
            let rpc = cluster.rpc().clone();
            async move { (id, rpc.call::<_, ()>(id, &addr, RAFT_WITNESS_PATH, head, PEER_QUERY_TIMEOUT).await) }
        });
        for (id, r) in futures::future::join_all(calls).await {
            match r {
                Ok(()) => {
                    sent.insert(id, head.seq);
                }
                Err(e) => tracing::debug!(node = id, error = %e, "audit head not witnessed; retrying"),
            }
        }
    }
}

/// What the audit paths on the Raft listener answer from.
#[derive(Clone)]
struct Peer {
    cluster: Arc<Cluster>,
    log: Arc<AuditLog>,
}

/// The audit paths on the Raft listener, answered from this node's store only: the event query
/// (in today's shape, and in format 1's for peers not yet upgraded) and the witnessed heads.
pub fn raft_routes(cluster: Arc<Cluster>, log: Arc<AuditLog>) -> axum::Router {
    use axum::routing::post;
    axum::Router::new()
        .route(RAFT_AUDIT_PATH, post(|p: State<Peer>, body: Bytes| events(p, body, false)))
        .route(RAFT_AUDIT_PATH_V1, post(|p: State<Peer>, body: Bytes| events(p, body, true)))
        .route(RAFT_WITNESS_PATH, post(witness))
        .route(RAFT_WITNESSED_PATH, post(witnessed))
        .with_state(Peer { cluster, log })
}

async fn events(State(p): State<Peer>, body: Bytes, v1: bool) -> Response {
    let f = match open::<Filter>(&p.cluster, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let events = tokio::task::spawn_blocking(move || local_events(&p.log, &f)).await.unwrap_or_default();
    if v1 {
        reply(&events.into_iter().map(AuditEventV1::from).collect::<Vec<_>>())
    } else {
        reply(&events)
    }
}

async fn witness(State(p): State<Peer>, body: Bytes) -> Response {
    // Bound to the sender the envelope names: a node can only speak for its own chain.
    let (from, head) = match open_from::<ChainHead>(&p.cluster, &body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    match blocking(move || p.log.witness(from, head)).await {
        Ok(Some(before)) if before.seq > head.seq => {
            tracing::error!(
                node = from,
                witnessed = before.seq,
                now = head.seq,
                "a node's audit chain went backwards (truncated?); its verify will fail"
            );
            reply(&())
        }
        Ok(_) => reply(&()),
        Err(r) => r,
    }
}

async fn witnessed(State(p): State<Peer>, body: Bytes) -> Response {
    let node = match open::<u64>(&p.cluster, &body) {
        Ok(n) => n,
        Err(r) => return r,
    };
    match blocking(move || p.log.witnessed(node)).await {
        Ok(h) => reply(&h),
        Err(r) => r,
    }
}

/// Runs a store call off the runtime; a failure is a 500 naming it.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, raftgate_storage::AuditError> + Send + 'static,
) -> Result<T, Response> {
    let error = |why: String| (axum::http::StatusCode::INTERNAL_SERVER_ERROR, why).into_response();
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(error(e.to_string())),
        Err(e) => Err(error(e.to_string())),
    }
}

/// Set on a response by a handler that acted for an API key (self-service), so that the admin
/// audit event names the key.
#[derive(Clone)]
pub struct AuditKeyId(pub String);

/// Records every admin request (but health, metrics and audit reads) as an `admin` event.
pub async fn record_admin(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let client_ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let resp = next.run(req).await;
    let quiet = path == "/v1/health" || path == "/metrics" || (method == "GET" && path.starts_with("/v1/audit"));
    if !quiet {
        let status = resp.status().as_u16();
        let ok = status < 400;
        state.audit_queue.record(AuditEvent {
            ts_ms: crate::admin::now_ms(),
            node_id: state.node_id,
            kind: "admin".into(),
            decision: if ok { "allow" } else { "deny" }.into(),
            reason: if ok { "ok".into() } else { format!("status_{status}").into() },
            key_id: resp.extensions().get::<AuditKeyId>().map(|k| k.0.clone()),
            consumer: None,
            route: None,
            method: method.into(),
            path: path.chars().take(512).collect(),
            raw_path: None,
            status,
            latency_us: started.elapsed().as_micros() as u64,
            client_ip,
            policy_version: state.cluster.view.load().policy.version,
            bytes_in: None,
            bytes_out: None,
        });
    }
    resp
}

/// The CLI's offline check: `raftgate audit verify --data-dir DIR`.
pub fn verify_offline(data_dir: &std::path::Path) -> anyhow::Result<()> {
    let log = AuditLog::open_read_only(&data_dir.join("audit"))?;
    match log.verify()? {
        Ok(n) => {
            match log.base()?.seq {
                0 => println!("audit chain intact: {n} records"),
                base => println!("audit chain intact: {n} records (records 1 to {base} removed by retention)"),
            }
            Ok(())
        }
        Err(brk) => anyhow::bail!("audit chain broken: {brk}"),
    }
}

/// The queue's figures for `/metrics`.
pub fn queue_figures(q: &AuditQueue) -> (i64, i64, i64) {
    let stats = q.stats();
    (q.depth() as i64, stats.dropped.load(Ordering::Relaxed) as i64, stats.write_errors.load(Ordering::Relaxed) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn held_events_are_each_stored_as_encoded_alone() {
        let events: Vec<AuditEvent> = (0..5u64)
            .map(|i| AuditEvent {
                ts_ms: 10_000 + i,
                path: "/p".repeat(i as usize * 60),
                ..event((i % 2 == 0).then_some("/x/../p"))
            })
            .collect();
        let mut held = Held::default();
        let mut buf = Vec::new();
        for round in 0..2 {
            for e in &events {
                assert!(encode_into(e, &mut buf));
                held.push(&buf);
                buf.clear();
            }
            assert_eq!(held.len(), events.len(), "round {round}");
            let got: Vec<&[u8]> = held.iter().collect();
            let want: Vec<Vec<u8>> = events.iter().map(|e| encode_event(e).unwrap()).collect();
            assert_eq!(got, want, "round {round}");
            let back: Vec<AuditEvent> = held.iter().map(|b| decode_event(b).unwrap()).collect();
            assert_eq!(back, events, "round {round}");
            // Reused for the next batch: nothing of this one is left.
            held.clear();
            assert!(held.is_empty() && held.iter().next().is_none());
        }
    }

    #[test]
    fn retention_finds_the_last_event_older_than_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        assert_eq!(last_older_than(&log, u64::MAX).unwrap(), None, "an empty log");
        // Events 1..=1000 at 10 ms apart, starting at t = 10,000.
        for chunk in (1..=1000u64).collect::<Vec<_>>().chunks(100) {
            let bodies: Vec<Vec<u8>> = chunk
                .iter()
                .map(|i| encode_event(&AuditEvent { ts_ms: 10_000 + 10 * i, ..event(None) }).unwrap())
                .collect();
            log.append(&bodies).unwrap();
        }
        assert_eq!(last_older_than(&log, 10_010).unwrap(), None, "nothing older than the first");
        assert_eq!(last_older_than(&log, 10_011).unwrap(), Some(1));
        assert_eq!(last_older_than(&log, 15_000).unwrap(), Some(499));
        assert_eq!(last_older_than(&log, 15_001).unwrap(), Some(500));
        assert_eq!(last_older_than(&log, u64::MAX).unwrap(), Some(1000));
        // Pruned through it: the rest still verifies, and the search starts after the base.
        log.prune_through(500).unwrap();
        assert_eq!(log.verify().unwrap(), Ok(500));
        assert_eq!(last_older_than(&log, 15_001).unwrap(), None);
        assert_eq!(last_older_than(&log, 17_500).unwrap(), Some(749));
        // An edited record is kept, and everything after it: the evidence stays.
        log.tamper_body(600, b"not an event".to_vec()).unwrap();
        let upto = last_older_than(&log, 19_000).unwrap().unwrap();
        assert_eq!(log.prune_through(upto).unwrap(), Some((501, 599)));
        // First after the new base, the edited record does not link to it.
        assert_eq!(log.verify().unwrap(), Err(raftgate_storage::ChainBreak::Link { seq: 600, prev: 599 }));
    }

    fn event(raw_path: Option<&str>) -> AuditEvent {
        AuditEvent {
            ts_ms: 1_764_400_000_000,
            node_id: 2,
            kind: "access".into(),
            decision: "allow".into(),
            reason: "ok".into(),
            key_id: Some("k1".into()),
            consumer: Some("acme".into()),
            route: Some("api".into()),
            method: "GET".into(),
            path: "/admin/keys".into(),
            raw_path: raw_path.map(Into::into),
            status: 200,
            latency_us: 812,
            client_ip: "10.0.0.7".into(),
            policy_version: 41,
            bytes_in: None,
            bytes_out: None,
        }
    }

    /// Integers from every step of bincode's varint and from anywhere, with both sides of
    /// each step.
    fn any_int() -> impl Strategy<Value = u64> {
        prop_oneof![
            prop::sample::select(vec![0u64, 250, 251, 0xffff, 0x1_0000, 0xffff_ffff, 0x1_0000_0000, u64::MAX]),
            any::<u64>(),
            0u64..300,
        ]
    }

    /// Strings of any characters, around the one-byte length's end (250 bytes).
    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![".{0,8}", "[a-z/]{245,255}", "\\PC{60,70}"]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The queue's hand-written encoder writes what bincode writes, byte for byte, and
        /// the event reads back as it was.
        #[test]
        fn the_queue_s_encoding_is_the_stored_format(
            ints in prop::array::uniform4(any_int()),
            status in any::<u16>(),
            words in prop::array::uniform6(any_text()),
            opt_words in prop::array::uniform4(prop::option::of(any_text())),
            bytes in prop::array::uniform2(prop::option::of(any_int())),
            tail in any::<Vec<u8>>(),
        ) {
            let [kind, decision, reason, method, path, client_ip] = words;
            let [key_id, consumer, route, raw_path] = opt_words;
            let e = AuditEvent {
                ts_ms: ints[0],
                node_id: ints[1],
                kind: kind.into(),
                decision: decision.into(),
                reason: reason.into(),
                key_id,
                consumer: consumer.map(Into::into),
                route: route.map(Into::into),
                method: method.into(),
                path,
                raw_path,
                status,
                latency_us: ints[2],
                client_ip,
                policy_version: ints[3],
                bytes_in: bytes[0],
                bytes_out: bytes[1],
            };
            // Appended behind what the buffer already holds, as in the queue's shards.
            let mut out = tail.clone();
            prop_assert!(encode_into(&e, &mut out));
            prop_assert_eq!(&out[..tail.len()], &tail[..]);
            let mine = &out[tail.len()..];
            prop_assert_eq!(mine, &encode_event(&e).unwrap()[..]);
            prop_assert_eq!(decode_event(mine).unwrap(), e);
        }
    }

    #[test]
    fn events_of_either_format_read_back() {
        let now = event(Some("/admin/../admin/keys"));
        let bytes = encode_event(&now).unwrap();
        assert_eq!(bytes[0], EVENT_FORMAT);
        assert_eq!(decode_event(&bytes).unwrap(), now);
        // What a node before format 2 stored: the same event, without the raw path.
        let old = raftgate_storage::encode(&AuditEventV1::from(now.clone())).unwrap();
        assert_eq!(old[0], 1);
        assert_eq!(decode_event(&old).unwrap(), event(None));
        let mut future = bytes;
        future[0] = EVENT_FORMAT + 1;
        assert!(decode_event(&future).is_err(), "an unknown format fails loudly");
    }
}
