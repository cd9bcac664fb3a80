//! The policy's rules, and the same verdict from both representations of one request: the
//! raw head (as the fast path's parser hands it over, names in the client's spelling) and the
//! `HeaderMap` the general path builds from the same bytes.

use std::net::IpAddr;

use super::*;
use crate::proxy::headers::{IDENTITY_PREFIX, is_identity_name, strip_identity};

/// A request head's headers exactly as [`RawHead::headers`] yields them.
struct Raw(Vec<(Vec<u8>, Vec<u8>)>);

impl HeaderView for Raw {
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.0.iter().map(|(n, v)| (&n[..], &v[..]))
    }
}

/// Both representations of a request head given as bytes: parsed by the codec as the fast path
/// parses it, and as the `HeaderMap` made from that (as `RawHead::into_request` makes it).
fn both(head: &[u8]) -> (Raw, HeaderMap) {
    use crate::http1::head::{ParsedRequest, parse_request};
    let ParsedRequest::Complete(parsed) = parse_request(head, 100) else {
        panic!(
            "not a head the fast path serves: {:?}",
            String::from_utf8_lossy(head)
        );
    };
    let headers: Vec<(Vec<u8>, Vec<u8>)> = parsed
        .headers(head)
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect();
    let mut map = HeaderMap::new();
    for (n, v) in &headers {
        map.append(
            HeaderName::from_bytes(n).unwrap(),
            HeaderValue::from_bytes(v).unwrap(),
        );
    }
    (Raw(headers), map)
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

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Proxies at 10.0.0.0/8 are trusted.
fn tens(ip: IpAddr) -> bool {
    ip.to_string().starts_with("10.")
}

fn nobody(_: IpAddr) -> bool {
    false
}

fn identity(name: &[u8]) -> bool {
    is_identity_name(
        name,
        IDENTITY_PREFIX,
        &[HeaderName::from_static("remote-user")],
    )
}

/// The request id both paths send: the trusted proxy's, or `(new)` for a generated one.
fn id<V: HeaderView>(plan: &ForwardingPlan<'_>, headers: &V) -> Vec<u8> {
    let id = request_id(plan.trusted, headers);
    if plan.trusted && headers.first("x-request-id") == Some(id.as_bytes()) {
        id.as_bytes().to_vec()
    } else {
        b"(new)".to_vec()
    }
}

/// What the upstream gets under `plan`, as the general path makes it: the map after the gate's
/// identity stripping and [`ForwardingPlan::apply`]. Lowercase names, sorted.
fn via_map(map: &HeaderMap, plan: &ForwardingPlan<'_>) -> Vec<(String, Vec<u8>)> {
    let mut h = map.clone();
    h.insert(REQUEST_ID, HeaderValue::from_bytes(&id(plan, map)).unwrap());
    strip_identity(
        &mut h,
        IDENTITY_PREFIX,
        &[HeaderName::from_static("remote-user")],
    );
    plan.apply(&mut h);
    let mut out: Vec<_> = h
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    out.sort();
    out
}

/// The same as the planned path writes it from the raw head: the client's lines the plan
/// keeps, then the forwarding headers it sets.
fn via_raw(raw: &Raw, plan: &ForwardingPlan<'_>) -> Vec<(String, Vec<u8>)> {
    let lower = |n: &[u8]| String::from_utf8_lossy(n).to_ascii_lowercase();
    let mut out: Vec<_> = raw
        .each()
        .filter(|(n, v)| !identity(n) && !plan.drops(n, v))
        .map(|(n, v)| (lower(n), v.to_vec()))
        .collect();
    out.push(("x-request-id".into(), id(plan, raw)));
    let mut chain = Vec::new();
    for hop in plan.chain(raw) {
        chain.extend_from_slice(hop);
        chain.extend_from_slice(b", ");
    }
    chain.extend_from_slice(plan.peer.to_string().as_bytes());
    out.push(("x-forwarded-for".into(), chain));
    out.push(("x-real-ip".into(), plan.client.to_string().into_bytes()));
    if let Some(p) = plan.set_proto() {
        out.push(("x-forwarded-proto".into(), p.as_bytes().to_vec()));
    }
    if let Some(h) = plan.set_host() {
        out.push(("x-forwarded-host".into(), h.to_vec()));
    }
    out.sort();
    out
}

// ---- the rules ----

#[test]
fn html_detection() {
    let mut h = HeaderMap::new();
    h.insert(
        header::ACCEPT,
        HeaderValue::from_static("text/html,application/xhtml+xml"),
    );
    assert!(wants_html(&Method::GET, &h));
    assert!(!wants_html(&Method::POST, &h));
    h.insert("sec-fetch-mode", HeaderValue::from_static("cors"));
    assert!(!wants_html(&Method::GET, &h));
    h.insert("sec-fetch-mode", HeaderValue::from_static("navigate"));
    assert!(wants_html(&Method::GET, &h));
    h.insert(
        "x-requested-with",
        HeaderValue::from_static("XMLHttpRequest"),
    );
    assert!(!wants_html(&Method::GET, &h));
    assert!(!wants_html(&Method::GET, &HeaderMap::new()));
}

#[test]
fn untrusted_forwarded_values_are_replaced() {
    let mut h = map(&[
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.test"),
        ("forwarded", "for=1.2.3.4"),
    ]);
    let plan = ForwardingPlan::new(
        &h,
        ip("10.0.0.9"),
        &nobody,
        false,
        Some(b"app.test"),
        false,
        &[],
    );
    plan.apply(&mut h);
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
    let plan = ForwardingPlan::new(
        &h,
        ip("10.0.0.9"),
        &tens,
        false,
        Some(b"app.test"),
        false,
        &[],
    );
    plan.apply(&mut h);
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
        let is_trusted = move |_| trusted;
        let plan = ForwardingPlan::new(&h, ip("10.0.0.9"), &is_trusted, false, None, false, &strip);
        plan.apply(&mut h);
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
    let peer = ip("10.0.0.1");
    for (xff, want) in [
        (&[][..], "10.0.0.1"),
        (&["203.0.113.7"][..], "203.0.113.7"),
        (&["6.6.6.6, 203.0.113.7", "10.0.0.3"][..], "203.0.113.7"),
        (&["10.0.0.2 , 10.0.0.3"][..], "10.0.0.1"),
        (&["6.6.6.6, garbage, 10.0.0.3"][..], "10.0.0.1"),
        (&["203.0.113.7,"][..], "10.0.0.1"),
    ] {
        let pairs: Vec<_> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
        let h = map(&pairs);
        let raw = Raw(xff
            .iter()
            .map(|v| (b"X-Forwarded-For".to_vec(), v.as_bytes().to_vec()))
            .collect());
        assert_eq!(client_ip(peer, tens, &h), ip(want), "{xff:?}");
        assert_eq!(client_ip(peer, tens, &raw), ip(want), "{xff:?}");
    }
    // An untrusted peer is the client, whatever it says.
    let h = map(&[("x-forwarded-for", "203.0.113.7")]);
    assert_eq!(client_ip(ip("192.0.2.1"), tens, &h), ip("192.0.2.1"));
}

#[test]
fn access_needs_a_role_and_ownership() {
    let yaml = "version: 1\nroutes:\n  - {name: ops, path: /ops, upstream: 'builtin:whoami', auth: required, roles: [ops]}\n  - {name: mine, path: '/users/{sub}', upstream: 'builtin:whoami', auth: required, owner_bypass_roles: [admin]}\n";
    let cfg =
        crate::config::from_str(yaml, "t.yaml", std::path::Path::new("."), &|_| None).unwrap();
    let table = crate::proxy::route::RouteTable::new(&cfg.routes);
    let claims = |sub: &str, roles: &[&str]| -> AccessClaims {
        serde_json::from_value(serde_json::json!({
            "sub": sub, "email": "u@example.com", "roles": roles, "sid": "s", "sv": 0,
            "iat": 0, "nbf": 0, "exp": 0, "jti": "j", "iss": "i", "aud": "a",
        }))
        .unwrap()
    };
    let decide = |path: &str, c: &AccessClaims| {
        let m = table.find(None, &Method::GET, path).unwrap();
        let crate::config::AuthPolicy::Required { roles } = &m.route.spec.policy else {
            panic!("{path} is not a required route");
        };
        access(&m.route, roles, m.path.owner, c)
    };
    assert_eq!(decide("/ops", &claims("u1", &["ops"])), Access::Granted);
    assert_eq!(decide("/ops", &claims("u1", &["user"])), Access::LacksRole);
    assert_eq!(decide("/users/u1", &claims("u1", &[])), Access::Granted);
    assert_eq!(decide("/users/u2", &claims("u1", &[])), Access::NotOwner);
    assert_eq!(
        decide("/users/u2", &claims("u1", &["admin"])),
        Access::Granted
    );
}

// ---- both representations, same verdicts ----

/// Hostile spellings: identity headers with `_`, in capitals and twice; forwarding headers in
/// every spelling; values with obs-text (bytes over 0x7f, which `to_str` refuses).
const HOSTILE: &[u8] = b"GET /app?x=1 HTTP/1.1\r\n\
Host: App.Example.com:8443\r\n\
X_Auth_User: evil\r\n\
x-auth-user: a\r\n\
x-auth-user: b\r\n\
X-AUTH-ROLES: admin\r\n\
Remote_User: admin\r\n\
X-Forwarded-For: 203.0.113.7, 10.0.0.2\r\n\
X-Forwarded-For: caf\xe9\r\n\
x_forwarded_for: 6.6.6.6\r\n\
X-Forwarded-Proto: https\r\n\
X_Forwarded_Host: evil.test\r\n\
X-Real-IP: 6.6.6.6\r\n\
x_real_ip: 6.6.6.6\r\n\
True-Client-IP: 6.6.6.6\r\n\
true_client_ip: 6.6.6.6\r\n\
Forwarded: for=6.6.6.6\r\n\
X-Request-Id: from-the-proxy\r\n\
x_request_id: evil\r\n\
Authorization: Bearer abc.def\r\n\
Accept: caf\xe9 text/html\r\n\
Accept: application/json\r\n\
Sec-Fetch-Mode: navigate\r\n\
X-Other: caf\xe9\r\n\
\r\n";

#[test]
fn both_representations_admit_alike() {
    for head in [
        HOSTILE,
        b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\nAuthorization: Bearer x\r\nauthorization: Basic y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHOST: a\r\nCookie: s=1\r\nAuthorization: bearer  tok \r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer caf\xe9\r\n\r\n",
    ] {
        let (raw, map) = both(head);
        let (a, b) = (admission(&raw), admission(&map));
        assert_eq!(a, b, "{:?}", String::from_utf8_lossy(head));
        assert_eq!(a.bearer(), b.bearer());
        // The bearer token as the auth API reads it from the map.
        if !a.several_authorizations {
            assert_eq!(a.bearer(), crate::auth::http::bearer(&map));
        }
    }
    let (raw, _) = both(HOSTILE);
    let a = admission(&raw);
    assert_eq!(a.host, Some(&b"App.Example.com:8443"[..]));
    assert_eq!(a.bearer(), Some("abc.def"));
    assert!(!a.cookie && !a.several_hosts && !a.several_authorizations);
}

#[test]
fn both_representations_want_html_alike() {
    for head in [
        HOSTILE,
        b"GET / HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nAccept: caf\xe9 text/html\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\nSEC-FETCH-MODE: cors\r\nSec-Fetch-Mode: navigate\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\nX-Requested-With: xmlhttprequest\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\naccept: TEXT/HTML, text/html\r\n\r\n",
    ] {
        let (raw, map) = both(head);
        for method in [Method::GET, Method::HEAD, Method::POST] {
            assert_eq!(
                wants_html(&method, &raw),
                wants_html(&method, &map),
                "{method} {:?}",
                String::from_utf8_lossy(head)
            );
        }
    }
    let (raw, _) = both(HOSTILE);
    // The obs-text Accept value is not read; the other does not ask for HTML.
    assert!(!wants_html(&Method::GET, &raw));
}

#[test]
fn both_representations_keep_or_replace_the_request_id_alike() {
    for (head, kept) in [
        (HOSTILE, Some("from-the-proxy")),
        (
            &b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: not sane\r\n\r\n"[..],
            None,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nx-request-id: caf\xe9\r\n\r\n",
            None,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nX-REQUEST-ID: first\r\nx-request-id: second\r\n\r\n",
            Some("first"),
        ),
    ] {
        let (raw, map) = both(head);
        for trusted in [false, true] {
            let want = kept.filter(|_| trusted);
            let sent = raw.first("x-request-id");
            assert_eq!(sent, map.first("x-request-id"));
            for id in [request_id(trusted, &raw), request_id(trusted, &map)] {
                match want {
                    Some(w) => assert_eq!(id, w),
                    // A new one, never the client's.
                    None => assert_ne!(Some(id.as_bytes()), sent),
                }
            }
        }
    }
}

#[test]
fn both_representations_forward_the_same_headers() {
    let strip = ["true-client-ip".to_owned(), "x-original-url".to_owned()];
    for head in [
        HOSTILE,
        b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-Host: b.test\r\nFORWARDED: for=1.2.3.4\r\nX-Original-URL: /admin\r\nAuthorization: Basic eDp5\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-For: 10.0.0.3\r\nx-forwarded-for: 198.51.100.1\r\n\r\n",
    ] {
        let (raw, map) = both(head);
        let host = admission(&raw).host;
        for (peer, trusted) in [
            ("192.0.2.1", &nobody as &dyn Fn(IpAddr) -> bool),
            ("10.0.0.9", &tens),
        ] {
            for tls in [false, true] {
                for keep_bearer in [false, true] {
                    let from_raw =
                        ForwardingPlan::new(&raw, ip(peer), trusted, tls, host, keep_bearer, &strip);
                    let from_map =
                        ForwardingPlan::new(&map, ip(peer), trusted, tls, host, keep_bearer, &strip);
                    assert_eq!(format!("{from_raw:?}"), format!("{from_map:?}"));
                    assert_eq!(
                        via_raw(&raw, &from_raw),
                        via_map(&map, &from_map),
                        "peer {peer} tls {tls} keep_bearer {keep_bearer} {:?}",
                        String::from_utf8_lossy(head)
                    );
                }
            }
        }
    }
}

#[test]
fn hostile_spellings_never_reach_the_upstream() {
    let (raw, map) = both(HOSTILE);
    let strip = ["true-client-ip".to_owned()];
    for (peer, trusted) in [
        ("192.0.2.1", &nobody as &dyn Fn(IpAddr) -> bool),
        ("10.0.0.9", &tens),
    ] {
        let plan = ForwardingPlan::new(
            &raw,
            ip(peer),
            trusted,
            true,
            admission(&raw).host,
            false,
            &strip,
        );
        let up = via_raw(&raw, &plan);
        assert_eq!(up, via_map(&map, &plan));
        let names: Vec<&str> = up.iter().map(|(n, _)| n.as_str()).collect();
        for gone in [
            "x_auth_user",
            "x-auth-user",
            "x-auth-roles",
            "remote_user",
            "x_forwarded_for",
            "x_forwarded_host",
            "x_real_ip",
            "x_request_id",
            "authorization",
        ] {
            assert!(!names.contains(&gone), "{gone} from {peer}: {names:?}");
        }
        let one = |name: &str| -> Vec<u8> {
            let all: Vec<_> = up.iter().filter(|(n, _)| n == name).collect();
            assert_eq!(all.len(), 1, "{name}: {all:?}");
            all[0].1.clone()
        };
        assert_eq!(one("x-other"), b"caf\xe9");
        if peer == "10.0.0.9" {
            assert_eq!(one("x-request-id"), b"from-the-proxy");
            // The obs-text hop is not believed; the rest of the chain is.
            assert_eq!(one("x-forwarded-for"), b"203.0.113.7, 10.0.0.2, 10.0.0.9");
            assert_eq!(one("x-real-ip"), b"203.0.113.7");
            assert_eq!(one("x-forwarded-proto"), b"https");
            assert_eq!(one("forwarded"), b"for=6.6.6.6");
            assert_eq!(one("true-client-ip"), b"6.6.6.6");
        } else {
            assert_eq!(one("x-request-id"), b"(new)");
            assert_eq!(one("x-forwarded-for"), b"192.0.2.1");
            assert_eq!(one("x-real-ip"), b"192.0.2.1");
            assert!(!names.contains(&"forwarded"));
            // `strip_request_headers` applies to untrusted peers, in every spelling.
            assert!(!names.contains(&"true-client-ip"));
            assert!(!names.contains(&"true_client_ip"));
        }
        assert_eq!(one("x-forwarded-host"), b"App.Example.com:8443");
    }
}

#[test]
fn text_reads_a_value_exactly_as_header_value_to_str_does() {
    // Every byte alone, and in the middle of a long value (the vectorised part of the scan).
    for b in 0..=255u8 {
        for value in [
            vec![b],
            [vec![b'a'; 100], vec![b], vec![b'z'; 100]].concat(),
        ] {
            let ours = text(&value);
            let http = HeaderValue::from_bytes(&value)
                .ok()
                .and_then(|v| v.to_str().ok().map(str::to_owned));
            match http {
                Some(s) => assert_eq!(ours, Some(s.as_str()), "byte {b:#04x}"),
                // HeaderValue refuses some bytes outright; text refuses them too.
                None => assert_eq!(ours, None, "byte {b:#04x}"),
            }
        }
    }
}
