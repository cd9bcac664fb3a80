//! The upstream client for requests without a body to plain-HTTP upstreams: HTTP/1.1 over
//! per-worker pools of TCP connections, driven inline by the request's own task.
//!
//! hyper's pooled client runs every upstream connection as a task of its own, and the request,
//! the response head and each body chunk cross a channel between that task and the request's.
//! On the proxy's hot path (a GET to an app on plain HTTP) this client does the exchange in the
//! request's task instead: write the head, read and parse the answer with `httparse`, and hand
//! the server a [`Body`] that reads the upstream socket directly and puts the connection back in
//! the pool when the last byte has been read. BENCHMARKS.md has what that bought. Requests with
//! a body, upgrades and HTTPS upstreams still go through hyper's client.
//!
//! The response framing follows RFC 9112 section 6.3: no body after HEAD, 1xx, 204 and 304; a
//! chunked body is decoded (the server frames it again for its client); a Content-Length body
//! is read to its length (several differing values are refused); otherwise the body runs until
//! the upstream closes. Interim 1xx answers are skipped. A connection is reused only when its
//! answer was HTTP/1.1, did not say `Connection: close`, and ended exactly at its framing.
//!
//! A pooled connection the upstream closed while it was idle is noticed at checkout without a
//! system call (the reactor marked it readable). If one fails anyway before any byte of the answer
//! arrived, an idempotent request is sent again on another connection, as nginx does.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::uri::Authority;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::body::{Body, BoxError};
use crate::config::UpstreamSettings;

/// The largest response head accepted (hyper's client allows the same).
const MAX_HEAD_BYTES: usize = 400 * 1024;
/// The most response headers accepted.
const MAX_HEADERS: usize = 128;
/// The longest chunk-size or trailer line, and all trailers together.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILER_BYTES: usize = 64 * 1024;
/// How much room a read asks for.
const READ_SIZE: usize = 16 * 1024;

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("connecting timed out")]
    ConnectTimeout,
    #[error("connection failed: {0}")]
    Io(std::io::Error),
    #[error("closed the connection without answering")]
    Closed,
    #[error("sent an invalid response: {0}")]
    Invalid(&'static str),
}

/// Idle upstream connections, one pool per serving worker (a connection is only ever used by the
/// thread whose runtime it is registered with).
pub struct Pools {
    workers: Box<[Mutex<Pool>]>,
    idle_timeout: Duration,
    max_idle: usize,
    connect_timeout: Duration,
}

/// Idle connections by upstream. A gateway has a handful of upstreams, so a list searched in
/// order beats hashing the authority on every checkout and checkin.
#[derive(Default)]
struct Pool {
    hosts: Vec<(Authority, Vec<Idle>)>,
}

impl Pool {
    fn idle(&mut self, key: &Authority) -> Option<&mut Vec<Idle>> {
        self.hosts
            .iter_mut()
            .find(|(k, _)| k == key)
            .map(|(_, list)| list)
    }
}

struct Idle {
    stream: TcpStream,
    /// The connection's read buffer, kept for its next answer.
    buf: BytesMut,
    since: Instant,
}

/// Where a connection goes back to when its answer has been read.
struct Home {
    pools: Arc<Pools>,
    worker: usize,
    key: Authority,
}

impl Pools {
    /// Empty pools for `workers` serving workers.
    pub fn new(workers: usize, settings: &UpstreamSettings) -> Arc<Pools> {
        Arc::new(Pools {
            workers: (0..workers.max(1))
                .map(|_| Mutex::new(Pool::default()))
                .collect(),
            idle_timeout: settings.pool_idle_timeout,
            max_idle: settings.pool_max_idle_per_host,
            connect_timeout: settings.connect_timeout,
        })
    }

    fn pool(&self, worker: usize) -> std::sync::MutexGuard<'_, Pool> {
        self.workers[worker % self.workers.len()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used live idle connection to `key`, if any.
    fn checkout(&self, worker: usize, key: &Authority) -> Option<(TcpStream, BytesMut)> {
        let mut pool = self.pool(worker);
        let list = pool.idle(key)?;
        while let Some(idle) = list.pop() {
            if idle.since.elapsed() > self.idle_timeout {
                // The rest are older still.
                list.clear();
                return None;
            }
            if still_open(&idle.stream) {
                return Some((idle.stream, idle.buf));
            }
        }
        None
    }

    fn checkin(&self, worker: usize, key: Authority, stream: TcpStream, buf: BytesMut) {
        if self.max_idle == 0 {
            return;
        }
        let now = Instant::now();
        let mut pool = self.pool(worker);
        if pool.idle(&key).is_none() {
            pool.hosts.push((key.clone(), Vec::new()));
        }
        let Some(list) = pool.idle(&key) else { return };
        let expired = list
            .iter()
            .take_while(|i| now.duration_since(i.since) > self.idle_timeout)
            .count();
        list.drain(..expired);
        if list.len() >= self.max_idle {
            list.remove(0);
        }
        list.push(Idle {
            stream,
            buf,
            since: now,
        });
    }

    async fn connect(&self, key: &Authority) -> Result<TcpStream, ClientError> {
        let host = key.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = key.port_u16().unwrap_or(80);
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((host, port)),
        )
        .await
        {
            Err(_) => return Err(ClientError::ConnectTimeout),
            Ok(Err(e)) => return Err(ClientError::Connect(e)),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        Ok(stream)
    }

    /// Sends a request without a body (its head already serialised by [`request_head`]) to
    /// `key` and returns the answer, whose body streams from the upstream connection.
    pub async fn send(
        self: &Arc<Self>,
        worker: usize,
        key: &Authority,
        head: &[u8],
        method: &Method,
    ) -> Result<Response<Body>, ClientError> {
        let retry_allowed = method.is_idempotent();
        loop {
            let (mut stream, buf, reused) = match self.checkout(worker, key) {
                Some((s, buf)) => (s, buf, true),
                None => (self.connect(key).await?, BytesMut::new(), false),
            };
            match exchange(&mut stream, head, buf).await {
                Ok((parsed, buf)) => {
                    let home = Home {
                        pools: self.clone(),
                        worker,
                        key: key.clone(),
                    };
                    return answer(parsed, buf, stream, home, method == Method::HEAD);
                }
                // The upstream closed an idle connection just as we used it: try another.
                Err(Failed::BeforeAnswer(_)) if reused && retry_allowed => continue,
                Err(Failed::BeforeAnswer(e) | Failed::Other(e)) => return Err(e),
            }
        }
    }
}

/// Whether an idle connection is still usable: nothing arrived on it while it was idle (no
/// system call unless the reactor saw it become readable, which is how a close shows).
fn still_open(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
}

/// The request line and headers as sent upstream: origin-form target, HTTP/1.1, a Host header
/// (from `authority` when the request has none).
pub fn request_head<B>(req: &Request<B>, authority: &Authority) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !req.headers().contains_key(header::HOST) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(authority.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in req.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

enum Failed {
    /// Nothing of an answer arrived (safe to send an idempotent request again).
    BeforeAnswer(ClientError),
    Other(ClientError),
}

/// A parsed response head.
struct Parsed {
    status: StatusCode,
    http11: bool,
    /// `Connection: close`.
    close_asked: bool,
    /// Without the hop-by-hop headers, which are left out as the head is read.
    headers: HeaderMap,
}

/// Writes the request head and reads the final (non-1xx) response head. The bytes after it are
/// returned with it.
async fn exchange(
    stream: &mut TcpStream,
    head: &[u8],
    mut buf: BytesMut,
) -> Result<(Parsed, BytesMut), Failed> {
    stream
        .write_all(head)
        .await
        .map_err(|e| Failed::BeforeAnswer(ClientError::Io(e)))?;
    // The buffer of the connection's previous answer is reused once its bytes are dropped.
    buf.clear();
    buf.reserve(4 * 1024);
    let mut answered = false;
    loop {
        if !buf.is_empty() {
            match parse_head(&mut buf).map_err(Failed::Other)? {
                Some(p) if p.status.is_informational() => {
                    if p.status == StatusCode::SWITCHING_PROTOCOLS {
                        return Err(Failed::Other(ClientError::Invalid(
                            "switched protocols unasked",
                        )));
                    }
                    continue;
                }
                Some(p) => return Ok((p, buf)),
                None if buf.len() > MAX_HEAD_BYTES => {
                    return Err(Failed::Other(ClientError::Invalid(
                        "response head too large",
                    )));
                }
                None => {}
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_SIZE);
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) if !answered => return Err(Failed::BeforeAnswer(ClientError::Closed)),
            Ok(0) => return Err(Failed::Other(ClientError::Invalid("closed mid-head"))),
            Ok(_) => answered = true,
            Err(e) if !answered => return Err(Failed::BeforeAnswer(ClientError::Io(e))),
            Err(e) => return Err(Failed::Other(ClientError::Io(e))),
        }
    }
}

/// Parses a response head at the start of `buf` and removes it from `buf`; `None` when it is
/// not complete yet.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Parsed>, ClientError> {
    let (len, code, version, spans) = {
        let mut headers =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            buf,
            &mut headers,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ClientError::Invalid("too many headers"));
            }
            Err(_) => return Err(ClientError::Invalid("malformed response head")),
        };
        (
            len,
            resp.code.unwrap_or(0),
            resp.version.unwrap_or(0),
            crate::h1::header_spans(buf, resp.headers),
        )
    };
    let head = buf.split_to(len).freeze();
    let status =
        StatusCode::from_u16(code).map_err(|_| ClientError::Invalid("invalid status code"))?;
    let mut headers = HeaderMap::with_capacity(spans.len() + 2);
    let mut close_asked = false;
    let mut listed = Vec::new();
    for &(ns, ne, vs, ve) in &spans {
        let raw = &head[ns..ne];
        if raw.eq_ignore_ascii_case(b"connection") {
            for token in head[vs..ve].split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close_asked = true;
                } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive") {
                    listed.extend(HeaderName::from_bytes(token).ok());
                }
            }
            continue;
        }
        // Hop-by-hop (RFC 9110 section 7.6.1); Transfer-Encoding stays until the framing is
        // decided.
        let is = |want: &[u8]| raw.eq_ignore_ascii_case(want);
        if is(b"keep-alive")
            || is(b"te")
            || is(b"trailer")
            || is(b"upgrade")
            || raw
                .get(..6)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"proxy-"))
        {
            continue;
        }
        let name =
            HeaderName::from_bytes(raw).map_err(|_| ClientError::Invalid("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
            .map_err(|_| ClientError::Invalid("invalid header value"))?;
        headers.append(name, value);
    }
    for name in listed {
        // The framing headers are the framing's business (see `answer`).
        if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
            headers.remove(name);
        }
    }
    Ok(Some(Parsed {
        status,
        http11: version == 1,
        close_asked,
        headers,
    }))
}

/// How the body of an answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    Close,
    Done,
}

/// Where a chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines (dropped) after the last chunk; this many bytes seen so far.
    Trailers(usize),
}

/// Builds the response for a parsed head: decides the body's framing and whether the
/// connection can be reused.
fn answer(
    parsed: Parsed,
    buf: BytesMut,
    stream: TcpStream,
    home: Home,
    head_request: bool,
) -> Result<Response<Body>, ClientError> {
    let Parsed {
        status,
        http11,
        close_asked,
        mut headers,
    } = parsed;
    let framing = body_framing(status, head_request, http11, &mut headers)?;
    let reusable = http11 && !close_asked && framing != Framing::Close;
    let mut body = UpstreamBody {
        stream: Some(stream),
        buf,
        framing,
        reusable,
        home: Some(home),
        trailer_limit: MAX_TRAILER_BYTES,
    };
    if body.framing == Framing::Length(0) {
        body.finish();
    }
    let mut resp = Response::new(crate::body::boxed(body));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Ok(resp)
}

/// How the body of an answer is framed (RFC 9112 section 6.3). The framing headers are removed
/// when the body is handed on decoded; the server frames it again for its client.
fn body_framing(
    status: StatusCode,
    head_request: bool,
    http11: bool,
    headers: &mut HeaderMap,
) -> Result<Framing, ClientError> {
    let framing =
        if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            Framing::Length(0)
        } else if !http11 && headers.contains_key(header::TRANSFER_ENCODING) {
            // RFC 9112 section 6.1: the framing of an HTTP/1.0 message with Transfer-Encoding
            // is faulty (found by the h1_differential fuzz target; hyper refuses it too).
            return Err(ClientError::Invalid(
                "Transfer-Encoding in an HTTP/1.0 answer",
            ));
        } else if headers.contains_key(header::TRANSFER_ENCODING) {
            // The last coding decides; a Content-Length next to it is ignored (and removed).
            let last = headers
                .get_all(header::TRANSFER_ENCODING)
                .iter()
                .flat_map(|v| v.as_bytes().split(|&b| b == b','))
                .map(<[u8]>::trim_ascii)
                .rfind(|t| !t.is_empty())
                .map(<[u8]>::to_ascii_lowercase);
            headers.remove(header::CONTENT_LENGTH);
            // The body is handed on decoded: the server frames it again for its client.
            headers.remove(header::TRANSFER_ENCODING);
            if last.as_deref() == Some(&b"chunked"[..]) {
                Framing::Chunked(Chunk::Size)
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
                _ => return Err(ClientError::Invalid("invalid Content-Length")),
            }
        } else {
            Framing::Close
        };
    Ok(framing)
}

/// A Content-Length value: digits only, no sign, no overflow.
fn content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// An answer's body, read straight from the upstream connection.
struct UpstreamBody {
    stream: Option<TcpStream>,
    /// Bytes read but not handed on yet.
    buf: BytesMut,
    framing: Framing,
    reusable: bool,
    home: Option<Home>,
    trailer_limit: usize,
}

/// What the decoder found in the buffered bytes.
enum Step {
    Data(Bytes),
    NeedMore,
    End,
}

impl UpstreamBody {
    /// The body is complete: the connection goes back to its pool if it can be reused.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        let stream = self.stream.take();
        if let (Some(stream), Some(home)) = (stream, self.home.take())
            && self.reusable
            && self.buf.is_empty()
        {
            let buf = std::mem::take(&mut self.buf);
            home.pools.checkin(home.worker, home.key, stream, buf);
        }
    }

    /// Takes what the buffered bytes allow.
    fn decode(&mut self) -> Result<Step, ClientError> {
        loop {
            match self.framing {
                Framing::Done => return Ok(Step::End),
                Framing::Length(0) => return Ok(Step::End),
                Framing::Length(n) => {
                    if self.buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(self.buf.len());
                    self.framing = Framing::Length(n - take as u64);
                    return Ok(Step::Data(self.buf.split_to(take).freeze()));
                }
                Framing::Close => {
                    if self.buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    return Ok(Step::Data(self.buf.split().freeze()));
                }
                Framing::Chunked(Chunk::Size) => {
                    let Some(line) = take_line(&mut self.buf, MAX_CHUNK_LINE)? else {
                        return Ok(Step::NeedMore);
                    };
                    let size = chunk_size(&line)?;
                    self.framing = Framing::Chunked(if size == 0 {
                        Chunk::Trailers(0)
                    } else {
                        Chunk::Data(size)
                    });
                }
                Framing::Chunked(Chunk::Data(n)) => {
                    if self.buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(self.buf.len());
                    let left = n - take as u64;
                    self.framing = Framing::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    return Ok(Step::Data(self.buf.split_to(take).freeze()));
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if self.buf.len() < 2 {
                        return Ok(Step::NeedMore);
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err(ClientError::Invalid("malformed chunk"));
                    }
                    self.buf.advance(2);
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Trailers(seen)) => {
                    let Some(line) = take_line(&mut self.buf, MAX_CHUNK_LINE)? else {
                        return Ok(Step::NeedMore);
                    };
                    if line.is_empty() {
                        return Ok(Step::End);
                    }
                    // Dropped, but still a header field line: a malformed one (bare CR, no
                    // colon, control bytes) means the answer is not what it seems (found by
                    // the chunked fuzz target against hyper, which refuses those too).
                    if !is_field_line(&line) {
                        return Err(ClientError::Invalid("malformed trailer"));
                    }
                    let seen = seen + line.len() + 2;
                    if seen > self.trailer_limit {
                        return Err(ClientError::Invalid("trailers too large"));
                    }
                    self.framing = Framing::Chunked(Chunk::Trailers(seen));
                }
            }
        }
    }
}

/// One CRLF-terminated line from the front of `buf`, without its CRLF; `None` if incomplete.
fn take_line(buf: &mut BytesMut, limit: usize) -> Result<Option<Bytes>, ClientError> {
    let Some(pos) = buf.iter().take(limit + 2).position(|&b| b == b'\n') else {
        if buf.len() > limit + 1 {
            return Err(ClientError::Invalid("chunk line too long"));
        }
        return Ok(None);
    };
    if pos == 0 || buf[pos - 1] != b'\r' {
        return Err(ClientError::Invalid("malformed chunk line"));
    }
    let line = buf.split_to(pos + 1).freeze();
    Ok(Some(line.slice(..pos - 1)))
}

/// Whether `line` (without its CRLF) is one header field line, by `httparse`'s rules.
fn is_field_line(line: &[u8]) -> bool {
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
fn chunk_size(line: &[u8]) -> Result<u64, ClientError> {
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
        return Err(ClientError::Invalid("malformed chunk size"));
    }
    std::str::from_utf8(&line[..digits])
        .ok()
        .and_then(|d| u64::from_str_radix(d, 16).ok())
        .ok_or(ClientError::Invalid("malformed chunk size"))
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            match this.decode() {
                Ok(Step::Data(d)) => {
                    if this.framing == Framing::Length(0) {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Ok(Step::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => {}
                Err(e) => {
                    this.framing = Framing::Done;
                    this.stream = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
            let Some(stream) = this.stream.as_mut() else {
                return Poll::Ready(None);
            };
            if this.buf.capacity() - this.buf.len() < 1024 {
                this.buf.reserve(READ_SIZE);
            }
            match tokio_util::io::poll_read_buf(Pin::new(stream), cx, &mut this.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    this.stream = None;
                    if this.framing == Framing::Close {
                        this.framing = Framing::Done;
                        return Poll::Ready(None);
                    }
                    this.framing = Framing::Done;
                    return Poll::Ready(Some(Err(ClientError::Invalid(
                        "closed before the end of the body",
                    )
                    .into())));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.framing = Framing::Done;
                    this.stream = None;
                    return Poll::Ready(Some(Err(ClientError::Io(e).into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// Entry points for the fuzz targets in `fuzz/` (not an API): the response-head parser, the
/// framing decision and the chunked decoder, on plain bytes.
#[doc(hidden)]
pub mod fuzz {
    use super::*;

    /// What the client makes of an upstream's answer.
    #[derive(Debug)]
    pub struct Answer {
        pub status: u16,
        /// As the server would pass them on (hop-by-hop and framing headers removed).
        pub headers: HeaderMap,
        pub body: Vec<u8>,
        /// The connection could carry another request: the answer ended exactly at its
        /// framing and nothing followed it.
        pub reusable: bool,
    }

    /// Reads `bytes` as everything an upstream sent in answer to one request (`HEAD` when
    /// `head_request`) before closing the connection, as [`Pools::send`] does.
    pub fn read_answer(bytes: &[u8], head_request: bool) -> Result<Answer, String> {
        let mut buf = BytesMut::from(bytes);
        let parsed = loop {
            match parse_head(&mut buf).map_err(|e| e.to_string())? {
                Some(p) if p.status == StatusCode::SWITCHING_PROTOCOLS => {
                    return Err("switched protocols unasked".into());
                }
                Some(p) if p.status.is_informational() => {}
                Some(p) => break p,
                None => return Err("closed mid-head".into()),
            }
        };
        let Parsed {
            status,
            http11,
            close_asked,
            mut headers,
        } = parsed;
        let framing =
            body_framing(status, head_request, http11, &mut headers).map_err(|e| e.to_string())?;
        crate::proxy::headers::remove_hop_by_hop(&mut headers);
        let mut body = UpstreamBody {
            stream: None,
            buf,
            framing,
            reusable: http11 && !close_asked && framing != Framing::Close,
            home: None,
            trailer_limit: MAX_TRAILER_BYTES,
        };
        let mut out = Vec::new();
        loop {
            match body.decode().map_err(|e| e.to_string())? {
                Step::Data(d) => out.extend_from_slice(&d),
                Step::End => break,
                // The upstream closed: that ends only a body framed by the close.
                Step::NeedMore if body.framing == Framing::Close => break,
                Step::NeedMore => return Err("closed before the end of the body".into()),
            }
        }
        Ok(Answer {
            status: status.as_u16(),
            headers,
            body: out,
            reusable: body.reusable && body.buf.is_empty(),
        })
    }

    /// Decodes `bytes` as a chunked body: the data, whether the body ended, and how many bytes
    /// followed its end.
    pub fn decode_chunked(bytes: &[u8]) -> Result<(Vec<u8>, bool, usize), String> {
        let mut body = UpstreamBody {
            stream: None,
            buf: BytesMut::from(bytes),
            framing: Framing::Chunked(Chunk::Size),
            reusable: false,
            home: None,
            trailer_limit: MAX_TRAILER_BYTES,
        };
        let mut out = Vec::new();
        loop {
            match body.decode().map_err(|e| e.to_string())? {
                Step::Data(d) => out.extend_from_slice(&d),
                Step::End => return Ok((out, true, body.buf.len())),
                Step::NeedMore => return Ok((out, false, 0)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(raw: &[u8]) -> Result<(Vec<u8>, bool), ClientError> {
        let mut body = UpstreamBody {
            stream: None,
            buf: BytesMut::from(raw),
            framing: Framing::Chunked(Chunk::Size),
            reusable: false,
            home: None,
            trailer_limit: 64,
        };
        let mut out = Vec::new();
        loop {
            match body.decode()? {
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

    #[test]
    fn response_heads_parse_and_share_bytes() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello"[..]);
        let p = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(p.status, StatusCode::OK);
        assert!(p.http11);
        assert_eq!(p.headers["content-length"], "5");
        assert_eq!(p.headers["x-a"], "b");
        assert_eq!(&buf[..], b"hello");
        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-"[..]);
        assert!(parse_head(&mut partial).unwrap().is_none());
        let mut hops = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nProxy-X: 1\r\nTE: x\r\nX-Kept: 1\r\n\r\n"[..],
        );
        let p = parse_head(&mut hops).unwrap().unwrap();
        assert!(p.close_asked);
        let names: Vec<_> = p.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
        let mut bad = BytesMut::from(&b"HTTP/1.1 2000 OK\r\n\r\n"[..]);
        assert!(parse_head(&mut bad).is_err());
    }

    #[test]
    fn http10_answers_with_transfer_encoding_are_refused() {
        // Found by the h1_differential fuzz target.
        for version in ["1.0", "1.1"] {
            for te in ["chunked", "gzip"] {
                let raw = format!(
                    "HTTP/{version} 200 OK\r\nTransfer-Encoding: {te}\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                );
                let read = fuzz::read_answer(raw.as_bytes(), false);
                assert_eq!(
                    read.is_ok(),
                    version == "1.1",
                    "HTTP/{version}, {te}: {read:?}"
                );
            }
        }
    }

    #[test]
    fn request_heads_are_origin_form_with_host() {
        let req = Request::builder()
            .method(Method::GET)
            .uri("http://app.internal:8080/a/b?c=d")
            .header("x-auth-user-id", "u1")
            .body(())
            .unwrap();
        let authority: Authority = "app.internal:8080".parse().unwrap();
        let head = String::from_utf8(request_head(&req, &authority)).unwrap();
        assert_eq!(
            head,
            "GET /a/b?c=d HTTP/1.1\r\nhost: app.internal:8080\r\nx-auth-user-id: u1\r\n\r\n"
        );
    }
}
