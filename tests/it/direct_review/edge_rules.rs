//! Issue 14, items 4 to 6, on both HTTP/1.1 serving paths (the [`Pair`] of gateways) and on
//! HTTP/2: the client-address and rewrite headers the upstream gets, headers a client names in
//! `Connection`, and route matching that ignores case and trailing dots.

use bytes::Bytes;
use http_body_util::Full;

use super::*;

/// Client-address and rewrite headers in several spellings, plus one ordinary header.
const ADDRESS_SPOOF: &str = "X-Real-IP: 6.6.6.6\r\nx_real_ip: 6.6.6.6\r\nX-REAL-IP: 6.6.6.6\r\nTrue-Client-IP: 6.6.6.6\r\nTrue_Client_IP: 6.6.6.6\r\nX-Client-IP: 6.6.6.6\r\nCF-Connecting-IP: 6.6.6.6\r\ncf_connecting_ip: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Original-URL: /admin\r\nX_Original_URL: /admin\r\nX-Rewrite-URL: /admin\r\nx_rewrite_url: /admin\r\nX-Custom: kept\r\n";

/// The default `upstream.strip_request_headers`, plus `Forwarded`, as upstreams read names.
const STRIPPED: [&str; 6] = [
    "true-client-ip",
    "x-client-ip",
    "cf-connecting-ip",
    "forwarded",
    "x-original-url",
    "x-rewrite-url",
];

/// Sends a GET over HTTP/2 to the (fast-path) gateway of `pair`.
async fn h2_get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> u16 {
    let url = format!("https://localhost:{}{path}", gw.https.port());
    let mut b = req("GET", &url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let (version, r) = guard(20, h2_send(gw, b.body(Full::<Bytes>::default()).unwrap())).await;
    assert_eq!(version, http::Version::HTTP_2);
    r.status
}

fn spoof_pairs() -> Vec<(&'static str, &'static str)> {
    ADDRESS_SPOOF
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap();
            (k, v)
        })
        .collect()
}

#[tokio::test]
async fn x_real_ip_is_the_gateways_and_address_and_rewrite_headers_go_from_clients() {
    let up = ok_upstream().await;
    let pair = Pair::start(&auth_config("", &routes(&up.url()))).await;
    for (path, auth) in [("/public", ""), ("/app", BEARER)] {
        let o = pair
            .agree(&up, &get(path, &format!("{ADDRESS_SPOOF}{auth}")))
            .await;
        assert_eq!(o.status(), 200, "{path}: {o:#?}");
        let headers = o.up_headers();
        assert_eq!(
            values(&headers, "x-real-ip"),
            ["127.0.0.1"],
            "{path}: {o:#?}"
        );
        assert_eq!(values(&headers, "x-custom"), ["kept"], "{path}");
        for (k, v) in &headers {
            assert!(
                !STRIPPED.contains(&loose(k).as_str()) && v != "6.6.6.6" && v != "/admin",
                "{path}: the client's {k}: {v} reached the upstream"
            );
        }
    }

    // HTTP/2 (the general path, through hyper).
    let (_, token) = &pair.users[0];
    let bearer = format!("Bearer {token}");
    for (path, auth) in [("/public/h2", None), ("/app/h2", Some(bearer.as_str()))] {
        let mut headers = spoof_pairs();
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        let before = up.heads().len();
        assert_eq!(h2_get(&pair.fast, path, &headers).await, 200, "{path}");
        let seen = header_lines(&up.heads()[before]);
        assert_eq!(
            values(&seen, "x-real-ip"),
            ["127.0.0.1"],
            "{path}: {seen:?}"
        );
        assert_eq!(values(&seen, "x-custom"), ["kept"], "{path}");
        for (k, v) in &seen {
            assert!(
                !STRIPPED.contains(&loose(k).as_str()) && v != "6.6.6.6" && v != "/admin",
                "h2 {path}: the client's {k}: {v} reached the upstream"
            );
        }
    }
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client_address_and_its_headers_pass() {
    let up = ok_upstream().await;
    let pair = Pair::start(&auth_config(
        "",
        &format!(
            "trusted_proxies: ['127.0.0.1/32', '10.0.0.0/8']\n{}",
            routes(&up.url())
        ),
    ))
    .await;
    for (xff, real) in [
        ("", "127.0.0.1"),
        ("X-Forwarded-For: 203.0.113.7\r\n", "203.0.113.7"),
        (
            "X-Forwarded-For: 6.6.6.6, 203.0.113.7\r\nX-Forwarded-For: 10.0.0.2\r\n",
            "203.0.113.7",
        ),
        // Garbage in the chain: believed up to there, as for rate limits.
        (
            "X-Forwarded-For: 203.0.113.7, bogus, 10.0.0.2\r\n",
            "127.0.0.1",
        ),
    ] {
        for (path, auth) in [("/public", ""), ("/app", BEARER)] {
            let o = pair
                .agree(&up, &get(path, &format!("{xff}{ADDRESS_SPOOF}{auth}")))
                .await;
            assert_eq!(o.status(), 200, "{path}: {o:#?}");
            let headers = o.up_headers();
            assert_eq!(
                values(&headers, "x-real-ip"),
                [real],
                "{xff:?} {path}: {o:#?}"
            );
            // From a trusted proxy (a CDN in front), the other headers pass as they came.
            assert_eq!(values(&headers, "true-client-ip"), ["6.6.6.6"], "{path}");
            assert_eq!(values(&headers, "cf-connecting-ip"), ["6.6.6.6"], "{path}");
            assert_eq!(values(&headers, "x-original-url"), ["/admin"], "{path}");
            assert_eq!(values(&headers, "forwarded"), ["for=6.6.6.6"], "{path}");
        }
    }
}

#[tokio::test]
async fn the_strip_list_is_configurable() {
    let up = ok_upstream().await;
    let pair = Pair::start(&auth_config(
        "",
        &format!(
            "upstream: {{strip_request_headers: [X_Custom]}}\n{}",
            routes(&up.url())
        ),
    ))
    .await;
    let o = pair
        .agree(&up, &get("/app", &format!("{ADDRESS_SPOOF}{BEARER}")))
        .await;
    assert_eq!(o.status(), 200, "{o:#?}");
    let headers = o.up_headers();
    assert!(values(&headers, "x-custom").is_empty(), "{o:#?}");
    assert_eq!(values(&headers, "true-client-ip"), ["6.6.6.6"]);
    assert_eq!(values(&headers, "x-original-url"), ["/admin"]);
    // X-Real-IP and Forwarded are the gateway's, whatever the list says.
    assert_eq!(values(&headers, "x-real-ip"), ["127.0.0.1"]);
    assert!(values(&headers, "forwarded").is_empty());
}

/// Every header the gateway sets, in `Connection`: none of them may go.
const OWNED: &str = "X-Auth-User-Id, X-Auth-Email, X-Auth-Name, X-Auth-Roles, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, X-Real-IP, X-Request-Id";

#[tokio::test]
async fn connection_cannot_remove_the_headers_the_gateway_sets() {
    let up = ok_upstream().await;
    let pair = Pair::start(&auth_config("", &routes(&up.url()))).await;
    for connection in [OWNED.to_owned(), "keep-alive, x-auth-roles".to_owned()]
        .into_iter()
        .chain(OWNED.split(", ").map(str::to_owned))
    {
        for (path, auth) in [("/public", ""), ("/app", BEARER)] {
            let raw = get(
                path,
                &format!("Connection: {connection}\r\nX-Hop: gone\r\nConnection: X-Hop\r\n{auth}"),
            );
            let o = pair.agree(&up, &raw).await;
            assert_eq!(o.status(), 200, "{connection} {path}: {o:#?}");
            let h = o.up_headers();
            let what = format!("Connection: {connection} on {path}: {h:?}");
            assert_eq!(values(&h, "x-forwarded-for"), ["127.0.0.1"], "{what}");
            assert_eq!(values(&h, "x-forwarded-proto"), ["http"], "{what}");
            assert_eq!(values(&h, "x-forwarded-host"), ["localhost"], "{what}");
            assert_eq!(values(&h, "x-real-ip"), ["127.0.0.1"], "{what}");
            assert_eq!(values(&h, "x-request-id"), ["<volatile>"], "{what}");
            assert!(values(&h, "x-hop").is_empty(), "{what}");
            if path == "/app" {
                assert_eq!(values(&h, "x-auth-user-id"), ["<sub>"], "{what}");
                assert_eq!(values(&h, "x-auth-email"), ["review@example.com"], "{what}");
                assert_eq!(values(&h, "x-auth-roles"), ["user"], "{what}");
                assert_eq!(values(&h, "x-auth-name").len(), 1, "{what}");
            }
        }
    }
}

#[tokio::test]
async fn connection_cannot_remove_custom_identity_headers_or_the_assertion() {
    let up = ok_upstream().await;
    let u = up.url();
    let pair = Pair::start(&auth_config(
        "identity_headers: {user_id: Remote-User}, assertion: {header: X-Identity-Assertion}",
        &format!("routes:\n  - {{path: /, upstream: '{u}', auth: required}}\n"),
    ))
    .await;
    let raw = get(
        "/app",
        &format!("Connection: Remote-User, x-identity-assertion, x_auth_roles\r\n{BEARER}"),
    );
    let o = pair.agree(&up, &raw).await;
    assert_eq!(o.status(), 200, "{o:#?}");
    let h = o.up_headers();
    assert_eq!(values(&h, "remote-user"), ["<sub>"], "{o:#?}");
    assert_eq!(values(&h, "x-identity-assertion"), ["<volatile>"], "{o:#?}");
    assert_eq!(values(&h, "x-auth-roles"), ["user"], "{o:#?}");
}

#[tokio::test]
async fn route_prefixes_ignore_case_and_trailing_dots() {
    let up = ok_upstream().await;
    let u = up.url();
    let config = format!(
        "routes:\n\
         \x20 - {{path: '/users/{{sub}}', upstream: '{u}', auth: required}}\n\
         \x20 - {{path: /admin, upstream: '{u}', auth: required, roles: [admin]}}\n\
         \x20 - {{path: /Exact, upstream: '{u}', auth: required, roles: [admin], case_sensitive: true}}\n\
         \x20 - {{path: /, upstream: '{u}', auth: public}}\n"
    );
    let pair = Pair::start(&auth_config("", &config)).await;
    let other = "0b5d3c0e-7f5e-4c1a-9d7e-2f4b8a6c1e90";
    let json = "Accept: application/json\r\n";
    // (target, status without a token, status with a non-admin token, target upstream)
    let cases: Vec<(String, u16, u16, Option<String>)> = [
        "/ADMIN",
        "/Admin",
        "/admin.",
        "/admin%2e",
        "/admin%2E%2e",
        "/ADMIN./x",
        "/%41dmin",
    ]
    .into_iter()
    .map(|t| (t.to_owned(), 401, 403, None))
    .chain([
        (format!("/Users/{other}"), 401, 403, None),
        (format!("/USERS./{}", other.to_uppercase()), 401, 403, None),
        (format!("/users/{other}./files"), 401, 403, None),
        // The caller's own path, spelled loosely: theirs, forwarded as sent.
        (
            "/Users/<sub>/x".into(),
            401,
            200,
            Some("/Users/<sub>/x".into()),
        ),
        (
            "/users/<sub>.".into(),
            401,
            200,
            Some("/users/<sub>.".into()),
        ),
        // A case-sensitive route: other spellings are other paths.
        ("/Exact".into(), 401, 403, None),
        ("/EXACT".into(), 200, 200, Some("/EXACT".into())),
        ("/Exact.".into(), 200, 200, Some("/Exact.".into())),
        // Not the same segment.
        (
            "/administrator".into(),
            200,
            200,
            Some("/administrator".into()),
        ),
        ("/admin-".into(), 200, 200, Some("/admin-".into())),
    ])
    .collect();
    for (target, anon, user, forwarded) in &cases {
        for (auth, want) in [("", anon), (BEARER, user)] {
            let o = pair
                .agree(&up, &get(target, &format!("{json}{auth}")))
                .await;
            assert_eq!(o.status(), *want, "{target} {auth:?}: {o:#?}");
            let expect = if *want == 200 {
                forwarded.as_deref()
            } else {
                None
            };
            assert_eq!(o.target(), expect, "{target} {auth:?}: {o:#?}");
        }
    }

    // HTTP/2.
    let (id, token) = &pair.users[0];
    let bearer = format!("Bearer {token}");
    for (path, status) in [
        ("/ADMIN".to_owned(), 403),
        ("/admin.".to_owned(), 403),
        (format!("/Users/{other}"), 403),
        (format!("/Users/{id}"), 200),
    ] {
        let got = h2_get(
            &pair.fast,
            &path,
            &[("authorization", &bearer), ("accept", "application/json")],
        )
        .await;
        assert_eq!(got, status, "h2 {path}");
    }
}

#[tokio::test]
async fn a_host_with_two_trailing_dots_is_refused() {
    let up = ok_upstream().await;
    let pair = Pair::start(&auth_config("", &routes(&up.url()))).await;
    for (host, status) in [
        ("localhost.", 200),
        ("localhost..", 400),
        ("LOCALHOST..:8080", 400),
        ("local..host", 400),
        ("admin.test..", 400),
    ] {
        let o = pair.agree(&up, &get_host(host, BEARER)).await;
        assert_eq!(o.status(), status, "{host}: {o:#?}");
        assert_eq!(o.upstream.is_some(), status == 200, "{host}: {o:#?}");
    }
    // HTTP/2 carries the host in :authority.
    let (_, token) = &pair.users[0];
    let url = format!("https://localhost..:{}/app", pair.fast.https.port());
    let b = req("GET", &url).header("authorization", format!("Bearer {token}"));
    let (_, r) = guard(
        20,
        h2_send(&pair.fast, b.body(Full::<Bytes>::default()).unwrap()),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
}
