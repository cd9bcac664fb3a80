//! The raw-HTTP test kit: HTTP/1.1 written and read as exact bytes, for tests that need framing
//! no client library would produce or accept.
//!
//! - [`Client`]: one connection to the gateway (plain TCP, or TLS via [`Client::over`]) that
//!   writes bytes and reads [`Wire`] responses (Content-Length, chunked or close delimited).
//! - [`RawUpstream`]: an upstream that reads requests ([`RawSeen`], with the exact bytes of each
//!   head) and answers each as a behaviour says ([`Act`]: canned bytes, pauses, closes).
//! - [`until_close`]: one write, then everything until the peer closes; [`slow_sender`]: a body
//!   written a byte at a time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::util::guard;

/// Where `needle` first occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Writes raw bytes on a new TCP connection and reads until the server closes it or `wait`
/// passes.
pub async fn until_close(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

// ---- reading HTTP/1.1 off a socket ----

/// A socket and what was read from it but not consumed yet.
pub struct Reader<S = TcpStream> {
    pub s: S,
    pub buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Reader<S> {
    pub fn new(s: S) -> Reader<S> {
        Reader { s, buf: Vec::new() }
    }

    /// Reads more into the buffer; false at the end of the stream (or on an error).
    async fn fill(&mut self) -> bool {
        let mut chunk = vec![0u8; 64 * 1024];
        match self.s.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// A head up to and including its blank line, taken from the buffer.
    pub async fn head(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                return Some(self.buf.drain(..end + 4).collect());
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    pub async fn exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// One CRLF-terminated line, without its CRLF.
    async fn line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).collect();
                return Some(line[..end].to_vec());
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// A chunked body, decoded, and its trailer lines. `None` when it is malformed or the
    /// stream ends first.
    pub async fn chunked(&mut self) -> Option<(Vec<u8>, Vec<String>)> {
        let mut out = Vec::new();
        loop {
            let line = String::from_utf8(self.line().await?).ok()?;
            let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                let mut trailers = Vec::new();
                loop {
                    let l = self.line().await?;
                    if l.is_empty() {
                        return Some((out, trailers));
                    }
                    trailers.push(String::from_utf8_lossy(&l).into_owned());
                }
            }
            out.extend(self.exact(size).await?);
            if self.exact(2).await? != b"\r\n" {
                return None;
            }
        }
    }

    /// Everything until the peer closes (the buffered bytes first).
    pub async fn rest_until_eof(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.buf)
    }
}

/// Sends `head` with the first byte of `body`, then the rest one byte at a time with `gap`
/// between bytes, while reading the answer; returns what was read when the server closed the
/// connection (hang guard: 20 s).
pub async fn slow_sender(addr: SocketAddr, head: &str, body: &[u8], gap: Duration) -> String {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let mut first = head.as_bytes().to_vec();
    first.extend_from_slice(&body[..1]);
    wr.write_all(&first).await.unwrap();
    let body = body[1..].to_vec();
    let writer = tokio::spawn(async move {
        for b in body {
            tokio::time::sleep(gap).await;
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
        }
        // Keep the write side open: only the gateway may end this exchange.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let mut out = Vec::new();
    let _ = guard(20, rd.read_to_end(&mut out)).await;
    writer.abort();
    String::from_utf8_lossy(&out).into_owned()
}

// ---- heads ----

/// Header lines of a head (after its first line), as (lower-case name, value), both trimmed.
pub fn header_lines(head: impl AsRef<[u8]>) -> Vec<(String, String)> {
    String::from_utf8_lossy(head.as_ref())
        .split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap_or((l, ""));
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect()
}

/// The values of `name` (any case), in order.
pub fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

pub fn content_length(headers: &[(String, String)]) -> Option<usize> {
    values(headers, "content-length").first().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("bad content-length {v:?}"))
    })
}

pub fn is_chunked(headers: &[(String, String)]) -> bool {
    values(headers, "transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"))
}

/// A bodiless GET of `path` with `Host: localhost`.
pub fn get_req(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")
}

// ---- a raw client ----

/// A response as the client read it.
#[derive(Debug)]
pub struct Wire {
    pub status: u16,
    /// The status line and header lines as received.
    pub head: String,
    pub headers: Vec<(String, String)>,
    /// The body, decoded when it came chunked.
    pub body: Vec<u8>,
    /// Trailer lines of a chunked body.
    pub trailers: Vec<String>,
}

impl Wire {
    pub fn all(&self, name: &str) -> Vec<&str> {
        values(&self.headers, name)
    }

    /// The one value of `name`; panics when it is missing or repeated.
    pub fn one(&self, name: &str) -> &str {
        let all = self.all(name);
        assert_eq!(all.len(), 1, "{name} in {}", self.head);
        all[0]
    }

    pub fn has(&self, name: &str) -> bool {
        !self.all(name).is_empty()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.head, self.text()))
    }
}

/// A raw client connection to the gateway.
pub struct Client<S = TcpStream> {
    pub r: Reader<S>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        Client::over(TcpStream::connect(addr).await.unwrap())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// A client on a connection already made (TLS, for one).
    pub fn over(s: S) -> Client<S> {
        Client { r: Reader::new(s) }
    }

    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.r.s.write_all(bytes.as_ref()).await.unwrap();
    }

    /// Reads one response (`head_request`: the request was HEAD, so no body follows). `None`
    /// when the connection closes before a whole response arrived.
    pub async fn try_response(&mut self, head_request: bool) -> Option<Wire> {
        guard(30, async {
            let head = String::from_utf8(self.r.head().await?).unwrap();
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no status in {head:?}"));
            assert!(head.starts_with("HTTP/1."), "{head:?}");
            let headers = header_lines(&head);
            let mut trailers = Vec::new();
            let body =
                if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
                    Vec::new()
                } else if is_chunked(&headers) {
                    let (body, t) = self.r.chunked().await?;
                    trailers = t;
                    body
                } else if let Some(n) = content_length(&headers) {
                    self.r.exact(n).await?
                } else {
                    self.r.rest_until_eof().await
                };
            Some(Wire {
                status,
                head,
                headers,
                body,
                trailers,
            })
        })
        .await
    }

    pub async fn response(&mut self) -> Wire {
        self.try_response(false)
            .await
            .expect("the connection closed before a whole response")
    }

    /// Sends a bodiless GET and reads its response.
    pub async fn get(&mut self, path: &str) -> Wire {
        self.send(get_req(path)).await;
        self.response().await
    }

    /// Reads until the gateway closes the connection: what arrived after the last response.
    pub async fn until_closed(&mut self, what: &str) -> Vec<u8> {
        self.until_closed_within(Duration::from_secs(20), what)
            .await
    }

    /// [`Client::until_closed`], with the gateway given `wait` to close.
    pub async fn until_closed_within(&mut self, wait: Duration, what: &str) -> Vec<u8> {
        tokio::time::timeout(wait, self.r.rest_until_eof())
            .await
            .unwrap_or_else(|_| panic!("{what}: the connection was left open"))
    }

    /// Nothing was received beyond the responses read so far.
    pub fn assert_drained(&self, what: &str) {
        assert!(
            self.r.buf.is_empty(),
            "{what}: stray bytes after the response: {:?}",
            String::from_utf8_lossy(&self.r.buf)
        );
    }
}

// ---- a raw upstream ----

/// A request as a raw upstream read it.
#[derive(Debug, Clone)]
pub struct RawSeen {
    /// Which accepted connection it came on (0-based), and its place on that connection.
    pub conn: usize,
    pub nth: usize,
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The exact bytes of the head, blank line included.
    pub head: Vec<u8>,
}

/// What a raw upstream does with a request: writes `parts` (pausing `pause` before each part
/// after the first), then closes the connection or waits for the next request.
pub struct Act {
    pub parts: Vec<Vec<u8>>,
    pub pause: Duration,
    pub close: bool,
}

pub fn reply(bytes: impl Into<Vec<u8>>) -> Act {
    Act {
        parts: vec![bytes.into()],
        pause: Duration::ZERO,
        close: false,
    }
}

pub fn reply_close(bytes: impl Into<Vec<u8>>) -> Act {
    Act {
        close: true,
        ..reply(bytes)
    }
}

/// Closes the connection without answering.
pub fn hang_up() -> Act {
    Act {
        parts: Vec::new(),
        pause: Duration::ZERO,
        close: true,
    }
}

/// Never answers (the connection stays open until the gateway drops it).
pub fn silence() -> Act {
    Act {
        parts: Vec::new(),
        pause: Duration::ZERO,
        close: false,
    }
}

/// Writes `parts` with `pause` between them.
pub fn trickle(parts: Vec<Vec<u8>>, pause: Duration) -> Act {
    Act {
        parts,
        pause,
        close: false,
    }
}

/// A 200 with a Content-Length body.
pub fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// [`ok`], without its body when answering HEAD.
pub fn ok_to(req: &RawSeen, body: &str) -> Vec<u8> {
    let mut out = ok(body);
    if req.method == "HEAD" {
        out.truncate(out.len() - body.len());
    }
    out
}

/// A 200 `ok` with `n` headers besides its Content-Length.
pub fn many_headers(n: usize) -> Vec<u8> {
    let mut out = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..n {
        out.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    out.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
    out
}

type Behaviour = dyn Fn(&RawSeen) -> Act + Send + Sync;

/// An upstream on 127.0.0.1:0 that reads HTTP/1.1 requests (Content-Length or chunked bodies)
/// and answers each as `behaviour` says.
pub struct RawUpstream {
    pub addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<RawSeen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    pub async fn start(behaviour: impl Fn(&RawSeen) -> Act + Send + Sync + 'static) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let behaviour: Arc<Behaviour> = Arc::new(behaviour);
        let task = {
            let (accepts, seen) = (accepts.clone(), seen.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let conn = accepts.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve_raw(
                        Reader::new(stream),
                        conn,
                        seen.clone(),
                        behaviour.clone(),
                    ));
                }
            })
        };
        RawUpstream {
            addr,
            accepts,
            seen,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<RawSeen> {
        self.seen.lock().unwrap().clone()
    }

    /// The exact bytes of every request head, in arrival order.
    pub fn heads(&self) -> Vec<Vec<u8>> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.head.clone())
            .collect()
    }

    /// (connection, method, target) of every request, in arrival order.
    pub fn log(&self) -> Vec<(usize, String, String)> {
        self.requests()
            .into_iter()
            .map(|r| (r.conn, r.method, r.target))
            .collect()
    }
}

async fn serve_raw(
    mut r: Reader,
    conn: usize,
    seen: Arc<Mutex<Vec<RawSeen>>>,
    behaviour: Arc<Behaviour>,
) {
    let mut nth = 0;
    loop {
        let Some(raw_head) = r.head().await else {
            return;
        };
        let head = String::from_utf8_lossy(&raw_head).into_owned();
        let mut words = head.split(' ');
        let method = words.next().unwrap_or_default().to_owned();
        let target = words.next().unwrap_or_default().to_owned();
        let headers = header_lines(&head);
        let body = if is_chunked(&headers) {
            r.chunked().await.map(|(b, _)| b)
        } else if let Some(n) = content_length(&headers) {
            r.exact(n).await
        } else {
            Some(Vec::new())
        };
        let Some(body) = body else { return };
        let req = RawSeen {
            conn,
            nth,
            method,
            target,
            headers,
            body,
            head: raw_head,
        };
        seen.lock().unwrap().push(req.clone());
        nth += 1;
        let act = behaviour(&req);
        for (i, part) in act.parts.iter().enumerate() {
            if i > 0 && !act.pause.is_zero() {
                tokio::time::sleep(act.pause).await;
            }
            if r.s.write_all(part).await.is_err() {
                return;
            }
        }
        if act.close {
            let _ = r.s.shutdown().await;
            return;
        }
    }
}
