//! `raftgate`: the node (`raftgate serve`) and the operator CLI in one binary.
//!
//! This crate owns process concerns: configuration, startup and the shutdown tree, the admin
//! API and the CLI. Replication lives in `raftgate-raft`, durability in `raftgate-storage`, the
//! policy model and data plane in `raftgate-proxy`.

mod admin;
mod alerts;
mod audit;
mod cli;
mod config;
mod demo;
mod identity;
mod serve;

use clap::{Parser, Subcommand};

/// mimalloc: the proxy path allocates a handful of small objects per request, and glibc's
/// malloc showed ~5% of proxy CPU in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "raftgate", version, about = "API access gateway replicated with Raft")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (with no flags: a single-node cluster on loopback).
    Serve(Box<config::ServeArgs>),
    /// Cluster membership and status.
    Cluster {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        cmd: cli::ClusterCmd,
    },
    /// API keys.
    Keys {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        cmd: cli::KeysCmd,
    },
    /// Exit 0 when a node's /v1/health answers (for container health checks).
    Health {
        #[arg(long, default_value = "http://127.0.0.1:7201")]
        addr: String,
    },
    /// Run a demo upstream that echoes every request as JSON.
    DemoUpstream {
        #[arg(long, default_value = "127.0.0.1:9000")]
        addr: String,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Consumers.
    Consumers {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        cmd: cli::ConsumersCmd,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check this node's hash chain (works beside a running node: opens the store read-only).
    Verify {
        #[arg(long, default_value = config::DEFAULT_DATA_DIR)]
        data_dir: std::path::PathBuf,
    },
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RAFTGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    let json = std::env::var("RAFTGATE_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => {
            init_tracing();
            serve::run(config::ServeArgs::default()).await
        }
        Some(Command::Serve(args)) => {
            init_tracing();
            serve::run(*args).await
        }
        Some(Command::Cluster { client, cmd }) => cli::cluster(&client, cmd).await,
        Some(Command::Keys { client, cmd }) => cli::keys(&client, cmd).await,
        Some(Command::Consumers { client, cmd }) => cli::consumers(&client, cmd).await,
        Some(Command::Audit { cmd: AuditCmd::Verify { data_dir } }) => audit::verify_offline(&data_dir),
        Some(Command::Health { addr }) => demo::health(&addr).await,
        Some(Command::DemoUpstream { addr }) => {
            init_tracing();
            demo::upstream(&addr).await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftgate: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
