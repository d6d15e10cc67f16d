//! What the data plane tells the cluster besides quota asks: failed authentications per client
//! IP, counted here between reports. The exchange task (`raft/src/quota.rs`) takes them with
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
    pending: Mutex<HashMap<IpAddr, u64>>,
    work: Notify,
}

impl AuthFailureReports {
    /// Counts one failed authentication from `ip`.
    pub fn record(&self, ip: IpAddr) {
        let mut p = self.pending.lock().expect("reports lock");
        let first = p.is_empty();
        if let Some(n) = p.get_mut(&ip) {
            *n += 1;
        } else if p.len() < REPORT_IPS_MAX {
            p.insert(ip, 1);
        }
        drop(p);
        if first {
            self.work.notify_one();
        }
    }

    /// Everything counted since the last call.
    pub fn take(&self) -> Vec<(IpAddr, u64)> {
        let mut p = self.pending.lock().expect("reports lock");
        p.drain().collect()
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
        r.record(a);
        r.record(a);
        r.record(b);
        let mut got = r.take();
        got.sort();
        assert_eq!(got, vec![(a, 2), (b, 1)]);
        assert!(r.take().is_empty());
    }
}
