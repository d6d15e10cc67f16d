//! The control-plane facade the admin API uses: writes from any node, linearizable reads,
//! membership changes, status. Followers forward to the leader over the node-to-node channel.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app::StateView;
use crate::clock::Clock;
use crate::command::{Op, Request, RequestId};
use crate::network::client::RpcFailure;
use crate::network::wire::{
    path, Caller, ForwardMembership, ForwardWrite, LeaderRefusal, MembershipChange, NodeStatus, Written,
};
use crate::network::PeerRpc;
use crate::operations::{RegisterNode, RetireNode};
use crate::{Incarnation, NodeId, Raft};

/// How long a write may take end to end, forwarding and leader changes included. Long enough
/// to ride through an election (≤ 1 s by default) twice, short enough for an interactive call.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// Timeout of one forwarded call to the leader.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before retrying when no leader is known, about one heartbeat.
const NO_LEADER_BACKOFF: Duration = Duration::from_millis(100);
/// Timeout of a status probe; a slow peer shows as unknown rather than stalling `/v1/cluster`.
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);
/// Poll interval while waiting for members to confirm an applied index.
const CONFIRM_POLL: Duration = Duration::from_millis(10);
/// How long the leader keeps probing a joining node that does not answer yet (it may still be
/// starting when the operator adds it).
const JOIN_PROBE_DEADLINE: Duration = Duration::from_secs(5);
/// How long a new member may take to catch up before the join call gives up (it stays a
/// learner and is promoted by a repeated call).
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("caller is not allowed to do this")]
    Forbidden,
    #[error("no leader is reachable right now")]
    NoLeader,
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unavailable(String),
}

pub struct Cluster {
    pub id: NodeId,
    pub incarnation: Incarnation,
    pub raft: Raft,
    pub view: StateView,
    rpc: PeerRpc,
    clock: Clock,
    /// One membership change at a time on this node (openraft refuses overlapping ones).
    membership_lock: tokio::sync::Mutex<()>,
    /// When this node last accepted an AppendEntries from a leader (for pre-vote).
    pub leader_contact: crate::prevote::LeaderContact,
}

impl Cluster {
    pub fn new(id: NodeId, incarnation: Incarnation, raft: Raft, view: StateView, rpc: PeerRpc) -> Self {
        Self {
            id,
            incarnation,
            raft,
            view,
            rpc,
            clock: Clock::default(),
            membership_lock: Default::default(),
            leader_contact: Default::default(),
        }
    }

    /// openraft's settings (timeouts) this node runs with.
    pub fn raft_config(&self) -> std::sync::Arc<openraft::Config> {
        self.raft.config().clone()
    }

    /// The node-to-node client, for calls that other crates add to the Raft listener.
    pub fn rpc(&self) -> &PeerRpc {
        &self.rpc
    }

    /// A fresh random request id.
    pub fn new_request_id() -> RequestId {
        rand::random()
    }

    /// Proposes `op` through the leader and returns once this node has applied it.
    pub async fn write(&self, caller: Caller, request_id: RequestId, op: Op) -> Result<Written, ClusterError> {
        let deadline = Instant::now() + WRITE_DEADLINE;
        let written = self.propose(caller, request_id, op, deadline).await?;
        self.wait_applied(written.index, deadline).await?;
        Ok(written)
    }

    /// Proposes `op` through the leader and returns once the leader applied it (this node may
    /// not have yet), or fails at `deadline`.
    pub async fn propose(
        &self,
        caller: Caller,
        request_id: RequestId,
        op: Op,
        deadline: Instant,
    ) -> Result<Written, ClusterError> {
        let request = Request { request_id, ts_ms: 0, op };
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = match self.leader() {
                // A deposed leader that does not know it yet (openraft 0.9 has no CheckQuorum)
                // would wait forever for a commit: every attempt is bounded by the deadline.
                Some((leader, _)) if leader == self.id => {
                    match tokio::time::timeout(remaining, self.write_as_leader(caller, request.clone())).await {
                        Ok(r) => r,
                        Err(_) => {
                            Err(LeaderRefusal::Unavailable("not committed in time (is this node cut off?)".into()))
                        }
                    }
                }
                Some((leader, addr)) => {
                    let fw = ForwardWrite { caller, request: request.clone() };
                    let timeout = FORWARD_TIMEOUT.min(remaining);
                    let call =
                        self.rpc.call::<_, Result<Written, LeaderRefusal>>(leader, &addr, path::FORWARD, fw, timeout);
                    // If another leader takes over while we wait on this one (it froze, or was
                    // cut off), stop waiting. Outcome unknown either way: the retry carries the
                    // same request id, so it is applied at most once.
                    tokio::select! {
                        r = call => r.unwrap_or_else(|e| Err(LeaderRefusal::Unavailable(e.to_string()))),
                        _ = self.leader_changes_from(leader) => Err(LeaderRefusal::NotLeader { leader: None }),
                    }
                }
                None => Err(LeaderRefusal::NotLeader { leader: None }),
            };
            match attempt {
                Ok(w) => return Ok(w),
                Err(LeaderRefusal::Forbidden) => return Err(ClusterError::Forbidden),
                Err(LeaderRefusal::Invalid(m)) => return Err(ClusterError::Invalid(m)),
                Err(e @ (LeaderRefusal::NotLeader { .. } | LeaderRefusal::Unavailable(_))) => {
                    if Instant::now() + NO_LEADER_BACKOFF >= deadline {
                        return Err(ClusterError::Timeout(format!("write not committed in time: {e}")));
                    }
                    tracing::debug!(error = %e, "write retry");
                    tokio::time::sleep(NO_LEADER_BACKOFF).await;
                }
            }
        }
    }

    /// Runs a write on this node, which believes it leads. Also serves forwarded writes.
    pub async fn write_as_leader(&self, caller: Caller, mut request: Request) -> Result<Written, LeaderRefusal> {
        if !self.caller_may(caller, &request.op) {
            return Err(LeaderRefusal::Forbidden);
        }
        request.ts_ms = self.clock.now_ms();
        match self.raft.client_write(request).await {
            Ok(r) => Ok(Written { index: r.log_id.index, response: r.data }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(LeaderRefusal::NotLeader { leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)) })
            }
            Err(e) => Err(LeaderRefusal::Unavailable(e.to_string())),
        }
    }

    /// Whether `caller` may propose `op`. Node-internal operations need no token; everything
    /// else needs a current admin token, compared in constant time.
    fn caller_may(&self, caller: Caller, op: &Op) -> bool {
        match caller {
            Caller::Node => op.is_node_internal(),
            Caller::Key(id_digest) => match op {
                Op::RotateKey(r) => bool::from(Sha256::digest(r.old_id.as_bytes()).ct_eq(&id_digest)),
                _ => false,
            },
            Caller::Admin(digest) => self.is_admin(&digest),
        }
    }

    pub fn is_admin(&self, digest: &[u8; 32]) -> bool {
        let view = self.view.load();
        let mut found = false;
        for t in view.admin_tokens.values() {
            found |= bool::from(t.digest.ct_eq(digest));
        }
        found
    }

    /// Resolves when this node sees a leader other than `leader`.
    async fn leader_changes_from(&self, leader: NodeId) {
        let mut m = self.raft.metrics();
        let _ = m.wait_for(|m| m.current_leader.is_some_and(|l| l != leader)).await;
    }

    /// The current leader and its Raft address, as this node knows them.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&leader)?.addr.clone();
        Some((leader, addr))
    }

    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), ClusterError> {
        let timeout = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "wait for local apply")
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::Timeout(format!("this node did not apply index {index}: {e}")))
    }

    /// Makes the next local read linearizable: confirms the leader's commit index with a
    /// quorum (ReadIndex), then waits until this node has applied up to it.
    pub async fn read_barrier(&self) -> Result<(), ClusterError> {
        let deadline = Instant::now() + WRITE_DEADLINE;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let index = match self.leader() {
                Some((leader, _)) if leader == self.id => tokio::time::timeout(remaining, self.read_index_as_leader())
                    .await
                    .unwrap_or_else(|_| Err(LeaderRefusal::Unavailable("leadership not confirmed in time".into()))),
                Some((leader, addr)) => {
                    let timeout = FORWARD_TIMEOUT.min(remaining);
                    let call =
                        self.rpc.call::<_, Result<u64, LeaderRefusal>>(leader, &addr, path::READ_INDEX, (), timeout);
                    tokio::select! {
                        r = call => r.unwrap_or_else(|e| Err(LeaderRefusal::Unavailable(e.to_string()))),
                        _ = self.leader_changes_from(leader) => Err(LeaderRefusal::NotLeader { leader: None }),
                    }
                }
                None => Err(LeaderRefusal::NotLeader { leader: None }),
            };
            match index {
                Ok(i) => return self.wait_applied(i, deadline).await,
                Err(e) if Instant::now() + NO_LEADER_BACKOFF < deadline => {
                    tracing::debug!(error = %e, "read barrier retry");
                    tokio::time::sleep(NO_LEADER_BACKOFF).await;
                }
                Err(_) => return Err(ClusterError::NoLeader),
            }
        }
    }

    /// One ReadIndex round: the leader's quorum-confirmed commit index, then wait until this
    /// node applied it. No retries (the lease loop renews on its own schedule).
    pub async fn read_barrier_once(&self) -> Result<(), ClusterError> {
        let index = match self.leader() {
            Some((leader, _)) if leader == self.id => self.read_index_as_leader().await,
            Some((leader, addr)) => {
                let call = self.rpc.call::<_, Result<u64, LeaderRefusal>>(
                    leader,
                    &addr,
                    path::READ_INDEX,
                    (),
                    FORWARD_TIMEOUT,
                );
                // A renewal stuck on a leader that died or froze is abandoned the moment a new
                // leader is known, so the next attempt goes to the new one.
                tokio::select! {
                    r = call => r.unwrap_or_else(|e| Err(LeaderRefusal::Unavailable(e.to_string()))),
                    _ = self.leader_changes_from(leader) => Err(LeaderRefusal::NotLeader { leader: None }),
                }
            }
            None => Err(LeaderRefusal::NotLeader { leader: None }),
        };
        match index {
            Ok(i) => self.wait_applied(i, Instant::now() + FORWARD_TIMEOUT).await,
            Err(_) => Err(ClusterError::NoLeader),
        }
    }

    pub async fn read_index_as_leader(&self) -> Result<u64, LeaderRefusal> {
        match self.raft.ensure_linearizable().await {
            Ok(log_id) => Ok(log_id.map(|l| l.index).unwrap_or(0)),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(LeaderRefusal::NotLeader { leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)) })
            }
            Err(e) => Err(LeaderRefusal::Unavailable(e.to_string())),
        }
    }

    /// Adds or removes a member through the leader.
    pub async fn change_membership(&self, caller: Caller, change: MembershipChange) -> Result<(), ClusterError> {
        let deadline = Instant::now() + WRITE_DEADLINE;
        loop {
            let attempt = match self.leader() {
                Some((leader, _)) if leader == self.id => {
                    self.change_membership_as_leader(caller, change.clone()).await
                }
                Some((leader, addr)) => {
                    let fw = ForwardMembership { caller, change: change.clone() };
                    let timeout = CATCH_UP_DEADLINE + FORWARD_TIMEOUT;
                    self.rpc
                        .call::<_, Result<(), LeaderRefusal>>(leader, &addr, path::MEMBERSHIP, fw, timeout)
                        .await
                        .unwrap_or_else(|e| Err(LeaderRefusal::Unavailable(e.to_string())))
                }
                None => Err(LeaderRefusal::NotLeader { leader: None }),
            };
            match attempt {
                Ok(()) => return Ok(()),
                Err(LeaderRefusal::Forbidden) => return Err(ClusterError::Forbidden),
                Err(LeaderRefusal::Invalid(m)) => return Err(ClusterError::Invalid(m)),
                Err(LeaderRefusal::Unavailable(m)) => return Err(ClusterError::Unavailable(m)),
                Err(LeaderRefusal::NotLeader { .. }) if Instant::now() + NO_LEADER_BACKOFF < deadline => {
                    tokio::time::sleep(NO_LEADER_BACKOFF).await;
                }
                Err(LeaderRefusal::NotLeader { .. }) => return Err(ClusterError::NoLeader),
            }
        }
    }

    pub async fn change_membership_as_leader(
        &self,
        caller: Caller,
        change: MembershipChange,
    ) -> Result<(), LeaderRefusal> {
        let Caller::Admin(digest) = caller else { return Err(LeaderRefusal::Forbidden) };
        if !self.is_admin(&digest) {
            return Err(LeaderRefusal::Forbidden);
        }
        let _guard = self.membership_lock.lock().await;
        let unavailable = |e: &dyn std::fmt::Display| LeaderRefusal::Unavailable(e.to_string());
        match change {
            MembershipChange::Add { id, raft_addr } => {
                let view = self.view.load_full();
                if view.nodes.get(&id).is_some_and(|n| n.retired) {
                    return Err(LeaderRefusal::Invalid(format!(
                        "node id {id} was removed before; ids are never reused, pick a new one"
                    )));
                }
                let voters: BTreeSet<NodeId> =
                    self.raft.metrics().borrow().membership_config.membership().voter_ids().collect();
                if voters.contains(&id) {
                    return Err(LeaderRefusal::Invalid(format!("node {id} is already a voter")));
                }
                // Learn the new node's incarnation from the node itself, and record it before it
                // receives a single entry.
                let status = self.probe_new_node(id, &raft_addr).await?;
                if status.node_id != id {
                    return Err(LeaderRefusal::Invalid(format!(
                        "{raft_addr} is node {}, not node {id}",
                        status.node_id
                    )));
                }
                let reg = Request {
                    request_id: Self::new_request_id(),
                    ts_ms: self.clock.now_ms(),
                    op: Op::RegisterNode(RegisterNode { id, incarnation: status.incarnation }),
                };
                let r = self.raft.client_write(reg).await.map_err(|e| unavailable(&e))?;
                if let crate::command::Response::Err(e) = r.data {
                    return Err(LeaderRefusal::Invalid(e.message));
                }
                self.raft.add_learner(id, BasicNode { addr: raft_addr }, false).await.map_err(|e| unavailable(&e))?;
                self.raft
                    .wait(Some(CATCH_UP_DEADLINE))
                    .metrics(
                        |m| {
                            let target = m.last_log_index;
                            m.replication
                                .as_ref()
                                .and_then(|r| r.get(&id).cloned().flatten())
                                .map(|l| Some(l.index) >= target.map(|t| t.saturating_sub(100)))
                                .unwrap_or(false)
                        },
                        "learner caught up",
                    )
                    .await
                    .map_err(|e| {
                        LeaderRefusal::Unavailable(format!("node {id} joined as a learner but did not catch up: {e}"))
                    })?;
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map_err(|e| unavailable(&e))?;
                Ok(())
            }
            MembershipChange::Remove { id } => {
                let membership = self.raft.metrics().borrow().membership_config.membership().clone();
                let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
                let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
                if !voters.contains(&id) && !learners.contains(&id) {
                    return Err(LeaderRefusal::Invalid(format!("node {id} is not a member")));
                }
                if voters.contains(&id) && voters.len() == 1 {
                    return Err(LeaderRefusal::Invalid("cannot remove the last voter".into()));
                }
                // Retire the id first: if we crash between the two steps the id is never reused,
                // which is the safe direction.
                let retire = Request {
                    request_id: Self::new_request_id(),
                    ts_ms: self.clock.now_ms(),
                    op: Op::RetireNode(RetireNode { id }),
                };
                self.raft.client_write(retire).await.map_err(|e| unavailable(&e))?;
                if voters.contains(&id) {
                    self.raft
                        .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                        .await
                        .map_err(|e| unavailable(&e))?;
                } else {
                    self.raft
                        .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                        .await
                        .map_err(|e| unavailable(&e))?;
                }
                Ok(())
            }
        }
    }

    /// Waits until every member reports `last_applied ≥ index`, up to `bound`. Returns the
    /// members that did not confirm in time (empty when all did). With `reachable_only`, a
    /// member that does not answer the probe is not waited for (it is given up at once).
    pub async fn wait_members_applied(&self, index: u64, bound: Duration, reachable_only: bool) -> Vec<NodeId> {
        let deadline = Instant::now() + bound;
        let mut pending: Vec<(NodeId, String)> = self.members_addrs();
        loop {
            let probes = pending.iter().map(|(id, addr)| {
                let rpc = self.rpc.clone();
                let (id, addr) = (*id, addr.clone());
                let me = (id == self.id).then(|| self.status());
                async move {
                    let applied = match me {
                        Some(s) => Some(s.last_applied),
                        None => rpc
                            .call::<_, NodeStatus>(id, &addr, path::STATUS, (), STATUS_TIMEOUT)
                            .await
                            .ok()
                            .map(|s| s.last_applied),
                    };
                    // Done with this member: it applied the entry, or it cannot be reached and
                    // the caller does not wait for those.
                    let done = match applied {
                        Some(a) => a >= index,
                        None => reachable_only,
                    };
                    (id, addr, done)
                }
            });
            pending = futures::future::join_all(probes)
                .await
                .into_iter()
                .filter(|(_, _, done)| !done)
                .map(|(id, a, _)| (id, a))
                .collect();
            if pending.is_empty() || Instant::now() >= deadline {
                return pending.into_iter().map(|(id, _)| id).collect();
            }
            tokio::time::sleep(CONFIRM_POLL).await;
        }
    }

    /// Asks a joining node for its status, retrying while it may still be starting.
    async fn probe_new_node(&self, id: NodeId, raft_addr: &str) -> Result<NodeStatus, LeaderRefusal> {
        let deadline = Instant::now() + JOIN_PROBE_DEADLINE;
        loop {
            match self.rpc.call(id, raft_addr, path::STATUS, (), STATUS_TIMEOUT).await {
                Ok(status) => return Ok(status),
                Err(e) if Instant::now() >= deadline => {
                    return Err(LeaderRefusal::Invalid(format!(
                        "cannot reach node {id} at {raft_addr}: {e}; start it with --join first"
                    )))
                }
                Err(_) => tokio::time::sleep(NO_LEADER_BACKOFF).await,
            }
        }
    }

    /// This node's own status.
    pub fn status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow().clone();
        let state = match m.state {
            ServerState::Leader => "Leader",
            ServerState::Follower => "Follower",
            ServerState::Learner => "Learner",
            ServerState::Candidate => "Candidate",
            ServerState::Shutdown => "Shutdown",
        };
        NodeStatus {
            node_id: self.id,
            incarnation: self.incarnation,
            state: state.to_string(),
            leader_id: m.current_leader,
            term: m.current_term,
            last_applied: m.last_applied.map(|l| l.index).unwrap_or(0),
            last_log_index: m.last_log_index.unwrap_or(0),
        }
    }

    /// Every member's id and Raft address, from this node's view of the membership.
    pub fn members_addrs(&self) -> Vec<(NodeId, String)> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership().nodes().map(|(id, n)| (*id, n.addr.clone())).collect()
    }

    /// Every member with its Raft address, voter flag and (if it answers) its status.
    pub async fn members(&self) -> Vec<(NodeId, String, bool, Option<NodeStatus>)> {
        let membership = self.raft.metrics().borrow().membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let nodes: BTreeMap<NodeId, BasicNode> = membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
        let probes = nodes.iter().map(|(id, node)| {
            let rpc = self.rpc.clone();
            let (id, addr) = (*id, node.addr.clone());
            let me = (id == self.id).then(|| self.status());
            async move {
                let status = match me {
                    Some(s) => Some(s),
                    None => rpc.call::<_, NodeStatus>(id, &addr, path::STATUS, (), STATUS_TIMEOUT).await.ok(),
                };
                (id, addr, status)
            }
        });
        futures::future::join_all(probes)
            .await
            .into_iter()
            .map(|(id, addr, s)| (id, addr, voters.contains(&id), s))
            .collect()
    }

    /// Registers this node's incarnation with the cluster (once per data dir).
    pub async fn register_self(&self) -> Result<(), ClusterError> {
        let op = Op::RegisterNode(RegisterNode { id: self.id, incarnation: self.incarnation });
        // Deterministic id: a retried registration of the same data dir is deduplicated.
        let mut request_id = RequestId::default();
        request_id[..8].copy_from_slice(&self.id.to_be_bytes());
        request_id[8..].copy_from_slice(&self.incarnation[..8]);
        let w = self.write(Caller::Node, request_id, op).await?;
        match w.response {
            crate::command::Response::Err(e) => Err(ClusterError::Invalid(e.message)),
            _ => Ok(()),
        }
    }
}

impl From<RpcFailure> for ClusterError {
    fn from(e: RpcFailure) -> Self {
        ClusterError::Unavailable(e.to_string())
    }
}
