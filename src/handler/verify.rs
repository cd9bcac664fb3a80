//! Forward-auth: the gateway deciding for another proxy (nginx `auth_request`, Traefik
//! `forwardAuth`, Caddy `forward_auth`) with the same route table and gate as its own
//! pipeline, answering with headers instead of forwarding.

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};

use super::meta::canonical_host;
use super::policy::wants_html;
use super::{AccessLog, App, Conn, Gate, RouteLabel, with_set_cookies};
use crate::auth::http::strip_credentials;
use crate::body::{self, Body};
use crate::error::HttpError;
use crate::proxy::path;

/// In a `/verify` answer that allows the request: the `Cookie` header the app should get (the
/// request's cookies minus the gateway's own; empty when none are left).
const UPSTREAM_COOKIE: &str = "x-upstream-cookie";
/// In a `/verify` 401 to nginx for a browser: where to send it to sign in (`next` encoded).
const LOGIN_LOCATION: &str = "x-login-location";

impl App {
    /// Forward-auth (`GET {prefix}/verify`) for nginx `auth_request`, Traefik `forwardAuth` and
    /// Caddy `forward_auth`: the original request is described by headers (`X-Original-URI` and
    /// `X-Original-Method` from nginx; `X-Forwarded-Uri`, `-Method`, `-Host`, `-Proto` from
    /// Traefik and Caddy), believed only from `trusted_proxies`. The same route table and policy
    /// decide: 200 with the identity headers (empty on a public route), the cookies the app may
    /// see (`X-Upstream-Cookie`) and any refreshed session cookies; 401 (nginx turns it into a
    /// login redirect with `error_page`, to `X-Login-Location` for browsers); a 302 to the login
    /// page for browser navigations via Traefik/Caddy (they pass the answer to the client), or a
    /// 307 back to the URL when they would drop refreshed cookies; or 403.
    pub(super) async fn verify(
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
            Gate::Unauthenticated {
                redirect,
                next,
                stale_cookies,
            } => {
                if redirect && nginx {
                    // nginx cannot follow a redirect from auth_request; it sends the browser to
                    // this location itself, with `next` already encoded.
                    // auth_request keeps the answer's other headers (cookies too) from the
                    // browser.
                    let login = self.auth.login_redirect(&next, false, conn.tls);
                    let mut resp = HttpError::Unauthorized("Not authenticated").response(false);
                    if let Some(loc) = login.headers().get(header::LOCATION) {
                        resp.headers_mut().insert(LOGIN_LOCATION, loc.clone());
                    }
                    return Ok(resp);
                }
                if redirect && !nginx {
                    let mut resp = self.auth.login_redirect(&next, stale_cookies, conn.tls);
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
}
