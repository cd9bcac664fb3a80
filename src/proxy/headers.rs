//! Header names between client and upstream (RFC 9110 section 7.6).
//!
//! - Hop-by-hop headers (Connection and every header it names, Keep-Alive, TE, Trailer,
//!   Transfer-Encoding, Upgrade, Proxy-*) never cross the proxy, in either direction. An
//!   HTTP/1.1 upgrade re-adds `Connection: upgrade` and its `Upgrade` explicitly. The list and
//!   the reading of `Connection` are the codec's ([`crate::http1::connection`]).
//! - The names the request policy ([`crate::handler::policy`]) decides on, as clients spell them
//!   (case-insensitively, `_` read as `-`, as CGI, WSGI and PHP upstreams read them): identity
//!   headers (everything under the reserved `X-Auth-` prefix, plus configured names), the
//!   headers the gateway sets ([`GATEWAY_SET`]: `X-Forwarded-*`, `Forwarded`, `X-Request-Id`,
//!   `X-Real-IP`) and the `upstream.strip_request_headers` list. What to do with them (drop,
//!   believe from a trusted proxy, set) is the policy's.
//! - A client cannot remove a header the gateway sets by naming it in `Connection`
//!   ([`remove_hop_by_hop_request`]): identity headers and [`GATEWAY_SET`] survive it.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::http1::connection;

/// The reserved prefix of identity headers the gateway sets.
pub const IDENTITY_PREFIX: &str = "x-auth-";

/// Removes hop-by-hop headers, including those listed in `Connection`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    connection::remove_hop_by_hop(headers, |_| false);
}

/// [`remove_hop_by_hop`] for a client request on its way upstream: a header the gateway sets
/// (an identity header, as `identity` says, or one of [`GATEWAY_SET`]) stays even when the
/// client names it in `Connection`, so that `Connection: X-Auth-Roles` cannot take the
/// gateway's own values away.
pub fn remove_hop_by_hop_request(
    headers: &mut HeaderMap,
    identity: &(dyn Fn(&[u8]) -> bool + Sync),
) {
    connection::remove_hop_by_hop(headers, |name| {
        is_gateway_set(name.as_str().as_bytes()) || identity(name.as_str().as_bytes())
    });
}

/// The protocol an HTTP/1.1 request asks to upgrade to (`Connection: upgrade` + `Upgrade: x`),
/// only when it is WebSocket. Anything else (notably `h2c`, which would open an HTTP/2
/// connection straight to the upstream, past routing and header stripping) is not upgraded:
/// the request is forwarded as a plain one without its `Upgrade` header.
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    if !connection::asks_upgrade(headers) {
        return None;
    }
    headers
        .get(header::UPGRADE)
        .filter(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        .cloned()
}

/// Whether `name` equals `want` (lowercase, `-` separated) case-insensitively with `_` read as
/// `-`, either entirely (`exact`) or as a prefix.
fn dash_eq(name: &[u8], want: &str, exact: bool) -> bool {
    let n = name;
    let w = want.as_bytes();
    let len_ok = if exact {
        n.len() == w.len()
    } else {
        n.len() >= w.len()
    };
    len_ok && n.iter().zip(w).all(|(&a, &b)| same_letter(a, b))
}

/// Header-name bytes compared as upstreams often read them: case-insensitively, with `_` and
/// `-` alike.
fn same_letter(a: u8, b: u8) -> bool {
    let fold = |c: u8| {
        if c == b'_' {
            b'-'
        } else {
            c.to_ascii_lowercase()
        }
    };
    fold(a) == fold(b)
}

/// Whether `name` is `want` (lowercase) read case-insensitively with `_` as `-`: how a client
/// slips a header past a proxy that compares exact names, to an upstream (CGI, WSGI, PHP) that
/// reads both spellings alike.
pub fn is_spelling_of(name: &[u8], want: &str) -> bool {
    dash_eq(name, want, true)
}

/// The headers the gateway sets for the upstream besides identity (the list lives in
/// [`crate::config`], which refuses them in `upstream.strip_request_headers`).
pub use crate::config::GATEWAY_SET;

/// The client address the gateway hands the upstream in `X-Real-IP`.
pub const REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Whether a header name, as the client spelled it, is one of [`GATEWAY_SET`].
pub fn is_gateway_set(name: &[u8]) -> bool {
    GATEWAY_SET.iter().any(|w| is_spelling_of(name, w))
}

/// Whether a header name, as the client spelled it, is one of `strip` (lowercase, `-`
/// separated names: `upstream.strip_request_headers`), in any spelling.
pub fn is_listed(name: &[u8], strip: &[String]) -> bool {
    strip.iter().any(|w| is_spelling_of(name, w))
}

/// Whether a header name is an identity header: under `prefix` (e.g. `x-auth-`) or one of
/// `names`, matched case-insensitively (header names are lowercase) with `_` read as `-`.
pub fn is_identity_header(name: &HeaderName, prefix: &str, names: &[HeaderName]) -> bool {
    is_identity_name(name.as_str().as_bytes(), prefix, names)
}

/// [`is_identity_header`] for a name as the client spelled it.
pub fn is_identity_name(name: &[u8], prefix: &str, names: &[HeaderName]) -> bool {
    dash_eq(name, prefix, false) || names.iter().any(|n| dash_eq(name, n.as_str(), true))
}

/// Removes every identity header a client sent, whatever its spelling and however many times.
pub fn strip_identity(headers: &mut HeaderMap, prefix: &str, names: &[HeaderName]) {
    if !headers.keys().any(|k| is_identity_header(k, prefix, names)) {
        return;
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_identity_header(k, prefix, names))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

thread_local! {
    /// The last peer address formatted on this thread: consecutive requests mostly come from
    /// the same peer (a keep-alive connection, a load balancer in front).
    static LAST_PEER: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
        const { std::cell::RefCell::new(None) };
}

/// A peer address as a header value.
pub fn peer_value(peer: IpAddr) -> HeaderValue {
    LAST_PEER.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((ip, v)) = last.as_ref()
            && *ip == peer
        {
            return v.clone();
        }
        // An address is digits, dots, colons and hex: always a valid value.
        let v = HeaderValue::from_str(&peer.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        *last = Some((peer, v.clone()));
        v
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_listed_in_a_connection_value_with_obs_text_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_bytes(b"kee\xe4-alive, X-Hop").unwrap(),
        );
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("x-keep", "yes"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-keep"], "yes");
    }

    #[test]
    fn identity_headers_in_every_spelling_go() {
        let mut h = map(&[
            ("x-auth-user-id", "admin"),
            ("X-AUTH-ROLES", "admin"),
            ("x_auth_email", "a@b"),
            ("X_Auth_User_Id", "admin"),
            ("x-auth-user-id", "second"),
            ("x-authx", "stays"),
            ("x-other", "stays"),
            ("remote_user", "admin"),
            ("remote-userx", "stays"),
        ]);
        strip_identity(
            &mut h,
            IDENTITY_PREFIX,
            &[HeaderName::from_static("remote-user")],
        );
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["remote-userx", "x-authx", "x-other"]);
    }

    #[test]
    fn connection_cannot_name_away_what_the_gateway_sets() {
        let mut h = map(&[
            (
                "connection",
                "X-Auth-Roles, remote-user, x-forwarded-for, X-Real-IP, x-request-id, x-hop",
            ),
            ("x-auth-roles", "admin"),
            ("remote-user", "u"),
            ("x-forwarded-for", "10.0.0.9"),
            ("x-real-ip", "10.0.0.9"),
            ("x-request-id", "r"),
            ("x-hop", "gone"),
        ]);
        let identity = |n: &[u8]| {
            is_identity_name(
                n,
                IDENTITY_PREFIX,
                &[HeaderName::from_static("remote-user")],
            )
        };
        remove_hop_by_hop_request(&mut h, &identity);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "remote-user",
                "x-auth-roles",
                "x-forwarded-for",
                "x-real-ip",
                "x-request-id"
            ]
        );
    }

    #[test]
    fn upgrade_detection() {
        let h = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(upgrade_protocol(&h).unwrap(), "websocket");
        let h = map(&[("upgrade", "websocket")]);
        assert!(upgrade_protocol(&h).is_none());
        let h = map(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
        ]);
        assert!(upgrade_protocol(&h).is_none());
    }
}
