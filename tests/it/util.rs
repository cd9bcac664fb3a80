//! Test builders: mock upstream, in-process gateway, clients.
//!
//! The harness has two parameters, read from the environment by every gateway it starts
//! ([`harness_params`]), so the whole suite runs on each path without a copy of any test:
//! - `GATEWAY_TEST_FAST_PATH=off`: `listen.fast_path: false` (hyper serves every request);
//! - `GATEWAY_TEST_UPSTREAM_CLIENT=hyper`: `upstream.builtin_client: false` (hyper's client
//!   sends every request upstream).
//!
//! A config that names the key itself keeps its own value: tests that compare the two paths, or
//! exist for one of them, pin it. Gateways started as a child process (`binary`, `logs`,
//! `rolling`, `tty`) test the process and keep the defaults.

// Not every test module uses every helper.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// One request as the mock upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    pub body_len: u64,
}

impl Seen {
    /// All values of a header, as strings.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

/// A mock upstream on 127.0.0.1:0 that records every request and answers 200 with a small JSON
/// body. Paths have special behaviours:
/// - `/slow/<ms>` waits that long before answering;
/// - `/ws` accepts a WebSocket upgrade and echoes messages;
/// - `/status/<code>` answers with that status;
/// - any request with a body is answered after reading the whole body (its length is recorded).
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    _stop: oneshot::Sender<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = oneshot::channel::<()>();
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = &mut rx => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, seen.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream {
            addr,
            seen,
            _stop: tx,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Seen {
        self.requests()
            .pop()
            .expect("the upstream received no request")
    }
}

async fn handle(
    mut req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/ws" {
        return Ok(websocket_echo(&mut req, &seen));
    }
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let version = req.version();
    let headers = req.headers().clone();
    let mut body = req.into_body();
    let mut body_len = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_len += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    seen.lock().unwrap().push(Seen {
        method,
        uri: uri.clone(),
        version,
        headers,
        body_len,
    });
    if let Some(ms) = path.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = path
        .strip_prefix("/status/")
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK);
    let body = serde_json::json!({"upstream": true, "uri": uri, "body_len": body_len});
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    resp.headers_mut()
        .insert("connection", "keep-alive, x-upstream-hop".parse().unwrap());
    resp.headers_mut()
        .insert("x-upstream-hop", "must-not-reach-client".parse().unwrap());
    Ok(resp)
}

fn websocket_echo(
    req: &mut Request<Incoming>,
    seen: &Arc<Mutex<Vec<Seen>>>,
) -> Response<Full<Bytes>> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        version: req.version(),
        headers: req.headers().clone(),
        body_len: 0,
    });
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()))
        .unwrap_or_default();
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        use futures_util::{SinkExt, StreamExt};
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", key)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// A gateway running in-process on 127.0.0.1:0 with its own temp directory (config, redb file,
/// certificates). Dropping it shuts it down.
pub struct Gateway {
    pub http: SocketAddr,
    pub https: SocketAddr,
    /// The admin listener (`/metrics`).
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
    reload:
        tokio::sync::mpsc::Sender<(gateway::config::Config, oneshot::Sender<Result<(), String>>)>,
}

impl Gateway {
    /// Starts a gateway with `yaml` as its config (`version: 1` is added when missing).
    pub async fn start(yaml: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, yaml).await
    }

    /// Starts a gateway in an existing directory (for restart tests).
    pub async fn start_in(dir: tempfile::TempDir, yaml: &str) -> Gateway {
        let yaml = if yaml.contains("version:") {
            yaml.to_owned()
        } else {
            format!("version: 1\n{yaml}")
        };
        let yaml = if yaml.contains("listen:") {
            yaml
        } else {
            format!("{yaml}\nlisten:\n  http: 127.0.0.1:0\n  https: 127.0.0.1:0\n")
        };
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, &yaml).unwrap();
        let mut config = gateway::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        harness_params(&yaml, &mut config);
        let listeners = gateway::Listeners {
            http: Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
            https: Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
            admin: Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
        };
        let http = listeners.http.as_ref().unwrap().local_addr().unwrap();
        let https = listeners.https.as_ref().unwrap().local_addr().unwrap();
        let admin = listeners.admin.as_ref().unwrap().local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel::<(
            gateway::config::Config,
            oneshot::Sender<Result<(), String>>,
        )>(1);
        let running = gateway::server::start(listeners, config).await.unwrap();
        let done = tokio::spawn(async move {
            let mut rx = rx;
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    Some((config, answer)) = reload_rx.recv() => {
                        let r = running.reload(config).await.map_err(|e| e.to_string());
                        let _ = answer.send(r);
                    }
                }
            }
            running.shutdown().await;
        });
        let gw = Gateway {
            http,
            https,
            admin,
            dir,
            stop: Some(tx),
            done: Some(done),
            reload: reload_tx,
        };
        gw.wait_ready().await;
        gw
    }

    async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(r) = get(&format!("http://{}/healthz", self.http)).await
                && r.status == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("gateway did not become ready");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// Writes `yaml` (completed like `start` does) as the new config file and reloads it, as
    /// SIGHUP does in the binary. A config that does not load is refused before reaching the
    /// server, like the binary does.
    pub async fn reload(&self, yaml: &str) -> Result<(), String> {
        let yaml = if yaml.contains("version:") {
            yaml.to_owned()
        } else {
            format!("version: 1\n{yaml}")
        };
        let yaml = if yaml.contains("listen:") {
            yaml
        } else {
            format!("{yaml}\nlisten:\n  http: 127.0.0.1:0\n  https: 127.0.0.1:0\n")
        };
        let path = self.path("gateway.yaml");
        std::fs::write(&path, &yaml).unwrap();
        let mut config = gateway::config::load(&path).map_err(|e| e.to_string())?;
        harness_params(&yaml, &mut config);
        let (tx, rx) = oneshot::channel();
        self.reload.send((config, tx)).await.unwrap();
        rx.await.unwrap()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Sends the shutdown signal and waits for `run` to return.
    pub async fn shutdown(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(done) = self.done.take() {
            tokio::time::timeout(Duration::from_secs(20), done)
                .await
                .expect("gateway did not stop")
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Applies the harness parameters (see the module docs) to a config loaded from `yaml`, unless
/// `yaml` sets the key itself.
pub fn harness_params(yaml: &str, config: &mut gateway::config::Config) {
    if !yaml.contains("fast_path") {
        match std::env::var("GATEWAY_TEST_FAST_PATH").as_deref() {
            Ok("off") => config.listen.fast_path = false,
            Ok("on") | Err(_) => {}
            Ok(other) => panic!("GATEWAY_TEST_FAST_PATH={other:?}: use on or off"),
        }
    }
    if !yaml.contains("builtin_client") {
        match std::env::var("GATEWAY_TEST_UPSTREAM_CLIENT").as_deref() {
            Ok("hyper") => config.upstream.builtin_client = false,
            Ok("builtin") | Err(_) => {}
            Ok(other) => panic!("GATEWAY_TEST_UPSTREAM_CLIENT={other:?}: use builtin or hyper"),
        }
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

/// Sends a request built by the caller and reads the whole response.
pub async fn send(req: Request<Full<Bytes>>) -> Result<Resp, hyper_util::client::legacy::Error> {
    send_body(req).await
}

pub async fn get(url: &str) -> Result<Resp, hyper_util::client::legacy::Error> {
    send(Request::get(url).body(Full::default()).unwrap()).await
}

/// A request builder with a URL, for tests that add headers.
pub fn req(method: &str, url: &str) -> http::request::Builder {
    Request::builder().method(method).uri(url)
}

/// Sends a request with any body (e.g. a stream) and reads the whole response.
pub async fn send_body<B>(req: Request<B>) -> Result<Resp, hyper_util::client::legacy::Error>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let resp = client.request(req).await?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Ok(Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// A chunked body of `count` chunks of `size` bytes, produced lazily: all chunks share one
/// buffer, so neither side of the test ever holds the whole body.
pub fn chunked_body(
    count: usize,
    size: usize,
) -> http_body_util::StreamBody<
    impl futures_util::Stream<Item = Result<hyper::body::Frame<Bytes>, Infallible>> + Send + Unpin,
> {
    let chunk = Bytes::from(vec![b'x'; size]);
    let frames = std::iter::repeat_n(chunk, count).map(|c| Ok(hyper::body::Frame::data(c)));
    http_body_util::StreamBody::new(futures_util::stream::iter(frames))
}

/// `n` distinct ports that were free a moment ago (all bound on 127.0.0.1:0 at once, then
/// released). Another process may take one before it is used; callers retry.
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// An address nothing listens on: bound once, then released.
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// Polls `cond` until it holds (bounded; panics with `what` otherwise).
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Fails the test instead of hanging when `fut` does not finish within `secs` (a hang guard,
/// not a timing assertion).
pub async fn guard<F: std::future::Future>(secs: u64, fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .expect("hang guard: the operation did not finish")
}

/// A TLS connection to the gateway's HTTPS listener, trusting the self-signed certificate the
/// gateway generated in its directory, offering `alpn`.
pub async fn tls_connect(
    gw: &Gateway,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(gw.path("certs/localhost.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(gw.https).await.unwrap();
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// A response read whole, with the protocol version it came over.
pub async fn read_resp(resp: Response<Incoming>) -> (http::Version, Resp) {
    let version = resp.version();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        version,
        Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        },
    )
}

/// Sends one request over HTTP/2 on TLS (ALPN h2). `req` needs an absolute `https://` URI.
pub async fn h2_send(gw: &Gateway, req: Request<Full<Bytes>>) -> (http::Version, Resp) {
    let tls = tls_connect(gw, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    read_resp(sender.send_request(req).await.unwrap()).await
}

/// Sends one request over HTTP/1.1 on TLS (ALPN http/1.1). `req` needs a Host header.
pub async fn h1_tls_send(gw: &Gateway, req: Request<Full<Bytes>>) -> (http::Version, Resp) {
    let tls = tls_connect(gw, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    read_resp(sender.send_request(req).await.unwrap()).await
}

// ---- Auth API helpers ----

/// Fast argon2 parameters for tests, plus `extra` auth settings (YAML flow-mapping members,
/// e.g. `"signup: closed, refresh_grace: 0s"`), followed by `rest` (routes, limits...).
pub fn auth_config(extra: &str, rest: &str) -> String {
    let sep = if extra.is_empty() { "" } else { ", " };
    format!(
        "auth: {{password: {{memory_kib: 1024, iterations: 1, min_length: 8}}{sep}{extra}}}\n{rest}"
    )
}

/// Sends `method url` with optional headers and an optional JSON body.
pub async fn call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    json: Option<&serde_json::Value>,
) -> Resp {
    let mut b = req(method, url);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    let body = match json {
        Some(v) => {
            b = b.header("content-type", "application/json");
            Full::new(Bytes::from(v.to_string()))
        }
        None => Full::default(),
    };
    send(b.body(body).unwrap()).await.unwrap()
}

/// POST a JSON body.
pub async fn post_json(url: &str, json: &serde_json::Value, headers: &[(&str, &str)]) -> Resp {
    call("POST", url, headers, Some(json)).await
}

/// GET with headers.
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Resp {
    call("GET", url, headers, None).await
}

/// `("authorization", "Bearer <token>")`, owned.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// What sign-up, login and refresh hand out.
#[derive(Debug)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
    pub resp: Resp,
}

impl Tokens {
    pub fn from_resp(resp: Resp) -> Tokens {
        let v = resp.json();
        let access = v["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {v}"))
            .to_owned();
        let refresh = v["refresh_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no refresh_token in {v}"))
            .to_owned();
        Tokens {
            access,
            refresh,
            resp,
        }
    }

    /// The value of a cookie this response set.
    pub fn cookie(&self, name: &str) -> String {
        set_cookie(&self.resp, name).value
    }
}

/// Signs up and expects 201.
pub async fn signup(gw: &Gateway, email: &str, password: &str) -> Tokens {
    let r = post_json(
        &gw.url("/api/auth/signup"),
        &serde_json::json!({"email": email, "password": password}),
        &[],
    )
    .await;
    assert_eq!(r.status, 201, "signup {email}: {}", r.text());
    Tokens::from_resp(r)
}

/// Logs in and expects 200.
pub async fn login(gw: &Gateway, email: &str, password: &str) -> Tokens {
    let r = post_json(
        &gw.url("/api/auth/login"),
        &serde_json::json!({"email": email, "password": password}),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "login {email}: {}", r.text());
    Tokens::from_resp(r)
}

/// POST /refresh with the token in the body; returns the raw response.
pub async fn refresh(gw: &Gateway, refresh_token: &str) -> Resp {
    post_json(
        &gw.url("/api/auth/refresh"),
        &serde_json::json!({"refresh_token": refresh_token}),
        &[],
    )
    .await
}

/// Refreshes and expects 200.
pub async fn refreshed(gw: &Gateway, refresh_token: &str) -> Tokens {
    let r = refresh(gw, refresh_token).await;
    assert_eq!(r.status, 200, "refresh: {}", r.text());
    Tokens::from_resp(r)
}

/// GET /api/auth/me with a bearer token; returns the status.
pub async fn me_status(gw: &Gateway, access: &str) -> u16 {
    get_with(
        &gw.url("/api/auth/me"),
        &[("authorization", &bearer(access))],
    )
    .await
    .status
}

/// One `Set-Cookie` header, parsed.
#[derive(Debug, Clone)]
pub struct SetCookie {
    pub name: String,
    pub value: String,
    /// Attributes as written (`Path=/`, `HttpOnly`...), trimmed.
    pub attrs: Vec<String>,
}

impl SetCookie {
    /// Whether a flag attribute (`HttpOnly`, `Secure`) is present, ignoring case.
    pub fn has(&self, flag: &str) -> bool {
        self.attrs.iter().any(|a| a.eq_ignore_ascii_case(flag))
    }

    /// The value of `name=value` attribute (`Path`, `Max-Age`, `SameSite`), ignoring name case.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find_map(|a| {
            let (n, v) = a.split_once('=')?;
            n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }
}

/// Every `Set-Cookie` of a response.
pub fn set_cookies(resp: &Resp) -> Vec<SetCookie> {
    resp.headers
        .get_all("set-cookie")
        .iter()
        .map(|v| {
            let text = String::from_utf8_lossy(v.as_bytes()).into_owned();
            let mut parts = text.split(';');
            let (name, value) = parts
                .next()
                .and_then(|p| p.split_once('='))
                .unwrap_or_else(|| panic!("bad Set-Cookie {text:?}"));
            SetCookie {
                name: name.trim().to_owned(),
                value: value.trim().to_owned(),
                attrs: parts.map(|a| a.trim().to_owned()).collect(),
            }
        })
        .collect()
}

/// The one `Set-Cookie` called `name`; panics when absent or repeated.
pub fn set_cookie(resp: &Resp, name: &str) -> SetCookie {
    let all: Vec<SetCookie> = set_cookies(resp)
        .into_iter()
        .filter(|c| c.name == name)
        .collect();
    assert_eq!(all.len(), 1, "Set-Cookie {name}: {all:?}");
    all.into_iter().next().unwrap()
}

/// A `Cookie` request header value from pairs.
pub fn cookie_header(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Sends a request to the gateway's HTTPS listener, trusting its self-signed certificate.
pub async fn https_call(
    gw: &Gateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    json: Option<&serde_json::Value>,
) -> Resp {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        rustls_pki_types::CertificateDer::pem_file_iter(gw.path("certs/localhost.pem")).unwrap()
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
    let mut b = req(
        method,
        &format!("https://127.0.0.1:{}{path}", gw.https.port()),
    );
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    let body = match json {
        Some(v) => {
            b = b.header("content-type", "application/json");
            Full::new(Bytes::from(v.to_string()))
        }
        None => Full::default(),
    };
    let resp = client.request(b.body(body).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

// ---- The admin CLI ----

/// What one CLI run produced.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `gateway --config CONFIG ARGS...`, feeding `stdin` (or nothing: stdin is then empty, not
/// a terminal).
pub fn run_cli(config: &std::path::Path, args: &[&str], stdin: &str) -> Out {
    run_cli_with_umask(config, args, stdin, None)
}

/// [`run_cli`] with `umask` in force in the child, when given.
pub fn run_cli_with_umask(
    config: &std::path::Path,
    args: &[&str],
    stdin: &str,
    umask: Option<u32>,
) -> Out {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"));
    if let Some(umask) = umask {
        use std::os::unix::process::CommandExt;
        // SAFETY: umask is async-signal-safe and touches only the child's own state.
        unsafe {
            cmd.pre_exec(move || {
                libc::umask(umask as libc::mode_t);
                Ok(())
            });
        }
    }
    let mut child = cmd
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("GATEWAY_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The CLI may exit before reading stdin (a bad argument): ignore a broken pipe.
    let _ = std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// [`run_cli`] off the async threads, so an in-process gateway keeps serving meanwhile.
pub async fn cli(config: &std::path::Path, args: &[&str], stdin: &str) -> Out {
    let config = config.to_owned();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli(&config, &args, &stdin)
    })
    .await
    .unwrap()
}
