//! Admission to protected routes: who is calling, and may they?
//!
//! `AuthApi::admit` finds the caller's access token (bearer header first, then the access
//! cookie) and checks it in memory. A browser whose access cookie has expired but whose refresh
//! cookie is still good is refreshed inside the same request (transparent refresh): the request
//! goes on as authenticated and the response carries the new cookies. Parallel requests from the
//! same browser in that moment all succeed, because a refresh token presented again within the
//! grace window yields the same successor.
//!
//! Also here: the CSRF rule for cookie-authenticated unsafe requests, where an unauthenticated
//! browser is sent (`next` is only ever a same-origin path; the cookies of a session found dead
//! are deleted on the way, with the same `Set-Cookie`s as signing out), and which of the
//! gateway's own credentials are removed before a request is forwarded.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request};
use sha2::{Digest, Sha256};

use super::api::AuthApi;
use super::cookies::{self, CSRF_HEADER};
use super::form::{percent_encode, safe_next};
use crate::auth::error::AuthError;
use crate::auth::token::AccessClaims;
use crate::body::Body;
use crate::error::HttpError;
use crate::secret::SecretString;

/// A request that carried a valid access token.
#[derive(Debug, Clone)]
pub struct Session {
    /// Shared with the verified-token cache: admitting a request copies no claims.
    pub claims: Arc<AccessClaims>,
    /// The token came from the access cookie (so unsafe methods need the CSRF token).
    pub via_cookie: bool,
}

/// Why a request is not authenticated; the reason goes to logs and metrics only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthenticated {
    /// No token at all.
    Missing,
    /// A token that failed a check (signature, expiry, type, revocation...).
    Rejected(&'static str),
}

/// A bearer token the direct path refused, carried to the general path in the request's
/// extensions (see `AuthApi::admit`), so that it is not verified twice.
#[derive(Debug, Clone, Copy)]
pub struct TokenVerdict(pub Unauthenticated);

/// A request that may proceed.
#[derive(Debug)]
pub struct Admitted {
    pub session: Session,
    /// `Set-Cookie` values from a transparent refresh, to add to the response.
    pub set_cookies: Vec<HeaderValue>,
    /// The CSRF token was already checked (before a transparent refresh).
    pub csrf_checked: bool,
}

/// Why a request may not proceed.
#[derive(Debug)]
pub enum Denied {
    /// No valid credentials: 401, or a redirect to the login page for browsers.
    /// `stale_cookies`: the request's session cookies are known to be dead, so the redirect
    /// deletes them (see [`AuthApi::admit`] for when that is known).
    Unauthenticated {
        why: Unauthenticated,
        stale_cookies: bool,
    },
    /// Credentials were present but the request is refused outright (e.g. CSRF).
    Refused(HttpError),
}

/// GET, HEAD, OPTIONS and TRACE change nothing, so they need no CSRF token.
pub fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

impl AuthApi {
    /// Authenticates a request to a protected route, refreshing an expired cookie session when
    /// `transparent_refresh` allows.
    ///
    /// A refusal says whether the request's session cookies are dead (`stale_cookies`), which
    /// is known only when this check has seen the refresh cookie: with transparent refresh, no
    /// bearer token (it would have been checked instead of the cookies), and either no refresh
    /// cookie at all (the access or CSRF cookie left over cannot make a session) or a refresh
    /// cookie the store refuses. Not when the store could not be asked, and never without
    /// transparent refresh: the refresh cookie then lives under the auth API, out of sight,
    /// and may well be good (a refused access cookie alone proves nothing: `set-roles` revokes
    /// access tokens whose session goes on).
    pub(crate) async fn admit(&self, req: &Request<Body>, tls: bool) -> Result<Admitted, Denied> {
        let headers = req.headers();
        if self.service().refuses_tokens() {
            // Fail closed: this server may have missed a revocation.
            return Err(Denied::Refused(HttpError::Unavailable(
                "Authentication is temporarily unavailable",
            )));
        }
        // The direct path may have checked this very bearer token already and refused it:
        // verifying it again would double the work of a flood of bad tokens.
        let prior = req
            .extensions()
            .get::<TokenVerdict>()
            .filter(|_| bearer(headers).is_some());
        let checked = match prior {
            Some(v) => Err(v.0),
            None => self.authenticate(headers, tls),
        };
        let first = match checked {
            Ok(session) => {
                return Ok(Admitted {
                    session,
                    set_cookies: Vec::new(),
                    csrf_checked: false,
                });
            }
            Err(why) => why,
        };
        let refused = |stale_cookies| Denied::Unauthenticated {
            why: first,
            stale_cookies,
        };
        // Bearer clients refresh themselves; only cookie sessions are refreshed here.
        if !self.transparent_refresh() || bearer(headers).is_some() {
            return Err(refused(false));
        }
        let names = cookies::names(tls, self.transparent_refresh());
        let Some(refresh) = cookies::get(headers, names.refresh).filter(|r| !r.is_empty()) else {
            let left_over = [names.access, names.refresh, names.csrf]
                .iter()
                .any(|name| cookies::get(headers, name).is_some());
            return Err(refused(left_over));
        };
        let refresh = SecretString::new(refresh.to_owned());
        let family = match self.family_of(&refresh).await {
            Ok(f) => f,
            Err(e) => return Err(refused(matches!(e, HttpError::Unauthorized(_)))),
        };
        let unsafe_method = !is_safe(req.method());
        if unsafe_method {
            self.check_csrf(headers, tls, &family)
                .map_err(Denied::Refused)?;
        }
        match self.service().refresh(&refresh).await {
            Ok(issued) => {
                tracing::debug!(user_id = %issued.claims.sub, "session refreshed in-request");
                let set_cookies = self.session_cookies(&issued, tls);
                Ok(Admitted {
                    session: Session {
                        claims: std::sync::Arc::new(issued.claims),
                        via_cookie: true,
                    },
                    set_cookies,
                    csrf_checked: unsafe_method,
                })
            }
            Err(e) => Err(refused(matches!(e, AuthError::InvalidRefresh))),
        }
    }

    /// Checks the request's access token (bearer first, then the access cookie). Memory only.
    pub(super) fn authenticate(
        &self,
        headers: &HeaderMap,
        tls: bool,
    ) -> Result<Session, Unauthenticated> {
        let (token, via_cookie) = match bearer(headers) {
            Some(t) => (t, false),
            None => {
                let values = headers.get_all(header::COOKIE).iter();
                match self.access_cookie(values.map(HeaderValue::as_bytes), tls) {
                    Some(t) => (t, true),
                    None => return Err(Unauthenticated::Missing),
                }
            }
        };
        match self.service().authenticate(token) {
            Ok(claims) => Ok(Session { claims, via_cookie }),
            Err(AuthError::NotAuthenticated(reason)) => Err(Unauthenticated::Rejected(reason)),
            Err(_) => Err(Unauthenticated::Rejected("invalid")),
        }
    }

    /// The access token a cookie session presents in these `Cookie` values (empty counts as
    /// none). The planned path reads the raw head's values with this too.
    pub(crate) fn access_cookie<'a>(
        &self,
        cookie_values: impl Iterator<Item = &'a [u8]>,
        tls: bool,
    ) -> Option<&'a str> {
        let name = cookies::names(tls, self.transparent_refresh()).access;
        cookies::get_in(cookie_values, name).filter(|t| !t.is_empty())
    }

    /// The CSRF rule for a cookie-authenticated request with an unsafe method: the
    /// `X-CSRF-Token` header must equal the CSRF cookie and be bound to this session, and the
    /// browser must not say the request is cross-site.
    pub(crate) fn check_csrf(
        &self,
        headers: &HeaderMap,
        tls: bool,
        session: &str,
    ) -> Result<(), HttpError> {
        if cross_site(headers) {
            tracing::warn!(target: "audit", event = "csrf_rejected", reason = "cross_site");
            return Err(HttpError::Forbidden("Cross-site request refused"));
        }
        let cookie = cookies::get(
            headers,
            cookies::names(tls, self.transparent_refresh()).csrf,
        );
        let header = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if cookies::csrf_ok(self.csrf(), session, cookie, header) {
            Ok(())
        } else {
            let reason = if header.is_none() {
                "missing"
            } else {
                "invalid"
            };
            tracing::warn!(target: "audit", event = "csrf_rejected", reason);
            Err(HttpError::Forbidden("CSRF token missing or invalid"))
        }
    }
    /// The refresh family a refresh token belongs to (for the CSRF binding).
    pub(super) async fn family_of(&self, token: &SecretString) -> Result<String, HttpError> {
        let hash: [u8; 32] = Sha256::digest(token.expose().as_bytes()).into();
        let store = self.service().store().clone();
        let rec = tokio::task::spawn_blocking(move || store.get_refresh(&hash))
            .await
            .map_err(|e| HttpError::Internal(e.to_string()))?
            .map_err(|e| HttpError::Internal(e.to_string()))?;
        rec.map(|r| r.family)
            .ok_or(HttpError::Unauthorized("Invalid or expired refresh token"))
    }

    /// The `303` that sends an unauthenticated browser to the login page, remembering where it
    /// wanted to go. With `stale_cookies` (from [`Denied::Unauthenticated`]) it also deletes
    /// the session cookies, as signing out does, so the browser stops sending a dead session.
    pub(crate) fn login_redirect(
        &self,
        path_and_query: &str,
        stale_cookies: bool,
        tls: bool,
    ) -> http::Response<Body> {
        let next = safe_next(path_and_query);
        let location = format!("{}/login?next={}", self.prefix(), percent_encode(next));
        let mut resp = http::Response::new(crate::body::empty());
        *resp.status_mut() = http::StatusCode::SEE_OTHER;
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if stale_cookies {
            self.clear_cookies(resp.headers_mut(), tls);
        }
        resp
    }
}

/// `Authorization: Bearer <token>` (scheme case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    bearer_value(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

/// The token in an `Authorization` value `Bearer <token>` (scheme case-insensitive).
pub fn bearer_value(v: &str) -> Option<&str> {
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Fetch Metadata says the request came from another site.
fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
}

pub(super) fn refuse_cross_site(headers: &HeaderMap) -> Result<(), HttpError> {
    if cross_site(headers) {
        Err(HttpError::Forbidden("Cross-site request refused"))
    } else {
        Ok(())
    }
}

/// Removes the gateway's own credentials before forwarding: its cookies always (the refresh
/// cookie has `Path=/` with transparent refresh, so it comes along on every route), the bearer
/// token unless `keep_bearer` (a route's `forward_token`). Other cookies and headers pass
/// untouched.
pub fn strip_credentials(headers: &mut HeaderMap, keep_bearer: bool) {
    let is_bearer = |v: &HeaderValue| {
        v.as_bytes()
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"bearer "))
    };
    if !keep_bearer && headers.get_all(header::AUTHORIZATION).iter().any(is_bearer) {
        let others: Vec<HeaderValue> = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter(|v| !is_bearer(v))
            .cloned()
            .collect();
        headers.remove(header::AUTHORIZATION);
        for v in others {
            headers.append(header::AUTHORIZATION, v);
        }
    }
    if !headers.contains_key(header::COOKIE) {
        return;
    }
    let kept = cookies::forwarded(
        headers
            .get_all(header::COOKIE)
            .iter()
            .map(HeaderValue::as_bytes),
    );
    headers.remove(header::COOKIE);
    if let Some(v) = kept.and_then(|k| HeaderValue::from_str(&k).ok()) {
        headers.insert(header::COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }
}
