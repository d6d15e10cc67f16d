//! Opening the one RocksDB instance a node uses, with its column families.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, Options, ReadOptions, WriteBufferManager, DB};

/// Raft metadata: vote, committed log id, last purged log id.
pub const CF_META: &str = "meta";
/// Raft log entries, keyed by big-endian index so that key order is log order.
pub const CF_LOG: &str = "log";
/// State machine metadata: last applied log id and last membership, written in the same batch
/// as the records they describe.
pub const CF_SM_META: &str = "sm_meta";
/// The application's records (see [`crate::StateApp`]).
pub const CF_STATE: &str = "state";

#[derive(Debug, thiserror::Error)]
#[error("cannot open RocksDB at {path}: {source}")]
pub struct StorageOpenError {
    path: String,
    #[source]
    source: rocksdb::Error,
}

/// Memtable size per column family. RocksDB's default (64 MiB, two of them) is sized for
/// databases that take heavy write streams; raftgate's writes are small and the node keeps its
/// state in memory anyway, so 16 MiB keeps the resident set down (measured at 1M keys).
const WRITE_BUFFER_LEN: usize = 16 * 1024 * 1024;

/// One block cache for every column family. RocksDB's default is a cache per column family;
/// raftgate reads its records from memory, and the log's recent entries sit in memtables, so a
/// small shared cache does (full scans bypass it: see [`scan_options`]).
const BLOCK_CACHE_LEN: usize = 8 * 1024 * 1024;
/// All memtables together; past this RocksDB flushes the largest early.
const WRITE_BUFFERS_TOTAL_LEN: usize = 64 * 1024 * 1024;

fn cf_options(cache: &Cache, buffers: &WriteBufferManager) -> Options {
    let mut o = Options::default();
    o.set_write_buffer_size(WRITE_BUFFER_LEN);
    o.set_max_write_buffer_number(2);
    o.set_write_buffer_manager(buffers);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    o.set_block_based_table_factory(&table);
    o
}

/// Read options for scans of a whole column family (snapshot build, state restore): their
/// blocks are read once and must not push everything else out of the block cache, nor grow it.
pub fn scan_options() -> ReadOptions {
    let mut r = ReadOptions::default();
    r.fill_cache(false);
    r
}

/// Opens (or creates) the database under `dir`.
pub fn open(dir: &Path) -> Result<Arc<DB>, StorageOpenError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // Bounded resources: a gateway node shares its 2 cores with the data plane.
    opts.set_max_background_jobs(2);
    opts.set_keep_log_file_num(4);
    let cache = Cache::new_lru_cache(BLOCK_CACHE_LEN);
    let buffers = WriteBufferManager::new_write_buffer_manager(WRITE_BUFFERS_TOTAL_LEN, false);
    opts.set_write_buffer_manager(&buffers);
    let cfs = [CF_META, CF_LOG, CF_SM_META, CF_STATE]
        .into_iter()
        .map(|name| ColumnFamilyDescriptor::new(name, cf_options(&cache, &buffers)));
    DB::open_cf_descriptors(&opts, dir, cfs)
        .map(Arc::new)
        .map_err(|source| StorageOpenError { path: dir.display().to_string(), source })
}
