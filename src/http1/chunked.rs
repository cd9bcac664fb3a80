//! The chunked transfer coding (RFC 9112 section 7.1): the line readers the decoder in
//! [`super::framing`] uses, and the encoder.

use std::io::Write as _;

use bytes::{Bytes, BytesMut};

use super::Invalid;

/// The longest chunk-size or trailer line.
pub(crate) const MAX_CHUNK_LINE: usize = 4096;

/// One CRLF-terminated line from the front of `buf`, without its CRLF; `None` if incomplete.
pub(crate) fn take_line(buf: &mut BytesMut, limit: usize) -> Result<Option<Bytes>, Invalid> {
    let Some(pos) = buf.iter().take(limit + 2).position(|&b| b == b'\n') else {
        if buf.len() > limit + 1 {
            return Err(Invalid("chunk line too long"));
        }
        return Ok(None);
    };
    if pos == 0 || buf[pos - 1] != b'\r' {
        return Err(Invalid("malformed chunk line"));
    }
    let line = buf.split_to(pos + 1).freeze();
    Ok(Some(line.slice(..pos - 1)))
}

/// Whether `line` (without its CRLF) is one header field line, by `httparse`'s rules.
pub(crate) fn is_field_line(line: &[u8]) -> bool {
    let mut text = Vec::with_capacity(line.len() + 4);
    text.extend_from_slice(line);
    text.extend_from_slice(b"\r\n\r\n");
    let mut one = [httparse::EMPTY_HEADER; 1];
    matches!(
        httparse::parse_headers(&text, &mut one),
        Ok(httparse::Status::Complete((n, _))) if n == text.len()
    )
}

/// The size in a chunk-size line (hex digits, then optional extensions after `;`).
pub(crate) fn chunk_size(line: &[u8]) -> Result<u64, Invalid> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = &line[digits..];
    // Whitespace after the size only before an extension (`5 ;x`) or the line's end, as hyper
    // reads it: `5 garbage` is refused (found by the chunked fuzz target).
    let ws = rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let rest_ok = matches!(rest.get(ws), None | Some(b';'))
        && rest
            .iter()
            .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b));
    if digits == 0 || digits > 15 || !rest_ok {
        return Err(Invalid("malformed chunk size"));
    }
    std::str::from_utf8(&line[..digits])
        .ok()
        .and_then(|d| u64::from_str_radix(d, 16).ok())
        .ok_or(Invalid("malformed chunk size"))
}

/// Appends `data` as one chunk (nothing for empty data: an empty chunk would end the body).
pub(crate) fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends the end of a chunked body: the last chunk, no trailers.
pub(crate) fn encode_end(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n\r\n");
}
