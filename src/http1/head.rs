//! Request and response heads, parsed with `httparse`.
//!
//! A parsed head keeps its bytes and records where each header's name and value lie in them
//! ([`Span`]), so that header values can share the head's bytes instead of being copied.

use bytes::{Bytes, BytesMut};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Version, header};

use super::Invalid;
use super::connection::{self, Token};

/// Where one header lies in its head: name start and end, value start and end.
pub(crate) type Span = (usize, usize, usize, usize);

/// The most headers a request head parsed here may have.
pub(crate) const MAX_REQUEST_HEADERS: usize = 128;
/// The most headers a response head may have.
const MAX_RESPONSE_HEADERS: usize = 128;

/// Where each parsed header's name and value lie in `buf` (start and end offsets), so that the
/// values can later share the head's bytes once it is frozen.
pub(crate) fn header_spans(buf: &[u8], headers: &[httparse::Header<'_>]) -> Vec<Span> {
    let base = buf.as_ptr() as usize;
    headers
        .iter()
        .map(|h| {
            let name = h.name.as_ptr() as usize - base;
            let value = h.value.as_ptr() as usize - base;
            (name, name + h.name.len(), value, value + h.value.len())
        })
        .collect()
}

/// The headers at `spans` of `head`, as sent: names in the sender's spelling, values as bytes.
pub(crate) fn span_headers<'a>(
    head: &'a [u8],
    spans: &'a [Span],
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
    spans
        .iter()
        .map(move |&(ns, ne, vs, ve)| (&head[ns..ne], &head[vs..ve]))
}

/// A request head at the front of a buffer, parsed but not yet taken from it.
pub(crate) struct RequestHead {
    /// Bytes the head takes.
    pub len: usize,
    /// The minor version: 1 for HTTP/1.1.
    pub version: u8,
    pub method: Method,
    /// Where the request target lies.
    pub target: (usize, usize),
    pub spans: Vec<Span>,
}

/// What parsing the front of a buffer as a request head gave.
pub(crate) enum ParsedRequest {
    Complete(RequestHead),
    Partial,
    /// Malformed, HTTP/2's preface, more than `max_headers` headers, an unknown method.
    Invalid,
}

/// Parses a request head at the front of `buf`, with at most `max_headers` (up to
/// [`MAX_REQUEST_HEADERS`]) headers.
pub(crate) fn parse_request(buf: &[u8], max_headers: usize) -> ParsedRequest {
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_REQUEST_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let allowed = max_headers.clamp(1, MAX_REQUEST_HEADERS);
    let len = match req.parse_with_uninit_headers(buf, &mut headers[..allowed]) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return ParsedRequest::Partial,
        Err(_) => return ParsedRequest::Invalid,
    };
    let (Some(version), Some(method), Some(path)) = (req.version, req.method, req.path) else {
        return ParsedRequest::Invalid;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return ParsedRequest::Invalid;
    };
    let target = path.as_ptr() as usize - buf.as_ptr() as usize;
    ParsedRequest::Complete(RequestHead {
        len,
        version,
        method,
        target: (target, target + path.len()),
        spans: header_spans(buf, req.headers),
    })
}

impl RequestHead {
    /// The request target as sent.
    pub fn target<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.target.0..self.target.1]
    }

    /// The headers as sent (`buf` is the buffer the head was parsed from).
    pub fn headers<'a>(&'a self, buf: &'a [u8]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        span_headers(buf, &self.spans)
    }

    /// Takes the head's bytes from the front of `buf`. `None`, with `buf` as it was, when the
    /// target is not an origin-form `PathAndQuery`.
    pub fn take(self, buf: &mut BytesMut, close: bool) -> Option<RawHead> {
        let head = buf.split_to(self.len).freeze();
        let Ok(target) = PathAndQuery::from_maybe_shared(head.slice(self.target.0..self.target.1))
        else {
            let mut back = BytesMut::from(&head[..]);
            back.extend_from_slice(buf);
            *buf = back;
            return None;
        };
        Some(RawHead {
            head,
            method: self.method,
            target,
            spans: self.spans,
            close,
        })
    }
}

/// A parsed HTTP/1.1 request head: the head's bytes, with where each header lies in them. The
/// fast path reads it as it is; everything else gets an `http::Request` made from it.
pub struct RawHead {
    head: Bytes,
    pub method: Method,
    pub target: PathAndQuery,
    spans: Vec<Span>,
    /// The client asked to close after this request.
    pub close: bool,
}

impl RawHead {
    /// The headers as sent: names in the client's spelling, values as bytes.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        span_headers(&self.head, &self.spans)
    }

    /// The request as an `http::Request` with `body`; the head's bytes back if a header is not
    /// one `http` accepts.
    pub(crate) fn into_request<B>(self, body: B) -> Result<Request<B>, Bytes> {
        // Room for what the gateway adds (request id, identity, X-Forwarded-*) without
        // regrowing.
        let mut headers = HeaderMap::with_capacity(self.spans.len() + 12);
        for &(ns, ne, vs, ve) in &self.spans {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&self.head[ns..ne]),
                HeaderValue::from_maybe_shared(self.head.slice(vs..ve)),
            ) else {
                return Err(self.head);
            };
            headers.append(name, value);
        }
        let mut req = Request::new(body);
        *req.method_mut() = self.method;
        *req.uri_mut() = http::Uri::from(self.target);
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = headers;
        Ok(req)
    }
}

/// A parsed response head.
pub(crate) struct ResponseHead {
    pub status: StatusCode,
    pub http11: bool,
    /// `Connection: close`.
    pub close_asked: bool,
    /// Without the hop-by-hop headers, which are left out as the head is read; the framing
    /// headers (`Content-Length`, `Transfer-Encoding`) stay for [`super::body_framing`].
    pub headers: HeaderMap,
}

/// Parses a response head at the start of `buf` and removes it from `buf`; `None` when it is
/// not complete yet.
pub(crate) fn parse_response(buf: &mut BytesMut) -> Result<Option<ResponseHead>, Invalid> {
    let (len, code, version, spans) = {
        let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() };
            MAX_RESPONSE_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            buf,
            &mut headers,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(Invalid("too many headers")),
            Err(_) => return Err(Invalid("malformed response head")),
        };
        (
            len,
            resp.code.unwrap_or(0),
            resp.version.unwrap_or(0),
            header_spans(buf, resp.headers),
        )
    };
    let head = buf.split_to(len).freeze();
    let status = StatusCode::from_u16(code).map_err(|_| Invalid("invalid status code"))?;
    let mut headers = HeaderMap::with_capacity(spans.len() + 2);
    let mut close_asked = false;
    let mut listed = Vec::new();
    for &(ns, ne, vs, ve) in &spans {
        let raw = &head[ns..ne];
        if raw.eq_ignore_ascii_case(b"connection") {
            for token in connection::connection_tokens(&head[vs..ve]) {
                match token {
                    Token::Close => close_asked = true,
                    Token::KeepAlive => {}
                    Token::Upgrade => listed.push(header::UPGRADE),
                    Token::Names(name) => listed.extend(HeaderName::from_bytes(name).ok()),
                }
            }
            continue;
        }
        // Transfer-Encoding stays until the framing is decided.
        if connection::is_hop_by_hop(raw) && !raw.eq_ignore_ascii_case(b"transfer-encoding") {
            continue;
        }
        let name = HeaderName::from_bytes(raw).map_err(|_| Invalid("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
            .map_err(|_| Invalid("invalid header value"))?;
        headers.append(name, value);
    }
    for name in listed {
        // The framing headers are the framing's business (see `body_framing`).
        if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
            headers.remove(name);
        }
    }
    Ok(Some(ResponseHead {
        status,
        http11: version == 1,
        close_asked,
        headers,
    }))
}

/// The status code in the status line at the start of `head` (which may be incomplete after
/// that line); `None` if it is not an HTTP/1.x status line. For the health-check probe, which
/// reads no more than that line.
pub(crate) fn status_code(head: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(head);
    let mut parts = text.lines().next()?.split_whitespace();
    parts.next()?.starts_with("HTTP/1.").then_some(())?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads_parse_and_share_bytes() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello"[..]);
        let p = parse_response(&mut buf).unwrap().unwrap();
        assert_eq!(p.status, StatusCode::OK);
        assert!(p.http11);
        assert_eq!(p.headers["content-length"], "5");
        assert_eq!(p.headers["x-a"], "b");
        assert_eq!(&buf[..], b"hello");
        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-"[..]);
        assert!(parse_response(&mut partial).unwrap().is_none());
        let mut hops = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nProxy-X: 1\r\nTE: x\r\nX-Kept: 1\r\n\r\n"[..],
        );
        let p = parse_response(&mut hops).unwrap().unwrap();
        assert!(p.close_asked);
        let names: Vec<_> = p.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
        let mut bad = BytesMut::from(&b"HTTP/1.1 2000 OK\r\n\r\n"[..]);
        assert!(parse_response(&mut bad).is_err());
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\nContent-"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 503"), Some(503));
        assert_eq!(status_code(b"HTTP/2 200 OK\r\n"), None);
        assert_eq!(status_code(b"SSH-2.0-x\r\n"), None);
        assert_eq!(status_code(b""), None);
    }
}
