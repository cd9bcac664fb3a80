//! Single sign-on endpoints (see [`crate::auth::sso`] for the flow and its checks):
//!
//! - `GET {prefix}/sso/{id}/start?next=/path`: sends the browser to the provider, with the flow
//!   sealed in a short-lived cookie.
//! - `POST {prefix}/sso/{id}/link` (account page form, with the CSRF token): the same, to link
//!   the provider to the signed-in account.
//! - `GET {prefix}/sso/{id}/callback`: where the provider sends the browser back; ends in the
//!   ordinary session cookies and a `303` to `next`, or the sign-in page with what went wrong.
//! - `GET {prefix}/providers`: the providers, for a single-page app's own sign-in buttons.
//! - `GET {prefix}/identities`, `DELETE {prefix}/identities/{id}`: the signed-in user's linked
//!   providers, and unlinking one (bearer, or cookie with the CSRF header).
//!
//! Failures never show a provider's detail to the user (it goes to the log): a callback that
//! does not belong to a sign-in this browser started is 400, a provider that cannot be
//! reached 503, a provider answer that is not usable 502, a refused ID token 401, an identity
//! the rules refuse 403, an unverified address that matches an account 409.

use std::net::IpAddr;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};

use super::api::AuthApi;
use super::cookies::{self, SetCookie};
use super::form::{form_decode, form_value, percent_encode, safe_next};
use super::pages::redirect;
use crate::auth::error::AuthError;
use crate::auth::service::SsoSignIn;
use crate::auth::sso::state::{self, FLOW_TTL_SECS};
use crate::auth::sso::{Sso, SsoError};
use crate::body::Body;
use crate::error::{HttpError, json_response};
use crate::ratelimit::Action;
use crate::store::{OneTimeToken, TokenKind};

/// The part of a path under `{prefix}/sso/` that names a provider and an action.
pub(super) fn sso_action(action: &str) -> Option<(&str, &str)> {
    let rest = action.strip_prefix("/sso/")?;
    let (id, what) = rest.split_once('/')?;
    (!id.is_empty() && matches!(what, "start" | "callback" | "link")).then_some((id, what))
}

/// The provider id of `/identities/{id}`.
pub(super) fn identity_id(action: &str) -> Option<&str> {
    action
        .strip_prefix("/identities/")
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

impl AuthApi {
    /// `GET /sso/{id}/start`, `POST /sso/{id}/link`, `GET /sso/{id}/callback`.
    pub(super) async fn sso_endpoint(
        &self,
        req: Request<Body>,
        provider: &str,
        what: &str,
        tls: bool,
        client_ip: IpAddr,
    ) -> Result<Response<Body>, HttpError> {
        let Some(sso) = self.sso() else {
            return Err(HttpError::NoSuch("Unknown identity provider"));
        };
        if sso.provider(provider).is_none() {
            return Err(HttpError::NoSuch("Unknown identity provider"));
        }
        match what {
            "start" => {
                let query = form_decode(req.uri().query().unwrap_or(""));
                let next = safe_next(&form_value(&query, "next").unwrap_or_default()).to_owned();
                self.sso_start(&sso, provider, &next, None, tls, client_ip)
                    .await
            }
            "link" => {
                super::admission::refuse_cross_site(req.headers())?;
                let headers = req.headers().clone();
                let Ok(session) = self.authenticate(&headers, tls) else {
                    return Ok(redirect(&format!(
                        "{}/login?next={}",
                        self.prefix(),
                        percent_encode(&format!("{}/account", self.prefix()))
                    )));
                };
                let fields = self.read_form(req, tls).await?;
                if !self.form_csrf_ok(&headers, tls, &session.claims.sid, &fields) {
                    return Err(HttpError::Forbidden("CSRF token missing or invalid"));
                }
                let next = format!("{}/account", self.prefix());
                self.sso_start(
                    &sso,
                    provider,
                    &next,
                    Some(session.claims.sub.clone()),
                    tls,
                    client_ip,
                )
                .await
            }
            _ => self.sso_callback(&sso, req, provider, tls, client_ip).await,
        }
    }

    async fn sso_start(
        &self,
        sso: &Sso,
        id: &str,
        next: &str,
        link_user: Option<String>,
        tls: bool,
        client_ip: IpAddr,
    ) -> Result<Response<Body>, HttpError> {
        let Some(provider) = sso.provider(id) else {
            return Err(HttpError::NotFound);
        };
        let linking = link_user.is_some();
        // Each start writes a marker to the store: as bounded as sign-up attempts.
        if let Err(e) = self.throttle(Action::Sso, client_ip, None).await {
            return Ok(self.sso_failure(
                e.status(),
                "Too many attempts; please wait a little and try again",
                next,
            ));
        }
        let now = self.service().clock().unix();
        let started = match sso.start(provider, next, link_user, now).await {
            Ok(s) => s,
            Err(e) => return Ok(self.sso_error(id, &e, next)),
        };
        let marker = crate::auth::refresh_token::hash(&started.marker);
        let record = OneTimeToken {
            kind: TokenKind::SsoLogin,
            user_id: String::new(),
            email: id.to_owned(),
            created_at: now,
            expires_at: now.saturating_add(FLOW_TTL_SECS),
        };
        let store = self.service().store().clone();
        tokio::task::spawn_blocking(move || store.insert_one_time(&marker, &record))
            .await
            .map_err(|e| HttpError::Internal(e.to_string()))?
            .map_err(|e| HttpError::from(AuthError::from(e)))?;
        let mut resp = redirect(&started.authorize_url);
        *resp.status_mut() = StatusCode::FOUND;
        let cookie = SetCookie {
            name: state::cookie_name(tls),
            value: started.cookie.expose(),
            path: "/",
            max_age: Some(FLOW_TTL_SECS),
            http_only: true,
            secure: tls,
        };
        if let Ok(v) = HeaderValue::from_str(&cookie.header()) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
        tracing::info!(target: "audit", event = "sso_start", provider = id, link = linking);
        Ok(resp)
    }

    async fn sso_callback(
        &self,
        sso: &Sso,
        req: Request<Body>,
        id: &str,
        tls: bool,
        client_ip: IpAddr,
    ) -> Result<Response<Body>, HttpError> {
        let Some(provider) = sso.provider(id).cloned() else {
            return Err(HttpError::NotFound);
        };
        let query = form_decode(req.uri().query().unwrap_or(""));
        let now = self.service().clock().unix();
        let flow = cookies::get(req.headers(), state::cookie_name(tls))
            .and_then(|c| sso.open_flow(c, now))
            .filter(|f| f.provider == id);
        let next = flow.as_ref().map_or("/", |f| f.next.as_str()).to_owned();
        let finish = |resp: Response<Body>| self.drop_flow_cookie(resp, tls);
        let Some(flow) = flow else {
            return Ok(finish(self.sso_error(id, &SsoError::BadState, "/")));
        };
        if let Some(error) = form_value(&query, "error") {
            let code: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            return Ok(finish(self.sso_error(id, &SsoError::Denied(code), &next)));
        }
        let returned = form_value(&query, "state").unwrap_or_default();
        let code = form_value(&query, "code").unwrap_or_default();
        if !state::state_matches(&flow, &returned) || code.is_empty() {
            return Ok(finish(self.sso_error(id, &SsoError::BadState, &next)));
        }
        // Single use: of two callbacks with this flow (a replayed URL and cookie), one goes on.
        let marker = crate::auth::refresh_token::hash(&Sso::marker(&flow));
        let store = self.service().store().clone();
        let fresh = tokio::task::spawn_blocking(move || {
            store.consume_one_time(&marker, TokenKind::SsoLogin, now)
        })
        .await
        .map_err(|e| HttpError::Internal(e.to_string()))?
        .map_err(|e| HttpError::from(AuthError::from(e)))?;
        if fresh.is_none() {
            return Ok(finish(self.sso_error(id, &SsoError::BadState, &next)));
        }
        let who = match sso.finish(&provider, &flow, &code).await {
            Ok(who) => who,
            Err(e) => return Ok(finish(self.sso_error(id, &e, &next))),
        };
        let client = super::account::client_of(req.headers(), client_ip);
        let linking = flow.link_user.is_some();
        let result = self
            .service()
            .sso_sign_in(&provider.settings, who, flow.link_user.clone(), client)
            .await;
        let resp = match result {
            Ok(SsoSignIn::Session(issued)) => {
                let mut resp = redirect(safe_next(&flow.next));
                for c in self.session_cookies(&issued, tls) {
                    resp.headers_mut().append(header::SET_COOKIE, c);
                }
                resp
            }
            Ok(SsoSignIn::Linked) => redirect(&format!("{}/account?done=linked", self.prefix())),
            Err(e) => {
                let status = HttpError::from(&e).status();
                let message = match &e {
                    AuthError::Internal(_) => "Something went wrong; please try again".to_owned(),
                    AuthError::SignupClosed => {
                        "There is no account here for this identity, and sign-up is closed"
                            .to_owned()
                    }
                    AuthError::InvalidCredentials => "This account is disabled".to_owned(),
                    other => other.to_string(),
                };
                if linking {
                    // A fixed note by name: never text from the URL.
                    let code = match e {
                        AuthError::SsoRefused(_) | AuthError::SsoLinkRefused => "link-refused",
                        _ => "link-failed",
                    };
                    redirect(&format!("{}/account?done={code}", self.prefix()))
                } else {
                    self.sso_failure(status, &message, &next)
                }
            }
        };
        Ok(finish(resp))
    }

    /// The sign-in page with why a provider sign-in failed; the cause goes to the log.
    fn sso_error(&self, id: &str, e: &SsoError, next: &str) -> Response<Body> {
        let status = match e {
            SsoError::BadState => StatusCode::BAD_REQUEST,
            SsoError::Denied(_) | SsoError::BadToken(_) => StatusCode::UNAUTHORIZED,
            SsoError::Unreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
            SsoError::BadProvider(_) => StatusCode::BAD_GATEWAY,
            SsoError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        tracing::warn!(target: "audit", event = "sso_failed", provider = id, reason = e.label(), detail = e.detail());
        self.service().count_sso_outcome(id, e.label());
        let message = e.to_string();
        let mut resp = self.sso_failure(status, &message, next);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
        }
        resp
    }

    fn drop_flow_cookie(&self, mut resp: Response<Body>, tls: bool) -> Response<Body> {
        let gone = SetCookie {
            name: state::cookie_name(tls),
            value: "",
            path: "/",
            max_age: Some(0),
            http_only: true,
            secure: tls,
        };
        if let Ok(v) = HeaderValue::from_str(&gone.header()) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
        resp
    }

    /// `GET {prefix}/providers`: `[{id, display_name, start_url}]` (empty without `sso`), and
    /// whether password sign-in is on.
    pub(super) fn providers_json(&self) -> Response<Body> {
        let providers: Vec<serde_json::Value> = self
            .sso()
            .map(|s| {
                s.providers()
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "id": p.settings.id,
                            "display_name": p.settings.display_name,
                            "start_url": format!("{}/sso/{}/start", self.prefix(), p.settings.id),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        json_response(
            StatusCode::OK,
            &serde_json::json!({
                "providers": providers,
                "password_login": self.password_login(),
            }),
        )
    }

    /// `GET {prefix}/identities` and `DELETE {prefix}/identities/{id}`.
    pub(super) async fn identities_api(
        &self,
        req: Request<Body>,
        provider: Option<&str>,
        tls: bool,
    ) -> Result<Response<Body>, HttpError> {
        let session = self.signed_in(req.headers(), tls, provider.is_some())?;
        let user = session.claims.sub.clone();
        match provider {
            None => {
                let list = self.service().identities(&user).await?;
                Ok(json_response(
                    StatusCode::OK,
                    &serde_json::json!({ "identities": list }),
                ))
            }
            Some(p) => {
                if self.service().unlink_identity(&user, p).await? {
                    let mut resp = Response::new(crate::body::empty());
                    *resp.status_mut() = StatusCode::NO_CONTENT;
                    Ok(resp)
                } else {
                    Err(HttpError::NoSuch("No such linked provider"))
                }
            }
        }
    }

    /// A sign-in page (or, without password sign-in, the provider buttons) with an error.
    fn sso_failure(&self, status: StatusCode, message: &str, next: &str) -> Response<Body> {
        self.login_page_with_error(status, message, next)
    }
}
