//! A cluster of node processes and the admin calls tests make against it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde_json::Value;

use crate::node::NodeProc;

/// The bootstrap admin token every test cluster uses.
pub const ADMIN_TOKEN: &str = "chaos-tests-admin-token-0123456789abcdef";

pub struct TestCluster {
    /// The fault-injecting network between the nodes, when started with one.
    pub net: Option<crate::faultnet::FaultNet>,
    /// Dropped (nodes killed, their disks unmounted) before `dir` is removed.
    pub nodes: BTreeMap<u64, NodeProc>,
    /// Holds the data dirs and logs; removed when the cluster is dropped.
    pub dir: tempfile::TempDir,
    pub token_file: std::path::PathBuf,
    http: reqwest::Client,
    /// Extra `serve` flags for every node (timeouts, snapshot policy).
    extra: Vec<String>,
}

/// Result of an admin call: status and JSON body (Null when the body is not JSON).
pub type Reply = (u16, Value);

impl TestCluster {
    /// Starts `n` nodes with the same `--peers` list and waits until the cluster answers
    /// authenticated admin calls.
    pub async fn start(n: u64, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_inner(n, extra, false, false).await
    }

    /// Like [`Self::start`], with every node's data dir on a disk that can lose power
    /// ([`crate::powerfs`]; needs root).
    pub async fn start_on_power_loss_disks(n: u64, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_inner(n, extra, false, true).await
    }

    /// Like [`Self::start`], with every node-to-node link running through a [`FaultNet`].
    ///
    /// [`FaultNet`]: crate::faultnet::FaultNet
    pub async fn start_with_faults(n: u64, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_inner(n, extra, true, false).await
    }

    async fn start_inner(n: u64, extra: &[&str], faulty: bool, power: bool) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let token_file = dir.path().join("admin-token");
        std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n"))?;
        let nodes: BTreeMap<u64, NodeProc> = (1..=n).map(|id| (id, NodeProc::new(id, dir.path()))).collect();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build()?;
        let net = if faulty {
            let real = nodes.iter().map(|(id, n)| (*id, n.raft_addr().parse().expect("socket addr"))).collect();
            Some(crate::faultnet::FaultNet::start(&real).await)
        } else {
            None
        };
        let mut c = Self { net, dir, nodes, token_file, http, extra: extra.iter().map(|s| s.to_string()).collect() };
        let peers = c.peers();
        let base = c.node_args(&[
            "--peers".to_string(),
            peers,
            "--admin-token-file".to_string(),
            c.token_file.display().to_string(),
        ]);
        let ids: Vec<u64> = c.nodes.keys().copied().collect();
        for id in ids {
            let mut args = base.clone();
            if c.net.is_some() {
                args.extend(["--raft-source-ip".to_string(), crate::faultnet::source_ip(id).to_string()]);
            }
            if power {
                c.node(id).use_power_loss_disk()?;
            }
            c.node(id).start(&args);
        }
        c.wait_ready(Duration::from_secs(30)).await?;
        Ok(c)
    }

    fn node_args(&self, base: &[String]) -> Vec<String> {
        let mut args = base.to_vec();
        args.extend(self.extra.iter().cloned());
        args
    }

    /// The `--peers` list: the fault proxies' addresses when there is a fault network.
    pub fn peers(&self) -> String {
        self.nodes
            .values()
            .map(|n| match &self.net {
                Some(net) => format!("{}={}", n.id, net.advertised[&n.id]),
                None => format!("{}={}", n.id, n.raft_addr()),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn net(&self) -> &crate::faultnet::FaultNet {
        self.net.as_ref().expect("cluster started with start_with_faults")
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn node(&mut self, id: u64) -> &mut NodeProc {
        self.nodes.get_mut(&id).expect("no such node")
    }

    /// Starts a new node with `--join`; add it with [`Self::req`] on `/v1/cluster/members`.
    pub fn spawn_joiner(&mut self, id: u64) -> String {
        let mut node = NodeProc::new(id, self.dir.path());
        let args = self.node_args(&["--join".to_string()]);
        node.start(&args);
        let addr = node.raft_addr();
        self.nodes.insert(id, node);
        addr
    }

    /// One admin call to node `id`, with the admin token.
    pub async fn req(
        &self,
        id: u64,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Reply> {
        let node = self.nodes.get(&id).ok_or_else(|| anyhow!("no node {id}"))?;
        let mut r = self.http.request(method, format!("{}{path}", node.admin_url())).bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    pub async fn get(&self, id: u64, path: &str) -> anyhow::Result<Reply> {
        self.req(id, reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, id: u64, path: &str, body: Value) -> anyhow::Result<Reply> {
        self.req(id, reqwest::Method::POST, path, Some(body)).await
    }

    /// One sample (no labels) from node `id`'s `/metrics`, if it answers and has it.
    pub async fn metric(&self, id: u64, name: &str) -> Option<f64> {
        let url = format!("{}/metrics", self.nodes.get(&id)?.admin_url());
        let text = self.http.get(url).send().await.ok()?.text().await.ok()?;
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// `/v1/health` of node `id`, if it answers.
    pub async fn health(&self, id: u64) -> Option<Value> {
        let node = self.nodes.get(&id)?;
        let resp = self
            .http
            .get(format!("{}/v1/health", node.admin_url()))
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .ok()?;
        resp.json().await.ok()
    }

    /// The leader as the running nodes agree on it (a majority of answers naming the same one).
    /// The highest term any node reports now (for counting elections from here on).
    pub async fn max_term(&self) -> u64 {
        let mut term = 0;
        for id in self.nodes.keys() {
            if let Some(h) = self.health(*id).await {
                term = term.max(h["term"].as_u64().unwrap_or(0));
            }
        }
        term
    }

    pub async fn leader(&self) -> Option<u64> {
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for id in self.nodes.keys() {
            if let Some(h) = self.health(*id).await {
                if let Some(l) = h["leader_id"].as_u64() {
                    *votes.entry(l).or_default() += 1;
                }
            }
        }
        votes.into_iter().max_by_key(|(_, v)| *v).map(|(l, _)| l)
    }

    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(l) = self.leader().await {
                if self.health(l).await.is_some_and(|h| h["state"] == "Leader") {
                    return Ok(l);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("no leader within {timeout:?}\n{}", self.logs())
    }

    /// Waits until every node answers an authenticated linearizable read and has registered
    /// its data dir with the cluster (so later state comparisons see a settled registry).
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let all: Vec<u64> = self.nodes.keys().copied().collect();
        for id in self.nodes.keys() {
            loop {
                if let Ok((200, _)) = self.get(*id, "/v1/consumers").await {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("node {id} not ready within {timeout:?}\n{}", self.logs());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let first = all[0];
        loop {
            if let Ok((200, v)) = self.get(first, "/v1/debug/state").await {
                let registered: Vec<u64> = v["registered_nodes"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
                    .unwrap_or_default();
                let mut fresh = true;
                for id in &all {
                    fresh &= self.health(*id).await.is_some_and(|h| h["ready"] == true);
                }
                if fresh && all.iter().all(|id| registered.contains(id)) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("nodes did not all register within {timeout:?}\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `(last_applied, state_hash)` of node `id`.
    pub async fn state(&self, id: u64) -> anyhow::Result<(u64, String)> {
        let (status, v) = self.get(id, "/v1/debug/state").await?;
        if status != 200 {
            bail!("node {id}: /v1/debug/state answered {status}: {v}");
        }
        Ok((v["last_applied"].as_u64().unwrap_or(0), v["state_hash"].as_str().unwrap_or("").to_string()))
    }

    /// The digest of node `id`'s entities (no clock, no dedup table).
    pub async fn policy_hash(&self, id: u64) -> anyhow::Result<String> {
        let (status, v) = self.get(id, "/v1/debug/state").await?;
        if status != 200 {
            bail!("node {id}: /v1/debug/state answered {status}: {v}");
        }
        Ok(v["policy_hash"].as_str().unwrap_or("").to_string())
    }

    /// Waits until the given nodes report the same applied index and the same state hash.
    pub async fn wait_converged(&self, ids: &[u64], timeout: Duration) -> anyhow::Result<(u64, String)> {
        let deadline = Instant::now() + timeout;
        let mut last = Vec::new();
        while Instant::now() < deadline {
            last.clear();
            for id in ids {
                last.push(self.state(*id).await.ok());
            }
            if let Some(Some(first)) = last.first() {
                if last.iter().all(|s| s.as_ref() == Some(first)) {
                    return Ok(first.clone());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("nodes {ids:?} did not converge within {timeout:?}: {last:?}\n{}", self.logs())
    }

    /// The tail of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes.values().map(|n| format!("--- node {} ---\n{}\n", n.id, n.log_tail(30))).collect()
    }
}
