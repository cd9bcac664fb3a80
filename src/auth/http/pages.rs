//! Hosted pages: sign in, sign up and sign out, for apps that have no login screen of their own,
//! and what a route's 403 page offers a signed-in browser ([`AuthApi::no_access`]; the page
//! itself is drawn in [`crate::error`]).
//!
//! Plain HTML forms with labels, `autocomplete` hints and errors shown in the page; no script
//! and no external asset, so the Content-Security-Policy can forbid both. A successful sign-in
//! or sign-up sets the session cookies and `303`s to `next` (only ever a same-origin path). The
//! sign-out form carries the CSRF token as a hidden field. Login CSRF is refused with Fetch
//! Metadata and an `Origin` check.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tracing::Instrument;

use sha2::{Digest, Sha256};

use super::admission::refuse_cross_site;
use super::api::AuthApi;
use super::cookies;
use super::form::{form_decode, form_value, percent_encode, safe_next, with_next};
use crate::auth::error::AuthError;
use crate::auth::service::Login;
use crate::body::{self, Body};
use crate::error::{HttpError, NoAccess, PAGE_STYLE as STYLE, escape_html, html_headers};
use crate::secret::SecretString;
use crate::store::RefreshState;

/// Which form a page shows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    Login,
    Signup,
    Logout,
}

impl Form {
    fn from_action(action: &str) -> Option<Form> {
        match action {
            "/login" => Some(Form::Login),
            "/signup" => Some(Form::Signup),
            "/logout" => Some(Form::Logout),
            _ => None,
        }
    }
}

/// What to show in a page besides the form.
struct View<'a> {
    form: Form,
    next: &'a str,
    error: Option<&'a str>,
    /// A notice that something went well (`role="status"`), above the form.
    notice: Option<&'static str>,
    email: &'a str,
    name: &'a str,
    /// For the sign-out page: who is signed in and the CSRF token.
    signed_in: Option<(&'a str, &'a str)>,
}

/// Why a signed-in user is refused a route, as its 403 tells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Roles, or another user's path.
    NoAccess,
    /// The address is not verified (the page offers the link again).
    Unverified,
    /// The session lacks a second factor (a browser goes to the second-factor page).
    SecondFactor,
}

impl AuthApi {
    /// `GET {prefix}/login|signup|logout`.
    pub(super) async fn page(
        &self,
        action: &str,
        req: &Request<Body>,
        tls: bool,
    ) -> Response<Body> {
        let Some(form) = Form::from_action(action) else {
            return HttpError::NotFound.response(true);
        };
        let query = form_decode(req.uri().query().unwrap_or(""));
        let next = form_value(&query, "next").unwrap_or_else(|| "/".to_owned());
        let next = safe_next(&next);
        // Where another page sent the browser, a fixed notice by name: never the URL's text.
        let notice = match form_value(&query, "done").as_deref() {
            Some("reset") if form == Form::Login => {
                Some("Your password has been changed. Sign in with the new one.")
            }
            _ => None,
        };
        let csrf = cookies::get(
            req.headers(),
            cookies::names(tls, self.transparent_refresh()).csrf,
        )
        .unwrap_or("");
        // The sign-out page must also recognise a browser whose access cookie has expired but
        // whose refresh cookie is still live: its next request would be signed in again.
        let signed_in_as = if form == Form::Logout {
            match self.authenticate(req.headers(), tls) {
                Ok(s) => Some(s.claims.email.clone()),
                Err(_) => match cookies::get(
                    req.headers(),
                    cookies::names(tls, self.transparent_refresh()).refresh,
                )
                .filter(|r| !r.is_empty())
                {
                    Some(r) => {
                        self.live_refresh_email(&SecretString::new(r.to_owned()))
                            .await
                    }
                    None => None,
                },
            }
        } else {
            None
        };
        let signed_in = signed_in_as.as_deref().map(|email| (email, csrf));
        self.render(
            StatusCode::OK,
            &View {
                form,
                next,
                error: None,
                notice,
                email: "",
                name: "",
                signed_in,
            },
        )
    }

    /// `POST {prefix}/login|signup|logout` from the hosted forms.
    pub(super) async fn form_post(
        &self,
        action: &str,
        req: Request<Body>,
        tls: bool,
        client_ip: IpAddr,
    ) -> Result<Response<Body>, HttpError> {
        let Some(form) = Form::from_action(action) else {
            return Err(HttpError::NotFound);
        };
        refuse_cross_site(req.headers())?;
        let headers = req.headers().clone();
        let fields = self.read_form(req, tls).await?;
        let next_raw = form_value(&fields, "next").unwrap_or_else(|| "/".to_owned());
        let next = safe_next(&next_raw);
        let email = form_value(&fields, "email").unwrap_or_default();
        let name = form_value(&fields, "name").unwrap_or_default();
        let password = SecretString::new(form_value(&fields, "password").unwrap_or_default());

        let action = match form {
            Form::Login => Some((crate::ratelimit::Action::Login, Some(email.as_str()))),
            Form::Signup => Some((crate::ratelimit::Action::Signup, Some(email.as_str()))),
            Form::Logout => None,
        };
        if let Some((action, account)) = action
            && let Err(e) = self.throttle(action, client_ip, account).await
        {
            let message = "Too many attempts; please wait a little and try again";
            let mut resp = self.render(
                e.status(),
                &View {
                    form,
                    next,
                    error: Some(message),
                    notice: None,
                    email: &email,
                    name: &name,
                    signed_in: None,
                },
            );
            if let Some(v) = e.response(false).headers().get(header::RETRY_AFTER) {
                resp.headers_mut().insert(header::RETRY_AFTER, v.clone());
            }
            return Ok(resp);
        }
        let result = match form {
            Form::Login => {
                let r = self
                    .service()
                    .login_from(
                        &email,
                        &password,
                        super::account::client_of(&headers, client_ip),
                    )
                    .instrument(tracing::info_span!("login", %client_ip, form = true))
                    .await;
                if !matches!(r, Ok(Login::SecondFactor(_))) {
                    self.record_login(&email, client_ip, &r).await;
                }
                match r {
                    Ok(Login::SecondFactor(challenge)) => {
                        return Ok(super::mfa::second_screen(
                            self.prefix(),
                            StatusCode::OK,
                            &challenge.mfa_token,
                            next,
                            None,
                            self.has_passkeys() && challenge.methods.contains(&"webauthn"),
                        ));
                    }
                    Ok(Login::Session(issued)) => Ok(*issued),
                    Err(e) => Err(e),
                }
            }
            Form::Signup => {
                let name = Some(name.as_str()).filter(|n| !n.trim().is_empty());
                let r = self
                    .service()
                    .signup_from(
                        &email,
                        &password,
                        name,
                        super::account::client_of(&headers, client_ip),
                    )
                    .instrument(tracing::info_span!("signup", %client_ip, form = true))
                    .await;
                if let Ok(issued) = &r {
                    self.send_verification(&issued.claims.sub);
                }
                r
            }
            Form::Logout => return self.form_logout(&headers, &fields, tls).await,
        };
        super::throttle::pace(&result).await;
        match result {
            Ok(issued) => {
                // A role that needs a second factor, and none yet: set one up first.
                let enrol = !issued.claims.mfa()
                    && issued
                        .claims
                        .roles
                        .iter()
                        .any(|r| self.mfa_roles().contains(r));
                let mut resp = if enrol {
                    redirect(&format!(
                        "{}/two-factor?next={}",
                        self.prefix(),
                        percent_encode(safe_next(next))
                    ))
                } else {
                    redirect(next)
                };
                for c in self.session_cookies(&issued, tls) {
                    resp.headers_mut().append(header::SET_COOKIE, c);
                }
                Ok(resp)
            }
            Err(e) => {
                let status = HttpError::from(&e).status();
                let message = match &e {
                    AuthError::Internal(_) => "Something went wrong; please try again".to_owned(),
                    other => other.to_string(),
                };
                let mut resp = self.render(
                    status,
                    &View {
                        form,
                        next,
                        error: Some(&message),
                        notice: None,
                        email: &email,
                        name: &name,
                        signed_in: None,
                    },
                );
                // A 401 names its scheme (and a 503 its Retry-After) as the JSON answer does.
                if matches!(
                    status,
                    StatusCode::UNAUTHORIZED | StatusCode::SERVICE_UNAVAILABLE
                ) {
                    let json = HttpError::from(&e).response(false);
                    for name in [header::WWW_AUTHENTICATE, header::RETRY_AFTER] {
                        if let Some(v) = json.headers().get(&name) {
                            resp.headers_mut().insert(name, v.clone());
                        }
                    }
                }
                Ok(resp)
            }
        }
    }

    async fn form_logout(
        &self,
        headers: &HeaderMap,
        fields: &[(String, String)],
        tls: bool,
    ) -> Result<Response<Body>, HttpError> {
        let token = form_value(fields, "csrf");
        let cookie = cookies::get(
            headers,
            cookies::names(tls, self.transparent_refresh()).csrf,
        );
        let session = self.authenticate(headers, tls).ok();
        let refresh = cookies::get(
            headers,
            cookies::names(tls, self.transparent_refresh()).refresh,
        )
        .filter(|r| !r.is_empty())
        .map(|r| SecretString::new(r.to_owned()));
        let sid = match (&session, &refresh) {
            (Some(s), _) => Some(s.claims.sid.clone()),
            (None, Some(r)) => self.family_of(r).await.ok(),
            (None, None) => None,
        };
        if let Some(sid) = &sid
            && !cookies::csrf_ok(self.csrf(), sid, cookie, token.as_deref())
        {
            return Err(HttpError::Forbidden("CSRF token missing or invalid"));
        }
        if sid.is_some() {
            self.service()
                .logout(session.as_ref().map(|s| &*s.claims), refresh.as_ref())
                .await?;
        }
        // The 403 page's "use another account" sends the page to return to after signing in.
        let login = match form_value(fields, "next") {
            Some(next) => format!(
                "{}/login?next={}",
                self.prefix(),
                percent_encode(safe_next(&next))
            ),
            None => format!("{}/login", self.prefix()),
        };
        // A session from an identity provider configured with `logout_at_provider` goes on to
        // end the provider's session too, which sends the browser back to the sign-in page.
        let at_provider = match (
            self.sso(),
            session.as_ref().and_then(|s| s.claims.idp.clone()),
        ) {
            (Some(sso), Some(idp)) => match sso.provider(&idp) {
                Some(p) => {
                    let back = format!("{}{}", self.public_url(), login);
                    sso.logout_url(p, &back).await
                }
                None => None,
            },
            _ => None,
        };
        let mut resp = redirect(at_provider.as_deref().unwrap_or(&login));
        self.clear_cookies(resp.headers_mut(), tls);
        Ok(resp)
    }

    /// The 403 for a signed-in user whom a route refuses: a page offering to sign in with
    /// another account for browsers (the sign-out form carries the session's CSRF token, as the
    /// sign-out page does), `Forbidden` for API clients. `roles` would be let in; they are named
    /// only when `auth.show_required_roles` allows. `next` is the refused path and query.
    pub(crate) fn no_access(
        &self,
        headers: &HeaderMap,
        tls: bool,
        claims: &crate::auth::token::AccessClaims,
        roles: &[String],
        next: &str,
        why: Refusal,
    ) -> HttpError {
        let csrf = cookies::get(
            headers,
            cookies::names(tls, self.transparent_refresh()).csrf,
        )
        .filter(|c| !c.is_empty())
        .map(|c| SecretString::new(c.to_owned()));
        HttpError::NoAccess(Box::new(NoAccess {
            email: claims.email.clone(),
            roles: if self.show_required_roles() {
                roles.to_vec()
            } else {
                Vec::new()
            },
            sign_out: format!("{}/logout", self.prefix()),
            csrf,
            next: safe_next(next).to_owned(),
            verify: (why == Refusal::Unverified)
                .then(|| format!("{}/request-verification", self.prefix())),
            mfa: (why == Refusal::SecondFactor).then(|| {
                format!(
                    "{}/two-factor?next={}",
                    self.prefix(),
                    super::form::percent_encode(safe_next(next))
                )
            }),
        }))
    }

    /// The fields of a hosted form's post, after checking it comes from this origin (the
    /// caller has refused cross-site requests).
    pub(super) async fn read_form(
        &self,
        req: Request<Body>,
        tls: bool,
    ) -> Result<Vec<(String, String)>, HttpError> {
        // HTTP/2 carries the host in :authority, not in a Host header.
        let authority = req.uri().authority().map(|a| a.as_str().to_owned());
        if !same_origin(req.headers(), authority.as_deref(), tls) {
            return Err(HttpError::Forbidden("Cross-origin form post refused"));
        }
        let body = read_limited(req, self.body_limit()).await?;
        Ok(form_decode(&String::from_utf8_lossy(&body)))
    }

    /// Whether a form's `csrf` field is the session's CSRF token (and its cookie's value).
    pub(super) fn form_csrf_ok(
        &self,
        headers: &HeaderMap,
        tls: bool,
        session_id: &str,
        fields: &[(String, String)],
    ) -> bool {
        let cookie = cookies::get(
            headers,
            cookies::names(tls, self.transparent_refresh()).csrf,
        );
        let token = form_value(fields, "csrf");
        cookies::csrf_ok(self.csrf(), session_id, cookie, token.as_deref())
    }

    /// The email of the user a still-usable refresh token belongs to: known, active (not
    /// rotated or revoked), unexpired, and its user not disabled. For the sign-out page when
    /// the access cookie has expired.
    pub(super) async fn live_refresh_email(&self, token: &SecretString) -> Option<String> {
        let hash: [u8; 32] = Sha256::digest(token.expose().as_bytes()).into();
        let store = self.service().store().clone();
        let rec = tokio::task::spawn_blocking(move || store.get_refresh(&hash))
            .await
            .ok()?
            .ok()??;
        let live = rec.state == RefreshState::Active
            && self.service().clock().unix() < rec.family_expires_at;
        if !live {
            return None;
        }
        self.service()
            .user(&rec.user_id)
            .await
            .ok()
            .map(|u| u.email)
    }

    fn render(&self, status: StatusCode, v: &View<'_>) -> Response<Body> {
        let prefix = self.prefix();
        let next_q = percent_encode(v.next);
        let next_field = format!(
            "<input type=\"hidden\" name=\"next\" value=\"{}\">",
            escape_html(v.next)
        );
        let error = v.error.map_or_else(String::new, |e| {
            format!("<p class=\"error\" role=\"alert\">{}</p>", escape_html(e))
        });
        let notice = v.notice.map_or_else(String::new, |n| {
            format!("<p class=\"done\" role=\"status\">{}</p>", escape_html(n))
        });
        let sso = self.sso_buttons(v.next);
        let passkey = if self.passwordless() {
            super::passkeys::button(
                "sign-in",
                "Sign in with a passkey",
                &[("next", safe_next(v.next))],
            ) + &super::passkeys::support(prefix)
        } else {
            String::new()
        };
        let (title, body) = match v.form {
            Form::Login if !self.password_login() => ("Sign in", format!("{sso}{passkey}")),
            Form::Signup if !self.password_login() => (
                "Create an account",
                format!(
                    "<p>Accounts here are made by signing in with your organisation's identity provider.</p>{sso}"
                ),
            ),
            Form::Login => (
                "Sign in",
                format!(
                    "<form method=\"post\" action=\"{prefix}/login\" novalidate>{next_field}\
                     <label for=\"email\">Email</label>\
                     <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required value=\"{email}\">\
                     <label for=\"password\">Password</label>\
                     <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
                     <button type=\"submit\">Sign in</button></form>{sso}{passkey}{forgot}\
                     <p>No account? <a href=\"{prefix}/signup?next={next_q}\">Sign up</a></p>",
                    email = escape_html(v.email),
                    forgot = if self.mailer().is_some() {
                        format!(
                            "<p><a href=\"{}\">Forgot password?</a></p>",
                            escape_html(&with_next(&format!("{prefix}/forgot-password"), v.next))
                        )
                    } else {
                        String::new()
                    },
                ),
            ),
            Form::Signup => (
                "Create an account",
                format!(
                    "<form method=\"post\" action=\"{prefix}/signup\" novalidate>{next_field}\
                     <label for=\"name\">Name <span class=\"hint\">(optional)</span></label>\
                     <input id=\"name\" name=\"name\" type=\"text\" autocomplete=\"name\" value=\"{name}\">\
                     <label for=\"email\">Email</label>\
                     <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"email\" required value=\"{email}\">\
                     <label for=\"password\">Password</label>\
                     <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required aria-describedby=\"pw-hint\">\
                     <p id=\"pw-hint\" class=\"hint\">At least 8 characters. Long passphrases are welcome; very common passwords are refused.</p>\
                     <button type=\"submit\">Create account</button></form>{sso}\
                     <p>Already have an account? <a href=\"{prefix}/login?next={next_q}\">Sign in</a></p>",
                    email = escape_html(v.email),
                    name = escape_html(v.name),
                ),
            ),
            Form::Logout => match v.signed_in {
                Some((email, csrf)) => (
                    "Sign out",
                    format!(
                        "<p>Signed in as <strong>{email}</strong>.</p>\
                         <form method=\"post\" action=\"{prefix}/logout\">\
                         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                         <button type=\"submit\">Sign out</button></form>",
                        email = escape_html(email),
                        csrf = escape_html(csrf),
                    ),
                ),
                None => (
                    "Signed out",
                    format!(
                        "<p>You are not signed in.</p><p><a href=\"{prefix}/login\">Sign in</a></p>"
                    ),
                ),
            },
        };
        let page = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title}</title><style>{STYLE}</style></head>\
             <body><main><h1>{title}</h1>{error}{notice}{body}</main></body></html>"
        );
        let mut resp = Response::new(body::full(Bytes::from(page)));
        *resp.status_mut() = status;
        html_headers(resp.headers_mut());
        if v.form == Form::Login && self.passwordless() {
            super::passkeys::allow_script(resp.headers_mut());
        }
        resp
    }
}

impl AuthApi {
    /// "Sign in with {provider}" links, one per single sign-on provider, carrying `next`.
    fn sso_buttons(&self, next: &str) -> String {
        let Some(sso) = self.sso() else {
            return String::new();
        };
        let next_q = percent_encode(safe_next(next));
        let links: String = sso
            .providers()
            .iter()
            .map(|p| {
                format!(
                    "<p><a class=\"button sso\" data-provider=\"{id}\" href=\"{prefix}/sso/{id}/start?next={next_q}\">Sign in with {name}</a></p>",
                    id = escape_html(&p.settings.id),
                    prefix = self.prefix(),
                    name = escape_html(&p.settings.display_name),
                )
            })
            .collect();
        format!("<section class=\"sso\" aria-label=\"Single sign-on\">{links}</section>")
    }

    /// The sign-in page with an error (single sign-on failures land here).
    pub(super) fn login_page_with_error(
        &self,
        status: StatusCode,
        message: &str,
        next: &str,
    ) -> Response<Body> {
        self.render(
            status,
            &View {
                form: Form::Login,
                next: safe_next(next),
                error: Some(message),
                notice: None,
                email: "",
                name: "",
                signed_in: None,
            },
        )
    }
}

/// `303 See Other` to a same-origin path.
pub(super) fn redirect(location: &str) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A form post's `Origin`, when the browser sent one, must be this very origin.
pub(super) fn same_origin(headers: &HeaderMap, authority: Option<&str>, tls: bool) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or(authority)
    else {
        return false;
    };
    let scheme = if tls { "https" } else { "http" };
    origin.eq_ignore_ascii_case(&format!("{scheme}://{host}"))
}

pub(super) async fn read_limited(req: Request<Body>, limit: usize) -> Result<Vec<u8>, HttpError> {
    let mut body = req.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|_| HttpError::BadRequest("Could not read the request body".into()))?;
        if let Some(data) = frame.data_ref() {
            if out.len() + data.len() > limit {
                return Err(HttpError::PayloadTooLarge);
            }
            out.extend_from_slice(data);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_uses_the_http2_authority_when_there_is_no_host_header() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://app.test:8443"),
        );
        assert!(same_origin(&h, Some("app.test:8443"), true));
        assert!(!same_origin(&h, Some("evil.test"), true));
        assert!(!same_origin(&h, None, true));
        h.insert(header::HOST, HeaderValue::from_static("app.test:8443"));
        assert!(same_origin(&h, None, true));
        assert!(!same_origin(&h, None, false), "scheme must match too");
    }
}
