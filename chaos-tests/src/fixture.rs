//! A gateway policy for data-plane tests: roles, a consumer, keys, routes and limits.

use serde_json::{json, Value};

use crate::TestCluster;

pub struct Fixture {
    /// A key of consumer `acme` with role `reader` (GET /orders/**, GET /public/**).
    pub reader_key: String,
    pub reader_id: String,
    /// A key of consumer `ops` with role `admin` (everything under /admin/**).
    pub admin_key: String,
}

/// One admin call through node 1 that must succeed; its answer.
pub async fn ok(c: &TestCluster, method: reqwest::Method, path: &str, body: Value) -> Value {
    let (status, reply) = c.req(1, method.clone(), path, Some(body)).await.expect("admin call");
    assert!((200..300).contains(&status), "{method} {path}: {status} {reply}");
    reply
}

/// Installs the test policy through node 1. Routes:
/// `api` `/` → upstream (api_key, limit `per-key` 1000/min), `public` `/public` (no auth,
/// limit `per-ip` 5/min), `limited` `/limited` (limit `tight` 3/min per key).
pub async fn install(c: &TestCluster, upstream: &str) -> Fixture {
    use reqwest::Method;
    ok(
        c,
        Method::PUT,
        "/v1/roles/reader",
        json!({ "permissions": [
            { "methods": ["GET"], "path": "/orders/**" },
            { "methods": ["GET"], "path": "/public/**" },
            { "methods": ["GET"], "path": "/limited/**" },
        ]}),
    )
    .await;
    ok(c, Method::PUT, "/v1/roles/admin", json!({ "permissions": [{ "methods": ["*"], "path": "/admin/**" }] })).await;
    ok(c, Method::PUT, "/v1/rate-limits/per-key", json!({ "limit": 1000, "window_s": 60, "per": "key" })).await;
    ok(c, Method::PUT, "/v1/rate-limits/per-ip", json!({ "limit": 5, "window_s": 60, "per": "ip" })).await;
    ok(c, Method::PUT, "/v1/rate-limits/tight", json!({ "limit": 3, "window_s": 60, "per": "key" })).await;
    ok(
        c,
        Method::PUT,
        "/v1/routes/api",
        json!({ "path_prefix": "/", "upstreams": [upstream], "rate_limits": ["per-key"] }),
    )
    .await;
    ok(
        c,
        Method::PUT,
        "/v1/routes/public",
        json!({ "path_prefix": "/public", "upstreams": [upstream], "auth": ["none"], "rate_limits": ["per-ip"] }),
    )
    .await;
    ok(
        c,
        Method::PUT,
        "/v1/routes/limited",
        json!({ "path_prefix": "/limited", "upstreams": [upstream], "rate_limits": ["tight"] }),
    )
    .await;
    ok(c, Method::POST, "/v1/consumers", json!({ "name": "acme", "roles": ["reader"] })).await;
    ok(c, Method::POST, "/v1/consumers", json!({ "name": "ops", "roles": ["admin"] })).await;
    let r = ok(c, Method::POST, "/v1/keys", json!({ "consumer": "acme" })).await;
    let a = ok(c, Method::POST, "/v1/keys", json!({ "consumer": "ops" })).await;
    Fixture {
        reader_key: r["key"].as_str().expect("key").to_string(),
        reader_id: r["id"].as_str().expect("id").to_string(),
        admin_key: a["key"].as_str().expect("key").to_string(),
    }
}
