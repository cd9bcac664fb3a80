//! Message framing (RFC 9112 section 6): `Content-Length` values, how a response body ends,
//! and the decoder that takes a body's bytes out of a read buffer.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, StatusCode, header};

use super::Invalid;
use super::chunked::{self, MAX_CHUNK_LINE};
use super::connection;

/// All trailers of a chunked body together may take this many bytes.
pub(crate) const MAX_TRAILER_BYTES: usize = 64 * 1024;

/// A Content-Length value: digits only, no sign, no overflow.
pub(crate) fn content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The Content-Length a message declares, if it declares exactly one valid value.
pub(crate) fn single_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    content_length(first.as_bytes())
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunk),
    /// Until the sender closes the connection.
    Close,
    Done,
}

/// Where a chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines (dropped) after the last chunk; this many bytes seen so far.
    Trailers(usize),
}

impl Framing {
    /// A chunked body from its start.
    pub(crate) const CHUNKED: Framing = Framing::Chunked(Chunk::Size);
}

/// How the body of a response is framed (RFC 9112 section 6.3): no body after HEAD, 204 and
/// 304; a chunked body is decoded; a Content-Length body is read to its length (several
/// differing values are refused); otherwise the body runs until the connection closes. The
/// framing headers are removed when the body is handed on decoded; whoever sends it on frames
/// it again.
pub(crate) fn body_framing(
    status: StatusCode,
    head_request: bool,
    http11: bool,
    headers: &mut HeaderMap,
) -> Result<Framing, Invalid> {
    let framing =
        if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            Framing::Length(0)
        } else if !http11 && headers.contains_key(header::TRANSFER_ENCODING) {
            // RFC 9112 section 6.1: the framing of an HTTP/1.0 message with Transfer-Encoding
            // is faulty (found by the h1_differential fuzz target; hyper refuses it too).
            return Err(Invalid("Transfer-Encoding in an HTTP/1.0 answer"));
        } else if headers.contains_key(header::TRANSFER_ENCODING) {
            // The last coding decides; a Content-Length next to it is ignored (and removed).
            let last = headers
                .get_all(header::TRANSFER_ENCODING)
                .iter()
                .flat_map(|v| connection::tokens(v.as_bytes()))
                .next_back()
                .map(<[u8]>::to_ascii_lowercase);
            headers.remove(header::CONTENT_LENGTH);
            headers.remove(header::TRANSFER_ENCODING);
            if last.as_deref() == Some(&b"chunked"[..]) {
                Framing::CHUNKED
            } else {
                Framing::Close
            }
        } else if headers.contains_key(header::CONTENT_LENGTH) {
            let mut lengths = headers
                .get_all(header::CONTENT_LENGTH)
                .iter()
                .map(|v| content_length(v.as_bytes()));
            let first = lengths.next().flatten();
            match first {
                Some(n) if lengths.all(|l| l == Some(n)) => Framing::Length(n),
                _ => return Err(Invalid("invalid Content-Length")),
            }
        } else {
            Framing::Close
        };
    Ok(framing)
}

/// What the decoder found in the buffered bytes.
pub(crate) enum Step {
    Data(Bytes),
    NeedMore,
    End,
}

/// Takes from `buf` what its bytes allow of a body framed as `framing` (which it advances);
/// the trailers of a chunked body may take up to `trailer_limit` bytes.
pub(crate) fn decode(
    framing: &mut Framing,
    buf: &mut BytesMut,
    trailer_limit: usize,
) -> Result<Step, Invalid> {
    loop {
        match *framing {
            Framing::Done => return Ok(Step::End),
            Framing::Length(0) => return Ok(Step::End),
            Framing::Length(n) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let take = usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
                *framing = Framing::Length(n - take as u64);
                return Ok(Step::Data(buf.split_to(take).freeze()));
            }
            Framing::Close => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                return Ok(Step::Data(buf.split().freeze()));
            }
            Framing::Chunked(Chunk::Size) => {
                let Some(line) = chunked::take_line(buf, MAX_CHUNK_LINE)? else {
                    return Ok(Step::NeedMore);
                };
                let size = chunked::chunk_size(&line)?;
                *framing = Framing::Chunked(if size == 0 {
                    Chunk::Trailers(0)
                } else {
                    Chunk::Data(size)
                });
            }
            Framing::Chunked(Chunk::Data(n)) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let take = usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
                let left = n - take as u64;
                *framing = Framing::Chunked(if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                });
                return Ok(Step::Data(buf.split_to(take).freeze()));
            }
            Framing::Chunked(Chunk::DataEnd) => {
                if buf.len() < 2 {
                    return Ok(Step::NeedMore);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(Invalid("malformed chunk"));
                }
                buf.advance(2);
                *framing = Framing::CHUNKED;
            }
            Framing::Chunked(Chunk::Trailers(seen)) => {
                let Some(line) = chunked::take_line(buf, MAX_CHUNK_LINE)? else {
                    return Ok(Step::NeedMore);
                };
                if line.is_empty() {
                    return Ok(Step::End);
                }
                // Dropped, but still a header field line: a malformed one (bare CR, no
                // colon, control bytes) means the answer is not what it seems (found by
                // the chunked fuzz target against hyper, which refuses those too).
                if !chunked::is_field_line(&line) {
                    return Err(Invalid("malformed trailer"));
                }
                let seen = seen + line.len() + 2;
                if seen > trailer_limit {
                    return Err(Invalid("trailers too large"));
                }
                *framing = Framing::Chunked(Chunk::Trailers(seen));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(raw: &[u8]) -> Result<(Vec<u8>, bool), Invalid> {
        let mut framing = Framing::CHUNKED;
        let mut buf = BytesMut::from(raw);
        let mut out = Vec::new();
        loop {
            match decode(&mut framing, &mut buf, 64)? {
                Step::Data(d) => out.extend_from_slice(&d),
                Step::NeedMore => return Ok((out, false)),
                Step::End => return Ok((out, true)),
            }
        }
    }

    #[test]
    fn chunked_bodies_decode() {
        let (out, done) = decode_all(b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n").unwrap();
        assert_eq!(out, b"hello, world");
        assert!(done);
        let (out, done) =
            decode_all(b"A \t;x=\"y\"\r\n0123456789\r\n0  \r\nx-trailer: 1\r\n\r\n").unwrap();
        assert_eq!(out, b"0123456789");
        assert!(done);
        // Incomplete: what is there is handed on, the rest waits.
        let (out, done) = decode_all(b"a\r\n01234").unwrap();
        assert_eq!(out, b"01234");
        assert!(!done);
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for bad in [
            &b"x\r\nhello\r\n"[..],
            b"5\nhello\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"-5\r\nhello\r\n",
            b"1000000000000000\r\n",
            b"5 garbage\x01\r\n",
            // Found by the chunked fuzz target: hyper refuses these, so must we.
            b"5 garbage\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\relx\r\x01o1\r\n\r\n",
            b"5\r\nhello\r\n0\r\nno-colon\r\n\r\n",
            b"0\r\nx-long-trailer: 0123456789012345678901234567890123456789012345678901234567890123456789\r\n\r\n",
        ] {
            assert!(decode_all(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn content_length_values() {
        assert_eq!(content_length(b"0"), Some(0));
        assert_eq!(content_length(b"1234"), Some(1234));
        for bad in [
            &b""[..],
            b"+1",
            b"-1",
            b"1 2",
            b"0x10",
            b"99999999999999999999",
        ] {
            assert_eq!(content_length(bad), None, "{bad:?}");
        }
    }
}
