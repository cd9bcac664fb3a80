//! The request pipeline: what happens to one request, in order.
//!
//! 1. Health endpoints (`/healthz`, `/readyz`) are answered at once (GET and HEAD; 405 for other
//!    methods).
//! 2. Plain HTTP is redirected to HTTPS when configured.
//! 3. The path is normalised once ([`crate::proxy::path`]); a path that cannot be normalised
//!    safely is refused with 400. Everything below uses that one path.
//! 4. The gateway's own auth API (under `auth.prefix`) is served here, and forward-auth
//!    (`verify.rs`).
//! 5. The route table picks a route (404 when none matches).
//! 6. The route's policy is enforced: public routes pass; `required` routes need a valid access
//!    token (fail closed: any doubt is 401).
//! 7. Client-sent identity headers are removed, and the gateway's own credentials (its cookies
//!    always, the bearer token unless the route has `forward_token`), on every route; the
//!    forwarding headers are set ([`policy::ForwardingPlan`]); then the request is forwarded.
//!    An answer to a request the gateway authenticated is kept out of caches
//!    ([`crate::proxy::cache`]).
//! 8. The response epilogue ([`policy::finish`]): security headers, the request id, metrics and
//!    one access-log line (never a token, cookie or query string).
//!
//! The rules of steps 6 to 8 are written once, in [`policy`], over a read-only view of the
//! headers; the planned path ([`planned`]) applies them to the HTTP/1.1 fast path's raw head
//! and to HTTP/2 requests without a body ([`App::handle`]) for the requests it can take, and
//! declines every other request to this pipeline.
//!
//! Files: this one (the pipeline, [`App`]), [`policy`] (the rules), `meta.rs` (client address,
//! host, HTTPS), `verify.rs` (forward-auth), [`planned`] (the fast path's pre-planned forward).

mod meta;
pub mod planned;
pub mod policy;
mod verify;

pub use meta::{canonical_host, request_host};
pub use planned::{ForwardPlan, Planned};
pub use policy::wants_html;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::auth::http::{AuthApi, Denied, Refusal, Unauthenticated, is_safe, strip_credentials};
use crate::body::{self, Body};
use crate::config::{AuthPolicy, Config, OnUnauthenticated};
use crate::error::{HttpError, json_response};
use crate::metrics::{AuthOutcome, Metrics, RouteStats};
use crate::proxy::cors::Cors;
use crate::proxy::route::{Matched, RouteTable};
use crate::proxy::{Forward, Proxy, path};
use meta::raw_host;
use policy::{Access, ForwardingPlan, REQUEST_ID, Served};

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
    pub async fn handle(&self, mut req: Request<Incoming>, conn: Conn) -> Response<Body> {
        let limits = &self.config.limits;
        if req.version() == http::Version::HTTP_2 {
            // hyper counts HTTP/1.1 header lines itself (431 beyond); HTTP/2 has only a size
            // limit.
            if req.headers().len() > limits.max_headers {
                let html = wants_html(req.method(), req.headers());
                return HttpError::HeadersTooLarge.response(html);
            }
            // The planned forward, as for the fast path's HTTP/1.1 requests: only a request
            // that has ended (nothing left unread) and says no Content-Length (its limit is
            // the general path's).
            if self.config.listen.fast_path
                && http_body::Body::is_end_stream(req.body())
                && !req.headers().contains_key(header::CONTENT_LENGTH)
            {
                match self.plan_forward(&req, conn) {
                    Planned::Take(plan) => {
                        return self
                            .forward_planned(plan, &req, crate::body::Buffered::default(), conn)
                            .await;
                    }
                    Planned::Decline(Some(verdict)) => {
                        req.extensions_mut().insert(verdict);
                    }
                    Planned::Decline(None) => {}
                }
            }
        }
        // Boxed: the general path's future is several times the size of the rest, and hyper
        // spawns a task per HTTP/2 stream, which copies the whole future (BENCHMARKS.md).
        if http_body::Body::is_end_stream(req.body()) {
            return Box::pin(self.handle_request(req.map(body::boxed), conn)).await;
        }
        let timeout = limits.body_timeout;
        let req = req.map(|b| body::boxed(body::ClientBody::new(b, timeout)));
        Box::pin(self.handle_request(req, conn)).await
    }

    /// [`App::handle`] for a request whose body is already boxed (the HTTP/1.1 fast path,
    /// [`crate::fast_path`], passes its bodiless requests here).
    pub async fn handle_request(&self, mut req: Request<Body>, conn: Conn) -> Response<Body> {
        let start = Instant::now();
        let method = req.method().clone();
        let request_id = policy::request_id(self.is_trusted(conn.peer.ip()), req.headers());
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
        let route = log
            .route
            .as_ref()
            .map_or(&"-" as &dyn std::fmt::Display, |r| r);
        self.finish(
            &mut resp,
            Served {
                conn,
                method: &method,
                path: &log.path,
                route,
                upstream: log.upstream(),
                user: log.user.as_deref(),
                request_id: &request_id,
                start,
                stats: log.stats.as_deref().unwrap_or(&self.other_stats),
                upstream_time: log.upstream_time,
            },
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
        if self.is_health(raw_path) {
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

        let admission = policy::admission(req.headers());
        // Which of several Authorization headers would the upstream believe? Refuse to guess.
        if admission.several_authorizations {
            return Err(HttpError::BadRequest(
                "Several Authorization headers".into(),
            ));
        }
        // Several Host headers: the upstream might believe another one than routing did.
        if admission.several_hosts {
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
        let cors = self.route_cors(&route);
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
            Err(Denied::Unauthenticated { why, stale_cookies }) => {
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
                return Ok(Gate::Unauthenticated {
                    redirect,
                    next,
                    stale_cookies,
                });
            }
        };
        let claims = &admitted.session.claims;
        log.user = Some(claims.clone());
        let access = policy::access(route, roles, matched.path.owner, claims);
        if access != Access::Granted {
            self.metrics.auth_outcome(AuthOutcome::Forbidden);
            let needed = if access == Access::LacksRole {
                roles
            } else {
                &route.spec.owner_bypass_roles
            };
            let next = req
                .uri()
                .query()
                .map_or_else(|| path.to_owned(), |q| format!("{path}?{q}"));
            return Ok(Gate::Refused {
                error: self.auth.no_access(
                    req.headers(),
                    conn.tls,
                    claims,
                    needed,
                    &next,
                    match access {
                        Access::Unverified => Refusal::Unverified,
                        Access::NeedsMfa => Refusal::SecondFactor,
                        _ => Refusal::NoAccess,
                    },
                ),
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
                stale_cookies,
            } => {
                return Ok(self.auth.login_redirect(&next, stale_cookies, conn.tls));
            }
            Gate::Unauthenticated { .. } => {
                return Err(HttpError::Unauthorized("Not authenticated"));
            }
            Gate::Refused { error, set_cookies } => {
                return Ok(with_set_cookies(error.response(html), set_cookies));
            }
        };
        log.forwarded = true;
        let peer = conn.peer.ip();
        let raw_host = raw_host(&req);
        let plan = ForwardingPlan::new(
            req.headers(),
            peer,
            &|ip| self.is_trusted(ip),
            conn.tls,
            raw_host.as_deref().map(str::as_bytes),
            route.spec.forward_token,
            &self.config.upstream.strip_request_headers,
        );
        plan.apply(req.headers_mut());
        // On public routes too: a signed-in browser sends its session cookies everywhere. (The
        // bearer token is the plan's.)
        strip_credentials(req.headers_mut(), true);
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

    /// Whether `raw_path` is one of the health endpoints.
    fn is_health(&self, raw_path: &str) -> bool {
        raw_path == self.config.health.live || raw_path == self.config.health.ready
    }

    /// Whether a normalised path is served by the gateway itself: forward-auth or the auth API.
    fn is_gateway_api(&self, path: &str) -> bool {
        path == self.verify_path || self.auth.owns(path)
    }

    /// The CORS settings that apply to `route` (`None` when CORS is off or not for it).
    fn route_cors(&self, route: &crate::proxy::route::Route) -> Option<&Cors> {
        self.cors.as_ref().filter(|_| route.spec.cors)
    }

    /// The counters of the route with this index.
    fn route_stats(&self, index: usize) -> &RouteStats {
        self.route_stats.get(index).unwrap_or(&self.other_stats)
    }

    /// The response epilogue ([`policy::finish`]) with this app's HSTS setting.
    fn finish(&self, resp: &mut Response<Body>, served: Served<'_>) {
        policy::finish(resp, self.hsts.as_ref(), served);
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
    /// No valid credentials: redirect a browser to the login page (with `next`, deleting the
    /// session cookies when `stale_cookies`), or 401.
    Unauthenticated {
        redirect: bool,
        next: String,
        stale_cookies: bool,
    },
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
