//! The 403 a route gives a signed-in user it refuses (`HttpError::NoAccess`): JSON for API
//! clients, for browsers a page in the look of the sign-in pages that says the account lacks
//! access, names the needed roles only when `auth.show_required_roles` allows, and offers a
//! working "Sign out / use another account" (CSRF rules kept) and a link to `/`.

use crate::util::*;

const PASSWORD: &str = "forbidden-password-1";
const NAVIGATE: [(&str, &str); 2] = [
    ("accept", "text/html,application/xhtml+xml"),
    ("sec-fetch-mode", "navigate"),
];

fn config(fast: bool, extra: &str) -> String {
    auth_config(
        extra,
        &format!(
            "listen: {{http: 127.0.0.1:0, https: 127.0.0.1:0, fast_path: {fast}}}\n\
             routes:\n\
             \x20 - {{path: /admin, upstream: builtin:whoami, roles: [admin, ops]}}\n\
             \x20 - {{path: '/users/{{sub}}', upstream: builtin:whoami}}\n\
             \x20 - {{path: /, upstream: builtin:whoami}}\n"
        ),
    )
}

/// The cookies of a signed-in browser: `Cookie` value and the CSRF token.
fn browser(t: &Tokens) -> (String, String) {
    let csrf = t.cookie("gw_csrf");
    (
        cookie_header(&[
            ("gw_access", &t.cookie("gw_access")),
            ("gw_refresh", &t.cookie("gw_refresh")),
            ("gw_csrf", &csrf),
        ]),
        csrf,
    )
}

fn with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut h = NAVIGATE.to_vec();
    h.extend_from_slice(extra);
    h
}

#[tokio::test]
async fn api_clients_still_get_json() {
    for fast in [true, false] {
        let gw = Gateway::start(&config(fast, "")).await;
        let t = signup(&gw, "api@example.com", PASSWORD).await;
        let r = get_with(
            &gw.url("/admin"),
            &[("authorization", &bearer(&t.access)), ("accept", "*/*")],
        )
        .await;
        assert_eq!(r.status, 403, "fast_path {fast}");
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(r.json(), serde_json::json!({"detail": "Forbidden"}));
    }
}

#[tokio::test]
async fn browsers_get_a_page_that_offers_another_account() {
    for fast in [true, false] {
        let gw = Gateway::start(&config(fast, "")).await;
        let t = signup(&gw, "ada@example.com", PASSWORD).await;
        let (cookie, csrf) = browser(&t);
        let r = get_with(&gw.url("/admin/panel?tab=2"), &with(&[("cookie", &cookie)])).await;
        assert_eq!(r.status, 403, "fast_path {fast}");
        let page = r.text();
        assert!(
            r.header("content-type").unwrap().starts_with("text/html"),
            "{page}"
        );
        assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
        assert!(r.header("content-security-policy").is_some());
        for want in [
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
            // The sign-in pages' stylesheet.
            "main{max-width:24rem;margin:4rem auto;",
            "signed in as <strong>ada@example.com</strong>",
            "this account does not have access to this page",
            "<form method=\"post\" action=\"/api/auth/logout\">",
            &format!("<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">"),
            "<input type=\"hidden\" name=\"next\" value=\"/admin/panel?tab=2\">",
            "<button type=\"submit\">Sign out / use another account</button>",
            "<a href=\"/\">",
        ] {
            assert!(
                page.contains(want),
                "fast_path {fast}: no {want:?} in {page}"
            );
        }
        // Which roles would do is not said unless the config allows it.
        assert!(
            !page.contains("ops") && !page.contains("It needs"),
            "{page}"
        );

        // The same page for another user's per-user path.
        let r = get_with(
            &gw.url("/users/someone-else"),
            &with(&[("cookie", &cookie)]),
        )
        .await;
        assert_eq!(r.status, 403);
        assert!(r.text().contains("Sign out / use another account"));
    }
}

#[tokio::test]
async fn the_page_names_the_roles_only_when_allowed() {
    let gw = Gateway::start(&config(true, "show_required_roles: true")).await;
    let t = signup(&gw, "ada@example.com", PASSWORD).await;
    let (cookie, _) = browser(&t);
    let r = get_with(&gw.url("/admin"), &with(&[("cookie", &cookie)])).await;
    assert_eq!(r.status, 403);
    let page = r.text();
    assert!(
        page.contains("It needs one of the roles: <strong>admin</strong>, <strong>ops</strong>."),
        "{page}"
    );
}

#[tokio::test]
async fn over_http2_too() {
    let gw = Gateway::start(&config(true, "")).await;
    let t = signup(&gw, "ada@example.com", PASSWORD).await;
    let csrf = t.cookie("gw_csrf");
    let cookie = cookie_header(&[("__Host-gw_access", &t.access), ("__Host-gw_csrf", &csrf)]);
    let req = req(
        "GET",
        &format!("https://localhost:{}/admin", gw.https.port()),
    )
    .header("cookie", cookie)
    .header("accept", "text/html")
    .body(http_body_util::Full::default())
    .unwrap();
    let (v, r) = h2_send(&gw, req).await;
    assert_eq!((v, r.status), (http::Version::HTTP_2, 403));
    let page = r.text();
    assert!(page.contains("Sign out / use another account"), "{page}");
    assert!(
        page.contains(&format!("name=\"csrf\" value=\"{csrf}\"")),
        "{page}"
    );
}

#[tokio::test]
async fn a_browser_with_a_bearer_token_gets_a_link_to_the_sign_out_page() {
    let gw = Gateway::start(&config(false, "")).await;
    let t = signup(&gw, "ada@example.com", PASSWORD).await;
    let r = get_with(
        &gw.url("/admin"),
        &with(&[("authorization", &bearer(&t.access))]),
    )
    .await;
    assert_eq!(r.status, 403);
    let page = r.text();
    assert!(
        page.contains("<a href=\"/api/auth/logout\">Sign out / use another account</a>"),
        "{page}"
    );
    assert!(!page.contains("<form"), "{page}");
}

#[tokio::test]
async fn the_sign_out_form_signs_out_and_returns_through_the_sign_in_page() {
    let gw = Gateway::start(&config(true, "")).await;
    let t = signup(&gw, "ada@example.com", PASSWORD).await;
    let (cookie, csrf) = browser(&t);
    let form = "application/x-www-form-urlencoded";
    let headers = [("cookie", cookie.as_str()), ("content-type", form)];
    let post = |body: String| call_body(&gw, "/api/auth/logout", &headers, body);
    // Without the CSRF token the form is refused, and the session lives on.
    let r = post("next=%2Fadmin".to_owned()).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(me_status(&gw, &t.access).await, 200);
    // As the page sends it.
    let r = post(format!("csrf={csrf}&next=%2Fadmin%2Fpanel%3Ftab%3D2")).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(
        r.header("location").as_deref(),
        Some("/api/auth/login?next=/admin/panel%3Ftab%3D2")
    );
    assert!(
        set_cookies(&r)
            .iter()
            .any(|c| c.name == "gw_access" && c.value.is_empty())
    );
    assert_eq!(me_status(&gw, &t.access).await, 401, "the session ended");
    // A `next` elsewhere is not followed.
    let r = post(format!("csrf={csrf}&next=https%3A%2F%2Fevil.test%2F")).await;
    assert_eq!(
        r.header("location").as_deref(),
        Some("/api/auth/login?next=/")
    );
}

async fn call_body(gw: &Gateway, path: &str, headers: &[(&str, &str)], body: String) -> Resp {
    let mut b = req("POST", &gw.url(path));
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    send(
        b.body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap(),
    )
    .await
    .unwrap()
}
