//! CORS for routes with `cors: true` and for the auth API, so a single-page app on another
//! origin (the seed Next.js frontend on :3000, say) can call them.
//!
//! A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered by the
//! gateway without a token. Only listed origins get `Access-Control-Allow-Origin`, and only they
//! get `Access-Control-Allow-Credentials` (never together with `*`). Responses carry
//! `Vary: Origin` so caches keep them apart.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::body::{self, Body};
use crate::config::CorsSettings;

/// Compiled CORS settings.
#[derive(Debug)]
pub struct Cors {
    origins: Vec<String>,
    any: bool,
    credentials: bool,
    allow_headers: HeaderValue,
    max_age: HeaderValue,
}

const METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

impl Cors {
    /// Compiles the settings; `None` when no origin is allowed.
    pub fn new(s: &CorsSettings) -> Option<Self> {
        if s.allowed_origins.is_empty() {
            return None;
        }
        let mut headers = vec![
            "authorization".to_owned(),
            "content-type".to_owned(),
            "x-csrf-token".to_owned(),
            "x-requested-with".to_owned(),
        ];
        headers.extend(s.allowed_headers.iter().cloned());
        Some(Cors {
            any: s.allowed_origins.iter().any(|o| o == "*"),
            origins: s.allowed_origins.clone(),
            credentials: s.allow_credentials,
            allow_headers: HeaderValue::from_str(&headers.join(", "))
                .unwrap_or(HeaderValue::from_static("content-type")),
            max_age: HeaderValue::from_str(&s.max_age.as_secs().to_string())
                .unwrap_or(HeaderValue::from_static("600")),
        })
    }

    fn listed(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// Whether a request is a CORS preflight.
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && headers.contains_key(header::ORIGIN)
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// Answers a preflight: 204, with the allow headers only when the origin is allowed.
    pub fn preflight(&self, headers: &HeaderMap) -> Response<Body> {
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        self.decorate(headers.get(header::ORIGIN), resp.headers_mut());
        let h = resp.headers_mut();
        if h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(METHODS),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                self.allow_headers.clone(),
            );
            h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        }
        resp
    }

    /// Adds the CORS response headers for `origin` (if allowed) to a response.
    pub fn decorate(&self, origin: Option<&HeaderValue>, h: &mut HeaderMap) {
        h.append(header::VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = origin else { return };
        let Ok(text) = origin.to_str() else { return };
        if self.listed(text) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            if self.credentials {
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
        } else if self.any {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        Cors::new(&CorsSettings {
            allowed_origins: origins.iter().map(|s| (*s).to_owned()).collect(),
            allow_credentials: credentials,
            allowed_headers: vec!["x-app".into()],
            max_age: Duration::from_secs(60),
        })
        .unwrap()
    }

    fn headers(origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        h.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        h
    }

    #[test]
    fn listed_origins_get_credentials() {
        let c = cors(&["http://localhost:3000"], true);
        let r = c.preflight(&headers("http://localhost:3000"));
        assert_eq!(r.status(), 204);
        let h = r.headers();
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://localhost:3000"
        );
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert!(
            h[header::ACCESS_CONTROL_ALLOW_HEADERS]
                .to_str()
                .unwrap()
                .contains("x-csrf-token")
        );
        assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "60");
    }

    #[test]
    fn other_origins_get_nothing() {
        let c = cors(&["http://localhost:3000"], true);
        let r = c.preflight(&headers("https://evil.test"));
        assert!(
            !r.headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        );
        assert!(
            !r.headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS)
        );
    }

    #[test]
    fn wildcard_never_allows_credentials() {
        let c = cors(&["*"], false);
        let mut h = HeaderMap::new();
        c.decorate(Some(&HeaderValue::from_static("https://any.test")), &mut h);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(!h.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
    }
}
