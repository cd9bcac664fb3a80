//! What happens to one request, in order.
//!
//! 1. Health endpoints (`/healthz`, `/readyz`) are answered at once.
//! 2. Plain HTTP is redirected to HTTPS when configured.
//! 3. The path is normalised once ([`crate::proxy::path`]); a path that cannot be normalised
//!    safely is refused with 400. Everything below uses that one path.
//! 4. The gateway's own auth API (under `auth.prefix`) is served here.
//! 5. The route table picks a route (404 when none matches).
//! 6. The route's policy is enforced: public routes pass; `required` routes need a valid access
//!    token (fail closed: any doubt is 401).
//! 7. Client-sent identity headers are removed and the request is forwarded.
//! 8. One access-log line is written (never a token, cookie or query string).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::auth::api::{AuthApi, Session, Unauthenticated};
use crate::auth::cookies;
use crate::body::{self, Body};
use crate::config::{AuthPolicy, Config};
use crate::error::{HttpError, json_response};
use crate::proxy::headers::{self, Forwarded};
use crate::proxy::route::RouteTable;
use crate::proxy::{Forward, Proxy, path};

/// Errors while building the request handler at start-up.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Proxy(#[from] crate::proxy::ProxyError),
    #[error("cannot open the store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("cannot start the auth service: {0}")]
    Auth(#[from] crate::auth::service::AuthError),
}

/// The accepted connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// Everything a request needs, built once from the config.
pub struct App {
    config: Config,
    routes: RouteTable,
    proxy: Proxy,
    auth: AuthApi,
    draining: AtomicBool,
    hsts: Option<HeaderValue>,
    stop_background: tokio::sync::watch::Sender<bool>,
}

impl App {
    /// Builds the routes, upstream client and auth service.
    pub async fn start(config: Config) -> Result<Arc<App>, StartupError> {
        let routes = RouteTable::new(&config.routes);
        let proxy = Proxy::new(&config.upstream, config.limits.max_body_bytes)?;
        let (stop_background, stopped) = tokio::sync::watch::channel(false);
        let auth = crate::auth::start(&config, stopped).await?;
        let hsts = config
            .tls
            .hsts_max_age
            .and_then(|d| HeaderValue::from_str(&format!("max-age={}", d.as_secs())).ok());
        Ok(Arc::new(App {
            config,
            routes,
            proxy,
            auth,
            draining: AtomicBool::new(false),
            hsts,
            stop_background,
        }))
    }

    /// The configuration this app was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Marks the app as shutting down: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Stops background work (change-feed polling, sweeping).
    pub fn stop(&self) {
        let _ = self.stop_background.send(true);
    }

    /// The auth API and token checks.
    pub fn auth(&self) -> &AuthApi {
        &self.auth
    }

    /// Handles one request; never fails (errors become responses here).
    pub async fn handle(&self, req: Request<Incoming>, conn: Conn) -> Response<Body> {
        let start = Instant::now();
        let method = req.method().clone();
        let html = wants_html(req.method(), req.headers());
        let mut log = AccessLog {
            path: String::new(),
            route: None,
            upstream: None,
        };
        let mut resp = match self.dispatch(req.map(body::boxed), conn, &mut log).await {
            Ok(resp) => resp,
            Err(e) => e.response(html),
        };
        if conn.tls
            && let Some(v) = &self.hsts
        {
            resp.headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, v.clone());
        }
        tracing::info!(
            target: "access",
            peer = %conn.peer.ip(),
            method = %method,
            path = %log.path,
            status = resp.status().as_u16(),
            latency_us = start.elapsed().as_micros() as u64,
            route = log.route.as_deref().unwrap_or("-"),
            upstream = log.upstream.as_deref().unwrap_or("-"),
        );
        resp
    }

    async fn dispatch(
        &self,
        mut req: Request<Body>,
        conn: Conn,
        log: &mut AccessLog,
    ) -> Result<Response<Body>, HttpError> {
        let raw_path = req.uri().path();
        if raw_path == self.config.health.live {
            log.path = raw_path.to_owned();
            return Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({"status": "ok"}),
            ));
        }
        if raw_path == self.config.health.ready {
            log.path = raw_path.to_owned();
            return Ok(self.ready());
        }

        let host = request_host(&req);
        if !conn.tls && self.config.listen.redirect_http_to_https {
            return self.redirect_to_https(&req, host.as_deref());
        }

        let path = path::normalize(raw_path).map_err(|e| HttpError::BadRequest(e.to_string()))?;
        log.path.clone_from(&path);

        if self.auth.owns(&path) {
            log.route = Some("auth".to_owned());
            let client_ip = conn.peer.ip();
            return self.auth.handle(req, &path, conn.tls, client_ip).await;
        }

        let matched = self
            .routes
            .find(host.as_deref(), req.method(), &path)
            .ok_or(HttpError::NotFound)?;
        let route = matched.route.clone();
        log.route = Some(route.name.clone());

        headers::strip_identity(req.headers_mut());
        match &route.policy {
            AuthPolicy::Public => {}
            AuthPolicy::Required { roles } => {
                let session = match self.auth.authenticate(req.headers(), conn.tls) {
                    Ok(s) => s,
                    Err(why) => {
                        if let Unauthenticated::Rejected(reason) = why {
                            tracing::debug!(reason, route = %route.name, "token rejected");
                        }
                        return Err(HttpError::Unauthorized("Not authenticated"));
                    }
                };
                if !roles.is_empty() && !roles.iter().any(|r| session.claims.roles.contains(r)) {
                    return Err(HttpError::Forbidden("Forbidden"));
                }
                if session.via_cookie && !is_safe(req.method()) {
                    self.auth
                        .check_csrf(req.headers(), conn.tls, &session.claims.sid)?;
                }
                set_identity(req.headers_mut(), &session);
                strip_credentials(req.headers_mut(), conn.tls);
            }
        }

        log.upstream = Some(route.upstream.to_string());
        let peer = conn.peer.ip();
        let forwarded = Forwarded {
            peer,
            trusted: self.is_trusted(peer),
            proto: if conn.tls { "https" } else { "http" },
            host: host.as_deref(),
        };
        let html = wants_html(req.method(), req.headers());
        self.proxy
            .forward(
                req,
                Forward {
                    route: &route,
                    path: &path,
                    matched: matched.path,
                    forwarded,
                    html,
                },
            )
            .await
    }

    fn ready(&self) -> Response<Body> {
        if self.draining.load(Ordering::Relaxed) {
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"status": "draining"}),
            )
        } else {
            json_response(StatusCode::OK, &serde_json::json!({"status": "ready"}))
        }
    }

    fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        self.config.trusted_proxies.iter().any(|n| n.contains(ip))
    }

    fn redirect_to_https(
        &self,
        req: &Request<Body>,
        host: Option<&str>,
    ) -> Result<Response<Body>, HttpError> {
        let host = host.ok_or_else(|| HttpError::BadRequest("missing Host header".into()))?;
        let port = self.config.listen.https.map_or(443, |a| a.port());
        let authority = if port == 443 {
            host.to_owned()
        } else {
            format!("{host}:{port}")
        };
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let location = HeaderValue::from_str(&format!("https://{authority}{pq}"))
            .map_err(|_| HttpError::BadRequest("cannot redirect this request".into()))?;
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
        resp.headers_mut().insert(header::LOCATION, location);
        Ok(resp)
    }
}

/// GET, HEAD, OPTIONS and TRACE change nothing, so they need no CSRF token.
fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Tells the upstream who the user is. Values are cleaned of control characters; the headers
/// were stripped from the client's request before, so these are the only copies.
fn set_identity(headers: &mut HeaderMap, session: &Session) {
    let c = &session.claims;
    let pairs: [(&'static str, std::borrow::Cow<'_, str>); 4] = [
        ("x-auth-user-id", c.sub.as_str().into()),
        ("x-auth-email", c.email.as_str().into()),
        ("x-auth-name", c.name.as_deref().unwrap_or("").into()),
        ("x-auth-roles", c.roles.join(",").into()),
    ];
    for (name, value) in pairs {
        let clean: String = value.chars().filter(|ch| !ch.is_control()).collect();
        if let Ok(v) = HeaderValue::from_bytes(clean.as_bytes()) {
            headers.insert(http::header::HeaderName::from_static(name), v);
        }
    }
}

/// Removes the gateway's own credentials (bearer token, session cookies) before forwarding;
/// other cookies pass untouched.
fn strip_credentials(headers: &mut HeaderMap, tls: bool) {
    if crate::auth::api::bearer(headers).is_some() {
        headers.remove(header::AUTHORIZATION);
    }
    let _ = tls;
    if !headers.contains_key(header::COOKIE) {
        return;
    }
    let kept: Vec<String> = cookies::iter(headers)
        .filter(|(n, _)| !cookies::is_gateway_cookie(n))
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, v);
    }
}

/// What the access log line says about a request, filled in as it becomes known.
struct AccessLog {
    path: String,
    route: Option<String>,
    upstream: Option<String>,
}

/// The request's host name without port, lowercased: the Host header (HTTP/1.1) or the URI
/// authority (HTTP/2). `None` if absent or malformed.
pub fn request_host<B>(req: &Request<B>) -> Option<String> {
    let raw = match req.headers().get(header::HOST) {
        Some(v) => v.to_str().ok()?,
        None => req.uri().authority()?.as_str(),
    };
    let authority: http::uri::Authority = raw.parse().ok()?;
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some(host.to_ascii_lowercase())
}

/// Whether this looks like a browser navigation that should get HTML rather than JSON: a GET or
/// HEAD that accepts `text/html` and is not marked as a script request.
pub fn wants_html(method: &Method, headers: &HeaderMap) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return false;
    }
    if headers
        .get("x-requested-with")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"XMLHttpRequest"))
    {
        return false;
    }
    if let Some(mode) = headers.get("sec-fetch-mode")
        && mode.as_bytes() != b"navigate"
    {
        return false;
    }
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_detection() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml"),
        );
        assert!(wants_html(&Method::GET, &h));
        assert!(!wants_html(&Method::POST, &h));
        h.insert("sec-fetch-mode", HeaderValue::from_static("cors"));
        assert!(!wants_html(&Method::GET, &h));
        h.insert("sec-fetch-mode", HeaderValue::from_static("navigate"));
        assert!(wants_html(&Method::GET, &h));
        h.insert(
            "x-requested-with",
            HeaderValue::from_static("XMLHttpRequest"),
        );
        assert!(!wants_html(&Method::GET, &h));
        assert!(!wants_html(&Method::GET, &HeaderMap::new()));
    }

    #[test]
    fn host_without_port() {
        let r = Request::builder()
            .uri("/")
            .header("host", "App.Example.com:8443")
            .body(())
            .unwrap();
        assert_eq!(request_host(&r).as_deref(), Some("app.example.com"));
        let r = Request::builder()
            .uri("https://[::1]:8443/x")
            .body(())
            .unwrap();
        assert_eq!(request_host(&r).as_deref(), Some("::1"));
    }
}
