//! Listeners, TLS accept, the connection loop and graceful shutdown.
//!
//! [`run`] takes listeners that are already bound (tests bind `127.0.0.1:0`), serves HTTP/1.1 and
//! HTTP/2 (with upgrades) on each accepted connection until the shutdown future resolves, then
//! answers `/readyz` with 503 while still serving for `shutdown_delay` (load balancers take the
//! process out of rotation before anything is refused), then stops accepting, asks every
//! connection to finish its in-flight requests and waits up to the configured grace period.
//! Connections are capped by a semaphore; at shutdown, acquiring every permit is how we know the
//! last connection has ended. Each client address is capped too
//! (`limits.max_connections_per_ip`, trusted proxies exempt); over either cap a new connection is
//! closed at once.
//!
//! **Runtime shape.** Connections are served by `listen.workers` threads (one per core by
//! default), each running its own single-threaded tokio runtime and accepting from the same
//! listening sockets. A connection, the upstream connections it borrows (each worker has its own
//! pool, see [`crate::proxy`]) and their wake-ups stay on one thread: no work stealing and no
//! cross-thread wake-ups on the hot path. Measured against tokio's multi-threaded runtime, this
//! served clearly more proxied requests per second (BENCHMARKS.md has the figures). The
//! caller's runtime keeps the background work: the admin listener, change
//! feed polling, reloads. Whichever worker accepts a connection hands it to the least loaded one
//! ([`Balancer`]). After the grace period, a worker's runtime is dropped, which closes the
//! connections it still holds.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::handler::{App, Conn, StartupError};
use crate::metrics::Metrics;
use crate::tls::CertStore;

/// The sockets the gateway serves on. Bind them first (see [`Listeners::bind`]) so tests and
/// callers can learn the ports before serving.
#[derive(Debug, Default)]
pub struct Listeners {
    pub http: Option<TcpListener>,
    pub https: Option<TcpListener>,
    /// Serves `/metrics` (and `/healthz`), never the routes.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses named in the config.
    pub async fn bind(config: &Config) -> Result<Self, ServerError> {
        let bind = |addr: Option<SocketAddr>| async move {
            match addr {
                None => Ok(None),
                Some(a) => TcpListener::bind(a)
                    .await
                    .map(Some)
                    .map_err(|e| ServerError::Bind(a, e)),
            }
        };
        Ok(Listeners {
            http: bind(config.listen.http).await?,
            https: bind(config.listen.https).await?,
            admin: bind(config.listen.admin).await?,
        })
    }
}

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("cannot set up the serving threads: {0}")]
    Listener(std::io::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Startup(#[from] crate::handler::StartupError),
}

/// Why a reload was refused (the old configuration keeps serving).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Startup(#[from] crate::handler::StartupError),
    #[error("email: {0}")]
    Mail(#[from] crate::mail::MailError),
}

/// A running gateway: reload it, read its metrics, shut it down.
pub struct Running {
    current: Arc<ArcSwap<App>>,
    core: crate::auth::Core,
    certs: Option<Arc<CertStore>>,
    metrics: Arc<Metrics>,
    stop_tx: watch::Sender<bool>,
    loops: Vec<tokio::task::JoinHandle<()>>,
    /// The serving threads, and how to tell them the grace period is over.
    workers: Vec<std::thread::JoinHandle<()>>,
    closed_tx: watch::Sender<bool>,
    permits: Arc<Semaphore>,
    max_connections: usize,
}

/// Starts serving on the given listeners; returns at once with a handle.
pub async fn start(listeners: Listeners, config: Config) -> Result<Running, ServerError> {
    let metrics = Metrics::new();
    let certs = match &listeners.https {
        Some(_) => Some(CertStore::load(&config.tls)?),
        None => None,
    };
    let tls = match &certs {
        Some(store) => Some(TlsAcceptor::from(store.server_config()?)),
        None => None,
    };
    if let Some(expiry) = certs.as_ref().and_then(|c| c.not_after()) {
        metrics.set_cert_expiry(expiry);
    }
    let max_connections = config.limits.max_connections;
    let workers = config.listen.workers.max(1);
    let builder = Arc::new(http_builder(&config));
    let (stop_tx, stop_rx) = watch::channel(false);
    let core = crate::auth::open(&config, stop_rx.clone()).await;
    let core = core.map_err(StartupError::from)?;
    core.register_metrics(&metrics);
    let app = App::build(config, &core, metrics.clone())?;
    let current = Arc::new(ArcSwap::new(app));

    let permits = Arc::new(Semaphore::new(max_connections));
    let per_ip = Arc::new(PerIp::default());
    let mut loops = Vec::new();
    let mut serving = Vec::new();
    for (listener, acceptor) in [(listeners.http, None), (listeners.https, tls)] {
        let Some(listener) = listener else { continue };
        let addr = listener.local_addr().map_err(ServerError::Listener)?;
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        tracing::info!(%addr, scheme, workers, "listening");
        // Each worker registers its own copy of the socket with its own runtime.
        let listener = listener.into_std().map_err(ServerError::Listener)?;
        serving.push((listener, acceptor));
    }
    let (closed_tx, closed_rx) = watch::channel(false);
    let (balancer, mut inboxes) = Balancer::new(workers);
    let balancer = Arc::new(balancer);
    let mut worker_threads = Vec::with_capacity(workers);
    for (index, inbox) in inboxes.drain(..).enumerate() {
        let mut sockets = Vec::with_capacity(serving.len());
        for (listener, acceptor) in &serving {
            let copy = listener.try_clone().map_err(ServerError::Listener)?;
            sockets.push((copy, acceptor.clone()));
        }
        let shared = Shared {
            app: current.clone(),
            builder: builder.clone(),
            permits: permits.clone(),
            per_ip: per_ip.clone(),
            metrics: metrics.clone(),
            balancer: balancer.clone(),
            index,
        };
        let (stop, closed) = (stop_rx.clone(), closed_rx.clone());
        let thread = std::thread::Builder::new()
            .name(format!("gateway-worker-{index}"))
            .spawn(move || worker(sockets, inbox, shared, stop, closed))
            .map_err(ServerError::Listener)?;
        worker_threads.push(thread);
    }
    if let Some(listener) = listeners.admin {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "admin listener (metrics)");
        }
        loops.push(tokio::spawn(admin_loop(
            listener,
            metrics.clone(),
            stop_rx.clone(),
        )));
    }
    Ok(Running {
        current,
        core,
        certs,
        metrics,
        stop_tx,
        loops,
        workers: worker_threads,
        closed_tx,
        permits,
        max_connections,
    })
}

/// What a worker needs to serve: shared by all, plus its own index.
#[derive(Clone)]
struct Shared {
    app: Arc<ArcSwap<App>>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    permits: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
    metrics: Arc<Metrics>,
    balancer: Arc<Balancer>,
    index: usize,
}

/// A connection accepted by one worker and handed to another.
struct Handoff {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    permit: tokio::sync::OwnedSemaphorePermit,
    ip_slot: Option<IpSlot>,
}

/// The connections each client address holds, for `limits.max_connections_per_ip`: one client
/// (or a handful) holding connections open, e.g. by sending bodies very slowly, must not take
/// every slot of `limits.max_connections`. Addresses are grouped like the rate limits group them
/// (IPv6 by /64). One lock per accepted connection, not per request.
#[derive(Default)]
struct PerIp {
    open: std::sync::Mutex<std::collections::HashMap<crate::ratelimit::IpKey, usize>>,
}

impl PerIp {
    /// Counts a new connection from `key`, unless it already holds `cap`.
    fn try_open(self: &Arc<Self>, key: crate::ratelimit::IpKey, cap: usize) -> Option<IpSlot> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(key).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            per_ip: self.clone(),
            key,
        })
    }
}

/// One connection counted for its client address; released when dropped.
struct IpSlot {
    per_ip: Arc<PerIp>,
    key: crate::ratelimit::IpKey,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self
            .per_ip
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Spreads connections over the workers: whichever worker accepts a connection passes it to
/// the worker serving the fewest, unless that is itself. Without it, a burst of new connections
/// could all land on the worker that happened to wake first (seen in a benchmark: every
/// connection on one of two workers, the other idle; BENCHMARKS.md). Keep-alive connections make a handoff rare
/// and cheap: one channel message per connection.
struct Balancer {
    /// Connections each worker is serving now.
    load: Box<[std::sync::atomic::AtomicUsize]>,
    inboxes: Box<[tokio::sync::mpsc::UnboundedSender<Handoff>]>,
}

impl Balancer {
    fn new(workers: usize) -> (Balancer, Vec<tokio::sync::mpsc::UnboundedReceiver<Handoff>>) {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..workers)
            .map(|_| tokio::sync::mpsc::unbounded_channel())
            .unzip();
        let load = (0..workers)
            .map(|_| std::sync::atomic::AtomicUsize::new(0))
            .collect();
        (
            Balancer {
                load,
                inboxes: senders.into_boxed_slice(),
            },
            receivers,
        )
    }

    /// The worker that should serve a connection `me` accepted: the least loaded, `me` on ties.
    fn pick(&self, me: usize) -> usize {
        let load = |i: usize| self.load[i].load(Ordering::Relaxed);
        let mut best = me;
        for i in 0..self.load.len() {
            if load(i) < load(best) {
                best = i;
            }
        }
        best
    }
}

/// One serving thread: a single-threaded runtime accepting on every listener until `stop`,
/// then serving the connections it has until `closed` (the end of the grace period, or the
/// [`Running`] handle being dropped).
fn worker(
    sockets: Vec<(std::net::TcpListener, Option<TlsAcceptor>)>,
    mut inbox: tokio::sync::mpsc::UnboundedReceiver<Handoff>,
    shared: Shared,
    stop: watch::Receiver<bool>,
    mut closed: watch::Receiver<bool>,
) {
    let index = shared.index;
    crate::proxy::set_worker(index);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, index, "cannot start a worker runtime; this worker does not serve");
            return;
        }
    };
    runtime.block_on(async move {
        let mut loops = Vec::new();
        for (socket, acceptor) in sockets {
            match TcpListener::from_std(socket) {
                Ok(listener) => loops.push(tokio::spawn(accept_loop(
                    listener,
                    acceptor,
                    shared.clone(),
                    stop.clone(),
                ))),
                Err(e) => tracing::error!(error = %e, index, "worker cannot use the listener"),
            }
        }
        // Connections other workers accepted for this one.
        let handoffs = {
            let shared = shared.clone();
            let mut stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    let handoff = tokio::select! {
                        _ = stop.changed() => return,
                        h = inbox.recv() => h,
                    };
                    let Some(h) = handoff else { return };
                    match tokio::net::TcpStream::from_std(h.stream) {
                        Ok(stream) => spawn_connection(
                            stream, h.peer, h.tls, h.permit, h.ip_slot, &shared, &stop,
                        ),
                        Err(e) => {
                            tracing::debug!(error = %e, "handed-over connection lost");
                            shared.balancer.load[shared.index].fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        };
        for l in loops {
            let _ = l.await;
        }
        let _ = handoffs.await;
        // Accepting has stopped; connections drain on this runtime until the grace period ends.
        while !*closed.borrow() {
            if closed.changed().await.is_err() {
                break;
            }
        }
    });
    // Dropping the runtime here drops whatever connections outlived the grace period.
}

impl Running {
    /// Checks a new configuration completely and swaps it in: routes, policies, limits, CORS,
    /// upstream settings and the certificate. Requests and WebSockets in flight keep the
    /// configuration they started with. On any error the old configuration keeps serving.
    /// The e-mail settings apply to every message sent after the reload. Listener addresses,
    /// the store, token keys/algorithm, adding `email:` and its queue size need a restart.
    pub async fn reload(&self, config: Config) -> Result<(), ReloadError> {
        let result = self.try_reload(config).await;
        self.metrics.reload(result.is_ok());
        match &result {
            Ok(()) => tracing::info!("configuration reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "reload refused; the previous configuration keeps serving")
            }
        }
        result
    }

    async fn try_reload(&self, config: Config) -> Result<(), ReloadError> {
        let old = self.current.load_full();
        let (was, now) = (old.config(), &config);
        crate::config::warn_restart_needed(was, now);
        // Build everything first; swap nothing until all of it succeeded.
        let mail = self.core.prepare_mail(now.email.as_ref())?;
        let app = App::build(config, &self.core, self.metrics.clone())?;
        if let Some(certs) = &self.certs {
            certs.reload(&app.config().tls)?;
            if let Some(expiry) = certs.not_after() {
                self.metrics.set_cert_expiry(expiry);
            }
        }
        if let Some((mailer, prepared)) = mail {
            mailer.reconfigure(prepared);
        }
        self.current.store(app);
        Ok(())
    }

    /// The app serving right now.
    pub fn app(&self) -> Arc<App> {
        self.current.load_full()
    }

    /// The process's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Shuts down in two steps: first `/readyz` answers 503 while the listeners keep serving for
    /// `shutdown_delay` (so load balancers and Kubernetes stop sending new connections here
    /// before they would be refused), then accepting stops, in-flight requests get up to
    /// `shutdown_grace` to finish, and background work stops.
    pub async fn shutdown(self) {
        self.shutdown_or_sooner(std::future::pending::<()>()).await;
    }

    /// [`Running::shutdown`], where `sooner` resolving ends the `shutdown_delay` early (the
    /// binary passes a second SIGTERM/SIGINT, for an operator who does not want to wait).
    pub async fn shutdown_or_sooner(self, sooner: impl Future<Output = ()>) {
        let app = self.current.load_full();
        let (delay, grace) = (app.config().shutdown_delay, app.config().shutdown_grace);
        app.set_draining();
        if !delay.is_zero() {
            tracing::info!(delay = ?delay, "shutting down: /readyz answers 503; still serving for shutdown_delay");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = sooner => tracing::info!("second signal: the shutdown delay ends now"),
            }
        }
        tracing::info!(grace = ?grace, "shutting down: no new connections, finishing in-flight requests");
        let _ = self.stop_tx.send(true);
        for l in self.loops {
            let _ = l.await;
        }
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        match tokio::time::timeout(grace, self.permits.acquire_many(all)).await {
            Ok(_) => tracing::info!("all connections closed"),
            Err(_) => tracing::warn!("grace period over; closing remaining connections"),
        }
        let _ = self.closed_tx.send(true);
        let workers = self.workers;
        let _ = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        })
        .await;
    }
}

/// Serves until `shutdown` resolves, then drains.
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let running = start(listeners, config).await?;
    shutdown.await;
    running.shutdown().await;
    Ok(())
}

/// The admin listener: `/metrics` in the Prometheus text format, `/healthz`.
async fn admin_loop(listener: TcpListener, metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let resp = match (req.method(), req.uri().path()) {
                        (&http::Method::GET, "/metrics") => {
                            let mut r = http::Response::new(crate::body::full(metrics.render()));
                            r.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static(
                                    "text/plain; version=0.0.4; charset=utf-8",
                                ),
                            );
                            r
                        }
                        (&http::Method::GET, "/healthz") => crate::error::json_response(
                            http::StatusCode::OK,
                            &serde_json::json!({"status": "ok"}),
                        ),
                        _ => crate::error::HttpError::NotFound.response(false),
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn http_builder(config: &Config) -> auto::Builder<TokioExecutor> {
    let limits = &config.limits;
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Shared,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off a little instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over the per-address cap the connection is closed at once, before any TLS or HTTP
        // work, like the global cap below (HAProxy's `tcp-request connection reject`): a client
        // that already holds that many connections gets nothing from another answer.
        let ip_slot = {
            let app = shared.app.load();
            if app.is_trusted(peer.ip()) {
                None
            } else {
                let cap = app.config().limits.max_connections_per_ip;
                match shared.per_ip.try_open(peer.ip().into(), cap) {
                    Some(slot) => Some(slot),
                    None => {
                        tracing::debug!(%peer, "per-address connection limit reached; closing new connection");
                        shared.metrics.connection_refused_per_ip();
                        drop(stream);
                        continue;
                    }
                }
            }
        };
        let Ok(permit) = shared.permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached; closing new connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let target = shared.balancer.pick(shared.index);
        if target != shared.index {
            // Counted at once, so a burst of accepts spreads instead of piling on one worker.
            shared.balancer.load[target].fetch_add(1, Ordering::Relaxed);
            let handoff = stream.into_std().map(|stream| Handoff {
                stream,
                peer,
                tls: tls.clone(),
                permit,
                ip_slot,
            });
            match handoff {
                Ok(h) => {
                    if shared.balancer.inboxes[target].send(h).is_ok() {
                        continue;
                    }
                }
                Err(e) => tracing::debug!(%peer, error = %e, "cannot hand the connection over"),
            }
            // Could not hand over (shutting down): the connection is dropped.
            shared.balancer.load[target].fetch_sub(1, Ordering::Relaxed);
            continue;
        }
        shared.balancer.load[shared.index].fetch_add(1, Ordering::Relaxed);
        spawn_connection(stream, peer, tls.clone(), permit, ip_slot, &shared, &stop);
    }
}

/// Serves one connection on this worker; its load was counted by the caller and is released
/// when the connection ends.
fn spawn_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    permit: tokio::sync::OwnedSemaphorePermit,
    ip_slot: Option<IpSlot>,
    shared: &Shared,
    stop: &watch::Receiver<bool>,
) {
    let conn = Conn {
        peer,
        tls: tls.is_some(),
    };
    let shared = shared.clone();
    let stop = stop.clone();
    shared.metrics.connection_opened();
    let slot = Slot {
        _permit: permit,
        _ip_slot: ip_slot,
        shared: shared.clone(),
    };
    let (app, builder) = (shared.app.clone(), shared.builder.clone());
    // Two tasks of their own types: a plain connection's task is not sized for a TLS handshake.
    match tls {
        None => {
            tokio::spawn(async move {
                let _slot = slot;
                serve(stream, conn, app, &builder, stop, true).await;
            });
        }
        Some(acceptor) => {
            tokio::spawn(async move {
                let _slot = slot;
                let timeout = app.load().config().limits.header_read_timeout;
                match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls_stream)) => {
                        // HTTP/2 chosen by ALPN goes straight to hyper.
                        let h1 = tls_stream.get_ref().1.alpn_protocol() != Some(b"h2");
                        serve(tls_stream, conn, app, &builder, stop, h1).await
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    }
}

/// A served connection's place: its permit and its count on its worker, given back when the
/// connection ends.
struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _ip_slot: Option<IpSlot>,
    shared: Shared,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.metrics.connection_closed();
        self.shared.balancer.load[self.shared.index].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one connection: bodiless HTTP/1.1 requests in [`crate::fast_path`] first (when
/// `h1`), then hyper for the rest of the connection once a request needs it.
async fn serve<S>(
    mut stream: S,
    conn: Conn,
    app: Arc<ArcSwap<App>>,
    builder: &auto::Builder<TokioExecutor>,
    mut stop: watch::Receiver<bool>,
    h1: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (idle_timeout, first_request_timeout, limits, fast_path) = {
        let current = app.load();
        let config = current.config();
        let limits = &config.limits;
        (
            limits.idle_timeout,
            limits.header_read_timeout,
            crate::fast_path::Limits::from_config(config),
            config.listen.fast_path,
        )
    };
    let read = if h1 && fast_path {
        match crate::fast_path::serve(&mut stream, conn, &app, &mut stop, limits).await {
            crate::fast_path::Outcome::Closed => return,
            crate::fast_path::Outcome::Handover(read) => read,
        }
    } else {
        bytes::Bytes::new()
    };
    // A handed-over request is in `read` and reaches the service at once; an HTTP/2 preface
    // handed over still has to be followed by a request within the header timeout.
    let started = Arc::new(AtomicBool::new(false));
    let (stream, activity) = crate::idle::Tracked::new(crate::fast_path::Rewind::new(read, stream));
    let tunnels = crate::proxy::Tunnels::new(activity.clone());
    let service = {
        let started = started.clone();
        let tunnels = tunnels.clone();
        service_fn(move |mut req: hyper::Request<Incoming>| {
            started.store(true, Ordering::Relaxed);
            req.extensions_mut().insert(tunnels.clone());
            // Each request runs on the configuration current when it arrived.
            let app = app.load_full();
            async move { Ok::<_, Infallible>(app.handle(req, conn).await) }
        })
    };
    // Boxed, so that connections the fast path serves do not carry hyper's state too.
    let connection =
        Box::pin(builder.serve_connection_with_upgrades(TokioIo::new(stream), service));
    let mut connection = connection;
    // hyper's header_read_timeout only runs once the connection is known to be HTTP/1.1; while
    // the auto builder is still reading the first bytes to tell HTTP/1.1 from HTTP/2 (or an
    // HTTP/2 client has sent no request yet) nothing bounds the wait. A client that sends a
    // few bytes, or none, and then stalls would hold a connection slot until the idle timeout.
    // So the first request must arrive within the header timeout too.
    // Nothing is in flight then, so the connection is dropped rather than shut down gracefully
    // (an HTTP/2 graceful close waits for the client to answer a PING, which a stalling client
    // never does).
    let first_request = async {
        tokio::time::sleep(first_request_timeout).await;
        if started.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    let stopping = async {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => true,
            _ = activity.idle_for(idle_timeout) => true,
            _ = first_request => false,
        }
    };
    let result = tokio::select! {
        r = connection.as_mut() => r,
        graceful = stopping => {
            if !graceful {
                tracing::debug!(peer = %conn.peer, "no request within the header read timeout; closing");
                return;
            }
            // In-flight requests finish; an idle connection closes at once.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error");
    }
    // An upgraded connection (WebSocket) lives on in its tunnel: keep its slot until it closes.
    tunnels.all_closed().await;
}
