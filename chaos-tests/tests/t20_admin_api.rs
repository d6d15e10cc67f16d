//! The admin API against a real single-node cluster: bad input gets a 4xx JSON error and
//! changes nothing; the key lifecycle behaves as the contract says.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::time::Duration;

use chaos_tests::TestCluster;
use reqwest::Method;
use serde_json::{json, Value};

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error.code>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() -> anyhow::Result<()> {
    let c = TestCluster::start(1, &[]).await?;
    c.wait_leader(Duration::from_secs(10)).await?;
    assert_eq!(c.post(1, "/v1/consumers", json!({ "name": "acme" })).await?.0, 201);
    let before = c.policy_hash(1).await?;

    let url = format!("{}/v1/consumers", c.nodes[&1].admin_url());
    let http = reqwest::Client::new();
    let no_token = http.get(&url).send().await?;
    assert_eq!(no_token.status(), 401);
    let body: Value = no_token.json().await?;
    assert_eq!(error_code(&body), "unauthorized");
    let wrong = http.get(&url).bearer_auth("not-the-token-but-long-enough-000000").send().await?;
    assert_eq!(wrong.status(), 401);
    let malformed = http.post(&url).bearer_auth(chaos_tests::ADMIN_TOKEN).body("{not json").send().await?;
    assert_eq!(malformed.status(), 400);

    let cases: Vec<(Method, &str, Option<Value>, u16)> = vec![
        (Method::POST, "/v1/consumers", Some(json!({ "name": "Bad Name" })), 400),
        (Method::POST, "/v1/consumers", Some(json!({ "name": "x", "bogus": 1 })), 400),
        (Method::POST, "/v1/consumers", Some(json!({ "name": "x", "metadata": { "a": [1] } })), 400),
        (Method::POST, "/v1/consumers", Some(json!({ "name": "acme" })), 409),
        (Method::PUT, "/v1/roles/UPPER", Some(json!({ "permissions": [] })), 400),
        (Method::PUT, "/v1/roles/r", Some(json!({ "permissions": [{ "methods": ["get"], "path": "/a" }] })), 400),
        (Method::PUT, "/v1/roles/r", Some(json!({ "permissions": [{ "methods": ["GET"], "path": "/a/../b" }] })), 400),
        (Method::PUT, "/v1/rate-limits/l", Some(json!({ "limit": 0, "window_s": 60, "per": "key" })), 400),
        (Method::PUT, "/v1/rate-limits/l", Some(json!({ "limit": 5, "window_s": 60, "per": "planet" })), 400),
        (
            Method::PUT,
            "/v1/routes/r",
            Some(json!({ "path_prefix": "orders", "upstreams": ["http://127.0.0.1:9"] })),
            400,
        ),
        (Method::PUT, "/v1/routes/r", Some(json!({ "path_prefix": "/o", "upstreams": ["ftp://x"] })), 400),
        // Only what the data plane can send to (its own parser decides): not https, no
        // credentials, query, fragment, bad port, or a path it could not write as it is.
        (Method::PUT, "/v1/routes/r", Some(json!({ "path_prefix": "/o", "upstreams": ["https://x"] })), 400),
        (Method::PUT, "/v1/routes/r", Some(json!({ "path_prefix": "/o", "upstreams": ["http://u:p@x"] })), 400),
        (Method::PUT, "/v1/routes/r", Some(json!({ "path_prefix": "/o", "upstreams": ["http://x/?a=1"] })), 400),
        (Method::PUT, "/v1/routes/r", Some(json!({ "path_prefix": "/o", "upstreams": ["http://x/#f"] })), 400),
        (Method::PUT, "/v1/routes/r", Some(json!({ "path_prefix": "/o", "upstreams": ["http://x:99999"] })), 400),
        (Method::PUT, "/v1/routes/r", Some(json!({ "path_prefix": "/o", "upstreams": ["http://x:80x"] })), 400),
        (Method::PUT, "/v1/routes/r", Some(json!({ "path_prefix": "/o", "upstreams": ["http://x/v1/café"] })), 400),
        (Method::PUT, "/v1/routes/r", Some(json!({ "path_prefix": "/o", "upstreams": ["http://"] })), 400),
        (
            Method::PUT,
            "/v1/routes/r",
            Some(json!({ "path_prefix": "/o", "upstreams": ["http://127.0.0.1:9"], "rate_limits": ["missing"] })),
            400,
        ),
        (Method::POST, "/v1/keys", Some(json!({ "consumer": "nobody" })), 404),
        (Method::POST, "/v1/keys", Some(json!({ "consumer": "acme", "expires_in_s": 0 })), 400),
        (Method::GET, "/v1/keys/short", None, 400),
        (Method::GET, "/v1/keys/AAAAAAAAAAAA", None, 404),
        (Method::POST, "/v1/keys/AAAAAAAAAAAA/revoke", None, 404),
        (Method::DELETE, "/v1/consumers/nobody", None, 404),
        (Method::GET, "/v1/consumers?consistency=sometimes", None, 400),
        (Method::GET, "/v1/nothing-here", None, 404),
        // What axum's own extractors refuse is in the API's JSON form too (found by
        // schemathesis: these were plain text).
        (Method::GET, "/v1/consumers?bogus=1", None, 400),
        (Method::GET, "/v1/audit?limit=many", None, 400),
        (Method::DELETE, "/v1/cluster/members/first", None, 400),
        (Method::PATCH, "/v1/consumers", None, 405),
    ];
    for (method, path, body, want) in cases {
        let (status, reply) = c.req(1, method.clone(), path, body.clone()).await?;
        assert_eq!(status, want, "{method} {path} {body:?} → {reply}");
        assert!(reply["error"]["message"].is_string(), "{method} {path}: error body is JSON: {reply}");
    }
    let after = c.policy_hash(1).await?;
    assert_eq!(before, after, "refused requests changed the state");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_lifecycle_never_shows_the_secret_twice() -> anyhow::Result<()> {
    let c = TestCluster::start(1, &[]).await?;
    c.wait_leader(Duration::from_secs(10)).await?;
    assert_eq!(c.post(1, "/v1/consumers", json!({ "name": "acme", "roles": ["reader"] })).await?.0, 201);
    let (status, created) = c.post(1, "/v1/keys", json!({ "consumer": "acme", "expires_in_s": 3600 })).await?;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let secret = created["key"].as_str().unwrap().to_string();
    assert!(secret.starts_with("rgk_") && secret.len() == 54, "{secret}");
    assert!(created["expires_at"].is_string());

    for path in [format!("/v1/keys/{id}"), "/v1/keys?consumer=acme".to_string(), "/v1/keys".to_string()] {
        let (status, body) = c.get(1, &path).await?;
        assert_eq!(status, 200);
        let text = body.to_string();
        assert!(!text.contains(&secret[16..]), "{path} leaked the secret");
        assert!(!text.contains("digest"), "{path} leaked the digest");
    }
    let (_, got) = c.get(1, &format!("/v1/keys/{id}")).await?;
    assert_eq!(got["state"], "active");

    // Rotation: a new secret, the old key in its grace period.
    let (status, rotated) = c.post(1, &format!("/v1/keys/{id}/rotate"), json!({ "grace_s": 600 })).await?;
    assert_eq!(status, 201, "{rotated}");
    assert_ne!(rotated["key"], created["key"]);
    let (_, old) = c.get(1, &format!("/v1/keys/{id}")).await?;
    assert_eq!(old["state"], "grace");
    assert_eq!(old["rotated_to"], rotated["id"]);
    // A key in its grace period cannot be rotated again.
    assert_eq!(c.post(1, &format!("/v1/keys/{id}/rotate"), json!({})).await?.0, 409);

    // Revocation is final and idempotent.
    let new_id = rotated["id"].as_str().unwrap();
    let (status, revoked) = c.post(1, &format!("/v1/keys/{new_id}/revoke"), json!({})).await?;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["state"], "revoked");
    assert_eq!(c.post(1, &format!("/v1/keys/{new_id}/revoke"), json!({})).await?.0, 200);

    // Deleting the consumer revokes what it still holds.
    assert_eq!(c.req(1, Method::DELETE, "/v1/consumers/acme", None).await?.0, 200);
    let (_, old) = c.get(1, &format!("/v1/keys/{id}")).await?;
    assert_eq!(old["state"], "revoked");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_applies_a_retried_write_once() -> anyhow::Result<()> {
    let c = TestCluster::start(1, &[]).await?;
    c.wait_leader(Duration::from_secs(10)).await?;
    let url = format!("{}/v1/consumers", c.nodes[&1].admin_url());
    let http = reqwest::Client::new();
    let send = || {
        http.post(&url)
            .bearer_auth(chaos_tests::ADMIN_TOKEN)
            .header("Idempotency-Key", "create-acme-1")
            .json(&json!({ "name": "acme" }))
            .send()
    };
    assert_eq!(send().await?.status(), 201);
    // The retry gets the first answer, not a 409.
    assert_eq!(send().await?.status(), 201);
    // The same key on another kind of write is another request: a key is issued, where the
    // first write's stored outcome used to come back and fail the handler with a 500.
    let key = http
        .post(format!("{}/v1/keys", c.nodes[&1].admin_url()))
        .bearer_auth(chaos_tests::ADMIN_TOKEN)
        .header("Idempotency-Key", "create-acme-1")
        .json(&json!({ "consumer": "acme" }))
        .send()
        .await?;
    let status = key.status();
    let reply: Value = key.json().await?;
    assert_eq!(status, 201, "{reply}");
    assert!(reply["key"].as_str().is_some_and(|k| k.starts_with("rgk_")), "{reply}");
    Ok(())
}

/// Self-service rotation: a key whose roles grant `POST /_self/rotate` rotates itself through
/// any node's admin API with its own credential; others get 403, bad credentials 401, and the
/// audit names the key. The successor works at once; the old key only within its grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_may_rotate_itself_when_its_roles_allow() -> anyhow::Result<()> {
    let c = TestCluster::start(3, &[]).await?;
    c.wait_leader(Duration::from_secs(10)).await?;
    let up = chaos_tests::EchoUpstream::start().await;
    let put = |path: &'static str, body: Value| c.req(1, Method::PUT, path, Some(body));
    put("/v1/roles/reader", json!({ "permissions": [{ "methods": ["GET"], "path": "/**" }] })).await?;
    put("/v1/roles/rotator", json!({ "permissions": [{ "methods": ["POST"], "path": "/_self/rotate" }] })).await?;
    put("/v1/routes/api", json!({ "path_prefix": "/", "upstreams": [up.url()] })).await?;
    c.post(1, "/v1/consumers", json!({ "name": "acme", "roles": ["reader"] })).await?;
    let (_, plain) = c.post(1, "/v1/keys", json!({ "consumer": "acme" })).await?;
    let (_, able) = c.post(1, "/v1/keys", json!({ "consumer": "acme", "roles": ["rotator"] })).await?;
    let ids = c.ids();
    c.wait_converged(&ids, Duration::from_secs(10)).await?;
    let http = reqwest::Client::new();
    let rotate = |node: u64, cred: Option<&str>| {
        let mut r = http.post(format!("{}/v1/self/rotate", c.nodes[&node].admin_url())).json(&json!({ "grace_s": 60 }));
        if let Some(k) = cred {
            r = r.bearer_auth(k);
        }
        r.send()
    };

    assert_eq!(rotate(2, None).await?.status(), 401, "no credential");
    assert_eq!(rotate(2, Some(chaos_tests::ADMIN_TOKEN)).await?.status(), 401, "an admin token is not a key");
    assert_eq!(rotate(2, Some("rgk_000000000000000000000000000000000000000000000000aa")).await?.status(), 401);
    assert_eq!(rotate(2, Some(plain["key"].as_str().unwrap())).await?.status(), 403, "roles do not allow it");

    let r = rotate(3, Some(able["key"].as_str().unwrap())).await?;
    assert_eq!(r.status(), 201);
    let new: Value = r.json().await?;
    assert_ne!(new["id"], able["id"]);
    assert_eq!(new["consumer"], "acme");
    assert_eq!(new["roles"], json!(["rotator"]), "the successor keeps the roles");
    let again = rotate(1, Some(able["key"].as_str().unwrap())).await?;
    assert_eq!(again.status(), 409, "an old key in its grace period cannot rotate again");

    for id in &ids {
        let proxy = c.nodes[id].proxy_url();
        let r = http.get(format!("{proxy}/x")).bearer_auth(new["key"].as_str().unwrap()).send().await?;
        assert_eq!(r.status(), 200, "node {id}: the successor works");
        let r = http.get(format!("{proxy}/x")).bearer_auth(able["key"].as_str().unwrap()).send().await?;
        assert_eq!(r.status(), 200, "node {id}: the old key works in its grace period");
        assert!(r.headers().contains_key("deprecation"));
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, audit) = c.get(3, "/v1/audit?limit=1000").await?;
    let events = audit["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["kind"] == "admin"
            && e["path"] == "/v1/self/rotate"
            && e["status"] == 201
            && e["key_id"] == able["id"]),
        "the self-service rotation is audited with the key's id"
    );
    Ok(())
}
