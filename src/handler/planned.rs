//! The planned path: a pre-planned forward for the commonest proxied requests, to a plain-HTTP
//! upstream: a GET or HEAD on a public route, with a bearer token or with a browser's access
//! cookie; a POST, PUT, PATCH or DELETE (with the small body the fast path has read whole, or
//! none) on a public route or with a bearer token. It serves the HTTP/1.1 fast path's requests
//! and HTTP/2 requests that have ended with their head (no body, no Content-Length;
//! [`App::handle`]), both when `listen.fast_path` is on.
//!
//! [`App::plan_forward`] decides from the request head ([`PlanHead`]: the fast path's raw head
//! [`RawHead`], or hyper's HTTP/2 request) and has no side effects; when it takes the request,
//! [`App::forward_planned`] writes the upstream request head straight from the client's header
//! lines plus the gateway's additions, with no header map built or rewritten on the way (they
//! cost more than everything else the gateway does per request; see BENCHMARKS.md). The host
//! is the Host header, else HTTP/2's `:authority` ([`named_host`], the general path's rule);
//! an HTTP/2 request without a Host header gets the `host` line the general path adds from its
//! authority. The rules are the general path's, from [`super::policy`], over the same
//! [`HeaderView`]: [`policy::admission`] and [`policy::access`] decide, and the
//! [`ForwardingPlan`] says which client headers stay behind and what the gateway sets, which
//! this module writes out as bytes. Here only what is particular to bytes:
//!
//! - hop-by-hop headers (and `close` when `Connection: close` names it) are dropped; a
//!   `Connection` naming any other header sends the request the general way;
//! - identity headers in any spelling are dropped, and the token's claims are written as the
//!   identity headers ([`crate::auth::http::AuthApi::identity_lines`]) on required routes;
//! - the `Cookie` lines become the one line [`cookies::forwarded`] makes of them (the
//!   gateway's own cookies removed), as `strip_credentials` does on the general path;
//! - to the answer on a required route: the caching headers of [`crate::proxy::cache`] (with
//!   `Vary: Cookie` when the access cookie decided), as on the general path; then the same
//!   epilogue ([`policy::finish`]).
//!
//! A cookie session is taken only while its access cookie is valid and only for GET and HEAD,
//! which need no CSRF token: an expired or refused cookie goes the general way, which refreshes
//! it (transparent refresh) or deletes dead cookies, and so does an unsafe method with a
//! cookie session (the CSRF check), so those rules have one implementation.
//!
//! Everything else goes the general way, decided before anything happens: other methods, CORS
//! routes,
//! identity assertions, the health endpoints, the auth API and forward-auth, HTTPS redirects,
//! `Connection` naming other headers, and every refusal: a request that would get a 400, 401,
//! 403 or 404 is answered by the general path, so those answers have one implementation.

use std::sync::Arc;
use std::time::Instant;

use http::uri::{Authority, Scheme};
use http::{HeaderMap, Method, Request, Response};

use super::meta::{canonical_host, named_host};
use super::policy::{self, Access, ForwardingPlan, HeaderView, REQUEST_ID, Served};
use super::{App, Conn};
use crate::auth::http::{TokenVerdict, cookies};
use crate::auth::token::AccessClaims;
use crate::body::{Body, Buffered};
use crate::config::{AuthPolicy, UpstreamTarget};
use crate::http1::connection::{self, Token};
use crate::http1::{RawHead, write};
use crate::metrics::AuthOutcome;
use crate::proxy::headers::{REAL_IP, peer_value};
use crate::proxy::path;
use crate::proxy::route::Route;

/// What [`App::plan_forward`] decided.
pub enum Planned {
    /// The planned path serves the request.
    Take(ForwardPlan),
    /// The general path serves it; with the bearer token's verdict when the planned path has
    /// already checked it and found it wanting, so that it is not verified twice.
    Decline(Option<TokenVerdict>),
}

/// What [`App::plan_forward`] decided for a request it takes.
pub struct ForwardPlan {
    route: Arc<Route>,
    authority: Authority,
    /// The request target for the upstream: its base path, the path after `strip_prefix`,
    /// the query.
    target: String,
    /// The token's claims, on a required route.
    claims: Option<Arc<AccessClaims>>,
    /// The normalised path (for the access log).
    path: String,
    /// `Connection: close` was sent: a header named `close` is hop-by-hop too.
    close_listed: bool,
    /// The request came over HTTPS: to this listener, or to a trusted proxy that says so (as
    /// the general path decides it: cookie names, forwarding headers).
    tls: bool,
    /// The request carries a `Cookie` header (rewritten on the way).
    cookie: bool,
    /// The access cookie (not a bearer token) authenticated the request.
    via_cookie: bool,
}

/// The request head the planned path reads: the HTTP/1.1 fast path's raw head ([`RawHead`]),
/// or hyper's request (HTTP/2, from [`App::handle`]). Both are planned by the same decisions
/// from the same view of their headers ([`HeaderView`]).
pub trait PlanHead {
    /// The headers, as the policy's rules read them.
    type Headers: HeaderView + ?Sized;
    fn method(&self) -> &Method;
    /// The request target's path, as sent.
    fn path(&self) -> &str;
    fn query(&self) -> Option<&str>;
    fn header_view(&self) -> &Self::Headers;
    /// The URI's authority: HTTP/2's `:authority`, which names the host when no Host header
    /// does ([`named_host`]). The fast path takes origin-form targets only: none there.
    fn authority(&self) -> Option<&str>;
}

impl PlanHead for RawHead {
    type Headers = RawHead;
    fn method(&self) -> &Method {
        &self.method
    }
    fn path(&self) -> &str {
        self.target.path()
    }
    fn query(&self) -> Option<&str> {
        self.target.query()
    }
    fn header_view(&self) -> &RawHead {
        self
    }
    fn authority(&self) -> Option<&str> {
        None
    }
}

impl<B> PlanHead for Request<B> {
    type Headers = HeaderMap;
    fn method(&self) -> &Method {
        Request::method(self)
    }
    fn path(&self) -> &str {
        self.uri().path()
    }
    fn query(&self) -> Option<&str> {
        self.uri().query()
    }
    fn header_view(&self) -> &HeaderMap {
        self.headers()
    }
    fn authority(&self) -> Option<&str> {
        self.uri().authority().map(|a| a.as_str())
    }
}

/// Whether a header is hop-by-hop by name (with `close` when `Connection: close` named it).
fn hop_by_hop(name: &[u8], close_listed: bool) -> bool {
    connection::is_hop_by_hop(name) || (close_listed && name.eq_ignore_ascii_case(b"close"))
}

impl App {
    /// Whether the planned forward serves this request (the fast path's, or an HTTP/2 one),
    /// and how.
    pub fn plan_forward(&self, head: &impl PlanHead, conn: Conn) -> Planned {
        let mut verdict = None;
        match self.plan(head, conn, &mut verdict) {
            Some(plan) => Planned::Take(plan),
            None => Planned::Decline(verdict),
        }
    }

    /// [`App::plan_forward`]'s decision; `None` sends the request the general way (with
    /// `verdict` set when a bearer token was checked and refused).
    fn plan(
        &self,
        head: &impl PlanHead,
        conn: Conn,
        verdict: &mut Option<TokenVerdict>,
    ) -> Option<ForwardPlan> {
        let method = head.method();
        let headers = head.header_view();
        let safe = matches!(*method, Method::GET | Method::HEAD);
        let planned = matches!(
            *method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        );
        if !(safe || planned) || (!conn.tls && self.config.listen.redirect_http_to_https) {
            return None;
        }
        let admission = policy::admission(headers);
        if admission.several_hosts || admission.several_authorizations {
            return None;
        }
        let mut close_listed = false;
        for value in headers.get_all("connection") {
            for token in connection::connection_tokens(value) {
                match token {
                    Token::Close => close_listed = true,
                    Token::KeepAlive => {}
                    Token::Upgrade | Token::Names(_) => return None,
                }
            }
        }
        let raw_path = head.path();
        if self.is_health(raw_path) {
            return None;
        }
        let host = canonical_host(policy::text(named_host(admission.host, head.authority())?)?)?;
        let path = path::normalize(raw_path).ok()?;
        if self.is_gateway_api(&path) {
            return None;
        }
        let matched = self.routes.find(Some(&host), method, &path)?;
        let route = &matched.route;
        if self.route_cors(route).is_some() {
            return None;
        }
        let UpstreamTarget::Http {
            scheme,
            authority,
            base_path,
        } = &route.spec.upstream
        else {
            return None;
        };
        if *scheme != Scheme::HTTP {
            return None;
        }
        // Behind a trusted TLS-terminating proxy, the TLS cookie names, as on the general path.
        let tls = conn.tls || self.forwarded_https(conn.peer.ip(), headers);
        let mut via_cookie = false;
        let claims = match &route.spec.policy {
            AuthPolicy::Public => None,
            AuthPolicy::Required { roles } => {
                if self.auth.has_assertion() {
                    return None;
                }
                // The bearer token first, then the access cookie, as `AuthApi::authenticate`.
                let token = match admission.bearer() {
                    Some(token) => token,
                    // Unsafe methods need the CSRF check of the general path.
                    None if admission.cookie && safe => {
                        via_cookie = true;
                        self.auth.access_cookie(headers.get_all("cookie"), tls)?
                    }
                    None => return None,
                };
                let claims = match self.auth.service().authenticate(token) {
                    Ok(claims) => claims,
                    Err(e) => {
                        // Only a bearer token's plain refusal is passed on: anything else (the
                        // store being out of date) the general path finds out for itself, and
                        // a refused access cookie may be refreshed there.
                        if let crate::auth::AuthError::NotAuthenticated(reason) = e
                            && !via_cookie
                        {
                            *verdict = Some(TokenVerdict(
                                crate::auth::http::Unauthenticated::Rejected(reason),
                            ));
                        }
                        return None;
                    }
                };
                if policy::access(route, roles, matched.path.owner, &claims) != Access::Granted {
                    return None;
                }
                Some(claims)
            }
        };
        let upstream_path = route.upstream_path(&path, &matched.path);
        let query = head.query();
        let mut target = String::with_capacity(
            base_path.len() + upstream_path.len() + query.map_or(0, |q| q.len() + 1),
        );
        target.push_str(base_path);
        target.push_str(upstream_path);
        if let Some(q) = query {
            target.push('?');
            target.push_str(q);
        }
        Some(ForwardPlan {
            route: route.clone(),
            authority: authority.clone(),
            target,
            claims,
            path,
            close_listed,
            tls,
            cookie: admission.cookie,
            via_cookie,
        })
    }

    /// Forwards a request [`App::plan_forward`] took and returns the upstream's answer (or the
    /// error answer), with the same response headers, metrics and access-log line as the
    /// general path.
    /// `body` is the request's whole body (empty for none), read by the fast path.
    pub async fn forward_planned(
        &self,
        plan: ForwardPlan,
        head: &impl PlanHead,
        body: Buffered,
        conn: Conn,
    ) -> Response<Body> {
        let start = Instant::now();
        if plan.claims.is_some() {
            self.metrics.auth_outcome(AuthOutcome::Ok);
        }
        let route = &plan.route;
        let (method, headers) = (head.method(), head.header_view());
        let peer = conn.peer.ip();
        let trusted = |ip| self.is_trusted(ip);
        let host_header = headers.first("host");
        let forwarding = ForwardingPlan::new(
            headers,
            peer,
            &trusted,
            plan.tls,
            named_host(host_header, head.authority()),
            route.spec.forward_token,
            &self.config.upstream.strip_request_headers,
        );
        let request_id = policy::request_id(forwarding.trusted, headers);

        let mut out = Vec::with_capacity(768);
        write::request_line(&mut out, method, plan.target.as_bytes());
        // HTTP/2 names the host in `:authority` only; the upstream speaks HTTP/1.1 and needs
        // Host, which the general path adds the same way (`Proxy::forward`).
        if host_header.is_none()
            && let Some(authority) = head.authority()
        {
            write::header_line(&mut out, b"host", authority.as_bytes());
        }
        for (name, value) in headers.each() {
            if hop_by_hop(name, plan.close_listed)
                || self.auth.is_identity_name(name)
                || forwarding.drops(name, value)
                || (plan.cookie && name.eq_ignore_ascii_case(b"cookie"))
            {
                continue;
            }
            write::header_line(&mut out, name, value);
        }
        if plan.cookie
            && let Some(kept) = cookies::forwarded(headers.get_all("cookie"))
        {
            write::header_line(&mut out, b"cookie", kept.as_bytes());
        }
        write::header_line(
            &mut out,
            REQUEST_ID.as_str().as_bytes(),
            request_id.as_bytes(),
        );
        if let Some(claims) = &plan.claims {
            self.auth.identity_lines(claims, &mut out);
        }
        let peer_hop = peer_value(peer);
        write::list_line(
            &mut out,
            b"x-forwarded-for",
            forwarding
                .chain(headers)
                .chain(std::iter::once(peer_hop.as_bytes())),
        );
        write::header_line(
            &mut out,
            REAL_IP.as_str().as_bytes(),
            peer_value(forwarding.client).as_bytes(),
        );
        if let Some(proto) = forwarding.set_proto() {
            write::header_line(&mut out, b"x-forwarded-proto", proto.as_bytes());
        }
        if let Some(host) = forwarding.set_host() {
            write::header_line(&mut out, b"x-forwarded-host", host);
        }
        write::end_head(&mut out);

        let sent = Instant::now();
        let answer = if body.is_empty() {
            self.proxy
                .send_head(&plan.authority, &out, method, route)
                .await
        } else {
            let len = body.len();
            self.proxy
                .send_head_and_body(&plan.authority, out, body.into_body(), len, route)
                .await
        };
        let upstream_time = sent.elapsed();
        let mut resp = answer.unwrap_or_else(|e| e.response(policy::wants_html(method, headers)));
        if plan.claims.is_some() {
            let status = resp.status();
            crate::proxy::cache::protect(
                status,
                resp.headers_mut(),
                route.spec.cache,
                plan.via_cookie,
            );
        }
        self.finish(
            &mut resp,
            Served {
                conn,
                method,
                path: &plan.path,
                route: &route.spec.name,
                upstream: &route.spec.upstream,
                user: plan.claims.as_deref(),
                request_id: &request_id,
                start,
                stats: self.route_stats(route.index),
                upstream_time: Some(upstream_time),
            },
        );
        resp
    }
}
