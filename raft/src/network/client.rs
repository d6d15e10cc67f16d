//! The sending side of the node-to-node channel.

use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use raftgate_storage::{decode, encode};
use serde::{de::DeserializeOwned, Serialize};

use super::wire::{path, Envelope};
use crate::app::StateView;
use crate::{Incarnation, NodeId, TypeConfig};

/// How a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcFailure {
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    #[error("peer did not answer in time")]
    Timeout,
    #[error("peer refused the call: {0}")]
    Rejected(String),
    #[error("bad reply from peer: {0}")]
    Protocol(String),
}

/// Calls peers over HTTP with a pooled keep-alive client. Cheap to clone.
#[derive(Clone)]
pub struct PeerRpc {
    http: reqwest::Client,
    self_id: NodeId,
    incarnation: Incarnation,
    /// Read for the target's registered incarnation.
    view: StateView,
}

/// Connect timeout for peer calls: loopback and LAN peers connect in well under a millisecond,
/// and a dead peer must not hold a replication stream for long.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

impl PeerRpc {
    /// `source_ip` binds outgoing connections to one local address (multi-homed hosts, and the
    /// chaos harness, which tells senders apart by it).
    pub fn new(
        self_id: NodeId,
        incarnation: Incarnation,
        view: StateView,
        source_ip: Option<std::net::IpAddr>,
    ) -> Self {
        let http = reqwest::Client::builder()
            .local_address(source_ip)
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .expect("reqwest client builds with static settings");
        Self { http, self_id, incarnation, view }
    }

    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        target: NodeId,
        addr: &str,
        path: &str,
        body: Req,
        timeout: Duration,
    ) -> Result<Resp, RpcFailure> {
        let to_incarnation = self.view.load().nodes.get(&target).and_then(|n| n.incarnation);
        let envelope =
            Envelope { from: self.self_id, from_incarnation: self.incarnation, to: target, to_incarnation, body };
        let bytes = encode(&envelope).map_err(|e| RpcFailure::Protocol(e.to_string()))?;
        let send = self.http.post(format!("http://{addr}{path}")).body(bytes).timeout(timeout).send();
        let resp = send.await.map_err(|e| {
            if e.is_timeout() {
                RpcFailure::Timeout
            } else {
                RpcFailure::Unreachable(e.to_string())
            }
        })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| {
            if e.is_timeout() {
                RpcFailure::Timeout
            } else {
                RpcFailure::Unreachable(e.to_string())
            }
        })?;
        if !status.is_success() {
            return Err(RpcFailure::Rejected(format!("{status}: {}", String::from_utf8_lossy(&body))));
        }
        decode(&body).map_err(|e| RpcFailure::Protocol(e.to_string()))
    }
}

/// Builds one [`PeerClient`] per replication target.
pub struct NetworkFactory {
    pub rpc: PeerRpc,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient { rpc: self.rpc.clone(), target, addr: node.addr.clone() }
    }
}

pub struct PeerClient {
    rpc: PeerRpc,
    target: NodeId,
    addr: String,
}

impl PeerClient {
    async fn raft_call<Req, Resp, E>(
        &self,
        path: &str,
        req: Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        RaftError<NodeId, E>: DeserializeOwned,
    {
        let reply: Result<Resp, RaftError<NodeId, E>> =
            self.rpc.call(self.target, &self.addr, path, req, option.hard_ttl()).await.map_err(|f| match f {
                // A refused envelope (wrong incarnation) is treated like an unreachable node:
                // openraft backs off instead of replicating into a wiped data dir.
                RpcFailure::Unreachable(_) | RpcFailure::Rejected(_) => RPCError::Unreachable(Unreachable::new(&f)),
                RpcFailure::Timeout | RpcFailure::Protocol(_) => RPCError::Network(NetworkError::new(&f)),
            })?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.raft_call(path::APPEND, rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.raft_call(path::SNAPSHOT, rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.raft_call(path::VOTE, rpc, &option).await
    }
}
