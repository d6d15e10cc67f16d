//! Small helpers for containers and demos: `raftgate health` (a HEALTHCHECK that needs no curl
//! in the image) and `raftgate demo-upstream` (an echo server to put behind a route).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::Request;
use axum::Json;
use serde_json::{json, Value};

/// Exits 0 when `GET {addr}/v1/health` answers 200 within 2 s.
pub async fn health(addr: &str) -> anyhow::Result<()> {
    let url = format!("{}/v1/health", addr.trim_end_matches('/'));
    let resp = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?.get(&url).send().await?;
    anyhow::ensure!(resp.status().is_success(), "{url} answered {}", resp.status());
    println!("{}", resp.text().await?);
    Ok(())
}

async fn echo(req: Request) -> Json<Value> {
    let headers: BTreeMap<String, String> =
        req.headers().iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).to_string())).collect();
    Json(json!({
        "method": req.method().as_str(),
        "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "headers": headers,
    }))
}

/// Answers every request with a JSON echo of its method, path and headers.
pub async fn upstream(addr: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "demo upstream listening");
    axum::serve(listener, axum::Router::new().fallback(echo)).await?;
    Ok(())
}
