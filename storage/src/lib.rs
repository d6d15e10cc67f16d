//! RocksDB-backed storage for openraft: the Raft log store and a generic state machine store.
//!
//! This crate owns durability: every write that openraft depends on (vote, append, truncate,
//! purge, applied state) is synced to disk before openraft is told it happened. It knows nothing
//! about gateways: the application's state lives behind [`StateApp`], which turns each log
//! entry into record writes that this crate persists atomically with `last_applied`.
//!
//! It must not: depend on the `raft` or `proxy` crates, read a clock, or spawn tasks.

mod audit_log;
mod codec;
mod db;
pub mod faults;
mod log_store;
mod snapshot;
mod state_machine;

pub use audit_log::{AuditError, AuditLog, ChainBreak, Head as ChainHead};
pub use codec::{
    decode, decode_body, encode, encode_versioned, encode_versioned_into, put_bytes, put_varint, split_version,
    CodecError, FORMAT_VERSION,
};
pub use db::{open, StorageOpenError, CF_LOG, CF_META, CF_SM_META, CF_STATE};
pub use log_store::RocksLogStore;
pub use snapshot::SnapshotFile;
pub use state_machine::{RecordWrites, RocksStateMachine, StateApp};
