//! HTTP/1.1 message body framing (RFC 9112 §6–7), shared by both legs: the upstream client reads
//! response bodies with it and the HTTP/1 server reads request bodies with it, so one decoder
//! holds the chunked-coding rules (and their limits) for both directions.

use bytes::{Buf, Bytes, BytesMut};

/// Longest chunk-size line (with extensions) or trailer line in a chunked body.
pub const LINE_LEN_MAX: usize = 4096;
/// Most trailer bytes read (and dropped) after a chunked body.
pub const TRAILERS_LEN_MAX: usize = 64 * 1024;

/// How a body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// At end of stream (the connection cannot be reused). Responses only.
    Close,
    Done,
}

/// Where a chunked decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of chunk data are left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one (this many trailer bytes so far).
    Trailers(usize),
}

/// What [`decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A piece of the body. If it was the last, the framing is now [`Framing::Done`].
    Data(Bytes),
    /// The body has ended (the framing is [`Framing::Done`]); what is left in the buffer follows
    /// it on the connection.
    End,
    /// More must be read first.
    More,
}

impl Framing {
    pub const CHUNKED: Framing = Framing::Chunked(Chunk::Size);
}

/// A Content-Length value: plain ASCII digits (at most 19, so it fits a `u64`), optional
/// whitespace around them; anything else (a sign, hex, a list) is `None`.
pub fn content_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Decodes what `buf` holds under `framing`, advancing both. Errors name what was wrong with
/// the body; trailers are read past and dropped.
pub fn decode(framing: &mut Framing, buf: &mut BytesMut) -> Result<Decoded, &'static str> {
    loop {
        match *framing {
            Framing::Done => return Ok(Decoded::End),
            Framing::Length(0) => {
                *framing = Framing::Done;
                return Ok(Decoded::End);
            }
            Framing::Length(n) => {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                let data = buf.split_to(take).freeze();
                *framing = if n == take as u64 { Framing::Done } else { Framing::Length(n - take as u64) };
                return Ok(Decoded::Data(data));
            }
            Framing::Close => {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                return Ok(Decoded::Data(buf.split().freeze()));
            }
            Framing::Chunked(Chunk::Size) => {
                let Some(line) = take_line(buf)? else { return Ok(Decoded::More) };
                let size = line.split(|b| *b == b';').next().unwrap_or(&[]).trim_ascii();
                if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
                    return Err("bad chunk size");
                }
                let n = size.iter().fold(0u64, |n, b| n * 16 + (*b as char).to_digit(16).unwrap_or(0) as u64);
                *framing = Framing::Chunked(if n == 0 { Chunk::Trailers(0) } else { Chunk::Data(n) });
            }
            Framing::Chunked(Chunk::Data(n)) => {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                let data = buf.split_to(take).freeze();
                let left = n - take as u64;
                *framing = Framing::Chunked(if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) });
                return Ok(Decoded::Data(data));
            }
            Framing::Chunked(Chunk::DataEnd) => {
                if buf.len() < 2 {
                    return Ok(Decoded::More);
                }
                if &buf[..2] != b"\r\n" {
                    return Err("chunk data overruns its size");
                }
                buf.advance(2);
                *framing = Framing::Chunked(Chunk::Size);
            }
            Framing::Chunked(Chunk::Trailers(seen)) => {
                let Some(line) = take_line(buf)? else { return Ok(Decoded::More) };
                if line.is_empty() {
                    *framing = Framing::Done;
                    return Ok(Decoded::End);
                }
                let seen = seen + line.len() + 2;
                if seen > TRAILERS_LEN_MAX {
                    return Err("trailers too large");
                }
                *framing = Framing::Chunked(Chunk::Trailers(seen));
            }
        }
    }
}

/// Takes one line (without its CRLF) from the buffer, if a whole one is there.
fn take_line(buf: &mut BytesMut) -> Result<Option<Bytes>, &'static str> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(i) => {
            let line = buf.split_to(i).freeze();
            buf.advance(2);
            Ok(Some(line))
        }
        None if buf.len() > LINE_LEN_MAX => Err("chunk line too long"),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(mut framing: Framing, wire: &[u8]) -> Result<(Vec<u8>, BytesMut), &'static str> {
        let mut buf = BytesMut::from(wire);
        let mut out = Vec::new();
        loop {
            match decode(&mut framing, &mut buf)? {
                Decoded::Data(d) => out.extend_from_slice(&d),
                Decoded::End => return Ok((out, buf)),
                Decoded::More => return Err("incomplete"),
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_and_stop_at_their_end() {
        let start = Framing::CHUNKED;
        let (out, rest) = decode_all(start, b"3;ext=1\r\nabc\r\na\r\n0123456789\r\n0\r\nx-t: 1\r\n\r\nNEXT").unwrap();
        assert_eq!(out, b"abc0123456789");
        assert_eq!(&rest[..], b"NEXT");
        // Data longer than its size, a bad size, an endless size line: errors.
        assert!(decode_all(start, b"2\r\nabc\r\n0\r\n\r\n").is_err());
        assert!(decode_all(start, b"zz\r\n").is_err());
        assert!(decode_all(start, b"-1\r\n").is_err());
        assert!(decode_all(start, b"FFFFFFFFFFFFFFFFF\r\nx\r\n").is_err());
        assert!(decode_all(start, &[b'1'; 5000]).is_err());
        // A body cut short is incomplete, never a short success.
        assert!(decode_all(start, b"5\r\nab").is_err());
        let (out, rest) = decode_all(Framing::Length(2), b"okNEXT").unwrap();
        assert_eq!((&out[..], &rest[..]), (&b"ok"[..], &b"NEXT"[..]));
    }

    #[test]
    fn the_last_piece_of_a_length_leaves_the_framing_done() {
        let (mut framing, mut buf) = (Framing::Length(2), BytesMut::from(&b"okNEXT"[..]));
        assert_eq!(decode(&mut framing, &mut buf), Ok(Decoded::Data(Bytes::from_static(b"ok"))));
        assert_eq!(framing, Framing::Done);
    }
}
