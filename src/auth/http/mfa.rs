//! Second factors over HTTP (the rules are the service's, [`crate::auth::service`]'s `mfa`).
//!
//! JSON (bearer, or cookie with the CSRF header for a state change):
//!
//! - `POST {prefix}/login/mfa` `{mfa_token, code}` -> the token answer of login. `code` is a
//!   six-digit authenticator code or a recovery code. A wrong code is 401 and counts against
//!   the account like a wrong password; an unknown, used or expired `mfa_token` is 401 too.
//! - `GET {prefix}/mfa` -> `{totp, recovery_codes_left, session_mfa}`.
//! - `POST {prefix}/mfa/totp/setup` -> `{secret, otpauth_uri, qr_svg}` (a pending secret).
//! - `POST {prefix}/mfa/totp/confirm` `{code}` -> `{recovery_codes: [...]}` (shown once).
//! - `DELETE {prefix}/mfa/totp` `{password, code}` -> 204.
//! - `POST {prefix}/mfa/recovery-codes` `{code}` -> `{recovery_codes: [...]}`.
//! - `POST {prefix}/mfa/verify` `{code}` -> the token answer: a session with `mfa` (step-up).
//!
//! Every code check is throttled and regulated like a login on the user's account.
//!
//! Hosted pages: the sign-in form's second screen posts `{prefix}/login/mfa` as a form;
//! `GET {prefix}/two-factor?next=` is where a route that needs a second factor sends a browser
//! (a code form, or setting up an app when the user has none) and where the account page
//! links; its forms post back to `POST {prefix}/two-factor` with the CSRF token.

use std::net::IpAddr;

use http::header::{self, HeaderMap};
use http::{Request, Response, StatusCode};
use serde::Deserialize;
use tracing::Instrument;

use super::admission::{Session, refuse_cross_site};
use super::api::AuthApi;
use super::cookies;
use super::endpoints::{is_form, read_json};
use super::form::{form_decode, form_value, percent_encode, safe_next};
use super::pages::redirect;
use super::recovery::page;
use super::throttle::pace;
use crate::auth::error::AuthError;
use crate::auth::mfa::totp;
use crate::auth::service::{Challenge, Issued, MfaStatus};
use crate::body::Body;
use crate::error::{HttpError, escape_html, json_response};
use crate::ratelimit::Action;
use crate::secret::SecretString;

/// The second step of a login: a code, or a passkey's answer (`state` and `credential`).
#[derive(Deserialize)]
struct MfaLogin {
    mfa_token: String,
    #[serde(flatten)]
    proof: Proof,
}

/// A second factor: `code` (from the app, or a recovery code), or a passkey's answer.
#[derive(Deserialize)]
struct Proof {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    credential: Option<serde_json::Value>,
}

impl Proof {
    /// The passkey answer, if this is one.
    fn passkey(&self) -> Option<(&str, &serde_json::Value)> {
        Some((self.state.as_deref()?, self.credential.as_ref()?))
    }

    fn code(&self) -> Result<&str, HttpError> {
        self.code.as_deref().ok_or_else(|| {
            HttpError::Unprocessable("Give a code, or a passkey's state and credential".into())
        })
    }
}

#[derive(Deserialize)]
struct Code {
    code: String,
}

#[derive(Deserialize)]
struct Remove {
    password: String,
    code: String,
}

impl AuthApi {
    /// The answer to a login whose password was right and that needs a second factor.
    pub(super) fn challenge_response(&self, challenge: &Challenge) -> Response<Body> {
        let mut resp = json_response(
            StatusCode::OK,
            &serde_json::json!({
                "mfa_required": true,
                "mfa_token": challenge.mfa_token.expose(),
                "methods": challenge.methods,
                "expires_in": challenge.expires_in,
            }),
        );
        no_store(resp.headers_mut());
        resp
    }

    /// `POST {prefix}/login/mfa`, JSON or the second screen's form.
    pub(super) async fn login_mfa(
        &self,
        req: Request<Body>,
        tls: bool,
        client_ip: IpAddr,
    ) -> Result<Response<Body>, HttpError> {
        refuse_cross_site(req.headers())?;
        let form = is_form(req.headers());
        let headers = req.headers().clone();
        let client = super::account::client_of(&headers, client_ip);
        let (token, proof, next) = if form {
            let fields = self.read_form(req, tls).await?;
            let proof = Proof {
                code: Some(form_value(&fields, "code").unwrap_or_default()),
                state: None,
                credential: None,
            };
            (
                form_value(&fields, "mfa_token").unwrap_or_default(),
                proof,
                Some(form_value(&fields, "next").unwrap_or_else(|| "/".into())),
            )
        } else {
            let body: MfaLogin = read_json(req, self.body_limit()).await?;
            (body.mfa_token, body.proof, None)
        };
        if proof.passkey().is_none() {
            proof.code()?;
        }
        let token = SecretString::new(token);
        // The account the token stands for, so that wrong codes count against it.
        let account = self.service().pending_login(&token).await?;
        if let Err(e) = self
            .throttle(Action::Login, client_ip, account.as_deref())
            .await
        {
            return match &next {
                Some(next) => Ok(with_retry_after(
                    second_screen(
                        self.prefix(),
                        e.status(),
                        &token,
                        next,
                        Some("Too many attempts; please wait a little and try again"),
                        self.has_passkeys(),
                    ),
                    &e,
                )),
                None => Err(e),
            };
        }
        let result = match proof.passkey() {
            Some((state, credential)) => {
                let rp = self.passkeys()?;
                self.service()
                    .login_passkey_finish(rp, &token, state, credential, client)
                    .instrument(tracing::info_span!("login_mfa", %client_ip, passkey = true))
                    .await
            }
            None => {
                self.service()
                    .login_mfa(&token, proof.code()?, client)
                    .instrument(tracing::info_span!("login_mfa", %client_ip))
                    .await
            }
        };
        if let Some(email) = &account {
            self.record_login(email, client_ip, &result).await;
        }
        pace(&result).await;
        match (result, next) {
            (Ok(issued), None) => Ok(self.issued_response(StatusCode::OK, &issued, tls)),
            (Ok(issued), Some(next)) => Ok(self.signed_in_redirect(&issued, tls, &next)),
            (Err(e), None) => Err(e.into()),
            (Err(AuthError::MfaExpired), Some(next)) => Ok(redirect(&format!(
                "{}/login?next={}",
                self.prefix(),
                percent_encode(safe_next(&next))
            ))),
            (Err(e), Some(next)) => {
                let status = HttpError::from(&e).status();
                Ok(second_screen(
                    self.prefix(),
                    status,
                    &token,
                    &next,
                    Some(&message(&e)),
                    self.has_passkeys(),
                ))
            }
        }
    }

    /// The JSON endpoints under `{prefix}/mfa`.
    pub(super) async fn mfa_api(
        &self,
        action: &str,
        req: Request<Body>,
        tls: bool,
        client_ip: IpAddr,
    ) -> Result<Response<Body>, HttpError> {
        let method = req.method().clone();
        if method == http::Method::GET || method == http::Method::HEAD {
            let session = self.signed_in(req.headers(), tls, false)?;
            let status = self.service().mfa_status(&session.claims).await?;
            let mut resp = json_response(StatusCode::OK, &status_json(&status, &session));
            no_store(resp.headers_mut());
            return Ok(resp);
        }
        refuse_cross_site(req.headers())?;
        let session = self.signed_in(req.headers(), tls, true)?;
        let client = super::account::client_of(req.headers(), client_ip);
        let claims = &session.claims;
        let email = claims.email.clone();
        // Every change here checks a code or stores a secret: limited like a login.
        self.throttle(Action::Login, client_ip, Some(&email))
            .await?;
        match action {
            "/mfa/totp/setup" => {
                let setup = self.service().totp_setup(claims, self.mfa_issuer()).await?;
                let mut resp = json_response(
                    StatusCode::OK,
                    &serde_json::json!({
                        "secret": setup.secret.expose(),
                        "otpauth_uri": setup.uri.expose(),
                        "qr_svg": inline_svg(&totp::qr_svg(setup.uri.expose())),
                    }),
                );
                no_store(resp.headers_mut());
                Ok(resp)
            }
            "/mfa/totp/confirm" => {
                let body: Code = read_json(req, self.body_limit()).await?;
                let result = self.service().totp_confirm(claims, &body.code).await;
                self.record_code(&email, client_ip, &result).await;
                Ok(codes_response(&result?))
            }
            "/mfa/totp" => {
                let body: Remove = read_json(req, self.body_limit()).await?;
                let password = SecretString::new(body.password);
                let result = self
                    .service()
                    .totp_remove(claims, &password, &body.code)
                    .await;
                self.record_code(&email, client_ip, &result).await;
                pace(&result).await;
                result?;
                let mut resp = Response::new(crate::body::empty());
                *resp.status_mut() = StatusCode::NO_CONTENT;
                Ok(resp)
            }
            "/mfa/recovery-codes" => {
                let body: Code = read_json(req, self.body_limit()).await?;
                let result = self.service().new_recovery_codes(claims, &body.code).await;
                self.record_code(&email, client_ip, &result).await;
                Ok(codes_response(&result?))
            }
            "/mfa/verify" => {
                let body: Proof = read_json(req, self.body_limit()).await?;
                if body.passkey().is_none() {
                    body.code()?;
                }
                let result = match body.passkey() {
                    Some((state, credential)) => {
                        let rp = self.passkeys()?;
                        self.service()
                            .step_up_passkey(rp, claims, state, credential, client)
                            .await
                    }
                    None => self.service().step_up(claims, body.code()?, client).await,
                };
                self.record_code(&email, client_ip, &result).await;
                Ok(self.issued_response(StatusCode::OK, &result?, tls))
            }
            _ => Err(HttpError::NotFound),
        }
    }

    /// Counts a wrong code (or password) against the account; a right one is not a login: it
    /// does not clear the failures.
    pub(super) async fn record_code<T>(
        &self,
        email: &str,
        client_ip: IpAddr,
        result: &Result<T, AuthError>,
    ) {
        if result.is_err() {
            self.record_login(email, client_ip, result).await;
        }
    }

    /// `GET {prefix}/two-factor?next=`: the hosted second-factor page.
    pub(super) async fn two_factor_page(
        &self,
        req: &Request<Body>,
        tls: bool,
    ) -> Result<Response<Body>, HttpError> {
        let query = form_decode(req.uri().query().unwrap_or(""));
        let next = form_value(&query, "next").unwrap_or_else(|| "/".into());
        let Ok(session) = self.authenticate(req.headers(), tls) else {
            return Ok(self.sign_in_then(&next));
        };
        self.render_two_factor(StatusCode::OK, req.headers(), tls, &session, &next, None)
            .await
    }

    /// `POST {prefix}/two-factor`: `op` is `setup`, `confirm` (with `code`), `verify` (with
    /// `code`), `remove` (with `password` and `code`), `remove-passkey` (with `passkey`,
    /// `password` and, unless the session has a second factor, `code`) or `codes` (with
    /// `code`); all with `csrf` and `next`.
    pub(super) async fn two_factor_post(
        &self,
        req: Request<Body>,
        tls: bool,
        client_ip: IpAddr,
    ) -> Result<Response<Body>, HttpError> {
        refuse_cross_site(req.headers())?;
        let headers = req.headers().clone();
        let fields = self.read_form(req, tls).await?;
        let op = form_value(&fields, "op").unwrap_or_default();
        if !matches!(
            op.as_str(),
            "setup" | "confirm" | "verify" | "remove" | "remove-passkey" | "codes"
        ) {
            return Err(HttpError::BadRequest("Unknown action".into()));
        }
        if form_value(&fields, "csrf").is_none_or(|t| t.is_empty()) {
            return Err(HttpError::Forbidden("CSRF token missing or invalid"));
        }
        let next = form_value(&fields, "next").unwrap_or_else(|| "/".into());
        let Ok(session) = self.authenticate(&headers, tls) else {
            return Ok(self.sign_in_then(&next));
        };
        if !self.form_csrf_ok(&headers, tls, &session.claims.sid, &fields) {
            return Err(HttpError::Forbidden("CSRF token missing or invalid"));
        }
        let claims = &session.claims;
        let email = claims.email.clone();
        let code = form_value(&fields, "code").unwrap_or_default();
        if op != "setup"
            && let Err(e) = self.throttle(Action::Login, client_ip, Some(&email)).await
        {
            let note = "Too many attempts; please wait a little and try again";
            let resp = self
                .render_two_factor(e.status(), &headers, tls, &session, &next, Some(note))
                .await?;
            return Ok(with_retry_after(resp, &e));
        }
        let csrf = csrf_of(&headers, tls, self.transparent_refresh());
        // Each action ends on a page of its own, or on the two-factor page with a note.
        let refused = |e: &AuthError| Then::Note(HttpError::from(e).status(), message(e));
        let then = match op.as_str() {
            "setup" => match self.service().totp_setup(claims, self.mfa_issuer()).await {
                Ok(setup) => Then::Page(setup_page(self.prefix(), &csrf, &next, &setup)),
                Err(e) => refused(&e),
            },
            "confirm" => {
                let result = self.service().totp_confirm(claims, &code).await;
                self.record_code(&email, client_ip, &result).await;
                match result {
                    Ok(codes) => Then::Page(codes_page(self.prefix(), &codes, &next, true)),
                    Err(e) => Then::Note(
                        HttpError::from(&e).status(),
                        format!("{} Start the setup again.", message(&e)),
                    ),
                }
            }
            "verify" => {
                let client = super::account::client_of(&headers, client_ip);
                let result = self.service().step_up(claims, &code, client).await;
                self.record_code(&email, client_ip, &result).await;
                pace(&result).await;
                match result {
                    Ok(issued) => Then::Page(self.signed_in_redirect(&issued, tls, &next)),
                    Err(e) => refused(&e),
                }
            }
            "remove" => {
                let password =
                    SecretString::new(form_value(&fields, "password").unwrap_or_default());
                let result = self.service().totp_remove(claims, &password, &code).await;
                self.record_code(&email, client_ip, &result).await;
                pace(&result).await;
                match &result {
                    Ok(()) => Then::Note(
                        StatusCode::OK,
                        "The authenticator app was removed.".to_owned(),
                    ),
                    Err(e) => refused(e),
                }
            }
            "remove-passkey" => {
                let password =
                    SecretString::new(form_value(&fields, "password").unwrap_or_default());
                let id = form_value(&fields, "passkey").unwrap_or_default();
                let code = Some(code.as_str()).filter(|c| !c.trim().is_empty());
                let result = self
                    .service()
                    .passkey_remove(claims, &id, &password, code)
                    .await;
                self.record_code(&email, client_ip, &result).await;
                pace(&result).await;
                match &result {
                    Ok(true) => Then::Note(StatusCode::OK, "The passkey was removed.".to_owned()),
                    Ok(false) => Then::Note(StatusCode::NOT_FOUND, "No such passkey.".to_owned()),
                    Err(e) => refused(e),
                }
            }
            _ => {
                let result = self.service().new_recovery_codes(claims, &code).await;
                self.record_code(&email, client_ip, &result).await;
                match result {
                    Ok(codes) => Then::Page(codes_page(self.prefix(), &codes, &next, false)),
                    Err(e) => refused(&e),
                }
            }
        };
        match then {
            Then::Page(resp) => Ok(resp),
            Then::Note(status, note) => {
                self.render_two_factor(status, &headers, tls, &session, &next, Some(&note))
                    .await
            }
        }
    }

    /// 303 to `next` (when safe) with the session's cookies.
    pub(super) fn signed_in_redirect(
        &self,
        issued: &Issued,
        tls: bool,
        next: &str,
    ) -> Response<Body> {
        let mut resp = redirect(safe_next(next));
        for c in self.session_cookies(issued, tls) {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
        resp
    }

    /// 303 to the sign-in page, which comes back to the second-factor page and then `next`.
    fn sign_in_then(&self, next: &str) -> Response<Body> {
        let back = format!(
            "{}/two-factor?next={}",
            self.prefix(),
            percent_encode(safe_next(next))
        );
        redirect(&format!(
            "{}/login?next={}",
            self.prefix(),
            percent_encode(&back)
        ))
    }

    async fn render_two_factor(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        tls: bool,
        session: &Session,
        next: &str,
        note: Option<&str>,
    ) -> Result<Response<Body>, HttpError> {
        let state = self.service().mfa_status(&session.claims).await?;
        let csrf = csrf_of(headers, tls, self.transparent_refresh());
        let prefix = self.prefix();
        let next = safe_next(next);
        let hidden = format!(
            "<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <input type=\"hidden\" name=\"next\" value=\"{}\">",
            escape_html(next)
        );
        let email = escape_html(&session.claims.email);
        let passkeys_on = self.has_passkeys();
        let raw_csrf = cookies::get(
            headers,
            cookies::names(tls, self.transparent_refresh()).csrf,
        )
        .unwrap_or("")
        .to_owned();
        let mut body = String::new();
        // 1. This session: proved a factor, or prove one now.
        if state.any() {
            if session.claims.mfa() {
                body.push_str(&format!(
                    "<p class=\"done\" role=\"status\">This session is signed in with your \
                     second factor.</p><p><a href=\"{}\">Continue</a></p>",
                    escape_html(next)
                ));
            } else {
                body.push_str(&format!(
                    "<form method=\"post\" action=\"{prefix}/two-factor\">{hidden}\
                     <input type=\"hidden\" name=\"op\" value=\"verify\">\
                     <label for=\"code\">Code from your authenticator app, or a recovery code</label>\
                     <input id=\"code\" name=\"code\" autocomplete=\"one-time-code\" required>\
                     <button type=\"submit\">Continue</button></form>"
                ));
                if passkeys_on && state.passkeys > 0 {
                    body.push_str(&super::passkeys::button(
                        "verify",
                        "Use a passkey",
                        &[("csrf", &raw_csrf), ("next", next)],
                    ));
                }
            }
        } else {
            body.push_str(
                "<p>Protect your account with a second factor: an authenticator app (Google \
                 Authenticator, 1Password, Aegis...) that shows a new six-digit code every 30 \
                 seconds, or a passkey (this device's screen lock, or a security key).</p>",
            );
        }
        // 2. The authenticator app.
        body.push_str("<h2>Authenticator app</h2>");
        if state.totp {
            body.push_str(&format!(
                "<p>On.</p><form method=\"post\" action=\"{prefix}/two-factor\">{hidden}\
                 <input type=\"hidden\" name=\"op\" value=\"remove\">\
                 <input type=\"text\" name=\"username\" autocomplete=\"username\" value=\"{email}\" hidden>\
                 <label for=\"remove_password\">Password</label>\
                 <input id=\"remove_password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
                 <label for=\"remove_code\">Current code</label>\
                 <input id=\"remove_code\" name=\"code\" autocomplete=\"one-time-code\" required>\
                 <button type=\"submit\">Remove the app</button></form>"
            ));
        } else {
            body.push_str(&format!(
                "<form method=\"post\" action=\"{prefix}/two-factor\">{hidden}\
                 <input type=\"hidden\" name=\"op\" value=\"setup\">\
                 <button type=\"submit\">Set up an authenticator app</button></form>"
            ));
        }
        // 3. Passkeys.
        if passkeys_on {
            body.push_str("<h2>Passkeys</h2>");
            let list = self.service().passkeys(&session.claims).await?;
            if !list.is_empty() {
                let code_hint = if session.claims.mfa() {
                    ""
                } else {
                    "<label>Current code <input name=\"code\" autocomplete=\"one-time-code\"></label>"
                };
                body.push_str("<ul class=\"sessions\">");
                for p in &list {
                    body.push_str(&format!(
                        "<li><span>{name}</span><br><span class=\"hint\">Added {created}{used}</span>\
                         <form method=\"post\" action=\"{prefix}/two-factor\">{hidden}\
                         <input type=\"hidden\" name=\"op\" value=\"remove-passkey\">\
                         <input type=\"hidden\" name=\"passkey\" value=\"{id}\">\
                         <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
                         {code_hint}<button type=\"submit\">Remove</button></form></li>",
                        name = escape_html(&p.name),
                        created = escape_html(&p.created_at),
                        used = p
                            .last_used_at
                            .as_deref()
                            .map(|u| format!(", last used {}", escape_html(u)))
                            .unwrap_or_default(),
                        id = escape_html(&p.id),
                    ));
                }
                body.push_str("</ul>");
            }
            body.push_str(
                "<label for=\"passkey_name\">Name for a new passkey</label>\
                 <input id=\"passkey_name\" maxlength=\"64\" placeholder=\"This laptop\">",
            );
            body.push_str(&super::passkeys::button(
                "register",
                "Add a passkey",
                &[
                    ("csrf", &raw_csrf),
                    ("next", next),
                    ("name-field", "passkey_name"),
                ],
            ));
            body.push_str(&super::passkeys::support(prefix));
            body.push_str(
                "<div id=\"passkey-codes\" hidden><p class=\"done\" role=\"status\">Two-factor \
                 sign-in is on. Keep these recovery codes somewhere safe: each signs you in once \
                 if you lose your devices. They are shown only now.</p><ul class=\"codes\"></ul>\
                 <p><a href=\"\" data-reload>Done</a></p></div>",
            );
        }
        // 4. Recovery codes.
        if state.any() {
            body.push_str(&format!(
                "<h2>Recovery codes</h2><p>{left} unused recovery codes left.</p>\
                 <form method=\"post\" action=\"{prefix}/two-factor\">{hidden}\
                 <input type=\"hidden\" name=\"op\" value=\"codes\">\
                 <label for=\"codes_code\">Current code</label>\
                 <input id=\"codes_code\" name=\"code\" autocomplete=\"one-time-code\" required>\
                 <button type=\"submit\">Make new recovery codes</button></form>",
                left = state.recovery_codes_left,
            ));
        }
        let note = note.map_or_else(String::new, |n| {
            let class = if status.is_success() { "done" } else { "error" };
            format!(
                "<p class=\"{class}\" role=\"status\">{}</p>",
                escape_html(n)
            )
        });
        let mut resp = page(
            status,
            "Two-factor sign-in",
            None,
            &format!("{note}{body}<p><a href=\"{prefix}/account\">Your account</a></p>"),
        );
        if passkeys_on {
            super::passkeys::allow_script(resp.headers_mut());
        }
        Ok(resp)
    }
}

/// Where a two-factor form post ends.
enum Then {
    /// A page of its own (the QR code, new recovery codes, a redirect).
    Page(Response<Body>),
    /// The two-factor page again, with this note.
    Note(StatusCode, String),
}

/// The sign-in form's second screen: the code, with the `mfa_token` carried in the form.
pub(super) fn second_screen(
    prefix: &str,
    status: StatusCode,
    token: &SecretString,
    next: &str,
    error: Option<&str>,
    passkey: bool,
) -> Response<Body> {
    let passkey_button = if passkey {
        super::passkeys::button(
            "login",
            "Use a passkey",
            &[("mfa-token", token.expose()), ("next", safe_next(next))],
        ) + &super::passkeys::support(prefix)
    } else {
        String::new()
    };
    let body = format!(
        "<form method=\"post\" action=\"{prefix}/login/mfa\" novalidate>\
         <input type=\"hidden\" name=\"mfa_token\" value=\"{token}\">\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <label for=\"code\">Code from your authenticator app</label>\
         <input id=\"code\" name=\"code\" autocomplete=\"one-time-code\" inputmode=\"numeric\" autofocus required>\
         <p class=\"hint\">Lost your device? Enter one of your recovery codes instead.</p>\
         <button type=\"submit\">Sign in</button></form>{passkey_button}\
         <p><a href=\"{prefix}/login?next={next_q}\">Start again</a></p>",
        token = escape_html(token.expose()),
        next = escape_html(safe_next(next)),
        next_q = percent_encode(safe_next(next)),
    );
    let mut resp = page(status, "Two-factor sign-in", error, &body);
    if passkey {
        super::passkeys::allow_script(resp.headers_mut());
    }
    resp
}

/// The page showing a new secret: its QR code, the secret as text, and the confirm form.
fn setup_page(
    prefix: &str,
    csrf: &str,
    next: &str,
    setup: &crate::auth::service::TotpSetup,
) -> Response<Body> {
    let body = format!(
        "<p>Scan this code with your authenticator app, or type the key by hand.</p>\
         <div class=\"qr\">{qr}</div>\
         <p>Key: <code>{secret}</code></p>\
         <form method=\"post\" action=\"{prefix}/two-factor\" novalidate>\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <input type=\"hidden\" name=\"op\" value=\"confirm\">\
         <label for=\"code\">The six-digit code the app shows</label>\
         <input id=\"code\" name=\"code\" autocomplete=\"one-time-code\" inputmode=\"numeric\" required>\
         <button type=\"submit\">Turn on</button></form>",
        qr = inline_svg(&totp::qr_svg(setup.uri.expose())),
        secret = escape_html(setup.secret.expose()),
        next = escape_html(safe_next(next)),
    );
    page(StatusCode::OK, "Set up an authenticator app", None, &body)
}

/// The page listing new recovery codes (shown once).
fn codes_page(prefix: &str, codes: &[SecretString], next: &str, enrolled: bool) -> Response<Body> {
    let items: String = codes
        .iter()
        .map(|c| format!("<li><code>{}</code></li>", escape_html(c.expose())))
        .collect();
    let lead = if enrolled {
        "Two-factor sign-in is on. "
    } else {
        ""
    };
    let body = format!(
        "<p class=\"done\" role=\"status\">{lead}Keep these recovery codes somewhere safe: \
         each signs you in once if you lose your device. They are shown only now.</p>\
         <ul class=\"codes\">{items}</ul>\
         <p><a href=\"{next}\">Continue</a> · <a href=\"{prefix}/account\">Your account</a></p>",
        next = escape_html(safe_next(next)),
    );
    page(StatusCode::OK, "Recovery codes", None, &body)
}

/// `{recovery_codes: [...]}`, never cached.
fn codes_response(codes: &[SecretString]) -> Response<Body> {
    let codes: Vec<&str> = codes.iter().map(|c| c.expose().as_str()).collect();
    let mut resp = json_response(
        StatusCode::OK,
        &serde_json::json!({ "recovery_codes": codes }),
    );
    no_store(resp.headers_mut());
    resp
}

fn status_json(status: &MfaStatus, session: &Session) -> serde_json::Value {
    serde_json::json!({
        "totp": status.totp,
        "passkeys": status.passkeys,
        "recovery_codes_left": status.recovery_codes_left,
        "session_mfa": session.claims.mfa(),
    })
}

/// The SVG element alone (without an XML prolog), for inlining in a page or JSON.
fn inline_svg(svg: &str) -> &str {
    svg.find("<svg").map_or("", |at| &svg[at..])
}

/// The page's CSRF token, from the session's CSRF cookie (HTML-escaped).
fn csrf_of(headers: &HeaderMap, tls: bool, transparent_refresh: bool) -> String {
    escape_html(cookies::get(headers, cookies::names(tls, transparent_refresh).csrf).unwrap_or(""))
}

/// What a page says about an error (internal causes stay in the logs).
fn message(e: &AuthError) -> String {
    match e {
        AuthError::Internal(_) => "Something went wrong; please try again".to_owned(),
        other => other.to_string(),
    }
}

/// `Cache-Control: no-store`: the answer carries a secret, a token or a one-time state.
pub(super) fn no_store(headers: &mut HeaderMap) {
    headers.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
}

fn with_retry_after(mut resp: Response<Body>, e: &HttpError) -> Response<Body> {
    if let Some(v) = e.response(false).headers().get(header::RETRY_AFTER) {
        resp.headers_mut().insert(header::RETRY_AFTER, v.clone());
    }
    resp
}
