//! Password reset over HTTP, on when `email:` is configured (404 otherwise):
//!
//! - `GET {prefix}/forgot-password`: a page asking for the address.
//! - `POST {prefix}/forgot-password` `{email}` (JSON or the page's form): always `202` with the
//!   same answer, whether or not the account exists; the lookup, the token and the mail happen
//!   after the answer, off the request path, so its timing says nothing either. Rate-limited
//!   per IP and per address like login.
//! - `GET {prefix}/reset-password?token=...`: a page with a new-password form (a GET never
//!   uses the token: mail scanners follow links).
//! - `POST {prefix}/reset-password` `{token, password}` (JSON or the form): sets the password
//!   ([`crate::auth::service`] says what else happens); `200`, or from the form `303` to the
//!   sign-in page, which then says the password was changed. An unusable link is `404`.
//!
//! The pages carry the sign-in page's `next` (only ever a same-origin path,
//! [`super::form::safe_next`]): "Forgot password?" passes it to the forgot page, whose links
//! and form take it back to sign-in; the mailed link cannot carry it, but a reset page opened
//! with `&next=...` passes it on to the sign-in page after the reset.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header;
use http::{Request, Response, StatusCode};
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::admission::refuse_cross_site;
use super::api::AuthApi;
use super::endpoints::{is_form, read_json};
use super::form::{form_decode, form_value, next_of, safe_next, with_next};
use super::pages::redirect;
use crate::auth::error::AuthError;
use crate::body::{self, Body};
use crate::error::{HttpError, PAGE_STYLE as STYLE, escape_html, html_headers, json_response};
use crate::mail::Template;
use crate::ratelimit::Action;
use crate::secret::SecretString;

/// The answer to every `forgot-password` request.
const SENT: &str =
    "If an account exists for this address, a link to choose a new password is on its way.";

/// At most this many reset requests are being looked up and mailed at once; beyond, a request
/// is answered the same and dropped (the rate limits make this a flood, not a user).
pub(super) const BACKGROUND_RESETS: usize = 32;

#[derive(Deserialize)]
struct Forgot {
    email: String,
}

#[derive(Deserialize)]
struct Reset {
    token: String,
    password: String,
}

impl AuthApi {
    /// `GET {prefix}/forgot-password|reset-password`.
    pub(super) async fn recovery_page(
        &self,
        action: &str,
        req: &Request<Body>,
    ) -> Result<Response<Body>, HttpError> {
        if self.mailer().is_none() {
            return Err(HttpError::NotFound);
        }
        let query = form_decode(req.uri().query().unwrap_or(""));
        let next = next_of(&query);
        if action == "/forgot-password" {
            return Ok(self.forgot_page(StatusCode::OK, None, None, &next));
        }
        let token = SecretString::new(form_value(&query, "token").unwrap_or_default());
        match self.service().reset_target(&token).await? {
            Some(email) => Ok(self.reset_page(StatusCode::OK, &token, &email, None, &next)),
            None => Ok(self.link_refused(&next)),
        }
    }

    /// `POST {prefix}/forgot-password`.
    pub(super) async fn forgot_password(
        &self,
        req: Request<Body>,
        tls: bool,
        client_ip: IpAddr,
    ) -> Result<Response<Body>, HttpError> {
        let Some(mailer) = self.mailer().cloned() else {
            return Err(HttpError::NotFound);
        };
        refuse_cross_site(req.headers())?;
        let form = is_form(req.headers());
        // `next`: where the sign-in page was to lead, for the forgot page's way back to it.
        let (email, next) = if form {
            let fields = self.read_form(req, tls).await?;
            let next = next_of(&fields);
            match form_value(&fields, "email").filter(|e| !e.is_empty()) {
                Some(email) => (email, next),
                None => {
                    let message = "Enter the address of your account";
                    return Ok(self.forgot_page(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        Some(message),
                        None,
                        &next,
                    ));
                }
            }
        } else {
            let email = read_json::<Forgot>(req, self.body_limit()).await?.email;
            if email.is_empty() {
                return Err(HttpError::Unprocessable(
                    "Enter the address of your account".into(),
                ));
            }
            (email, "/".to_owned())
        };
        if let Err(e) = self.throttle(Action::Login, client_ip, Some(&email)).await {
            if !form {
                return Err(e);
            }
            let message = "Too many attempts; please wait a little and try again";
            return Ok(self.forgot_page(e.status(), Some(message), None, &next));
        }
        // Off the request path: the answer leaves before anything about the account is known.
        if let Ok(permit) = Arc::clone(self.background()).try_acquire_owned() {
            let service = self.service().clone();
            let ttl = self.reset_ttl();
            let page = format!("{}/reset-password", self.prefix());
            tokio::spawn(async move {
                let _permit = permit;
                match service.start_reset(&email, ttl).await {
                    Ok(Some(link)) => {
                        let sent = mailer.send_link(
                            Template::ResetPassword,
                            &link.email,
                            &page,
                            link.token.expose(),
                            ttl,
                        );
                        if let Err(e) = sent {
                            tracing::warn!(error = %e, "the reset mail was not queued");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "a reset request failed"),
                }
            });
        } else {
            tracing::warn!("reset requests saturated; one dropped");
        }
        if form {
            return Ok(self.forgot_page(StatusCode::ACCEPTED, None, Some(SENT), &next));
        }
        Ok(json_response(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "detail": SENT }),
        ))
    }

    /// `POST {prefix}/reset-password`.
    pub(super) async fn reset_password(
        &self,
        req: Request<Body>,
        tls: bool,
    ) -> Result<Response<Body>, HttpError> {
        if self.mailer().is_none() {
            return Err(HttpError::NotFound);
        }
        refuse_cross_site(req.headers())?;
        let form = is_form(req.headers());
        // `next`: where the sign-in page was to lead, when the reset page was opened with it.
        let (token, password, next) = if form {
            let fields = self.read_form(req, tls).await?;
            let next = next_of(&fields);
            let (Some(token), Some(password)) = (
                form_value(&fields, "token").filter(|t| !t.is_empty()),
                form_value(&fields, "password"),
            ) else {
                return Ok(self.link_refused(&next));
            };
            (token, password, next)
        } else {
            let body: Reset = read_json(req, self.body_limit()).await?;
            (body.token, body.password, "/".to_owned())
        };
        let token = SecretString::new(token);
        let password = SecretString::new(password);
        let result = self.service().reset_password(&token, &password).await;
        match (result, form) {
            (Ok(()), false) => Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({ "detail": "Password changed; sign in with the new one" }),
            )),
            // The sign-in page says the password was changed.
            (Ok(()), true) => Ok(redirect(&with_next(
                &format!("{}/login?done=reset", self.prefix()),
                &next,
            ))),
            (Err(e), false) => Err(HttpError::from(&e)),
            (Err(AuthError::InvalidLink), true) => Ok(self.link_refused(&next)),
            (Err(e), true) => {
                // The page again, with the message (a weak password, a busy server).
                let email = self
                    .service()
                    .reset_target(&token)
                    .await?
                    .unwrap_or_default();
                let message = match &e {
                    AuthError::Internal(_) => "Something went wrong; please try again".to_owned(),
                    other => other.to_string(),
                };
                let status = HttpError::from(&e).status();
                Ok(self.reset_page(status, &token, &email, Some(&message), &next))
            }
        }
    }

    /// The forgot page: the form, or after a post `done`. `next` (from [`next_of`]) is where
    /// the sign-in page was to lead; its links back carry it, and so does the form.
    fn forgot_page(
        &self,
        status: StatusCode,
        error: Option<&str>,
        done: Option<&str>,
        next: &str,
    ) -> Response<Body> {
        let prefix = self.prefix();
        let back = escape_html(&with_next(&format!("{prefix}/login"), next));
        let body = match done {
            Some(done) => format!(
                "<p class=\"done\" role=\"status\">{}</p><p><a href=\"{back}\">Back to sign in</a></p>",
                escape_html(done)
            ),
            None => format!(
                "<p>Enter the address of your account and we will send you a link to choose a new password.</p>\
                 <form method=\"post\" action=\"{prefix}/forgot-password\" novalidate>{next_field}\
                 <label for=\"email\">Email</label>\
                 <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required>\
                 <button type=\"submit\">Send the link</button></form>\
                 <p><a href=\"{back}\">Back to sign in</a></p>",
                next_field = next_field(next),
            ),
        };
        page(status, "Forgot your password?", error, &body)
    }

    /// The reset page's form; `next` (from [`next_of`]) goes along to the sign-in page.
    fn reset_page(
        &self,
        status: StatusCode,
        token: &SecretString,
        email: &str,
        error: Option<&str>,
        next: &str,
    ) -> Response<Body> {
        let prefix = self.prefix();
        let body = format!(
            "<form method=\"post\" action=\"{prefix}/reset-password\" novalidate>\
             <input type=\"hidden\" name=\"token\" value=\"{token}\">{next_field}\
             <input type=\"text\" name=\"username\" autocomplete=\"username\" value=\"{email}\" hidden>\
             <p>For <strong>{email}</strong>.</p>\
             <label for=\"password\">New password</label>\
             <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required>\
             <p class=\"hint\">Every session of this account is signed out.</p>\
             <button type=\"submit\">Set the password</button></form>",
            token = escape_html(token.expose()),
            email = escape_html(email),
            next_field = next_field(next),
        );
        page(status, "Choose a new password", error, &body)
    }

    fn link_refused(&self, next: &str) -> Response<Body> {
        let again = escape_html(&with_next(
            &format!("{}/forgot-password", self.prefix()),
            next,
        ));
        page(
            StatusCode::NOT_FOUND,
            "Choose a new password",
            Some("This link is invalid or has expired"),
            &format!("<p><a href=\"{again}\">Ask for a new link</a></p>"),
        )
    }
}

/// The hidden form field that carries `next` (checked again by [`safe_next`]); none for `/`.
fn next_field(next: &str) -> String {
    let next = safe_next(next);
    if next == "/" {
        return String::new();
    }
    format!(
        "<input type=\"hidden\" name=\"next\" value=\"{}\">",
        escape_html(next)
    )
}

pub(super) fn page(
    status: StatusCode,
    title: &str,
    error: Option<&str>,
    body: &str,
) -> Response<Body> {
    let error = error.map_or_else(String::new, |e| {
        format!("<p class=\"error\" role=\"alert\">{}</p>", escape_html(e))
    });
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head>\
         <body><main><h1>{title}</h1>{error}{body}</main></body></html>"
    );
    let mut resp = Response::new(body::full(Bytes::from(html)));
    *resp.status_mut() = status;
    html_headers(resp.headers_mut());
    // The reset page holds the token: never cached, and its address is never sent on as a
    // Referer (`strict-origin` gives only the origin). Not `no-referrer`: under it Chromium
    // sends its form posts with `Origin: null`, which the same-origin check refuses
    // (tests/browser/recovery.mjs).
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp.headers_mut().insert(
        header::REFERRER_POLICY,
        http::HeaderValue::from_static("strict-origin"),
    );
    resp
}

/// The bound on background reset work, for [`AuthApi::new`].
pub(super) fn background_permits() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(BACKGROUND_RESETS))
}
