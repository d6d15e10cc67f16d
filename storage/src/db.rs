//! Opening the one RocksDB instance a node uses, with its column families.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

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

fn cf_options() -> Options {
    let mut o = Options::default();
    o.set_write_buffer_size(WRITE_BUFFER_LEN);
    o.set_max_write_buffer_number(2);
    o
}

/// Opens (or creates) the database under `dir`.
pub fn open(dir: &Path) -> Result<Arc<DB>, StorageOpenError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // Bounded resources: a gateway node shares its 2 cores with the data plane.
    opts.set_max_background_jobs(2);
    opts.set_keep_log_file_num(4);
    let cfs =
        [CF_META, CF_LOG, CF_SM_META, CF_STATE].into_iter().map(|name| ColumnFamilyDescriptor::new(name, cf_options()));
    DB::open_cf_descriptors(&opts, dir, cfs)
        .map(Arc::new)
        .map_err(|source| StorageOpenError { path: dir.display().to_string(), source })
}
