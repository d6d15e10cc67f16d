//! The snapshot file: one consistent view of the state machine, written and read as a stream.
//!
//! Layout: the codec's format-version byte, then bincode of a [`SnapshotHeader`], then each
//! record as bincode `Some((key, value))`, ending with `None`. Records are written in key order,
//! so a deterministic state machine produces the same bytes for the same applied log.

use std::io::{Read, Write};

use openraft::{LogId, RaftTypeConfig, StoredMembership};
use serde::{Deserialize, Serialize};

use crate::codec::{CodecError, FORMAT_VERSION};

/// What a snapshot says about itself, before its records.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct SnapshotHeader<C: RaftTypeConfig> {
    pub last_log_id: Option<LogId<C::NodeId>>,
    pub last_membership: StoredMembership<C::NodeId, C::Node>,
    pub snapshot_id: String,
}

/// Streaming writer and reader of the snapshot format.
pub struct SnapshotFile;

type Record = (Vec<u8>, Vec<u8>);

impl SnapshotFile {
    pub fn write_header<C: RaftTypeConfig, W: Write>(
        out: &mut W,
        header: &SnapshotHeader<C>,
    ) -> Result<(), CodecError> {
        out.write_all(&[FORMAT_VERSION]).map_err(io_to_encode)?;
        bincode::serde::encode_into_std_write(header, out, bincode::config::standard())?;
        Ok(())
    }

    pub fn write_record<W: Write>(out: &mut W, key: &[u8], value: &[u8]) -> Result<(), CodecError> {
        bincode::serde::encode_into_std_write(Some((key, value)), out, bincode::config::standard())?;
        Ok(())
    }

    pub fn write_end<W: Write>(out: &mut W) -> Result<(), CodecError> {
        bincode::serde::encode_into_std_write(None::<(&[u8], &[u8])>, out, bincode::config::standard())?;
        Ok(())
    }

    pub fn read_header<C: RaftTypeConfig, R: Read>(input: &mut R) -> Result<SnapshotHeader<C>, CodecError> {
        let mut version = [0u8; 1];
        input.read_exact(&mut version).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => CodecError::Empty,
            _ => CodecError::Decode(bincode::error::DecodeError::Io { inner: e, additional: 1 }),
        })?;
        if version[0] != FORMAT_VERSION {
            return Err(CodecError::UnknownVersion { found: version[0], newest: FORMAT_VERSION });
        }
        Ok(bincode::serde::decode_from_std_read(input, bincode::config::standard())?)
    }

    /// The next record, or `None` at the end marker.
    pub fn read_record<R: Read>(input: &mut R) -> Result<Option<Record>, CodecError> {
        Ok(bincode::serde::decode_from_std_read(input, bincode::config::standard())?)
    }
}

fn io_to_encode(e: std::io::Error) -> CodecError {
    CodecError::Encode(bincode::error::EncodeError::Io { inner: e, index: 0 })
}
