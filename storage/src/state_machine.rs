//! The state machine store: applies committed entries through a [`StateApp`] and persists the
//! app's record writes in one synced batch together with `last_applied` and the membership.

use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, SeekFrom};
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
use crate::faults::{self, Point};
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
/// The latest snapshot, built here or received from the leader. Replaced by rename, so a reader
/// holding the old file (a transfer to a follower in flight) keeps reading the old one.
const SNAPSHOT_FILE: &str = "snapshot.bin";
/// A snapshot being built (`.build`), received (`.recv.N`) or copied (`.copy`); leftovers of a
/// crash are removed at startup.
const SNAPSHOT_TMP_PREFIX: &str = "snapshot.bin.";

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
    /// Counter naming the files snapshots are received into, one per transfer.
    receiving: u64,
}

/// Removes snapshot files a crash left half-written or half-received.
fn remove_partial_snapshots(dir: &Path, prefix: &str) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

impl<C, A> RocksStateMachine<C, A>
where
    C: RaftTypeConfig<SnapshotData = tokio::fs::File>,
    C::R: Default,
    A: StateApp<C>,
{
    /// Loads the persisted state into `app` and returns the store.
    pub fn open(db: Arc<DB>, snapshot_dir: &Path, mut app: A) -> Result<Self, StorageError<C::NodeId>> {
        remove_partial_snapshots(snapshot_dir, SNAPSHOT_TMP_PREFIX).map_err(sm_err)?;
        let cf_meta = db.cf_handle(CF_SM_META).expect("sm_meta column family exists");
        let meta: SmMeta<C> = match db.get_cf(cf_meta, KEY_SM_META).map_err(sm_err)? {
            Some(bytes) => decode(&bytes).map_err(sm_err)?,
            None => SmMeta::default(),
        };
        restore_app(&db, &mut app)?;
        app.applied(meta.last_applied.clone(), &meta.last_membership);
        Ok(Self { db, snapshot_dir: snapshot_dir.to_path_buf(), app, meta, receiving: 0 })
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
    let mut iter =
        db.iterator_cf_opt(cf_state, crate::db::scan_options(), IteratorMode::Start).map_while(|item| match item {
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
    C: RaftTypeConfig<SnapshotData = tokio::fs::File>,
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
    C: RaftTypeConfig<SnapshotData = tokio::fs::File>,
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
    // Streamed to a temp file: memory stays flat however large the state is.
    let tmp = dir.join(format!("{SNAPSHOT_TMP_PREFIX}build"));
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(snap_err)?);
    SnapshotFile::write_header(&mut out, &header).map_err(snap_err)?;
    for item in view.iterator_cf_opt(cf_state, crate::db::scan_options(), IteratorMode::Start) {
        let (key, value) = item.map_err(snap_err)?;
        SnapshotFile::write_record(&mut out, &key, &value).map_err(snap_err)?;
    }
    SnapshotFile::write_end(&mut out).map_err(snap_err)?;
    let file = out.into_inner().map_err(snap_err)?;
    file.sync_all().map_err(snap_err)?;
    drop(file);
    let path = publish_snapshot_file(dir, &tmp)?;
    let file = File::open(path).map_err(snap_err)?;
    Ok(Snapshot {
        meta: SnapshotMeta { last_log_id: meta.last_applied, last_membership: meta.last_membership, snapshot_id },
        snapshot: Box::new(tokio::fs::File::from_std(file)),
    })
}

/// Makes a complete, synced snapshot file the current one: rename over the old one, then fsync
/// the directory so the rename survives a crash.
fn publish_snapshot_file<NID: openraft::NodeId>(dir: &Path, complete: &Path) -> Result<PathBuf, StorageError<NID>> {
    let path = dir.join(SNAPSHOT_FILE);
    std::fs::rename(complete, &path).map_err(snap_err)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(snap_err)?;
    Ok(path)
}

/// Publishes a received (and synced) snapshot as the current one: by rename when its file is
/// found in the data dir (by inode), else by copying from the handle.
fn keep_received_snapshot<NID: openraft::NodeId>(dir: &Path, received: &mut File) -> Result<(), StorageError<NID>> {
    use std::os::unix::fs::MetadataExt;
    let ino = received.metadata().map_err(snap_err)?.ino();
    for entry in std::fs::read_dir(dir).map_err(snap_err)? {
        let entry = entry.map_err(snap_err)?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(SNAPSHOT_TMP_PREFIX) && entry.metadata().map_err(snap_err)?.ino() == ino {
            publish_snapshot_file(dir, &entry.path())?;
            return Ok(());
        }
    }
    let tmp = dir.join(format!("{SNAPSHOT_TMP_PREFIX}copy"));
    let mut out = File::create(&tmp).map_err(snap_err)?;
    received.seek(SeekFrom::Start(0)).map_err(snap_err)?;
    std::io::copy(received, &mut out).map_err(snap_err)?;
    out.sync_all().map_err(snap_err)?;
    publish_snapshot_file(dir, &tmp)?;
    Ok(())
}

/// Builds the one write batch that replaces the whole state with a snapshot's records: a
/// range delete of every old record, the new records, the new metadata. Reads the snapshot as
/// a stream; returns the batch and the snapshot's header.
fn snapshot_batch<C: RaftTypeConfig>(
    db: &DB,
    file: &mut File,
    new_meta: &SmMeta<C>,
) -> Result<(WriteBatch, SnapshotHeader<C>), StorageError<C::NodeId>> {
    let cf_state = db.cf_handle(CF_STATE).expect("state column family exists");
    let cf_meta = db.cf_handle(CF_SM_META).expect("sm_meta column family exists");
    file.seek(SeekFrom::Start(0)).map_err(snap_err)?;
    let mut input = BufReader::with_capacity(1 << 20, file);
    let header: SnapshotHeader<C> = SnapshotFile::read_header(&mut input).map_err(snap_err)?;
    let mut batch = WriteBatch::default();
    // One range tombstone removes every old record: record keys are UTF-8 text, so all of them
    // sort below 0xff; any key at or above it (none are written) is deleted one by one.
    batch.delete_range_cf(cf_state, &[][..], &[0xffu8][..]);
    for item in db.iterator_cf(cf_state, IteratorMode::From(&[0xff], rocksdb::Direction::Forward)) {
        let (key, _) = item.map_err(snap_err)?;
        batch.delete_cf(cf_state, key);
    }
    while let Some((key, value)) = SnapshotFile::read_record(&mut input).map_err(snap_err)? {
        batch.put_cf(cf_state, key, value);
    }
    batch.put_cf(cf_meta, KEY_SM_META, encode(new_meta).map_err(snap_err)?);
    Ok((batch, header))
}

impl<C, A> RaftStateMachine<C> for RocksStateMachine<C, A>
where
    C: RaftTypeConfig<SnapshotData = tokio::fs::File, Entry = openraft::Entry<C>>,
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
        faults::before(Point::Apply).map_err(sm_err)?;
        self.db.write(batch).map_err(sm_err)?;
        faults::after(Point::Apply);
        self.meta = meta;
        self.app.applied(self.meta.last_applied.clone(), &self.meta.last_membership);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        RocksSnapshotBuilder { db: self.db.clone(), snapshot_dir: self.snapshot_dir.clone(), _c: Default::default() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError<C::NodeId>> {
        // A new transfer supersedes any earlier one (openraft streams one at a time); a file
        // per transfer means an abandoned transfer's handle never writes into the new one.
        remove_partial_snapshots(&self.snapshot_dir, &format!("{SNAPSHOT_TMP_PREFIX}recv.")).map_err(snap_err)?;
        self.receiving += 1;
        let path = self.snapshot_dir.join(format!("{SNAPSHOT_TMP_PREFIX}recv.{}", self.receiving));
        // Read and write: install_snapshot reads back what the transfer wrote.
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(snap_err)?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<C::NodeId, C::Node>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<C::NodeId>> {
        let mut received = snapshot.into_std().await;
        let new_meta =
            SmMeta::<C> { last_applied: meta.last_log_id.clone(), last_membership: meta.last_membership.clone() };
        let db = self.db.clone();
        let dir = self.snapshot_dir.clone();
        let expected = meta.last_log_id.clone();
        let batch_meta = new_meta.clone();
        // Reading, the batch and the synced writes block; keep them off the async workers.
        tokio::task::spawn_blocking(move || -> Result<(), StorageError<C::NodeId>> {
            received.sync_all().map_err(snap_err)?;
            let (batch, header) = snapshot_batch::<C>(&db, &mut received, &batch_meta)?;
            if header.last_log_id != expected {
                return Err(snap_err(format!(
                    "snapshot body is at {:?} but its meta says {:?}",
                    header.last_log_id, expected
                )));
            }
            // One batch replaces everything: the old records, the new records and the
            // metadata, so a crash mid-install leaves either the old state or the new one.
            faults::before(Point::Install).map_err(snap_err)?;
            db.write_opt(batch, &synced()).map_err(snap_err)?;
            faults::after(Point::Install);
            // The received file becomes this node's current snapshot, to send on if it leads.
            keep_received_snapshot(&dir, &mut received)
        })
        .await
        .map_err(snap_err)??;
        restore_app(&self.db, &mut self.app)?;
        self.meta = new_meta;
        self.app.applied(self.meta.last_applied.clone(), &self.meta.last_membership);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<C>>, StorageError<C::NodeId>> {
        let mut file = match File::open(self.snapshot_path()) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageIOError::read_snapshot(None, AnyError::new(&e)).into()),
        };
        let header: SnapshotHeader<C> = SnapshotFile::read_header(&mut BufReader::new(&mut file))
            .map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)))?;
        file.seek(SeekFrom::Start(0)).map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)))?;
        Ok(Some(Snapshot {
            meta: SnapshotMeta {
                last_log_id: header.last_log_id,
                last_membership: header.last_membership,
                snapshot_id: header.snapshot_id,
            },
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}
