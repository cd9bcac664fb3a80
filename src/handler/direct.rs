//! The fast path for the commonest proxied request: a bodiless GET or HEAD over HTTP/1.1 to a
//! plain-HTTP upstream, on a public route or with a bearer token.
//!
//! [`App::direct`] decides from the raw head ([`RawHead`]) and has no side effects; when it
//! says yes, [`App::forward_direct`] writes the upstream request head straight from the
//! client's header bytes plus the gateway's additions, with no `http::Request` and no header
//! map in between (they cost more than everything else the gateway does per request; see
//! BENCHMARKS.md). The rules are the general path's (see the `handler` module docs), applied
//! to bytes:
//!
//! - dropped from what the client sent: hop-by-hop headers (and those `Connection` names),
//!   identity headers in any spelling, `_` spellings of the forwarding headers, and the bearer
//!   token unless the route has `forward_token`;
//! - any `X-Real-IP` (the gateway sets its own);
//! - from a peer that is not a trusted proxy, also `X-Forwarded-For/-Proto/-Host`, `Forwarded`,
//!   `X-Request-Id` and the headers of `upstream.strip_request_headers`; from a trusted proxy these are believed: its `X-Forwarded-For` values
//!   become the start of the chain, its `-Proto`, `-Host` and `Forwarded` pass, and a sane
//!   request id of its own is kept;
//! - added: the request id, the identity headers of the token's claims (required routes),
//!   `X-Forwarded-For` (the chain ending with the peer), `X-Real-IP` (the client address the
//!   general path decides too, [`crate::proxy::headers::client_ip`]), and `-Proto` and `-Host`
//!   unless a trusted proxy sent them;
//! - to the answer on a required route: the caching headers of [`crate::proxy::cache`], as on
//!   the general path.
//!
//! Everything else goes the general way, decided before anything happens: other methods, any
//! `Cookie` (gateway cookies must be stripped, and cookie sessions may refresh), CORS routes, identity assertions, the health
//! endpoints, the auth API and forward-auth, HTTPS redirects, `Connection` naming other
//! headers, and every refusal: a request that would get a 400, 401, 403 or 404 is answered by
//! the general path, so those answers have one implementation.

use std::sync::Arc;
use std::time::Instant;

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Method, Response, header};

use super::{App, Conn, REQUEST_ID, canonical_host};
use crate::auth::http::TokenVerdict;
use crate::auth::token::AccessClaims;
use crate::body::Body;
use crate::config::{AuthPolicy, UpstreamTarget};
use crate::http1::connection::{self, Token};
use crate::http1::{RawHead, write};
use crate::metrics::AuthOutcome;
use crate::proxy::headers::{is_gateway_set, is_listed};
use crate::proxy::path;
use crate::proxy::route::Route;

/// What [`App::direct`] decided.
pub enum Direct {
    /// The direct path serves the request.
    Take(DirectPlan),
    /// The general path serves it; with the bearer token's verdict when the direct path has
    /// already checked it and found it wanting, so that it is not verified twice.
    Decline(Option<TokenVerdict>),
}

/// What [`App::direct`] decided for a request it takes.
pub struct DirectPlan {
    route: Arc<Route>,
    authority: Authority,
    /// The request target for the upstream: its base path, the path after `strip_prefix`,
    /// the query.
    target: String,
    /// The token's claims, on a required route.
    claims: Option<Arc<AccessClaims>>,
    /// The normalised path (for the access log).
    path: String,
    /// Error answers are HTML pages for a browser navigation.
    html: bool,
    /// The bearer token stays (the route's `forward_token`).
    keep_bearer: bool,
    /// `Connection: close` was sent: a header named `close` is hop-by-hop too.
    close_listed: bool,
    /// The peer is a trusted proxy: its forwarding headers are believed.
    trusted: bool,
}

/// What one pass over the client's headers found.
#[derive(Default)]
struct Seen<'a> {
    host: Option<&'a [u8]>,
    hosts: usize,
    authorization: Option<&'a [u8]>,
    authorizations: usize,
    close_listed: bool,
    /// For [`super::wants_html`]: any Accept mentions text/html; the first Sec-Fetch-Mode and
    /// X-Requested-With values.
    accepts_html: bool,
    fetch_mode: Option<&'a [u8]>,
    requested_with: Option<&'a [u8]>,
}

/// `Bearer <token>` (scheme case-insensitive), as [`crate::auth::http::bearer`] reads it.
fn bearer(value: &[u8]) -> Option<&str> {
    // `HeaderValue::to_str` accepts visible ASCII and tabs only; httparse has already refused
    // every other control byte, so what is left to refuse is anything beyond ASCII.
    if !value.is_ascii() {
        return None;
    }
    let v = std::str::from_utf8(value).ok()?;
    crate::auth::http::bearer_value(v)
}

impl App {
    /// Whether the fast path serves this request, and how.
    pub fn direct(&self, head: &RawHead, conn: Conn) -> Direct {
        let mut verdict = None;
        match self.plan(head, conn, &mut verdict) {
            Some(plan) => Direct::Take(plan),
            None => Direct::Decline(verdict),
        }
    }

    /// [`App::direct`]'s decision; `None` sends the request the general way (with `verdict`
    /// set when a bearer token was checked and refused).
    fn plan(
        &self,
        head: &RawHead,
        conn: Conn,
        verdict: &mut Option<TokenVerdict>,
    ) -> Option<DirectPlan> {
        if !matches!(head.method, Method::GET | Method::HEAD)
            || (!conn.tls && self.config.listen.redirect_http_to_https)
        {
            return None;
        }
        let mut seen = Seen::default();
        for (name, value) in head.headers() {
            let is = |want: &[u8]| name.eq_ignore_ascii_case(want);
            if is(b"host") {
                seen.hosts += 1;
                seen.host = Some(value);
            } else if is(b"authorization") {
                seen.authorizations += 1;
                seen.authorization = Some(value);
            } else if is(b"cookie") {
                return None;
            } else if is(b"connection") {
                for token in connection::connection_tokens(value) {
                    match token {
                        Token::Close => seen.close_listed = true,
                        Token::KeepAlive => {}
                        Token::Upgrade | Token::Names(_) => return None,
                    }
                }
            } else if is(b"accept") {
                // As `wants_html` reads it: only values `HeaderValue::to_str` accepts.
                seen.accepts_html |=
                    value.is_ascii() && value.windows(9).any(|w| w == b"text/html");
            } else if is(b"sec-fetch-mode") {
                seen.fetch_mode.get_or_insert(value);
            } else if is(b"x-requested-with") {
                seen.requested_with.get_or_insert(value);
            }
        }
        if seen.hosts != 1 || seen.authorizations > 1 {
            return None;
        }
        let raw_path = head.target.path();
        if raw_path == self.config.health.live || raw_path == self.config.health.ready {
            return None;
        }
        let host = canonical_host(std::str::from_utf8(seen.host?).ok()?)?;
        let path = path::normalize(raw_path).ok()?;
        if path == self.verify_path || self.auth.owns(&path) {
            return None;
        }
        let matched = self.routes.find(Some(&host), &head.method, &path)?;
        let route = &matched.route;
        if route.spec.cors && self.cors.is_some() {
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
        let token = seen.authorization.and_then(bearer);
        let claims = match &route.spec.policy {
            AuthPolicy::Public => None,
            AuthPolicy::Required { roles } => {
                if self.auth.has_assertion() {
                    return None;
                }
                let claims = match self.auth.service().authenticate(token?) {
                    Ok(claims) => claims,
                    Err(e) => {
                        // Only a plain refusal is passed on: anything else (the store being
                        // out of date) the general path finds out for itself.
                        if let crate::auth::AuthError::NotAuthenticated(reason) = e {
                            *verdict = Some(TokenVerdict(
                                crate::auth::http::Unauthenticated::Rejected(reason),
                            ));
                        }
                        return None;
                    }
                };
                let has_any = |wanted: &[String]| wanted.iter().any(|r| claims.roles.contains(r));
                let not_owner = matched.path.owner.is_some_and(|owner| {
                    !route.owned_by(owner, &claims.sub) && !has_any(&route.spec.owner_bypass_roles)
                });
                if (!roles.is_empty() && !has_any(roles)) || not_owner {
                    return None;
                }
                Some(claims)
            }
        };
        let upstream_path = route.upstream_path(&path, &matched.path);
        let query = head.target.query();
        let mut target = String::with_capacity(
            base_path.len() + upstream_path.len() + query.map_or(0, |q| q.len() + 1),
        );
        target.push_str(base_path);
        target.push_str(upstream_path);
        if let Some(q) = query {
            target.push('?');
            target.push_str(q);
        }
        let html = !seen
            .requested_with
            .is_some_and(|v| v.eq_ignore_ascii_case(b"XMLHttpRequest"))
            && seen.fetch_mode.is_none_or(|m| m == b"navigate")
            && seen.accepts_html;
        Some(DirectPlan {
            keep_bearer: route.spec.forward_token,
            route: route.clone(),
            authority: authority.clone(),
            target,
            claims,
            path,
            html,
            close_listed: seen.close_listed,
            trusted: self.is_trusted(conn.peer.ip()),
        })
    }

    /// Forwards a request [`App::direct`] took and returns the upstream's answer (or the error
    /// answer), with the same response headers, metrics and access-log line as the general
    /// path.
    pub async fn forward_direct(
        &self,
        plan: DirectPlan,
        head: &RawHead,
        conn: Conn,
    ) -> Response<Body> {
        let start = Instant::now();
        if plan.claims.is_some() {
            self.metrics.auth_outcome(AuthOutcome::Ok);
        }
        let mut out = Vec::with_capacity(768);
        write::request_line(&mut out, &head.method, plan.target.as_bytes());
        let mut host = None;
        // What a trusted proxy said: the chain so far, and whether it named proto and host.
        let mut chain: Vec<&[u8]> = Vec::new();
        let (mut told_proto, mut told_host) = (false, false);
        let mut proxy_id = None;
        for (name, value) in head.headers() {
            let is = |want: &[u8]| name.eq_ignore_ascii_case(want);
            if is(b"host") {
                host = Some(value);
            } else if plan.trusted && is(b"x-forwarded-for") {
                // As the general path reads it: values `HeaderValue::to_str` accepts.
                if value.is_ascii() {
                    chain.push(value);
                }
                continue;
            } else if plan.trusted && is(b"x-request-id") {
                proxy_id.get_or_insert(value);
                continue;
            } else if plan.trusted && is(b"x-forwarded-proto") {
                told_proto = true;
            } else if plan.trusted && is(b"x-forwarded-host") {
                told_host = true;
            } else if plan.trusted && is(b"forwarded") {
                // Passes, as on the general path.
            } else if self.drops(name, value, &plan) {
                continue;
            }
            write::header_line(&mut out, name, value);
        }
        let request_id = proxy_id
            .filter(|v| super::sane_request_id(v))
            .and_then(|v| HeaderValue::from_bytes(v).ok())
            .unwrap_or_else(crate::metrics::request_id);
        write::header_line(
            &mut out,
            REQUEST_ID.as_str().as_bytes(),
            request_id.as_bytes(),
        );
        if let Some(claims) = &plan.claims {
            self.auth.identity_lines(claims, &mut out);
        }
        let peer = crate::proxy::headers::peer_value(conn.peer.ip());
        out.extend_from_slice(b"x-forwarded-for: ");
        for hop in &chain {
            out.extend_from_slice(hop);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(peer.as_bytes());
        out.extend_from_slice(b"\r\n");
        let client = crate::proxy::headers::client_ip(
            conn.peer.ip(),
            |ip| self.is_trusted(ip),
            chain.iter().copied(),
        );
        write::header_line(
            &mut out,
            crate::proxy::headers::REAL_IP.as_str().as_bytes(),
            crate::proxy::headers::peer_value(client).as_bytes(),
        );
        if !told_proto {
            let proto: &[u8] = if conn.tls { b"https" } else { b"http" };
            write::header_line(&mut out, b"x-forwarded-proto", proto);
        }
        if let (false, Some(host)) = (told_host, host) {
            write::header_line(&mut out, b"x-forwarded-host", host);
        }
        out.extend_from_slice(b"\r\n");

        let route = &plan.route;
        let sent = Instant::now();
        let answer = self
            .proxy
            .send_head(&plan.authority, &out, &head.method, route)
            .await;
        let upstream_time = sent.elapsed();
        let mut resp = answer.unwrap_or_else(|e| e.response(plan.html));
        if plan.claims.is_some() {
            // Only bearer tokens come this way (any Cookie goes the general way).
            let status = resp.status();
            crate::proxy::cache::protect(status, resp.headers_mut(), route.spec.cache, false);
        }
        if conn.tls
            && let Some(v) = &self.hsts
        {
            resp.headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, v.clone());
        }
        resp.headers_mut().insert(REQUEST_ID, request_id.clone());
        let status = resp.status().as_u16();
        self.route_stats
            .get(route.index)
            .unwrap_or(&self.other_stats)
            .record(status, Some(upstream_time));
        tracing::info!(
            target: "access",
            peer = %conn.peer.ip(),
            method = %head.method,
            path = %plan.path,
            status,
            latency_us = start.elapsed().as_micros() as u64,
            route = %route.spec.name,
            upstream = %route.spec.upstream,
            user = plan.claims.as_deref().map_or("-", |c| c.sub.as_str()),
            request_id = request_id.to_str().unwrap_or("-"),
        );
        resp
    }

    /// Whether a client header stays behind (see the module docs).
    fn drops(&self, name: &[u8], value: &[u8], plan: &DirectPlan) -> bool {
        let is = |want: &[u8]| name.eq_ignore_ascii_case(want);
        connection::is_hop_by_hop(name)
            || (plan.close_listed && is(b"close"))
            || is_gateway_set(name)
            || (!plan.trusted && is_listed(name, &self.config.upstream.strip_request_headers))
            || (is(b"authorization") && !plan.keep_bearer && bearer_like(value))
            || self.auth.is_identity_name(name)
    }
}

/// Whether an Authorization value is a bearer credential ([`crate::auth::http::strip_credentials`]
/// removes exactly these).
fn bearer_like(value: &[u8]) -> bool {
    value
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"bearer "))
}
