//! Browser sessions: the gateway's cookies and the CSRF token that guards them.
//!
//! Three cookies per session:
//! - access (`__Host-gw_access` over TLS, `gw_access` on plain HTTP): the access JWT, `HttpOnly`,
//!   `SameSite=Lax`, `Path=/`, lives as long as the token;
//! - refresh: the opaque refresh token, `HttpOnly`, `SameSite=Lax`. With transparent refresh
//!   (the default) it has `Path=/` and, over TLS, the `__Host-gw_refresh` name, which a sibling
//!   subdomain cannot plant; scoped to the auth API path it is `__Secure-gw_refresh` (the
//!   `__Host-` prefix requires `Path=/`). Plain HTTP: `gw_refresh`;
//! - CSRF (`__Host-gw_csrf` / `gw_csrf`): readable by scripts, echoed back in `X-CSRF-Token`.
//!
//! The CSRF token is a signed double-submit token (OWASP): `nonce.HMAC(key, sid|nonce)`, bound to
//! the session id, so a token from another session, or one an attacker planted as a cookie, does
//! not validate.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use http::header::{COOKIE, HeaderMap, HeaderValue};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::secret::Secret;

/// The header that carries the CSRF token on unsafe requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Cookie names for one listener kind (TLS or plain).
#[derive(Debug, Clone, Copy)]
pub struct Names {
    pub access: &'static str,
    pub refresh: &'static str,
    pub csrf: &'static str,
}

/// The names used over TLS (`__Host-`/`__Secure-` prefixes, which browsers only accept with
/// `Secure`) and over plain HTTP (development). `refresh_at_root`: the refresh cookie has
/// `Path=/` (transparent refresh), so it can and must be a `__Host-` cookie.
pub fn names(tls: bool, refresh_at_root: bool) -> Names {
    if tls {
        Names {
            access: "__Host-gw_access",
            refresh: if refresh_at_root {
                "__Host-gw_refresh"
            } else {
                "__Secure-gw_refresh"
            },
            csrf: "__Host-gw_csrf",
        }
    } else {
        Names {
            access: "gw_access",
            refresh: "gw_refresh",
            csrf: "gw_csrf",
        }
    }
}

/// Whether a cookie name is one of the gateway's own (either spelling).
pub fn is_gateway_cookie(name: &str) -> bool {
    matches!(
        name,
        "__Host-gw_access"
            | "__Secure-gw_refresh"
            | "__Host-gw_refresh"
            | "__Host-gw_csrf"
            | "gw_access"
            | "gw_refresh"
            | "gw_csrf"
    )
}

/// Iterates over `name=value` pairs of every `Cookie` header (HTTP/2 may send several): names and
/// values trimmed, one pair of surrounding double quotes removed from a value, pieces without `=`
/// skipped, an empty name kept.
pub fn iter(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    pairs(headers.get_all(COOKIE).iter().map(HeaderValue::as_bytes))
}

/// [`iter`] over `Cookie` values as bytes, whichever representation holds them (the planned
/// path reads them from the raw head): a value that is not text by
/// [`HeaderValue::to_str`]'s rule is skipped, as `to_str` would refuse it.
///
/// Hand-written rather than the `cookie` crate's `Cookie::split_parse`, for two reasons. That
/// parser refuses a pair with an empty name (`=v`), which this one yields and [`forwarded`]
/// passes on to the upstream untouched: adopting it would change what upstreams receive. And
/// this runs on every request that carries cookies (the access cookie is looked up here), where
/// a borrowing scan builds nothing, while the crate builds a full `Cookie` (its attributes
/// included) per pair.
pub fn pairs<'a>(
    values: impl Iterator<Item = &'a [u8]>,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    pieces(values).filter_map(|pair| {
        let (n, v) = pair.split_once('=')?;
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        Some((n.trim(), v))
    })
}

/// The `;`-separated pieces of `Cookie` values that are text.
fn pieces<'a>(values: impl Iterator<Item = &'a [u8]>) -> impl Iterator<Item = &'a str> {
    values
        .filter_map(crate::http1::text)
        .flat_map(|v| v.split(';'))
}

/// The value of the first cookie called `name` (browsers send the cookie with the longest path
/// first).
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    iter(headers).find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// [`get`] over `Cookie` values as bytes.
pub fn get_in<'a>(values: impl Iterator<Item = &'a [u8]>, name: &str) -> Option<&'a str> {
    pairs(values).find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// The one `Cookie` value the upstream gets in place of `values`: every `name=value` pair that
/// is not one of the gateway's cookies, as the client wrote it (trimmed; quotes kept), in
/// order, joined with `; `. `None` when nothing is left (no `Cookie` is forwarded then). Both
/// serving paths forward exactly this.
pub fn forwarded<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<String> {
    let mut out = String::new();
    for piece in pieces(values) {
        let Some((name, _)) = piece.split_once('=') else {
            continue;
        };
        if is_gateway_cookie(name.trim()) {
            continue;
        }
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(piece.trim());
    }
    (!out.is_empty()).then_some(out)
}

/// Attributes for one `Set-Cookie`.
///
/// Hand-written rather than the `cookie` crate's builder: that one writes the same attributes in
/// another order (`HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=...`), which tests and clients
/// see byte for byte, and takes `Max-Age` as a `time::Duration`, another dependency. Names and
/// values here are the gateway's own (cookie names above, base64url and JWT values), so nothing
/// needs quoting or escaping.
pub struct SetCookie<'a> {
    pub name: &'a str,
    pub value: &'a str,
    pub path: &'a str,
    /// `None` = session cookie; `Some(0)` deletes.
    pub max_age: Option<u64>,
    pub http_only: bool,
    pub secure: bool,
}

impl SetCookie<'_> {
    /// The `Set-Cookie` header value.
    pub fn header(&self) -> String {
        let mut s = format!(
            "{}={}; Path={}; SameSite=Lax",
            self.name, self.value, self.path
        );
        if let Some(age) = self.max_age {
            s.push_str(&format!("; Max-Age={age}"));
        }
        if self.http_only {
            s.push_str("; HttpOnly");
        }
        if self.secure {
            s.push_str("; Secure");
        }
        s
    }
}

/// Makes and checks CSRF tokens.
#[derive(Clone)]
pub struct Csrf {
    key: Secret<Vec<u8>>,
}

impl std::fmt::Debug for Csrf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Csrf(***)")
    }
}

impl Csrf {
    /// A CSRF signer with a key of at least 32 bytes.
    pub fn new(key: Vec<u8>) -> Self {
        Csrf {
            key: Secret::new(key),
        }
    }

    fn mac(&self, session: &str, nonce: &str) -> Option<Vec<u8>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.expose()).ok()?;
        mac.update(session.as_bytes());
        mac.update(b"|");
        mac.update(nonce.as_bytes());
        Some(mac.finalize().into_bytes().to_vec())
    }

    /// A fresh token bound to `session` (the refresh family id).
    pub fn issue(&self, session: &str) -> String {
        let nonce = B64.encode(rand::random::<[u8; 16]>());
        let mac = self.mac(session, &nonce).unwrap_or_default();
        format!("{nonce}.{}", B64.encode(mac))
    }

    /// Whether `token` was issued for `session`.
    pub fn verify(&self, session: &str, token: &str) -> bool {
        let Some((nonce, mac)) = token.split_once('.') else {
            return false;
        };
        let Ok(given) = B64.decode(mac) else {
            return false;
        };
        let Some(expected) = self.mac(session, nonce) else {
            return false;
        };
        given.len() == expected.len() && bool::from(given.ct_eq(&expected))
    }
}

/// The double-submit check: the header equals the cookie (constant time) and the token is bound
/// to this session.
pub fn csrf_ok(csrf: &Csrf, session: &str, cookie: Option<&str>, header: Option<&str>) -> bool {
    match (cookie, header) {
        (Some(c), Some(h)) => {
            c.len() == h.len()
                && bool::from(c.as_bytes().ct_eq(h.as_bytes()))
                && csrf.verify(session, h)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn parses_cookies_from_several_headers() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; gw_access=tok"));
        h.append(COOKIE, HeaderValue::from_static("b=\"quoted\""));
        assert_eq!(get(&h, "gw_access"), Some("tok"));
        assert_eq!(get(&h, "b"), Some("quoted"));
        assert_eq!(get(&h, "missing"), None);
    }

    #[test]
    fn the_forwarded_cookie_keeps_every_other_pair_as_written() {
        let fw = |values: &[&[u8]]| forwarded(values.iter().copied());
        assert_eq!(
            fw(&[
                b"a=1; gw_access=t;gw_csrf=c",
                b" b=\"q v\" ; =e;noequals;__Host-gw_refresh=r"
            ]),
            Some("a=1; b=\"q v\"; =e".to_owned())
        );
        assert_eq!(fw(&[b"gw_access=t; __Secure-gw_refresh=r"]), None);
        assert_eq!(fw(&[]), None);
        // A value that is not text is dropped whole, as `HeaderValue::to_str` refuses it.
        assert_eq!(fw(&[b"a=caf\xc3\xa9; b=1", b"c=2"]), Some("c=2".to_owned()));
        // The names are the gateway's exactly: look-alikes pass.
        assert_eq!(
            fw(&[b"gw_access2=x; GW_ACCESS=y"]),
            Some("gw_access2=x; GW_ACCESS=y".to_owned())
        );
        assert_eq!(
            get_in([&b"gw_access=; gw_access=t"[..]].into_iter(), "gw_access"),
            Some("")
        );
    }

    #[test]
    fn csrf_tokens_are_bound_to_their_session() {
        let csrf = Csrf::new(vec![7; 32]);
        let t = csrf.issue("session-a");
        assert!(csrf.verify("session-a", &t));
        assert!(!csrf.verify("session-b", &t));
        assert!(!csrf.verify("session-a", "garbage"));
        assert!(!Csrf::new(vec![8; 32]).verify("session-a", &t));
        assert!(csrf_ok(&csrf, "session-a", Some(&t), Some(&t)));
        assert!(!csrf_ok(&csrf, "session-a", Some(&t), None));
        let other = csrf.issue("session-a");
        assert!(!csrf_ok(&csrf, "session-a", Some(&t), Some(&other)));
    }

    #[test]
    fn set_cookie_attributes() {
        let c = SetCookie {
            name: "__Host-gw_access",
            value: "v",
            path: "/",
            max_age: Some(900),
            http_only: true,
            secure: true,
        };
        assert_eq!(
            c.header(),
            "__Host-gw_access=v; Path=/; SameSite=Lax; Max-Age=900; HttpOnly; Secure"
        );
    }

    #[test]
    fn cookie_header_edge_cases() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static(" a = 1 ;novalue; ;=anon; dup=first; q=\"x"),
        );
        h.append(COOKIE, HeaderValue::from_static("dup=second; e=; k=v=w"));
        let pairs: Vec<(&str, &str)> = iter(&h).collect();
        assert_eq!(
            pairs,
            vec![
                ("a", "1"),
                ("", "anon"),
                ("dup", "first"),
                ("q", "\"x"),
                ("dup", "second"),
                ("e", ""),
                ("k", "v=w"),
            ]
        );
        // Duplicates: the first one wins, across headers too.
        assert_eq!(get(&h, "dup"), Some("first"));
        assert_eq!(get(&h, "novalue"), None);
        assert_eq!(get(&h, "e"), Some(""));
        // A header that is not visible ASCII is skipped as a whole.
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_bytes(b"gw_access=\xff").unwrap());
        h.append(COOKIE, HeaderValue::from_static("gw_access=ok"));
        assert_eq!(get(&h, "gw_access"), Some("ok"));
    }

    #[test]
    fn set_cookie_deletion_and_session_cookies() {
        let c = SetCookie {
            name: "gw_csrf",
            value: "",
            path: "/api/auth",
            max_age: Some(0),
            http_only: false,
            secure: false,
        };
        assert_eq!(
            c.header(),
            "gw_csrf=; Path=/api/auth; SameSite=Lax; Max-Age=0"
        );
        let c = SetCookie { max_age: None, ..c };
        assert_eq!(c.header(), "gw_csrf=; Path=/api/auth; SameSite=Lax");
    }
}
