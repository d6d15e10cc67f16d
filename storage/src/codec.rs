//! Versioned encoding for every value raftgate persists or sends between nodes.
//!
//! Each encoded value starts with one format-version byte, then bincode (standard config) of the
//! value. A reader that meets a version it does not know fails loudly instead of misreading:
//! rolling upgrades add a new version and keep decoding the old ones.

use serde::{de::DeserializeOwned, Serialize};

/// The format version written today. Bump it when a persisted type changes shape, and keep a
/// decoder for every older version.
pub const FORMAT_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty value: no format version byte")]
    Empty,
    /// `newest`: the newest version this build reads of the type (it reads every one before).
    #[error("unknown format version {found} (this build reads versions up to {newest})")]
    UnknownVersion { found: u8, newest: u8 },
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("decode: {trailing} trailing bytes after the value")]
    Trailing { trailing: usize },
    /// A value whose layout is written by hand rather than by bincode, and does not hold.
    #[error("decode: {0}")]
    Malformed(&'static str),
}

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    encode_sized(value, 256)
}

/// As [`encode`], into a buffer sized for `len_hint` bytes: bincode writes a value a field at
/// a time, so a buffer that starts too small is grown and copied several times (measured: 2 %
/// of the node's instructions per proxied request went to growing audit records).
pub fn encode_sized<T: Serialize + ?Sized>(value: &T, len_hint: usize) -> Result<Vec<u8>, CodecError> {
    encode_versioned(FORMAT_VERSION, value, len_hint)
}

/// As [`encode_versioned`], appended to `out` (for values written back to back into one
/// buffer, as the audit writer batches its events). On an error `out` is left as it was.
pub fn encode_versioned_into<T: Serialize + ?Sized>(
    version: u8,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let start = out.len();
    out.push(version);
    bincode::serde::encode_into_writer(value, VecWriter(out), bincode::config::standard()).map_err(|e| {
        out.truncate(start);
        e.into()
    })
}

/// Appends `n` as bincode's standard config writes any unsigned integer (its varint): one byte
/// below 251, else a marker (251, 252, 253) and the value in 2, 4 or 8 bytes, little-endian.
/// For values whose layout is written by hand (the audit log's records, the node's audit
/// events), each checked by a test against what bincode writes.
#[inline(always)]
pub fn put_varint(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=250 => out.push(n as u8),
        251..=0xffff => {
            out.push(251);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(252);
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
        _ => {
            out.push(253);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

/// Appends bytes as bincode writes a string or byte slice: the length ([`put_varint`]), then
/// the bytes.
#[inline]
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Appends to a `Vec` as bincode writes, without the `std::io::Write` adapter (and its
/// `io::Result` per field) that `encode_into_std_write` goes through.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl bincode::enc::write::Writer for VecWriter<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match split_version(bytes)? {
        (FORMAT_VERSION, body) => decode_body(body),
        (found, _) => Err(CodecError::UnknownVersion { found, newest: FORMAT_VERSION }),
    }
}

/// As [`encode_sized`], under the given version byte: for a type whose shape moved on from
/// [`FORMAT_VERSION`] and that keeps a decoder per version (see [`split_version`]).
pub fn encode_versioned<T: Serialize + ?Sized>(version: u8, value: &T, len_hint: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(len_hint.max(1));
    encode_versioned_into(version, value, &mut out)?;
    Ok(out)
}

/// The version byte and the body after it, for a reader that decodes each version of a type
/// with [`decode_body`] into the shape that version had.
pub fn split_version(bytes: &[u8]) -> Result<(u8, &[u8]), CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    Ok((version, body))
}

/// Decodes a body (the bytes after the version byte); all of it must be the value.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    let (value, read) = bincode::serde::decode_from_slice(body, bincode::config::standard())?;
    if read != body.len() {
        return Err(CodecError::Trailing { trailing: body.len() - read });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_check() {
        let bytes = encode(&("raftgate", 7u64)).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back: (String, u64) = decode(&bytes).unwrap();
        assert_eq!(back, ("raftgate".to_string(), 7));

        let mut future = bytes.clone();
        future[0] = FORMAT_VERSION + 1;
        assert!(matches!(decode::<(String, u64)>(&future), Err(CodecError::UnknownVersion { .. })));
        assert!(matches!(decode::<u64>(&[]), Err(CodecError::Empty)));
        let mut long = bytes;
        long.push(0);
        assert!(matches!(decode::<(String, u64)>(&long), Err(CodecError::Trailing { .. })));
    }

    /// Written by hand, read by bincode: each step of the varint, from both sides of it, and
    /// the integer widths the hand-written layouts use it for.
    #[test]
    fn hand_written_integers_and_strings_are_what_bincode_writes() {
        let steps = [0u64, 1, 250, 251, 252, 0xfffe, 0xffff, 0x1_0000, 0xffff_ffff, 0x1_0000_0000, u64::MAX];
        for n in steps {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            assert_eq!(out, bincode(n), "u64 {n}");
            if let Ok(n16) = u16::try_from(n) {
                assert_eq!(out, bincode(n16), "u16 {n}");
            }
            if let Ok(n32) = u32::try_from(n) {
                assert_eq!(out, bincode(n32), "u32 {n}");
            }
        }
        for len in [0usize, 1, 250, 251, 0xffff, 0x1_0000] {
            let s = "é".repeat(len / 2) + &"x".repeat(len % 2);
            let mut out = Vec::new();
            put_bytes(&mut out, s.as_bytes());
            assert_eq!(out, bincode(s.as_str()), "a string of {} bytes", s.len());
        }
    }

    /// What bincode (standard config, as [`encode`]) writes for a value, without the version.
    fn bincode<T: Serialize>(value: T) -> Vec<u8> {
        bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap()
    }
}
