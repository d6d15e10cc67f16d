//! Bad configuration stops the node with a message that names the key and the fix.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::process::Command;

use chaos_tests::node::{free_port, raftgate_bin};

fn serve(args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd = Command::new(raftgate_bin());
    cmd.arg("serve").arg("--data-dir").arg(&data).args(args);
    let out = cmd.output().expect("run raftgate");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn bad_config_names_the_key() {
    let port = free_port();
    let raft = format!("1=127.0.0.1:{port}");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--peers", "1=nowhere"], "`peers`"),
        (vec!["--peers", "2=127.0.0.1:1"], "`peers`"),
        (vec!["--raft-addr", "localhost:1"], "`raft_addr`"),
        (vec!["--election-timeout-ms-min", "100"], "`election_timeout_ms_min`"),
        // A multi-node first start without a bootstrap token is refused.
        (vec!["--peers", &raft, "--raft-addr", &raft[2..]], "`admin_token_file`"),
    ];
    for (args, key) in cases {
        let (ok, stderr) = serve(&args);
        assert!(!ok, "{args:?} should fail");
        assert!(stderr.contains(key), "{args:?}: message should name {key}: {stderr}");
    }
}

#[test]
fn short_admin_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "too-short").unwrap();
    let (ok, stderr) = serve(&["--admin-token-file", token.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("`admin_token_file`") && stderr.contains("at least 32"), "{stderr}");
}

#[test]
fn unknown_config_file_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("raftgate.toml");
    std::fs::write(&file, "id = 1\nelection_timeout = 5\n").unwrap();
    let (ok, stderr) = serve(&["--config", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("election_timeout"), "{stderr}");
}
