//! Address verification over HTTP, on when `email:` is configured (404 otherwise):
//!
//! - `GET {prefix}/verify-email?token=...`: a page with one button (a GET never uses the
//!   token: mail scanners follow links).
//! - `POST {prefix}/verify-email` `{token}` (JSON or the page's form): marks the address
//!   verified; `200`, or from the form a page saying so. When the browser holds a session, its
//!   cookies are refreshed on the spot so that its next request carries the verified claim.
//!   An unusable link is `404`.
//! - `POST {prefix}/request-verification` (signed in; JSON, or the form of a route's "verify
//!   your address" page): sends a new link unless the address is verified already; `202`.
//!   Rate-limited per IP and per account like login.
//!
//! A signup sends the first link by itself.

use std::net::IpAddr;

use http::{Request, Response, StatusCode, header};
use serde::Deserialize;

use super::admission::refuse_cross_site;
use super::api::AuthApi;
use super::cookies;
use super::endpoints::{is_form, read_json};
use super::form::{form_decode, form_value, safe_next};
use super::pages::{read_limited, redirect};
use super::recovery::page;
use crate::auth::error::AuthError;
use crate::body::Body;
use crate::error::{HttpError, escape_html, json_response};
use crate::mail::Template;
use crate::ratelimit::Action;
use crate::secret::SecretString;

/// The answer to `request-verification`.
const SENT: &str = "A link to verify your address is on its way, unless it is verified already.";

#[derive(Deserialize)]
struct Verify {
    token: String,
}

impl AuthApi {
    /// Sends a verification link to `user_id` in the background, when the user is unverified.
    pub(super) fn send_verification(&self, user_id: &str) {
        let Some(mailer) = self.mailer().cloned() else {
            return;
        };
        let Ok(permit) = std::sync::Arc::clone(self.background()).try_acquire_owned() else {
            tracing::warn!("mail work saturated; a verification mail dropped");
            return;
        };
        let service = self.service().clone();
        let ttl = self.verify_ttl();
        let page = format!("{}/verify-email", self.prefix());
        let user_id = user_id.to_owned();
        tokio::spawn(async move {
            let _permit = permit;
            match service.start_verification(&user_id, ttl).await {
                Ok(Some(link)) => {
                    let sent = mailer.send_link(
                        Template::VerifyEmail,
                        &link.email,
                        &page,
                        link.token.expose(),
                        ttl,
                    );
                    if let Err(e) = sent {
                        tracing::warn!(error = %e, "the verification mail was not queued");
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "a verification request failed"),
            }
        });
    }

    /// `GET {prefix}/verify-email`.
    pub(super) async fn verify_page(
        &self,
        req: &Request<Body>,
    ) -> Result<Response<Body>, HttpError> {
        if self.mailer().is_none() {
            return Err(HttpError::NotFound);
        }
        let query = form_decode(req.uri().query().unwrap_or(""));
        let token = SecretString::new(form_value(&query, "token").unwrap_or_default());
        match self.service().verify_target(&token).await? {
            Some(email) => {
                let prefix = self.prefix();
                let body = format!(
                    "<form method=\"post\" action=\"{prefix}/verify-email\">\
                     <input type=\"hidden\" name=\"token\" value=\"{token}\">\
                     <p>Confirm that <strong>{email}</strong> is your address.</p>\
                     <button type=\"submit\">Verify my address</button></form>",
                    token = escape_html(token.expose()),
                    email = escape_html(&email),
                );
                Ok(page(
                    StatusCode::OK,
                    "Verify your email address",
                    None,
                    &body,
                ))
            }
            None => Ok(self.verify_link_refused()),
        }
    }

    /// `POST {prefix}/verify-email`.
    pub(super) async fn verify_email(
        &self,
        req: Request<Body>,
        tls: bool,
    ) -> Result<Response<Body>, HttpError> {
        if self.mailer().is_none() {
            return Err(HttpError::NotFound);
        }
        refuse_cross_site(req.headers())?;
        let form = is_form(req.headers());
        let headers = req.headers().clone();
        let token = if form {
            let fields = self.read_form(req, tls).await?;
            match form_value(&fields, "token").filter(|t| !t.is_empty()) {
                Some(t) => t,
                None => return Ok(self.verify_link_refused()),
            }
        } else {
            read_json::<Verify>(req, self.body_limit()).await?.token
        };
        let token = SecretString::new(token);
        let email = match self.service().verify_email(&token).await {
            Ok(email) => email,
            Err(AuthError::InvalidLink) if form => return Ok(self.verify_link_refused()),
            Err(e) => return Err(HttpError::from(&e)),
        };
        if !form {
            return Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({ "detail": "Email address verified" }),
            ));
        }
        let mut resp = page(
            StatusCode::OK,
            "Email address verified",
            None,
            &format!(
                "<p class=\"done\" role=\"status\"><strong>{}</strong> is verified.</p>\
                 <p><a href=\"/\">Continue</a></p>",
                escape_html(&email)
            ),
        );
        // The browser's session, if it has one, gets tokens that say so right away.
        if let Some(refresh) = cookies::get(
            &headers,
            cookies::names(tls, self.transparent_refresh()).refresh,
        )
        .filter(|r| !r.is_empty())
            && let Ok(issued) = self
                .service()
                .refresh(&SecretString::new(refresh.to_owned()))
                .await
        {
            for c in self.session_cookies(&issued, tls) {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
        }
        Ok(resp)
    }

    /// `POST {prefix}/request-verification`.
    pub(super) async fn request_verification(
        &self,
        req: Request<Body>,
        tls: bool,
        client_ip: IpAddr,
    ) -> Result<Response<Body>, HttpError> {
        if self.mailer().is_none() {
            return Err(HttpError::NotFound);
        }
        refuse_cross_site(req.headers())?;
        let form = is_form(req.headers());
        let headers = req.headers().clone();
        let (session, next) = if form {
            let fields = self.read_form(req, tls).await?;
            // What is asked is checked first: a post without its CSRF field is refused
            // whoever sends it.
            if form_value(&fields, "csrf").is_none_or(|t| t.is_empty()) {
                return Err(HttpError::Forbidden("CSRF token missing or invalid"));
            }
            let Ok(session) = self.authenticate(&headers, tls) else {
                return Ok(redirect(&format!("{}/login", self.prefix())));
            };
            if !self.form_csrf_ok(&headers, tls, &session.claims.sid, &fields) {
                return Err(HttpError::Forbidden("CSRF token missing or invalid"));
            }
            let next = form_value(&fields, "next").unwrap_or_else(|| "/".to_owned());
            (session, Some(next))
        } else {
            let session = self.signed_in(&headers, tls, true)?;
            // No fields are asked for; a body, when sent, must still be a JSON object.
            let body = read_limited(req, self.body_limit()).await?;
            if !body.trim_ascii().is_empty()
                && serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body)
                    .is_err()
            {
                return Err(HttpError::Unprocessable("Malformed JSON body".into()));
            }
            (session, None)
        };
        self.throttle(Action::Login, client_ip, Some(&session.claims.email))
            .await?;
        self.send_verification(&session.claims.sub);
        match next {
            None => Ok(json_response(
                StatusCode::ACCEPTED,
                &serde_json::json!({ "detail": SENT }),
            )),
            Some(next) => {
                let body = format!(
                    "<p class=\"done\" role=\"status\">{}</p><p><a href=\"{}\">Back</a></p>",
                    escape_html(SENT),
                    escape_html(safe_next(&next))
                );
                Ok(page(
                    StatusCode::ACCEPTED,
                    "Verify your email address",
                    None,
                    &body,
                ))
            }
        }
    }

    fn verify_link_refused(&self) -> Response<Body> {
        page(
            StatusCode::NOT_FOUND,
            "Verify your email address",
            Some("This link is invalid or has expired"),
            "<p>Sign in and open a page that needs a verified address to get a new link.</p>",
        )
    }
}
