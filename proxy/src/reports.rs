//! What the data plane tells the cluster besides quota asks: failed authentications per client
//! IP and per known key, counted here between reports. The exchange task (`raft/src/quota.rs`) takes them with
//! [`AuthFailureReports::take`] and proposes one entry for all of them; the state machine sums
//! them over nodes and blocks an IP everywhere once the cluster-wide count passes the guard's
//! threshold.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use tokio::sync::Notify;

/// IPs remembered between two reports at most; past it new IPs wait for the next report (the
/// busiest are already in; a spoofing flood cannot grow memory).
pub const REPORT_IPS_MAX: usize = 4096;

#[derive(Default)]
pub struct AuthFailureReports {
    pending: Mutex<Pending>,
    work: Notify,
}

#[derive(Default)]
struct Pending {
    ips: HashMap<IpAddr, u64>,
    /// Known key ids presented with a wrong secret or past their life.
    keys: HashMap<String, u64>,
}

/// What one report carries.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub ips: Vec<(IpAddr, u64)>,
    pub keys: Vec<(String, u64)>,
}

impl Report {
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty() && self.keys.is_empty()
    }
}

impl AuthFailureReports {
    /// Counts one failed authentication from `ip`.
    /// Counts one failed authentication from `ip`, and against `key_id` when a known key was
    /// presented.
    pub fn record(&self, ip: IpAddr, key_id: Option<&str>) {
        let mut p = self.pending.lock().expect("reports lock");
        let first = p.ips.is_empty() && p.keys.is_empty();
        if let Some(n) = p.ips.get_mut(&ip) {
            *n += 1;
        } else if p.ips.len() < REPORT_IPS_MAX {
            p.ips.insert(ip, 1);
        }
        if let Some(id) = key_id {
            if let Some(n) = p.keys.get_mut(id) {
                *n += 1;
            } else if p.keys.len() < REPORT_IPS_MAX {
                p.keys.insert(id.to_string(), 1);
            }
        }
        drop(p);
        if first {
            self.work.notify_one();
        }
    }

    /// Everything counted since the last call.
    pub fn take(&self) -> Report {
        let mut p = self.pending.lock().expect("reports lock");
        Report { ips: p.ips.drain().collect(), keys: p.keys.drain().collect() }
    }

    pub async fn work(&self) {
        self.work.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_ip_and_empties_on_take() {
        let r = AuthFailureReports::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        r.record(a, None);
        r.record(a, Some("k1"));
        r.record(b, Some("k1"));
        let mut got = r.take();
        got.ips.sort();
        assert_eq!(got.ips, vec![(a, 2), (b, 1)]);
        assert_eq!(got.keys, vec![("k1".to_string(), 2)]);
        assert!(r.take().is_empty());
    }
}
