//! The signed-in user's own account over HTTP (the rules are the service's,
//! [`crate::auth::service`]):
//!
//! - `POST {prefix}/change-password` `{current_password, new_password}` -> 200 with new tokens
//!   (the token answer of login); every other session of the user ends. A wrong current
//!   password is 403 (not 401: the session itself is fine) and counts against the account like
//!   a failed login.
//! - `GET {prefix}/sessions` -> `{"sessions": [...]}`: the live sessions, newest first, the
//!   asker's marked `current`.
//! - `DELETE {prefix}/sessions/{id}` -> 204; 404 when the user has no such live session. Ending
//!   the current one also clears the session cookies, as logout does.
//!
//! All need a signed-in user; a request authenticated by cookie with an unsafe method carries
//! the CSRF token, as everywhere.

use std::net::IpAddr;

use http::{Request, Response, StatusCode};
use serde::Deserialize;
use tracing::Instrument;

use super::admission::{Session, refuse_cross_site};
use super::api::AuthApi;
use super::endpoints::read_json;
use super::throttle::pace;
use crate::auth::service::Client;
use crate::body::Body;
use crate::error::{HttpError, json_response};
use crate::ratelimit::Action;
use crate::secret::SecretString;

/// The longest session id `DELETE sessions/{id}` considers (a UUID is 36).
const MAX_SESSION_ID: usize = 64;

/// The session id of a `/sessions/{id}` action, if it is one.
pub(super) fn session_id(action: &str) -> Option<&str> {
    let id = action.strip_prefix("/sessions/")?;
    (!id.is_empty() && id.len() <= MAX_SESSION_ID && !id.contains('/')).then_some(id)
}

/// Who starts a session, for the user's sessions list: the `User-Agent` (when it is text;
/// the store keeps its first 256 characters) and the client address.
pub(super) fn client_of(headers: &http::HeaderMap, ip: IpAddr) -> Client {
    Client {
        user_agent: headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        ip: Some(ip),
    }
}

#[derive(Deserialize)]
struct ChangePassword {
    current_password: String,
    new_password: String,
}

impl AuthApi {
    /// The session of a request to an endpoint that needs one: 401 without it, and for a
    /// state change (`csrf`) by cookie, 403 without the session's CSRF token.
    pub(super) fn signed_in(
        &self,
        headers: &http::HeaderMap,
        tls: bool,
        csrf: bool,
    ) -> Result<Session, HttpError> {
        let session = self
            .authenticate(headers, tls)
            .map_err(|_| HttpError::Unauthorized("Not authenticated"))?;
        if csrf && session.via_cookie {
            self.check_csrf(headers, tls, &session.claims.sid)?;
        }
        Ok(session)
    }

    pub(super) async fn change_password(
        &self,
        req: Request<Body>,
        tls: bool,
        client_ip: IpAddr,
    ) -> Result<Response<Body>, HttpError> {
        refuse_cross_site(req.headers())?;
        let session = self.signed_in(req.headers(), tls, true)?;
        let client = client_of(req.headers(), client_ip);
        let body: ChangePassword = read_json(req, self.body_limit()).await?;
        // Guessing the current password with a stolen session is a login attempt by another
        // name: the same limits and regulation, on the same account.
        let email = session.claims.email.clone();
        self.throttle(Action::Login, client_ip, Some(&email))
            .await?;
        let current = SecretString::new(body.current_password);
        let new = SecretString::new(body.new_password);
        let result = self
            .service()
            .change_password(&session.claims, &current, &new, client)
            .instrument(tracing::info_span!("change_password", %client_ip))
            .await;
        self.record_login(&email, client_ip, &result).await;
        pace(&result).await;
        let issued = result?;
        Ok(self.issued_response(StatusCode::OK, &issued, tls))
    }

    pub(super) async fn sessions(
        &self,
        req: Request<Body>,
        tls: bool,
    ) -> Result<Response<Body>, HttpError> {
        let session = self.signed_in(req.headers(), tls, false)?;
        let sessions = self.service().sessions(&session.claims).await?;
        let mut resp = json_response(StatusCode::OK, &serde_json::json!({ "sessions": sessions }));
        resp.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        Ok(resp)
    }

    pub(super) async fn end_session(
        &self,
        req: Request<Body>,
        tls: bool,
        id: &str,
    ) -> Result<Response<Body>, HttpError> {
        let session = self.signed_in(req.headers(), tls, true)?;
        if !self.service().end_session(&session.claims, id).await? {
            return Err(HttpError::NotFound);
        }
        if id == session.claims.sid {
            return Ok(self.cleared(tls));
        }
        let mut resp = Response::new(crate::body::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        Ok(resp)
    }
}
