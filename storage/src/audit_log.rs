//! A per-node append-only log with a hash chain, in its own RocksDB instance.
//!
//! Record `n` has the hash `hash_n = SHA-256(hash_{n-1} ‖ n ‖ body_n)` (with `hash_0` all
//! zeros) and the head `(n, hash_n)` is written in the same batch as the record. Editing any
//! byte of a record breaks its hash or its successor's; removing records from the end leaves
//! the head pointing past the last record. [`AuditLog::verify`] checks all of it.
//!
//! Entries: each append is stored as one entry, a group of consecutive records (version 3,
//! [`GROUP_V3`]) under the number of its first record: the records' hashes, then their bodies
//! compressed together with LZ4. The audit writer appends a batch of events at a time (5 ms of
//! them), so one RocksDB write, one memtable entry and one key stand for a batch, and the
//! bodies of a batch, which repeat each other's routes, consumers, keys and paths, compress to
//! a fraction of their size. Stored per event, RocksDB's work and bytes were most of the audit
//! writer's cost (docs/benchmarks.md, sessions 18 and 19).
//!
//! Entries written before that hold one record each: its hash and body (version 2,
//! [`RECORD_V2`]), or also a copy of the previous record's hash (version 1). They are still
//! read, and a store may hold all three, older entries first. The copy told a record that does
//! not link to its predecessor from one edited in place; without it a break is named by the
//! first record that does not hash from the one before it (see [`follows`]).
//!
//! Retention removes records from the front ([`AuditLog::prune_through`]) and keeps the number
//! and hash of the last one removed as the chain's base, in the same batch: the records kept
//! still verify from there, and the first of them must link to the base. A group that the cut
//! falls inside is written again holding the records kept, under the first one's number, so
//! that an entry never holds records at or before the base.
//!
//! Layout: the entries are the default column family's only keys (8-byte big-endian numbers),
//! and the head, the base and the witnessed heads are in the column family `meta`, written in
//! the same atomic batches. So each flushed file holds a run of numbers above every earlier
//! file's, and RocksDB moves full files down the levels instead of rewriting them. With the head
//! among the records (the earlier layout, moved to `meta` on open) every file spanned from its
//! first record to the head's key, all files overlapped, and each compaction rewrote four
//! flushed files and the newest compacted one, about 250 MB (docs/benchmarks.md, session 15).
//! The two families flush together (`atomic_flush`), so the small `meta` never holds back the
//! removal of a write-ahead log file.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rocksdb::{ColumnFamily, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec::{decode, decode_body, encode, split_version, CodecError};

/// The column family of the head, the base and the witnessed heads (see the module's docs).
const CF_META: &str = "meta";
const KEY_HEAD: &[u8] = b"\xffhead";
/// Where the chain starts once old records have been pruned (retention): the number and hash
/// of the last record removed. Absent: nothing pruned, the chain starts at record 1 after an
/// all-zero hash.
const KEY_BASE: &[u8] = b"\xffbase";
/// Heads of other nodes' chains that this node has witnessed: `\xfewitness/` and the node id
/// (8 bytes, big-endian).
const KEY_WITNESS: &[u8] = b"\xfewitness/";
/// At most this long between fsyncs of the audit log: a process crash loses nothing (RocksDB's
/// WAL is written per batch), a machine crash at most this much.
const SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// The version byte of a single record holding its hash and body (written before session 19,
/// still read). Version 1 ([`crate::codec::FORMAT_VERSION`]) also held the previous record's
/// hash, 32 of a typical record's 180 or so bytes, which every write, flush and disk then
/// carried for nothing: the chain is checked against the previous record itself.
const RECORD_V2: u8 = 2;

/// The version byte of the entries written today: a group of consecutive records.
///
/// ```text
/// 3 | count: u32 LE | count × hash (32 bytes) | raw length: u32 LE | LZ4 block
/// ```
///
/// The LZ4 block (the block format, no frame) decompresses to `raw length` bytes: each body in
/// turn, as its length (LEB128) and its bytes. The entry's key is its first record's number;
/// the others follow it without gaps.
const GROUP_V3: u8 = 3;
/// An append is split into groups of at most this many records...
const GROUP_RECORDS_MAX: usize = 4096;
/// ...and a group is closed once its bodies reach this many bytes, so that reading one record
/// (retention's bisection, a witnessed head) never decompresses much more than this.
const GROUP_RAW_BYTES_MAX: usize = 1 << 20;
/// A group whose stated raw length is above this is unreadable, whatever it holds: a damaged
/// length must not allocate gigabytes. (A single body longer than that is stored whole; none
/// comes near it, an event being bounded by the proxy's URI limit.)
const GROUP_RAW_LEN_LIMIT: usize = 64 << 20;

/// A record as version 1 stored it (still read).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RecordV1 {
    prev_hash: [u8; 32],
    hash: [u8; 32],
    body: Vec<u8>,
}

/// A record as [`RECORD_V2`] stores it (still read).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RecordV2 {
    hash: [u8; 32],
    body: Vec<u8>,
}

/// A record as read, of any version.
#[derive(Debug, Clone)]
struct Record {
    /// The previous record's hash as the record holds it (version 1 only).
    prev_hash: Option<[u8; 32]>,
    hash: [u8; 32],
    body: Vec<u8>,
}

impl Record {
    /// Encoded as a single record in the version it was read in (for the tamper helpers,
    /// which edit in place). Version 2 goes through [`write_record`].
    fn encode(&self) -> Result<Vec<u8>, CodecError> {
        match self.prev_hash {
            Some(prev_hash) => encode(&RecordV1 { prev_hash, hash: self.hash, body: self.body.clone() }),
            None => {
                let mut out = Vec::with_capacity(64 + self.body.len());
                write_record(&mut out, &self.hash, &self.body);
                Ok(out)
            }
        }
    }
}

/// The records of a stored entry, in order: one for versions 1 and 2, a group for version 3.
fn decode_entry(bytes: &[u8]) -> Result<Vec<Record>, CodecError> {
    match split_version(bytes)? {
        (crate::codec::FORMAT_VERSION, rest) => {
            let r: RecordV1 = decode_body(rest)?;
            Ok(vec![Record { prev_hash: Some(r.prev_hash), hash: r.hash, body: r.body }])
        }
        (RECORD_V2, rest) => {
            let r: RecordV2 = decode_body(rest)?;
            Ok(vec![Record { prev_hash: None, hash: r.hash, body: r.body }])
        }
        (GROUP_V3, rest) => decode_group(rest),
        (found, _) => Err(CodecError::UnknownVersion { found, newest: GROUP_V3 }),
    }
}

/// The records of a [`GROUP_V3`] entry (the bytes after its version byte).
fn decode_group(rest: &[u8]) -> Result<Vec<Record>, CodecError> {
    let malformed = CodecError::Malformed;
    let (count, rest) = split_u32(rest).ok_or(malformed("group: no record count"))?;
    let count = count as usize;
    let hashes_len = count.checked_mul(32).filter(|&n| count > 0 && n <= rest.len());
    let (hashes, rest) = rest.split_at(hashes_len.ok_or(malformed("group: record count does not fit the entry"))?);
    let (raw_len, compressed) = split_u32(rest).ok_or(malformed("group: no raw length"))?;
    let raw_len = raw_len as usize;
    // LZ4 expands at most about 255 times; a longer stated length is damage, not data.
    if raw_len > GROUP_RAW_LEN_LIMIT || raw_len > compressed.len().saturating_mul(255) {
        return Err(malformed("group: raw length out of range"));
    }
    let mut raw = vec![0; raw_len];
    match lz4_flex::block::decompress_into(compressed, &mut raw) {
        Ok(n) if n == raw_len => {}
        _ => return Err(malformed("group: the bodies do not decompress to their stated length")),
    }
    let mut records = Vec::with_capacity(count);
    let mut at = &raw[..];
    for hash in hashes.chunks_exact(32) {
        let (len, rest) = read_leb128(at).ok_or(malformed("group: a body's length"))?;
        let body =
            usize::try_from(len).ok().and_then(|len| rest.get(..len)).ok_or(malformed("group: a body overruns"))?;
        at = &rest[body.len()..];
        records.push(Record { prev_hash: None, hash: hash.try_into().expect("32 bytes"), body: body.to_vec() });
    }
    if !at.is_empty() {
        return Err(CodecError::Trailing { trailing: at.len() });
    }
    Ok(records)
}

fn split_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (n, rest) = bytes.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*n), rest))
}

fn write_leb128(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn read_leb128(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut n = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((n, &bytes[i + 1..]));
        }
    }
    None
}

/// A [`GROUP_V3`] entry under construction: the records are added one at a time, hashes
/// straight into the entry and bodies into `raw`, and [`GroupWriter::finish`] compresses the
/// bodies after the hashes. Both buffers are kept from one append to the next.
#[derive(Default)]
struct GroupWriter {
    entry: Vec<u8>,
    raw: Vec<u8>,
    count: u32,
}

impl GroupWriter {
    fn start(&mut self) {
        self.entry.clear();
        self.raw.clear();
        self.count = 0;
        self.entry.push(GROUP_V3);
        self.entry.extend_from_slice(&[0; 4]);
    }

    fn push(&mut self, hash: &[u8; 32], body: &[u8]) {
        self.entry.extend_from_slice(hash);
        write_leb128(&mut self.raw, body.len() as u64);
        self.raw.extend_from_slice(body);
        self.count += 1;
    }

    fn is_full(&self) -> bool {
        self.count as usize >= GROUP_RECORDS_MAX || self.raw.len() >= GROUP_RAW_BYTES_MAX
    }

    /// The entry, complete.
    fn finish(&mut self) -> Result<&[u8], AuditError> {
        if self.raw.len() > GROUP_RAW_LEN_LIMIT {
            // Written, it would read back as damaged: refused here instead, and retried and
            // counted by the writer like any failed write.
            return Err(AuditError::Compress(format!(
                "{} bytes of bodies in one group, above the {GROUP_RAW_LEN_LIMIT} a group may hold",
                self.raw.len()
            )));
        }
        self.entry[1..5].copy_from_slice(&self.count.to_le_bytes());
        self.entry.extend_from_slice(&(self.raw.len() as u32).to_le_bytes());
        let start = self.entry.len();
        self.entry.resize(start + lz4_flex::block::get_maximum_output_size(self.raw.len()), 0);
        let n = lz4_flex::block::compress_into(&self.raw, &mut self.entry[start..])
            .map_err(|e| AuditError::Compress(e.to_string()))?;
        self.entry.truncate(start + n);
        Ok(&self.entry)
    }
}

/// One [`GROUP_V3`] entry holding `records` (for rewriting part of a group: retention's cut,
/// the tamper helpers).
fn encode_group(records: &[Record]) -> Result<Vec<u8>, AuditError> {
    let mut g = GroupWriter::default();
    g.start();
    for r in records {
        g.push(&r.hash, &r.body);
    }
    g.finish()?;
    Ok(g.entry)
}

/// Appends what version 2 stored for a record to `out`: the bytes
/// `encode_versioned(RECORD_V2, &RecordV2 { .. })` would give (checked by a test for lengths
/// around every step of bincode's length prefix), written directly: the version byte, the
/// hash, the body's length as bincode's varint, the body.
fn write_record(out: &mut Vec<u8>, hash: &[u8; 32], body: &[u8]) {
    out.push(RECORD_V2);
    out.extend_from_slice(hash);
    crate::codec::put_bytes(out, body);
}

/// The head of a chain: its last record's number and hash (`seq` 0: an empty chain).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit store: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("audit store: {0}")]
    Codec(#[from] CodecError),
    #[error("audit store: {0}")]
    Io(#[from] std::io::Error),
    #[error("audit store: compressing a group of records: {0}")]
    Compress(String),
}

/// Where and how a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("record {seq}: its hash does not match its content (edited, or the record before it rewritten)")]
    Hash { seq: u64 },
    #[error("record {seq}: it does not link to record {prev} (edited or removed)")]
    Link { seq: u64, prev: u64 },
    #[error("record {seq} is missing (the sequence jumps from {prev})")]
    Gap { seq: u64, prev: u64 },
    #[error("the head names record {head} but the log ends at {last} (truncated)")]
    Truncated { head: u64, last: u64 },
    #[error("record {seq} cannot be read: {reason}")]
    Unreadable { seq: u64, reason: String },
    #[error("the log ends at record {last} but other nodes witnessed record {witnessed} (truncated, head rewritten)")]
    BehindWitness { witnessed: u64, last: u64 },
    #[error("record {seq} is not the record other nodes witnessed (the chain was rewritten)")]
    Witness { seq: u64 },
}

fn chain(prev: &[u8; 32], seq: u64, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(body);
    h.finalize().into()
}

/// A stored head (or base), or the empty chain's if there is none.
fn head_or_empty(stored: Option<Vec<u8>>) -> Result<Head, AuditError> {
    Ok(match stored {
        Some(b) => decode(&b)?,
        None => Head { seq: 0, hash: [0; 32] },
    })
}

/// The column family of the head, the base and the witnessed heads: `meta`, or the default one
/// in a store opened read-only in the earlier layout.
fn meta_cf(db: &DB) -> &ColumnFamily {
    db.cf_handle(CF_META)
        .or_else(|| db.cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME))
        .expect("the default column family is always open")
}

/// Moves the head, the base and the witnessed heads of a store written in the earlier layout
/// (among the records) to `meta`, in one synced batch; nothing if there are none.
fn move_meta_out_of_records(db: &DB) -> Result<(), AuditError> {
    let meta = meta_cf(db);
    let mut batch = WriteBatch::default();
    for key in [KEY_HEAD, KEY_BASE] {
        if let Some(v) = db.get(key)? {
            batch.put_cf(meta, key, v);
            batch.delete(key);
        }
    }
    for item in db.prefix_iterator(KEY_WITNESS) {
        let (k, v) = item?;
        if !k.starts_with(KEY_WITNESS) {
            break;
        }
        batch.put_cf(meta, &k, v);
        batch.delete(&k);
    }
    if !batch.is_empty() {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        db.write_opt(batch, &opts)?;
    }
    Ok(())
}

/// An entry as read: its key (the number of its first record) and its records, or why they
/// cannot be read.
type Entry = (u64, Result<Vec<Record>, CodecError>);

/// A record as read: its number, and the record or why it (its entry) cannot be read.
type Numbered = (u64, Result<Record, CodecError>);

/// An entry as stored: its key and its bytes.
type Stored = (u64, Box<[u8]>);

/// The entries among what an iterator over the default column family yields, as stored.
/// (Entry keys are 8 bytes; a store read in the earlier layout also holds the head, base and
/// witness keys, which sort after them.)
fn stored<'a>(
    iter: impl Iterator<Item = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>> + 'a,
) -> impl Iterator<Item = Result<Stored, AuditError>> + 'a {
    iter.filter_map(|item| match item {
        Err(e) => Some(Err(e.into())),
        Ok((k, v)) => <[u8; 8]>::try_from(k.as_ref()).ok().map(|key| Ok((u64::from_be_bytes(key), v))),
    })
}

/// As [`stored`], each entry decoded.
fn entries<'a>(
    iter: impl Iterator<Item = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>> + 'a,
) -> impl Iterator<Item = Result<Entry, AuditError>> + 'a {
    stored(iter).map(|item| item.map(|(first, v)| (first, decode_entry(&v))))
}

/// The number of the last record of an entry that could be read (its key if it could not).
fn last_in(entry: &Entry) -> u64 {
    match entry {
        (first, Ok(recs)) => first + recs.len() as u64 - 1,
        (first, Err(_)) => *first,
    }
}

/// The entries from the one holding record `base + 1` on, in `snap`: normally the first
/// entry after the base, since retention never leaves an entry holding records at or before
/// it; but a base moved by hand may point inside an entry, and then the walk starts there.
fn entries_after<'a>(
    snap: &'a rocksdb::Snapshot<'a>,
    base: Head,
) -> Result<impl Iterator<Item = Result<Entry, AuditError>> + 'a, AuditError> {
    let after = base.seq + 1;
    let before = entries(snap.iterator(IteratorMode::From(&after.to_be_bytes(), Direction::Reverse))).next();
    let start = match before.transpose()? {
        Some(entry) if last_in(&entry) >= after => entry.0,
        _ => after,
    };
    Ok(entries(snap.iterator(IteratorMode::From(&start.to_be_bytes(), Direction::Forward))))
}

/// The records after `base` in `snap`, in order: each one's number, and the record or why it
/// cannot be read (an entry that cannot be read is reported once, under its key).
fn records_after<'a>(
    snap: &'a rocksdb::Snapshot<'a>,
    base: Head,
) -> Result<impl Iterator<Item = Result<Numbered, AuditError>> + 'a, AuditError> {
    Ok(entries_after(snap, base)?.flat_map(move |item| -> Vec<Result<Numbered, AuditError>> {
        match item {
            Err(e) => vec![Err(e)],
            Ok((first, Err(e))) => vec![Ok((first, Err(e)))],
            Ok((first, Ok(recs))) => {
                (first..).zip(recs).filter(|(n, _)| *n > base.seq).map(|(n, rec)| Ok((n, Ok(rec)))).collect()
            }
        }
    }))
}

/// Checks that record `seq` follows `prev`: the next number, and hashing from `prev`'s hash to
/// what it holds. Its head if so. `prev` is the chain's base when `from_base` is set.
///
/// Where the record's hash does not match, the break names this record (`Hash`): it was
/// edited, or the record before it was replaced by one whose hash was recomputed to pass, the
/// one case where the break shows a record late. Right after a base, whose record is gone, the
/// base may be what was altered, so there the break is `Link`. A version-1 record also holds
/// `prev`'s hash, which tells a record that does not link from one edited in place wherever
/// it is.
fn follows(prev: Head, seq: u64, rec: &Record, from_base: bool) -> Result<Head, ChainBreak> {
    if seq != prev.seq + 1 {
        return Err(ChainBreak::Gap { seq: prev.seq + 1, prev: prev.seq });
    }
    if rec.prev_hash.is_some_and(|p| p != prev.hash) {
        return Err(ChainBreak::Link { seq, prev: prev.seq });
    }
    if chain(&prev.hash, seq, &rec.body) != rec.hash {
        return Err(if from_base && rec.prev_hash.is_none() {
            ChainBreak::Link { seq, prev: prev.seq }
        } else {
            ChainBreak::Hash { seq }
        });
    }
    Ok(Head { seq, hash: rec.hash })
}

pub struct AuditLog {
    db: DB,
    /// The chain head, advanced by `append` under this lock, and what `append` reuses.
    appender: Mutex<Appender>,
    /// The head as of the last synced write: what survives a power loss.
    durable: Mutex<Head>,
    /// Held across [`AuditLog::witness`]'s read, compare and write, so that two heads of the
    /// same node arriving at once can never leave the lower one stored.
    witnessing: Mutex<()>,
    /// Held by [`AuditLog::prune_through`], so that two removals never interleave.
    pruning: Mutex<()>,
}

struct Appender {
    head: Head,
    /// When the log was last synced.
    last_sync: Instant,
    group: GroupWriter,
}

impl AuditLog {
    pub fn open(dir: &Path) -> Result<Self, AuditError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_atomic_flush(true);
        opts.set_keep_log_file_num(4);
        let db = DB::open_cf(&opts, dir, [rocksdb::DEFAULT_COLUMN_FAMILY_NAME, CF_META])?;
        move_meta_out_of_records(&db)?;
        Self::with_db(db)
    }

    /// Opens read-only, beside a running node (for `raftgate audit verify`). A store still in
    /// the layout without `meta` (written by an earlier version, not opened since) is read as
    /// it is.
    pub fn open_read_only(dir: &Path) -> Result<Self, AuditError> {
        let opts = Options::default();
        let families = DB::list_cf(&opts, dir)?;
        let open: &[&str] = if families.iter().any(|f| f == CF_META) {
            &[rocksdb::DEFAULT_COLUMN_FAMILY_NAME, CF_META]
        } else {
            &[rocksdb::DEFAULT_COLUMN_FAMILY_NAME]
        };
        let db = DB::open_cf_for_read_only(&opts, dir, open, false)?;
        Self::with_db(db)
    }

    fn with_db(db: DB) -> Result<Self, AuditError> {
        let head = head_or_empty(db.get_cf(meta_cf(&db), KEY_HEAD)?)?;
        // What was read from disk has survived whatever came before.
        Ok(Self {
            db,
            appender: Mutex::new(Appender { head, last_sync: Instant::now(), group: GroupWriter::default() }),
            durable: Mutex::new(head),
            witnessing: Mutex::new(()),
            pruning: Mutex::new(()),
        })
    }

    /// The column family of the head, the base and the witnessed heads ([`meta_cf`]).
    fn meta(&self) -> &ColumnFamily {
        meta_cf(&self.db)
    }

    /// Appends bodies in order, as one entry (several for more than [`GROUP_RECORDS_MAX`]
    /// records or [`GROUP_RAW_BYTES_MAX`] bytes); returns the sequence number of the last one.
    pub fn append<I>(&self, bodies: I) -> Result<u64, AuditError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        crate::faults::before(crate::faults::Point::Audit)?;
        let mut guard = self.appender.lock().expect("audit head lock");
        let a = &mut *guard;
        let mut head = a.head;
        let mut batch = WriteBatch::default();
        let mut first = head.seq + 1;
        a.group.start();
        for body in bodies {
            let body = body.as_ref();
            let seq = head.seq + 1;
            let hash = chain(&head.hash, seq, body);
            a.group.push(&hash, body);
            head = Head { seq, hash };
            if a.group.is_full() {
                batch.put(first.to_be_bytes(), a.group.finish()?);
                a.group.start();
                first = seq + 1;
            }
        }
        if a.group.count > 0 {
            batch.put(first.to_be_bytes(), a.group.finish()?);
        }
        batch.put_cf(self.meta(), KEY_HEAD, encode(&head)?);
        let mut opts = WriteOptions::default();
        let sync = a.last_sync.elapsed() >= SYNC_INTERVAL;
        opts.set_sync(sync);
        self.db.write_opt(batch, &opts)?;
        a.head = head;
        if sync {
            a.last_sync = Instant::now();
            *self.durable.lock().expect("audit durable lock") = head;
        }
        Ok(head.seq)
    }

    /// Where the chain starts: the last record pruned (`seq` 0 and an all-zero hash if none).
    pub fn base(&self) -> Result<Head, AuditError> {
        head_or_empty(self.db.get_cf(self.meta(), KEY_BASE)?)
    }

    /// The stored entry keyed at or nearest before `seq` (the one that holds record `seq`,
    /// if any does): its key and its bytes.
    fn entry_at_or_before(&self, seq: u64) -> Result<Option<Stored>, AuditError> {
        stored(self.db.iterator(IteratorMode::From(&seq.to_be_bytes(), Direction::Reverse))).next().transpose()
    }

    /// Record `seq`, if it is kept.
    fn record(&self, seq: u64) -> Result<Option<Record>, AuditError> {
        Ok(match self.entry_at_or_before(seq)? {
            Some((first, v)) => decode_entry(&v)?.into_iter().nth((seq - first) as usize),
            None => None,
        })
    }

    /// The body of record `seq`, if it is kept.
    pub fn body(&self, seq: u64) -> Result<Option<Vec<u8>>, AuditError> {
        Ok(self.record(seq)?.map(|r| r.body))
    }

    /// Removes the records up to and including `seq` (retention), never the newest one, and
    /// makes the last one removed the chain's base, in one synced batch. Only records that
    /// verify are removed: at a break (an edited, missing or unreadable record) it stops before
    /// it, so retention never removes the evidence. Returns the records removed (first, last),
    /// or `None` if there was nothing to remove. A group the cut falls inside is written again,
    /// in the same batch, holding the records kept.
    ///
    /// `append` goes on meanwhile: records older than the head never change, so the walk over
    /// them (a read and a hash per record, millions of them on a first removal) holds no lock
    /// the writer needs; only removals are serialised, among themselves.
    pub fn prune_through(&self, seq: u64) -> Result<Option<(u64, u64)>, AuditError> {
        let _one_at_a_time = self.pruning.lock().expect("audit pruning lock");
        let base = self.base()?;
        let seq = seq.min(self.last_seq().saturating_sub(1));
        if seq <= base.seq {
            return Ok(None);
        }
        // The records to go, checked as `verify` checks them, up to the first break; the key
        // of the first entry walked; the records kept of the entry the walk stopped inside.
        let mut last = base;
        let mut from = base.seq + 1;
        let mut kept: Option<Vec<Record>> = None;
        let snap = self.db.snapshot();
        'walk: for (i, item) in entries_after(&snap, base)?.enumerate() {
            let (first, recs) = item?;
            if i == 0 {
                from = from.min(first);
            }
            let Ok(mut recs) = recs else { break };
            for (j, rec) in recs.iter().enumerate() {
                let n = first + j as u64;
                if n <= base.seq {
                    continue;
                }
                match Some(rec).filter(|_| n <= seq).and_then(|r| follows(last, n, r, false).ok()) {
                    Some(h) => last = h,
                    None => {
                        if last.seq >= first {
                            kept = Some(recs.split_off(j));
                        }
                        break 'walk;
                    }
                }
            }
        }
        if last.seq == base.seq {
            return Ok(None);
        }
        let mut batch = WriteBatch::default();
        batch.delete_range(from.to_be_bytes(), (last.seq + 1).to_be_bytes());
        if let Some(kept) = kept {
            batch.put((last.seq + 1).to_be_bytes(), encode_group(&kept)?);
        }
        batch.put_cf(self.meta(), KEY_BASE, encode(&last)?);
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        // Hand the space back now rather than whenever compaction reaches those files.
        self.db.compact_range(None::<&[u8]>, Some((last.seq + 1).to_be_bytes()));
        Ok(Some((base.seq + 1, last.seq)))
    }

    pub fn last_seq(&self) -> u64 {
        self.head().seq
    }

    /// The head as of the last append.
    pub fn head(&self) -> Head {
        // Poisoned only by a panic inside `append`, which stops the writer. `head` is set only
        // after a write returned, so it is still the stored chain's head, and the node's
        // metrics (which read it) keep answering, raftgate_audit_writer_up = 0 among them.
        self.appender.lock().unwrap_or_else(std::sync::PoisonError::into_inner).head
    }

    /// The head as of the last append, once it is on disk: syncs the log first if the last
    /// appends were not. This is the head peers witness, so that a power loss (which may take
    /// the last unsynced appends) never leaves a node behind what its peers saw.
    pub fn durable_head(&self) -> Result<Head, AuditError> {
        let head = self.head();
        if *self.durable.lock().expect("audit durable lock") != head {
            // Syncs every write that has returned, `head`'s among them.
            self.db.flush_wal(true)?;
            let mut durable = self.durable.lock().expect("audit durable lock");
            if head.seq > durable.seq {
                *durable = head;
            }
        }
        Ok(*self.durable.lock().expect("audit durable lock"))
    }

    /// Keeps another node's head as witnessed here, unless a later one already is. Returns the
    /// head witnessed before, so that a node whose chain went backwards can be reported.
    pub fn witness(&self, node: u64, head: Head) -> Result<Option<Head>, AuditError> {
        let key = [KEY_WITNESS, &node.to_be_bytes()].concat();
        let _one_at_a_time = self.witnessing.lock().expect("audit witness lock");
        let before: Option<Head> = self.db.get_cf(self.meta(), &key)?.map(|b| decode(&b)).transpose()?;
        if before.is_none_or(|b| head.seq > b.seq) {
            self.db.put_cf(self.meta(), &key, encode(&head)?)?;
        }
        Ok(before)
    }

    /// The latest head of `node`'s chain that this node has witnessed.
    pub fn witnessed(&self, node: u64) -> Result<Option<Head>, AuditError> {
        let key = [KEY_WITNESS, &node.to_be_bytes()].concat();
        Ok(self.db.get_cf(self.meta(), &key)?.map(|b| decode(&b)).transpose()?)
    }

    /// Checks this chain against a head of it that another node witnessed: the record it names
    /// must still be here, with that hash. A chain cut back and given a matching head (which
    /// [`Self::verify`] alone cannot tell from an intact one) fails here.
    pub fn check_witnessed(&self, w: Head) -> Result<Result<(), ChainBreak>, AuditError> {
        // Record 0 is no record; a record pruned by retention can no longer be compared.
        let base = self.base()?;
        if w.seq <= base.seq {
            return Ok(Ok(()));
        }
        let found = self.entry_at_or_before(w.seq)?.map(|(first, v)| (first, decode_entry(&v)));
        Ok(match found {
            Some((first, Ok(recs))) if w.seq - first < recs.len() as u64 => {
                match recs[(w.seq - first) as usize].hash == w.hash {
                    true => Ok(()),
                    false => Err(ChainBreak::Witness { seq: w.seq }),
                }
            }
            Some((first, Err(e))) => Err(ChainBreak::Unreadable { seq: first, reason: e.to_string() }),
            _ => {
                let newest = entries(self.db.iterator(IteratorMode::End)).next().transpose()?;
                Err(ChainBreak::BehindWitness { witnessed: w.seq, last: newest.map_or(base.seq, |e| last_in(&e)) })
            }
        })
    }

    /// Bodies from newest to oldest, while `visit` returns true.
    pub fn scan_newest(&self, mut visit: impl FnMut(u64, &[u8]) -> bool) -> Result<(), AuditError> {
        for item in entries(self.db.iterator(IteratorMode::End)) {
            let (first, recs) = item?;
            for (i, rec) in recs?.iter().enumerate().rev() {
                if !visit(first + i as u64, &rec.body) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Walks the whole chain from its base; `Ok(n)` is the number of records verified.
    ///
    /// Head, base and records are read from one snapshot: on a live node the writer appends
    /// (and retention removes) meanwhile, and a head read before the walk began would not be
    /// where the walk ends.
    pub fn verify(&self) -> Result<Result<u64, ChainBreak>, AuditError> {
        let snap = self.db.snapshot();
        let head = head_or_empty(snap.get_cf(self.meta(), KEY_HEAD)?)?;
        let base = head_or_empty(snap.get_cf(self.meta(), KEY_BASE)?)?;
        let mut prev = base;
        for item in records_after(&snap, base)? {
            let (seq, rec) = item?;
            let rec = match rec {
                Ok(r) => r,
                Err(e) => return Ok(Err(ChainBreak::Unreadable { seq, reason: e.to_string() })),
            };
            prev = match follows(prev, seq, &rec, prev == base && base.seq > 0) {
                Ok(h) => h,
                Err(brk) => return Ok(Err(brk)),
            };
        }
        if prev != head {
            return Ok(Err(ChainBreak::Truncated { head: head.seq, last: prev.seq }));
        }
        Ok(Ok(prev.seq - base.seq))
    }

    /// Writes `records` back as the entry keyed `first`, in the entry's version `version`
    /// (for the tamper helpers), or removes the entry if there are none.
    fn rewrite_entry(&self, first: u64, version: u8, records: &[Record]) -> Result<(), AuditError> {
        let bytes = match records {
            [] => return Ok(self.db.delete(first.to_be_bytes())?),
            [one] if version != GROUP_V3 => one.encode()?,
            _ => encode_group(records)?,
        };
        Ok(self.db.put(first.to_be_bytes(), bytes)?)
    }

    /// Test and tooling access: overwrite one record's body in place (no re-chaining), as an
    /// attacker with disk access would.
    #[doc(hidden)]
    pub fn tamper_body(&self, seq: u64, body: Vec<u8>) -> Result<(), AuditError> {
        if let Some((first, v)) = self.entry_at_or_before(seq)? {
            let mut recs = decode_entry(&v)?;
            if let Some(rec) = recs.get_mut((seq - first) as usize) {
                rec.body = body;
                self.rewrite_entry(first, v[0], &recs)?;
            }
        }
        Ok(())
    }

    /// Test and tooling access: delete records after `seq`, leaving the head alone.
    #[doc(hidden)]
    pub fn truncate_after(&self, seq: u64) -> Result<(), AuditError> {
        let from = match self.entry_at_or_before(seq + 1)? {
            Some((first, _)) => first,
            None => seq + 1,
        };
        let after: Vec<Stored> = stored(self.db.iterator(IteratorMode::From(&from.to_be_bytes(), Direction::Forward)))
            .collect::<Result<_, _>>()?;
        for (first, v) in after {
            let mut recs = decode_entry(&v)?;
            let keep = (seq + 1).saturating_sub(first).min(recs.len() as u64) as usize;
            if keep < recs.len() {
                recs.truncate(keep);
                self.rewrite_entry(first, v[0], &recs)?;
            }
        }
        Ok(())
    }

    /// Test and tooling access: as [`Self::truncate_after`], and then point the head at the
    /// last record kept, as a forger who understood the format would: `verify` finds nothing.
    #[doc(hidden)]
    pub fn truncate_and_forge_head(&self, seq: u64) -> Result<(), AuditError> {
        self.truncate_after(seq)?;
        let hash = self.record(seq)?.map_or([0; 32], |r| r.hash);
        let head = Head { seq, hash };
        self.db.put_cf(self.meta(), KEY_HEAD, encode(&head)?)?;
        self.appender.lock().expect("audit head lock").head = head;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_versioned;

    fn filled(n: u64) -> (tempfile::TempDir, AuditLog) {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        for chunk in (1..=n).collect::<Vec<_>>().chunks(64) {
            let bodies: Vec<Vec<u8>> = chunk.iter().map(|i| format!("{{\"event\":{i}}}").into_bytes()).collect();
            log.append(&bodies).unwrap();
        }
        (dir, log)
    }

    #[test]
    fn intact_chain_verifies() {
        let (_d, log) = filled(1000);
        assert_eq!(log.verify().unwrap(), Ok(1000));
        let mut newest = Vec::new();
        log.scan_newest(|seq, _| {
            newest.push(seq);
            newest.len() < 3
        })
        .unwrap();
        assert_eq!(newest, vec![1000, 999, 998]);
    }

    #[test]
    fn one_edited_byte_is_found_at_its_record() {
        let (_d, log) = filled(1000);
        log.tamper_body(500, b"{\"event\":501}".to_vec()).unwrap();
        assert_eq!(log.verify().unwrap(), Err(ChainBreak::Hash { seq: 500 }));
    }

    #[test]
    fn truncation_is_found() {
        let (_d, log) = filled(1000);
        log.truncate_after(900).unwrap();
        assert_eq!(log.verify().unwrap(), Err(ChainBreak::Truncated { head: 1000, last: 900 }));
    }

    #[test]
    fn a_forged_truncation_is_found_against_a_witnessed_head() {
        // bad-inputs J4: the last 100 records removed and the head rewritten to match.
        let (_d, log) = filled(1000);
        let witnessed = log.durable_head().unwrap();
        assert_eq!(witnessed, log.head(), "the head once synced");
        assert_eq!(log.check_witnessed(witnessed).unwrap(), Ok(()));
        log.truncate_and_forge_head(900).unwrap();
        assert_eq!(log.verify().unwrap(), Ok(900), "the chain alone looks intact");
        assert_eq!(
            log.check_witnessed(witnessed).unwrap(),
            Err(ChainBreak::BehindWitness { witnessed: 1000, last: 900 })
        );
        // Rewritten instead of cut: the witnessed record is there with another hash.
        let (_d2, other) = filled(1000);
        other.tamper_body(1000, b"{\"event\":0}".to_vec()).unwrap();
        let forged = Head { seq: 1000, hash: [1; 32] };
        assert_eq!(other.check_witnessed(forged).unwrap(), Err(ChainBreak::Witness { seq: 1000 }));
        // Witnessed heads only move forward; the one before is returned.
        assert_eq!(log.witness(7, Head { seq: 5, hash: [5; 32] }).unwrap(), None);
        assert_eq!(log.witness(7, Head { seq: 3, hash: [3; 32] }).unwrap().map(|h| h.seq), Some(5));
        assert_eq!(log.witnessed(7).unwrap().map(|h| h.seq), Some(5));
        assert_eq!(log.verify().unwrap(), Ok(900), "witnessed heads are outside the chain");
    }

    #[test]
    fn a_pruned_chain_verifies_from_its_base() {
        let (_d, log) = filled(1000);
        assert_eq!(log.prune_through(0).unwrap(), None);
        assert_eq!(log.prune_through(400).unwrap(), Some((1, 400)));
        assert_eq!(log.base().unwrap().seq, 400);
        // The group of records 385 to 448 was cut: the records kept are under 401.
        assert_eq!(entry_keys(&log)[..2], [401, 449]);
        assert_eq!(log.body(400).unwrap(), None);
        assert_eq!(log.body(401).unwrap(), Some(b"{\"event\":401}".to_vec()));
        assert_eq!(log.verify().unwrap(), Ok(600));
        assert_eq!(log.prune_through(300).unwrap(), None, "already pruned");
        assert_eq!(log.prune_through(700).unwrap(), Some((401, 700)));
        assert_eq!(log.verify().unwrap(), Ok(300));
        // The newest record always stays: it anchors the head.
        assert_eq!(log.prune_through(u64::MAX).unwrap(), Some((701, 999)));
        assert_eq!(log.verify().unwrap(), Ok(1));
        log.append(&[b"{\"event\":1001}".to_vec()]).unwrap();
        assert_eq!(log.verify().unwrap(), Ok(2));
        // A head witnessed before the pruning can no longer be compared, and is not a break.
        assert_eq!(log.check_witnessed(Head { seq: 500, hash: [3; 32] }).unwrap(), Ok(()));
        assert_eq!(log.check_witnessed(log.head()).unwrap(), Ok(()));
    }

    #[test]
    fn a_live_chain_verifies_while_it_grows_and_is_pruned() {
        // The writer appends and retention removes while verify walks: each walk must see one
        // consistent chain (head, base and records as of one moment), never a false break.
        use std::sync::atomic::{AtomicBool, Ordering};
        let (_d, log) = filled(1000);
        let log = std::sync::Arc::new(log);
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let writer = {
            let (log, done) = (log.clone(), done.clone());
            std::thread::spawn(move || {
                for _ in 0..3000 {
                    log.append(vec![b"{\"event\":1}".to_vec(); 16]).unwrap();
                }
                done.store(true, Ordering::Relaxed);
            })
        };
        let pruner = {
            let (log, done) = (log.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    log.prune_through(log.last_seq().saturating_sub(500)).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            })
        };
        let mut walks = 0;
        while !done.load(Ordering::Relaxed) || walks < 20 {
            assert!(log.verify().unwrap().is_ok(), "a live chain verifies (walk {walks})");
            walks += 1;
        }
        writer.join().unwrap();
        pruner.join().unwrap();
        assert!(log.base().unwrap().seq > 0, "retention ran meanwhile");
        assert_eq!(log.verify().unwrap(), Ok(1000 + 3000 * 16 - log.base().unwrap().seq));
    }

    #[test]
    fn retention_stops_before_a_break() {
        let (_d, log) = filled(100);
        log.tamper_body(60, b"{\"event\":0}".to_vec()).unwrap();
        assert_eq!(log.prune_through(80).unwrap(), Some((1, 59)), "the edited record stays");
        // Now first after the base, it does not link to it (as a forged base would not).
        assert_eq!(log.verify().unwrap(), Err(ChainBreak::Link { seq: 60, prev: 59 }));
        assert_eq!(log.prune_through(80).unwrap(), None, "and nothing after it goes");
        let (_d2, log) = filled(100);
        remove_record(&log, 30);
        assert_eq!(log.prune_through(80).unwrap(), Some((1, 29)), "a missing record stops it too");
        assert_eq!(log.verify().unwrap(), Err(ChainBreak::Gap { seq: 30, prev: 29 }));
    }

    #[test]
    fn the_first_record_kept_must_link_to_the_base() {
        let (_d, log) = filled(100);
        log.prune_through(50).unwrap();
        // Rewritten after the pruning: the first record kept no longer hashes from the base.
        // Without the previous hash in the record this reads as a forged base would (below):
        // either way, record 51 does not link to the base.
        log.tamper_body(51, b"{\"event\":0}".to_vec()).unwrap();
        assert_eq!(log.verify().unwrap(), Err(ChainBreak::Link { seq: 51, prev: 50 }));
        // Records removed from the front beyond the base: a gap at the start.
        let (_d2, log) = filled(100);
        log.prune_through(50).unwrap();
        remove_record(&log, 51);
        assert_eq!(log.verify().unwrap(), Err(ChainBreak::Gap { seq: 51, prev: 50 }));
        // A base forged to skip records: the first record kept does not link to it.
        let (_d3, log) = filled(100);
        log.prune_through(50).unwrap();
        log.db.put_cf(log.meta(), KEY_BASE, encode(&Head { seq: 60, hash: [9; 32] }).unwrap()).unwrap();
        assert_eq!(log.verify().unwrap(), Err(ChainBreak::Link { seq: 61, prev: 60 }));
    }

    #[test]
    fn heads_witnessed_at_once_keep_the_highest() {
        // Heads of one node arriving on several connections at once. Once a head has been
        // witnessed, what is stored is never lower than it, whatever the interleaving: a lower
        // head read before a higher one was written must not be written over it.
        let (_d, log) = filled(1);
        let log = std::sync::Arc::new(log);
        let start = std::sync::Arc::new(std::sync::Barrier::new(4));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let (log, start) = (log.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    for i in 0..2_000u64 {
                        // Thread t sends t+1, t+5, t+9, ...: ascending per sender, interleaved
                        // across senders.
                        let seq = 4 * i + t + 1;
                        log.witness(7, Head { seq, hash: [0; 32] }).unwrap();
                        let now = log.witnessed(7).unwrap().map_or(0, |h| h.seq);
                        assert!(now >= seq, "head {seq} witnessed, then {now} stored");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(log.witnessed(7).unwrap().map(|h| h.seq), Some(4 * 1_999 + 3 + 1));
    }

    #[test]
    fn records_are_written_as_the_format_says() {
        // Lengths around bincode's varint steps (251, 2^16).
        for len in [0usize, 5, 250, 251, 300, 65_535, 65_536, 70_000] {
            let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let hash = [9u8; 32];
            let serde = encode_versioned(RECORD_V2, &RecordV2 { hash, body: body.clone() }, 0).unwrap();
            // Appended after whatever the buffer holds, which it leaves as it was.
            let mut out = b"before".to_vec();
            write_record(&mut out, &hash, &body);
            let (before, new) = out.split_at(6);
            assert_eq!(before, b"before");
            assert_eq!(serde, new, "body of {len} bytes");
            let prefix = match len {
                0..=250 => 1,
                251..=65_535 => 3,
                _ => 5,
            };
            assert_eq!(new.len(), 1 + 32 + prefix + len, "version, hash, length, body");
            let back = decode_entry(new).unwrap().pop().unwrap();
            assert_eq!((back.prev_hash, back.hash, back.body), (None, hash, body));
        }
    }

    /// Writes records `first..=last` one entry each, as version 1 (with the previous record's
    /// hash) or version 2 wrote them, and the head, as a store written by those builds holds
    /// them.
    fn append_single(log: &AuditLog, version: u8, first: u64, last: u64) {
        let mut head = log.head();
        assert_eq!(head.seq + 1, first);
        for seq in first..=last {
            let body = format!("{{\"event\":{seq}}}").into_bytes();
            let hash = chain(&head.hash, seq, &body);
            let prev_hash = (version == 1).then_some(head.hash);
            log.db.put(seq.to_be_bytes(), Record { prev_hash, hash, body }.encode().unwrap()).unwrap();
            head = Head { seq, hash };
        }
        log.db.put_cf(log.meta(), KEY_HEAD, encode(&head).unwrap()).unwrap();
        log.appender.lock().unwrap().head = head;
    }

    /// Removes record `seq` from the entry that holds it, as a forger deleting one record
    /// would: the records before it stay under the entry's key, those after it go under
    /// `seq + 1`.
    fn remove_record(log: &AuditLog, seq: u64) {
        let (first, v) = log.entry_at_or_before(seq).unwrap().unwrap();
        let mut before = decode_entry(&v).unwrap();
        let after = before.split_off((seq - first) as usize + 1);
        before.pop();
        log.rewrite_entry(first, v[0], &before).unwrap();
        if !after.is_empty() {
            log.db.put((seq + 1).to_be_bytes(), encode_group(&after).unwrap()).unwrap();
        }
    }

    /// The entries' keys, in order.
    fn entry_keys(log: &AuditLog) -> Vec<u64> {
        entries(log.db.iterator(IteratorMode::Start)).map(|e| e.unwrap().0).collect()
    }

    #[test]
    fn a_store_with_entries_of_every_version_reads_and_verifies() {
        // Version-1 records first, then version 2 (each written by an earlier build, then
        // reopened), then groups.
        let dir = tempfile::tempdir().unwrap();
        {
            let log = AuditLog::open(dir.path()).unwrap();
            append_single(&log, 1, 1, 40);
            append_single(&log, RECORD_V2, 41, 50);
        }
        let log = AuditLog::open(dir.path()).unwrap();
        assert_eq!(log.head().seq, 50, "the head is read back");
        let bodies: Vec<Vec<u8>> = (51..=100).map(|i| format!("{{\"event\":{i}}}").into_bytes()).collect();
        log.append(&bodies).unwrap();
        assert_eq!(log.verify().unwrap(), Ok(100));
        assert_eq!(entry_keys(&log), (1..=51).collect::<Vec<_>>(), "one entry a record, then one for the append");
        for seq in [40, 41, 50, 51, 77, 100] {
            assert_eq!(log.body(seq).unwrap(), Some(format!("{{\"event\":{seq}}}").into_bytes()));
        }
        assert_eq!(log.body(101).unwrap(), None);
        let mut newest = Vec::new();
        log.scan_newest(|seq, body| {
            newest.push((seq, body.to_vec()));
            seq > 39
        })
        .unwrap();
        assert_eq!(newest.len(), 62);
        assert_eq!(newest[61], (39, b"{\"event\":39}".to_vec()));
        assert!(newest.windows(2).all(|w| w[0].0 == w[1].0 + 1), "newest first, one by one");
        // A version-2 record is smaller by the previous hash it no longer holds.
        let stored = |log: &AuditLog, seq: u64| log.db.get(seq.to_be_bytes()).unwrap().unwrap();
        let (v1, v2) = (stored(&log, 40), stored(&log, 41));
        assert_eq!((v1[0], v2[0], v1.len() - v2.len()), (1, RECORD_V2, 32));
        assert_eq!(stored(&log, 51)[0], GROUP_V3);
        // The break is found in each part, and an edit keeps the entry's version.
        log.tamper_body(30, b"{\"event\":0}".to_vec()).unwrap();
        assert_eq!(log.verify().unwrap(), Err(ChainBreak::Hash { seq: 30 }));
        assert_eq!(stored(&log, 30)[0], 1);
        for (edited, version) in [(45, RECORD_V2), (70, GROUP_V3)] {
            let (_d2, other) = filled(0);
            append_single(&other, 1, 1, 40);
            append_single(&other, RECORD_V2, 41, 50);
            other.append(&bodies).unwrap();
            other.tamper_body(edited, b"{\"event\":0}".to_vec()).unwrap();
            assert_eq!(other.verify().unwrap(), Err(ChainBreak::Hash { seq: edited }));
            assert_eq!(other.body(edited).unwrap(), Some(b"{\"event\":0}".to_vec()));
            assert_eq!(stored(&other, edited.min(51))[0], version);
        }
        // Retention across the boundaries: the first record kept links to a base taken from a
        // version-1 record, then from a version-2 one.
        let (_d3, third) = filled(0);
        append_single(&third, 1, 1, 40);
        append_single(&third, RECORD_V2, 41, 50);
        third.append(&bodies).unwrap();
        assert_eq!(third.prune_through(40).unwrap(), Some((1, 40)));
        assert_eq!(third.verify().unwrap(), Ok(60));
        assert_eq!(third.prune_through(60).unwrap(), Some((41, 60)));
        assert_eq!(third.verify().unwrap(), Ok(40));
        assert_eq!(entry_keys(&third), vec![61], "the group cut down to the records kept");
        // A version-1 record that does not link to its predecessor still says so.
        let (_d4, fourth) = filled(0);
        append_single(&fourth, 1, 1, 50);
        let mut rec = decode_entry(&stored(&fourth, 20)).unwrap().pop().unwrap();
        rec.prev_hash = Some([3; 32]);
        fourth.db.put(20u64.to_be_bytes(), rec.encode().unwrap()).unwrap();
        assert_eq!(fourth.verify().unwrap(), Err(ChainBreak::Link { seq: 20, prev: 19 }));
    }

    #[test]
    fn groups_are_written_as_the_format_says() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        // Bodies around LEB128's steps (128, 2^14), and an empty one.
        let bodies: Vec<Vec<u8>> = [3usize, 0, 127, 128, 16_383, 16_384, 40]
            .iter()
            .map(|&len| (0..len).map(|i| (i % 7) as u8).collect())
            .collect();
        log.append(&bodies).unwrap();
        let v = log.db.get(1u64.to_be_bytes()).unwrap().unwrap();
        assert_eq!(v[0], GROUP_V3);
        assert_eq!(u32::from_le_bytes(v[1..5].try_into().unwrap()), 7, "the count");
        let mut hash = [0; 32];
        for (i, body) in bodies.iter().enumerate() {
            hash = chain(&hash, i as u64 + 1, body);
            assert_eq!(v[5 + 32 * i..5 + 32 * (i + 1)], hash, "hash {}", i + 1);
        }
        let at = 5 + 32 * 7;
        let raw_len = u32::from_le_bytes(v[at..at + 4].try_into().unwrap()) as usize;
        let raw = lz4_flex::block::decompress(&v[at + 4..], raw_len).unwrap();
        let mut expected = Vec::new();
        for body in &bodies {
            match body.len() {
                n @ 0..=127 => expected.push(n as u8),
                n @ 128..=16_383 => expected.extend_from_slice(&[(n as u8) | 0x80, (n >> 7) as u8]),
                n => expected.extend_from_slice(&[(n as u8) | 0x80, ((n >> 7) as u8) | 0x80, (n >> 14) as u8]),
            }
            expected.extend_from_slice(body);
        }
        assert_eq!((raw_len, raw), (expected.len(), expected), "each body as its length and bytes");
        assert_eq!(log.head(), Head { seq: 7, hash });

        // Events of one batch repeat each other: stored together, they take a fraction of their
        // size.
        let events: Vec<Vec<u8>> = (0..500)
            .map(|i| {
                format!(
                    "{{\"ts_ms\":{},\"kind\":\"access\",\"decision\":\"allow\",\"reason\":\"ok\",\"key_id\":\"k_{}\",\"consumer\":\"acme\",\"route\":\"orders\",\"method\":\"GET\",\"path\":\"/orders/{}\",\"status\":200,\"latency_us\":{},\"client_ip\":\"10.1.2.{}\"}}",
                    1_764_400_000_000u64 + i / 3, i % 4, i % 50, 180 + i % 97, i % 16
                )
                .into_bytes()
            })
            .collect();
        log.append(&events).unwrap();
        let stored = log.db.get(8u64.to_be_bytes()).unwrap().unwrap().len();
        let bodies_len: usize = events.iter().map(Vec::len).sum();
        assert!(stored - 500 * 32 < bodies_len / 4, "{stored} bytes stored for {bodies_len} of bodies");
        assert_eq!(log.verify().unwrap(), Ok(507));
    }

    #[test]
    fn an_append_is_split_into_bounded_groups() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        let n = GROUP_RECORDS_MAX as u64 * 2 + 10;
        log.append((1..=n).map(|i| i.to_string().into_bytes())).unwrap();
        let (g, gg) = (GROUP_RECORDS_MAX as u64, 2 * GROUP_RECORDS_MAX as u64);
        assert_eq!(entry_keys(&log), vec![1, g + 1, gg + 1], "by count");
        // Bodies of 300 KiB: a group closes once its bodies reach 1 MiB, four to a group.
        let big = vec![b'x'; 300 << 10];
        log.append(vec![&big; 9]).unwrap();
        assert_eq!(entry_keys(&log), vec![1, g + 1, gg + 1, n + 1, n + 5, n + 9], "by size");
        assert_eq!(log.verify().unwrap(), Ok(n + 9));
        assert_eq!(log.body(n + 6).unwrap().map(|b| b.len()), Some(300 << 10));
        assert_eq!(log.body(g).unwrap(), Some(g.to_string().into_bytes()));
    }

    #[test]
    fn a_damaged_group_is_unreadable_never_a_panic() {
        let (_d, log) = filled(100);
        let good = log.db.get(65u64.to_be_bytes()).unwrap().unwrap();
        assert!(decode_entry(&good).is_ok());
        // Cut short anywhere, or a header byte changed: an error, not a panic or a misread.
        let mut damaged: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).collect();
        for at in 1..5 + 32 * 36 + 4 {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut d = good.to_vec();
                d[at] ^= flip;
                damaged.push(d);
            }
        }
        for d in &damaged {
            if let Ok(recs) = decode_entry(d) {
                // A changed hash still decodes; the chain then does not verify.
                assert_eq!(recs.len(), 36);
                assert!(recs.iter().map(|r| &r.body).eq(decode_entry(&good).unwrap().iter().map(|r| &r.body)));
            }
        }
        // A stated raw length far beyond what the entry could hold is refused before any
        // allocation.
        let mut huge = good.to_vec();
        let at = 5 + 32 * 36;
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_entry(&huge), Err(CodecError::Malformed(_))));
        // In the store: reported under the entry's key, and retention stops before it.
        log.db.put(65u64.to_be_bytes(), &good[..good.len() - 3]).unwrap();
        assert!(matches!(log.verify().unwrap(), Err(ChainBreak::Unreadable { seq: 65, .. })));
        assert_eq!(log.prune_through(99).unwrap(), Some((1, 64)));
        assert!(log.body(70).is_err(), "a record in it cannot be read");
    }

    /// The records' files, as (name, level), by name.
    fn record_files(log: &AuditLog) -> Vec<(String, i32)> {
        let mut files: Vec<_> = log
            .db
            .live_files()
            .unwrap()
            .into_iter()
            .filter(|f| f.column_family_name == rocksdb::DEFAULT_COLUMN_FAMILY_NAME)
            .map(|f| (f.name, f.level))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn flushed_files_move_down_without_being_rewritten() {
        // Four flushes reach level 0's compaction trigger. The records of each file follow the
        // previous file's, so the compaction is a move: the same files, a level down. With the
        // head among the records, every file overlapped every other and all four were rewritten.
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        for round in 0..4u64 {
            let bodies: Vec<Vec<u8>> =
                (0..200).map(|i| format!("{{\"event\":{}}}", round * 200 + i).into_bytes()).collect();
            log.append(&bodies).unwrap();
            log.db.flush().unwrap();
        }
        let flushed: Vec<String> = record_files(&log).into_iter().map(|(name, _)| name).collect();
        assert_eq!(flushed.len(), 4, "one file a flush");
        let property = |name: &str| log.db.property_int_value(name).unwrap().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let compacted = loop {
            let files = record_files(&log);
            let idle = property("rocksdb.compaction-pending") == 0 && property("rocksdb.num-running-compactions") == 0;
            if idle && files.iter().any(|(_, level)| *level > 0) {
                break files;
            }
            assert!(std::time::Instant::now() < deadline, "level 0 was never compacted: {files:?}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let names: Vec<String> = compacted.into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, flushed, "the flushed files were moved, not rewritten");
        assert_eq!(log.verify().unwrap(), Ok(800));
    }

    #[test]
    fn a_store_in_the_earlier_layout_is_read_and_moved() {
        // Before `meta`, the head, the base and the witnessed heads were among the records.
        let dir = tempfile::tempdir().unwrap();
        {
            let db = DB::open_default(dir.path()).unwrap();
            let mut head = Head { seq: 0, hash: [0; 32] };
            for seq in 1..=10u64 {
                // Records as that layout's build wrote them: version 1.
                let body = format!("{{\"event\":{seq}}}").into_bytes();
                let hash = chain(&head.hash, seq, &body);
                db.put(seq.to_be_bytes(), encode(&RecordV1 { prev_hash: head.hash, hash, body }).unwrap()).unwrap();
                head = Head { seq, hash };
                if seq == 3 {
                    // Retention removed records 1 to 3.
                    db.put(KEY_BASE, encode(&head).unwrap()).unwrap();
                }
            }
            for seq in 1..=3u64 {
                db.delete(seq.to_be_bytes()).unwrap();
            }
            db.put(KEY_HEAD, encode(&head).unwrap()).unwrap();
            let witnessed = Head { seq: 5, hash: [5; 32] };
            db.put([KEY_WITNESS, &7u64.to_be_bytes()].concat(), encode(&witnessed).unwrap()).unwrap();
        }
        let read_only = AuditLog::open_read_only(dir.path()).unwrap();
        assert_eq!(read_only.verify().unwrap(), Ok(7), "read as it is");
        assert_eq!(read_only.witnessed(7).unwrap().map(|h| h.seq), Some(5));
        drop(read_only);

        let log = AuditLog::open(dir.path()).unwrap();
        assert_eq!((log.head().seq, log.base().unwrap().seq), (10, 3));
        assert_eq!(log.verify().unwrap(), Ok(7));
        assert_eq!(log.witnessed(7).unwrap().map(|h| h.seq), Some(5));
        let lengths: Vec<usize> = log.db.iterator(IteratorMode::Start).map(|i| i.unwrap().0.len()).collect();
        assert_eq!(lengths, vec![8; 7], "nothing but the records is left among them");
        log.append(&[b"{\"event\":11}".to_vec()]).unwrap();
        drop(log);
        assert_eq!(AuditLog::open(dir.path()).unwrap().verify().unwrap(), Ok(8));
        assert_eq!(AuditLog::open_read_only(dir.path()).unwrap().verify().unwrap(), Ok(8));
    }

    #[test]
    fn chain_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = AuditLog::open(dir.path()).unwrap();
            log.append(&[b"a".to_vec(), b"b".to_vec()]).unwrap();
        }
        let log = AuditLog::open(dir.path()).unwrap();
        log.append(&[b"c".to_vec()]).unwrap();
        assert_eq!(log.verify().unwrap(), Ok(3));
    }
}
