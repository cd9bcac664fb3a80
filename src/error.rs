//! The one place where errors become HTTP responses.
//!
//! Handlers return [`HttpError`]; [`HttpError::response`] turns it into the status, headers and
//! body the client sees: `{"detail": "..."}` for API clients, a short HTML page for browsers.
//! Internal errors are logged here with their cause and answered with a generic body, so no
//! detail of the failure reaches the client.
//!
//! The layers that use this one say which [`HttpError`] each of their errors is, beside that
//! error (auth's `AuthError` in `auth::error`), so this module imports nothing from them.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{self, Body};

/// An error answered by the gateway itself.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// 400 with a short reason.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 401; the client must authenticate (`WWW-Authenticate: Bearer`).
    #[error("not authenticated")]
    Unauthorized(&'static str),
    /// 403.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// 403 for a signed-in user whom a route refuses (its roles, or another user's page):
    /// `Forbidden` for API clients, a page that offers to sign in with another account for
    /// browsers.
    #[error("forbidden: the account lacks access")]
    NoAccess(Box<NoAccess>),
    /// 404.
    #[error("not found")]
    NotFound,
    /// 404 with a message: what the request names (a reset link's token) does not exist, or
    /// no longer.
    #[error("not found: {0}")]
    NoSuch(&'static str),
    /// 408: the client stopped sending its request body (`limits.body_timeout`).
    #[error("request timeout")]
    RequestTimeout,
    /// 431: more header fields than `limits.max_headers`.
    #[error("request header fields too large")]
    HeadersTooLarge,
    /// 405 with the allowed methods.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// 409 (e.g. email already registered).
    #[error("conflict: {0}")]
    Conflict(String),
    /// 413.
    #[error("payload too large")]
    PayloadTooLarge,
    /// 415.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// 422 with a reason the user can act on (e.g. a weak password).
    #[error("unprocessable: {0}")]
    Unprocessable(String),
    /// 429 with `Retry-After`.
    #[error("too many requests")]
    TooManyRequests { retry_after: Duration },
    /// 502: the upstream could not be reached or broke the exchange.
    #[error("bad gateway: {0}")]
    BadGateway(String),
    /// 503 (overloaded, shutting down, store unavailable), with `Retry-After: 1`: the conditions
    /// behind it (a saturated password-hashing pool) clear within seconds.
    #[error("service unavailable: {0}")]
    Unavailable(&'static str),
    /// 504: the upstream did not answer in time.
    #[error("gateway timeout: {0}")]
    GatewayTimeout(String),
    /// 500; the cause is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl HttpError {
    /// The status code this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            HttpError::Forbidden(_) | HttpError::NoAccess(_) => StatusCode::FORBIDDEN,
            HttpError::NotFound | HttpError::NoSuch(_) => StatusCode::NOT_FOUND,
            HttpError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            HttpError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            HttpError::Conflict(_) => StatusCode::CONFLICT,
            HttpError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            HttpError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            HttpError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            HttpError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            HttpError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            HttpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told: short, and never the internal cause.
    pub fn detail(&self) -> String {
        match self {
            HttpError::BadRequest(m) | HttpError::Conflict(m) | HttpError::Unprocessable(m) => {
                m.clone()
            }
            HttpError::Unauthorized(m) | HttpError::Forbidden(m) | HttpError::NoSuch(m) => {
                (*m).to_owned()
            }
            HttpError::NoAccess(n) if n.verify.is_some() => VERIFY_FIRST.to_owned(),
            HttpError::NoAccess(n) if n.mfa.is_some() => MFA_FIRST.to_owned(),
            HttpError::NoAccess(_) => "Forbidden".to_owned(),
            HttpError::NotFound => "Not found".to_owned(),
            HttpError::MethodNotAllowed(_) => "Method not allowed".to_owned(),
            HttpError::RequestTimeout => "The request body was not sent in time".to_owned(),
            HttpError::HeadersTooLarge => "Too many request headers".to_owned(),
            HttpError::PayloadTooLarge => "Request body too large".to_owned(),
            HttpError::UnsupportedMediaType => "Expected a JSON body".to_owned(),
            HttpError::TooManyRequests { .. } => "Too many requests; try again later".to_owned(),
            HttpError::BadGateway(_) => "Upstream unavailable".to_owned(),
            HttpError::Unavailable(m) => (*m).to_owned(),
            HttpError::GatewayTimeout(_) => "Upstream timed out".to_owned(),
            HttpError::Internal(_) => "Internal error".to_owned(),
        }
    }

    /// Builds the response. `html` picks a small HTML page (for browser navigations) over JSON.
    pub fn response(&self, html: bool) -> Response<Body> {
        let status = self.status();
        match self {
            HttpError::Internal(cause) => tracing::error!(%cause, "internal error"),
            HttpError::BadGateway(cause) | HttpError::GatewayTimeout(cause) => {
                tracing::warn!(%cause, status = status.as_u16(), "upstream failure")
            }
            _ => {}
        }
        let detail = self.detail();
        let mut resp = if let (true, HttpError::NoAccess(page)) = (html, self) {
            no_access_page(page)
        } else if html {
            html_page(status, &detail)
        } else {
            json_response(status, &serde_json::json!({ "detail": detail }))
        };
        let headers = resp.headers_mut();
        match self {
            HttpError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            HttpError::TooManyRequests { retry_after } => {
                let secs = retry_after.as_secs().max(1);
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    headers.insert(header::RETRY_AFTER, v);
                }
            }
            HttpError::MethodNotAllowed(allow) => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            HttpError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        resp
    }

    /// The answer for a request whose body could not be read from the client, found anywhere in
    /// `e`'s chain of sources: 408 after `limits.body_timeout`, else 400 (malformed framing, a
    /// body shorter than its Content-Length). `None` when the client's body is not the cause.
    /// The client is at fault, so it is logged at debug level, never as an upstream failure.
    pub fn client_body(e: &(dyn std::error::Error + 'static)) -> Option<HttpError> {
        let mut source = Some(e);
        while let Some(s) = source {
            if let Some(c) = s.downcast_ref::<crate::body::ClientBodyError>() {
                tracing::debug!(error = %c, "request body failed");
                return Some(match c {
                    crate::body::ClientBodyError::Timeout(_) => HttpError::RequestTimeout,
                    crate::body::ClientBodyError::Broken(_) => {
                        HttpError::BadRequest("Malformed or incomplete request body".into())
                    }
                });
            }
            source = s.source();
        }
        None
    }
}

/// A JSON response with the security headers every gateway-made response carries.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(body::full(Bytes::from(bytes)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// Security headers for HTML the gateway serves: no framing, no inline script unless the page
/// names its own, no external assets.
pub fn html_headers(h: &mut http::HeaderMap) {
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
}

/// The stylesheet of every page the gateway serves (the hosted sign-in pages, error pages).
pub const PAGE_STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f6f7f9;color:#1d2330;margin:0}\
main{max-width:24rem;margin:4rem auto;background:#fff;padding:2rem;border-radius:.75rem;box-shadow:0 1px 4px #0002}\
h1{font-size:1.4rem;margin-top:0}label{display:block;margin:.9rem 0 .3rem;font-weight:600}\
input{width:100%;box-sizing:border-box;padding:.6rem;border:1px solid #9aa3b2;border-radius:.4rem;font-size:1rem}\
input:focus,button:focus,a:focus{outline:3px solid #2563eb;outline-offset:2px}\
button{margin-top:1.2rem;width:100%;padding:.7rem;border:0;border-radius:.4rem;background:#1d4ed8;color:#fff;font-size:1rem;cursor:pointer}\
.error{background:#fde8e8;color:#8a1c1c;padding:.6rem;border-radius:.4rem}.hint{color:#555;font-weight:400;font-size:.9rem}\
.done{background:#e6f4ea;color:#1e4620;padding:.6rem;border-radius:.4rem}h2{font-size:1.1rem;margin-top:1.6rem}\
.sessions{list-style:none;padding:0}.sessions li{border-top:1px solid #e3e6eb;padding:.8rem 0}\
.sessions form{margin:0}.sessions button{width:auto;margin-top:.5rem;padding:.4rem .8rem;font-size:.9rem}";

/// A page in the gateway's look: `title` as heading, `body` (HTML) under it.
pub fn page(status: StatusCode, title: &str, body: &str) -> Response<Body> {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{PAGE_STYLE}</style></head>\
         <body><main><h1>{title}</h1>{body}</main></body></html>",
        title = escape_html(title),
    );
    let mut resp = Response::new(body::full(Bytes::from(page)));
    *resp.status_mut() = status;
    html_headers(resp.headers_mut());
    resp
}

/// A minimal error page for browsers.
fn html_page(status: StatusCode, detail: &str) -> Response<Body> {
    let reason = status.canonical_reason().unwrap_or("Error");
    page(
        status,
        &format!("{} {reason}", status.as_u16()),
        &format!("<p>{}</p>", escape_html(detail)),
    )
}

/// What the 403 page of a route says to a signed-in user it refuses.
#[derive(Debug)]
pub struct NoAccess {
    /// Who is signed in.
    pub email: String,
    /// Roles that would be let in; empty unless `auth.show_required_roles` allows naming them.
    pub roles: Vec<String>,
    /// The hosted sign-out endpoint (`{auth.prefix}/logout`).
    pub sign_out: String,
    /// The session's CSRF token (its cookie's value) for the sign-out form; without one (a
    /// bearer token in a browser) the page links to the hosted sign-out page instead.
    pub csrf: Option<crate::secret::SecretString>,
    /// The refused page: signing in again returns there.
    pub next: String,
    /// Refused only because the address is not verified: the endpoint that sends the link again
    /// (`{auth.prefix}/request-verification`).
    pub verify: Option<String>,
    /// Refused only because the session lacks a second factor: the hosted second-factor page
    /// (with `next`), where a browser is sent.
    pub mfa: Option<String>,
}

/// The `detail` of a refusal for an unverified address.
pub const VERIFY_FIRST: &str = "Verify your email address to continue";

/// The `detail` of a refusal for a session without a second factor.
pub const MFA_FIRST: &str = "Sign in with your second factor to continue";

/// The 403 page of a route: who is signed in, that this account lacks access (and which roles
/// would do, when allowed), "Sign out / use another account", and a way home.
fn no_access_page(v: &NoAccess) -> Response<Body> {
    if let Some(mfa) = &v.mfa {
        // Straight to the page that asks for the factor (or sets one up), which comes back.
        let mut resp = Response::new(crate::body::empty());
        *resp.status_mut() = StatusCode::SEE_OTHER;
        if let Ok(location) = HeaderValue::from_str(mfa) {
            resp.headers_mut().insert(header::LOCATION, location);
        }
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return resp;
    }
    let roles = if v.roles.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = v
            .roles
            .iter()
            .map(|r| format!("<strong>{}</strong>", escape_html(r)))
            .collect();
        format!(
            "<p>It needs {}: {}.</p>",
            if v.roles.len() == 1 {
                "the role"
            } else {
                "one of the roles"
            },
            names.join(", ")
        )
    };
    let sign_out = match &v.csrf {
        Some(csrf) => format!(
            "<form method=\"post\" action=\"{action}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <input type=\"hidden\" name=\"next\" value=\"{next}\">\
             <button type=\"submit\">Sign out / use another account</button></form>",
            action = escape_html(&v.sign_out),
            csrf = escape_html(csrf.expose()),
            next = escape_html(&v.next),
        ),
        None => format!(
            "<p><a href=\"{}\">Sign out / use another account</a></p>",
            escape_html(&v.sign_out)
        ),
    };
    if let Some(verify) = &v.verify {
        let again = match &v.csrf {
            Some(csrf) => format!(
                "<form method=\"post\" action=\"{action}\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <input type=\"hidden\" name=\"next\" value=\"{next}\">\
                 <button type=\"submit\">Send the link again</button></form>",
                action = escape_html(verify),
                csrf = escape_html(csrf.expose()),
                next = escape_html(&v.next),
            ),
            None => String::new(),
        };
        return page(
            StatusCode::FORBIDDEN,
            "Verify your email address",
            &format!(
                "<p>You are signed in as <strong>{email}</strong>. This page is open to accounts \
                 whose email address is verified: open the link we sent to that address, then \
                 reload this page.</p>{again}{sign_out}<p><a href=\"/\">Go to the home page</a></p>",
                email = escape_html(&v.email),
            ),
        );
    }
    page(
        StatusCode::FORBIDDEN,
        "No access",
        &format!(
            "<p>You are signed in as <strong>{email}</strong>, and this account does not have \
             access to this page.</p>{roles}{sign_out}<p><a href=\"/\">Go to the home page</a></p>",
            email = escape_html(&v.email),
        ),
    )
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let e = HttpError::Internal("db at /secret/path exploded".into());
        assert_eq!(e.detail(), "Internal error");
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn unauthorized_has_www_authenticate() {
        let r = HttpError::Unauthorized("Not authenticated").response(false);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn too_many_requests_has_retry_after() {
        let r = HttpError::TooManyRequests {
            retry_after: Duration::from_millis(2500),
        }
        .response(false);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }

    fn body_text(r: Response<Body>) -> String {
        use http_body_util::BodyExt;
        let bytes = futures_executor_block_on(r.into_body().collect())
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Polls a future that is ready at once (a full body) without a runtime.
    fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the body was not ready"),
        }
    }

    #[test]
    fn no_access_page_escapes_what_it_shows_and_json_stays_generic() {
        let e = HttpError::NoAccess(Box::new(NoAccess {
            email: "o'neil&co@example.com".into(),
            roles: vec!["a<b".into()],
            sign_out: "/api/auth/logout".into(),
            csrf: Some(crate::secret::SecretString::new("n\"x".into())),
            next: "/admin?a=1&b=<2>".into(),
            verify: None,
            mfa: None,
        }));
        let page = body_text(e.response(true));
        for want in [
            "o&#39;neil&amp;co@example.com",
            "<strong>a&lt;b</strong>",
            "value=\"n&quot;x\"",
            "value=\"/admin?a=1&amp;b=&lt;2&gt;\"",
        ] {
            assert!(page.contains(want), "no {want:?} in {page}");
        }
        assert!(!page.contains("a<b") && !page.contains("<2>"), "{page}");
        assert!(
            !format!("{e:?}").contains("n\"x"),
            "the CSRF token shows in Debug"
        );
        let json = e.response(false);
        assert_eq!(json.status(), StatusCode::FORBIDDEN);
        assert_eq!(body_text(json), r#"{"detail":"Forbidden"}"#);
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }
}
