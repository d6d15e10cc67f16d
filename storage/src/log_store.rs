//! The Raft log store: entries, vote, committed and purged log ids in RocksDB.
//!
//! Durability rule: every method that openraft relies on for safety (`save_vote`, `append`,
//! `truncate`, `purge`) writes with `sync = true` and only then returns or calls back.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, LogId, OptionalSend, RaftLogId, RaftTypeConfig, StorageError, StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::{de::DeserializeOwned, Serialize};

use crate::codec::{decode, encode};
use crate::db::{CF_LOG, CF_META};
use crate::faults::{self, Point};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// One past the largest 8-byte log key, so that a range delete can include index `u64::MAX`.
const LOG_KEY_END: &[u8] = &[0xff; 9];

/// A cheap handle on the shared database; clones share it, which is how the log reader works.
pub struct RocksLogStore<C: RaftTypeConfig> {
    /// The node's one database, shared with the state machine store.
    db: Arc<DB>,
    /// The committed index as last saved (or read at startup), for metrics: openraft 0.9's
    /// metrics do not carry it.
    committed: Arc<AtomicU64>,
    _c: PhantomData<C>,
}

impl<C: RaftTypeConfig> Clone for RocksLogStore<C> {
    fn clone(&self) -> Self {
        Self { db: self.db.clone(), committed: self.committed.clone(), _c: PhantomData }
    }
}

fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn synced() -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    opts
}

impl<C: RaftTypeConfig> RocksLogStore<C>
where
    C::Entry: Serialize + DeserializeOwned,
{
    pub fn new(db: Arc<DB>) -> Self {
        Self { db, committed: Arc::default(), _c: PhantomData }
    }

    /// The committed log index this store last saved: a handle that follows it.
    pub fn committed_index(&self) -> Arc<AtomicU64> {
        self.committed.clone()
    }

    fn cf_log(&self) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(CF_LOG).expect("column family `log` is created by storage::open")
    }

    fn cf_meta(&self) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(CF_META).expect("column family `meta` is created by storage::open")
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError<C::NodeId>> {
        let bytes = self.db.get_cf(self.cf_meta(), key).map_err(|e| StorageIOError::read(AnyError::new(&e)))?;
        match bytes {
            None => Ok(None),
            Some(b) => decode(&b).map(Some).map_err(|e| StorageIOError::read(AnyError::new(&e)).into()),
        }
    }

    fn put_meta_synced<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        point: Point,
        err: fn(AnyError) -> StorageIOError<C::NodeId>,
    ) -> Result<(), StorageError<C::NodeId>> {
        let bytes = encode(value).map_err(|e| err(AnyError::new(&e)))?;
        faults::before(point).map_err(|e| err(AnyError::new(&e)))?;
        self.db.put_cf_opt(self.cf_meta(), key, bytes, &synced()).map_err(|e| err(AnyError::new(&e)))?;
        faults::after(point);
        Ok(())
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        let mut iter = self.db.iterator_cf(self.cf_log(), IteratorMode::End);
        match iter.next() {
            None => Ok(None),
            Some(Err(e)) => Err(StorageIOError::read_logs(AnyError::new(&e)).into()),
            Some(Ok((_, value))) => {
                let entry: C::Entry = decode(&value).map_err(|e| StorageIOError::read_logs(AnyError::new(&e)))?;
                Ok(Some(entry.get_log_id().clone()))
            }
        }
    }
}

impl<C: RaftTypeConfig> RaftLogReader<C> for RocksLogStore<C>
where
    C::Entry: Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let from = log_key(start);
        let mut entries = Vec::new();
        for item in self.db.iterator_cf(self.cf_log(), IteratorMode::From(&from, Direction::Forward)) {
            let (key, value) = item.map_err(|e| StorageIOError::read_logs(AnyError::new(&e)))?;
            let index = u64::from_be_bytes(key.as_ref().try_into().map_err(|_| {
                StorageIOError::read_logs(AnyError::error(format!("log key of {} bytes, want 8", key.len())))
            })?);
            if !range.contains(&index) {
                break;
            }
            entries.push(decode(&value).map_err(|e| StorageIOError::read_log_at_index(index, AnyError::new(&e)))?);
        }
        Ok(entries)
    }
}

impl<C: RaftTypeConfig> RaftLogStorage<C> for RocksLogStore<C>
where
    C::Entry: Serialize + DeserializeOwned,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<C::NodeId>> {
        let last_purged_log_id: Option<LogId<C::NodeId>> = self.get_meta(KEY_LAST_PURGED)?;
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id.clone());
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        self.put_meta_synced(KEY_VOTE, vote, Point::Vote, StorageIOError::write_vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<C::NodeId>>) -> Result<(), StorageError<C::NodeId>> {
        // Synced like the rest: it is one small write per commit advance, and a committed id that
        // survives a crash lets the node re-apply up to it at once on restart.
        self.put_meta_synced(KEY_COMMITTED, &committed, Point::Committed, StorageIOError::write)?;
        self.committed.store(committed.as_ref().map_or(0, |c| c.index), Ordering::Relaxed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        let committed = self.get_meta::<Option<LogId<C::NodeId>>>(KEY_COMMITTED)?.flatten();
        self.committed.store(committed.as_ref().map_or(0, |c| c.index), Ordering::Relaxed);
        Ok(committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        for entry in entries {
            let index = entry.get_log_id().index;
            let bytes = encode(&entry).map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
            batch.put_cf(self.cf_log(), log_key(index), bytes);
        }
        let result = faults::before(Point::Append)
            .and_then(|()| self.db.write_opt(batch, &synced()).map_err(|e| std::io::Error::other(e.to_string())));
        if result.is_ok() {
            faults::after(Point::Append);
        }
        // openraft is told the entries are durable only after the synced write returned.
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = StorageIOError::write_logs(AnyError::new(&e)).into();
                callback.log_io_completed(Err(e));
                Err(err)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf_log(), &log_key(log_id.index)[..], LOG_KEY_END);
        faults::before(Point::Truncate).map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
        self.db.write_opt(batch, &synced()).map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
        faults::after(Point::Truncate);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        // Persist the purge point first: a crash between the two writes leaves entries that are
        // already below `last_purged`, which is harmless, never a hole openraft does not know of.
        self.put_meta_synced(KEY_LAST_PURGED, &log_id, Point::Purge, StorageIOError::write_logs)?;
        let mut batch = WriteBatch::default();
        match log_id.index.checked_add(1) {
            Some(end) => batch.delete_range_cf(self.cf_log(), &log_key(0)[..], &log_key(end)[..]),
            None => batch.delete_range_cf(self.cf_log(), &log_key(0)[..], LOG_KEY_END),
        }
        faults::before(Point::Purge).map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
        self.db.write_opt(batch, &synced()).map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
        Ok(())
    }
}
