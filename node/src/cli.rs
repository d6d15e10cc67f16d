//! The operator CLI: subcommands that call any node's admin API.

use std::path::PathBuf;

use anyhow::{bail, Context};
use serde_json::{json, Value};

#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// Admin API base URL of any node.
    #[arg(long, env = "RAFTGATE_ADDR", default_value = "http://127.0.0.1:7201", global = true)]
    pub addr: String,
    /// Admin token (prefer --token-file or RAFTGATE_TOKEN_FILE: command lines are visible to others).
    #[arg(long, env = "RAFTGATE_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the admin token.
    #[arg(long, env = "RAFTGATE_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCmd {
    /// Leader, term and every member's state.
    Status,
    /// Add a node (it must already run with --join): learner first, voter once caught up.
    Add { id: u64, raft_addr: String },
    /// Remove a node (the leader too); its id is never reused.
    Remove { id: u64 },
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCmd {
    /// Issue a key; the secret is printed once.
    Create {
        #[arg(long)]
        consumer: String,
        #[arg(long = "role")]
        roles: Vec<String>,
        #[arg(long)]
        expires_in_s: Option<u64>,
    },
    /// Show a key's metadata (never its secret).
    Get { id: String },
    /// List keys, optionally of one consumer.
    List {
        #[arg(long)]
        consumer: Option<String>,
    },
    /// Revoke a key.
    Revoke { id: String },
    /// Rotate a key; the old one works until the grace period ends.
    Rotate {
        id: String,
        #[arg(long)]
        grace_s: Option<u64>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ConsumersCmd {
    /// Create a consumer.
    Create {
        name: String,
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    List,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let token = match (&args.token, &args.token_file) {
            (Some(t), _) => t.clone(),
            (None, Some(f)) => {
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?.trim().to_string()
            }
            (None, None) => bail!("an admin token is needed: --token-file FILE or RAFTGATE_TOKEN_FILE"),
        };
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?;
        Ok(Self { http, base: args.addr.trim_end_matches('/').to_string(), token })
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach {}", self.base))?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = value.pointer("/error/message").and_then(Value::as_str).unwrap_or("no message");
            bail!("{status}: {msg}");
        }
        Ok(value)
    }
}

fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub async fn cluster(args: &ClientArgs, cmd: ClusterCmd) -> anyhow::Result<()> {
    let c = Client::new(args)?;
    use reqwest::Method;
    let v = match cmd {
        ClusterCmd::Status => c.call(Method::GET, "/v1/cluster", None).await?,
        ClusterCmd::Add { id, raft_addr } => {
            c.call(Method::POST, "/v1/cluster/members", Some(json!({ "id": id, "raft_addr": raft_addr }))).await?
        }
        ClusterCmd::Remove { id } => c.call(Method::DELETE, &format!("/v1/cluster/members/{id}"), None).await?,
    };
    print(&v);
    Ok(())
}

pub async fn keys(args: &ClientArgs, cmd: KeysCmd) -> anyhow::Result<()> {
    let c = Client::new(args)?;
    use reqwest::Method;
    let v = match cmd {
        KeysCmd::Create { consumer, roles, expires_in_s } => {
            let mut body = json!({ "consumer": consumer, "roles": roles });
            if let Some(s) = expires_in_s {
                body["expires_in_s"] = json!(s);
            }
            let v = c.call(Method::POST, "/v1/keys", Some(body)).await?;
            eprintln!("store the key now: it is shown once and cannot be retrieved later");
            v
        }
        KeysCmd::Get { id } => c.call(Method::GET, &format!("/v1/keys/{id}"), None).await?,
        KeysCmd::List { consumer: Some(name) } => {
            c.call(Method::GET, &format!("/v1/keys?consumer={name}"), None).await?
        }
        KeysCmd::List { consumer: None } => c.call(Method::GET, "/v1/keys", None).await?,
        KeysCmd::Revoke { id } => c.call(Method::POST, &format!("/v1/keys/{id}/revoke"), None).await?,
        KeysCmd::Rotate { id, grace_s } => {
            let body = grace_s.map(|g| json!({ "grace_s": g })).unwrap_or(json!({}));
            c.call(Method::POST, &format!("/v1/keys/{id}/rotate"), Some(body)).await?
        }
    };
    print(&v);
    Ok(())
}

pub async fn consumers(args: &ClientArgs, cmd: ConsumersCmd) -> anyhow::Result<()> {
    let c = Client::new(args)?;
    use reqwest::Method;
    let v = match cmd {
        ConsumersCmd::Create { name, roles } => {
            c.call(Method::POST, "/v1/consumers", Some(json!({ "name": name, "roles": roles }))).await?
        }
        ConsumersCmd::List => c.call(Method::GET, "/v1/consumers", None).await?,
    };
    print(&v);
    Ok(())
}
