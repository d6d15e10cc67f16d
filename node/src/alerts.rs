//! Delivers threshold alerts to their webhooks. Runs on every node; only the leader delivers.
//!
//! Alerts fire inside the state machine (`raft/src/operations/quota.rs`), so each one exists
//! once per threshold per window on every node. The leader POSTs each pending alert as JSON,
//! signed `X-Raftgate-Signature: sha256=<hex HMAC-SHA256(secret, body)>`, with its id in
//! `X-Raftgate-Alert-Id`; it retries with backoff (0.5 s doubling, 6 attempts, each bounded by
//! 5 s), then proposes `AlertDone`, which removes it everywhere, and records the outcome in its
//! audit trail. A leader that loses leadership stops; the next one delivers what is still
//! pending. Delivery is at least once: if a leader dies between the webhook's 2xx and the
//! commit of `AlertDone`, the next leader sends it again with the same id.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use raftgate_proxy::audit::{AuditEvent, AuditQueue};
use raftgate_raft::cluster::Cluster;
use raftgate_raft::command::Op;
use raftgate_raft::network::wire::Caller;
use raftgate_raft::operations::AlertDone;
use raftgate_raft::operations::{RemindKeyExpiry, REMIND_KEYS_MAX};
use raftgate_raft::state::{AlertEvent, AlertRule, PendingAlert};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

const POLL: Duration = Duration::from_millis(100);
const ATTEMPTS: u32 = 6;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the leader looks for keys nearing expiry (when a rule asks for reminders).
const EXPIRY_SCAN: Duration = Duration::from_secs(1);
/// Deliveries in flight at once.
const IN_FLIGHT_MAX: usize = 32;

pub async fn run(cluster: Arc<Cluster>, audit: AuditQueue, mut shutdown: watch::Receiver<bool>) {
    let client = match reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "alert delivery disabled: no HTTP client");
            return;
        }
    };
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut last_scan = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if !is_leader(&cluster) {
            continue;
        }
        if last_scan.elapsed() >= EXPIRY_SCAN {
            last_scan = Instant::now();
            remind_expiring_keys(&cluster).await;
        }
        let view = cluster.view.load_full();
        for (id, alert) in view.pending_alerts.iter() {
            let Some(rule) = view.alert_rules.get(&alert.rule) else { continue };
            {
                let mut f = in_flight.lock().expect("in-flight lock");
                if f.len() >= IN_FLIGHT_MAX {
                    break;
                }
                if !f.insert(id.clone()) {
                    continue;
                }
            }
            let (cluster, client, audit, in_flight) =
                (cluster.clone(), client.clone(), audit.clone(), in_flight.clone());
            let (alert, rule, version) = (alert.clone(), rule.clone(), view.policy.version);
            tokio::spawn(async move {
                deliver(&cluster, &client, &audit, &alert, &rule, version).await;
                in_flight.lock().expect("in-flight lock").remove(&alert.id);
            });
        }
    }
}

/// Proposes reminders for keys expiring within the longest reminder horizon of any rule; the
/// state machine re-checks each against the agreed time and fires each (rule, key) once.
async fn remind_expiring_keys(cluster: &Cluster) {
    let view = cluster.view.load_full();
    let Some(horizon_s) = view.alert_rules.values().filter_map(|r| r.key_expiry_s).max() else { return };
    // The agreed time of the last entry: close enough for choosing candidates.
    let now = view.now_ms();
    let horizon = now.saturating_add(horizon_s.saturating_mul(1000));
    let due: Vec<String> = view
        .policy
        .keys
        .values()
        .filter(|k| k.revoked_at_ms.is_none() && k.rotated_to.is_none())
        .filter(|k| k.expires_at_ms.is_some_and(|e| e > now && e <= horizon))
        .filter(|k| {
            view.alert_rules.values().filter_map(|r| r.key_expiry_s.map(|s| (r, s))).any(|(r, _)| {
                let id = format!("{}/key-expiry/{}/{}", r.name, k.id, k.expires_at_ms.unwrap_or(0));
                !view.alert_fired(&id)
            })
        })
        .take(REMIND_KEYS_MAX)
        .map(|k| k.id.to_string())
        .collect();
    if due.is_empty() {
        return;
    }
    let op = Op::RemindKeyExpiry(RemindKeyExpiry { key_ids: due });
    if let Err(e) = cluster.write(Caller::Node, Cluster::new_request_id(), op).await {
        tracing::debug!(error = %e, "key-expiry reminders will be retried");
    }
}

fn is_leader(cluster: &Cluster) -> bool {
    cluster.leader().is_some_and(|(l, _)| l == cluster.id)
}

/// The JSON body of an alert, as sent by node `node_id`.
pub fn body(alert: &PendingAlert, node_id: u64) -> String {
    let mut v = describe(alert);
    v["sent_by_node"] = json!(node_id);
    v.to_string()
}

/// An alert as JSON: what it is about, and its id, rule and firing time.
pub fn describe(alert: &PendingAlert) -> serde_json::Value {
    let mut v = match &alert.event {
        AlertEvent::GlobalLimit { policy, subject, window_start_ms, window_ms, limit, threshold_permille, granted } => {
            json!({
                "kind": "global_limit_threshold",
                "rate_limit": policy,
                "subject": subject,
                "window_start_ms": window_start_ms,
                "window_end_ms": window_start_ms + window_ms,
                "limit": limit,
                "threshold": f64::from(*threshold_permille) / 1000.0,
                "granted": granted,
            })
        }
        AlertEvent::FailedAuth { ip, failures, window_start_ms, window_ms, blocked_until_ms } => json!({
            "kind": "failed_auth",
            "ip": ip.to_string(),
            "failures": failures,
            "window_start_ms": window_start_ms,
            "window_end_ms": window_start_ms + window_ms,
            "blocked_until_ms": blocked_until_ms,
        }),
        AlertEvent::FailedAuthKey { key_id, consumer, failures, window_start_ms, window_ms } => json!({
            "kind": "failed_auth_key",
            "key_id": key_id,
            "consumer": consumer,
            "failures": failures,
            "window_start_ms": window_start_ms,
            "window_end_ms": window_start_ms + window_ms,
        }),
        AlertEvent::KeyExpiry { key_id, consumer, expires_at_ms } => json!({
            "kind": "key_expiry",
            "key_id": key_id,
            "consumer": consumer,
            "expires_at_ms": expires_at_ms,
        }),
    };
    v["id"] = json!(alert.id);
    v["rule"] = json!(alert.rule);
    v["fired_at_ms"] = json!(alert.fired_at_ms);
    v
}

/// `sha256=<hex>` of HMAC-SHA256 over the body.
pub fn signature(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn deliver(
    cluster: &Cluster,
    client: &reqwest::Client,
    audit: &AuditQueue,
    alert: &PendingAlert,
    rule: &AlertRule,
    version: u64,
) {
    let started = Instant::now();
    let body = body(alert, cluster.id);
    let sig = signature(&rule.secret, &body);
    let mut backoff = FIRST_BACKOFF;
    let (mut attempts, mut status, mut delivered) = (0u32, 0u16, false);
    while attempts < ATTEMPTS {
        if !is_leader(cluster) {
            return; // the next leader delivers it
        }
        attempts += 1;
        let sent = client
            .post(&rule.url)
            .header("content-type", "application/json")
            .header("x-raftgate-alert-id", &alert.id)
            .header("x-raftgate-signature", &sig)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                status = r.status().as_u16();
                delivered = true;
                break;
            }
            Ok(r) => status = r.status().as_u16(),
            Err(e) => {
                status = 0;
                tracing::debug!(error = %e, id = %alert.id, "alert delivery attempt failed");
            }
        }
        if attempts < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    // The same request id on every leader: two reports of one alert are applied once.
    let digest = Sha256::digest(format!("alert-done/{}", alert.id).as_bytes());
    let mut request_id = [0u8; 16];
    request_id.copy_from_slice(&digest[..16]);
    let op = Op::AlertDone(AlertDone { id: alert.id.clone(), delivered, attempts });
    if let Err(e) = cluster.write(Caller::Node, request_id, op).await {
        tracing::warn!(error = %e, id = %alert.id, "could not record the alert's delivery; the next leader retries it");
    }
    if !delivered {
        tracing::warn!(id = %alert.id, url = %rule.url, attempts, status, "alert undeliverable; given up");
    }
    audit.record(AuditEvent {
        ts_ms: crate::admin::now_ms(),
        node_id: cluster.id,
        kind: "alert".into(),
        decision: if delivered { "allow" } else { "deny" }.into(),
        reason: if delivered { "delivered" } else { "undeliverable" }.into(),
        key_id: None,
        consumer: None,
        route: Some(alert.rule.to_string().into()),
        method: "POST".into(),
        path: alert.id.clone(),
        raw_path: None,
        status,
        latency_us: started.elapsed().as_micros() as u64,
        client_ip: String::new(),
        policy_version: version,
        bytes_in: None,
        bytes_out: None,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", "what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
