//! The request-side parsers and rewriters on arbitrary input: cookie parsing, the CSRF check,
//! path normalisation, `next` sanitising, form decoding and header stripping. None may panic,
//! and each keeps the property the proxy relies on (checked below).

#![no_main]

use std::sync::LazyLock;

use gateway::auth::http::cookies::{self, Csrf};
use gateway::auth::http::{self as auth_http, form};
use gateway::handler::policy::ForwardingPlan;
use gateway::proxy::{headers, path};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    /// `(name, value)`; an empty name means a `Cookie` header, a name of `"1"` a `Connection`
    /// header, so those get exercised often.
    headers: Vec<(&'a [u8], &'a [u8])>,
    session: &'a str,
    csrf_token: &'a str,
    path: &'a str,
    next: &'a str,
    form: &'a str,
    host: &'a str,
    trusted: bool,
    keep_bearer: bool,
}

static CSRF: LazyLock<Csrf> = LazyLock::new(|| Csrf::new(vec![7; 32]));

const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "keep-alive",
];

fuzz_target!(|input: Input<'_>| {
    let mut map = HeaderMap::new();
    for (name, value) in &input.headers {
        let name = match *name {
            b"" => header::COOKIE,
            b"1" => header::CONNECTION,
            n => match HeaderName::from_bytes(n) {
                Ok(n) => n,
                Err(_) => continue,
            },
        };
        if let Ok(v) = HeaderValue::from_bytes(value) {
            map.append(name, v);
        }
    }

    cookies_and_csrf(&input, &map);
    paths(&input);
    forms(&input);
    header_rewriting(&input, map);
});

fn cookies_and_csrf(input: &Input<'_>, map: &HeaderMap) {
    for (name, value) in cookies::iter(map) {
        // `get` finds some value for every name `iter` yields.
        assert!(cookies::get(map, name).is_some(), "{name:?}={value:?}");
    }
    let csrf = &*CSRF;
    let _ = csrf.verify(input.session, input.csrf_token);
    let _ = cookies::csrf_ok(
        csrf,
        input.session,
        cookies::get(map, "gw_csrf"),
        map.get(cookies::CSRF_HEADER).and_then(|v| v.to_str().ok()),
    );
    let issued = csrf.issue(input.session);
    assert!(csrf.verify(input.session, &issued));
    assert!(cookies::csrf_ok(
        csrf,
        input.session,
        Some(&issued),
        Some(&issued)
    ));
    if input.csrf_token != issued {
        assert!(!cookies::csrf_ok(
            csrf,
            input.session,
            Some(&issued),
            Some(input.csrf_token)
        ));
    }
}

fn paths(input: &Input<'_>) {
    if let Ok(p) = path::normalize(input.path) {
        assert!(p.starts_with('/'), "{p:?}");
        assert!(!p.contains("//"), "{:?} -> {p:?}", input.path);
        assert!(
            !p.split('/').any(|s| s == "." || s == ".."),
            "{:?} -> {p:?}",
            input.path
        );
        let lower = p.to_ascii_lowercase();
        assert!(!lower.contains("%2f") && !lower.contains("%5c") && !p.contains('\\'));
        assert!(!p.bytes().any(|b| b < 0x21 || b == 0x7f), "{p:?}");
        assert_eq!(
            path::normalize(&p).as_deref(),
            Ok(p.as_str()),
            "not idempotent"
        );
    }

    let next = form::safe_next(input.next);
    if next != "/" {
        assert_eq!(next, input.next);
        assert!(next.starts_with('/') && !next.starts_with("//") && !next.contains('\\'));
        assert!(!next.chars().any(char::is_control));
    }
}

fn forms(input: &Input<'_>) {
    let pairs = form::form_decode(input.form);
    let _ = form::form_value(&pairs, "next");
    // Whatever `percent_encode` writes, `form_decode` reads back unchanged.
    let back = form::form_decode(&format!("k={}", form::percent_encode(input.next)));
    assert_eq!(back, vec![("k".to_owned(), input.next.to_owned())]);
}

fn header_rewriting(input: &Input<'_>, mut map: HeaderMap) {
    let _ = headers::upgrade_protocol(&map);

    let names = [
        HeaderName::from_static("remote-user"),
        HeaderName::from_static("x-identity-jwt"),
    ];
    headers::strip_identity(&mut map, headers::IDENTITY_PREFIX, &names);
    for k in map.keys() {
        assert!(
            !headers::is_identity_header(k, headers::IDENTITY_PREFIX, &names),
            "{k} survived"
        );
        let spelled = k.as_str().replace('_', "-");
        assert!(!spelled.starts_with("x-auth-"), "{k} survived");
        assert!(
            spelled != "remote-user" && spelled != "x-identity-jwt",
            "{k} survived"
        );
    }

    auth_http::strip_credentials(&mut map, input.keep_bearer);
    assert!(
        !cookies::iter(&map).any(|(n, _)| cookies::is_gateway_cookie(n)),
        "a gateway cookie survived: {:?}",
        map.get_all(header::COOKIE).iter().collect::<Vec<_>>()
    );
    if !input.keep_bearer {
        assert!(gateway::auth::http::bearer(&map).is_none());
    }

    headers::remove_hop_by_hop(&mut map);
    for k in map.keys() {
        assert!(!HOP_BY_HOP.contains(&k.as_str()), "{k} survived");
        assert!(!k.as_str().starts_with("proxy-"), "{k} survived");
    }

    let trusted = |_| input.trusted;
    let plan = ForwardingPlan::new(
        &map,
        "192.0.2.7".parse().expect("ip"),
        &trusted,
        true,
        Some(input.host.as_bytes()),
        input.keep_bearer,
        &[],
    );
    plan.apply(&mut map);
    let xff = map.get_all("x-forwarded-for").iter().count();
    assert_eq!(xff, 1, "x-forwarded-for appears {xff} times");
    if !input.trusted {
        assert_eq!(map["x-forwarded-for"], "192.0.2.7");
        assert!(!map.contains_key(header::FORWARDED));
    }
}
