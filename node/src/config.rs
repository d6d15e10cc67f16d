//! `raftgate serve` configuration: flags over a TOML file over documented defaults.
//!
//! Every flag has a key of the same name (dashes become underscores) in the file; unknown keys
//! are an error. Every validation error names the key and says how to fix it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Defaults for the no-flag single-node try-out.
pub const DEFAULT_RAFT_ADDR: &str = "127.0.0.1:7101";
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:7201";
pub const DEFAULT_PROXY_ADDR: &str = "127.0.0.1:7301";
pub const DEFAULT_DATA_DIR: &str = "raftgate-data";
/// Shortest bootstrap admin token accepted (contract: at least 32 characters).
pub const ADMIN_TOKEN_LEN_MIN: usize = 32;

/// The `serve` flags; each is optional so that the file and the defaults can fill it.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ServeArgs {
    /// TOML config file; flags given on the command line win over its keys.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Node id, a u64 never reused for another node [default: 1].
    #[arg(long)]
    pub id: Option<u64>,
    /// Directory for RocksDB and the node's local files [default: ./raftgate-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Node-to-node listener (Raft RPC, forwarded admin writes) [default: 127.0.0.1:7101].
    #[arg(long)]
    pub raft_addr: Option<String>,
    /// Admin API listener [default: 127.0.0.1:7201].
    #[arg(long)]
    pub admin_addr: Option<String>,
    /// Data-plane listener [default: 127.0.0.1:7301].
    #[arg(long)]
    pub proxy_addr: Option<String>,
    /// Initial voters, `1=HOST:PORT,2=HOST:PORT,...`; ignored by a node that already has state.
    #[arg(long)]
    pub peers: Option<String>,
    /// Bootstrap admin token file (≥ 32 characters), required for a cluster's first start.
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Start empty and wait to be added with `POST /v1/cluster/members` (no bootstrap).
    #[arg(long)]
    pub join: bool,
    /// Raft heartbeat interval in ms [default: 100].
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// Raft election timeout lower bound in ms [default: 300].
    #[arg(long)]
    pub election_timeout_ms_min: Option<u64>,
    /// Raft election timeout upper bound in ms [default: 600].
    #[arg(long)]
    pub election_timeout_ms_max: Option<u64>,
    /// Build a snapshot (and compact the log) after this many entries [default: 10000].
    #[arg(long)]
    pub snapshot_logs_since_last: Option<u64>,
    /// Comma-separated IPs of load balancers whose X-Forwarded-For is believed [default: none].
    #[arg(long)]
    pub trusted_proxies: Option<String>,
    /// A client must send a whole request head within this time [default: 10000].
    #[arg(long)]
    pub proxy_header_read_timeout_ms: Option<u64>,
    /// Proxy connections open at once from one client IP; trusted proxies exempt [default: 256].
    #[arg(long)]
    pub proxy_connections_per_ip_max: Option<u32>,
    /// Threads serving the proxy listener, each with its own event loop; 0 = one per CPU the
    /// process may run on [default: 0].
    #[arg(long)]
    pub proxy_threads: Option<usize>,
    /// A request body must arrive completely within this time, or 408 [default: 30000].
    #[arg(long)]
    pub proxy_body_read_timeout_ms: Option<u64>,
    /// An upstream must send its response head within this time of each attempt to forward
    /// a request, or 504 [default: 30000].
    #[arg(long)]
    pub proxy_upstream_response_timeout_ms: Option<u64>,
    /// A proxy connection with no request in flight this long is closed [default: 60000].
    #[arg(long)]
    pub proxy_idle_timeout_ms: Option<u64>,
    /// Serve the proxy over TLS with this certificate chain (PEM); reloaded when it changes.
    #[arg(long)]
    pub proxy_tls_cert_file: Option<PathBuf>,
    /// The private key (PEM) of `proxy_tls_cert_file`.
    #[arg(long)]
    pub proxy_tls_key_file: Option<PathBuf>,
    /// Local IP that outgoing node-to-node connections come from [default: chosen by the OS].
    #[arg(long)]
    pub raft_source_ip: Option<String>,
    /// A node that has not renewed its freshness lease within this time stops vouching for its
    /// policy (503) [default: 2000].
    #[arg(long)]
    pub staleness_ms_max: Option<u64>,
    /// Audit events older than this are removed from this node's audit store; 0 keeps them
    /// all [default: 0].
    #[arg(long)]
    pub audit_retention_s: Option<u64>,
}

/// The same keys in a TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<u64>,
    data_dir: Option<PathBuf>,
    raft_addr: Option<String>,
    admin_addr: Option<String>,
    proxy_addr: Option<String>,
    peers: Option<String>,
    admin_token_file: Option<PathBuf>,
    join: Option<bool>,
    heartbeat_ms: Option<u64>,
    election_timeout_ms_min: Option<u64>,
    election_timeout_ms_max: Option<u64>,
    snapshot_logs_since_last: Option<u64>,
    trusted_proxies: Option<String>,
    proxy_header_read_timeout_ms: Option<u64>,
    proxy_connections_per_ip_max: Option<u32>,
    proxy_threads: Option<usize>,
    proxy_body_read_timeout_ms: Option<u64>,
    proxy_upstream_response_timeout_ms: Option<u64>,
    proxy_idle_timeout_ms: Option<u64>,
    proxy_tls_cert_file: Option<PathBuf>,
    proxy_tls_key_file: Option<PathBuf>,
    raft_source_ip: Option<String>,
    staleness_ms_max: Option<u64>,
    audit_retention_s: Option<u64>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub id: u64,
    pub data_dir: PathBuf,
    pub raft_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub proxy_addr: SocketAddr,
    /// Initial voters by id; for the single-node default, just this node.
    pub peers: BTreeMap<u64, String>,
    pub admin_token_file: Option<PathBuf>,
    pub join: bool,
    pub heartbeat_ms: u64,
    pub election_timeout_ms_min: u64,
    pub election_timeout_ms_max: u64,
    pub snapshot_logs_since_last: u64,
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub proxy_header_read_timeout_ms: u64,
    pub proxy_connections_per_ip_max: u32,
    /// Proxy threads; 0 = one per CPU.
    pub proxy_threads: usize,
    pub proxy_body_read_timeout_ms: u64,
    pub proxy_upstream_response_timeout_ms: u64,
    pub proxy_idle_timeout_ms: u64,
    /// (certificate chain, private key) PEM files for TLS on the proxy listener.
    pub proxy_tls: Option<(PathBuf, PathBuf)>,
    pub raft_source_ip: Option<std::net::IpAddr>,
    pub staleness_ms_max: u64,
    /// Audit events older than this are pruned; 0 keeps them all.
    pub audit_retention_s: u64,
    /// True when no `peers` were given: the embedded single-node try-out.
    pub single_node_default: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {message}")]
pub struct ConfigError {
    pub key: &'static str,
    pub message: String,
}

fn err(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError { key, message: message.into() }
}

fn addr(key: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        err(key, format!("{value:?} is not an IP:PORT socket address; write it like 127.0.0.1:7101 (host names are not resolved here)"))
    })
}

/// Parses `1=HOST:PORT,2=HOST:PORT`.
pub fn parse_peers(s: &str) -> Result<BTreeMap<u64, String>, ConfigError> {
    let mut peers = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, a) = part.split_once('=').ok_or_else(|| {
            err("peers", format!("entry {part:?} is not ID=HOST:PORT; write it like 1=127.0.0.1:7101"))
        })?;
        let id: u64 =
            id.trim().parse().map_err(|_| err("peers", format!("entry {part:?}: {id:?} is not a node id (a u64)")))?;
        let a = a.trim();
        if a.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
            return Err(err("peers", format!("entry {part:?}: {a:?} is not HOST:PORT")));
        }
        if peers.insert(id, a.to_string()).is_some() {
            return Err(err("peers", format!("node id {id} appears twice; each id names one node")));
        }
    }
    if peers.is_empty() {
        return Err(err("peers", "the list is empty; give at least this node, like 1=127.0.0.1:7101"));
    }
    Ok(peers)
}

impl Config {
    /// Merges flags over the file (if any) over defaults, then validates.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| err("config", format!("cannot read {}: {e}", path.display())))?;
                toml::from_str(&text).map_err(|e| err("config", format!("{}: {}", path.display(), e.message())))?
            }
        };
        let id = args.id.or(file.id).unwrap_or(1);
        let raft_addr_s = args.raft_addr.clone().or(file.raft_addr).unwrap_or_else(|| DEFAULT_RAFT_ADDR.into());
        let raft_addr = addr("raft_addr", &raft_addr_s)?;
        let admin_addr = addr(
            "admin_addr",
            &args.admin_addr.clone().or(file.admin_addr).unwrap_or_else(|| DEFAULT_ADMIN_ADDR.into()),
        )?;
        let proxy_addr = addr(
            "proxy_addr",
            &args.proxy_addr.clone().or(file.proxy_addr).unwrap_or_else(|| DEFAULT_PROXY_ADDR.into()),
        )?;
        let join = args.join || file.join.unwrap_or(false);
        let peers_s = args.peers.clone().or(file.peers);
        let single_node_default = peers_s.is_none() && !join;
        let peers = match &peers_s {
            Some(s) => parse_peers(s)?,
            None => BTreeMap::from([(id, raft_addr_s.clone())]),
        };
        if !join && !peers.contains_key(&id) {
            return Err(err("peers", format!("this node's id {id} is not in the list; add {id}=<its raft_addr>, or start it with --join to be added later")));
        }
        let heartbeat_ms = args.heartbeat_ms.or(file.heartbeat_ms).unwrap_or(100);
        // openraft 0.9 makes a follower that heard from a leader wait a lease of
        // election_timeout_max plus a random election timeout before it campaigns, so failover
        // takes 1.5–2 × election_timeout_max: 600 ms keeps it near 1.2 s. 300 ms is still 3
        // heartbeats and far above a slow disk's fsync p99.
        let election_timeout_ms_min = args.election_timeout_ms_min.or(file.election_timeout_ms_min).unwrap_or(300);
        let election_timeout_ms_max = args.election_timeout_ms_max.or(file.election_timeout_ms_max).unwrap_or(600);
        if heartbeat_ms == 0 {
            return Err(err("heartbeat_ms", "must be at least 1"));
        }
        if election_timeout_ms_min <= heartbeat_ms * 2 {
            return Err(err(
                "election_timeout_ms_min",
                format!("{election_timeout_ms_min} must be more than twice heartbeat_ms ({heartbeat_ms}), or followers start elections between heartbeats"),
            ));
        }
        if election_timeout_ms_max <= election_timeout_ms_min {
            return Err(err(
                "election_timeout_ms_max",
                format!("{election_timeout_ms_max} must be greater than election_timeout_ms_min ({election_timeout_ms_min}); the gap is what randomises elections"),
            ));
        }
        let snapshot_logs_since_last =
            args.snapshot_logs_since_last.or(file.snapshot_logs_since_last).unwrap_or(10_000);
        if snapshot_logs_since_last == 0 {
            return Err(err("snapshot_logs_since_last", "must be at least 1"));
        }
        let trusted_proxies = match args.trusted_proxies.clone().or(file.trusted_proxies) {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse().map_err(|_| {
                        err("trusted_proxies", format!("{s:?} is not an IP address; list IPs like 10.0.0.5,10.0.0.6"))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let proxy_header_read_timeout_ms =
            args.proxy_header_read_timeout_ms.or(file.proxy_header_read_timeout_ms).unwrap_or(10_000);
        if !(100..=600_000).contains(&proxy_header_read_timeout_ms) {
            return Err(err("proxy_header_read_timeout_ms", "must be 100 to 600000 (ms)"));
        }
        let proxy_connections_per_ip_max =
            args.proxy_connections_per_ip_max.or(file.proxy_connections_per_ip_max).unwrap_or(256);
        if !(1..=100_000).contains(&proxy_connections_per_ip_max) {
            return Err(err("proxy_connections_per_ip_max", "must be 1 to 100000 (connections)"));
        }
        let proxy_threads = args.proxy_threads.or(file.proxy_threads).unwrap_or(0);
        if proxy_threads > 1024 {
            return Err(err("proxy_threads", "must be 0 (one per CPU) to 1024 (threads)"));
        }
        let proxy_body_read_timeout_ms =
            args.proxy_body_read_timeout_ms.or(file.proxy_body_read_timeout_ms).unwrap_or(30_000);
        if !(100..=3_600_000).contains(&proxy_body_read_timeout_ms) {
            return Err(err("proxy_body_read_timeout_ms", "must be 100 to 3600000 (ms)"));
        }
        let proxy_upstream_response_timeout_ms =
            args.proxy_upstream_response_timeout_ms.or(file.proxy_upstream_response_timeout_ms).unwrap_or(30_000);
        if !(100..=3_600_000).contains(&proxy_upstream_response_timeout_ms) {
            return Err(err("proxy_upstream_response_timeout_ms", "must be 100 to 3600000 (ms)"));
        }
        let proxy_idle_timeout_ms = args.proxy_idle_timeout_ms.or(file.proxy_idle_timeout_ms).unwrap_or(60_000);
        if !(100..=3_600_000).contains(&proxy_idle_timeout_ms) {
            return Err(err("proxy_idle_timeout_ms", "must be 100 to 3600000 (ms)"));
        }
        let proxy_tls = match (
            args.proxy_tls_cert_file.clone().or(file.proxy_tls_cert_file),
            args.proxy_tls_key_file.clone().or(file.proxy_tls_key_file),
        ) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((cert, key)),
            (Some(_), None) => {
                return Err(err("proxy_tls_key_file", "is missing: TLS needs the private key of proxy_tls_cert_file"))
            }
            (None, Some(_)) => {
                return Err(err("proxy_tls_cert_file", "is missing: TLS needs the certificate of proxy_tls_key_file"))
            }
        };
        let raft_source_ip = match args.raft_source_ip.clone().or(file.raft_source_ip) {
            None => None,
            Some(ip) => Some(ip.parse().map_err(|_| err("raft_source_ip", format!("{ip:?} is not an IP address")))?),
        };
        let staleness_ms_max = args.staleness_ms_max.or(file.staleness_ms_max).unwrap_or(2_000);
        if staleness_ms_max < 4 * heartbeat_ms || staleness_ms_max > 600_000 {
            return Err(err(
                "staleness_ms_max",
                format!("{staleness_ms_max} must be at least 4 × heartbeat_ms ({}) and at most 600000; the lease is renewed 8 times per period", 4 * heartbeat_ms),
            ));
        }
        let audit_retention_s = args.audit_retention_s.or(file.audit_retention_s).unwrap_or(0);
        if audit_retention_s > AUDIT_RETENTION_S_MAX {
            return Err(err(
                "audit_retention_s",
                format!("must be 0 (keep every event) to {AUDIT_RETENTION_S_MAX} (seconds; 2592000 is 30 days)"),
            ));
        }
        Ok(Config {
            id,
            staleness_ms_max,
            audit_retention_s,
            raft_source_ip,
            trusted_proxies,
            proxy_header_read_timeout_ms,
            proxy_connections_per_ip_max,
            proxy_threads,
            proxy_body_read_timeout_ms,
            proxy_upstream_response_timeout_ms,
            proxy_idle_timeout_ms,
            proxy_tls,
            data_dir: args.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            raft_addr,
            admin_addr,
            proxy_addr,
            peers,
            admin_token_file: args.admin_token_file.clone().or(file.admin_token_file),
            join,
            heartbeat_ms,
            election_timeout_ms_min,
            election_timeout_ms_max,
            snapshot_logs_since_last,
            single_node_default,
        })
    }
}

/// Reads and checks a bootstrap admin token file.
pub fn read_admin_token(path: &std::path::Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err("admin_token_file", format!("cannot read {}: {e}", path.display())))?;
    let token = text.trim().to_string();
    if token.len() < ADMIN_TOKEN_LEN_MIN {
        return Err(err(
            "admin_token_file",
            format!(
                "the token in {} is {} characters; at least {ADMIN_TOKEN_LEN_MIN} are required (make one with: head -c 32 /dev/urandom | base64)",
                path.display(),
                token.len()
            ),
        ));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(
            "admin_token_file",
            "the token contains whitespace or control characters; use one line of printable characters",
        ));
    }
    Ok(token)
}

/// The longest audit retention accepted: 100 years.
const AUDIT_RETENTION_S_MAX: u64 = 100 * 366 * 86_400;

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs::default()
    }

    #[test]
    fn no_flags_is_single_node_on_loopback() {
        let c = Config::load(&args()).unwrap();
        assert!(c.single_node_default);
        assert_eq!(c.peers, BTreeMap::from([(1, DEFAULT_RAFT_ADDR.to_string())]));
        assert!(c.admin_addr.ip().is_loopback());
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: Vec<(ServeArgs, &str)> = vec![
            (ServeArgs { peers: Some("1=a".into()), ..args() }, "peers"),
            (ServeArgs { peers: Some("2=127.0.0.1:1".into()), ..args() }, "peers"),
            (ServeArgs { peers: Some("1=127.0.0.1:1,1=127.0.0.1:2".into()), ..args() }, "peers"),
            (ServeArgs { raft_addr: Some("localhost".into()), ..args() }, "raft_addr"),
            (ServeArgs { election_timeout_ms_min: Some(150), ..args() }, "election_timeout_ms_min"),
            (ServeArgs { election_timeout_ms_max: Some(250), ..args() }, "election_timeout_ms_max"),
            (ServeArgs { proxy_threads: Some(5000), ..args() }, "proxy_threads"),
            (ServeArgs { audit_retention_s: Some(u64::MAX), ..args() }, "audit_retention_s"),
        ];
        for (a, key) in cases {
            let e = Config::load(&a).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
    }

    #[test]
    fn file_keys_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "id = 2\npeers = \"2=127.0.0.1:9\"\nbogus = 1\n").unwrap();
        let e = Config::load(&ServeArgs { config: Some(path.clone()), ..args() }).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        std::fs::write(&path, "id = 2\npeers = \"2=127.0.0.1:9\"\nproxy_threads = 1\n").unwrap();
        let c = Config::load(&ServeArgs { config: Some(path.clone()), ..args() }).unwrap();
        assert_eq!(c.id, 2);
        assert_eq!(c.proxy_threads, 1);
        let c =
            Config::load(&ServeArgs { config: Some(path), id: Some(3), peers: Some("3=127.0.0.1:9".into()), ..args() })
                .unwrap();
        assert_eq!(c.id, 3, "flags win over the file");
    }

    #[test]
    fn short_admin_token_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "short\n").unwrap();
        assert_eq!(read_admin_token(&path).unwrap_err().key, "admin_token_file");
        std::fs::write(&path, format!("{}\n", "x".repeat(40))).unwrap();
        assert_eq!(read_admin_token(&path).unwrap().len(), 40);
    }
}
