//! A disk that loses power: a FUSE filesystem over a backing directory that keeps every write
//! in memory until the file is fsynced, as an OS page cache does, and can then "lose power":
//! drop what was never synced, or tear it (keep a random prefix of the unsynced writes, the
//! last one cut mid-way), and unmount. What remains in the backing directory is exactly what a
//! disk would hold after a power cut, and the node restarts on it. This is what LazyFS does for
//! Jepsen (../shared/reference/faults.md rows R2, R3, R4), written here because LazyFS is not
//! packaged for Debian.
//!
//! The model, and where it is kinder or harsher than a real disk:
//! - File data is durable only once `fsync`/`fdatasync` of that file returned. Writes, `close`
//!   and `flush` persist nothing. Harsher than ext4, which writes back dirty pages every ~30 s.
//! - Metadata (create, mkdir, rename, unlink, chmod) reaches the backing directory at once, as
//!   if the directory had been synced. Kinder than a real disk, where a rename without a
//!   directory fsync may be lost; but a file renamed before its data was synced loses that data
//!   here, the classic "empty file after a crash" case.
//! - A torn cut keeps, per file, the first k of its unsynced writes (k random) and a random
//!   prefix of the k+1-th: a torn log tail.
//!
//! Needs root (it mounts through /dev/fuse). Single-threaded: enough for a node's few files.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    BackgroundSession, FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow,
};
use rand::Rng;

const EIO: i32 = 5;
const ENOENT: i32 = 2;
const EINVAL: i32 = 22;
const ENOSYS: i32 = 38;
/// Attributes are never cached by the kernel: sizes change under it (a cut) and the files
/// are few.
const TTL: Duration = Duration::ZERO;

/// A write the OS accepted but the disk does not hold yet.
#[derive(Debug, Clone)]
enum Op {
    Write { offset: u64, data: Vec<u8> },
    Truncate(u64),
}

#[derive(Debug)]
struct Inode {
    /// Its path in the backing directory; `None` once unlinked (it lives on while open).
    path: Option<PathBuf>,
    /// The backing file, opened read-write on first use (files only).
    file: Option<File>,
    /// Open FUSE handles.
    open: u32,
    /// Unsynced operations, oldest first.
    pending: Vec<Op>,
    /// The size the OS shows while operations are pending.
    size: Option<u64>,
}

#[derive(Debug)]
struct State {
    /// The backing directory's own inode number (shown as FUSE's root, 1).
    root_ino: u64,
    inodes: HashMap<u64, Inode>,
    handles: HashMap<u64, u64>,
    next_fh: u64,
    /// Power is off: every operation fails.
    dead: bool,
}

/// What a cut did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Files that had unsynced writes.
    pub files: usize,
    /// Unsynced bytes written by the node.
    pub unsynced_bytes: u64,
    /// Of those, bytes that reached the disk anyway (a torn cut).
    pub kept_bytes: u64,
}

/// A mounted power-loss disk.
pub struct PowerFs {
    state: Arc<Mutex<State>>,
    session: Option<BackgroundSession>,
    backing: PathBuf,
    mountpoint: PathBuf,
}

impl PowerFs {
    /// Mounts a power-loss view of `backing` at `mountpoint` (both must exist).
    pub fn mount(backing: &Path, mountpoint: &Path) -> std::io::Result<Self> {
        let mut fs = Self {
            state: Arc::new(Mutex::new(State::new(backing)?)),
            session: None,
            backing: backing.to_path_buf(),
            mountpoint: mountpoint.to_path_buf(),
        };
        fs.attach()?;
        Ok(fs)
    }

    fn attach(&mut self) -> std::io::Result<()> {
        let options = [MountOption::FSName("raftgate-powerfs".into()), MountOption::RW, MountOption::NoExec];
        let session = fuser::spawn_mount2(Fuse(self.state.clone()), &self.mountpoint, &options)?;
        self.session = Some(session);
        Ok(())
    }

    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// Bytes written but not yet synced, over all files.
    pub fn unsynced_bytes(&self) -> u64 {
        lock(&self.state).inodes.values().map(|i| i.pending.iter().map(Op::len).sum::<u64>()).sum()
    }

    /// The power goes off: unsynced writes are lost (`tear: None`) or torn (a random prefix
    /// of them survives), and the filesystem is unmounted. Whatever process had files open on
    /// it must already be dead (SIGKILL it first). `restore_power` mounts it again.
    pub fn cut(&mut self, tear: Option<&mut dyn rand::RngCore>) -> CutReport {
        let report = lock(&self.state).cut(tear);
        // Unmounts; the session thread ends when the kernel closes the channel.
        self.session = None;
        report
    }

    /// Power is back: mounts the backing directory again, as it was left.
    pub fn restore_power(&mut self) -> std::io::Result<()> {
        ensure(self.session.is_none(), "restore_power on a mounted disk")?;
        self.state = Arc::new(Mutex::new(State::new(&self.backing)?));
        self.attach()
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        // Unmount with what was synced kept and the rest dropped, like `cut`.
        if self.session.is_some() {
            lock(&self.state).dead = true;
            self.session = None;
        }
    }
}

fn ensure(cond: bool, what: &str) -> std::io::Result<()> {
    if cond {
        Ok(())
    } else {
        Err(std::io::Error::other(what.to_string()))
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Op {
    fn len(&self) -> u64 {
        match self {
            Op::Write { data, .. } => data.len() as u64,
            Op::Truncate(_) => 0,
        }
    }

    /// Applies this operation to `buf`, which holds the file's bytes from `start`.
    fn overlay(&self, start: u64, buf: &mut [u8]) {
        let end = start + buf.len() as u64;
        match self {
            Op::Write { offset, data } => {
                let from = (*offset).max(start);
                let to = (offset + data.len() as u64).min(end);
                if from < to {
                    buf[(from - start) as usize..(to - start) as usize]
                        .copy_from_slice(&data[(from - offset) as usize..(to - offset) as usize]);
                }
            }
            Op::Truncate(size) => {
                if *size < end {
                    let from = size.saturating_sub(start) as usize;
                    buf[from..].fill(0);
                }
            }
        }
    }

    /// Writes this operation to the backing file.
    fn persist(&self, file: &File) -> std::io::Result<()> {
        match self {
            Op::Write { offset, data } => file.write_all_at(data, *offset),
            Op::Truncate(size) => file.set_len(*size),
        }
    }
}

impl State {
    fn new(backing: &Path) -> std::io::Result<Self> {
        let root_ino = std::fs::metadata(backing)?.ino();
        let mut inodes = HashMap::new();
        inodes.insert(
            fuser::FUSE_ROOT_ID,
            Inode { path: Some(backing.to_path_buf()), file: None, open: 0, pending: Vec::new(), size: None },
        );
        Ok(Self { root_ino, inodes, handles: HashMap::new(), next_fh: 1, dead: false })
    }

    fn fuse_ino(&self, backing_ino: u64) -> u64 {
        if backing_ino == self.root_ino {
            fuser::FUSE_ROOT_ID
        } else {
            backing_ino
        }
    }

    fn path(&self, ino: u64) -> Result<PathBuf, i32> {
        self.inodes.get(&ino).and_then(|i| i.path.clone()).ok_or(ENOENT)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, i32> {
        Ok(self.path(parent)?.join(name))
    }

    /// Records `path` as the home of the inode it holds now; its attributes as the OS shows them.
    fn remember(&mut self, path: PathBuf) -> Result<FileAttr, i32> {
        let meta = std::fs::symlink_metadata(&path).map_err(errno)?;
        let ino = self.fuse_ino(meta.ino());
        let inode = self.inodes.entry(ino).or_insert(Inode {
            path: None,
            file: None,
            open: 0,
            pending: Vec::new(),
            size: None,
        });
        inode.path = Some(path);
        Ok(attr(ino, &meta, inode.size))
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, i32> {
        let inode = self.inodes.get(&ino).ok_or(ENOENT)?;
        let meta = match (&inode.file, &inode.path) {
            (Some(f), _) => f.metadata(),
            (None, Some(p)) => std::fs::symlink_metadata(p),
            (None, None) => return Err(ENOENT),
        }
        .map_err(errno)?;
        Ok(attr(ino, &meta, inode.size))
    }

    /// The inode's backing file, opened on first use.
    fn file(&mut self, ino: u64) -> Result<&File, i32> {
        let inode = self.inodes.get_mut(&ino).ok_or(ENOENT)?;
        if inode.file.is_none() {
            let path = inode.path.as_ref().ok_or(ENOENT)?;
            inode.file = Some(OpenOptions::new().read(true).write(true).open(path).map_err(errno)?);
        }
        inode.file.as_ref().ok_or(EIO)
    }

    fn logical_size(&mut self, ino: u64) -> Result<u64, i32> {
        if let Some(size) = self.inodes.get(&ino).ok_or(ENOENT)?.size {
            return Ok(size);
        }
        Ok(self.file(ino)?.metadata().map_err(errno)?.len())
    }

    fn read(&mut self, ino: u64, offset: u64, len: u64) -> Result<Vec<u8>, i32> {
        let size = self.logical_size(ino)?;
        let end = (offset + len).min(size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        let file = self.file(ino)?;
        // Bytes past the backing file's end stay zero (a hole, or pending writes below).
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(errno(e)),
            }
        }
        let inode = self.inodes.get(&ino).ok_or(ENOENT)?;
        for op in &inode.pending {
            op.overlay(offset, &mut buf);
        }
        Ok(buf)
    }

    fn push(&mut self, ino: u64, op: Op) -> Result<(), i32> {
        let size = self.logical_size(ino)?;
        let inode = self.inodes.get_mut(&ino).ok_or(ENOENT)?;
        let new_size = match &op {
            Op::Write { offset, data } => size.max(offset + data.len() as u64),
            Op::Truncate(s) => *s,
        };
        // An append right after the previous write extends it (fewer, larger pending writes).
        match (inode.pending.last_mut(), &op) {
            (Some(Op::Write { offset: o, data: d }), Op::Write { offset, data })
                if *o + d.len() as u64 == *offset && d.len() < (1 << 20) =>
            {
                d.extend_from_slice(data);
            }
            _ => inode.pending.push(op),
        }
        inode.size = Some(new_size);
        Ok(())
    }

    /// fsync: the file's pending operations reach the disk, in order, and the disk syncs.
    fn sync(&mut self, ino: u64) -> Result<(), i32> {
        let pending = std::mem::take(&mut self.inodes.get_mut(&ino).ok_or(ENOENT)?.pending);
        if pending.is_empty() {
            return Ok(());
        }
        let file = self.file(ino)?;
        for op in &pending {
            op.persist(file).map_err(errno)?;
        }
        file.sync_all().map_err(errno)?;
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.size = None;
        }
        Ok(())
    }

    fn cut(&mut self, mut tear: Option<&mut dyn rand::RngCore>) -> CutReport {
        let mut report = CutReport::default();
        self.dead = true;
        for inode in self.inodes.values_mut() {
            let pending = std::mem::take(&mut inode.pending);
            inode.size = None;
            if pending.is_empty() {
                continue;
            }
            report.files += 1;
            report.unsynced_bytes += pending.iter().map(Op::len).sum::<u64>();
            let (Some(rng), Some(file)) = (tear.as_deref_mut(), inode.file.as_ref()) else {
                continue;
            };
            // The first `keep` operations reached the platter whole; the next one in part.
            let keep = rng.gen_range(0..=pending.len());
            for op in &pending[..keep] {
                if op.persist(file).is_ok() {
                    report.kept_bytes += op.len();
                }
            }
            if let Some(Op::Write { offset, data }) = pending.get(keep) {
                let part = rng.gen_range(0..data.len().max(1));
                if file.write_all_at(&data[..part], *offset).is_ok() {
                    report.kept_bytes += part as u64;
                }
            }
        }
        // Close every backing file: the next mount starts from the disk alone.
        self.inodes.clear();
        self.handles.clear();
        report
    }

    /// The inode's last name is gone: its unsynced data can never reach a file anyone can
    /// open, so it is dropped; the record goes once no handle is open.
    fn unlinked(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.path = None;
            inode.pending.clear();
            inode.size = None;
        }
        self.forget_unlinked(ino);
    }

    fn forget_unlinked(&mut self, ino: u64) {
        if self.inodes.get(&ino).is_some_and(|i| i.path.is_none() && i.open == 0) {
            self.inodes.remove(&ino);
        }
    }
}

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(EIO)
}

fn attr(ino: u64, meta: &std::fs::Metadata, size: Option<u64>) -> FileAttr {
    let time = |secs: i64, nsecs: i64| {
        UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64) + Duration::from_nanos(nsecs.max(0) as u64)
    };
    let kind = if meta.is_dir() {
        FileType::Directory
    } else if meta.file_type().is_symlink() {
        FileType::Symlink
    } else {
        FileType::RegularFile
    };
    let size = size.unwrap_or(meta.len());
    FileAttr {
        ino,
        size,
        blocks: size.div_ceil(512),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: SystemTime::UNIX_EPOCH,
        kind,
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// The FUSE face of the state.
struct Fuse(Arc<Mutex<State>>);

impl Fuse {
    fn live(&self) -> Result<MutexGuard<'_, State>, i32> {
        let s = lock(&self.0);
        if s.dead {
            Err(EIO)
        } else {
            Ok(s)
        }
    }
}

macro_rules! reply_or_err {
    ($reply:ident, $e:expr, |$v:pat_param| $ok:expr) => {
        match $e {
            Ok($v) => $ok,
            Err(code) => $reply.error(code),
        }
    };
}

impl Filesystem for Fuse {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let r = self.live().and_then(|mut s| {
            let path = s.child(parent, name)?;
            s.remember(path)
        });
        reply_or_err!(reply, r, |a| reply.entry(&TTL, &a, 0));
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let r = self.live().and_then(|s| s.attr(ino));
        reply_or_err!(reply, r, |a| reply.attr(&TTL, &a));
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let r = self.live().and_then(|mut s| {
            if let Some(mode) = mode {
                let path = s.path(ino)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777)).map_err(errno)?;
            }
            if let Some(size) = size {
                s.push(ino, Op::Truncate(size))?;
            }
            s.attr(ino)
        });
        reply_or_err!(reply, r, |a| reply.attr(&TTL, &a));
    }

    fn mkdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let r = self.live().and_then(|mut s| {
            let path = s.child(parent, name)?;
            std::fs::DirBuilder::new().mode(mode & !umask & 0o7777).create(&path).map_err(errno)?;
            s.remember(path)
        });
        reply_or_err!(reply, r, |a| reply.entry(&TTL, &a, 0));
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let r = self.live().and_then(|mut s| {
            let path = s.child(parent, name)?;
            let meta = std::fs::symlink_metadata(&path).map_err(errno)?;
            std::fs::remove_file(&path).map_err(errno)?;
            let ino = s.fuse_ino(meta.ino());
            if meta.nlink() <= 1 {
                s.unlinked(ino);
            }
            Ok(())
        });
        reply_or_err!(reply, r, |()| reply.ok());
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let r = self.live().and_then(|mut s| {
            let path = s.child(parent, name)?;
            let meta = std::fs::symlink_metadata(&path).map_err(errno)?;
            std::fs::remove_dir(&path).map_err(errno)?;
            let ino = s.fuse_ino(meta.ino());
            s.inodes.remove(&ino);
            Ok(())
        });
        reply_or_err!(reply, r, |()| reply.ok());
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        let r = self.live().and_then(|mut s| {
            if flags != 0 {
                return Err(EINVAL);
            }
            let from = s.child(parent, name)?;
            let to = s.child(newparent, newname)?;
            // The file it replaces is unlinked.
            if let Ok(meta) = std::fs::symlink_metadata(&to) {
                let ino = s.fuse_ino(meta.ino());
                s.unlinked(ino);
            }
            std::fs::rename(&from, &to).map_err(errno)?;
            // Every inode under the old path (the file itself, or a directory's contents) moves.
            for inode in s.inodes.values_mut() {
                if let Some(p) = &inode.path {
                    if let Ok(rest) = p.strip_prefix(&from) {
                        inode.path = Some(if rest.as_os_str().is_empty() { to.clone() } else { to.join(rest) });
                    }
                }
            }
            Ok(())
        });
        reply_or_err!(reply, r, |()| reply.ok());
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let r = self.live().and_then(|mut s| {
            s.file(ino)?;
            let fh = s.next_fh;
            s.next_fh += 1;
            s.handles.insert(fh, ino);
            if let Some(inode) = s.inodes.get_mut(&ino) {
                inode.open += 1;
            }
            Ok(fh)
        });
        reply_or_err!(reply, r, |fh| reply.opened(fh, 0));
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = self.live().and_then(|mut s| {
            let path = s.child(parent, name)?;
            let excl = flags & 0o200 != 0; // O_EXCL
            let mut opts = OpenOptions::new();
            opts.read(true).write(true).mode(mode & !umask & 0o7777);
            if excl {
                opts.create_new(true);
            } else {
                opts.create(true);
            }
            let file = opts.open(&path).map_err(errno)?;
            let attr = s.remember(path)?;
            let fh = s.next_fh;
            s.next_fh += 1;
            s.handles.insert(fh, attr.ino);
            if let Some(inode) = s.inodes.get_mut(&attr.ino) {
                inode.open += 1;
                if inode.file.is_none() {
                    inode.file = Some(file);
                }
            }
            Ok((attr, fh))
        });
        reply_or_err!(reply, r, |(a, fh)| reply.created(&TTL, &a, 0, fh, 0));
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let r = self.live().and_then(|mut s| s.read(ino, offset.max(0) as u64, u64::from(size)));
        reply_or_err!(reply, r, |d| reply.data(&d));
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let r =
            self.live().and_then(|mut s| s.push(ino, Op::Write { offset: offset.max(0) as u64, data: data.to_vec() }));
        reply_or_err!(reply, r, |()| reply.written(data.len() as u32));
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock_owner: u64, reply: ReplyEmpty) {
        // close() persists nothing.
        reply.ok();
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = lock(&self.0);
        if s.handles.remove(&fh).is_some() {
            if let Some(inode) = s.inodes.get_mut(&ino) {
                inode.open = inode.open.saturating_sub(1);
            }
            s.forget_unlinked(ino);
        }
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, _datasync: bool, reply: ReplyEmpty) {
        let r = self.live().and_then(|mut s| s.sync(ino));
        reply_or_err!(reply, r, |()| reply.ok());
    }

    fn readdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, offset: i64, mut reply: ReplyDirectory) {
        let r = self.live().and_then(|s| {
            let path = s.path(ino)?;
            let mut entries = vec![(ino, FileType::Directory, OsStr::new(".").to_owned())];
            entries.push((ino, FileType::Directory, OsStr::new("..").to_owned()));
            for e in std::fs::read_dir(&path).map_err(errno)? {
                let e = e.map_err(errno)?;
                let meta = e.metadata().map_err(errno)?;
                let kind = if meta.is_dir() { FileType::Directory } else { FileType::RegularFile };
                entries.push((s.fuse_ino(meta.ino()), kind, e.file_name()));
            }
            Ok(entries)
        });
        match r {
            Ok(entries) => {
                for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset.max(0) as usize) {
                    if reply.add(ino, (i + 1) as i64, kind, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(code) => reply.error(code),
        }
    }

    fn fsyncdir(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _datasync: bool, reply: ReplyEmpty) {
        // Metadata reaches the backing directory at once (see the module docs).
        match self.live() {
            Ok(_) => reply.ok(),
            Err(code) => reply.error(code),
        }
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _offset: i64,
        _length: i64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        // RocksDB preallocates when it can and carries on when it cannot.
        reply.error(ENOSYS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_compose_pending_writes_and_truncates_over_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let mut s = State::new(dir.path()).unwrap();
        let attr = s.remember(path.clone()).unwrap();
        let ino = attr.ino;
        s.push(ino, Op::Write { offset: 8, data: b"ABCD".to_vec() }).unwrap();
        assert_eq!(s.read(ino, 0, 100).unwrap(), b"01234567ABCD");
        s.push(ino, Op::Truncate(4)).unwrap();
        s.push(ino, Op::Write { offset: 6, data: b"xy".to_vec() }).unwrap();
        assert_eq!(s.read(ino, 0, 100).unwrap(), b"0123\0\0xy");
        // Nothing reached the disk yet.
        assert_eq!(std::fs::read(&path).unwrap(), b"0123456789");
        s.sync(ino).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"0123\0\0xy");
    }

    #[test]
    fn a_cut_loses_unsynced_writes_and_a_torn_cut_keeps_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        std::fs::write(&path, b"synced|").unwrap();
        let mut s = State::new(dir.path()).unwrap();
        let ino = s.remember(path.clone()).unwrap().ino;
        s.push(ino, Op::Write { offset: 7, data: b"lost".to_vec() }).unwrap();
        let report = s.cut(None);
        assert_eq!(report, CutReport { files: 1, unsynced_bytes: 4, kept_bytes: 0 });
        assert_eq!(std::fs::read(&path).unwrap(), b"synced|");

        let mut s = State::new(dir.path()).unwrap();
        let ino = s.remember(path.clone()).unwrap().ino;
        s.push(ino, Op::Write { offset: 7, data: b"record-one|".to_vec() }).unwrap();
        s.push(ino, Op::Truncate(100)).unwrap();
        s.push(ino, Op::Write { offset: 18, data: b"record-two|".to_vec() }).unwrap();
        let mut rng = rand::rngs::mock::StepRng::new(0, 0);
        let report = s.cut(Some(&mut rng));
        // A zero draw keeps no operation whole and none of the first.
        assert_eq!(report.kept_bytes, 0);
        assert_eq!(std::fs::read(&path).unwrap(), b"synced|");
        for seed in 0..50u64 {
            use rand::SeedableRng;
            std::fs::write(&path, b"synced|").unwrap();
            let mut s = State::new(dir.path()).unwrap();
            let ino = s.remember(path.clone()).unwrap().ino;
            s.push(ino, Op::Write { offset: 7, data: b"record-one|record-two|".to_vec() }).unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            s.cut(Some(&mut rng));
            let on_disk = std::fs::read(&path).unwrap();
            // Always a prefix of what was written.
            assert!(b"synced|record-one|record-two|".starts_with(&on_disk), "{seed}: {on_disk:?}");
            assert!(on_disk.starts_with(b"synced|"));
        }
    }
}
