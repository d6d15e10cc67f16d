//! One node process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Picks a free loopback port for a node to listen on, below Linux's ephemeral range
/// (32768–60999): ports from `bind(:0)` come from that range, and so do the source ports of
/// every outgoing connection the nodes and the harness open, so such a port could be taken
/// before the node binds it (it happened: "Address already in use" on a node's Raft port).
/// Ports below it are only ever taken by explicit binds. Each pick is checked by binding it.
///
/// A bind check alone left a race between test processes running at once (nextest runs
/// several): two could pick the same free port before either node bound it (it happened:
/// "Address already in use" on a node's proxy port in CI). So each pick is also reserved
/// across processes with a lock on a file named after the port, held until this process
/// ends.
pub fn free_port() -> u16 {
    use rand::Rng;
    static HELD: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("raftgate-test-ports");
    let _ = std::fs::create_dir_all(&dir);
    let mut rng = rand::thread_rng();
    // Bounded: a free port among 12,000 is found within a few tries on any test machine.
    for _ in 0..1_000 {
        let port = rng.gen_range(20_000..32_000);
        let Ok(lock) =
            std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(port.to_string()))
        else {
            continue;
        };
        // Held by another test process (or an earlier pick of this one): not ours to take.
        if lock.try_lock().is_err() {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            HELD.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(lock);
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind 127.0.0.1:0")
}

/// The `raftgate` binary: `$RAFTGATE_BIN`, or the one built beside this test binary.
pub fn raftgate_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RAFTGATE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/raftgate
    let profile_dir = exe.parent().and_then(Path::parent).expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("raftgate");
    assert!(
        bin.exists(),
        "{} not found: build it first (cargo build --release --bins) or set RAFTGATE_BIN",
        bin.display()
    );
    bin
}

pub struct NodeProc {
    pub id: u64,
    pub raft_port: u16,
    pub admin_port: u16,
    pub proxy_port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// The arguments of the last start, reused by `restart`.
    args: Vec<String>,
    child: Option<Child>,
    paused: bool,
    /// The node's disk-fault file (`RAFTGATE_DISK_FAULTS`, see `raftgate_storage::faults`).
    pub fault_file: PathBuf,
    /// The node's clock-skew file (`RAFTGATE_CLOCK_SKEW`, see `raftgate_proxy::clock`).
    pub skew_file: PathBuf,
    /// The data dir is a small tmpfs this harness mounted (unmounted on drop).
    small_disk: bool,
    /// The data dir is a power-loss disk (`powerfs`) over `<data dir>.platter`.
    power: Option<crate::powerfs::PowerFs>,
}

impl NodeProc {
    pub fn new(id: u64, root: &Path) -> Self {
        Self {
            id,
            raft_port: free_port(),
            admin_port: free_port(),
            proxy_port: free_port(),
            data_dir: root.join(format!("node{id}")),
            log_path: root.join(format!("node{id}.log")),
            args: Vec::new(),
            child: None,
            paused: false,
            fault_file: root.join(format!("node{id}.disk-faults")),
            skew_file: root.join(format!("node{id}.clock-skew")),
            small_disk: false,
            power: None,
        }
    }

    pub fn raft_addr(&self) -> String {
        format!("127.0.0.1:{}", self.raft_port)
    }

    pub fn proxy_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy_port)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// Starts the node with the standard flags plus `extra`.
    pub fn start(&mut self, extra: &[String]) {
        let mut args = vec![
            "serve".to_string(),
            "--id".into(),
            self.id.to_string(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
            "--raft-addr".into(),
            self.raft_addr(),
            "--admin-addr".into(),
            format!("127.0.0.1:{}", self.admin_port),
            "--proxy-addr".into(),
            format!("127.0.0.1:{}", self.proxy_port),
        ];
        args.extend(extra.iter().cloned());
        self.args = args;
        self.spawn();
    }

    fn spawn(&mut self) {
        // A process that exited on its own (fail-stop) may be started again.
        if self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_)))) {
            self.child = None;
        }
        assert!(self.child.is_none(), "node {} is already running", self.id);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).expect("open node log");
        let child = Command::new(raftgate_bin())
            .args(&self.args)
            .env("RAFTGATE_LOG", "info,openraft=warn")
            .env("RAFTGATE_DISK_FAULTS", &self.fault_file)
            .env("RAFTGATE_CLOCK_SKEW", &self.skew_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn raftgate");
        self.child = Some(child);
        self.paused = false;
    }

    /// Starts again with the arguments of the last start (same id, same data dir).
    pub fn restart(&mut self) {
        self.spawn();
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().map(|s| s.is_none()).unwrap_or(false),
            None => false,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args([sig, &c.id().to_string()]).status();
        }
    }

    /// SIGKILL: a crash. Waits for the process to be gone.
    pub fn kill(&mut self) {
        if self.paused {
            self.signal("-CONT");
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (bounded) for a graceful exit; SIGKILL if it does not come.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if self.paused {
            self.signal("-CONT");
            self.paused = false;
        }
        let mut c = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    /// SIGSTOP: the process freezes (a GC pause, a stuck VM).
    pub fn pause(&mut self) {
        self.signal("-STOP");
        self.paused = true;
    }

    pub fn resume(&mut self) {
        self.signal("-CONT");
        self.paused = false;
    }

    /// Removes the node's data dir (the node must be stopped).
    pub fn wipe(&mut self) {
        assert!(self.child.is_none(), "stop node {} before wiping it", self.id);
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }

    /// Makes every synced write of this node fail or slow down: `"eio"`, `"enospc"`,
    /// `"delay <ms>"`, or `""` for none. Takes effect at the node's next synced write.
    pub fn set_disk_fault(&self, fault: &str) {
        std::fs::write(&self.fault_file, fault).expect("write disk-fault file");
    }

    /// Shifts the node's view of the system clock by `ms` (negative: back), as an NTP step or
    /// an operator's `date` would. Takes effect within 100 ms.
    pub fn set_clock_skew(&self, ms: i64) {
        std::fs::write(&self.skew_file, ms.to_string()).expect("write clock-skew file");
    }

    /// Moves the (stopped) node's data dir onto a tmpfs of `bytes`, a real small disk that
    /// fills up. Needs root (mount); returns an error otherwise.
    pub fn move_to_small_disk(&mut self, bytes: u64) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "stop node {} before moving its data dir", self.id);
        let old = self.data_dir.with_extension("before-small-disk");
        std::fs::rename(&self.data_dir, &old)?;
        std::fs::create_dir_all(&self.data_dir)?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&self.data_dir)
            .status()?;
        if !mounted.success() {
            std::fs::remove_dir(&self.data_dir)?;
            std::fs::rename(&old, &self.data_dir)?;
            anyhow::bail!("mount -t tmpfs failed (needs root)");
        }
        self.small_disk = true;
        let copied = Command::new("cp").arg("-a").arg(format!("{}/.", old.display())).arg(&self.data_dir).status()?;
        anyhow::ensure!(copied.success(), "copying the data dir onto the small disk failed");
        std::fs::remove_dir_all(&old)?;
        Ok(())
    }

    /// Puts the (stopped) node's data dir on a disk that can lose power (see
    /// [`crate::powerfs`]): what the node wrote moves to `<data dir>.platter`, and the data dir
    /// becomes a FUSE view of it that keeps unsynced writes in memory. Needs root.
    pub fn use_power_loss_disk(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "stop node {} before changing its disk", self.id);
        anyhow::ensure!(self.power.is_none(), "node {} is already on a power-loss disk", self.id);
        let platter = self.data_dir.with_extension("platter");
        std::fs::create_dir_all(&self.data_dir)?;
        std::fs::rename(&self.data_dir, &platter)?;
        std::fs::create_dir_all(&self.data_dir)?;
        match crate::powerfs::PowerFs::mount(&platter, &self.data_dir) {
            Ok(fs) => {
                self.power = Some(fs);
                Ok(())
            }
            Err(e) => {
                std::fs::remove_dir(&self.data_dir)?;
                std::fs::rename(&platter, &self.data_dir)?;
                anyhow::bail!("mounting the power-loss disk failed (needs root and /dev/fuse): {e}")
            }
        }
    }

    /// Bytes the node wrote and has not synced yet (0 off a power-loss disk).
    pub fn unsynced_bytes(&self) -> u64 {
        self.power.as_ref().map_or(0, crate::powerfs::PowerFs::unsynced_bytes)
    }

    /// The node loses power: the process dies (SIGKILL) and its disk keeps only what was
    /// synced, or with `tear`, also a random prefix of what was not (a torn tail). Power comes
    /// back at once; the node stays down until [`Self::restart`].
    pub fn power_cut(&mut self, tear: Option<&mut dyn rand::RngCore>) -> anyhow::Result<crate::powerfs::CutReport> {
        self.kill();
        let fs = self.power.as_mut().ok_or_else(|| anyhow::anyhow!("node {} is not on a power-loss disk", self.id))?;
        let report = fs.cut(tear);
        fs.restore_power()?;
        Ok(report)
    }

    /// Fills the node's disk with a filler file until the filesystem refuses more.
    pub fn fill_disk(&self) -> u64 {
        use std::io::Write;
        let mut f = std::fs::File::create(self.data_dir.join("filler")).expect("create filler");
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        // Bounded by the filesystem's size; tmpfs says ENOSPC when it is full.
        while f.write_all(&chunk).is_ok() {
            written += chunk.len() as u64;
        }
        let _ = f.flush();
        written
    }

    /// Removes the filler: the disk has room again.
    pub fn free_disk(&self) {
        let _ = std::fs::remove_file(self.data_dir.join("filler"));
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
        if self.small_disk {
            let _ = Command::new("umount").arg(&self.data_dir).status();
        }
    }
}

/// Resident memory of a process, in KiB (Linux; 0 if it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.split_whitespace().next()?.parse().ok()))
        })
        .unwrap_or(0)
}
