//! The auth API the gateway serves itself, shaped for the seed Next.js frontend.
//!
//! Under `auth.prefix` (default `/api/auth`):
//! - `POST /signup` `{email, password, name?}` -> 201 `{access_token, refresh_token, token_type,
//!   expires_in, user}`
//! - `POST /login` `{email, password}` -> 200, same shape
//! - `POST /refresh` `{refresh_token}` or the refresh cookie -> 200, same shape, rotated
//! - `POST /logout` -> 204, `POST /logout-all` -> 204
//! - `GET /me` -> the user
//! - `POST /change-password`, `GET /sessions`, `DELETE /sessions/{id}`: the user's own account
//!   (see [`super::account`])
//! - `GET /client.js`, `GET /client.d.ts` -> the browser client module and its types (see
//!   [`super::browser_client`])
//!
//! plus `GET /.well-known/jwks.json`. Errors are `{"detail": "..."}`. Every answer that carries a
//! token also sets the session cookies (see [`super::cookies`]); requests authenticated by cookie
//! with an unsafe method must carry the CSRF token, bearer requests are exempt.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::account::session_id;
use super::admission::refuse_cross_site;
use super::api::AuthApi;
use super::cookies;
use super::throttle::pace;
use crate::auth::error::AuthError;
use crate::auth::service::{Issued, Login};
use crate::body::{self, Body};
use crate::error::{HttpError, json_response};
use crate::ratelimit::Action;
use crate::secret::SecretString;

/// Where the public keys are published.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Every `(method, path)` `AuthApi::handle` serves: paths starting with `/.well-known/` are
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
    ("GET", "/forgot-password"),
    ("HEAD", "/forgot-password"),
    ("POST", "/forgot-password"),
    ("GET", "/reset-password"),
    ("HEAD", "/reset-password"),
    ("POST", "/reset-password"),
    ("GET", "/verify-email"),
    ("HEAD", "/verify-email"),
    ("POST", "/verify-email"),
    ("POST", "/request-verification"),
    ("GET", "/account"),
    ("HEAD", "/account"),
    ("POST", "/account"),
    ("POST", "/change-password"),
    ("GET", "/sessions"),
    ("HEAD", "/sessions"),
    ("DELETE", "/sessions/{id}"),
    ("POST", "/login/mfa"),
    ("GET", "/mfa"),
    ("HEAD", "/mfa"),
    ("POST", "/mfa/totp/setup"),
    ("POST", "/mfa/totp/confirm"),
    ("DELETE", "/mfa/totp"),
    ("POST", "/mfa/recovery-codes"),
    ("POST", "/mfa/verify"),
    ("POST", "/mfa/webauthn/register/start"),
    ("POST", "/mfa/webauthn/register/finish"),
    ("GET", "/mfa/webauthn"),
    ("HEAD", "/mfa/webauthn"),
    ("DELETE", "/mfa/webauthn/{id}"),
    ("POST", "/mfa/webauthn/challenge"),
    ("POST", "/login/webauthn"),
    ("POST", "/passkey/start"),
    ("POST", "/passkey/finish"),
    ("GET", "/webauthn.js"),
    ("HEAD", "/webauthn.js"),
    ("GET", "/two-factor"),
    ("HEAD", "/two-factor"),
    ("POST", "/two-factor"),
    ("GET", "/providers"),
    ("HEAD", "/providers"),
    ("GET", "/identities"),
    ("HEAD", "/identities"),
    ("DELETE", "/identities/{id}"),
    ("GET", "/sso/{id}/start"),
    ("GET", "/sso/{id}/callback"),
    ("POST", "/sso/{id}/link"),
    ("GET", "/client.js"),
    ("HEAD", "/client.js"),
    ("GET", "/client.d.ts"),
    ("HEAD", "/client.d.ts"),
    ("GET", JWKS_PATH),
    ("HEAD", JWKS_PATH),
];

/// The password actions `auth.password_login: false` turns off.
fn password_only(action: &str, method: &Method) -> bool {
    method == Method::POST
        && matches!(
            action,
            "/login"
                | "/signup"
                | "/login/mfa"
                | "/forgot-password"
                | "/reset-password"
                | "/change-password"
        )
}

impl AuthApi {
    /// Serves one auth API request. `path` is the normalised path.
    pub(crate) async fn handle(
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
            .strip_prefix(self.prefix())
            .unwrap_or("")
            .trim_end_matches('/');
        let method = req.method().clone();
        let form = is_form(req.headers());
        if !self.password_login() && password_only(action, &method) {
            return Err(AuthError::PasswordLoginOff.into());
        }
        if let Some((provider, what)) = super::sso::sso_action(action) {
            let allowed = if what == "link" { "POST" } else { "GET" };
            return if method.as_str() == allowed {
                self.sso_endpoint(req, provider, what, tls, client_ip).await
            } else {
                Err(HttpError::MethodNotAllowed(if what == "link" {
                    "POST"
                } else {
                    "GET"
                }))
            };
        }
        match (action, &method) {
            ("/providers", &Method::GET | &Method::HEAD) => Ok(self.providers_json()),
            ("/identities", &Method::GET | &Method::HEAD) => {
                self.identities_api(req, None, tls).await
            }
            (other, &Method::DELETE) if super::sso::identity_id(other).is_some() => {
                let id = super::sso::identity_id(other)
                    .unwrap_or_default()
                    .to_owned();
                self.identities_api(req, Some(&id), tls).await
            }
            ("/providers" | "/identities", _) => Err(HttpError::MethodNotAllowed("GET, HEAD")),
            (other, _) if super::sso::identity_id(other).is_some() => {
                Err(HttpError::MethodNotAllowed("DELETE"))
            }
            ("/login" | "/signup" | "/logout", &Method::GET | &Method::HEAD) => {
                Ok(self.page(action, &req, tls).await)
            }
            ("/signup" | "/login" | "/logout", &Method::POST) if form => {
                self.form_post(action, req, tls, client_ip).await
            }
            ("/signup", &Method::POST) => self.signup(req, tls, client_ip).await,
            ("/login", &Method::POST) => self.login(req, tls, client_ip).await,
            ("/login/mfa", &Method::POST) => self.login_mfa(req, tls, client_ip).await,
            ("/mfa", &Method::GET | &Method::HEAD) => {
                self.mfa_api(action, req, tls, client_ip).await
            }
            (
                "/mfa/totp/setup" | "/mfa/totp/confirm" | "/mfa/recovery-codes" | "/mfa/verify",
                &Method::POST,
            )
            | ("/mfa/totp", &Method::DELETE) => self.mfa_api(action, req, tls, client_ip).await,
            (
                "/mfa/webauthn/register/start"
                | "/mfa/webauthn/register/finish"
                | "/mfa/webauthn/challenge"
                | "/login/webauthn"
                | "/passkey/start"
                | "/passkey/finish",
                &Method::POST,
            )
            | ("/mfa/webauthn", &Method::GET | &Method::HEAD) => {
                self.passkey_api(action, req, tls, client_ip).await
            }
            (other, &Method::DELETE) if super::passkeys::passkey_id(other).is_some() => {
                self.passkey_api(action, req, tls, client_ip).await
            }
            ("/webauthn.js", &Method::GET | &Method::HEAD) => {
                super::browser_client::asset(action).ok_or(HttpError::NotFound)
            }
            ("/two-factor", &Method::GET | &Method::HEAD) => self.two_factor_page(&req, tls).await,
            ("/two-factor", &Method::POST) => self.two_factor_post(req, tls, client_ip).await,
            ("/refresh", &Method::POST) => {
                self.throttle(Action::Refresh, client_ip, None).await?;
                self.refresh(req, tls).await
            }
            ("/logout", &Method::POST) => self.logout(req, tls).await,
            ("/logout-all", &Method::POST) => self.logout_all(req, tls).await,
            ("/me", &Method::GET | &Method::HEAD) => self.me(req, tls).await,
            ("/forgot-password" | "/reset-password", &Method::GET | &Method::HEAD) => {
                self.recovery_page(action, &req).await
            }
            ("/forgot-password", &Method::POST) => self.forgot_password(req, tls, client_ip).await,
            ("/reset-password", &Method::POST) => self.reset_password(req, tls).await,
            ("/verify-email", &Method::GET | &Method::HEAD) => self.verify_page(&req).await,
            ("/verify-email", &Method::POST) => self.verify_email(req, tls).await,
            ("/request-verification", &Method::POST) => {
                self.request_verification(req, tls, client_ip).await
            }
            ("/account", &Method::GET | &Method::HEAD) => self.account_page(&req, tls).await,
            ("/account", &Method::POST) => self.account_post(req, tls, client_ip).await,
            ("/change-password", &Method::POST) => self.change_password(req, tls, client_ip).await,
            ("/sessions", &Method::GET | &Method::HEAD) => self.sessions(req, tls).await,
            (other, &Method::DELETE) if session_id(other).is_some() => {
                self.end_session(req, tls, session_id(other).unwrap_or_default())
                    .await
            }
            ("/client.js" | "/client.d.ts", &Method::GET | &Method::HEAD) => {
                super::browser_client::asset(action).ok_or(HttpError::NotFound)
            }
            (
                "/signup" | "/login" | "/logout" | "/account" | "/forgot-password"
                | "/reset-password" | "/verify-email",
                _,
            ) => Err(HttpError::MethodNotAllowed("GET, HEAD, POST")),
            (
                "/refresh"
                | "/logout-all"
                | "/change-password"
                | "/request-verification"
                | "/login/mfa"
                | "/mfa/totp/setup"
                | "/mfa/totp/confirm"
                | "/mfa/recovery-codes"
                | "/mfa/verify"
                | "/mfa/webauthn/register/start"
                | "/mfa/webauthn/register/finish"
                | "/mfa/webauthn/challenge"
                | "/login/webauthn"
                | "/passkey/start"
                | "/passkey/finish",
                _,
            ) => Err(HttpError::MethodNotAllowed("POST")),
            (other, _) if super::passkeys::passkey_id(other).is_some() => {
                Err(HttpError::MethodNotAllowed("DELETE"))
            }
            ("/two-factor", _) => Err(HttpError::MethodNotAllowed("GET, HEAD, POST")),
            ("/mfa/totp", _) => Err(HttpError::MethodNotAllowed("DELETE")),
            ("/sessions" | "/mfa" | "/mfa/webauthn", _) => {
                Err(HttpError::MethodNotAllowed("GET, HEAD"))
            }
            (other, _) if session_id(other).is_some() => Err(HttpError::MethodNotAllowed("DELETE")),
            ("/me" | "/client.js" | "/client.d.ts" | "/webauthn.js", _) => {
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
        let client = super::account::client_of(req.headers(), client_ip);
        let body: Credentials = read_json(req, self.body_limit()).await?;
        self.throttle(Action::Signup, client_ip, Some(&body.email))
            .await?;
        let password = SecretString::new(body.password);
        let result = self
            .service()
            .signup_from(&body.email, &password, body.name.as_deref(), client)
            .instrument(tracing::info_span!("signup", %client_ip))
            .await;
        pace(&result).await;
        let issued = result?;
        self.send_verification(&issued.claims.sub);
        Ok(self.issued_response(StatusCode::CREATED, &issued, tls))
    }

    async fn login(
        &self,
        req: Request<Body>,
        tls: bool,
        client_ip: IpAddr,
    ) -> Result<Response<Body>, HttpError> {
        refuse_cross_site(req.headers())?;
        let client = super::account::client_of(req.headers(), client_ip);
        let body: Credentials = read_json(req, self.body_limit()).await?;
        self.throttle(Action::Login, client_ip, Some(&body.email))
            .await?;
        let password = SecretString::new(body.password);
        let result = self
            .service()
            .login_from(&body.email, &password, client)
            .instrument(tracing::info_span!("login", %client_ip))
            .await;
        // A right password that needs a second factor is neither a success (it must not clear
        // the failures that wrong codes count) nor a failure.
        if !matches!(result, Ok(Login::SecondFactor(_))) {
            self.record_login(&body.email, client_ip, &result).await;
        }
        pace(&result).await;
        match result? {
            Login::Session(issued) => Ok(self.issued_response(StatusCode::OK, &issued, tls)),
            Login::SecondFactor(challenge) => Ok(self.challenge_response(&challenge)),
        }
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
            read_json::<RefreshBody>(req, self.body_limit())
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
        let issued = self.service().refresh(&token).await?;
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
            read_json::<RefreshBody>(req, self.body_limit())
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
        self.service()
            .logout(session.as_ref().map(|s| &*s.claims), refresh.as_ref())
            .await?;
        Ok(self.cleared(tls))
    }

    async fn logout_all(&self, req: Request<Body>, tls: bool) -> Result<Response<Body>, HttpError> {
        let session = self.signed_in(req.headers(), tls, true)?;
        self.service().logout_all(&session.claims.sub).await?;
        Ok(self.cleared(tls))
    }

    async fn me(&self, req: Request<Body>, tls: bool) -> Result<Response<Body>, HttpError> {
        let session = self.signed_in(req.headers(), tls, false)?;
        let user = self.service().user(&session.claims.sub).await?;
        let value = serde_json::to_value(&user).map_err(|e| HttpError::Internal(e.to_string()))?;
        Ok(json_response(StatusCode::OK, &value))
    }

    fn jwks(&self, method: &Method) -> Result<Response<Body>, HttpError> {
        if method != Method::GET && method != Method::HEAD {
            return Err(HttpError::MethodNotAllowed("GET, HEAD"));
        }
        let mut resp = json_response(StatusCode::OK, &self.service().jwks());
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        Ok(resp)
    }

    /// A token answer: JSON body plus the session cookies.
    pub(super) fn issued_response(
        &self,
        status: StatusCode,
        issued: &Issued,
        tls: bool,
    ) -> Response<Body> {
        let mut value = serde_json::json!({
            "token_type": "bearer",
            "expires_in": issued.expires_in,
            "user": issued.user,
        });
        if self.tokens_in_body() {
            value["access_token"] = issued.access_token.expose().as_str().into();
            value["refresh_token"] = issued.refresh_token.expose().as_str().into();
        }
        let mut resp = json_response(status, &value);
        for c in self.session_cookies(issued, tls) {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
        resp
    }

    /// 204 that deletes the session cookies.
    pub(super) fn cleared(&self, tls: bool) -> Response<Body> {
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        self.clear_cookies(resp.headers_mut(), tls);
        resp
    }
}

pub(super) fn is_form(headers: &HeaderMap) -> bool {
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
pub(super) async fn read_json<T: DeserializeOwned>(
    req: Request<Body>,
    limit: usize,
) -> Result<T, HttpError> {
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
    use crate::auth::service::AuthService;
    use crate::clock::Clock;
    use crate::store::Store;

    const PREFIX: &str = "/api/auth";

    async fn api(dir: &tempfile::TempDir) -> AuthApi {
        let config = crate::config::from_str(
            // E-mail on (to a port nothing listens on: nothing is sent here) and passkeys with
            // passwordless sign-in, so that the endpoints that need them are routed.
            "version: 1\nauth: {password: {memory_kib: 1024, iterations: 1}, webauthn: {passwordless: true}}\n\
             email: {smtp_url: 'smtp://127.0.0.1:9', from: 'a@example.com', public_url: 'https://x.example'}\n",
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
            config.email.as_ref().map(|e| {
                let (_keep, stop) = tokio::sync::watch::channel(false);
                crate::mail::Mailer::start(e, stop).unwrap()
            }),
        )
    }

    fn full_path(path: &str) -> String {
        if path.starts_with("/.well-known/") {
            path.to_owned()
        } else {
            format!("{PREFIX}{path}")
        }
    }

    /// Status and `Allow` of one empty-bodied request, and whether the router found no
    /// endpoint (its plain `NotFound`; an endpoint may answer 404 itself, e.g. for a reset link
    /// that does not exist).
    async fn call(api: &AuthApi, method: &str, path: &str) -> (StatusCode, Option<String>, bool) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(body::empty())
            .unwrap();
        let answer = api.handle(req, path, false, [127, 0, 0, 1].into()).await;
        let unrouted = matches!(answer, Err(HttpError::NotFound));
        let resp = match answer {
            Ok(r) => r,
            Err(e) => e.response(false),
        };
        let allow = resp
            .headers()
            .get(header::ALLOW)
            .map(|v| v.to_str().unwrap().to_owned());
        (resp.status(), allow, unrouted)
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
            let (status, _, unrouted) = call(&api, method, &path).await;
            assert!(
                !unrouted && status != StatusCode::METHOD_NOT_ALLOWED,
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
                let (status, allow, _) = call(&api, method, &path).await;
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                assert_eq!(allow.as_deref(), Some(listed.join(", ").as_str()), "{path}");
            }
        }
        for path in [PREFIX, "/api/auth/", "/api/auth/nope", "/api/auth/me/x"] {
            let (status, _, unrouted) = call(&api, "GET", path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(unrouted, "{path}");
        }
    }
}
