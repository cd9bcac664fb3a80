//! Header rewriting between client and upstream (RFC 9110 section 7.6).
//!
//! - Hop-by-hop headers (Connection and every header it names, Keep-Alive, TE, Trailer,
//!   Transfer-Encoding, Upgrade, Proxy-*) never cross the proxy, in either direction. An
//!   HTTP/1.1 upgrade re-adds `Connection: upgrade` and its `Upgrade` explicitly. The list and
//!   the reading of `Connection` are the codec's ([`crate::http1::connection`]).
//! - `X-Forwarded-For/-Proto/-Host` are set by the gateway. Values a client sent are kept (and
//!   appended to) only when the socket peer is a configured trusted proxy.
//! - Identity headers (everything under the reserved `X-Auth-` prefix, matched case-insensitively
//!   with `_` read as `-`) are removed from every client request, so only the gateway can set them.
//! - `X-Real-IP` is always the gateway's own: the client address it decided ([`client_ip`], the
//!   same rule as `X-Forwarded-For`).
//! - From a peer that is not a trusted proxy, the headers of `upstream.strip_request_headers`
//!   (other client-address headers such as `True-Client-IP`, and rewrite headers such as
//!   `X-Original-URL` that some frameworks route on) are removed in any spelling.
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

/// The headers the gateway sets for the upstream besides identity: any client copy, in any
/// spelling, is removed (the `-` spellings are replaced by the gateway's own values).
pub const GATEWAY_SET: [&str; 6] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-request-id",
    "x-real-ip",
];

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

/// The client's address: the socket peer, or, when the peer is a trusted proxy, the right-most
/// hop of its `X-Forwarded-For` values (`xff`, in the order they came) that is not itself
/// trusted. A client cannot choose its own address by sending `X-Forwarded-For` directly.
/// Both serving paths call this, for rate limits and for `X-Real-IP`.
pub fn client_ip<'v, I>(peer: IpAddr, trusted: impl Fn(IpAddr) -> bool, xff: I) -> IpAddr
where
    I: IntoIterator<Item = &'v [u8]>,
    I::IntoIter: DoubleEndedIterator,
{
    if !trusted(peer) {
        return peer;
    }
    let hops = xff.into_iter().rev().flat_map(|v| v.rsplit(|&b| b == b','));
    for hop in hops {
        match std::str::from_utf8(hop.trim_ascii()).map(str::parse::<IpAddr>) {
            Ok(Ok(ip)) if trusted(ip) => continue,
            Ok(Ok(ip)) => return ip,
            // Garbage in the chain: stop believing it at that point.
            _ => return peer,
        }
    }
    peer
}

/// Removes `_` spellings of [`GATEWAY_SET`] headers (the `-` ones are the gateway's business:
/// replaced, or believed from a trusted proxy).
pub fn strip_lookalikes(headers: &mut HeaderMap) {
    let lookalike = |k: &HeaderName| {
        k.as_str().contains('_')
            && GATEWAY_SET
                .iter()
                .any(|w| is_spelling_of(k.as_str().as_bytes(), w))
    };
    if !headers.keys().any(lookalike) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|k| lookalike(k)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
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

/// How the request reached the gateway, for the `X-Forwarded-*` headers.
pub struct Forwarded<'a> {
    pub peer: IpAddr,
    /// The peer is a trusted proxy, so its `X-Forwarded-*` values are believed.
    pub trusted: bool,
    pub proto: &'static str,
    pub host: Option<&'a str>,
    /// The client's address as [`client_ip`] decided it, for `X-Real-IP`.
    pub client: IpAddr,
    /// Headers removed from untrusted peers (`upstream.strip_request_headers`).
    pub strip: &'a [String],
}

/// Sets `X-Forwarded-For`, `-Proto`, `-Host` and `X-Real-IP`, and removes `Forwarded` and the
/// `strip` list from untrusted peers (and `_` spellings of these from anyone).
pub fn set_forwarded(headers: &mut HeaderMap, f: &Forwarded<'_>) {
    strip_lookalikes(headers);
    headers.insert(REAL_IP, peer_value(f.client));
    if !f.trusted
        && headers
            .keys()
            .any(|k| is_listed(k.as_str().as_bytes(), f.strip))
    {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|k| is_listed(k.as_str().as_bytes(), f.strip))
            .cloned()
            .collect();
        for name in names {
            headers.remove(name);
        }
    }
    const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const XFH: HeaderName = HeaderName::from_static("x-forwarded-host");
    if f.trusted {
        let peer = f.peer.to_string();
        let prior: Vec<&str> = headers
            .get_all(&XFF)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let chain = if prior.is_empty() {
            peer
        } else {
            format!("{}, {peer}", prior.join(", "))
        };
        set(headers, XFF, &chain);
        if !headers.contains_key(&XFP) {
            headers.insert(XFP, HeaderValue::from_static(f.proto));
        }
        if !headers.contains_key(&XFH)
            && let Some(h) = f.host
        {
            set(headers, XFH, h);
        }
    } else {
        headers.insert(XFF, peer_value(f.peer));
        headers.insert(XFP, HeaderValue::from_static(f.proto));
        match f.host {
            Some(h) => set(headers, XFH, h),
            None => {
                headers.remove(&XFH);
            }
        }
        if headers.contains_key(header::FORWARDED) {
            headers.remove(header::FORWARDED);
        }
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

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(v) => {
            headers.insert(name, v);
        }
        Err(_) => {
            headers.remove(name);
        }
    }
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
    fn untrusted_forwarded_values_are_replaced() {
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.test"),
            ("forwarded", "for=1.2.3.4"),
        ]);
        set_forwarded(
            &mut h,
            &Forwarded {
                peer: "10.0.0.9".parse().unwrap(),
                trusted: false,
                proto: "http",
                host: Some("app.test"),
                client: "10.0.0.9".parse().unwrap(),
                strip: &[],
            },
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.test");
        assert!(!h.contains_key("forwarded"));
    }

    #[test]
    fn trusted_forwarded_values_are_appended() {
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        set_forwarded(
            &mut h,
            &Forwarded {
                peer: "10.0.0.9".parse().unwrap(),
                trusted: true,
                proto: "http",
                host: Some("app.test"),
                client: "1.2.3.4".parse().unwrap(),
                strip: &[],
            },
        );
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(h["x-real-ip"], "1.2.3.4");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "app.test");
    }

    #[test]
    fn listed_headers_go_from_untrusted_peers_only_and_real_ip_is_ours() {
        let pairs = [
            ("x-real-ip", "6.6.6.6"),
            ("x_real_ip", "6.6.6.6"),
            ("true-client-ip", "6.6.6.6"),
            ("X_Original_URL", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("x-other", "stays"),
        ];
        let strip = [
            "true-client-ip".to_owned(),
            "x-original-url".to_owned(),
            "x-rewrite-url".to_owned(),
        ];
        for trusted in [false, true] {
            let mut h = map(&pairs);
            set_forwarded(
                &mut h,
                &Forwarded {
                    peer: "10.0.0.9".parse().unwrap(),
                    trusted,
                    proto: "http",
                    host: None,
                    client: "10.0.0.9".parse().unwrap(),
                    strip: &strip,
                },
            );
            assert_eq!(
                h.get_all("x-real-ip").iter().collect::<Vec<_>>(),
                ["10.0.0.9"]
            );
            assert!(!h.contains_key("x_real_ip"));
            assert_eq!(h["x-other"], "stays");
            for name in ["true-client-ip", "x_original_url", "x-rewrite-url"] {
                assert_eq!(h.contains_key(name), trusted, "{name} trusted={trusted}");
            }
        }
    }

    #[test]
    fn the_client_address_is_the_rightmost_untrusted_hop() {
        let trusted = |ip: IpAddr| ip.to_string().starts_with("10.");
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for (xff, want) in [
            (&[][..], "10.0.0.1"),
            (&["203.0.113.7"][..], "203.0.113.7"),
            (&["6.6.6.6, 203.0.113.7", "10.0.0.3"][..], "203.0.113.7"),
            (&["10.0.0.2 , 10.0.0.3"][..], "10.0.0.1"),
            (&["6.6.6.6, garbage, 10.0.0.3"][..], "10.0.0.1"),
            (&["203.0.113.7,"][..], "10.0.0.1"),
        ] {
            let got = client_ip(peer, trusted, xff.iter().map(|v| v.as_bytes()));
            assert_eq!(got, ip(want), "{xff:?}");
        }
        // An untrusted peer is the client, whatever it says.
        let got = client_ip(ip("192.0.2.1"), trusted, [&b"203.0.113.7"[..]]);
        assert_eq!(got, ip("192.0.2.1"));
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
