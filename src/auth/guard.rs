//! Admission to protected routes: who is calling, and may they?
//!
//! [`AuthApi::admit`] finds the caller's access token (bearer header first, then the access
//! cookie) and checks it in memory. A browser whose access cookie has expired but whose refresh
//! cookie is still good is refreshed inside the same request (transparent refresh): the request
//! goes on as authenticated and the response carries the new cookies. Parallel requests from the
//! same browser in that moment all succeed, because a refresh token presented again within the
//! grace window yields the same successor.
//!
//! The helpers below also decide where an unauthenticated browser is sent (`next` is only ever a
//! same-origin path) and what identity the upstream is told.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request};

use super::api::{AuthApi, Session, Unauthenticated};
use super::cookies;
use crate::body::Body;
use crate::error::HttpError;
use crate::secret::SecretString;

/// The JWT `typ` of identity assertions; distinct from access tokens so neither passes for the
/// other.
pub const ASSERTION_TYP: &str = "gw-identity+jwt";

/// A bearer token the direct path refused, carried to the general path in the request's
/// extensions (see [`AuthApi::admit`]), so that it is not verified twice.
#[derive(Debug, Clone, Copy)]
pub struct TokenVerdict(pub Unauthenticated);

/// A request that may proceed.
#[derive(Debug)]
pub struct Admitted {
    pub session: Session,
    /// `Set-Cookie` values from a transparent refresh, to add to the response.
    pub set_cookies: Vec<HeaderValue>,
    /// The CSRF token was already checked (before a transparent refresh).
    pub csrf_checked: bool,
}

/// Why a request may not proceed.
#[derive(Debug)]
pub enum Denied {
    /// No valid credentials: 401, or a redirect to the login page for browsers.
    Unauthenticated(Unauthenticated),
    /// Credentials were present but the request is refused outright (e.g. CSRF).
    Refused(HttpError),
}

/// GET, HEAD, OPTIONS and TRACE change nothing, so they need no CSRF token.
pub fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

impl AuthApi {
    /// Authenticates a request to a protected route, refreshing an expired cookie session when
    /// `transparent_refresh` allows.
    pub async fn admit(&self, req: &Request<Body>, tls: bool) -> Result<Admitted, Denied> {
        let headers = req.headers();
        if self.service().refuses_tokens() {
            // Fail closed: this server may have missed a revocation.
            return Err(Denied::Refused(HttpError::Unavailable(
                "Authentication is temporarily unavailable",
            )));
        }
        // The direct path may have checked this very bearer token already and refused it:
        // verifying it again would double the work of a flood of bad tokens.
        let prior = req
            .extensions()
            .get::<TokenVerdict>()
            .filter(|_| super::api::bearer(headers).is_some());
        let checked = match prior {
            Some(v) => Err(v.0),
            None => self.authenticate(headers, tls),
        };
        let first = match checked {
            Ok(session) => {
                return Ok(Admitted {
                    session,
                    set_cookies: Vec::new(),
                    csrf_checked: false,
                });
            }
            Err(why) => why,
        };
        // Bearer clients refresh themselves; only cookie sessions are refreshed here.
        if !self.transparent_refresh() || super::api::bearer(headers).is_some() {
            return Err(Denied::Unauthenticated(first));
        }
        let Some(refresh) = cookies::get(
            headers,
            cookies::names(tls, self.transparent_refresh()).refresh,
        ) else {
            return Err(Denied::Unauthenticated(first));
        };
        if refresh.is_empty() {
            return Err(Denied::Unauthenticated(first));
        }
        let refresh = SecretString::new(refresh.to_owned());
        let family = match self.family_of(&refresh).await {
            Ok(f) => f,
            Err(_) => return Err(Denied::Unauthenticated(first)),
        };
        let unsafe_method = !is_safe(req.method());
        if unsafe_method {
            self.check_csrf(headers, tls, &family)
                .map_err(Denied::Refused)?;
        }
        match self.service().refresh(&refresh).await {
            Ok(issued) => {
                tracing::debug!(user_id = %issued.claims.sub, "session refreshed in-request");
                let set_cookies = self.session_cookies(&issued, tls);
                Ok(Admitted {
                    session: Session {
                        claims: std::sync::Arc::new(issued.claims),
                        via_cookie: true,
                    },
                    set_cookies,
                    csrf_checked: unsafe_method,
                })
            }
            Err(_) => Err(Denied::Unauthenticated(first)),
        }
    }

    /// Removes every client-sent identity header (the reserved prefix, the configured names and
    /// the assertion header, which may be named outside the prefix).
    pub fn strip_identity(&self, headers: &mut HeaderMap) {
        crate::proxy::headers::strip_identity(headers, &self.identity.prefix, &self.identity_names);
    }

    /// Whether a header, named as the client spelled it, is one [`AuthApi::strip_identity`]
    /// removes.
    pub fn is_identity_name(&self, name: &[u8]) -> bool {
        crate::proxy::headers::is_identity_name(name, &self.identity.prefix, &self.identity_names)
    }

    /// Whether a signed identity assertion is configured (made per request by
    /// [`AuthApi::identify`]).
    pub fn has_assertion(&self) -> bool {
        self.assertion.is_some()
    }

    /// The identity headers [`AuthApi::identify`] sets, as `name: value` lines for an
    /// HTTP/1.1 head (without the assertion: callers check [`AuthApi::has_assertion`]).
    pub fn identity_lines(&self, claims: &super::token::AccessClaims, out: &mut Vec<u8>) {
        let id = &self.identity;
        for (name, v) in [&id.user_id, &id.email, &id.name, &id.roles]
            .into_iter()
            .zip(identity_values(claims))
        {
            if let Some(v) = v {
                out.extend_from_slice(name.as_str().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(v.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// The headers [`AuthApi::identify`] sets (forward-auth copies them into its answer).
    pub fn identity_header_names(&self) -> Vec<http::HeaderName> {
        let id = &self.identity;
        let mut names = vec![
            id.user_id.clone(),
            id.email.clone(),
            id.name.clone(),
            id.roles.clone(),
        ];
        if let Some(a) = &self.assertion {
            names.push(a.header.clone());
        }
        names
    }

    /// Tells the upstream who the user is: the identity headers (values without control
    /// characters) and, when configured, a signed assertion for `audience`. Call after
    /// [`AuthApi::strip_identity`], so these are the only copies.
    pub fn identify(&self, headers: &mut HeaderMap, session: &Session, audience: &str) {
        let c = &session.claims;
        let id = &self.identity;
        for (name, v) in [&id.user_id, &id.email, &id.name, &id.roles]
            .into_iter()
            .zip(identity_values(c))
        {
            if let Some(v) = v {
                headers.insert(name.clone(), v.clone());
            }
        }
        if let Some(a) = &self.assertion {
            let now = self.service().clock().unix();
            let settings = self.service().settings();
            let claims = serde_json::json!({
                "iss": settings.issuer,
                "aud": audience,
                "sub": c.sub,
                "email": c.email,
                "name": c.name,
                "roles": c.roles,
                "sid": c.sid,
                "iat": now,
                "exp": now + a.ttl.as_secs(),
                "jti": uuid::Uuid::new_v4().to_string(),
            });
            match self.service().keys().sign_json(ASSERTION_TYP, &claims) {
                Ok(jwt) => {
                    if let Ok(v) = HeaderValue::from_str(&jwt) {
                        headers.insert(a.header.clone(), v);
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot sign the identity assertion"),
            }
        }
    }

    /// The `303` that sends an unauthenticated browser to the login page, remembering where it
    /// wanted to go.
    pub fn login_redirect(&self, path_and_query: &str) -> http::Response<Body> {
        let next = safe_next(path_and_query);
        let location = format!("{}/login?next={}", self.prefix(), percent_encode(next));
        let mut resp = http::Response::new(crate::body::empty());
        *resp.status_mut() = http::StatusCode::SEE_OTHER;
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

/// The identity header values of some claims (user id, e-mail, name, roles), made once per
/// verified token: control characters are dropped, and a value that still cannot be a header
/// value is left out.
fn identity_values(c: &super::token::AccessClaims) -> &[Option<HeaderValue>; 4] {
    c.identity.get_or_init(|| {
        let value = |text: &str| {
            if text.chars().any(char::is_control) {
                let clean: String = text.chars().filter(|ch| !ch.is_control()).collect();
                HeaderValue::from_str(&clean).ok()
            } else {
                HeaderValue::from_str(text).ok()
            }
        };
        [
            value(&c.sub),
            value(&c.email),
            value(c.name.as_deref().unwrap_or("")),
            value(&c.roles.join(",")),
        ]
    })
}

/// `next` as given if it is a same-origin path, else `/`: it must start with exactly one `/`,
/// hold no backslash, no encoded slash or backslash, and no control characters.
pub fn safe_next(next: &str) -> &str {
    let lower = next.to_ascii_lowercase();
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !lower.contains("%2f")
        && !lower.contains("%5c")
        && !next.chars().any(char::is_control)
        && next.len() <= 2048;
    if ok { next } else { "/" }
}

/// Percent-encodes everything but unreserved characters and `/`.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `application/x-www-form-urlencoded` (also query strings): `+` is a space, `%XX` a
/// byte; malformed escapes are kept literally; invalid UTF-8 is replaced.
pub fn form_decode(text: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = |c: u8| (c as char).to_digit(16);
                    match (
                        bytes.get(i + 1).copied().and_then(hex),
                        bytes.get(i + 2).copied().and_then(hex),
                    ) {
                        (Some(h), Some(l)) => {
                            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The first value of `name` in a form or query string.
pub fn form_value(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// Removes the gateway's own credentials before forwarding: its cookies always (the refresh
/// cookie has `Path=/` with transparent refresh, so it comes along on every route), the bearer
/// token unless `keep_bearer` (a route's `forward_token`). Other cookies and headers pass
/// untouched.
pub fn strip_credentials(headers: &mut HeaderMap, keep_bearer: bool) {
    let is_bearer = |v: &HeaderValue| {
        v.as_bytes()
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"bearer "))
    };
    if !keep_bearer && headers.get_all(header::AUTHORIZATION).iter().any(is_bearer) {
        let others: Vec<HeaderValue> = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter(|v| !is_bearer(v))
            .cloned()
            .collect();
        headers.remove(header::AUTHORIZATION);
        for v in others {
            headers.append(header::AUTHORIZATION, v);
        }
    }
    if !headers.contains_key(header::COOKIE) {
        return;
    }
    let kept: Vec<String> = cookies::iter(headers)
        .filter(|(n, _)| !cookies::is_gateway_cookie(n))
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_only_a_same_origin_path() {
        for good in ["/", "/dashboard", "/a/b?x=1&y=2", "/a#frag"] {
            assert_eq!(safe_next(good), good);
        }
        for bad in [
            "//evil.test",
            "/\\evil.test",
            "https:evil.test",
            "https://evil.test",
            "/%2F%2Fevil.test",
            "/%2f%2fevil.test",
            "/%5Cevil.test",
            "/a\r\nLocation: https://evil.test",
            "evil.test",
            "",
            "javascript:alert(1)",
        ] {
            assert_eq!(safe_next(bad), "/", "{bad:?}");
        }
    }

    #[test]
    fn form_decoding() {
        let f = form_decode("email=a%40b.c&password=p+w%21&next=%2Fx%3Fy%3D1&flag&bad=%zz");
        assert_eq!(form_value(&f, "email").as_deref(), Some("a@b.c"));
        assert_eq!(form_value(&f, "password").as_deref(), Some("p w!"));
        assert_eq!(form_value(&f, "next").as_deref(), Some("/x?y=1"));
        assert_eq!(form_value(&f, "flag").as_deref(), Some(""));
        assert_eq!(form_value(&f, "bad").as_deref(), Some("%zz"));
        assert_eq!(form_value(&f, "missing"), None);
        assert_eq!(form_decode("a=%4"), vec![("a".into(), "%4".into())]);
    }

    #[test]
    fn encoding_round_trips() {
        let next = "/a b/c?d=e&f=ü";
        let enc = percent_encode(next);
        assert!(!enc.contains(' ') && !enc.contains('&') && !enc.contains('?'));
        let back = form_decode(&format!("next={enc}"));
        assert_eq!(form_value(&back, "next").as_deref(), Some(next));
    }
}
