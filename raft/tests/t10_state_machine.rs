//! The state machine is deterministic: any sequence of commands gives the same state and the
//! same snapshot bytes on replay, and snapshot → install elsewhere gives an equal state.
//! Runs against the real RocksDB-backed store.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::collections::BTreeMap;

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder};
use proptest::prelude::*;
use raftgate_proxy::policy::{KeyId, LimitMode, LimitSubject, Name, Permission, RateLimitPolicy};
use raftgate_raft::app::GatewayApp;
use raftgate_raft::command::{Op, Request, Response};
use raftgate_raft::operations::*;
use raftgate_raft::TypeConfig;
use raftgate_storage::RocksStateMachine;

type Sm = RocksStateMachine<TypeConfig, GatewayApp>;

fn name(i: u8) -> Name {
    Name::parse(&format!("n{}", i % 4)).unwrap()
}

fn key_id(i: u8) -> KeyId {
    KeyId::parse(&format!("{:0>12}", i % 6)).unwrap()
}

/// A small alphabet of operations over few names, so sequences collide, conflict and refer to
/// each other (keys of deleted consumers, rotations of revoked keys, ...).
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<u8>().prop_map(|i| Op::PutConsumer(PutConsumer { name: name(i), roles: vec![name(i + 1)], metadata: BTreeMap::new() })),
        any::<u8>().prop_map(|i| Op::DeleteConsumer(DeleteConsumer { name: name(i) })),
        any::<u8>().prop_map(|i| Op::PutRole(PutRole {
            name: name(i),
            permissions: vec![serde_json::from_str::<Permission>(r#"{"methods":["GET"],"path":"/orders/**"}"#).unwrap()],
        })),
        any::<u8>().prop_map(|i| Op::DeleteRole(DeleteRole { name: name(i) })),
        (any::<u8>(), 1u64..100).prop_map(|(i, l)| Op::PutRateLimit(PutRateLimit { limit: RateLimitPolicy {
            name: name(i), limit: l, window_s: 60, per: LimitSubject::Key, mode: LimitMode::Local, cost: 1,
        }})),
        any::<u8>().prop_map(|i| Op::DeleteRateLimit(DeleteRateLimit { name: name(i) })),
        (any::<u8>(), any::<u8>(), proptest::option::of(1u64..1000)).prop_map(|(k, c, e)| Op::CreateKey(CreateKey {
            id: key_id(k), digest: [k; 32], consumer: name(c), roles: vec![], expires_in_s: e,
        })),
        (any::<u8>(), 0u8..3).prop_map(|(c, n)| Op::CreateKeys(CreateKeys {
            consumer: name(c), roles: vec![], expires_in_s: None,
            keys: (0..n).map(|i| (key_id(c.wrapping_add(i)), [i; 32])).collect(),
        })),
        any::<u8>().prop_map(|k| Op::RevokeKey(RevokeKey { id: key_id(k).to_string() })),
        (any::<u8>(), any::<u8>(), 0u64..100).prop_map(|(a, b, g)| Op::RotateKey(RotateKey {
            old_id: key_id(a).to_string(), new_id: key_id(b), new_digest: [b; 32], grace_s: g,
        })),
        any::<u8>().prop_map(|i| Op::BootstrapAdminToken(BootstrapAdminToken { digest: [i; 32] })),
        (0u64..4, any::<u8>()).prop_map(|(id, i)| Op::RegisterNode(RegisterNode { id, incarnation: [i % 2; 16] })),
        (0u64..4).prop_map(|id| Op::RetireNode(RetireNode { id })),
    ]
}

/// Requests with (sometimes repeated) request ids and (sometimes decreasing) leader stamps.
fn requests() -> impl Strategy<Value = Vec<Request>> {
    prop::collection::vec((op(), 0u8..40, 0u64..5_000), 1..60).prop_map(|v| {
        v.into_iter()
            .map(|(op, rid, dt)| Request { request_id: [rid; 16], ts_ms: 1_700_000_000_000 + dt * 1000, op })
            .collect()
    })
}

fn entries(reqs: &[Request]) -> Vec<Entry<TypeConfig>> {
    reqs.iter()
        .enumerate()
        .map(|(i, r)| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), i as u64 + 1),
            payload: EntryPayload::Normal(r.clone()),
        })
        .collect()
}

async fn fresh() -> (tempfile::TempDir, Sm) {
    let dir = tempfile::tempdir().unwrap();
    let db = raftgate_storage::open(&dir.path().join("db")).unwrap();
    let sm = RocksStateMachine::open(db, dir.path(), GatewayApp::new()).unwrap();
    (dir, sm)
}

async fn snapshot_bytes(sm: &mut Sm) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut b = sm.get_snapshot_builder().await;
    let mut file = b.build_snapshot().await.unwrap().snapshot;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).await.unwrap();
    bytes
}

fn run(reqs: Vec<Request>, split: usize) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let es = entries(&reqs);
        // Node A applies all at once; node B in two batches: batching must not matter.
        let (_da, mut a) = fresh().await;
        let (_db, mut b) = fresh().await;
        let ra: Vec<Response> = a.apply(es.clone()).await.unwrap();
        let cut = split.min(es.len());
        let mut rb: Vec<Response> = b.apply(es[..cut].to_vec()).await.unwrap();
        rb.extend(b.apply(es[cut..].to_vec()).await.unwrap());
        prop_assert_eq!(&ra, &rb);
        prop_assert_eq!(a.app().state().state_hash(), b.app().state().state_hash());
        let (sa, sb) = (snapshot_bytes(&mut a).await, snapshot_bytes(&mut b).await);
        prop_assert_eq!(&sa, &sb, "same log, different snapshot bytes");

        // Snapshot → install on a fresh node → equal state.
        let (_dc, mut c) = fresh().await;
        let mut builder = a.get_snapshot_builder().await;
        let mut snap = builder.build_snapshot().await.unwrap();
        // As openraft's chunked transfer does: into the file the receiver hands out, in
        // chunks, then shut down and installed.
        let mut received = c.begin_receiving_snapshot().await.unwrap();
        {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut chunk = vec![0u8; 1000];
            loop {
                let n = snap.snapshot.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                received.write_all(&chunk[..n]).await.unwrap();
            }
            received.shutdown().await.unwrap();
        }
        c.install_snapshot(&snap.meta, received).await.unwrap();
        prop_assert_eq!(c.app().state().state_hash(), a.app().state().state_hash());
        prop_assert_eq!(c.app().state(), a.app().state());
        prop_assert_eq!(snapshot_bytes(&mut c).await, sa);
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn replay_is_deterministic(reqs in requests(), split in 0usize..60) {
        run(reqs, split)?;
    }
}

/// Reopening the store after a "crash" restores exactly the applied state.
#[test]
fn reopen_restores_state() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let reqs = vec![
            Request {
                request_id: [1; 16],
                ts_ms: 10,
                op: Op::PutConsumer(PutConsumer { name: name(0), roles: vec![], metadata: BTreeMap::new() }),
            },
            Request {
                request_id: [2; 16],
                ts_ms: 20,
                op: Op::CreateKey(CreateKey {
                    id: key_id(1),
                    digest: [9; 32],
                    consumer: name(0),
                    roles: vec![],
                    expires_in_s: None,
                }),
            },
        ];
        let hash = {
            let db = raftgate_storage::open(&dir.path().join("db")).unwrap();
            let mut sm: Sm = RocksStateMachine::open(db, dir.path(), GatewayApp::new()).unwrap();
            sm.apply(entries(&reqs)).await.unwrap();
            sm.app().state().state_hash()
        };
        let db = raftgate_storage::open(&dir.path().join("db")).unwrap();
        let mut sm: Sm = RocksStateMachine::open(db, dir.path(), GatewayApp::new()).unwrap();
        assert_eq!(sm.app().state().state_hash(), hash);
        assert_eq!(sm.applied_state().await.unwrap().0.map(|l| l.index), Some(2));
        assert_eq!(sm.app().state().policy.keys.len(), 1);
    });
}

/// A retried request id is answered from the dedup table, not applied twice.
#[test]
fn duplicate_request_is_applied_once() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (_d, mut sm) = fresh().await;
        let put = Request {
            request_id: [7; 16],
            ts_ms: 10,
            op: Op::PutConsumer(PutConsumer { name: name(0), roles: vec![], metadata: BTreeMap::new() }),
        };
        let r = sm.apply(entries(&[put.clone(), put])).await.unwrap();
        assert!(matches!(r[0], Response::Ok(_)));
        assert_eq!(r[0], r[1], "the retry must get the first answer, not a conflict");
    });
}
