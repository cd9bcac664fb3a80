//! The sign-in redirect for a browser whose session cookies are dead (a revoked session, a
//! garbled or left-over cookie): it deletes them, with the names, paths and attributes they were
//! set with, as signing out does; cookies it has not found dead are left alone.

use crate::util::*;

const PW: &str = "correct horse battery";
const HTML: (&str, &str) = ("accept", "text/html");

fn config(auth_extra: &str, up: &Upstream) -> String {
    auth_config(
        auth_extra,
        &format!(
            "trusted_proxies: [127.0.0.1]\nroutes:\n  - {{path: /, upstream: '{}', auth: required}}\n",
            up.url()
        ),
    )
}

/// The `Cookie` header a browser sends after `resp`: every cookie it set.
fn jar(resp: &Resp) -> String {
    let set = set_cookies(resp);
    cookie_header(
        &set.iter()
            .map(|c| (c.name.as_str(), c.value.as_str()))
            .collect::<Vec<_>>(),
    )
}

/// `redirect` deletes every cookie `session` set (same name, `Path`, `SameSite`, `HttpOnly`
/// and `Secure`; empty, `Max-Age=0`), and sets nothing but deletions.
fn assert_deletes(redirect: &Resp, session: &Resp) {
    let gone = set_cookies(redirect);
    let set = set_cookies(session);
    assert_eq!(set.len(), 3, "{set:?}");
    for c in set {
        let path = c.attr("Path");
        let d = gone
            .iter()
            .find(|d| d.name == c.name && d.attr("Path") == path)
            .unwrap_or_else(|| panic!("{} (Path {path:?}) is not deleted: {gone:?}", c.name));
        assert_eq!(d.attr("SameSite"), c.attr("SameSite"), "{d:?}");
        for flag in ["HttpOnly", "Secure"] {
            assert_eq!(d.has(flag), c.has(flag), "{flag}: {d:?} for {c:?}");
        }
    }
    for d in &gone {
        assert!(
            d.value.is_empty() && d.attr("Max-Age") == Some("0"),
            "not a deletion: {d:?}"
        );
    }
}

#[tokio::test]
async fn a_revoked_session_is_sent_to_sign_in_without_its_cookies() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config("", &up)).await;
    signup(&gw, "stale@example.com", PW).await;
    let s = login(&gw, "stale@example.com", PW).await;
    let cookies = jar(&s.resp);
    let r = get_with(&gw.url("/app/page"), &[HTML, ("cookie", &cookies)]).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let out = call(
        "POST",
        &gw.url("/api/auth/logout-all"),
        &[("authorization", &bearer(&s.access))],
        None,
    )
    .await;
    assert_eq!(out.status, 204, "{}", out.text());
    let r = get_with(&gw.url("/app/page?x=1"), &[HTML, ("cookie", &cookies)]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(
        r.header("location").as_deref(),
        Some("/api/auth/login?next=/app/page%3Fx%3D1")
    );
    assert_deletes(&r, &s.resp);

    // Forward-auth for Traefik and Caddy, whose redirect reaches the browser as it is.
    let r = get_with(
        &gw.url("/api/auth/verify"),
        &[
            ("x-forwarded-uri", "/app/page"),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-host", "app.example.test"),
            ("x-forwarded-proto", "http"),
            HTML,
            ("cookie", &cookies),
        ],
    )
    .await;
    assert_eq!(r.status, 302, "{}", r.text());
    assert_deletes(&r, &s.resp);

    // Over TLS: the `__Host-` names, `Secure`.
    let login = https_call(
        &gw,
        "POST",
        "/api/auth/login",
        &[],
        Some(&serde_json::json!({"email": "stale@example.com", "password": PW})),
    )
    .await;
    assert_eq!(login.status, 200, "{}", login.text());
    assert!(
        jar(&login).contains("__Host-gw_refresh="),
        "{:?}",
        login.headers
    );
    let access = login.json()["access_token"].as_str().unwrap().to_owned();
    let out = call(
        "POST",
        &gw.url("/api/auth/logout-all"),
        &[("authorization", &bearer(&access))],
        None,
    )
    .await;
    assert_eq!(out.status, 204, "{}", out.text());
    let r = https_call(
        &gw,
        "GET",
        "/app/page",
        &[HTML, ("cookie", &jar(&login))],
        None,
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_deletes(&r, &login);
    assert_eq!(up.count(), 1, "{:?}", up.requests());
}

#[tokio::test]
async fn garbled_and_left_over_session_cookies_are_deleted_too() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config("", &up)).await;
    let s = signup(&gw, "garbled@example.com", PW).await;
    for cookies in [
        "gw_access=garbage; gw_refresh=garbage; gw_csrf=x",
        "gw_refresh=not-a-token",
        "gw_refresh=",
        // The refresh cookie gone, what is left cannot make a session.
        "gw_access=garbage; theme=dark",
        "gw_csrf=x",
    ] {
        let r = get_with(&gw.url("/app"), &[HTML, ("cookie", cookies)]).await;
        assert_eq!(r.status, 303, "{cookies}: {}", r.text());
        assert_deletes(&r, &s.resp);
        assert!(
            set_cookies(&r).iter().all(|c| c.name.starts_with("gw_")),
            "{cookies}: {:?}",
            r.headers
        );
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn cookies_not_found_dead_are_left_alone() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config("", &up)).await;
    let s = signup(&gw, "alive@example.com", PW).await;
    let cookies = jar(&s.resp);

    // No session cookies at all, or only someone else's.
    for sent in [vec![HTML], vec![HTML, ("cookie", "theme=dark")]] {
        let r = get_with(&gw.url("/app"), &sent).await;
        assert_eq!(r.status, 303, "{sent:?}: {}", r.text());
        assert!(
            r.header("set-cookie").is_none(),
            "{sent:?}: {:?}",
            r.headers
        );
    }
    // A bad bearer token is checked instead of the cookies: they say nothing about them.
    let r = get_with(
        &gw.url("/app"),
        &[
            HTML,
            ("authorization", "Bearer garbage"),
            ("cookie", &cookies),
        ],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(r.header("set-cookie").is_none(), "{:?}", r.headers);
    let r = get_with(&gw.url("/app"), &[HTML, ("cookie", &cookies)]).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Without transparent refresh the refresh cookie lives under the auth API, out of sight,
    // and may be good whatever became of the access cookie.
    let gw = Gateway::start(&config("transparent_refresh: false", &up)).await;
    let s = signup(&gw, "scoped@example.com", PW).await;
    let out = call(
        "POST",
        &gw.url("/api/auth/logout-all"),
        &[("authorization", &bearer(&s.access))],
        None,
    )
    .await;
    assert_eq!(out.status, 204, "{}", out.text());
    let r = get_with(&gw.url("/app"), &[HTML, ("cookie", &jar(&s.resp))]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(r.header("set-cookie").is_none(), "{:?}", r.headers);
}
