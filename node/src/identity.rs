//! The node's identity file in its data dir: which node id the dir belongs to, and the random
//! incarnation drawn when the dir was created.

use std::path::Path;

use anyhow::{bail, Context};
use raftgate_raft::Incarnation;
use serde::{Deserialize, Serialize};

const IDENTITY_FILE: &str = "node-identity.json";

#[derive(Debug, Serialize, Deserialize)]
struct IdentityFile {
    format_version: u32,
    node_id: u64,
    incarnation: String,
}

/// Returns this data dir's incarnation, creating the identity on first use. Whether the dir was
/// new is returned too: only a new dir may bootstrap a cluster.
pub fn load_or_create(data_dir: &Path, node_id: u64) -> anyhow::Result<(Incarnation, bool)> {
    let path = data_dir.join(IDENTITY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let f: IdentityFile = serde_json::from_str(&text).with_context(|| format!("corrupt {}", path.display()))?;
            if f.node_id != node_id {
                bail!(
                    "config key `id`: the data dir {} belongs to node {}, but this node is configured as {}; \
                     use --id {} or another --data-dir",
                    data_dir.display(),
                    f.node_id,
                    node_id,
                    f.node_id
                );
            }
            let mut inc = Incarnation::default();
            hex::decode_to_slice(&f.incarnation, &mut inc).with_context(|| format!("corrupt {}", path.display()))?;
            Ok((inc, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let inc: Incarnation = rand::random();
            let f = IdentityFile { format_version: 1, node_id, incarnation: hex::encode(inc) };
            let tmp = data_dir.join(format!("{IDENTITY_FILE}.tmp"));
            std::fs::write(&tmp, serde_json::to_vec_pretty(&f)?)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(data_dir)?.sync_all()?;
            Ok((inc, true))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}
