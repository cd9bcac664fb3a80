//! The auth API the gateway serves itself, shaped for the seed Next.js frontend.
//!
//! Under `auth.prefix` (default `/api/auth`):
//! - `POST /signup` `{email, password, name?}` -> 201 `{access_token, refresh_token, token_type,
//!   expires_in, user}`
//! - `POST /login` `{email, password}` -> 200, same shape
//! - `POST /refresh` `{refresh_token}` or the refresh cookie -> 200, same shape, rotated
//! - `POST /logout` -> 204, `POST /logout-all` -> 204
//! - `GET /me` -> the user
//! - `GET /client.js`, `GET /client.d.ts` -> the browser client module and its types (see
//!   [`super::client`])
//!
//! plus `GET /.well-known/jwks.json`. Errors are `{"detail": "..."}`. Every answer that carries a
//! token also sets the session cookies (see [`super::cookies`]); requests authenticated by cookie
//! with an unsafe method must carry the CSRF token, bearer requests are exempt.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use super::cookies::{self, CSRF_HEADER, Csrf, SetCookie};
use super::email::normalize_email;
use super::error::AuthError;
use super::service::{AuthService, Issued};
use super::token::AccessClaims;
use crate::body::{self, Body};
use crate::config::{AssertionSettings, Config, IdentityHeaders};
use crate::error::{HttpError, json_response};
use crate::ratelimit::{Action, IpKey, Limits};
use crate::secret::SecretString;
use crate::store::RefreshState;
use std::time::Instant;

/// Where the public keys are published.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Every `(method, path)` [`AuthApi::handle`] serves: paths starting with `/.well-known/` are
/// absolute, the others are relative to `auth.prefix`. Any other method on one of these paths is
/// 405 (with `Allow` listing exactly this table's methods for the path), any other path under the
/// prefix 404. Kept in step with the `match` in `handle` by a unit test here, and with
/// `docs/openapi.yaml` by the `openapi` integration test.
pub const ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/signup"),
    ("HEAD", "/signup"),
    ("POST", "/signup"),
    ("GET", "/login"),
    ("HEAD", "/login"),
    ("POST", "/login"),
    ("POST", "/refresh"),
    ("GET", "/logout"),
    ("HEAD", "/logout"),
    ("POST", "/logout"),
    ("POST", "/logout-all"),
    ("GET", "/me"),
    ("HEAD", "/me"),
    ("GET", "/client.js"),
    ("HEAD", "/client.js"),
    ("GET", "/client.d.ts"),
    ("HEAD", "/client.d.ts"),
    ("GET", JWKS_PATH),
    ("HEAD", JWKS_PATH),
];

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

/// How long a refusal for saturated password hashing (503) is held before it is sent.
const BUSY_PACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Holds a "hashing is saturated" answer back for [`BUSY_PACE`]. A flood of logins beyond the
/// hashing capacity would otherwise get instant 503s and loop on them at the speed of the
/// network, taking the CPU from proxied traffic; held, each flooding connection costs one cheap
/// request a second. A real user gets the same 503, a second later.
pub(super) async fn pace<T>(result: &Result<T, AuthError>) {
    if matches!(result, Err(AuthError::Busy)) {
        tokio::time::sleep(BUSY_PACE).await;
    }
}

/// The auth endpoints and the token check shared with the proxy.
pub struct AuthApi {
    service: AuthService,
    pub(super) csrf: Csrf,
    prefix: String,
    tokens_in_body: bool,
    transparent_refresh: bool,
    /// The 403 page names the roles a route needs (`auth.show_required_roles`).
    pub(super) show_required_roles: bool,
    pub(super) body_limit: usize,
    pub(super) identity: IdentityHeaders,
    /// Every identity header name the gateway sets (stripped from client requests), built once.
    pub(super) identity_names: Vec<http::HeaderName>,
    pub(super) assertion: Option<AssertionSettings>,
    limits: std::sync::Arc<Limits>,
    pub(super) metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl AuthApi {
    /// Wraps the service. `csrf_key` signs CSRF tokens (at least 32 bytes).
    pub fn new(
        service: AuthService,
        csrf_key: Vec<u8>,
        config: &Config,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> Self {
        AuthApi {
            csrf: Csrf::new(csrf_key),
            prefix: config.auth.prefix.clone(),
            tokens_in_body: config.auth.tokens_in_body,
            transparent_refresh: config.auth.transparent_refresh,
            show_required_roles: config.auth.show_required_roles,
            body_limit: config.limits.auth_body_bytes,
            identity: config.auth.identity.clone(),
            identity_names: {
                let id = &config.auth.identity;
                [&id.user_id, &id.email, &id.name, &id.roles]
                    .into_iter()
                    .chain(config.auth.assertion.as_ref().map(|a| &a.header))
                    .cloned()
                    .collect()
            },
            assertion: config.auth.assertion.clone(),
            limits: std::sync::Arc::new({
                let limits = Limits::new(&config.rate_limits);
                // Replicas on a shared store count failed logins together, in the store.
                if service.store().is_shared() {
                    limits.share_regulation()
                } else {
                    limits
                }
            }),
            metrics,
            service,
        }
    }

    /// The rate limits and login regulation (the server housekeeps them periodically).
    pub fn limits(&self) -> std::sync::Arc<Limits> {
        self.limits.clone()
    }

    /// Refuses a request over its rate limit (or a login for a regulated account) before any
    /// work is done for it.
    pub(super) async fn throttle(
        &self,
        action: Action,
        ip: IpAddr,
        email: Option<&str>,
    ) -> Result<(), HttpError> {
        let account = email.and_then(normalize_email);
        let mut verdict = self
            .limits
            .check(action, ip, account.as_deref(), Instant::now());
        if verdict.is_ok()
            && action == Action::Login
            && self.limits.regulation_is_shared()
            && let Some(account) = account
            && !self.limits.rules().off()
        {
            let rules = self.limits.rules();
            let now = self.service.clock().unix();
            let record = self.service.shared_regulation(account).await?;
            if let Some(record) = record {
                verdict = rules.check(&record, IpKey::from(ip), now);
            }
        }
        verdict.map_err(|t| {
            self.metrics.rate_limited(action);
            tracing::warn!(
                target: "audit",
                event = "rate_limited",
                action = ?action,
                by = t.by,
                client_ip = %ip,
            );
            HttpError::TooManyRequests {
                retry_after: t.retry_after,
            }
        })
    }

    /// Feeds a login's outcome to the regulator (in memory, or in the shared store).
    pub(super) async fn record_login<T>(
        &self,
        email: &str,
        ip: IpAddr,
        result: &Result<T, AuthError>,
    ) {
        let Some(account) = normalize_email(email) else {
            return;
        };
        let failed = match result {
            Ok(_) => false,
            Err(AuthError::InvalidCredentials) => true,
            Err(_) => return,
        };
        if !self.limits.regulation_is_shared() {
            if failed {
                self.limits.login_failed(&account, Instant::now());
            } else {
                self.limits.login_succeeded(&account, ip, Instant::now());
            }
            return;
        }
        let rules = self.limits.rules();
        if failed && rules.off() {
            return;
        }
        let ip = IpKey::from(ip);
        let now = self.service.clock().unix();
        let updated = self
            .service
            .update_shared_regulation(account, move |rec| {
                if failed {
                    rules.failed(rec, now);
                } else {
                    rules.succeeded(rec, ip, now);
                }
            })
            .await;
        if let Err(e) = updated {
            tracing::warn!(error = %e, "recording the login outcome for regulation failed");
        }
    }

    /// The path prefix of the API (`/api/auth`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether expired cookie sessions are refreshed inside the request.
    pub fn transparent_refresh(&self) -> bool {
        self.transparent_refresh
    }

    /// The service behind the API.
    pub fn service(&self) -> &AuthService {
        &self.service
    }

    /// Whether a normalised path belongs to the auth API.
    pub fn owns(&self, path: &str) -> bool {
        path == JWKS_PATH
            || path
                .strip_prefix(self.prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Checks the request's access token (bearer first, then the access cookie). Memory only.
    pub fn authenticate(&self, headers: &HeaderMap, tls: bool) -> Result<Session, Unauthenticated> {
        let (token, via_cookie) = match bearer(headers) {
            Some(t) => (t, false),
            None => match cookies::get(
                headers,
                cookies::names(tls, self.transparent_refresh()).access,
            ) {
                Some(t) if !t.is_empty() => (t, true),
                _ => return Err(Unauthenticated::Missing),
            },
        };
        match self.service.authenticate(token) {
            Ok(claims) => Ok(Session { claims, via_cookie }),
            Err(AuthError::NotAuthenticated(reason)) => Err(Unauthenticated::Rejected(reason)),
            Err(_) => Err(Unauthenticated::Rejected("invalid")),
        }
    }

    /// The CSRF rule for a cookie-authenticated request with an unsafe method: the
    /// `X-CSRF-Token` header must equal the CSRF cookie and be bound to this session, and the
    /// browser must not say the request is cross-site.
    pub fn check_csrf(
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
        if cookies::csrf_ok(&self.csrf, session, cookie, header) {
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

    /// Serves one auth API request. `path` is the normalised path.
    pub async fn handle(
        &self,
        req: Request<Body>,
        path: &str,
        tls: bool,
        client_ip: IpAddr,
    ) -> Result<Response<Body>, HttpError> {
        if path == JWKS_PATH {
            return self.jwks(req.method());
        }
        let action = path
            .strip_prefix(self.prefix.as_str())
            .unwrap_or("")
            .trim_end_matches('/');
        let method = req.method().clone();
        let form = is_form(req.headers());
        match (action, &method) {
            ("/login" | "/signup" | "/logout", &Method::GET | &Method::HEAD) => {
                Ok(self.page(action, &req, tls).await)
            }
            ("/signup" | "/login" | "/logout", &Method::POST) if form => {
                self.form_post(action, req, tls, client_ip).await
            }
            ("/signup", &Method::POST) => self.signup(req, tls, client_ip).await,
            ("/login", &Method::POST) => self.login(req, tls, client_ip).await,
            ("/refresh", &Method::POST) => {
                self.throttle(Action::Refresh, client_ip, None).await?;
                self.refresh(req, tls).await
            }
            ("/logout", &Method::POST) => self.logout(req, tls).await,
            ("/logout-all", &Method::POST) => self.logout_all(req, tls).await,
            ("/me", &Method::GET | &Method::HEAD) => self.me(req, tls).await,
            ("/client.js" | "/client.d.ts", &Method::GET | &Method::HEAD) => {
                super::client::asset(action).ok_or(HttpError::NotFound)
            }
            ("/signup" | "/login" | "/logout", _) => {
                Err(HttpError::MethodNotAllowed("GET, HEAD, POST"))
            }
            ("/refresh" | "/logout-all", _) => Err(HttpError::MethodNotAllowed("POST")),
            ("/me" | "/client.js" | "/client.d.ts", _) => {
                Err(HttpError::MethodNotAllowed("GET, HEAD"))
            }
            _ => Err(HttpError::NotFound),
        }
    }

    async fn signup(
        &self,
        req: Request<Body>,
        tls: bool,
        client_ip: IpAddr,
    ) -> Result<Response<Body>, HttpError> {
        refuse_cross_site(req.headers())?;
        let body: Credentials = read_json(req, self.body_limit).await?;
        self.throttle(Action::Signup, client_ip, Some(&body.email))
            .await?;
        let password = SecretString::new(body.password);
        let result = self
            .service
            .signup(&body.email, &password, body.name.as_deref())
            .instrument(tracing::info_span!("signup", %client_ip))
            .await;
        pace(&result).await;
        let issued = result?;
        Ok(self.issued_response(StatusCode::CREATED, &issued, tls))
    }

    async fn login(
        &self,
        req: Request<Body>,
        tls: bool,
        client_ip: IpAddr,
    ) -> Result<Response<Body>, HttpError> {
        refuse_cross_site(req.headers())?;
        let body: Credentials = read_json(req, self.body_limit).await?;
        self.throttle(Action::Login, client_ip, Some(&body.email))
            .await?;
        let password = SecretString::new(body.password);
        let result = self
            .service
            .login(&body.email, &password)
            .instrument(tracing::info_span!("login", %client_ip))
            .await;
        self.record_login(&body.email, client_ip, &result).await;
        pace(&result).await;
        let issued = result?;
        Ok(self.issued_response(StatusCode::OK, &issued, tls))
    }

    async fn refresh(&self, req: Request<Body>, tls: bool) -> Result<Response<Body>, HttpError> {
        let headers = req.headers().clone();
        let has_body = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
            || req.headers().contains_key(header::TRANSFER_ENCODING)
            || req.headers().contains_key(header::CONTENT_TYPE);
        let from_body = if has_body {
            read_json::<RefreshBody>(req, self.body_limit)
                .await?
                .refresh_token
                .filter(|t| !t.is_empty())
        } else {
            None
        };
        let token = match from_body {
            Some(t) => SecretString::new(t),
            None => {
                let Some(cookie) = cookies::get(
                    &headers,
                    cookies::names(tls, self.transparent_refresh()).refresh,
                ) else {
                    return Err(HttpError::Unauthorized("Invalid or expired refresh token"));
                };
                let token = SecretString::new(cookie.to_owned());
                // Cookie-borne refresh is a state change driven by an ambient credential: it needs
                // the CSRF token of the session it refreshes, checked before anything rotates.
                let family = self.family_of(&token).await?;
                self.check_csrf(&headers, tls, &family)?;
                token
            }
        };
        let issued = self.service.refresh(&token).await?;
        Ok(self.issued_response(StatusCode::OK, &issued, tls))
    }

    async fn logout(&self, req: Request<Body>, tls: bool) -> Result<Response<Body>, HttpError> {
        let headers = req.headers().clone();
        let session = self.authenticate(&headers, tls).ok();
        if let Some(s) = &session
            && s.via_cookie
        {
            self.check_csrf(&headers, tls, &s.claims.sid)?;
        }
        let has_body = headers.contains_key(header::CONTENT_TYPE);
        let body_token = if has_body {
            read_json::<RefreshBody>(req, self.body_limit)
                .await
                .ok()
                .and_then(|b| b.refresh_token)
                .filter(|t| !t.is_empty())
                .map(SecretString::new)
        } else {
            None
        };
        // The refresh cookie alone can end its session too, but only with the CSRF token.
        let cookie_token = match (
            &body_token,
            cookies::get(
                &headers,
                cookies::names(tls, self.transparent_refresh()).refresh,
            ),
        ) {
            (None, Some(c)) if session.is_none() => {
                let token = SecretString::new(c.to_owned());
                match self.family_of(&token).await {
                    Ok(family) => {
                        self.check_csrf(&headers, tls, &family)?;
                        Some(token)
                    }
                    Err(_) => None,
                }
            }
            _ => None,
        };
        let refresh = body_token.or(cookie_token);
        self.service
            .logout(session.as_ref().map(|s| &*s.claims), refresh.as_ref())
            .await?;
        Ok(self.cleared(tls))
    }

    async fn logout_all(&self, req: Request<Body>, tls: bool) -> Result<Response<Body>, HttpError> {
        let session = self
            .authenticate(req.headers(), tls)
            .map_err(|_| HttpError::Unauthorized("Not authenticated"))?;
        if session.via_cookie {
            self.check_csrf(req.headers(), tls, &session.claims.sid)?;
        }
        self.service.logout_all(&session.claims.sub).await?;
        Ok(self.cleared(tls))
    }

    async fn me(&self, req: Request<Body>, tls: bool) -> Result<Response<Body>, HttpError> {
        let session = self
            .authenticate(req.headers(), tls)
            .map_err(|_| HttpError::Unauthorized("Not authenticated"))?;
        let user = self.service.user(&session.claims.sub).await?;
        let value = serde_json::to_value(&user).map_err(|e| HttpError::Internal(e.to_string()))?;
        Ok(json_response(StatusCode::OK, &value))
    }

    fn jwks(&self, method: &Method) -> Result<Response<Body>, HttpError> {
        if method != Method::GET && method != Method::HEAD {
            return Err(HttpError::MethodNotAllowed("GET, HEAD"));
        }
        let mut resp = json_response(StatusCode::OK, &self.service.jwks());
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        Ok(resp)
    }

    /// The refresh family a refresh token belongs to (for the CSRF binding).
    pub(super) async fn family_of(&self, token: &SecretString) -> Result<String, HttpError> {
        let hash: [u8; 32] = Sha256::digest(token.expose().as_bytes()).into();
        let store = self.service.store().clone();
        let rec = tokio::task::spawn_blocking(move || store.get_refresh(&hash))
            .await
            .map_err(|e| HttpError::Internal(e.to_string()))?
            .map_err(|e| HttpError::Internal(e.to_string()))?;
        rec.map(|r| r.family)
            .ok_or(HttpError::Unauthorized("Invalid or expired refresh token"))
    }

    /// The email of the user a still-usable refresh token belongs to: known, active (not
    /// rotated or revoked), unexpired, and its user not disabled. For the sign-out page when
    /// the access cookie has expired.
    pub(super) async fn live_refresh_email(&self, token: &SecretString) -> Option<String> {
        let hash: [u8; 32] = Sha256::digest(token.expose().as_bytes()).into();
        let store = self.service.store().clone();
        let rec = tokio::task::spawn_blocking(move || store.get_refresh(&hash))
            .await
            .ok()?
            .ok()??;
        let live = rec.state == RefreshState::Active
            && self.service.clock().unix() < rec.family_expires_at;
        if !live {
            return None;
        }
        self.service.user(&rec.user_id).await.ok().map(|u| u.email)
    }

    /// A token answer: JSON body plus the session cookies.
    fn issued_response(&self, status: StatusCode, issued: &Issued, tls: bool) -> Response<Body> {
        let mut value = serde_json::json!({
            "token_type": "bearer",
            "expires_in": issued.expires_in,
            "user": issued.user,
        });
        if self.tokens_in_body {
            value["access_token"] = issued.access_token.expose().as_str().into();
            value["refresh_token"] = issued.refresh_token.expose().as_str().into();
        }
        let mut resp = json_response(status, &value);
        for c in self.session_cookies(issued, tls) {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
        resp
    }

    /// The `Set-Cookie` values that start (or continue) a browser session.
    pub fn session_cookies(&self, issued: &Issued, tls: bool) -> Vec<HeaderValue> {
        let names = cookies::names(tls, self.transparent_refresh());
        let now = self.service.clock().unix();
        let refresh_age = issued.refresh_expires_at.saturating_sub(now);
        let csrf = self.csrf.issue(&issued.claims.sid);
        // The refresh cookie goes to every path when the gateway refreshes sessions in-request
        // (it never reaches upstreams: the gateway strips its own cookies); otherwise only to
        // the auth API.
        let refresh_path = if self.transparent_refresh {
            "/"
        } else {
            self.prefix.as_str()
        };
        let set = [
            SetCookie {
                name: names.access,
                value: issued.access_token.expose(),
                path: "/",
                max_age: Some(issued.expires_in),
                http_only: true,
                secure: tls,
            },
            SetCookie {
                name: names.refresh,
                value: issued.refresh_token.expose(),
                path: refresh_path,
                max_age: Some(refresh_age),
                http_only: true,
                secure: tls,
            },
            SetCookie {
                name: names.csrf,
                value: &csrf,
                path: "/",
                max_age: Some(refresh_age),
                http_only: false,
                secure: tls,
            },
        ];
        set.iter()
            .filter_map(|c| HeaderValue::from_str(&c.header()).ok())
            .collect()
    }

    /// 204 that deletes the session cookies.
    fn cleared(&self, tls: bool) -> Response<Body> {
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        self.clear_cookies(resp.headers_mut(), tls);
        resp
    }

    /// Appends the `Set-Cookie` headers that delete the session cookies (both refresh-cookie
    /// paths, so a change of `transparent_refresh` leaves nothing behind).
    pub(super) fn clear_cookies(&self, headers: &mut HeaderMap, tls: bool) {
        let names = cookies::names(tls, self.transparent_refresh());
        let other = cookies::names(tls, !self.transparent_refresh());
        let gone = |name, path, http_only| SetCookie {
            name,
            value: "",
            path,
            max_age: Some(0),
            http_only,
            secure: tls,
        };
        append_cookies(
            headers,
            &[
                gone(names.access, "/", true),
                gone(names.refresh, "/", true),
                gone(other.refresh, self.prefix.as_str(), true),
                gone(names.csrf, "/", false),
            ],
        );
    }
}

fn append_cookies(headers: &mut HeaderMap, cookies: &[SetCookie<'_>]) {
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(&c.header()) {
            headers.append(header::SET_COOKIE, v);
        }
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

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

#[derive(Deserialize)]
struct Credentials {
    email: String,
    password: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct RefreshBody {
    #[serde(default)]
    refresh_token: Option<String>,
}

/// Reads a JSON body of at most `limit` bytes. Errors never quote the body (it may hold a
/// password).
async fn read_json<T: DeserializeOwned>(req: Request<Body>, limit: usize) -> Result<T, HttpError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(HttpError::UnsupportedMediaType);
    }
    if req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64)
    {
        return Err(HttpError::PayloadTooLarge);
    }
    let mut body = req.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            HttpError::client_body(&*e)
                .unwrap_or_else(|| HttpError::BadRequest("Could not read the request body".into()))
        })?;
        if let Some(data) = frame.data_ref() {
            if bytes.len() + data.len() > limit {
                return Err(HttpError::PayloadTooLarge);
            }
            bytes.extend_from_slice(data);
        }
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        let msg = e.to_string();
        let detail = match e.classify() {
            serde_json::error::Category::Data if msg.starts_with("missing field") => msg
                .split(" at line")
                .next()
                .unwrap_or("missing field")
                .to_owned(),
            serde_json::error::Category::Data => "A field has the wrong type".to_owned(),
            _ => "Malformed JSON body".to_owned(),
        };
        HttpError::Unprocessable(detail)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::store::Store;

    const PREFIX: &str = "/api/auth";

    async fn api(dir: &tempfile::TempDir) -> AuthApi {
        let config = crate::config::from_str(
            "version: 1\nauth: {password: {memory_kib: 1024, iterations: 1}}\n",
            "test.yaml",
            dir.path(),
            &|_| None,
        )
        .unwrap();
        let store = Store::open(&dir.path().join("gateway.redb")).unwrap();
        let settings = crate::auth::service_settings(&config);
        let service = AuthService::open(settings, store, Clock::system())
            .await
            .unwrap();
        AuthApi::new(
            service,
            vec![7; 32],
            &config,
            crate::metrics::Metrics::new(),
        )
    }

    fn full_path(path: &str) -> String {
        if path.starts_with("/.well-known/") {
            path.to_owned()
        } else {
            format!("{PREFIX}{path}")
        }
    }

    /// Status and `Allow` of one empty-bodied request.
    async fn call(api: &AuthApi, method: &str, path: &str) -> (StatusCode, Option<String>) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(body::empty())
            .unwrap();
        let resp = match api.handle(req, path, false, [127, 0, 0, 1].into()).await {
            Ok(r) => r,
            Err(e) => e.response(false),
        };
        let allow = resp
            .headers()
            .get(header::ALLOW)
            .map(|v| v.to_str().unwrap().to_owned());
        (resp.status(), allow)
    }

    /// `ENDPOINTS` is exactly what `handle` routes: each entry is served, every other method on
    /// its paths is 405 with an `Allow` that lists the table's methods, other paths are 404.
    #[tokio::test]
    async fn endpoints_table_matches_the_router() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(&dir).await;
        for (method, path) in ENDPOINTS {
            let path = full_path(path);
            assert!(api.owns(&path), "{path} is not under the auth API");
            let (status, _) = call(&api, method, &path).await;
            assert!(
                status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is not routed: {status}"
            );
        }
        let methods = [
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
        ];
        let mut paths: Vec<&str> = ENDPOINTS.iter().map(|(_, p)| *p).collect();
        paths.dedup();
        for path in paths {
            let listed: Vec<&str> = ENDPOINTS
                .iter()
                .filter(|(_, p)| *p == path)
                .map(|(m, _)| *m)
                .collect();
            let path = full_path(path);
            for method in methods.iter().filter(|m| !listed.contains(m)) {
                let (status, allow) = call(&api, method, &path).await;
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                assert_eq!(allow.as_deref(), Some(listed.join(", ").as_str()), "{path}");
            }
        }
        for path in [PREFIX, "/api/auth/", "/api/auth/nope", "/api/auth/me/x"] {
            let (status, _) = call(&api, "GET", path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        }
    }

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
