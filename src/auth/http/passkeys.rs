//! Passkeys over HTTP (the rules are the service's `passkeys`), on when `auth.webauthn` is
//! (404 otherwise). Every ceremony is two calls: a `start` that answers
//! `{"publicKey": {...}, "state": "..."}` (the options for `navigator.credentials.create/get`,
//! binary fields base64url, and an opaque state to send back), and a `finish` with
//! `{state, credential}` (the browser's answer, as `PublicKeyCredential.toJSON()` gives it).
//!
//! - `POST {prefix}/mfa/webauthn/register/start`, `.../register/finish` `{state, credential,
//!   name}` -> 201 `{passkey, recovery_codes?}` (codes when it is the user's first factor).
//! - `GET {prefix}/mfa/webauthn` -> `{passkeys: [...]}`; `DELETE {prefix}/mfa/webauthn/{id}`
//!   `{password, code?}` -> 204 (the code may be left out by a session signed in with a second
//!   factor).
//! - `POST {prefix}/mfa/webauthn/challenge` (signed in) starts a step-up, which
//!   `POST {prefix}/mfa/verify` `{state, credential}` finishes.
//! - `POST {prefix}/login/webauthn` `{mfa_token}` starts the second step of a login, which
//!   `POST {prefix}/login/mfa` `{mfa_token, state, credential}` finishes.
//! - `POST {prefix}/passkey/start` and `POST {prefix}/passkey/finish` `{state, credential}`:
//!   sign in without a password (only with `auth.webauthn.passwordless`).
//!
//! Signed-in calls follow the usual rules (bearer, or cookie with the CSRF header). Every call
//! that stores a ceremony or checks one is throttled like a login (per address, and per account
//! where one is known); refused answers count against the account like wrong passwords.

use std::net::IpAddr;

use http::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use tracing::Instrument;

use super::admission::refuse_cross_site;
use super::api::AuthApi;
use super::endpoints::read_json;
use super::throttle::pace;
use crate::auth::mfa::passkey::Started;
use crate::body::Body;
use crate::error::{HttpError, json_response};
use crate::ratelimit::Action;
use crate::secret::SecretString;

/// The longest passkey id `DELETE mfa/webauthn/{id}` considers (credential ids are at most
/// 1023 bytes, 1364 in base64url).
const MAX_PASSKEY_ID: usize = 1400;

#[derive(Deserialize)]
struct Finish {
    state: String,
    credential: Value,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct Remove {
    password: String,
    #[serde(default)]
    code: Option<String>,
}

#[derive(Deserialize)]
struct PendingLogin {
    mfa_token: String,
}

/// The passkey id of a `/mfa/webauthn/{id}` action, if it is one.
pub(super) fn passkey_id(action: &str) -> Option<&str> {
    let id = action.strip_prefix("/mfa/webauthn/")?;
    // Compared with the stored ids only; an id that is not one is a 404 from the service.
    let ok = !id.is_empty() && id.len() <= MAX_PASSKEY_ID && !id.contains('/');
    (ok && !matches!(id, "register" | "challenge")).then_some(id)
}

impl AuthApi {
    /// The passkey endpoints under `{prefix}/mfa/webauthn` and `{prefix}/passkey`, and the
    /// start of a login's passkey step.
    pub(super) async fn passkey_api(
        &self,
        action: &str,
        req: Request<Body>,
        tls: bool,
        client_ip: IpAddr,
    ) -> Result<Response<Body>, HttpError> {
        let rp = self.passkeys()?;
        let now_safe = matches!(*req.method(), http::Method::GET | http::Method::HEAD);
        if now_safe {
            let session = self.signed_in(req.headers(), tls, false)?;
            let list = self.service().passkeys(&session.claims).await?;
            return Ok(no_store(json_response(
                StatusCode::OK,
                &serde_json::json!({ "passkeys": list }),
            )));
        }
        refuse_cross_site(req.headers())?;
        let client = super::account::client_of(req.headers(), client_ip);
        match action {
            "/passkey/start" | "/passkey/finish" if !rp.settings().passwordless => {
                Err(HttpError::NotFound)
            }
            "/passkey/start" => {
                self.throttle(Action::Login, client_ip, None).await?;
                let started = self.service().passkey_sign_in_start(rp).await?;
                Ok(started_response(&started))
            }
            "/passkey/finish" => {
                let body: Finish = read_json(req, self.body_limit()).await?;
                self.throttle(Action::Login, client_ip, None).await?;
                let result = self
                    .service()
                    .passkey_sign_in_finish(rp, &body.state, &body.credential, client)
                    .instrument(tracing::info_span!("passkey_sign_in", %client_ip))
                    .await;
                if let Ok(issued) = &result {
                    self.record_login(&issued.claims.email, client_ip, &result)
                        .await;
                }
                pace(&result).await;
                Ok(self.issued_response(StatusCode::OK, &result?, tls))
            }
            "/login/webauthn" => {
                let body: PendingLogin = read_json(req, self.body_limit()).await?;
                let token = SecretString::new(body.mfa_token);
                let account = self.service().pending_login(&token).await?;
                self.throttle(Action::Login, client_ip, account.as_deref())
                    .await?;
                let started = self.service().login_passkey_start(rp, &token).await?;
                Ok(started_response(&started))
            }
            _ => {
                let session = self.signed_in(req.headers(), tls, true)?;
                let claims = &session.claims;
                let email = claims.email.clone();
                // Each call stores a one-time token or checks a ceremony: limited like a login.
                self.throttle(Action::Login, client_ip, Some(&email))
                    .await?;
                match (action, req.method().clone()) {
                    ("/mfa/webauthn/register/start", http::Method::POST) => {
                        let started = self.service().passkey_register_start(rp, claims).await?;
                        Ok(started_response(&started))
                    }
                    ("/mfa/webauthn/register/finish", http::Method::POST) => {
                        let body: Finish = read_json(req, self.body_limit()).await?;
                        let result = self
                            .service()
                            .passkey_register_finish(
                                rp,
                                claims,
                                &body.state,
                                &body.credential,
                                body.name.as_deref(),
                            )
                            .await;
                        self.record_code(&email, client_ip, &result).await;
                        let added = result?;
                        let codes = added.recovery_codes.as_ref().map(|codes| {
                            codes
                                .iter()
                                .map(|c| c.expose().as_str())
                                .collect::<Vec<_>>()
                        });
                        let mut value = serde_json::json!({ "passkey": added.passkey });
                        if let Some(codes) = codes {
                            value["recovery_codes"] = serde_json::json!(codes);
                        }
                        Ok(no_store(json_response(StatusCode::CREATED, &value)))
                    }
                    ("/mfa/webauthn/challenge", http::Method::POST) => {
                        let started = self.service().passkey_challenge(rp, claims).await?;
                        Ok(started_response(&started))
                    }
                    (other, http::Method::DELETE) => {
                        let id = passkey_id(other).ok_or(HttpError::NotFound)?.to_owned();
                        let body: Remove = read_json(req, self.body_limit()).await?;
                        let password = SecretString::new(body.password);
                        let result = self
                            .service()
                            .passkey_remove(claims, &id, &password, body.code.as_deref())
                            .await;
                        self.record_code(&email, client_ip, &result).await;
                        pace(&result).await;
                        if !result? {
                            return Err(HttpError::NotFound);
                        }
                        let mut resp = Response::new(crate::body::empty());
                        *resp.status_mut() = StatusCode::NO_CONTENT;
                        Ok(resp)
                    }
                    _ => Err(HttpError::NotFound),
                }
            }
        }
    }
}

/// `{"publicKey": ..., "state": "..."}`, never cached.
fn started_response(started: &Started) -> Response<Body> {
    let mut value = started.options.clone();
    value["state"] = Value::from(started.state.as_str());
    no_store(json_response(StatusCode::OK, &value))
}

fn no_store(mut resp: Response<Body>) -> Response<Body> {
    super::mfa::no_store(resp.headers_mut());
    resp
}

/// A passkey button for a hosted page, hidden until `webauthn.js` finds the browser able.
/// `data` are its `data-*` attributes (names without the prefix; values are escaped here).
/// A page with passkey buttons also needs [`support`] once.
pub(super) fn button(action: &str, label: &str, data: &[(&str, &str)]) -> String {
    let attrs: String = data
        .iter()
        .map(|(name, value)| format!(" data-{name}=\"{}\"", crate::error::escape_html(value)))
        .collect();
    format!("<button type=\"button\" data-passkey=\"{action}\"{attrs} hidden>{label}</button>")
}

/// What a page with passkey buttons needs once: the line their errors go to, and the script.
pub(super) fn support(prefix: &str) -> String {
    format!(
        "<p id=\"passkey-error\" class=\"error\" role=\"alert\" hidden></p>\
         <script src=\"{prefix}/webauthn.js\" defer></script>"
    )
}

/// The Content-Security-Policy of a page with a passkey button: the page's own script and
/// calls to its own origin, nothing else.
pub(super) fn allow_script(headers: &mut http::HeaderMap) {
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
}
