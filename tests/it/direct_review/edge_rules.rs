//! Issue 14, items 4 to 6, on both HTTP/1.1 serving paths (the [`Pair`] of gateways) and on
//! HTTP/2: the client-address and rewrite headers the upstream gets, headers a client names in
//! `Connection`, and route matching that ignores case and trailing dots.

use bytes::Bytes;
use http_body_util::Full;

use super::*;

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

#[tokio::test]
async fn route_prefixes_ignore_case_and_trailing_dots() {
    let up = RawUp::start().await;
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
    let up = RawUp::start().await;
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
