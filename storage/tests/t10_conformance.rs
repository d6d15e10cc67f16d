//! openraft's own storage conformance suite against a real RocksDB in a temp dir.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::collections::BTreeMap;

use openraft::testing::{StoreBuilder, Suite};
use openraft::{LogId, StorageError, StoredMembership};
use raftgate_storage::{RecordWrites, RocksLogStore, RocksStateMachine, StateApp};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Set {
    key: String,
    value: String,
}

openraft::declare_raft_types!(
    pub TestConfig:
        D = Set,
        R = Option<String>,
        SnapshotData = tokio::fs::File,
);

/// The smallest app that exercises record writes: a string map.
#[derive(Default)]
struct KvApp {
    map: BTreeMap<String, String>,
}

impl StateApp<TestConfig> for KvApp {
    fn apply(&mut self, _log_id: &LogId<u64>, data: &Set, writes: &mut RecordWrites) -> Option<String> {
        writes.push((data.key.clone().into_bytes(), Some(data.value.clone().into_bytes())));
        self.map.insert(data.key.clone(), data.value.clone())
    }

    fn restore(&mut self, records: &mut dyn Iterator<Item = (Box<[u8]>, Box<[u8]>)>) -> Result<(), String> {
        self.map.clear();
        for (k, v) in records {
            let k = String::from_utf8(k.into_vec()).map_err(|e| e.to_string())?;
            let v = String::from_utf8(v.into_vec()).map_err(|e| e.to_string())?;
            self.map.insert(k, v);
        }
        Ok(())
    }

    fn applied(&mut self, _last: Option<LogId<u64>>, _m: &StoredMembership<u64, openraft::BasicNode>) {}
}

struct Builder;

impl StoreBuilder<TestConfig, RocksLogStore<TestConfig>, RocksStateMachine<TestConfig, KvApp>, tempfile::TempDir>
    for Builder
{
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, RocksLogStore<TestConfig>, RocksStateMachine<TestConfig, KvApp>), StorageError<u64>>
    {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = raftgate_storage::open(dir.path()).expect("open rocksdb");
        let log = RocksLogStore::new(db.clone());
        let sm = RocksStateMachine::open(db, dir.path(), KvApp::default())?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() -> Result<(), StorageError<u64>> {
    Suite::test_all(Builder)?;
    Ok(())
}
