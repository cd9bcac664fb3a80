//! Forwarding to upstreams: routing, header rewriting, streaming bodies, upgrades.
//!
//! [`Proxy::forward`] takes a request that has already been routed and authorised (on the
//! normalised path, see [`path`]) and given its forwarding headers by the handler's request
//! policy, drops its hop-by-hop headers ([`headers`]), sends it over a
//! pooled connection and streams the answer back. Bodies are never buffered whole. An HTTP/1.1
//! `Upgrade` (WebSocket) that the upstream accepts with 101 becomes a byte tunnel between the two
//! upgraded connections.

pub mod cache;
pub mod cors;
pub mod headers;
pub mod http1_client;
pub mod path;
pub mod route;
mod tunnel;
pub mod whoami;

use std::error::Error as _;
use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{BodyExt, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{self, Body};
use crate::config::{UpstreamSettings, UpstreamTarget};
use crate::error::HttpError;
use crate::http1::write;
use route::{PathMatch, Route};

/// Errors building the upstream client.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot set up TLS for upstreams: {0}")]
    Tls(String),
}

thread_local! {
    /// Which serving worker this thread is (see [`set_worker`]); 0 elsewhere.
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the current thread as serving worker `index`: its requests use that worker's own
/// upstream pool, so a pooled connection is always driven by the thread that uses it.
pub fn set_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

type UpstreamClient = Client<HttpsConnector<HttpConnector>, Body>;

/// The upstream clients (one connection pool per serving worker) and their settings. Cheap to
/// share behind an `Arc`.
pub struct Proxy {
    clients: Box<[UpstreamClient]>,
    /// Pools of the built-in HTTP/1.1 upstream client ([`http1_client`]), for requests without
    /// a body to plain-HTTP upstreams.
    pools: Arc<http1_client::Pools>,
    settings: UpstreamSettings,
    max_body_bytes: u64,
    /// Upgraded tunnels idle this long are closed.
    idle_timeout: std::time::Duration,
}

/// How long, and how much, a refused request body is still read after the early answer.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(10);
const LINGER_BYTES: usize = 32 * 1024 * 1024;

/// Reads and discards what a client is still sending after we answered early (413 from the
/// headers), for a bounded time and size, so it reads our answer instead of a reset connection:
/// closing a socket with unread data makes the kernel send a reset. This is nginx's "lingering
/// close". The connection closes when the draining ends.
fn linger(body: Body) {
    tokio::spawn(async move {
        let mut body = body;
        let mut seen = 0usize;
        let drain = async {
            while let Some(Ok(frame)) = body.frame().await {
                seen += frame.data_ref().map_or(0, |d| d.len());
                if seen > LINGER_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    });
}

/// What [`Proxy::forward`] needs to know about a request besides the request itself. The
/// request's forwarding headers are already set ([`crate::handler::policy::ForwardingPlan`]).
pub struct Forward<'a> {
    pub route: &'a Route,
    /// The normalised request path that routing and authorisation used.
    pub path: &'a str,
    /// How the route matched that path (for `strip_prefix`).
    pub matched: PathMatch<'a>,
    /// Whether a header name (as the client spelled it) is an identity header the gateway
    /// sets: `Connection` cannot remove those.
    pub identity: &'a (dyn Fn(&[u8]) -> bool + Sync),
    /// Whether the client is a browser navigation (for the whoami page).
    pub html: bool,
}

impl Proxy {
    /// Builds one pooled client per serving worker.
    pub fn new(
        settings: &UpstreamSettings,
        max_body_bytes: u64,
        idle_timeout: std::time::Duration,
        workers: usize,
    ) -> Result<Self, ProxyError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        http.set_keepalive(Some(std::time::Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| ProxyError::Tls(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let clients = (0..workers.max(1))
            .map(|_| {
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(settings.pool_idle_timeout)
                    .pool_max_idle_per_host(settings.pool_max_idle_per_host)
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .build(https.clone())
            })
            .collect();
        Ok(Proxy {
            clients,
            pools: http1_client::Pools::new(workers, settings),
            settings: settings.clone(),
            max_body_bytes,
            idle_timeout,
        })
    }

    /// The pool of the worker this thread serves for.
    fn client(&self) -> &UpstreamClient {
        let index = WORKER.with(|w| w.get());
        &self.clients[index % self.clients.len()]
    }

    /// Sends a routed request upstream and returns the upstream's response.
    pub async fn forward(
        &self,
        mut req: Request<Body>,
        f: Forward<'_>,
    ) -> Result<Response<Body>, HttpError> {
        let upgrade = if req.version() <= Version::HTTP_11 {
            headers::upgrade_protocol(req.headers())
        } else {
            None
        };
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let tunnel = req.extensions().get::<Tunnels>().cloned();

        if let Some(len) = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > self.max_body_bytes
        {
            linger(req.into_body());
            return Err(HttpError::PayloadTooLarge);
        }

        // HTTP/2 carries the host in :authority; the upstream speaks HTTP/1.1 and needs Host.
        if !req.headers().contains_key(header::HOST)
            && let Some(a) = req.uri().authority()
            && let Ok(v) = HeaderValue::from_str(a.as_str())
        {
            req.headers_mut().insert(header::HOST, v);
        }
        let headers = req.headers_mut();
        headers::remove_hop_by_hop_request(headers, f.identity);
        if let Some(proto) = &upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, proto.clone());
        }

        let upstream_path = f.route.upstream_path(f.path, &f.matched);
        let query = req.uri().query().map(str::to_owned);
        let (scheme, authority, base) = match &f.route.spec.upstream {
            UpstreamTarget::Whoami => {
                *req.uri_mut() = path_and_query(upstream_path, query.as_deref(), None)?;
                return Ok(whoami::respond(req, f.html).await);
            }
            UpstreamTarget::Http {
                scheme,
                authority,
                base_path,
            } => (scheme, authority, base_path),
        };
        let pq = match query.as_deref() {
            Some(q) => format!("{base}{upstream_path}?{q}"),
            None => format!("{base}{upstream_path}"),
        };
        *req.uri_mut() = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|e| HttpError::BadRequest(format!("cannot forward this path: {e}")))?;
        *req.version_mut() = Version::HTTP_11;

        if self.settings.builtin_client
            && client_upgrade.is_none()
            && *scheme == http::uri::Scheme::HTTP
        {
            if http_body::Body::is_end_stream(req.body()) {
                return self.send_bodiless(&req, authority, f.route).await;
            }
            if let Some(len) = small_body(&req) {
                return self.send_small_body(req, authority, f.route, len).await;
            }
        }

        let limit = usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX);
        let req = req.map(|b| Limited::new(b, limit).boxed());
        let mut resp = self
            .send_hyper(req, f.route, client_upgrade.is_some())
            .await?;

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            // Only the server's connections can upgrade, and it gives each request the
            // connection's `Tunnels`: they keep the client connection counted (connection limit,
            // open-connections metric, shutdown drain) for as long as the tunnel lives, and
            // close it after `limits.idle_timeout` without traffic either way, like an idle
            // keep-alive connection (nginx's proxy_read_timeout does the same).
            match tunnel {
                Some(tunnels) => {
                    tunnel::spawn(client_upgrade, upstream_upgrade, tunnels, self.idle_timeout);
                }
                None => tracing::debug!("an upgrade outside a server connection; no tunnel"),
            }
            return Ok(resp.map(body::boxed));
        }

        headers::remove_hop_by_hop(resp.headers_mut());
        Ok(resp.map(body::boxed))
    }
}

impl Proxy {
    /// Sends a request over hyper's client, within the response timeout. A 101 is an answer
    /// only to a request that asked to upgrade (`upgrade_asked`); to any other it is a broken
    /// upstream (502), as with the built-in client: passed on, it would leave the client with a
    /// bare 101 and no protocol to speak.
    async fn send_hyper(
        &self,
        req: Request<Body>,
        route: &Route,
        upgrade_asked: bool,
    ) -> Result<Response<hyper::body::Incoming>, HttpError> {
        let sent = tokio::time::timeout(self.settings.response_timeout, self.client().request(req));
        let upstream = &route.spec.upstream;
        match sent.await {
            Err(_) => Err(upstream_error(UpstreamFailure::NoAnswer {
                upstream,
                within: self.settings.response_timeout,
            })),
            Ok(Err(e)) => Err(upstream_error(UpstreamFailure::Hyper { upstream, e: &e })),
            Ok(Ok(resp)) if resp.status() == StatusCode::SWITCHING_PROTOCOLS && !upgrade_asked => {
                Err(upstream_error(UpstreamFailure::UnaskedUpgrade { upstream }))
            }
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    /// [`Proxy::send_head`] (and [`Proxy::send_head_and_body`]) with
    /// `upstream.builtin_client: false`: the head is read back (by the codec,
    /// [`crate::http1::head`]) into a request and sent over hyper's client, like every other
    /// request. Not the fast path's speed, but its exact headers, so the built-in client
    /// can be compared with hyper's.
    async fn send_head_hyper(
        &self,
        authority: &http::uri::Authority,
        head: &[u8],
        body: Body,
        route: &Route,
    ) -> Result<Response<Body>, HttpError> {
        use crate::http1::head::{MAX_REQUEST_HEADERS, ParsedRequest, parse_request};
        let unreadable = || {
            HttpError::BadGateway(format!(
                "{}: cannot read back the request head",
                route.spec.upstream
            ))
        };
        let ParsedRequest::Complete(parsed) = parse_request(head, MAX_REQUEST_HEADERS) else {
            return Err(unreadable());
        };
        let mut buf = bytes::BytesMut::from(head);
        let raw = parsed.take(&mut buf, false).ok_or_else(unreadable)?;
        let mut req = raw.into_request(body).map_err(|_| unreadable())?;
        let uri = format!("http://{authority}{}", req.uri());
        *req.uri_mut() = uri.parse().map_err(|_| unreadable())?;
        let mut resp = self.send_hyper(req, route, false).await?;
        headers::remove_hop_by_hop(resp.headers_mut());
        Ok(resp.map(body::boxed))
    }

    /// Sends a request without a body over the built-in HTTP/1.1 client ([`http1_client`]).
    async fn send_bodiless(
        &self,
        req: &Request<Body>,
        authority: &http::uri::Authority,
        route: &Route,
    ) -> Result<Response<Body>, HttpError> {
        let head = write::request_head(req, authority);
        self.send_head(authority, &head, req.method(), route).await
    }

    /// Sends a request with a small body of known length ([`small_body`]) over the built-in
    /// HTTP/1.1 client.
    async fn send_small_body(
        &self,
        req: Request<Body>,
        authority: &http::uri::Authority,
        route: &Route,
        len: u64,
    ) -> Result<Response<Body>, HttpError> {
        let head = bytes::Bytes::from(write::request_head(&req, authority));
        let worker = WORKER.with(|w| w.get());
        let sent = self
            .pools
            .send_with_body(worker, authority, head, req.into_body(), len);
        self.upstream_answer(sent, route).await
    }

    /// Sends a serialised head of a request without a body to `authority` (a plain-HTTP
    /// upstream of `route`) over the built-in HTTP/1.1 client: the fast path's planned forward
    /// builds the head itself ([`crate::handler::App::forward_planned`]).
    pub async fn send_head(
        &self,
        authority: &http::uri::Authority,
        head: &[u8],
        method: &http::Method,
        route: &Route,
    ) -> Result<Response<Body>, HttpError> {
        if !self.settings.builtin_client {
            return self
                .send_head_hyper(authority, head, body::empty(), route)
                .await;
        }
        let worker = WORKER.with(|w| w.get());
        let sent = self.pools.send(worker, authority, head, method);
        self.upstream_answer(sent, route).await
    }

    /// [`Proxy::send_head`] for a request whose whole body of `len` bytes is at hand (the fast
    /// path read it; its `Content-Length` is in `head`): the head and the body's chunks go out
    /// in one vectored write over the built-in client. As for every request with a body, it
    /// is not sent again on a pooled connection found closed.
    pub async fn send_head_and_body(
        &self,
        authority: &http::uri::Authority,
        head: Vec<u8>,
        body: Body,
        len: u64,
        route: &Route,
    ) -> Result<Response<Body>, HttpError> {
        if !self.settings.builtin_client {
            return self.send_head_hyper(authority, &head, body, route).await;
        }
        let worker = WORKER.with(|w| w.get());
        let sent = self
            .pools
            .send_with_body(worker, authority, head.into(), body, len);
        self.upstream_answer(sent, route).await
    }

    /// The built-in client's answer within the response timeout, or the error it maps to.
    async fn upstream_answer(
        &self,
        sent: impl Future<Output = Result<Response<Body>, http1_client::ClientError>>,
        route: &Route,
    ) -> Result<Response<Body>, HttpError> {
        let upstream = &route.spec.upstream;
        match tokio::time::timeout(self.settings.response_timeout, sent).await {
            Err(_) => Err(upstream_error(UpstreamFailure::NoAnswer {
                upstream,
                within: self.settings.response_timeout,
            })),
            Ok(Err(e)) => Err(upstream_error(UpstreamFailure::Http1 { upstream, e: &e })),
            Ok(Ok(mut resp)) => {
                headers::remove_hop_by_hop(resp.headers_mut());
                Ok(resp)
            }
        }
    }
}

/// The length of a request body the built-in client can send: one that the client framed with a
/// `Content-Length` (the body knows its exact size; a chunked one does not) of at most
/// [`http1_client::MAX_BODY_BYTES`].
fn small_body(req: &Request<Body>) -> Option<u64> {
    let len = http_body::Body::size_hint(req.body()).exact()?;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse::<u64>()
        .ok()?;
    (len == declared && len <= http1_client::MAX_BODY_BYTES).then_some(len)
}

/// Builds an origin-form URI for the whoami upstream.
fn path_and_query(path: &str, query: Option<&str>, base: Option<&str>) -> Result<Uri, HttpError> {
    let pq = format!(
        "{}{path}{}{}",
        base.unwrap_or(""),
        if query.is_some() { "?" } else { "" },
        query.unwrap_or("")
    );
    pq.parse()
        .map_err(|_| HttpError::BadRequest("cannot forward this path".into()))
}

/// The upgraded tunnels of one client connection. The server puts one in every request's
/// extensions and, when the connection's HTTP exchange ends, waits for its tunnels to close
/// before it releases the connection's slot.
#[derive(Clone)]
pub struct Tunnels {
    open: Arc<std::sync::atomic::AtomicUsize>,
    closed: Arc<tokio::sync::Notify>,
    /// The client connection's idle tracker: every byte of its tunnels passes through it.
    activity: crate::idle::Activity,
}

/// One open tunnel; closing it (dropping) wakes the server.
pub struct TunnelGuard(Tunnels);

impl Tunnels {
    /// The tunnels of a client connection whose bytes `activity` tracks.
    pub fn new(activity: crate::idle::Activity) -> Tunnels {
        Tunnels {
            open: Arc::default(),
            closed: Arc::default(),
            activity,
        }
    }

    fn open(self) -> TunnelGuard {
        self.open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        TunnelGuard(self)
    }

    /// Resolves once no tunnel of this connection is open.
    pub async fn all_closed(&self) {
        loop {
            let notified = self.closed.notified();
            if self.open.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.0
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.closed.notify_waiters();
    }
}

/// How an exchange with an upstream failed.
pub enum UpstreamFailure<'a> {
    /// No answer within `upstream.response_timeout`.
    NoAnswer {
        upstream: &'a UpstreamTarget,
        within: std::time::Duration,
    },
    /// hyper's client failed (requests with a body, upgrades, HTTPS upstreams).
    Hyper {
        upstream: &'a UpstreamTarget,
        e: &'a hyper_util::client::legacy::Error,
    },
    /// The built-in HTTP/1.1 client failed.
    Http1 {
        upstream: &'a UpstreamTarget,
        e: &'a http1_client::ClientError,
    },
    /// A 101 to a request that asked for no upgrade.
    UnaskedUpgrade { upstream: &'a UpstreamTarget },
    /// The answer's body failed before any byte of the answer was sent to the client (the
    /// fast path can still answer instead).
    BrokeOff(&'a (dyn std::error::Error + 'static)),
}

/// The answer to a failed upstream exchange, the one mapping for every path: 413 (the
/// client's body over the limit), 408 or 400 (the client's body failed, see
/// [`HttpError::client_body`]), 504 (no answer in time, or connecting timed out) or 502.
pub fn upstream_error(failure: UpstreamFailure<'_>) -> HttpError {
    match failure {
        UpstreamFailure::NoAnswer { upstream, within } => {
            HttpError::GatewayTimeout(format!("{upstream} gave no response within {within:?}"))
        }
        UpstreamFailure::Hyper { upstream, e } => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
            while let Some(s) = source {
                if s.is::<http_body_util::LengthLimitError>() {
                    return HttpError::PayloadTooLarge;
                }
                if let Some(client) = HttpError::client_body(s) {
                    return client;
                }
                if let Some(io) = s.downcast_ref::<std::io::Error>()
                    && io.kind() == std::io::ErrorKind::TimedOut
                {
                    return connect_timeout(upstream);
                }
                source = s.source();
            }
            HttpError::BadGateway(format!("{upstream}: {e}"))
        }
        UpstreamFailure::Http1 {
            upstream,
            e: http1_client::ClientError::ConnectTimeout,
        } => connect_timeout(upstream),
        UpstreamFailure::Http1 {
            upstream,
            e: http1_client::ClientError::Body(e),
        } => HttpError::client_body(e.as_ref()).unwrap_or_else(|| {
            HttpError::BadGateway(format!("{upstream}: the request body failed: {e}"))
        }),
        UpstreamFailure::Http1 { upstream, e } => HttpError::BadGateway(format!("{upstream}: {e}")),
        UpstreamFailure::UnaskedUpgrade { upstream } => {
            HttpError::BadGateway(format!("{upstream}: switched protocols unasked"))
        }
        UpstreamFailure::BrokeOff(e) => HttpError::BadGateway(format!("the answer broke off: {e}")),
    }
}

fn connect_timeout(upstream: &UpstreamTarget) -> HttpError {
    HttpError::GatewayTimeout(format!("connecting to {upstream} timed out"))
}

/// Shared handle type.
pub type SharedProxy = Arc<Proxy>;
