//! Keeps caches from storing answers to authenticated requests.
//!
//! An upstream behind the gateway often has no auth code of its own and so says nothing about
//! caching: its pages would be kept by the browser (and shown again by Back after sign-out) and
//! by any shared cache or CDN in front of the gateway. [`protect`] is the one rule, called by
//! both serving paths (the general path in [`crate::handler`] and the fast path's planned forward,
//! [`crate::handler::planned`]) on
//! the upstream's answer to a request the gateway authenticated:
//!
//! - an answer without `Cache-Control` gets `private, no-store` (the route's `cache: no-store`,
//!   the default) or `private` (`cache: private`); one the upstream marked itself is left alone,
//!   and so is a `304 Not Modified`: its headers update a response the browser already stored
//!   under the upstream's own `Cache-Control`, which it must not turn into `no-store`;
//! - when a cookie session decided the answer, `Vary: Cookie` is added (unless `Vary` already
//!   names `Cookie` or is `*`), so no cache hands it to a request with other cookies;
//! - `cache: pass` leaves the answer's headers exactly as the upstream sent them.

use http::header::{CACHE_CONTROL, VARY};
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::config::CachePolicy;

/// Adds the caching headers an answer (`status`, `headers`) to an authenticated request needs
/// (see the module docs). `via_cookie`: the session came from the access (or refresh) cookie.
pub fn protect(status: StatusCode, headers: &mut HeaderMap, policy: CachePolicy, via_cookie: bool) {
    let value = match policy {
        CachePolicy::Pass => return,
        CachePolicy::NoStore => "private, no-store",
        CachePolicy::Private => "private",
    };
    if status != StatusCode::NOT_MODIFIED && !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(value));
    }
    if via_cookie && !varies_by_cookie(headers) {
        headers.append(VARY, HeaderValue::from_static("Cookie"));
    }
}

/// Whether `Vary` already covers the `Cookie` request header (`Cookie` or `*`).
fn varies_by_cookie(headers: &HeaderMap) -> bool {
    headers
        .get_all(VARY)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|t| t == b"*" || t.eq_ignore_ascii_case(b"cookie"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        policy: CachePolicy,
        cookie: bool,
        before: &[(&'static str, &'static str)],
    ) -> Vec<(String, String)> {
        run_with(StatusCode::OK, policy, cookie, before)
    }

    fn run_with(
        status: StatusCode,
        policy: CachePolicy,
        cookie: bool,
        before: &[(&'static str, &'static str)],
    ) -> Vec<(String, String)> {
        let mut h = HeaderMap::new();
        for (n, v) in before {
            h.append(
                http::HeaderName::from_static(n),
                HeaderValue::from_static(v),
            );
        }
        protect(status, &mut h, policy, cookie);
        let mut out: Vec<(String, String)> = h
            .iter()
            .filter(|(n, _)| *n == CACHE_CONTROL || *n == VARY)
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        // By name only: the values of one name keep their order.
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = list
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn unmarked_answers_are_not_stored() {
        assert_eq!(
            run(CachePolicy::NoStore, false, &[]),
            pairs(&[("cache-control", "private, no-store")])
        );
        assert_eq!(
            run(CachePolicy::Private, false, &[]),
            pairs(&[("cache-control", "private")])
        );
        assert_eq!(run(CachePolicy::Pass, true, &[]), pairs(&[]));
    }

    #[test]
    fn not_modified_keeps_what_the_stored_response_said() {
        assert_eq!(
            run_with(StatusCode::NOT_MODIFIED, CachePolicy::NoStore, true, &[]),
            pairs(&[("vary", "Cookie")])
        );
    }

    #[test]
    fn the_upstreams_own_cache_control_stays() {
        assert_eq!(
            run(
                CachePolicy::NoStore,
                false,
                &[("cache-control", "max-age=60")]
            ),
            pairs(&[("cache-control", "max-age=60")])
        );
    }

    #[test]
    fn cookie_sessions_vary_by_cookie_once() {
        assert_eq!(
            run(CachePolicy::NoStore, true, &[("vary", "Accept-Encoding")]),
            pairs(&[
                ("cache-control", "private, no-store"),
                ("vary", "Accept-Encoding"),
                ("vary", "Cookie"),
            ])
        );
        for already in ["cookie", "Accept, Cookie", "*"] {
            assert_eq!(
                run(CachePolicy::Private, true, &[("vary", already)]),
                pairs(&[("cache-control", "private"), ("vary", already)]),
                "{already}"
            );
        }
    }
}
