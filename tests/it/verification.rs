//! Address verification through a real SMTP server (aiosmtpd): the mail every signup sends, its
//! link and page, the `email_verified` claim and identity header, and routes with
//! `require_verified_email` (which the planned path leaves to the general one, so a second run
//! with the fast path off covers both).

use std::time::Duration;

use crate::account::post_form;
use crate::smtp::{SmtpSink, link_token};
use crate::util::*;

const PW: &str = "correct horse battery staple";
const PUBLIC: &str = "https://login.acme.example";

async fn gateway(sink: &SmtpSink, up: &Upstream) -> Gateway {
    Gateway::start(&auth_config(
        "",
        &format!(
            "email: {{smtp_url: '{}', from: 'Acme <no-reply@acme.example>', public_url: '{PUBLIC}'}}\n\
             routes:\n  - {{path: /open, upstream: '{u}', auth: required}}\n  \
             - {{path: /strict, upstream: '{u}', auth: required, require_verified_email: true}}\n",
            sink.url(),
            u = up.url()
        ),
    ))
    .await
}

/// The token of the verification link in a mail, checking the link points at `public_url`.
fn token_in(text: &str) -> String {
    link_token(text, &format!("{PUBLIC}/api/auth/verify-email?token="))
}

async fn verify(gw: &Gateway, token: &str) -> Resp {
    post_json(
        &gw.url("/api/auth/verify-email"),
        &serde_json::json!({ "token": token }),
        &[],
    )
    .await
}

fn claims_of(access: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = access.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn signup_mails_a_link_that_verifies_the_address_once() {
    let Some(sink) = SmtpSink::start() else {
        return;
    };
    let up = Upstream::start().await;
    let gw = gateway(&sink, &up).await;
    let s = signup(&gw, "vera@example.com", PW).await;
    assert_eq!(s.resp.json()["user"]["email_verified"], false);
    assert_eq!(claims_of(&s.access)["email_verified"], false);

    let mail = sink.wait_for_message(Duration::from_secs(10)).await;
    assert_eq!(mail.rcpt_to, ["vera@example.com"]);
    let token = token_in(&mail.text.expect("a plain-text part"));

    // Unverified: the open route lets the user in and says so; the strict one refuses.
    let auth = bearer(&s.access);
    let r = get_with(&gw.url("/open/x"), &[("authorization", &auth)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.last().all("x-auth-email-verified"), ["false"]);
    let r = get_with(&gw.url("/strict/x"), &[("authorization", &auth)]).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["detail"], "Verify your email address to continue");
    let before = up.count();

    // The page behind the link does not use it (mail scanners follow links).
    let page = get_with(
        &gw.url(&format!("/api/auth/verify-email?token={token}")),
        &[],
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("vera@example.com"), "{}", page.text());
    assert_eq!(verify(&gw, "not-a-token").await.status, 404);
    let r = verify(&gw, &token).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(verify(&gw, &token).await.status, 404, "single use");

    // The old token still says unverified; a refresh says verified and gets in.
    assert_eq!(
        get_with(&gw.url("/strict/x"), &[("authorization", &auth)])
            .await
            .status,
        403
    );
    assert_eq!(up.count(), before);
    let me = get_with(&gw.url("/api/auth/me"), &[("authorization", &auth)]).await;
    assert_eq!(me.json()["email_verified"], true);
    let fresh = refreshed(&gw, &s.refresh).await;
    assert_eq!(claims_of(&fresh.access)["email_verified"], true);
    let r = get_with(
        &gw.url("/strict/x"),
        &[
            ("authorization", &bearer(&fresh.access)),
            ("x-auth-email-verified", "false"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(up.last().all("x-auth-email-verified"), ["true"]);

    // Verified: asking again sends nothing.
    let r = post_json(
        &gw.url("/api/auth/request-verification"),
        &serde_json::json!({}),
        &[("authorization", &bearer(&fresh.access))],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.received(), 1);
}

#[tokio::test]
async fn a_browser_asks_again_from_the_refusal_page_and_verifies_by_form() {
    let Some(sink) = SmtpSink::start() else {
        return;
    };
    let up = Upstream::start().await;
    let gw = gateway(&sink, &up).await;
    let s = signup(&gw, "brow@example.com", PW).await;
    let first = token_in(
        &sink
            .wait_for_message(Duration::from_secs(10))
            .await
            .text
            .unwrap(),
    );
    let (access, refresh_c, csrf) = (
        s.cookie("gw_access"),
        s.cookie("gw_refresh"),
        s.cookie("gw_csrf"),
    );
    let jar = cookie_header(&[
        ("gw_access", &access),
        ("gw_refresh", &refresh_c),
        ("gw_csrf", &csrf),
    ]);

    // A page of the strict route: a 403 page offering the link again, with the CSRF token.
    let r = get_with(
        &gw.url("/strict/page"),
        &[("cookie", &jar), ("accept", "text/html")],
    )
    .await;
    assert_eq!(r.status, 403);
    let html = r.text();
    assert!(html.contains("/api/auth/request-verification"), "{html}");
    assert!(html.contains(&format!("value=\"{csrf}\"")), "{html}");

    // Without the CSRF token: refused. With it: a new link replaces the first.
    let url = gw.url("/api/auth/request-verification");
    let r = post_form(&url, "next=%2Fstrict%2Fpage", &[("cookie", &jar)]).await;
    assert_eq!(r.status, 403);
    let r = post_form(
        &url,
        &format!("csrf={csrf}&next=%2Fstrict%2Fpage"),
        &[("cookie", &jar)],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let second = token_in(
        &sink
            .wait_for_message(Duration::from_secs(10))
            .await
            .text
            .unwrap(),
    );
    assert_ne!(first, second);
    assert_eq!(verify(&gw, &first).await.status, 404, "replaced");

    // The form on the link's page verifies, and refreshes this browser's session on the spot.
    let r = post_form(
        &gw.url("/api/auth/verify-email"),
        &format!("token={second}"),
        &[("cookie", &jar)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("is verified"), "{}", r.text());
    let new_access = set_cookie(&r, "gw_access").value;
    assert_eq!(claims_of(&new_access)["email_verified"], true);
    let jar = cookie_header(&[("gw_access", &new_access)]);
    assert_eq!(
        get_with(&gw.url("/strict/page"), &[("cookie", &jar)])
            .await
            .status,
        200
    );
}

#[test]
fn requiring_verified_addresses_needs_mail_and_a_required_route() {
    let parse = |yaml: &str| {
        gateway::config::from_str(yaml, "test.yaml", std::path::Path::new("/"), &|_| None)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let head = "version: 1\n";
    let without_mail = parse(&format!(
        "{head}routes:\n  - {{path: /, upstream: 'http://127.0.0.1:1', auth: required, require_verified_email: true}}\n"
    ));
    let e = without_mail.unwrap_err();
    assert!(
        e.contains("routes[0].require_verified_email") && e.contains("email section"),
        "{e}"
    );
    let public = parse(&format!(
        "{head}email: {{smtp_url: 'smtp://127.0.0.1:9', from: 'a@b.example', public_url: 'https://x.example'}}\n\
         routes:\n  - {{path: /, upstream: 'http://127.0.0.1:1', auth: public, require_verified_email: true}}\n"
    ));
    let e = public.unwrap_err();
    assert!(e.contains("needs auth: required"), "{e}");
}
