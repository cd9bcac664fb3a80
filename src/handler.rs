//! What happens to one request, in order.
//!
//! 1. Health endpoints (`/healthz`, `/readyz`) are answered at once (GET and HEAD; 405 for other
//!    methods).
//! 2. Plain HTTP is redirected to HTTPS when configured.
//! 3. The path is normalised once ([`crate::proxy::path`]); a path that cannot be normalised
//!    safely is refused with 400. Everything below uses that one path.
//! 4. The gateway's own auth API (under `auth.prefix`) is served here.
//! 5. The route table picks a route (404 when none matches).
//! 6. The route's policy is enforced: public routes pass; `required` routes need a valid access
//!    token (fail closed: any doubt is 401).
//! 7. Client-sent identity headers are removed, and the gateway's own credentials (its cookies
//!    always, the bearer token unless the route has `forward_token`), on every route; then the
//!    request is forwarded. An answer to a request the gateway authenticated is kept out of
//!    caches ([`crate::proxy::cache`]).
//! 8. One access-log line is written (never a token, cookie or query string).

mod direct;

pub use direct::{Direct, DirectPlan};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::auth::http::{AuthApi, Denied, Unauthenticated, is_safe, strip_credentials};
use crate::body::{self, Body};
use crate::config::{AuthPolicy, Config, OnUnauthenticated};
use crate::error::{HttpError, json_response};
use crate::metrics::{AuthOutcome, Metrics, RouteStats};
use crate::proxy::cors::Cors;
use crate::proxy::headers::Forwarded;
use crate::proxy::route::{Matched, RouteTable};
use crate::proxy::{Forward, Proxy, path};

/// The request id header: kept from trusted proxies, else generated; sent upstream and back.
const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Errors while building the request handler at start-up.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Proxy(#[from] crate::proxy::ProxyError),
    #[error(transparent)]
    Auth(#[from] crate::auth::OpenError),
}

/// The accepted connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// Everything a request needs, built from one configuration. A reload builds a new `App` and
/// swaps it in; requests in flight finish with the one they started with.
pub struct App {
    config: Config,
    routes: RouteTable,
    /// Counters per route, by route index.
    route_stats: Vec<Arc<RouteStats>>,
    proxy: Proxy,
    auth: AuthApi,
    cors: Option<Cors>,
    draining: AtomicBool,
    hsts: Option<HeaderValue>,
    metrics: Arc<Metrics>,
    /// `{prefix}/verify`, the forward-auth endpoint.
    verify_path: String,
    auth_stats: Arc<RouteStats>,
    other_stats: Arc<RouteStats>,
}

/// In a `/verify` answer that allows the request: the `Cookie` header the app should get (the
/// request's cookies minus the gateway's own; empty when none are left).
const UPSTREAM_COOKIE: &str = "x-upstream-cookie";
/// In a `/verify` 401 to nginx for a browser: where to send it to sign in (`next` encoded).
const LOGIN_LOCATION: &str = "x-login-location";

impl App {
    /// Builds the routes, upstream client and auth API for a configuration, around the
    /// long-lived auth core.
    pub fn build(
        config: Config,
        core: &crate::auth::Core,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<App>, StartupError> {
        let routes = RouteTable::new(&config.routes);
        let route_stats = routes.iter().map(|r| metrics.route(&r.spec.name)).collect();
        let proxy = Proxy::new(
            &config.upstream,
            config.limits.max_body_bytes,
            config.limits.idle_timeout,
            config.listen.workers,
        )?;
        let auth = crate::auth::api(core, &config, metrics.clone());
        let hsts = config
            .tls
            .hsts_max_age
            .and_then(|d| HeaderValue::from_str(&format!("max-age={}", d.as_secs())).ok());
        let cors = Cors::new(&config.cors);
        let verify_path = format!("{}/verify", config.auth.prefix);
        Ok(Arc::new(App {
            config,
            routes,
            route_stats,
            proxy,
            auth,
            cors,
            draining: AtomicBool::new(false),
            hsts,
            verify_path,
            auth_stats: metrics.route("(auth api)"),
            other_stats: metrics.route("(none)"),
            metrics,
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

    /// The auth API and token checks.
    pub fn auth(&self) -> &AuthApi {
        &self.auth
    }

    /// Handles one request; never fails (errors become responses here).
    pub async fn handle(&self, req: Request<Incoming>, conn: Conn) -> Response<Body> {
        let limits = &self.config.limits;
        // hyper counts HTTP/1.1 header lines itself (431 beyond); HTTP/2 has only a size limit.
        if req.version() == http::Version::HTTP_2 && req.headers().len() > limits.max_headers {
            let html = wants_html(req.method(), req.headers());
            return HttpError::HeadersTooLarge.response(html);
        }
        if http_body::Body::is_end_stream(req.body()) {
            return self.handle_request(req.map(body::boxed), conn).await;
        }
        let timeout = limits.body_timeout;
        let req = req.map(|b| body::boxed(body::ClientBody::new(b, timeout)));
        self.handle_request(req, conn).await
    }

    /// [`App::handle`] for a request whose body is already boxed (the HTTP/1.1 fast path,
    /// [`crate::fast_path`], passes its bodiless requests here).
    pub async fn handle_request(&self, mut req: Request<Body>, conn: Conn) -> Response<Body> {
        let start = Instant::now();
        let method = req.method().clone();
        let request_id = self.request_id(conn.peer.ip(), req.headers());
        req.headers_mut().insert(REQUEST_ID, request_id.clone());
        let html = wants_html(req.method(), req.headers());
        let mut log = AccessLog {
            path: String::new(),
            route: None,
            forwarded: false,
            user: None,
            stats: None,
            upstream_time: None,
        };
        let mut resp = match self.dispatch(req, conn, html, &mut log).await {
            Ok(resp) => resp,
            Err(e) => e.response(html),
        };
        if conn.tls
            && let Some(v) = &self.hsts
        {
            resp.headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, v.clone());
        }
        resp.headers_mut().insert(REQUEST_ID, request_id.clone());
        log.stats
            .as_ref()
            .unwrap_or(&self.other_stats)
            .record(resp.status().as_u16(), log.upstream_time);
        tracing::info!(
            target: "access",
            peer = %conn.peer.ip(),
            method = %method,
            path = %log.path,
            status = resp.status().as_u16(),
            latency_us = start.elapsed().as_micros() as u64,
            route = %log.route.as_ref().map_or(&"-" as &dyn std::fmt::Display, |r| r),
            upstream = %log.upstream(),
            user = log.user.as_deref().map_or("-", |c| c.sub.as_str()),
            request_id = request_id.to_str().unwrap_or("-"),
        );
        resp
    }

    async fn dispatch(
        &self,
        req: Request<Body>,
        conn: Conn,
        html: bool,
        log: &mut AccessLog,
    ) -> Result<Response<Body>, HttpError> {
        let raw_path = req.uri().path();
        if raw_path == self.config.health.live || raw_path == self.config.health.ready {
            log.path = raw_path.to_owned();
            // Probes read; any other method is a mistake, said as for the auth API's paths.
            if !matches!(*req.method(), Method::GET | Method::HEAD) {
                return Err(HttpError::MethodNotAllowed("GET, HEAD"));
            }
        }
        if raw_path == self.config.health.live {
            return Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({"status": "ok"}),
            ));
        }
        if raw_path == self.config.health.ready {
            return Ok(self.ready());
        }

        // Which of several Authorization headers would the upstream believe? Refuse to guess.
        if req
            .headers()
            .get_all(header::AUTHORIZATION)
            .iter()
            .nth(1)
            .is_some()
        {
            return Err(HttpError::BadRequest(
                "Several Authorization headers".into(),
            ));
        }
        // Several Host headers: the upstream might believe another one than routing did.
        if req.headers().get_all(header::HOST).iter().nth(1).is_some() {
            return Err(HttpError::BadRequest("Several Host headers".into()));
        }
        let host = request_host(&req);
        if host.is_none()
            && (req.headers().contains_key(header::HOST) || req.uri().authority().is_some())
        {
            return Err(HttpError::BadRequest("Malformed Host".into()));
        }
        if !conn.tls && self.config.listen.redirect_http_to_https {
            return self.redirect_to_https(&req, host.as_deref());
        }

        let path = path::normalize(raw_path).map_err(|e| HttpError::BadRequest(e.to_string()))?;
        log.path.clone_from(&path);

        // Behind a trusted TLS-terminating proxy, sessions are as secure as over our own TLS:
        // same cookie names and `Secure` flag.
        let conn = Conn {
            tls: conn.tls || self.forwarded_https(conn.peer.ip(), req.headers()),
            ..conn
        };
        if path == self.verify_path {
            log.route = Some(RouteLabel::Verify);
            log.stats = Some(self.auth_stats.clone());
            return self.verify(req, conn, log).await;
        }

        let origin = req.headers().get(header::ORIGIN).cloned();
        if self.auth.owns(&path) {
            log.route = Some(RouteLabel::Auth);
            log.stats = Some(self.auth_stats.clone());
            if let Some(cors) = &self.cors
                && Cors::is_preflight(req.method(), req.headers())
            {
                return Ok(cors.preflight(req.headers()));
            }
            let client_ip = self.client_ip(conn.peer.ip(), req.headers());
            let resp = self.auth.handle(req, &path, conn.tls, client_ip).await;
            return Ok(with_cors(self.cors.as_ref(), origin.as_ref(), resp, html));
        }

        let matched = self
            .routes
            .find(host.as_deref(), req.method(), &path)
            .ok_or(HttpError::NotFound)?;
        let route = matched.route.clone();
        log.route = Some(RouteLabel::Route(route.clone()));
        log.stats = self.route_stats.get(route.index).cloned();
        let cors = self.cors.as_ref().filter(|_| route.spec.cors);
        if let Some(cors) = cors
            && Cors::is_preflight(req.method(), req.headers())
        {
            return Ok(cors.preflight(req.headers()));
        }

        let resp = self
            .enforce_and_forward(req, conn, &path, matched, html, log)
            .await;
        Ok(with_cors(cors, origin.as_ref(), resp, html))
    }

    /// Step 6 for a matched route: admit (or refuse) the caller on a `required` route and, when
    /// admitted, set the identity headers on `req`. Client identity headers are stripped first,
    /// on every route.
    async fn gate(
        &self,
        req: &mut Request<Body>,
        conn: Conn,
        path: &str,
        matched: &Matched<'_>,
        log: &mut AccessLog,
    ) -> Result<Gate, HttpError> {
        let route = &matched.route;
        self.auth.strip_identity(req.headers_mut());
        let AuthPolicy::Required { roles } = &route.spec.policy else {
            return Ok(Gate::Pass {
                set_cookies: Vec::new(),
                via_cookie: None,
            });
        };
        let admitted = match self.auth.admit(req, conn.tls).await {
            Ok(a) => a,
            Err(Denied::Refused(e)) => return Err(e),
            Err(Denied::Unauthenticated(why)) => {
                let outcome = match why {
                    Unauthenticated::Missing => AuthOutcome::Missing,
                    Unauthenticated::Rejected("expired") => AuthOutcome::Expired,
                    Unauthenticated::Rejected("revoked" | "disabled") => AuthOutcome::Revoked,
                    Unauthenticated::Rejected(_) => AuthOutcome::Invalid,
                };
                self.metrics.auth_outcome(outcome);
                if let Unauthenticated::Rejected(reason) = why {
                    tracing::debug!(reason, route = %route.spec.name, "token rejected");
                }
                let redirect = match route.spec.on_unauthenticated {
                    OnUnauthenticated::Redirect => true,
                    OnUnauthenticated::Deny => false,
                    OnUnauthenticated::Auto => wants_html(req.method(), req.headers()),
                };
                let next = req
                    .uri()
                    .query()
                    .map_or_else(|| path.to_owned(), |q| format!("{path}?{q}"));
                return Ok(Gate::Unauthenticated { redirect, next });
            }
        };
        let claims = &admitted.session.claims;
        log.user = Some(claims.clone());
        let has_any = |wanted: &[String]| wanted.iter().any(|r| claims.roles.contains(r));
        let not_owner = matched.path.owner.is_some_and(|owner| {
            !route.owned_by(owner, &claims.sub) && !has_any(&route.spec.owner_bypass_roles)
        });
        let lacks_role = !roles.is_empty() && !has_any(roles);
        if lacks_role || not_owner {
            self.metrics.auth_outcome(AuthOutcome::Forbidden);
            let needed = if lacks_role {
                roles
            } else {
                &route.spec.owner_bypass_roles
            };
            let next = req
                .uri()
                .query()
                .map_or_else(|| path.to_owned(), |q| format!("{path}?{q}"));
            return Ok(Gate::Refused {
                error: self
                    .auth
                    .no_access(req.headers(), conn.tls, claims, needed, &next),
                set_cookies: admitted.set_cookies,
            });
        }
        self.metrics.auth_outcome(AuthOutcome::Ok);
        if admitted.session.via_cookie
            && !admitted.csrf_checked
            && !is_safe(req.method())
            && let Err(error) = self.auth.check_csrf(req.headers(), conn.tls, &claims.sid)
        {
            return Ok(Gate::Refused {
                error,
                set_cookies: admitted.set_cookies,
            });
        }
        let audience = route
            .spec
            .assertion_audience
            .as_deref()
            .unwrap_or(&route.spec.name);
        self.auth
            .identify(req.headers_mut(), &admitted.session, audience);
        Ok(Gate::Pass {
            set_cookies: admitted.set_cookies,
            via_cookie: Some(admitted.session.via_cookie),
        })
    }

    /// Steps 6 and 7 for a matched route: the gate, then credential stripping and forwarding.
    async fn enforce_and_forward(
        &self,
        mut req: Request<Body>,
        conn: Conn,
        path: &str,
        matched: Matched<'_>,
        html: bool,
        log: &mut AccessLog,
    ) -> Result<Response<Body>, HttpError> {
        let route = matched.route.clone();
        let gate = self.gate(&mut req, conn, path, &matched, log).await?;
        let (set_cookies, via_cookie) = match gate {
            Gate::Pass {
                set_cookies,
                via_cookie,
            } => (set_cookies, via_cookie),
            Gate::Unauthenticated {
                redirect: true,
                next,
            } => {
                return Ok(self.auth.login_redirect(&next));
            }
            Gate::Unauthenticated { .. } => {
                return Err(HttpError::Unauthorized("Not authenticated"));
            }
            Gate::Refused { error, set_cookies } => {
                return Ok(with_set_cookies(error.response(html), set_cookies));
            }
        };
        // On public routes too: a signed-in browser sends its session cookies everywhere.
        strip_credentials(req.headers_mut(), route.spec.forward_token);

        log.forwarded = true;
        let peer = conn.peer.ip();
        let raw_host = raw_host(&req);
        let forwarded = Forwarded {
            peer,
            trusted: self.is_trusted(peer),
            proto: if conn.tls { "https" } else { "http" },
            host: raw_host.as_deref(),
            client: self.client_ip(peer, req.headers()),
            strip: &self.config.upstream.strip_request_headers,
        };
        let identity = |name: &[u8]| self.auth.is_identity_name(name);
        let sent = Instant::now();
        let forwarded = self
            .proxy
            .forward(
                req,
                Forward {
                    route: &route,
                    path,
                    matched: matched.path,
                    forwarded,
                    identity: &identity,
                    html,
                },
            )
            .await;
        log.upstream_time = Some(sent.elapsed());
        let mut resp = match forwarded {
            Ok(resp) => resp,
            // The refreshed session cookies go with an error answer too: the browser's refresh
            // token was rotated, and keeping the old one would count as reuse after the grace
            // window and end the session.
            Err(e) => return Ok(with_set_cookies(e.response(html), set_cookies)),
        };
        if let Some(via_cookie) = via_cookie {
            let status = resp.status();
            crate::proxy::cache::protect(status, resp.headers_mut(), route.spec.cache, via_cookie);
        }
        Ok(with_set_cookies(resp, set_cookies))
    }

    fn ready(&self) -> Response<Body> {
        if self.draining.load(Ordering::Relaxed) {
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"status": "draining"}),
            )
        } else if self.auth.service().is_stale() {
            let service = self.auth.service();
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({
                    "status": "store_unreachable",
                    "detail": format!(
                        "the store has not been reachable for {} s; {}",
                        service.seconds_since_sync(),
                        if service.refuses_tokens() { "tokens are refused" } else { "tokens are still accepted" }
                    ),
                }),
            )
        } else {
            json_response(StatusCode::OK, &serde_json::json!({"status": "ready"}))
        }
    }

    pub(crate) fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        self.config.trusted_proxies.iter().any(|n| n.contains(ip))
    }

    /// A trusted proxy says the client reached it over HTTPS.
    fn forwarded_https(&self, peer: std::net::IpAddr, headers: &HeaderMap) -> bool {
        self.is_trusted(peer)
            && headers
                .get("x-forwarded-proto")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
    }

    /// Forward-auth (`GET {prefix}/verify`) for nginx `auth_request`, Traefik `forwardAuth` and
    /// Caddy `forward_auth`: the original request is described by headers (`X-Original-URI` and
    /// `X-Original-Method` from nginx; `X-Forwarded-Uri`, `-Method`, `-Host`, `-Proto` from
    /// Traefik and Caddy), believed only from `trusted_proxies`. The same route table and policy
    /// decide: 200 with the identity headers (empty on a public route), the cookies the app may
    /// see (`X-Upstream-Cookie`) and any refreshed session cookies; 401 (nginx turns it into a
    /// login redirect with `error_page`, to `X-Login-Location` for browsers); a 302 to the login
    /// page for browser navigations via Traefik/Caddy (they pass the answer to the client), or a
    /// 307 back to the URL when they would drop refreshed cookies; or 403.
    async fn verify(
        &self,
        req: Request<Body>,
        conn: Conn,
        log: &mut AccessLog,
    ) -> Result<Response<Body>, HttpError> {
        if !self.is_trusted(conn.peer.ip()) {
            return Err(HttpError::Forbidden(
                "Forward-auth answers only proxies listed in trusted_proxies",
            ));
        }
        let h = req.headers();
        let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
        // Each proxy family describes the request with its own headers; take URI, method and
        // host from one family only. Both present means a client added the other family's
        // header (proxies pass client headers through): refuse rather than guess.
        let (nginx, uri, method, raw_host) = match (text("x-original-uri"), text("x-forwarded-uri"))
        {
            (Some(_), Some(_)) => {
                return Err(HttpError::BadRequest(
                    "Both X-Original-URI and X-Forwarded-Uri: ambiguous forward-auth request"
                        .into(),
                ));
            }
            (Some(u), None) => (true, u, text("x-original-method"), text("host")),
            (None, Some(u)) => (
                false,
                u,
                text("x-forwarded-method"),
                text("x-forwarded-host").or_else(|| text("host")),
            ),
            (None, None) => {
                return Err(HttpError::BadRequest(
                    "Missing X-Original-URI (nginx) or X-Forwarded-Uri (Traefik, Caddy)".into(),
                ));
            }
        };
        let pq: http::uri::PathAndQuery = uri
            .parse()
            .map_err(|_| HttpError::BadRequest("Malformed original URI".into()))?;
        // Without the method the CSRF rule cannot be applied: refuse instead of assuming GET.
        let method = method
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .ok_or_else(|| {
                HttpError::BadRequest(
                    "Missing X-Original-Method (nginx) or X-Forwarded-Method (Traefik, Caddy)"
                        .into(),
                )
            })?;
        let raw_host = raw_host.map(str::to_owned);
        let host = raw_host.as_deref().and_then(canonical_host);
        let proto = if text("x-forwarded-proto") == Some("https") || conn.tls {
            "https"
        } else {
            "http"
        };
        let path = path::normalize(pq.path()).map_err(|e| HttpError::BadRequest(e.to_string()))?;
        log.path.clone_from(&path);
        // Fail closed: a request no route covers is not let through.
        let matched = self
            .routes
            .find(host.as_deref(), &method, &path)
            .ok_or(HttpError::Forbidden("No route for this request"))?;
        log.route = Some(RouteLabel::VerifyRoute(matched.route.clone()));

        let mut original = Request::new(body::empty());
        *original.method_mut() = method;
        *original.uri_mut() = http::Uri::from(pq);
        *original.headers_mut() = req.headers().clone();
        match self.gate(&mut original, conn, &path, &matched, log).await? {
            Gate::Pass { set_cookies, .. } => {
                // Caddy and Traefik do not hand a 2xx answer's Set-Cookie to the browser, so a
                // session refreshed during the check would be lost (and its rotated refresh
                // token later replayed). Send the browser back to the same URL with the new
                // cookies instead: a 307 (method and body kept) that they pass on as it is.
                if !nginx
                    && !set_cookies.is_empty()
                    && let Some(host) = raw_host.as_deref()
                    && let Ok(location) = HeaderValue::from_str(&format!("{proto}://{host}{uri}"))
                {
                    let mut resp = Response::new(body::empty());
                    *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
                    resp.headers_mut().insert(header::LOCATION, location);
                    resp.headers_mut()
                        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    for c in set_cookies {
                        resp.headers_mut().append(header::SET_COOKIE, c);
                    }
                    return Ok(resp);
                }
                let mut resp = Response::new(body::empty());
                resp.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                // Every identity header, empty when there is no identity (a public route):
                // Caddy 2.6 copies an absent one as its literal placeholder text.
                for name in self.auth.identity_header_names() {
                    let v = original
                        .headers()
                        .get(&name)
                        .cloned()
                        .unwrap_or_else(|| HeaderValue::from_static(""));
                    resp.headers_mut().insert(name, v);
                }
                // nginx (before 1.23) reads only the first of several Set-Cookie headers of the
                // answer; the session's cookies (at most three) also come one per header.
                if nginx {
                    for (i, c) in set_cookies.iter().enumerate() {
                        if let Ok(name) = http::HeaderName::from_bytes(
                            format!("x-set-cookie-{}", i + 1).as_bytes(),
                        ) {
                            resp.headers_mut().insert(name, c.clone());
                        }
                    }
                }
                for c in set_cookies {
                    resp.headers_mut().append(header::SET_COOKIE, c);
                }
                // The browser's cookies minus the gateway's own, for the proxy to send to the
                // app instead of the Cookie header it received: the session cookies (the
                // refresh cookie has Path=/) never reach the app.
                let mut app_headers = HeaderMap::new();
                for c in req.headers().get_all(header::COOKIE) {
                    app_headers.append(header::COOKIE, c.clone());
                }
                strip_credentials(&mut app_headers, true);
                let app_cookie = app_headers.remove(header::COOKIE);
                resp.headers_mut().insert(
                    UPSTREAM_COOKIE,
                    app_cookie
                        .clone()
                        .unwrap_or_else(|| HeaderValue::from_static("")),
                );
                // Traefik cannot rename a header but replaces (or, when absent, removes) the
                // request's copy of each header it is told to take from this answer.
                if let Some(c) = app_cookie {
                    resp.headers_mut().insert(header::COOKIE, c);
                }
                Ok(resp)
            }
            Gate::Unauthenticated { redirect, next } => {
                if redirect && nginx {
                    // nginx cannot follow a redirect from auth_request; it sends the browser to
                    // this location itself, with `next` already encoded.
                    let login = self.auth.login_redirect(&next);
                    let mut resp = HttpError::Unauthorized("Not authenticated").response(false);
                    if let Some(loc) = login.headers().get(header::LOCATION) {
                        resp.headers_mut().insert(LOGIN_LOCATION, loc.clone());
                    }
                    return Ok(resp);
                }
                if redirect && !nginx {
                    let mut resp = self.auth.login_redirect(&next);
                    *resp.status_mut() = StatusCode::FOUND;
                    if let (Some(host), Some(loc)) = (
                        raw_host.as_deref(),
                        resp.headers()
                            .get(header::LOCATION)
                            .and_then(|l| l.to_str().ok()),
                    ) && let Ok(abs) = HeaderValue::from_str(&format!("{proto}://{host}{loc}"))
                    {
                        resp.headers_mut().insert(header::LOCATION, abs);
                    }
                    return Ok(resp);
                }
                Err(HttpError::Unauthorized("Not authenticated"))
            }
            Gate::Refused { error, set_cookies } => {
                let html = wants_html(original.method(), original.headers());
                Ok(with_set_cookies(error.response(html), set_cookies))
            }
        }
    }

    /// The request's id: the one a trusted proxy sent (if it is a sane token), else a new one.
    fn request_id(&self, peer: std::net::IpAddr, headers: &HeaderMap) -> HeaderValue {
        if self.is_trusted(peer)
            && let Some(v) = headers.get(REQUEST_ID)
            && sane_request_id(v.as_bytes())
        {
            return v.clone();
        }
        crate::metrics::request_id()
    }

    /// The client's address: the socket peer, or, when the peer is a trusted proxy, the
    /// right-most `X-Forwarded-For` hop that is not itself trusted. A client cannot choose its
    /// own rate-limit bucket by sending `X-Forwarded-For` directly.
    pub fn client_ip(&self, peer: std::net::IpAddr, headers: &HeaderMap) -> std::net::IpAddr {
        crate::proxy::headers::client_ip(
            peer,
            |ip| self.is_trusted(ip),
            // As the chain of `X-Forwarded-For` is built: values `to_str` accepts.
            headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::as_bytes),
        )
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

/// The answer (an error becomes its response here), with the CORS headers for `origin` when CORS
/// applies, errors included: a script on an allowed origin must be able to read a 401 or 403
/// (one it cannot read looks like a network failure to it).
fn with_cors(
    cors: Option<&Cors>,
    origin: Option<&HeaderValue>,
    resp: Result<Response<Body>, HttpError>,
    html: bool,
) -> Response<Body> {
    let mut resp = resp.unwrap_or_else(|e| e.response(html));
    if let Some(cors) = cors {
        cors.decorate(origin, resp.headers_mut());
    }
    resp
}

/// `resp` with the `Set-Cookie`s of a transparent refresh added.
fn with_set_cookies(mut resp: Response<Body>, set_cookies: Vec<HeaderValue>) -> Response<Body> {
    for c in set_cookies {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

/// The gate's decision.
enum Gate {
    /// Go on; add these `Set-Cookie`s (from a transparent refresh) to the answer.
    /// `via_cookie`: on a `required` route, whether a cookie session (rather than a bearer
    /// token) admitted the request; `None` on a public route.
    Pass {
        set_cookies: Vec<HeaderValue>,
        via_cookie: Option<bool>,
    },
    /// No valid credentials: redirect a browser to the login page (with `next`), or 401.
    Unauthenticated { redirect: bool, next: String },
    /// Authenticated but refused (a role or owner check, CSRF): answer `error`, with the
    /// `Set-Cookie`s of a transparent refresh that happened on the way.
    Refused {
        error: HttpError,
        set_cookies: Vec<HeaderValue>,
    },
}

/// What the access log line says about a request, filled in as it becomes known (cheaply: it
/// is formatted only when the access log is on).
struct AccessLog {
    path: String,
    route: Option<RouteLabel>,
    /// The request was sent to its route's upstream.
    forwarded: bool,
    user: Option<Arc<crate::auth::token::AccessClaims>>,
    stats: Option<Arc<RouteStats>>,
    upstream_time: Option<std::time::Duration>,
}

impl AccessLog {
    /// The upstream the request went to, or `-`.
    fn upstream(&self) -> &dyn std::fmt::Display {
        match &self.route {
            Some(RouteLabel::Route(r)) if self.forwarded => &r.spec.upstream,
            _ => &"-",
        }
    }
}

/// What served a request, as the access log names it.
enum RouteLabel {
    Auth,
    Verify,
    Route(Arc<crate::proxy::route::Route>),
    /// Forward-auth, deciding for this route.
    VerifyRoute(Arc<crate::proxy::route::Route>),
}

impl std::fmt::Display for RouteLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteLabel::Auth => f.write_str("auth"),
            RouteLabel::Verify => f.write_str("verify"),
            RouteLabel::Route(r) => f.write_str(&r.spec.name),
            RouteLabel::VerifyRoute(r) => write!(f, "verify:{}", r.spec.name),
        }
    }
}

/// The request's host name without port, lowercased: the Host header (HTTP/1.1) or the URI
/// authority (HTTP/2). `None` if absent or malformed.
pub fn request_host<B>(req: &Request<B>) -> Option<String> {
    let raw = match req.headers().get(header::HOST) {
        Some(v) => v.to_str().ok()?,
        None => req.uri().authority()?.as_str(),
    };
    canonical_host(raw)
}

/// A host as routes compare it: lowercase, without port, brackets or one trailing dot. `None`
/// for anything with userinfo (`a@b`), an empty label (`a..b`, `app.example.com..`: nginx
/// refuses these too, and they could name a host another way than routing saw it) or otherwise
/// malformed; a request whose Host is `None` here is refused with 400.
pub fn canonical_host(raw: &str) -> Option<String> {
    if raw.contains("..") {
        return None;
    }
    // The usual case, a lowercase name with an optional port, needs no parsing.
    let (name, port) = raw.split_once(':').unwrap_or((raw, ""));
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && (raw.len() == name.len()
            || (port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok()))
    {
        return Some(name.strip_suffix('.').unwrap_or(name).to_owned());
    }
    if raw.contains('@') {
        return None;
    }
    let authority: http::uri::Authority = raw.parse().ok()?;
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    Some(host.to_ascii_lowercase())
}

/// The Host header as sent (with port), or the HTTP/2 authority, for `X-Forwarded-Host`.
fn raw_host<B>(req: &Request<B>) -> Option<String> {
    match req.headers().get(header::HOST) {
        Some(v) => v.to_str().ok().map(str::to_owned),
        None => req.uri().authority().map(|a| a.as_str().to_owned()),
    }
}

/// A request id a trusted proxy may hand on: 1 to 128 letters, digits and `-_.:`.
fn sane_request_id(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
}

/// Whether this looks like a browser navigation that should get HTML rather than JSON: a GET or
/// HEAD that accepts `text/html` and is not marked as a script request.
pub fn wants_html(method: &Method, headers: &HeaderMap) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return false;
    }
    const REQUESTED_WITH: http::HeaderName = http::HeaderName::from_static("x-requested-with");
    const FETCH_MODE: http::HeaderName = http::HeaderName::from_static("sec-fetch-mode");
    if headers
        .get(REQUESTED_WITH)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"XMLHttpRequest"))
    {
        return false;
    }
    if let Some(mode) = headers.get(FETCH_MODE)
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

    #[test]
    fn canonical_hosts() {
        for (raw, want) in [
            ("app.example.com", Some("app.example.com")),
            ("app.example.com.", Some("app.example.com")),
            ("app.example.com:8443", Some("app.example.com")),
            ("App.Example.COM", Some("app.example.com")),
            ("127.0.0.1:19004", Some("127.0.0.1")),
            ("[::1]:8443", Some("::1")),
            ("user@app.example.com", None),
            // Authority does not check the port range; routing only uses the name.
            ("app.example.com:99999", Some("app.example.com")),
            ("", None),
            ("app.example.com..", None),
            ("App.Example.com..:8443", None),
            ("app..example.com", None),
        ] {
            assert_eq!(canonical_host(raw).as_deref(), want, "{raw:?}");
        }
    }
}
