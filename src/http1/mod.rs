//! The HTTP/1.1 codec: every rule about HTTP/1.1 bytes, in one place.
//!
//! The fast path ([`crate::fast_path`]), its request handling ([`crate::handler`]'s direct
//! path), the built-in upstream client ([`crate::proxy::http1_client`]) and the header rewrite
//! ([`crate::proxy::headers`]) all read and write HTTP/1.1 through this module, so that a rule
//! changed here holds on every path:
//!
//! - [`head`]: request and response heads parsed with `httparse`, kept as their bytes plus where
//!   each header lies in them ([`RawHead`]);
//! - [`connection`]: `Connection` tokens and the one list of hop-by-hop headers, for header
//!   names as bytes and as [`http::HeaderName`]s;
//! - [`framing`]: `Content-Length` values, how a response body ends, the body decoder;
//! - [`chunked`]: the chunked coding, both ways;
//! - [`write`]: request, status and header lines.
//!
//! It sits at the bottom of the crate: it knows `http`, `bytes` and `httparse`, and nothing of
//! the gateway. Nothing here allocates per request beyond what a parsed head needs (its header
//! positions, and a header map where one is asked for).

pub(crate) mod chunked;
pub(crate) mod connection;
pub(crate) mod framing;
pub(crate) mod head;
pub(crate) mod write;

pub use head::RawHead;

/// Why bytes are not a valid HTTP/1.1 message: what is wrong, for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub &'static str);

/// A header value as text, by [`http::HeaderValue::to_str`]'s rule (visible ASCII and tabs): the
/// rules that read a value as text skip the others, whichever representation holds it.
pub fn text(value: &[u8]) -> Option<&str> {
    // One branch-free pass the compiler vectorises: this runs on every bearer token (a few
    // hundred bytes), and a short-circuiting `all` over the bytes cost a tenth of the planned
    // path's instructions (callgrind, BENCHMARKS.md).
    let refused = value.iter().fold(false, |bad, &b| {
        bad | ((b < 0x20) & (b != b'\t')) | (b >= 0x7f)
    });
    if refused {
        None
    } else {
        std::str::from_utf8(value).ok()
    }
}
