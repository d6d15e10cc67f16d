//! The state machine store: applies committed entries through a [`StateApp`] and persists the
//! app's record writes in one synced batch together with `last_applied` and the membership.

use std::io::{BufWriter, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, EntryPayload, LogId, OptionalSend, RaftLogId, RaftSnapshotBuilder, RaftTypeConfig, StorageError,
    StorageIOError, StoredMembership,
};
use rocksdb::{IteratorMode, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode};
use crate::db::{CF_SM_META, CF_STATE};
use crate::snapshot::{SnapshotFile, SnapshotHeader};

/// Record writes produced by applying entries: `(key, Some(value))` puts, `(key, None)` deletes.
pub type RecordWrites = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// The application behind the state machine. It keeps its own in-memory view and describes
/// every change as record writes, which this crate persists.
///
/// `apply` must be deterministic: the same entries in the same order give the same writes and
/// the same responses on every node. It must not read a clock, randomness or do I/O.
pub trait StateApp<C: RaftTypeConfig>: Send + Sync + 'static {
    /// Applies one normal entry's payload.
    fn apply(&mut self, log_id: &LogId<C::NodeId>, data: &C::D, writes: &mut RecordWrites) -> C::R;

    /// Replaces the whole in-memory view with these records (startup, snapshot install).
    fn restore(&mut self, records: &mut dyn Iterator<Item = (Box<[u8]>, Box<[u8]>)>) -> Result<(), String>;

    /// Called once a batch is durable, with the new last applied log id and membership.
    fn applied(&mut self, last_applied: Option<LogId<C::NodeId>>, membership: &StoredMembership<C::NodeId, C::Node>);
}

const KEY_SM_META: &[u8] = b"sm_meta";
const SNAPSHOT_FILE: &str = "snapshot.bin";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "")]
struct SmMeta<C: RaftTypeConfig> {
    last_applied: Option<LogId<C::NodeId>>,
    last_membership: StoredMembership<C::NodeId, C::Node>,
}

impl<C: RaftTypeConfig> Default for SmMeta<C> {
    fn default() -> Self {
        Self { last_applied: None, last_membership: StoredMembership::default() }
    }
}

fn synced() -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    opts
}

fn sm_err<NID: openraft::NodeId>(e: impl std::fmt::Display) -> StorageError<NID> {
    StorageIOError::write_state_machine(AnyError::error(e.to_string())).into()
}

fn snap_err<NID: openraft::NodeId>(e: impl std::fmt::Display) -> StorageError<NID> {
    StorageIOError::write_snapshot(None, AnyError::error(e.to_string())).into()
}

/// A state machine persisted in RocksDB, with snapshots kept as one file in `snapshot_dir`.
pub struct RocksStateMachine<C: RaftTypeConfig, A: StateApp<C>> {
    /// The node's one database, shared with the log store.
    db: Arc<DB>,
    /// Where the current snapshot file lives (the node's data dir).
    snapshot_dir: PathBuf,
    /// The application; its in-memory view always equals the `state` column family.
    app: A,
    /// Cached copy of what `sm_meta` holds on disk.
    meta: SmMeta<C>,
}

impl<C, A> RocksStateMachine<C, A>
where
    C: RaftTypeConfig<SnapshotData = Cursor<Vec<u8>>>,
    C::R: Default,
    A: StateApp<C>,
{
    /// Loads the persisted state into `app` and returns the store.
    pub fn open(db: Arc<DB>, snapshot_dir: &Path, mut app: A) -> Result<Self, StorageError<C::NodeId>> {
        let cf_meta = db.cf_handle(CF_SM_META).expect("sm_meta column family exists");
        let meta: SmMeta<C> = match db.get_cf(cf_meta, KEY_SM_META).map_err(sm_err)? {
            Some(bytes) => decode(&bytes).map_err(sm_err)?,
            None => SmMeta::default(),
        };
        restore_app(&db, &mut app)?;
        app.applied(meta.last_applied.clone(), &meta.last_membership);
        Ok(Self { db, snapshot_dir: snapshot_dir.to_path_buf(), app, meta })
    }

    /// The application, for reads outside openraft (tests, diagnostics).
    pub fn app(&self) -> &A {
        &self.app
    }

    fn snapshot_path(&self) -> PathBuf {
        self.snapshot_dir.join(SNAPSHOT_FILE)
    }
}

fn restore_app<C: RaftTypeConfig, A: StateApp<C>>(db: &DB, app: &mut A) -> Result<(), StorageError<C::NodeId>> {
    let cf_state = db.cf_handle(CF_STATE).expect("state column family exists");
    let mut failed = None;
    let mut iter = db.iterator_cf(cf_state, IteratorMode::Start).map_while(|item| match item {
        Ok(kv) => Some(kv),
        Err(e) => {
            failed = Some(e);
            None
        }
    });
    app.restore(&mut iter).map_err(sm_err)?;
    match failed {
        Some(e) => Err(sm_err(e)),
        None => Ok(()),
    }
}

/// Builds snapshots from a point-in-time RocksDB view, concurrently with `apply`.
pub struct RocksSnapshotBuilder<C: RaftTypeConfig> {
    db: Arc<DB>,
    snapshot_dir: PathBuf,
    _c: std::marker::PhantomData<C>,
}

impl<C> RaftSnapshotBuilder<C> for RocksSnapshotBuilder<C>
where
    C: RaftTypeConfig<SnapshotData = Cursor<Vec<u8>>>,
{
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError<C::NodeId>> {
        let db = self.db.clone();
        let dir = self.snapshot_dir.clone();
        // RocksDB reads and the file write block; keep them off the async workers.
        tokio::task::spawn_blocking(move || build_snapshot_blocking::<C>(&db, &dir)).await.map_err(snap_err)?
    }
}

fn build_snapshot_blocking<C>(db: &DB, dir: &Path) -> Result<Snapshot<C>, StorageError<C::NodeId>>
where
    C: RaftTypeConfig<SnapshotData = Cursor<Vec<u8>>>,
{
    // Metadata and records come from the same point-in-time view, so they always agree.
    let view = db.snapshot();
    let cf_meta = db.cf_handle(CF_SM_META).expect("sm_meta column family exists");
    let cf_state = db.cf_handle(CF_STATE).expect("state column family exists");
    let meta: SmMeta<C> = match view.get_cf(cf_meta, KEY_SM_META).map_err(snap_err)? {
        Some(bytes) => decode(&bytes).map_err(snap_err)?,
        None => SmMeta::default(),
    };
    // Deterministic id: the same applied log always gives the same state, hence the same bytes.
    let snapshot_id = match &meta.last_applied {
        Some(id) => format!("{}-{}-{}", id.leader_id.term, id.leader_id.node_id, id.index),
        None => "empty".to_string(),
    };
    let header = SnapshotHeader::<C> {
        last_log_id: meta.last_applied.clone(),
        last_membership: meta.last_membership.clone(),
        snapshot_id: snapshot_id.clone(),
    };
    let mut bytes = Vec::new();
    SnapshotFile::write_header(&mut bytes, &header).map_err(snap_err)?;
    for item in view.iterator_cf(cf_state, IteratorMode::Start) {
        let (key, value) = item.map_err(snap_err)?;
        SnapshotFile::write_record(&mut bytes, &key, &value).map_err(snap_err)?;
    }
    SnapshotFile::write_end(&mut bytes).map_err(snap_err)?;
    persist_snapshot_file(dir, &bytes)?;
    Ok(Snapshot {
        meta: SnapshotMeta { last_log_id: meta.last_applied, last_membership: meta.last_membership, snapshot_id },
        snapshot: Box::new(Cursor::new(bytes)),
    })
}

/// Writes the snapshot beside the database: temp file, fsync, rename, fsync the directory.
fn persist_snapshot_file<NID: openraft::NodeId>(dir: &Path, bytes: &[u8]) -> Result<(), StorageError<NID>> {
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let mut file = BufWriter::new(std::fs::File::create(&tmp).map_err(snap_err)?);
    file.write_all(bytes).map_err(snap_err)?;
    let file = file.into_inner().map_err(snap_err)?;
    file.sync_all().map_err(snap_err)?;
    std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE)).map_err(snap_err)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(snap_err)?;
    Ok(())
}

impl<C, A> RaftStateMachine<C> for RocksStateMachine<C, A>
where
    C: RaftTypeConfig<SnapshotData = Cursor<Vec<u8>>, Entry = openraft::Entry<C>>,
    C::R: Default,
    A: StateApp<C>,
{
    type SnapshotBuilder = RocksSnapshotBuilder<C>;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<C::NodeId>>, StoredMembership<C::NodeId, C::Node>), StorageError<C::NodeId>> {
        Ok((self.meta.last_applied.clone(), self.meta.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<C::R>, StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut writes = RecordWrites::new();
        let mut responses = Vec::new();
        let mut meta = self.meta.clone();
        for entry in entries {
            let log_id = entry.get_log_id().clone();
            meta.last_applied = Some(log_id.clone());
            match entry.payload {
                EntryPayload::Blank => responses.push(C::R::default()),
                EntryPayload::Normal(ref data) => responses.push(self.app.apply(&log_id, data, &mut writes)),
                EntryPayload::Membership(ref m) => {
                    meta.last_membership = StoredMembership::new(Some(log_id.clone()), m.clone());
                    responses.push(C::R::default());
                }
            }
        }
        let cf_state = self.db.cf_handle(CF_STATE).expect("state column family exists");
        let cf_meta = self.db.cf_handle(CF_SM_META).expect("sm_meta column family exists");
        let mut batch = WriteBatch::default();
        for (key, value) in writes {
            match value {
                Some(v) => batch.put_cf(cf_state, key, v),
                None => batch.delete_cf(cf_state, key),
            }
        }
        batch.put_cf(cf_meta, KEY_SM_META, encode(&meta).map_err(sm_err)?);
        // Not synced on purpose: the entries are already durable in the log, and RocksDB has
        // one WAL for all column families, so the next synced write (an append, a purge) makes
        // this batch durable too. A crash before that loses only applied state that openraft
        // re-applies from the log on restart; the purge that could drop those entries is itself
        // a later synced write. This saves one fsync per applied batch on every node.
        // If the write fails the app's memory is ahead of the disk; the error is fatal to
        // openraft, which stops the node rather than serve or acknowledge unpersisted state.
        self.db.write(batch).map_err(sm_err)?;
        self.meta = meta;
        self.app.applied(self.meta.last_applied.clone(), &self.meta.last_membership);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        RocksSnapshotBuilder { db: self.db.clone(), snapshot_dir: self.snapshot_dir.clone(), _c: Default::default() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<C::NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<C::NodeId, C::Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<C::NodeId>> {
        let bytes = snapshot.into_inner();
        let mut input = bytes.as_slice();
        let header: SnapshotHeader<C> = SnapshotFile::read_header(&mut input).map_err(snap_err)?;
        if header.last_log_id != meta.last_log_id {
            return Err(snap_err(format!(
                "snapshot body is at {:?} but its meta says {:?}",
                header.last_log_id, meta.last_log_id
            )));
        }
        let cf_state = self.db.cf_handle(CF_STATE).expect("state column family exists");
        let cf_meta = self.db.cf_handle(CF_SM_META).expect("sm_meta column family exists");
        // One batch replaces everything: the old records, the new records and the metadata, so
        // a crash mid-install leaves either the old state or the new one, never a mix.
        let mut batch = WriteBatch::default();
        for item in self.db.iterator_cf(cf_state, IteratorMode::Start) {
            let (key, _) = item.map_err(snap_err)?;
            batch.delete_cf(cf_state, key);
        }
        while let Some((key, value)) = SnapshotFile::read_record(&mut input).map_err(snap_err)? {
            batch.put_cf(cf_state, key, value);
        }
        let new_meta =
            SmMeta::<C> { last_applied: meta.last_log_id.clone(), last_membership: meta.last_membership.clone() };
        batch.put_cf(cf_meta, KEY_SM_META, encode(&new_meta).map_err(snap_err)?);
        self.db.write_opt(batch, &synced()).map_err(snap_err)?;
        persist_snapshot_file(&self.snapshot_dir, &bytes)?;
        restore_app(&self.db, &mut self.app)?;
        self.meta = new_meta;
        self.app.applied(self.meta.last_applied.clone(), &self.meta.last_membership);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<C>>, StorageError<C::NodeId>> {
        let bytes = match std::fs::read(self.snapshot_path()) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageIOError::read_snapshot(None, AnyError::new(&e)).into()),
        };
        let header: SnapshotHeader<C> = SnapshotFile::read_header(&mut bytes.as_slice())
            .map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)))?;
        Ok(Some(Snapshot {
            meta: SnapshotMeta {
                last_log_id: header.last_log_id,
                last_membership: header.last_membership,
                snapshot_id: header.snapshot_id,
            },
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
