//! `raftgate serve`: startup, the background duties of a node, and the shutdown tree.
//!
//! Order matters: the Raft listener is up before the cluster is initialised, so peers can vote;
//! the admin listener comes last. On SIGTERM the listeners stop accepting and drain, then Raft
//! shuts down, then storage closes when the last handle drops.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft::{BasicNode, SnapshotPolicy};
use raftgate_proxy::audit::{AuditQueue, AUDIT_QUEUE_BYTES_MAX, AUDIT_QUEUE_LEN_MAX};
use raftgate_proxy::freshness::Freshness;
use raftgate_proxy::gateway::{Gateway, GatewayConfig};
use raftgate_proxy::server::ServerConfig;
use raftgate_raft::app::GatewayApp;
use raftgate_raft::cluster::{Cluster, ClusterError};
use raftgate_raft::command::Op;
use raftgate_raft::network::wire::Caller;
use raftgate_raft::network::{NetworkFactory, PeerRpc};
use raftgate_raft::operations::BootstrapAdminToken;
use raftgate_raft::Raft;
use raftgate_storage::{RocksLogStore, RocksStateMachine};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{read_admin_token, Config, ServeArgs};
use crate::{admin, identity};

/// How long in-flight requests get to finish after SIGTERM before the node stops anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Snapshot transfer: per-chunk timeout. openraft's 200 ms default is too small for real
/// snapshots on a busy 2-core node.
const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 5_000;
/// Snapshot chunk size: 1 MiB keeps each RPC well under the listener's body limit.
const SNAPSHOT_CHUNK_LEN: u64 = 1024 * 1024;
/// Log entries kept after a snapshot, so a briefly lagging follower catches up from the log.
const LOGS_KEPT_AFTER_SNAPSHOT: u64 = 1_000;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(&args)?;
    // Checked before anything else happens: a bad certificate is a configuration error.
    let tls = match &config.proxy_tls {
        None => None,
        Some((cert, key)) => Some(
            raftgate_proxy::tls::Tls::load(cert, key)
                .map_err(|e| anyhow::anyhow!("config key `proxy_tls_cert_file`/`proxy_tls_key_file`: {e}"))?,
        ),
    };
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("config key `data_dir`: cannot create {}", config.data_dir.display()))?;
    let (incarnation, fresh) = identity::load_or_create(&config.data_dir, config.id)?;
    let bootstrap_token = bootstrap_token(&config, fresh)?;

    if let Some(file) = raftgate_proxy::clock::skew_hook() {
        tracing::warn!(file = %file.display(), "clock-skew injection is on (RAFTGATE_CLOCK_SKEW): for chaos tests only");
    }
    if let Some(file) = raftgate_storage::faults::enabled() {
        tracing::warn!(file = %file.display(), "disk-fault injection is on (RAFTGATE_DISK_FAULTS): for chaos tests only");
    }
    let db = raftgate_storage::open(&config.data_dir.join("db"))?;
    let log_store = RocksLogStore::new(db.clone());
    let commit_index = log_store.committed_index();
    let app = GatewayApp::new();
    let view = app.view();
    let policy = app.policy();
    let sm = RocksStateMachine::open(db.clone(), &config.data_dir, app)?;

    let raft_config = openraft::Config {
        cluster_name: "raftgate".into(),
        heartbeat_interval: config.heartbeat_ms,
        election_timeout_min: config.election_timeout_ms_min,
        election_timeout_max: config.election_timeout_ms_max,
        install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_LEN,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_logs_since_last),
        max_in_snapshot_log_to_keep: LOGS_KEPT_AFTER_SNAPSHOT.min(config.snapshot_logs_since_last),
        ..Default::default()
    }
    .validate()
    .context("raft settings")?;
    let rpc = PeerRpc::new(config.id, incarnation, view.clone(), config.raft_source_ip);
    let network = NetworkFactory { rpc: rpc.clone() };
    let raft = Raft::new(config.id, Arc::new(raft_config), network, log_store, sm).await.context("starting raft")?;
    let cluster = Arc::new(Cluster::new(config.id, incarnation, raft.clone(), view, rpc));

    let audit_log =
        Arc::new(raftgate_storage::AuditLog::open(&config.data_dir.join("audit")).context("opening the audit store")?);
    // A shard of the audit queue for each proxy thread (see `AuditQueue::claim`).
    let proxy_threads = raftgate_proxy::server::thread_count(config.proxy_threads);
    let (audit_queue, audit_rx) =
        AuditQueue::new(AUDIT_QUEUE_LEN_MAX, AUDIT_QUEUE_BYTES_MAX, proxy_threads, crate::audit::encode_into);
    let audit_writer = crate::audit::spawn_writer(audit_log.clone(), audit_rx, audit_queue.stats_handle())
        .context("starting the audit writer")?;
    let fresh = Arc::new(Freshness::new());
    let gateway = Arc::new(Gateway::new(
        GatewayConfig {
            node_id: config.id,
            trusted_proxies: config.trusted_proxies.clone(),
            body_read_timeout: Duration::from_millis(config.proxy_body_read_timeout_ms),
            upstream_response_timeout: Duration::from_millis(config.proxy_upstream_response_timeout_ms),
            ..GatewayConfig::default()
        },
        policy,
        fresh.clone(),
        audit_queue.clone(),
    ));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let proxy_listener = std::net::TcpListener::bind(config.proxy_addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .with_context(|| format!("config key `proxy_addr`: cannot listen on {}", config.proxy_addr))?;
    let raft_listener = TcpListener::bind(config.raft_addr)
        .await
        .with_context(|| format!("config key `raft_addr`: cannot listen on {}", config.raft_addr))?;
    let admin_listener = TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("config key `admin_addr`: cannot listen on {}", config.admin_addr))?;

    let raft_router = raftgate_raft::network::server::router(cluster.clone())
        .merge(crate::audit::raft_routes(cluster.clone(), audit_log.clone()));
    let raft_server = tokio::spawn(serve_http(raft_listener, raft_router, shutdown_rx.clone()));

    if !config.join && !raft.is_initialized().await? {
        let members: BTreeMap<u64, BasicNode> =
            config.peers.iter().map(|(id, a)| (*id, BasicNode { addr: a.clone() })).collect();
        tracing::info!(?members, "initialising a new cluster");
        // Every node of a fresh cluster calls this with the same list; that is safe in openraft.
        if let Err(e) = raft.initialize(members).await {
            tracing::info!(error = %e, "initialise skipped");
        }
    }

    let tls_watch = tls.clone().map(|t| tokio::spawn(raftgate_proxy::tls::watch_files(t, shutdown_rx.clone())));
    let server_config = ServerConfig {
        tls,
        header_read_timeout: Duration::from_millis(config.proxy_header_read_timeout_ms),
        idle_timeout: Duration::from_millis(config.proxy_idle_timeout_ms),
        connections_per_ip_max: config.proxy_connections_per_ip_max,
        threads: proxy_threads,
        ..ServerConfig::default()
    };
    let proxy_server = tokio::spawn(raftgate_proxy::server::serve_threads(
        proxy_listener,
        gateway.clone(),
        server_config,
        shutdown_rx.clone(),
    ));
    let housekeeping = tokio::spawn(limiter_housekeeping(gateway.clone(), shutdown_rx.clone()));
    let staleness = Duration::from_millis(config.staleness_ms_max);
    let alerts = tokio::spawn(crate::alerts::run(cluster.clone(), audit_queue.clone(), shutdown_rx.clone()));
    let quota = tokio::spawn(raftgate_raft::quota::run(
        cluster.clone(),
        gateway.limits.global.clone(),
        gateway.limits.auth_reports.clone(),
        shutdown_rx.clone(),
    ));
    let lease = tokio::spawn(raftgate_raft::lease::run(cluster.clone(), fresh.clone(), staleness, shutdown_rx.clone()));
    let prevote = tokio::spawn(raftgate_raft::prevote::run(cluster.clone(), shutdown_rx.clone()));
    let witness = tokio::spawn(crate::audit::send_witness(cluster.clone(), audit_log.clone(), shutdown_rx.clone()));
    let retention = (config.audit_retention_s > 0).then(|| {
        tokio::spawn(crate::audit::retention(
            cluster.clone(),
            audit_log.clone(),
            audit_queue.clone(),
            Duration::from_secs(config.audit_retention_s),
            shutdown_rx.clone(),
        ))
    });
    let duties_done = Arc::new(AtomicBool::new(false));
    let admin_state = admin::AdminState {
        commit_index,
        cluster: cluster.clone(),
        node_id: config.id,
        audit: audit_log.clone(),
        audit_queue: audit_queue.clone(),
        gateway: gateway.clone(),
        fresh: fresh.clone(),
        staleness,
        duties_done: duties_done.clone(),
    };
    let admin_server = tokio::spawn(serve_http(admin_listener, admin::router(admin_state), shutdown_rx.clone()));
    let duties = tokio::spawn(node_duties(cluster.clone(), bootstrap_token, duties_done, shutdown_rx.clone()));

    tracing::info!(
        node_id = config.id,
        raft_addr = %config.raft_addr,
        admin_addr = %config.admin_addr,
        proxy_addr = %config.proxy_addr,
        data_dir = %config.data_dir.display(),
        "raftgate node started"
    );

    tokio::select! {
        () = wait_for_signal() => {}
        reason = raft_stopped(&raft) => {
            // Fail-stop: a node that cannot persist (disk full, fsync failed) must not go on
            // answering as if it could. Its supervisor restarts it; it recovers from what is on
            // disk, or fails again at once while the disk is still bad.
            tracing::error!(%reason, "Raft stopped on an error; this node stops (fail-stop)");
            std::process::exit(4);
        }
    }
    tracing::info!("shutting down: draining listeners");
    let _ = shutdown_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        let _ = proxy_server.await;
        let _ = admin_server.await;
        let _ = duties.await;
        let _ = housekeeping.await;
        let _ = lease.await;
        let _ = prevote.await;
        let _ = witness.await;
        if let Some(r) = retention {
            let _ = r.await;
        }
        if let Some(t) = tls_watch {
            let _ = t.await;
        }
        let _ = quota.await;
        let _ = alerts.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("requests still running after the grace period; stopping anyway");
    }
    // The writer ends once every sender is gone; give it the grace period to flush.
    drop(audit_queue);
    drop(gateway);
    match tokio::time::timeout(SHUTDOWN_GRACE, tokio::task::spawn_blocking(move || audit_writer.join())).await {
        Err(_) => tracing::warn!("audit writer did not finish flushing in time"),
        // It stopped early (a bug): the batch it held, the events still queued then and every
        // event recorded after were counted in `raftgate_audit_dropped` (it said so then).
        Ok(Ok(Err(_))) => tracing::error!("the audit writer had stopped on a panic"),
        Ok(_) => {}
    }
    raft.shutdown().await.ok();
    raft_server.abort();
    let _ = raft_server.await;
    drop(cluster);
    tracing::info!("stopped");
    Ok(())
}

/// Resolves when the Raft core stops on a fatal error (a storage write failed, a panic in the
/// core), with the reason.
async fn raft_stopped(raft: &openraft::Raft<raftgate_raft::TypeConfig>) -> String {
    let mut metrics = raft.metrics();
    loop {
        if let Err(e) = &metrics.borrow().running_state {
            return e.to_string();
        }
        if metrics.changed().await.is_err() {
            return "the Raft core ended".to_string();
        }
    }
}

/// The bootstrap admin token's digest, if this start needs one. A fresh multi-node data dir
/// without a token file is refused; the single-node try-out makes a random token instead.
fn bootstrap_token(config: &Config, fresh: bool) -> anyhow::Result<Option<[u8; 32]>> {
    if let Some(path) = &config.admin_token_file {
        let token = read_admin_token(path)?;
        return Ok(Some(Sha256::digest(token.as_bytes()).into()));
    }
    if !fresh || config.join {
        return Ok(None);
    }
    if !config.single_node_default {
        anyhow::bail!(
            "config key `admin_token_file`: a new cluster needs a bootstrap admin token; write one of at least 32 \
             characters to a file (head -c 32 /dev/urandom | base64 > token) and pass --admin-token-file token"
        );
    }
    // The no-flag try-out: a random token, written where only this user can read it.
    let token: String = hex::encode(rand::random::<[u8; 24]>());
    let path = config.data_dir.join("admin-token");
    write_private(&path, &token)?;
    tracing::info!(path = %path.display(), "generated an admin token for this single-node try-out");
    Ok(Some(Sha256::digest(token.as_bytes()).into()))
}

fn write_private(path: &std::path::Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Registers this data dir's incarnation with the cluster and proposes the bootstrap token,
/// retrying until a leader takes them. A refused registration means this node's data dir was
/// wiped: it exits rather than risk the cluster's log. `done` is set once both are applied on
/// this node, so that `/v1/health` says `ready` only when the bootstrap token works here.
async fn node_duties(
    cluster: Arc<Cluster>,
    bootstrap: Option<[u8; 32]>,
    done: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut registered = false;
    let mut token_done = bootstrap.is_none();
    let mut backoff = Duration::from_millis(200);
    while !(registered && token_done) {
        let is_member = cluster.raft.metrics().borrow().membership_config.membership().get_node(&cluster.id).is_some();
        if is_member && cluster.leader().is_some() {
            if !registered {
                match cluster.register_self().await {
                    Ok(()) => registered = true,
                    Err(ClusterError::Invalid(msg)) => {
                        tracing::error!(%msg, "this node cannot take part in the cluster; stopping");
                        std::process::exit(3);
                    }
                    Err(e) => tracing::debug!(error = %e, "registration will be retried"),
                }
            }
            if let (false, Some(digest)) = (token_done, bootstrap) {
                // Deterministic request id: every node proposing the same token is deduplicated.
                let mut request_id = [0u8; 16];
                request_id.copy_from_slice(&digest[..16]);
                let op = Op::BootstrapAdminToken(BootstrapAdminToken { digest });
                match cluster.write(Caller::Node, request_id, op).await {
                    Ok(_) => token_done = true,
                    Err(e) => tracing::debug!(error = %e, "bootstrap token will be retried"),
                }
            }
        }
        if registered && token_done {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    // Both are applied on the leader; the barrier makes them applied here too.
    loop {
        if cluster.read_barrier().await.is_ok() {
            done.store(true, Ordering::Release);
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Forgets idle rate-limit subjects once a minute.
async fn limiter_housekeeping(gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => gateway.limits.housekeeping(),
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
        }
    }
}

async fn serve_http(listener: TcpListener, router: axum::Router, mut shutdown: watch::Receiver<bool>) {
    let router = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "listener failed");
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
