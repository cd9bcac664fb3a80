//! HTTP/1.1 requests without a body or with a small one, served without hyper.
//!
//! Most proxied traffic is GETs, and most uploads are small: a head, at most a few KiB of body
//! framed by one `Content-Length`, a response streamed back. For those, this module reads the
//! head (parsed by the HTTP/1.1 codec, `crate::http1`) and the body, decides whether it can
//! take the request, hands it to the handler (its planned forward, [`App::plan_forward`], when
//! the request qualifies; else the same [`App::handle_request`] as every other request), and
//! writes the response itself: one task, no channels, one write per response when the answer is
//! small. Everything else on the connection (a chunked body, a body over [`MAX_BODY`] or over
//! `limits.max_body_bytes`, several `Content-Length`s, `Expect`, `Upgrade`, HTTP/1.0, HTTP/2's
//! preface, anything malformed or over the limits) is handed to hyper together with the bytes
//! already read, and hyper serves the connection from then on. So hyper stays the one place
//! that decides about streamed bodies, upgrades and protocol errors; this module only takes the
//! requests whose framing cannot be ambiguous.
//!
//! A body taken here is read whole before the request is handled (as nginx buffers a body up to
//! its `client_body_buffer_size`), with `limits.body_timeout` between reads: a client that stops
//! sending gets the general path's 408 and the connection closes.
//!
//! Timeouts: the first request's head must arrive within `limits.header_read_timeout` of the
//! connection; a keep-alive connection waits up to `limits.idle_timeout` for its next request,
//! whose head then has `limits.header_read_timeout` from its first byte. At shutdown an idle
//! connection closes at once while a request in flight finishes (its response says
//! `Connection: close`). A response that the client does not read for `limits.idle_timeout`
//! ends the connection. (After a handover, hyper applies its own rules: it closes a keep-alive
//! connection idle for `limits.header_read_timeout`.)

use std::cell::RefCell;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method, Response, StatusCode, header};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::body::{Body, Buffered, ClientBodyError};
use crate::handler::{App, Conn, Planned};
use crate::http1::connection::{self, Token};
use crate::http1::head::{self, ParsedRequest};
use crate::http1::{RawHead, chunked, framing, write};
use crate::proxy::{UpstreamFailure, upstream_error};

/// Where a connection stands when this module lets go of it.
pub enum Outcome {
    /// The connection is finished (closed by either side, a timeout or shutdown).
    Closed,
    /// Hyper serves the rest: the bytes read so far come first.
    Handover(Bytes),
}

/// The per-connection settings, read once from the configuration current at accept time.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_head_bytes: usize,
    pub max_headers: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// The largest request body read here: [`MAX_BODY`], or `limits.max_body_bytes` if lower
    /// (a larger one goes to hyper, and the general path answers 413).
    pub max_body: u64,
    pub body_timeout: Duration,
}

impl Limits {
    pub fn from_config(config: &crate::config::Config) -> Limits {
        let l = &config.limits;
        Limits {
            // The same bound hyper's `max_buf_size` applies on the other path.
            max_head_bytes: l.max_header_bytes.max(8192),
            max_headers: l.max_headers,
            header_read_timeout: l.header_read_timeout,
            idle_timeout: l.idle_timeout,
            max_body: MAX_BODY.min(l.max_body_bytes),
            body_timeout: l.body_timeout,
        }
    }
}

/// How much room a read asks for.
const READ_SIZE: usize = 4096;
/// The largest request body this module reads itself (see the module docs).
pub const MAX_BODY: u64 = 64 * 1024;
/// A response is written out once this much of it is buffered.
const WRITE_CHUNK: usize = 64 * 1024;

/// What reading the next request head gave.
// Made once per request and moved once: boxing the head would cost more than its size.
#[allow(clippy::large_enum_variant)]
enum Next {
    /// A head, and the length of the body that follows it.
    Request(RawHead, u64),
    /// Not ours to serve: hand over to hyper.
    Handover,
    Closed,
}

/// Serves requests on `io` until the connection ends or a request needs hyper.
pub async fn serve<S>(
    io: &mut S,
    conn: Conn,
    app: &ArcSwap<App>,
    stop: &mut watch::Receiver<bool>,
    limits: Limits,
) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::new();
    let mut first = true;
    // One wait for shutdown for the connection's life, polled only while it waits for a next
    // request: one registered afresh per request (a `Notified` added to and removed from the
    // watch's list under its lock) was ~0.9 % of the gateway's CPU on keep-alive GETs (perf).
    let mut watch = stop.clone();
    let stopping = watch.wait_for(|s| *s);
    tokio::pin!(stopping);
    loop {
        let next = read_head(io, &mut buf, stopping.as_mut(), limits, first).await;
        first = false;
        let (head, body_len) = match next {
            Next::Request(head, body_len) => (head, body_len),
            Next::Handover => return Outcome::Handover(buf.freeze()),
            Next::Closed => return Outcome::Closed,
        };
        let (head_request, close) = (head.method == Method::HEAD, head.close);
        // A body that stalled or ended short goes to the general path as a body that fails at
        // once: it answers as for any client body that broke (408 or 400, counted and logged
        // with its route, or the refusal due before the body is read), and the connection
        // closes, its framing lost.
        let body = read_body(io, &mut buf, body_len, limits.body_timeout).await;
        let cut = body.is_err();
        let app = app.load_full();
        let planned = match &body {
            Ok(_) => app.plan_forward(&head, conn),
            Err(_) => Planned::Decline(None),
        };
        let resp = match planned {
            // Only a body read whole is planned.
            Planned::Take(plan) => {
                let body = body.unwrap_or_default();
                app.forward_planned(plan, &head, body, conn).await
            }
            Planned::Decline(verdict) => {
                let read = body.as_ref().ok().cloned();
                match head.into_request(request_body(body, body_len)) {
                    // Boxed: the general path's future is several times the size of the rest
                    // of this connection's, and an idle keep-alive connection should not carry
                    // it.
                    Ok(mut req) => {
                        if let Some(v) = verdict {
                            req.extensions_mut().insert(v);
                        }
                        Box::pin(app.handle_request(req, conn)).await
                    }
                    // hyper reads the request again: the head, the body, what followed.
                    Err(bytes) => {
                        let Some(read) = read else {
                            return Outcome::Closed;
                        };
                        let mut back = BytesMut::from(&bytes[..]);
                        for chunk in read.chunks() {
                            back.extend_from_slice(chunk);
                        }
                        back.extend_from_slice(&buf);
                        return Outcome::Handover(back.freeze());
                    }
                }
            }
        };
        let close =
            close || cut || *stop.borrow() || resp.headers().contains_key(header::CONNECTION);
        let mut written = write_response(io, resp, head_request, close, limits.idle_timeout).await;
        if let Err(Unfinished::Unsent(e)) = written {
            // The body failed before any byte of the answer left: answer 502 instead, as for
            // any other broken upstream answer. The client's connection is still sound.
            let resp = upstream_error(UpstreamFailure::BrokeOff(&*e)).response(false);
            written = write_response(io, resp, head_request, close, limits.idle_timeout).await;
        }
        if close || written.is_err() {
            let _ = io.shutdown().await;
            return Outcome::Closed;
        }
    }
}

/// The most a read of a body asks room for.
const BODY_READ: usize = 16 * 1024;

/// Reads the `len` bytes of body that follow a head (some may be buffered already), taking
/// those from `buf`; bytes after them stay there, the next request's. Fails when no byte comes
/// for `timeout` or the client closes its side (or the read fails) before the end.
///
/// The rest is read in chunks of its own, each taking memory only once bytes arrive: growing
/// `buf` would copy the allocation it shares with the head (callgrind: 64 KiB copied per
/// 64 KiB upload, as many instructions as the rest of the request), and one buffer of the
/// announced length would let a client that sends nothing hold that much memory.
async fn read_body<S>(
    io: &mut S,
    buf: &mut BytesMut,
    len: u64,
    timeout: Duration,
) -> Result<Buffered, ClientBodyError>
where
    S: AsyncRead + Unpin,
{
    let mut body = Buffered::default();
    if len == 0 {
        // Most requests: nothing to take (splitting off nothing would still make `buf` shared).
        return Ok(body);
    }
    let here = usize::try_from(len).map_or(buf.len(), |len| len.min(buf.len()));
    if here > 0 {
        body.push(buf.split_to(here).freeze());
    }
    while body.len() < len {
        // Never past the body: what follows is the next request's, read as its head.
        // (The allocation may be larger than asked: the chunk's own size is `want`.)
        let want = usize::try_from(len - body.len()).map_or(BODY_READ, |l| l.min(BODY_READ));
        let mut chunk = BytesMut::with_capacity(want);
        while chunk.len() < want {
            let room = want - chunk.len();
            let mut rest = (&mut chunk).limit(room);
            match tokio::time::timeout(timeout, io.read_buf(&mut rest)).await {
                Err(_) => return Err(ClientBodyError::Timeout(timeout)),
                Ok(Ok(0)) | Ok(Err(_)) => {
                    return Err(ClientBodyError::Broken("the client closed".into()));
                }
                Ok(Ok(_)) => {}
            }
        }
        body.push(chunk.freeze());
    }
    Ok(body)
}

/// The body of a request the general path serves: none, the bytes read here (its exact size
/// known, so the upstream client can send it as one write), or, for a body that broke off, one
/// that fails with the reason as soon as it is read.
fn request_body(body: Result<Buffered, ClientBodyError>, declared: u64) -> Body {
    match body {
        Ok(body) => body.into_body(),
        Err(e) => crate::body::boxed(BrokenBody {
            error: Some(e),
            declared,
        }),
    }
}

/// A request body that broke off while the fast path read it.
struct BrokenBody {
    error: Option<ClientBodyError>,
    /// Its Content-Length: the size it says it has, so that the upstream client reads it
    /// (and fails) before sending anything.
    declared: u64,
}

impl http_body::Body for BrokenBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, ClientBodyError>>> {
        Poll::Ready(self.error.take().map(Err))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.declared)
    }
}

/// Reads until a complete request head is buffered, within the time allowed, or until shutdown
/// (`stopping` completes) while no request has started. `stopping` is not polled again once it
/// has completed: the connection closes then.
async fn read_head<S, F>(
    io: &mut S,
    buf: &mut BytesMut,
    mut stopping: Pin<&mut F>,
    limits: Limits,
    first: bool,
) -> Next
where
    S: AsyncRead + Unpin,
    F: Future,
{
    // The first request's head, and any head once its first byte is in, has the header read
    // timeout; a keep-alive connection waits for a new request up to the idle timeout.
    let mut started = tokio::time::Instant::now();
    loop {
        if !buf.is_empty() {
            match parse_head(buf, limits) {
                Parsed::Complete(head, body_len) => return Next::Request(head, body_len),
                Parsed::NotOurs => return Next::Handover,
                Parsed::Partial if buf.len() >= limits.max_head_bytes => return Next::Handover,
                Parsed::Partial => {}
            }
        }
        let limit = if first || !buf.is_empty() {
            limits.header_read_timeout
        } else {
            limits.idle_timeout
        };
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(READ_SIZE);
        }
        let idle = buf.is_empty();
        let read = tokio::time::timeout_at(started + limit, io.read_buf(buf));
        let n = if idle {
            tokio::select! {
                biased;
                r = read => r,
                _ = stopping.as_mut() => return Next::Closed,
            }
        } else {
            read.await
        };
        match n {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Next::Closed,
            Ok(Ok(_)) => {}
        }
        if idle && !first {
            // The next request has begun: its head gets the header timeout from now.
            started = tokio::time::Instant::now();
        }
    }
}

#[allow(clippy::large_enum_variant)]
enum Parsed {
    /// A head, and the length of the body that follows it.
    Complete(RawHead, u64),
    Partial,
    NotOurs,
}

/// Parses a request head at the front of `buf` (removing it) when it is complete and is one
/// this module serves: origin-form HTTP/1.1 without `Expect` or `Upgrade`, and without a body
/// or with one framed by a single `Content-Length` of at most `limits.max_body`.
fn parse_head(buf: &mut BytesMut, limits: Limits) -> Parsed {
    let head = match head::parse_request(buf, limits.max_headers) {
        ParsedRequest::Complete(head) => head,
        ParsedRequest::Partial => return Parsed::Partial,
        // Malformed, HTTP/2's preface, too many headers: hyper gives the right answer.
        ParsedRequest::Invalid => return Parsed::NotOurs,
    };
    if head.version != 1 || !head.target(buf).starts_with(b"/") {
        return Parsed::NotOurs;
    }
    // Decide before taking the bytes: a request that is not ours stays in the buffer for hyper.
    let mut close = false;
    let mut body_len = None;
    for (name, value) in head.headers(buf) {
        // A chunked body, a large one, or two Content-Lengths (hyper forwards one), is hyper's
        // to handle.
        if name.eq_ignore_ascii_case(b"content-length") {
            match framing::content_length(value) {
                Some(n) if body_len.is_none() && n <= limits.max_body => body_len = Some(n),
                _ => return Parsed::NotOurs,
            }
        }
        if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            return Parsed::NotOurs;
        }
        if name.eq_ignore_ascii_case(b"connection") {
            for token in connection::connection_tokens(value) {
                match token {
                    Token::Close => close = true,
                    Token::Upgrade => return Parsed::NotOurs,
                    Token::KeepAlive | Token::Names(_) => {}
                }
            }
        }
    }
    // hyper answers a malformed target; `take` leaves the bytes in `buf` for it.
    match head.take(buf, close) {
        Some(head) => Parsed::Complete(head, body_len.unwrap_or(0)),
        None => Parsed::NotOurs,
    }
}

/// How a response body is framed on the wire.
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Why a response could not be completed; either way the connection cannot carry another.
enum Unfinished {
    /// The body failed before anything was sent: the client can still get an error answer.
    Unsent(crate::body::BoxError),
    /// Part of the answer was sent (or the client stopped reading): only closing is left.
    Broken,
}

/// Writes a response.
async fn write_response<S>(
    io: &mut S,
    resp: Response<Body>,
    head_request: bool,
    close: bool,
    stall: Duration,
) -> Result<(), Unfinished>
where
    S: AsyncWrite + Unpin,
{
    let mut sent = false;
    let (parts, mut body) = resp.into_parts();
    let status = parts.status;
    let mut out = Vec::with_capacity(512);
    write::status_line(&mut out, status);
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let declared = framing::single_length(&parts.headers);
    let framing = if bodiless || head_request {
        Framing::None
    } else if let Some(n) = declared {
        Framing::Length(n)
    } else if let Some(n) = body.size_hint().exact() {
        write::header_line(&mut out, b"content-length", n.to_string().as_bytes());
        Framing::Length(n)
    } else {
        write::header_line(&mut out, b"transfer-encoding", b"chunked");
        Framing::Chunked
    };
    for (name, value) in &parts.headers {
        if name == header::CONNECTION
            || name == header::TRANSFER_ENCODING
            || (name == header::CONTENT_LENGTH && (bodiless || declared.is_none()))
        {
            continue;
        }
        write::header_line(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !parts.headers.contains_key(header::DATE) {
        with_date(|date| write::header_line(&mut out, b"date", date));
    }
    if close {
        write::header_line(&mut out, b"connection", b"close");
    }
    write::end_head(&mut out);

    let mut left = match framing {
        Framing::None => {
            drop(body);
            return flush(io, &mut out, stall, &mut sent).await;
        }
        Framing::Length(n) => Some(n),
        Framing::Chunked => None,
    };
    loop {
        // Take what the body has ready; write out only when it has nothing more for now.
        let frame = poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
            Poll::Pending if !out.is_empty() => Poll::Ready(None::<Option<_>>),
            Poll::Pending => Poll::Pending,
            Poll::Ready(f) => Poll::Ready(Some(f)),
        })
        .await;
        let frame = match frame {
            None => {
                flush(io, &mut out, stall, &mut sent).await?;
                continue;
            }
            Some(f) => f,
        };
        match frame {
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue; // trailers are not forwarded
                };
                match &mut left {
                    Some(n) => {
                        let len = data.len() as u64;
                        if len > *n {
                            // More than it declared: send what was declared, then close.
                            let keep = usize::try_from(*n).unwrap_or(0);
                            out.extend_from_slice(&data[..keep]);
                            flush(io, &mut out, stall, &mut sent).await?;
                            return Err(Unfinished::Broken);
                        }
                        *n -= len;
                        out.extend_from_slice(&data);
                    }
                    None => chunked::encode_chunk(&mut out, &data),
                }
                if out.len() >= WRITE_CHUNK {
                    flush(io, &mut out, stall, &mut sent).await?;
                }
            }
            Some(Err(e)) => {
                if !sent {
                    return Err(Unfinished::Unsent(e));
                }
                tracing::debug!(error = %e, "response body failed; closing the connection");
                let _ = flush(io, &mut out, stall, &mut sent).await;
                return Err(Unfinished::Broken);
            }
            None => {
                return match left {
                    Some(0) => flush(io, &mut out, stall, &mut sent).await,
                    Some(_) => {
                        let _ = flush(io, &mut out, stall, &mut sent).await;
                        Err(Unfinished::Broken)
                    }
                    None => {
                        chunked::encode_end(&mut out);
                        flush(io, &mut out, stall, &mut sent).await
                    }
                };
            }
        }
    }
}

/// Writes out what is buffered; a client that takes none of it for `stall` is given up on.
async fn flush<S: AsyncWrite + Unpin>(
    io: &mut S,
    out: &mut Vec<u8>,
    stall: Duration,
    sent: &mut bool,
) -> Result<(), Unfinished> {
    if out.is_empty() {
        return Ok(());
    }
    *sent = true;
    let mut written = 0;
    while written < out.len() {
        match tokio::time::timeout(stall, io.write(&out[written..])).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Err(Unfinished::Broken),
            Ok(Ok(n)) => written += n,
        }
    }
    out.clear();
    Ok(())
}

thread_local! {
    /// The `Date` value of the current second.
    static DATE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((0, Vec::new())) };
}

/// Calls `f` with the current HTTP date, formatted once a second per thread.
fn with_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs || d.1.is_empty() {
            *d = (secs, httpdate::fmt_http_date(now).into_bytes());
        }
        f(&d.1);
    });
}

/// Entry points for the fuzz targets in `fuzz/` (not an API): the request-head parser and the
/// response writer, on plain bytes.
#[doc(hidden)]
pub mod fuzz {
    use super::*;

    /// A request head this module would serve.
    #[derive(Debug)]
    pub struct Head {
        /// Bytes the head took from the front of the input.
        pub len: usize,
        pub method: String,
        pub target: String,
        /// As sent: names in the client's spelling.
        pub headers: Vec<(Vec<u8>, Vec<u8>)>,
        pub close: bool,
        /// The length of the body after the head (its `Content-Length`; 0 without one).
        pub body_len: u64,
    }

    #[derive(Debug)]
    pub enum Parse {
        Complete(Head),
        /// More bytes could still make a head this module serves.
        Partial,
        /// hyper gets the connection (and these bytes).
        Handover,
    }

    /// Parses the front of `bytes` as [`serve`] does with `limits.max_headers` and
    /// `limits.max_header_bytes`.
    pub fn parse_request_head(bytes: &[u8], max_headers: usize, max_header_bytes: usize) -> Parse {
        let limits = Limits {
            max_head_bytes: max_header_bytes.max(8192),
            max_headers,
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_body: MAX_BODY,
            body_timeout: Duration::from_secs(1),
        };
        let mut buf = BytesMut::from(bytes);
        match parse_head(&mut buf, limits) {
            Parsed::Complete(head, body_len) => Parse::Complete(Head {
                len: bytes.len() - buf.len(),
                method: head.method.to_string(),
                target: head.target.to_string(),
                headers: head
                    .headers()
                    .map(|(n, v)| (n.to_vec(), v.to_vec()))
                    .collect(),
                close: head.close,
                body_len,
            }),
            Parsed::Partial if buf.len() >= limits.max_head_bytes => Parse::Handover,
            Parsed::Partial => Parse::Partial,
            Parsed::NotOurs => Parse::Handover,
        }
    }

    /// A body of the given chunks whose length is not known up front.
    struct Chunks(std::collections::VecDeque<Bytes>);

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = crate::body::BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
        }
    }

    /// What the fast path writes for a response with these headers and body chunks (a length
    /// known up front when `sized`); `None` when it gives up on the response.
    pub fn write(
        status: u16,
        headers: &[(&[u8], &[u8])],
        chunks: &[&[u8]],
        sized: bool,
        head_request: bool,
    ) -> Option<Vec<u8>> {
        thread_local! {
            static RT: Option<tokio::runtime::Runtime> = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .ok();
        }
        let body: Vec<Bytes> = chunks.iter().map(|c| Bytes::copy_from_slice(c)).collect();
        let body = if sized {
            crate::body::full(body.concat())
        } else {
            crate::body::boxed(Chunks(body.into()))
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = StatusCode::from_u16(status).ok()?;
        for (n, v) in headers {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
                resp.headers_mut().append(n, v);
            }
        }
        RT.with(|rt| {
            let rt = rt.as_ref()?;
            rt.block_on(async {
                let mut out = Vec::new();
                write_response(&mut out, resp, head_request, false, Duration::from_secs(1))
                    .await
                    .ok()?;
                Some(out)
            })
        })
    }
}

/// A stream that yields `prefix` before reading from `inner`: hyper reads a handed-over
/// connection through it.
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Rewind { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
