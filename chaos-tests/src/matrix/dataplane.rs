//! The data plane under faults of its own (../shared/reference/faults.md R20, R21): an audit
//! store that is slow and then failing, and a flood of bad and slow clients at the leader's
//! proxy while admin writes go on. Neither may reach Raft (no election, writes go on), the
//! data plane must not wait on the audit store, and no audit event may vanish uncounted.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::fixture::install;
use crate::node::rss_kib;
use crate::scenario::{probe_writes, settle, wait_until, Observer, Scenario, Workload};
use crate::{EchoUpstream, TestCluster};

/// R20 and J5: one node's audit store is slow (300 ms a write) and then fails every write,
/// 3 s each, while requests go through that node. Requests must not wait for the store, the
/// node's memory must stay bounded, Raft must not notice, and once the store works again every
/// decision must be in the node's audit trail or counted as dropped, with the chain intact.
pub async fn audit_sink_slow_then_failing() {
    let c = TestCluster::start(3, &[]).await.expect("cluster starts");
    let mut sc = Scenario::new("audit_sink_slow_then_failing");
    let up = EchoUpstream::start().await;
    let fx = install(&c, &up.url()).await;
    let obs = Observer::start(&c);
    let ids = c.ids();
    let victim = sc.pick(&ids);
    let w = Workload::start(&c, "as");
    let pid = c.nodes[&victim].pid().expect("running");
    let proxy = c.nodes[&victim].proxy_url();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
    let term_before = c.max_term().await;
    let rss_before = rss_kib(pid);
    let dropped_before = c.metric(victim, "raftgate_audit_dropped").await.unwrap_or(0.0);
    let (mut sent, mut ok, mut slowest, mut rss_peak) = (0u32, 0u32, Duration::ZERO, rss_before);
    for fault in ["audit-delay 300", "audit-eio"] {
        c.nodes[&victim].set_disk_fault(fault);
        let until = Instant::now() + Duration::from_secs(3);
        // Bounded: 3 s per fault, one request at a time.
        while Instant::now() < until {
            let t = Instant::now();
            let r = http.get(format!("{proxy}/orders/audit-{sent}")).bearer_auth(&fx.reader_key).send().await;
            slowest = slowest.max(t.elapsed());
            sent += 1;
            if r.is_ok_and(|r| r.status() == 200) {
                ok += 1;
            }
            rss_peak = rss_peak.max(rss_kib(pid));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let write_errors = c.metric(victim, "raftgate_audit_write_errors").await.unwrap_or(0.0);
    c.nodes[&victim].set_disk_fault("");
    sc.figure(
        "audit_fault",
        json!({ "node": victim, "requests": sent, "ok": ok, "slowest_ms": slowest.as_millis(),
                "rss_kib_before": rss_before, "rss_kib_peak": rss_peak, "write_errors": write_errors }),
    );
    sc.check(
        "the failing audit store is noticed and counted",
        write_errors > 0.0,
        format!("{write_errors} failed writes"),
    );
    sc.check(
        "requests do not wait for the audit store",
        ok == sent && slowest < Duration::from_secs(1),
        format!("{ok} of {sent} answered 200, slowest {slowest:?}"),
    );
    sc.check(
        "memory stays bounded while the audit store lags",
        rss_peak.saturating_sub(rss_before) < 64 * 1024,
        format!("{rss_before} → {rss_peak} KiB"),
    );
    // Every decision lands once the store works again (the held batch is retried), or is
    // counted as dropped.
    let query = format!("/v1/audit?key={}&local=true&limit=1000", fx.reader_id);
    let count = || async {
        match c.get(victim, &query).await {
            Ok((200, v)) => v["events"]
                .as_array()
                .map(|a| {
                    a.iter().filter(|e| e["path"].as_str().is_some_and(|p| p.starts_with("/orders/audit-"))).count()
                })
                .unwrap_or(0) as u32,
            _ => 0,
        }
    };
    let _ = wait_until(Duration::from_secs(10), || async { count().await >= sent }).await;
    let audited = count().await;
    let dropped = c.metric(victim, "raftgate_audit_dropped").await.unwrap_or(0.0) - dropped_before;
    sc.check(
        "every decision is in the audit trail or counted as dropped",
        f64::from(audited) + dropped >= f64::from(sent),
        format!("{sent} requests: {audited} audited, {dropped} counted as dropped"),
    );
    let chain = c.get(victim, "/v1/audit/verify").await;
    sc.check(
        "the node's audit chain verifies",
        matches!(&chain, Ok((200, v)) if v["ok"] == true),
        format!("{chain:?}"),
    );
    let elections = obs.elections_since(term_before);
    sc.check("Raft does not notice the audit store", elections == 0, format!("{elections} elections"));
    settle(sc, &c, w, obs).await;
}

/// R21: the leader's proxy is flooded for 6 s by 32 clients sending requests with invalid keys,
/// 200 slowloris connections (a header byte every 200 ms) and 16 clients sending garbage, all
/// from 127.0.0.1, while admin writes go through every node. Raft must not notice (no
/// election, writes go on), and a valid client (from 127.0.0.2) is still served.
pub async fn data_plane_flood_during_raft_ops() {
    let c = TestCluster::start(3, &[]).await.expect("cluster starts");
    let mut sc = Scenario::new("data_plane_flood_during_raft_ops");
    let up = EchoUpstream::start().await;
    let fx = install(&c, &up.url()).await;
    let obs = Observer::start(&c);
    let ids = c.ids();
    let w = Workload::start(&c, "fl");
    let leader = c.wait_leader(Duration::from_secs(10)).await.expect("a leader");
    let port = c.nodes[&leader].proxy_port;
    let proxy = c.nodes[&leader].proxy_url();
    let term_before = c.max_term().await;
    let span = Duration::from_secs(6);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut flood = Vec::new();
    for i in 0..32 {
        let (stop, sent, url) = (stop.clone(), sent.clone(), format!("{proxy}/orders/{i}"));
        flood.push(tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("client");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = http.get(&url).bearer_auth("rg_invalid_0000000000000000000000000000").send().await;
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for _ in 0..200 {
        let stop = stop.clone();
        flood.push(tokio::spawn(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return };
            let _ = s.write_all(b"GET /orders/slow HTTP/1.1\r\nHost: x\r\n").await;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if s.write_all(b"X").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    for i in 0..16u8 {
        let stop = stop.clone();
        flood.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    let _ = s.write_all(&[i; 4096]).await;
                    let _ = s.write_all(b"\r\n\r\n").await;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    // Meanwhile: admin writes through every node, and a valid client from another address.
    let valid = {
        let (proxy, key) = (proxy.clone(), fx.reader_key.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
                .build()
                .expect("client");
            let (mut ok, mut tried) = (0u32, 0u32);
            let started = Instant::now();
            while started.elapsed() < span {
                tried += 1;
                if http
                    .get(format!("{proxy}/orders/valid-{tried}"))
                    .bearer_auth(&key)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
                {
                    ok += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (ok, tried)
        })
    };
    let (writes_ok, writes_tried) =
        probe_writes(&c, &ids, "fl", span, Duration::from_secs(2), Duration::from_millis(100)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (valid_ok, valid_tried) = valid.await.unwrap_or((0, 0));
    for f in flood {
        let _ = f.await;
    }
    let elections = obs.elections_since(term_before);
    sc.figure(
        "flood",
        json!({ "node": leader, "invalid_key_requests": sent.load(std::sync::atomic::Ordering::Relaxed),
                "admin_writes": [writes_ok, writes_tried], "valid_client": [valid_ok, valid_tried],
                "elections": elections }),
    );
    sc.check("no election while the leader's proxy is flooded", elections == 0, format!("{elections} elections"));
    sc.check(
        "admin writes go on during the flood",
        writes_ok * 10 >= writes_tried * 9,
        format!("{writes_ok} of {writes_tried}"),
    );
    sc.check(
        "a valid client is still served during the flood",
        valid_ok * 10 >= valid_tried * 9,
        format!("{valid_ok} of {valid_tried}"),
    );
    settle(sc, &c, w, obs).await;
}
