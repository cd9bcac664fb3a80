//! The hosted account page, `GET {prefix}/account`: who is signed in, their live sessions with
//! a "Sign out" button for each, whether two-factor sign-in is on (with a link to the
//! second-factor page), and a form to change the password. Like the other hosted
//! pages: plain HTML forms, no script, no external asset; the forms post back to
//! `POST {prefix}/account` with the session's CSRF token as a hidden field, and are refused
//! cross-site and cross-origin. A visitor who is not signed in is sent to the sign-in page,
//! which returns here.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Request, Response, StatusCode};
use tracing::Instrument;

use super::admission::{Session, refuse_cross_site};
use super::api::AuthApi;
use super::cookies;
use super::form::{form_decode, form_value, percent_encode};
use super::pages::redirect;
use crate::auth::error::AuthError;
use crate::auth::service::SessionView;
use crate::body::{self, Body};
use crate::error::{HttpError, PAGE_STYLE as STYLE, escape_html, html_headers};
use crate::ratelimit::Action;
use crate::secret::SecretString;

/// A note shown above the page's content.
enum Note<'a> {
    Done(&'a str),
    Error(&'a str),
}

impl AuthApi {
    /// `GET {prefix}/account`.
    pub(super) async fn account_page(
        &self,
        req: &Request<Body>,
        tls: bool,
    ) -> Result<Response<Body>, HttpError> {
        let Ok(session) = self.authenticate(req.headers(), tls) else {
            return Ok(self.to_sign_in());
        };
        let query = form_decode(req.uri().query().unwrap_or(""));
        let note = match form_value(&query, "done").as_deref() {
            Some("password") => Some(Note::Done(
                "Password changed. Every other session was signed out.",
            )),
            Some("session") => Some(Note::Done("That session was signed out.")),
            Some("linked") => Some(Note::Done(
                "The identity provider is linked: you can sign in with it from now on.",
            )),
            Some("unlinked") => Some(Note::Done("The identity provider was unlinked.")),
            Some("link-refused") => Some(Note::Error(
                "That identity could not be linked: it belongs to another account here, or this site's rules refuse it.",
            )),
            Some("link-failed") => Some(Note::Error(
                "The identity provider could not be linked; please try again.",
            )),
            _ => None,
        };
        self.render_account(StatusCode::OK, req.headers(), tls, &session, note)
            .await
    }

    /// `POST {prefix}/account` from the page's forms: `op=end` with `session`, or
    /// `op=change-password` with `current_password` and `new_password`; both with `csrf`.
    pub(super) async fn account_post(
        &self,
        req: Request<Body>,
        tls: bool,
        client_ip: IpAddr,
    ) -> Result<Response<Body>, HttpError> {
        refuse_cross_site(req.headers())?;
        let headers = req.headers().clone();
        let fields = self.read_form(req, tls).await?;
        // What is asked is checked first: a malformed post is a 400 whoever sends it.
        if !matches!(
            form_value(&fields, "op").as_deref(),
            Some("end" | "change-password" | "unlink")
        ) {
            return Err(HttpError::BadRequest("Unknown account action".into()));
        }
        if form_value(&fields, "csrf").is_none_or(|t| t.is_empty()) {
            return Err(HttpError::Forbidden("CSRF token missing or invalid"));
        }
        let Ok(session) = self.authenticate(&headers, tls) else {
            return Ok(self.to_sign_in());
        };
        if !self.form_csrf_ok(&headers, tls, &session.claims.sid, &fields) {
            return Err(HttpError::Forbidden("CSRF token missing or invalid"));
        }
        let page = format!("{}/account", self.prefix());
        match form_value(&fields, "op").as_deref() {
            Some("end") => {
                let id = form_value(&fields, "session").unwrap_or_default();
                if !self.service().end_session(&session.claims, &id).await? {
                    return Err(HttpError::NotFound);
                }
                if id == session.claims.sid {
                    let mut resp = redirect(&format!("{}/login", self.prefix()));
                    self.clear_cookies(resp.headers_mut(), tls);
                    return Ok(resp);
                }
                Ok(redirect(&format!("{page}?done=session")))
            }
            Some("unlink") => {
                let provider = form_value(&fields, "provider").unwrap_or_default();
                match self
                    .service()
                    .unlink_identity(&session.claims.sub, &provider)
                    .await
                {
                    Ok(_) => Ok(redirect(&format!("{page}?done=unlinked"))),
                    Err(AuthError::MfaState(why)) => {
                        self.render_account(
                            StatusCode::CONFLICT,
                            &headers,
                            tls,
                            &session,
                            Some(Note::Error(why)),
                        )
                        .await
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Some("change-password") => {
                let email = session.claims.email.clone();
                if let Err(e) = self.throttle(Action::Login, client_ip, Some(&email)).await {
                    let note = Note::Error("Too many attempts; please wait a little and try again");
                    let mut resp = self
                        .render_account(e.status(), &headers, tls, &session, Some(note))
                        .await?;
                    if let Some(v) = e.response(false).headers().get(header::RETRY_AFTER) {
                        resp.headers_mut().insert(header::RETRY_AFTER, v.clone());
                    }
                    return Ok(resp);
                }
                let current =
                    SecretString::new(form_value(&fields, "current_password").unwrap_or_default());
                let new =
                    SecretString::new(form_value(&fields, "new_password").unwrap_or_default());
                let result = self
                    .service()
                    .change_password(
                        &session.claims,
                        &current,
                        &new,
                        super::account::client_of(&headers, client_ip),
                    )
                    .instrument(tracing::info_span!("change_password", %client_ip, form = true))
                    .await;
                self.record_login(&email, client_ip, &result).await;
                super::throttle::pace(&result).await;
                match result {
                    Ok(issued) => {
                        let mut resp = redirect(&format!("{page}?done=password"));
                        for c in self.session_cookies(&issued, tls) {
                            resp.headers_mut().append(header::SET_COOKIE, c);
                        }
                        Ok(resp)
                    }
                    // The session itself is gone (disabled meanwhile): sign in again.
                    Err(AuthError::NotAuthenticated(_)) => Ok(self.to_sign_in()),
                    Err(e) => {
                        let status = HttpError::from(&e).status();
                        let message = match &e {
                            AuthError::Internal(_) => {
                                "Something went wrong; please try again".to_owned()
                            }
                            other => other.to_string(),
                        };
                        self.render_account(
                            status,
                            &headers,
                            tls,
                            &session,
                            Some(Note::Error(&message)),
                        )
                        .await
                    }
                }
            }
            _ => Err(HttpError::BadRequest("Unknown account action".into())),
        }
    }

    /// 303 to the sign-in page, which comes back here.
    fn to_sign_in(&self) -> Response<Body> {
        let back = format!("{}/account", self.prefix());
        redirect(&format!(
            "{}/login?next={}",
            self.prefix(),
            percent_encode(&back)
        ))
    }

    async fn render_account(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        tls: bool,
        session: &Session,
        note: Option<Note<'_>>,
    ) -> Result<Response<Body>, HttpError> {
        let sessions = self.service().sessions(&session.claims).await?;
        let mfa = self.service().mfa_status(&session.claims).await?;
        let has_password = self.service().has_password(&session.claims.sub).await?;
        let providers = self
            .providers_section(&session.claims.sub, headers, tls)
            .await?;
        let prefix = self.prefix();
        let csrf = cookies::get(
            headers,
            cookies::names(tls, self.transparent_refresh()).csrf,
        )
        .unwrap_or("");
        let csrf = escape_html(csrf);
        let note = match note {
            Some(Note::Done(m)) => {
                format!("<p class=\"done\" role=\"status\">{}</p>", escape_html(m))
            }
            Some(Note::Error(m)) => {
                format!("<p class=\"error\" role=\"alert\">{}</p>", escape_html(m))
            }
            None => String::new(),
        };
        let rows: String = sessions
            .iter()
            .map(|s| session_row(prefix, &csrf, s))
            .collect();
        let page = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>Your account</title><style>{STYLE}</style></head>\
             <body><main><h1>Your account</h1>{note}\
             <p>Signed in as <strong>{email}</strong>. <a href=\"{prefix}/logout\">Sign out</a></p>\
             <h2>Sessions</h2><ul class=\"sessions\">{rows}</ul>\
             <h2>Two-factor sign-in</h2><p>{two_factor} \
             <a href=\"{prefix}/two-factor?next={prefix}/account\">{manage}</a></p>\
             {providers}\
             <h2>{password_title}</h2>\
             <form method=\"post\" action=\"{prefix}/account\" novalidate>\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <input type=\"hidden\" name=\"op\" value=\"change-password\">\
             <input type=\"text\" name=\"username\" autocomplete=\"username\" value=\"{email}\" hidden>\
             {current}\
             <label for=\"new_password\">New password</label>\
             <input id=\"new_password\" name=\"new_password\" type=\"password\" autocomplete=\"new-password\" required>\
             <p class=\"hint\">Every other session is signed out.</p>\
             <button type=\"submit\">{password_title}</button></form>\
             </main></body></html>",
            email = escape_html(&session.claims.email),
            password_title = if has_password {
                "Change password"
            } else {
                "Set a password"
            },
            current = if has_password {
                "<label for=\"current_password\">Current password</label>\
                 <input id=\"current_password\" name=\"current_password\" type=\"password\" autocomplete=\"current-password\" required>"
            } else {
                "<p class=\"hint\">Your account signs in with an identity provider and has no password yet.</p>"
            },
            two_factor = if mfa.totp {
                "On: an authenticator app."
            } else {
                "Off."
            },
            manage = if mfa.totp { "Manage" } else { "Set up" },
        );
        let mut resp = Response::new(body::full(Bytes::from(page)));
        *resp.status_mut() = status;
        html_headers(resp.headers_mut());
        Ok(resp)
    }
}

impl AuthApi {
    /// The account page's "Sign-in providers" section: linked providers with an Unlink form,
    /// the others with a Link form (empty without single sign-on).
    async fn providers_section(
        &self,
        user_id: &str,
        headers: &HeaderMap,
        tls: bool,
    ) -> Result<String, HttpError> {
        let Some(sso) = self.sso() else {
            return Ok(String::new());
        };
        let prefix = self.prefix();
        let csrf = escape_html(
            cookies::get(
                headers,
                cookies::names(tls, self.transparent_refresh()).csrf,
            )
            .unwrap_or(""),
        );
        let linked = self.service().identities(user_id).await?;
        let mut rows = String::new();
        for p in sso.providers() {
            let id = escape_html(&p.settings.id);
            let name = escape_html(&p.settings.display_name);
            match linked.iter().find(|l| l.provider == p.settings.id) {
                Some(l) => rows.push_str(&format!(
                    "<li data-provider=\"{id}\"><span>{name}: linked{as_email}</span>\
                     <form method=\"post\" action=\"{prefix}/account\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                     <input type=\"hidden\" name=\"op\" value=\"unlink\">\
                     <input type=\"hidden\" name=\"provider\" value=\"{id}\">\
                     <button type=\"submit\">Unlink</button></form></li>",
                    as_email = l
                        .email
                        .as_deref()
                        .map(|e| format!(" as {}", escape_html(e)))
                        .unwrap_or_default(),
                )),
                None => rows.push_str(&format!(
                    "<li data-provider=\"{id}\"><span>{name}: not linked</span>\
                     <form method=\"post\" action=\"{prefix}/sso/{id}/link\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                     <button type=\"submit\">Link</button></form></li>"
                )),
            }
        }
        Ok(format!(
            "<h2>Sign-in providers</h2><ul class=\"providers\">{rows}</ul>"
        ))
    }
}

/// One session in the list, with its sign-out form.
fn session_row(prefix: &str, csrf: &str, s: &SessionView) -> String {
    let agent = s.user_agent.as_deref().unwrap_or("Unknown browser");
    let from =
        s.ip.as_deref()
            .map(|ip| format!(" from {}", escape_html(ip)))
            .unwrap_or_default();
    let this = if s.current {
        " <strong>(this browser)</strong>"
    } else {
        ""
    };
    format!(
        "<li><span>{agent}{from}{this}</span><br><span class=\"hint\">Signed in {created}, last active {used}</span>\
         <form method=\"post\" action=\"{prefix}/account\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <input type=\"hidden\" name=\"op\" value=\"end\">\
         <input type=\"hidden\" name=\"session\" value=\"{id}\">\
         <button type=\"submit\">Sign out</button></form></li>",
        agent = escape_html(agent),
        created = escape_html(&s.created_at),
        used = escape_html(&s.last_used_at),
        id = escape_html(&s.id),
    )
}
