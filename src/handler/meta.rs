//! What the gateway knows about a request besides its route: who the client is (the socket
//! peer, or the address a trusted proxy names), whether it came over HTTPS, and which host it
//! names, in the one canonical form routing compares.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};

use super::App;
use super::policy::{self, HeaderView};
use crate::body::{self, Body};
use crate::error::HttpError;

impl App {
    /// Whether `ip` is one of `trusted_proxies`, whose forwarding headers are believed.
    pub(crate) fn is_trusted(&self, ip: IpAddr) -> bool {
        self.config.trusted_proxies.iter().any(|n| n.contains(ip))
    }

    /// A trusted proxy says the client reached it over HTTPS.
    pub(super) fn forwarded_https<V: HeaderView + ?Sized>(
        &self,
        peer: IpAddr,
        headers: &V,
    ) -> bool {
        self.is_trusted(peer)
            && headers
                .first("x-forwarded-proto")
                .is_some_and(|v| v.eq_ignore_ascii_case(b"https"))
    }

    /// The client's address: the socket peer, or, when the peer is a trusted proxy, the
    /// right-most `X-Forwarded-For` hop that is not itself trusted ([`policy::client_ip`]). A
    /// client cannot choose its own rate-limit bucket by sending `X-Forwarded-For` directly.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        policy::client_ip(peer, |ip| self.is_trusted(ip), headers)
    }

    /// The `308` to the same URL over HTTPS (`listen.redirect_http_to_https`).
    pub(super) fn redirect_to_https(
        &self,
        req: &Request<Body>,
        host: Option<&str>,
    ) -> Result<Response<Body>, HttpError> {
        let host = host.ok_or_else(|| HttpError::BadRequest("missing Host header".into()))?;
        let port = self.config.listen.https.map_or(443, |a| a.port());
        let authority = if port == 443 {
            host.to_owned()
        } else {
            format!("{host}:{port}")
        };
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let location = HeaderValue::from_str(&format!("https://{authority}{pq}"))
            .map_err(|_| HttpError::BadRequest("cannot redirect this request".into()))?;
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
        resp.headers_mut().insert(header::LOCATION, location);
        Ok(resp)
    }
}

/// The request's host name without port, lowercased: the Host header (HTTP/1.1) or the URI
/// authority (HTTP/2). `None` if absent or malformed.
pub fn request_host<B>(req: &Request<B>) -> Option<String> {
    canonical_host(policy::text(host_named_by(req)?)?)
}

/// [`named_host`] of a request.
fn host_named_by<B>(req: &Request<B>) -> Option<&[u8]> {
    named_host(
        req.headers().get(header::HOST).map(HeaderValue::as_bytes),
        req.uri().authority().map(|a| a.as_str()),
    )
}

/// Where a request names its host: its (first) Host header when it has one, whatever the
/// value, else the URI's authority (HTTP/2's `:authority`). The one rule for routing
/// ([`request_host`]), `X-Forwarded-Host` ([`raw_host`]) and the planned path
/// ([`super::planned`]).
pub(super) fn named_host<'a>(
    host_header: Option<&'a [u8]>,
    authority: Option<&'a str>,
) -> Option<&'a [u8]> {
    host_header.or(authority.map(str::as_bytes))
}

/// A host as routes compare it: lowercase, without port, brackets or one trailing dot. `None`
/// for anything with userinfo (`a@b`), an empty label (`a..b`, `app.example.com..`: nginx
/// refuses these too, and they could name a host another way than routing saw it) or otherwise
/// malformed; a request whose Host is `None` here is refused with 400.
pub fn canonical_host(raw: &str) -> Option<String> {
    if raw.contains("..") {
        return None;
    }
    // The usual case, a lowercase name with an optional port, needs no parsing.
    let (name, port) = raw.split_once(':').unwrap_or((raw, ""));
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && (raw.len() == name.len()
            || (port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok()))
    {
        return Some(name.strip_suffix('.').unwrap_or(name).to_owned());
    }
    if raw.contains('@') {
        return None;
    }
    let authority: http::uri::Authority = raw.parse().ok()?;
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    Some(host.to_ascii_lowercase())
}

/// The Host header as sent (with port), or the HTTP/2 authority, for `X-Forwarded-Host`.
pub(super) fn raw_host<B>(req: &Request<B>) -> Option<String> {
    policy::text(host_named_by(req)?).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_without_port() {
        let r = Request::builder()
            .uri("/")
            .header("host", "App.Example.com:8443")
            .body(())
            .unwrap();
        assert_eq!(request_host(&r).as_deref(), Some("app.example.com"));
        let r = Request::builder()
            .uri("https://[::1]:8443/x")
            .body(())
            .unwrap();
        assert_eq!(request_host(&r).as_deref(), Some("::1"));
    }

    #[test]
    fn canonical_hosts() {
        for (raw, want) in [
            ("app.example.com", Some("app.example.com")),
            ("app.example.com.", Some("app.example.com")),
            ("app.example.com:8443", Some("app.example.com")),
            ("App.Example.COM", Some("app.example.com")),
            ("127.0.0.1:19004", Some("127.0.0.1")),
            ("[::1]:8443", Some("::1")),
            ("user@app.example.com", None),
            // Authority does not check the port range; routing only uses the name.
            ("app.example.com:99999", Some("app.example.com")),
            ("", None),
            ("app.example.com..", None),
            ("App.Example.com..:8443", None),
            ("app..example.com", None),
        ] {
            assert_eq!(canonical_host(raw).as_deref(), want, "{raw:?}");
        }
    }
}
