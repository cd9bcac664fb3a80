//! The built-in HTTP/1.1 upstream client, for requests to plain-HTTP upstreams without a body or
//! with a small one:
//! per-worker pools of TCP connections, driven inline by the request's own task. (Not to be
//! confused with `auth::client`, the browser script the auth API serves.)
//!
//! hyper's pooled client runs every upstream connection as a task of its own, and the request,
//! the response head and each body chunk cross a channel between that task and the request's.
//! On the proxy's hot path (a GET to an app on plain HTTP) this client does the exchange in the
//! request's task instead: write the head, read and parse the answer (with the HTTP/1.1 codec,
//! `crate::http1`), and hand the server a [`Body`] that reads the upstream socket directly and
//! puts the connection back in the pool when the last byte has been read. BENCHMARKS.md has
//! what that bought. Requests with a body of known length up to [`MAX_BODY_BYTES`] are sent the
//! same way ([`Pools::send_with_body`]); larger or chunked bodies, upgrades and HTTPS upstreams
//! still go through hyper's client.
//!
//! The response framing (decided and decoded by `crate::http1::framing`) follows RFC 9112
//! section 6.3: no body after HEAD, 1xx, 204 and 304; a chunked body is decoded (the server
//! frames it again for its client); a Content-Length body is read to its length (several
//! differing values are refused); otherwise the body runs until the upstream closes. Interim
//! 1xx answers are skipped. A connection is reused only when its answer was HTTP/1.1, did not
//! say `Connection: close`, and ended exactly at its framing.
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
use http::{HeaderMap, Method, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::body::{Body, BoxError};
use crate::config::UpstreamSettings;
use crate::http1::framing::{self, Framing, MAX_TRAILER_BYTES, Step};
use crate::http1::head::{self, ResponseHead};
use crate::http1::{Invalid, connection};

/// The largest response head accepted (hyper's client allows the same).
const MAX_HEAD_BYTES: usize = 400 * 1024;
/// How much room a read asks for.
const READ_SIZE: usize = 16 * 1024;
/// The largest request body sent over this client ([`Pools::send_with_body`]).
pub const MAX_BODY_BYTES: u64 = 256 * 1024;
/// A request body is written out once this much of it is pending.
const WRITE_CHUNK: usize = 64 * 1024;

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
    /// The client's request body failed (see [`crate::body::ClientBodyError`]).
    #[error("the request body failed: {0}")]
    Body(BoxError),
}

impl From<Invalid> for ClientError {
    fn from(Invalid(what): Invalid) -> ClientError {
        ClientError::Invalid(what)
    }
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

    /// Sends a request without a body (its head already serialised by
    /// [`crate::http1::write::request_head`] or the fast path) to
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
                    return answer(parsed, buf, stream, home, method == Method::HEAD, false);
                }
                // The upstream closed an idle connection just as we used it: try another.
                Err(Failed::BeforeAnswer(_)) if reused && retry_allowed => continue,
                Err(Failed::BeforeAnswer(e) | Failed::Other(e)) => return Err(e),
            }
        }
    }
}

impl Pools {
    /// Sends a request whose body has a known length of at most [`MAX_BODY_BYTES`] (its head,
    /// with that `Content-Length`, already serialised) and returns the answer. The body is
    /// written as it arrives from the client: the head and every chunk that is already there go
    /// out in one write. A request whose body was read is never sent again, so there is no retry
    /// on a pooled connection found closed (the checkout's liveness check still applies).
    ///
    /// The answer is only read once the whole body is written: an upstream that answers early and
    /// stops reading could make both sides wait, were the body larger than the sockets' buffers;
    /// [`MAX_BODY_BYTES`] keeps it well below them (larger bodies go through hyper's client,
    /// which reads and writes at once). An upstream that answers early and closes is heard: a
    /// failed write is followed by an attempt to read its answer.
    pub async fn send_with_body(
        self: &Arc<Self>,
        worker: usize,
        key: &Authority,
        head: Bytes,
        mut body: Body,
        len: u64,
    ) -> Result<Response<Body>, ClientError> {
        let (mut tcp, buf) = match self.checkout(worker, key) {
            Some((s, buf)) => (s, buf),
            None => (self.connect(key).await?, BytesMut::new()),
        };
        let mut out = Pending::new(head);
        let mut sent = 0u64;
        let mut failed = None;
        loop {
            // Every chunk that is already there joins the pending write; the write (vectored:
            // the chunks are not copied) happens when the body has to be waited for, or is
            // complete, or the pending bytes are plenty.
            let next = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx)));
            let frame = match next.await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    if let Err(e) = tcp.write_all_buf(&mut out).await {
                        failed = Some(e);
                        break;
                    }
                    std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                }
            };
            match frame {
                None => break,
                Some(Err(e)) => return Err(ClientError::Body(e)),
                Some(Ok(frame)) => {
                    // Trailers have no place in a Content-Length message: dropped, as hyper's
                    // client drops them.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    sent += data.len() as u64;
                    if sent > len {
                        return Err(ClientError::Body(
                            crate::body::ClientBodyError::Broken(
                                "more body than its length".into(),
                            )
                            .into(),
                        ));
                    }
                    out.push(data);
                    if out.remaining() >= WRITE_CHUNK
                        && let Err(e) = tcp.write_all_buf(&mut out).await
                    {
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        if failed.is_none() && sent < len {
            return Err(ClientError::Body(
                crate::body::ClientBodyError::Broken("less body than its length".into()).into(),
            ));
        }
        if failed.is_none()
            && let Err(e) = tcp.write_all_buf(&mut out).await
        {
            failed = Some(e);
        }
        match (read_answer_head(&mut tcp, buf).await, failed) {
            (Ok((parsed, buf)), failed) => {
                let home = Home {
                    pools: self.clone(),
                    worker,
                    key: key.clone(),
                };
                answer(parsed, buf, tcp, home, false, failed.is_some())
            }
            // No answer after a failed write: the write's error is the news.
            (Err(_), Some(e)) => Err(ClientError::Io(e)),
            (Err(Failed::BeforeAnswer(e) | Failed::Other(e)), None) => Err(e),
        }
    }
}

/// The bytes of a request waiting to be written: the head, then body chunks as they came (a
/// [`Buf`] whose chunks a vectored write takes as they are).
struct Pending {
    chunks: std::collections::VecDeque<Bytes>,
    remaining: usize,
}

impl Pending {
    fn new(head: Bytes) -> Self {
        let remaining = head.len();
        Pending {
            chunks: std::collections::VecDeque::from([head]),
            remaining,
        }
    }

    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.remaining += chunk.len();
            self.chunks.push_back(chunk);
        }
    }
}

impl Buf for Pending {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.front().map_or(&[], |c| c.as_ref())
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, chunk) in dst.iter_mut().zip(&self.chunks) {
            *slot = std::io::IoSlice::new(chunk);
            n += 1;
        }
        n
    }

    fn advance(&mut self, mut cnt: usize) {
        self.remaining = self.remaining.saturating_sub(cnt);
        while cnt > 0 {
            let Some(front) = self.chunks.front_mut() else {
                return;
            };
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.chunks.pop_front();
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

enum Failed {
    /// Nothing of an answer arrived (safe to send an idempotent request again).
    BeforeAnswer(ClientError),
    Other(ClientError),
}

/// Writes the request head and reads the final (non-1xx) response head. The bytes after it are
/// returned with it.
async fn exchange(
    stream: &mut TcpStream,
    head: &[u8],
    buf: BytesMut,
) -> Result<(ResponseHead, BytesMut), Failed> {
    stream
        .write_all(head)
        .await
        .map_err(|e| Failed::BeforeAnswer(ClientError::Io(e)))?;
    read_answer_head(stream, buf).await
}

/// Reads the final (non-1xx) response head of the request just written. The bytes after it are
/// returned with it.
async fn read_answer_head(
    stream: &mut TcpStream,
    mut buf: BytesMut,
) -> Result<(ResponseHead, BytesMut), Failed> {
    // The buffer of the connection's previous answer is reused once its bytes are dropped.
    buf.clear();
    buf.reserve(4 * 1024);
    let mut answered = false;
    loop {
        if !buf.is_empty() {
            match head::parse_response(&mut buf).map_err(|e| Failed::Other(e.into()))? {
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

/// Builds the response for a parsed head: decides the body's framing and whether the
/// connection can be reused (never when `unfinished`: the request's body was not all sent).
fn answer(
    parsed: ResponseHead,
    buf: BytesMut,
    stream: TcpStream,
    home: Home,
    head_request: bool,
    unfinished: bool,
) -> Result<Response<Body>, ClientError> {
    let ResponseHead {
        status,
        http11,
        close_asked,
        mut headers,
    } = parsed;
    let framing = framing::body_framing(status, head_request, http11, &mut headers)?;
    let reusable = http11 && !close_asked && framing != Framing::Close && !unfinished;
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
        Ok(framing::decode(
            &mut self.framing,
            &mut self.buf,
            self.trailer_limit,
        )?)
    }
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
            match head::parse_response(&mut buf).map_err(|e| ClientError::from(e).to_string())? {
                Some(p) if p.status == StatusCode::SWITCHING_PROTOCOLS => {
                    return Err("switched protocols unasked".into());
                }
                Some(p) if p.status.is_informational() => {}
                Some(p) => break p,
                None => return Err("closed mid-head".into()),
            }
        };
        let ResponseHead {
            status,
            http11,
            close_asked,
            mut headers,
        } = parsed;
        let framing = framing::body_framing(status, head_request, http11, &mut headers)
            .map_err(|e| ClientError::from(e).to_string())?;
        connection::remove_hop_by_hop(&mut headers, |_| false);
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
            framing: Framing::CHUNKED,
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
}
