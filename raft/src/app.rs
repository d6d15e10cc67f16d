//! The state machine application: applies requests to [`GatewayState`] and publishes views.

use std::sync::Arc;

use arc_swap::ArcSwap;
use openraft::{BasicNode, LogId, StoredMembership};
use raftgate_proxy::policy::Policy;
use raftgate_storage::{RecordWrites, StateApp};

use crate::command::{Request, Response};
use crate::operations;
use crate::state::{GatewayState, Writes};
use crate::{NodeId, TypeConfig};

/// What readers outside the state machine see: swapped atomically after each applied batch.
pub type StateView = Arc<ArcSwap<GatewayState>>;
/// What the data plane sees.
pub type PolicyView = Arc<ArcSwap<Policy>>;

pub struct GatewayApp {
    /// The only mutable copy of the state.
    state: GatewayState,
    /// Published for the admin API and the network layer.
    view: StateView,
    /// Published for the data plane.
    policy: PolicyView,
}

impl GatewayApp {
    pub fn new() -> Self {
        Self {
            state: GatewayState::default(),
            view: Arc::new(ArcSwap::from_pointee(GatewayState::default())),
            policy: Arc::new(ArcSwap::from_pointee(Policy::default())),
        }
    }

    pub fn view(&self) -> StateView {
        self.view.clone()
    }

    pub fn policy(&self) -> PolicyView {
        self.policy.clone()
    }

    pub fn state(&self) -> &GatewayState {
        &self.state
    }
}

impl Default for GatewayApp {
    fn default() -> Self {
        Self::new()
    }
}

impl StateApp<TypeConfig> for GatewayApp {
    fn apply(&mut self, log_id: &LogId<NodeId>, req: &Request, writes: &mut RecordWrites) -> Response {
        let mut w = Writes(writes);
        self.state.advance_clock(log_id.index, req.ts_ms, &mut w);
        if let Some(previous) = self.state.dedup_lookup(&req.request_id) {
            return previous;
        }
        let now_ms = self.state.now_ms();
        // A refused operation must leave no trace but its dedup entry: apply it to a scratch
        // buffer and keep those writes only on success.
        let mut scratch = RecordWrites::new();
        let mut tentative = self.state.clone();
        let response = match operations::apply(&req.op, &mut tentative, now_ms, &mut Writes(&mut scratch)) {
            Ok(outcome) => {
                self.state = tentative;
                w.0.extend(scratch);
                Response::Ok(outcome)
            }
            Err(e) => Response::Err(e),
        };
        self.state.dedup_remember(req.request_id, now_ms, response.clone(), &mut w);
        response
    }

    fn restore(&mut self, records: &mut dyn Iterator<Item = (Box<[u8]>, Box<[u8]>)>) -> Result<(), String> {
        self.state = GatewayState::restore(records)?;
        Ok(())
    }

    fn applied(&mut self, last_applied: Option<LogId<NodeId>>, _membership: &StoredMembership<NodeId, BasicNode>) {
        self.state.policy.version = last_applied.map(|l| l.index).unwrap_or(0);
        // Both clones are O(1): the maps share structure.
        self.view.store(Arc::new(self.state.clone()));
        self.policy.store(Arc::new(self.state.policy.clone()));
    }
}
