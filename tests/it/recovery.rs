//! Password reset through a real SMTP server (aiosmtpd): the mail, its link, the page behind
//! it, and what a reset does and refuses.

use std::time::Duration;

use crate::smtp::{SmtpSink, link_token};
use crate::util::*;

const PW: &str = "correct horse battery staple";
const NEW_PW: &str = "brand new passphrase 7";
/// What the sign-in page says after a reset by the hosted form.
const CHANGED: &str = "Your password has been changed. Sign in with the new one.";

async fn gateway(sink: &SmtpSink, up: &Upstream) -> Gateway {
    Gateway::start(&config(
        sink,
        up,
        "from: 'Acme <no-reply@acme.example>', public_url: 'https://login.acme.example'",
    ))
    .await
}

/// The test config with `email:` on `sink` and the given `from`/`public_url` members.
fn config(sink: &SmtpSink, up: &Upstream, email: &str) -> String {
    auth_config(
        "",
        &format!(
            "email: {{smtp_url: '{}', {email}}}\n\
             routes:\n  - {{path: /app, upstream: '{}', auth: required}}\n",
            sink.url(),
            up.url()
        ),
    )
}

/// Signs up, and takes the verification mail every signup sends off the sink.
async fn signed_up(gw: &Gateway, sink: &SmtpSink, email: &str) -> Tokens {
    let s = signup(gw, email, PW).await;
    let mail = sink.wait_for_message(Duration::from_secs(10)).await;
    assert_eq!(mail.rcpt_to, [email]);
    assert!(
        mail.subject.contains("Confirm your e-mail"),
        "{}",
        mail.subject
    );
    s
}

async fn forgot(gw: &Gateway, email: &str) -> Resp {
    post_json(
        &gw.url("/api/auth/forgot-password"),
        &serde_json::json!({ "email": email }),
        &[],
    )
    .await
}

/// The token of the reset link in a mail, checking the link points at `public_url`.
fn token_in(text: &str) -> String {
    link_token(
        text,
        "https://login.acme.example/api/auth/reset-password?token=",
    )
}

async fn reset(gw: &Gateway, token: &str, password: &str) -> Resp {
    post_json(
        &gw.url("/api/auth/reset-password"),
        &serde_json::json!({ "token": token, "password": password }),
        &[],
    )
    .await
}

#[tokio::test]
async fn a_reset_link_by_mail_sets_the_password_once_and_ends_every_session() {
    let Some(sink) = SmtpSink::start() else {
        return;
    };
    let up = Upstream::start().await;
    let gw = gateway(&sink, &up).await;
    let s1 = signed_up(&gw, &sink, "rita@example.com").await;
    let s2 = login(&gw, "rita@example.com", PW).await;

    let r = forgot(&gw, "Rita@Example.com").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let mail = sink.wait_for_message(Duration::from_secs(10)).await;
    assert_eq!(mail.rcpt_to, ["rita@example.com"]);
    let text = mail.text.expect("a plain-text part");
    let token = token_in(&text);
    assert!(mail.html.expect("an HTML part").contains(&token));

    // The page behind the link shows a form and uses nothing.
    let page = get_with(
        &gw.url(&format!("/api/auth/reset-password?token={token}")),
        &[],
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("rita@example.com"), "{}", page.text());
    assert_eq!(
        page.header("referrer-policy").as_deref(),
        Some("strict-origin")
    );
    assert_eq!(me_status(&gw, &s1.access).await, 200);

    // A weak password is refused and the link still works.
    assert_eq!(reset(&gw, &token, "short").await.status, 422);
    let r = reset(&gw, &token, NEW_PW).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Single use.
    let again = reset(&gw, &token, "yet another passphrase 9").await;
    assert_eq!(again.status, 404, "{}", again.text());
    assert_eq!(
        again.json()["detail"],
        "This link is invalid or has expired"
    );

    // Every session ended; the old password is gone, the new one works.
    for s in [&s1, &s2] {
        assert_eq!(me_status(&gw, &s.access).await, 401);
        assert_eq!(refresh(&gw, &s.refresh).await.status, 401);
    }
    let r = post_json(
        &gw.url("/api/auth/login"),
        &serde_json::json!({"email": "rita@example.com", "password": PW}),
        &[],
    )
    .await;
    assert_eq!(r.status, 401);
    login(&gw, "rita@example.com", NEW_PW).await;
}

#[tokio::test]
async fn forgot_password_answers_the_same_and_mails_only_real_accounts() {
    let Some(sink) = SmtpSink::start() else {
        return;
    };
    let up = Upstream::start().await;
    let gw = gateway(&sink, &up).await;
    signed_up(&gw, &sink, "real@example.com").await;

    let unknown = forgot(&gw, "nobody@example.com").await;
    let malformed = forgot(&gw, "not an address").await;
    let known = forgot(&gw, "real@example.com").await;
    for r in [&unknown, &malformed, &known] {
        assert_eq!(r.status, 202);
        assert_eq!(r.text(), known.text());
    }
    // Exactly one mail, to the real account.
    let mail = sink.wait_for_message(Duration::from_secs(10)).await;
    assert_eq!(mail.rcpt_to, ["real@example.com"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sink.received(),
        2,
        "the verification mail and one reset mail"
    );

    // A second request replaces the first link; a login makes the newest useless too.
    let first = token_in(&mail.text.unwrap());
    forgot(&gw, "real@example.com").await;
    let second = token_in(
        &sink
            .wait_for_message(Duration::from_secs(10))
            .await
            .text
            .unwrap(),
    );
    assert_ne!(first, second);
    assert_eq!(reset(&gw, &first, NEW_PW).await.status, 404);
    login(&gw, "real@example.com", PW).await;
    assert_eq!(reset(&gw, &second, NEW_PW).await.status, 404);

    // Tampered and malformed tokens are the same refusal.
    for bad in ["", "x", &format!("{}A", &second[..second.len() - 1])] {
        assert_eq!(reset(&gw, bad, NEW_PW).await.status, 404, "{bad:?}");
    }
    let page = get_with(&gw.url("/api/auth/reset-password?token=nope"), &[]).await;
    assert_eq!(page.status, 404);
    assert!(page.text().contains("Ask for a new link"));
}

#[tokio::test]
async fn the_hosted_pages_reset_a_password_by_form() {
    let Some(sink) = SmtpSink::start() else {
        return;
    };
    let up = Upstream::start().await;
    let gw = gateway(&sink, &up).await;
    signed_up(&gw, &sink, "form@example.com").await;

    // The sign-in page links to the forgot page, which posts back to itself.
    let login_page = get_with(&gw.url("/api/auth/login"), &[]).await;
    assert!(login_page.text().contains("/api/auth/forgot-password"));
    let r = send(
        req("POST", &gw.url("/api/auth/forgot-password"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                "email=form%40example.com",
            )))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 202);
    assert!(r.text().contains("on its way"), "{}", r.text());
    let token = token_in(
        &sink
            .wait_for_message(Duration::from_secs(10))
            .await
            .text
            .unwrap(),
    );

    let r = send(
        req("POST", &gw.url("/api/auth/reset-password"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(http_body_util::Full::new(bytes::Bytes::from(format!(
                "token={token}&password=brand+new+passphrase+7"
            ))))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(
        r.header("location").as_deref(),
        Some("/api/auth/login?done=reset")
    );
    // The sign-in page says so, as the pages say that something went well.
    let page = get_with(&gw.url("/api/auth/login?done=reset"), &[]).await;
    assert_eq!(page.status, 200);
    assert!(
        page.text()
            .contains(&format!("<p class=\"done\" role=\"status\">{CHANGED}</p>")),
        "{}",
        page.text()
    );
    login(&gw, "form@example.com", NEW_PW).await;
}

/// The notice after a reset is chosen by name, and its text is never the URL's.
#[tokio::test]
async fn the_sign_in_page_shows_only_its_own_notices() {
    let gw = Gateway::start(&auth_config("", "")).await;
    for query in [
        "",
        "?done=",
        "?done=RESET",
        "?done=password",
        "?done=%3Cb%3Eowned%3C%2Fb%3E",
        "?reset=1&notice=owned",
    ] {
        let page = get_with(&gw.url(&format!("/api/auth/login{query}")), &[]).await;
        assert_eq!(page.status, 200, "{query}");
        let text = page.text();
        assert!(!text.contains("role=\"status\""), "{query}: {text}");
        assert!(!text.contains("owned"), "{query}: {text}");
    }
    // Only the sign-in page has it.
    let page = get_with(&gw.url("/api/auth/signup?done=reset"), &[]).await;
    assert!(!page.text().contains(CHANGED), "{}", page.text());
}

/// Without `email:` the reset endpoints do not exist, and the sign-in page does not offer them.
#[tokio::test]
async fn without_email_there_is_no_reset() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&auth_config(
        "",
        &format!(
            "routes:\n  - {{path: /app, upstream: '{}', auth: required}}\n",
            up.url()
        ),
    ))
    .await;
    assert_eq!(forgot(&gw, "a@example.com").await.status, 404);
    assert_eq!(reset(&gw, "x", NEW_PW).await.status, 404);
    assert_eq!(
        get_with(&gw.url("/api/auth/forgot-password"), &[])
            .await
            .status,
        404
    );
    let page = get_with(&gw.url("/api/auth/login"), &[]).await;
    assert!(!page.text().contains("forgot-password"));
}

/// A reload changes the sender and the links of the next mail; one that removes `email:` turns
/// the endpoints off at once.
#[tokio::test]
async fn a_reload_changes_the_mail_settings_or_turns_them_off() {
    let Some(sink) = SmtpSink::start() else {
        return;
    };
    let up = Upstream::start().await;
    let gw = gateway(&sink, &up).await;
    signed_up(&gw, &sink, "rel@example.com").await;

    gw.reload(&config(
        &sink,
        &up,
        "from: 'Globex <auth@globex.example>', public_url: 'https://sso.globex.example/'",
    ))
    .await
    .unwrap();
    assert_eq!(forgot(&gw, "rel@example.com").await.status, 202);
    let mail = sink.wait_for_message(Duration::from_secs(10)).await;
    assert!(mail.from.contains("auth@globex.example"), "{}", mail.from);
    let token = link_token(
        mail.text.as_deref().unwrap_or_default(),
        "https://sso.globex.example/api/auth/reset-password?token=",
    );
    assert_eq!(reset(&gw, &token, NEW_PW).await.status, 200);

    let without = auth_config(
        "",
        &format!(
            "routes:\n  - {{path: /app, upstream: '{}', auth: required}}\n",
            up.url()
        ),
    );
    gw.reload(&without).await.unwrap();
    assert_eq!(forgot(&gw, "rel@example.com").await.status, 404);
    login(&gw, "rel@example.com", NEW_PW).await;
}

/// A form post of `body` to `path`.
async fn post_form(gw: &Gateway, path: &str, body: &str) -> Resp {
    send(
        req("POST", &gw.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_owned(),
            )))
            .unwrap(),
    )
    .await
    .unwrap()
}

/// The sign-in page's `next` goes to the forgot page and back, and through a reset page opened
/// with it to the sign-in page after the reset; only a same-origin path, escaped and encoded.
#[tokio::test]
async fn next_survives_the_way_through_a_forgotten_password() {
    let Some(sink) = SmtpSink::start() else {
        return;
    };
    let up = Upstream::start().await;
    let gw = gateway(&sink, &up).await;
    signed_up(&gw, &sink, "next@example.com").await;
    const ENCODED: &str = "/app/page%3Fx%3D1%26y%3D2";
    const NEXT: &str = "/app/page?x=1&amp;y=2";

    let login = get_with(&gw.url(&format!("/api/auth/login?next={ENCODED}")), &[]).await;
    let forgot_link = format!("href=\"/api/auth/forgot-password?next={ENCODED}\"");
    assert!(login.text().contains(&forgot_link), "{}", login.text());

    let forgot = get_with(
        &gw.url(&format!("/api/auth/forgot-password?next={ENCODED}")),
        &[],
    )
    .await;
    assert_eq!(forgot.status, 200);
    let back = format!("<a href=\"/api/auth/login?next={ENCODED}\">Back to sign in</a>");
    let field = format!("<input type=\"hidden\" name=\"next\" value=\"{NEXT}\">");
    for part in [&back, &field] {
        assert!(
            forgot.text().contains(part.as_str()),
            "{part}: {}",
            forgot.text()
        );
    }
    let sent = post_form(
        &gw,
        "/api/auth/forgot-password",
        &format!("email=next%40example.com&next={ENCODED}"),
    )
    .await;
    assert_eq!(sent.status, 202, "{}", sent.text());
    assert!(sent.text().contains(&back), "{}", sent.text());
    let token = token_in(
        &sink
            .wait_for_message(Duration::from_secs(10))
            .await
            .text
            .unwrap(),
    );

    // The mailed link has no `next`; a reset page opened with one carries it to sign-in.
    let page = get_with(
        &gw.url(&format!(
            "/api/auth/reset-password?token={token}&next={ENCODED}"
        )),
        &[],
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains(&field), "{}", page.text());
    let weak = post_form(
        &gw,
        "/api/auth/reset-password",
        &format!("token={token}&password=short&next={ENCODED}"),
    )
    .await;
    assert_eq!(weak.status, 422, "{}", weak.text());
    assert!(weak.text().contains(&field), "{}", weak.text());
    let r = post_form(
        &gw,
        "/api/auth/reset-password",
        &format!("token={token}&password=brand+new+passphrase+7&next={ENCODED}"),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let location = format!("/api/auth/login?done=reset&next={ENCODED}");
    assert_eq!(r.header("location"), Some(location.clone()));
    let page = get_with(&gw.url(&location), &[]).await;
    assert!(page.text().contains(CHANGED), "{}", page.text());
    assert!(page.text().contains(&field), "{}", page.text());
    let used = post_form(
        &gw,
        "/api/auth/reset-password",
        &format!("token={token}&password=brand+new+passphrase+8&next={ENCODED}"),
    )
    .await;
    assert_eq!(used.status, 404, "{}", used.text());
    let again = format!("href=\"/api/auth/forgot-password?next={ENCODED}\"");
    assert!(used.text().contains(&again), "{}", used.text());

    // Anything but a same-origin path is dropped; what passes is escaped and encoded.
    for hostile in ["//evil.test", "https%3A%2F%2Fevil.test", "%2F%2Fevil.test"] {
        for path in ["/api/auth/login", "/api/auth/forgot-password"] {
            let page = get_with(&gw.url(&format!("{path}?next={hostile}")), &[]).await;
            let text = page.text();
            assert!(!text.contains("evil.test"), "{path}?next={hostile}: {text}");
        }
        let sent = post_form(
            &gw,
            "/api/auth/forgot-password",
            &format!("email=next%40example.com&next={hostile}"),
        )
        .await;
        assert!(!sent.text().contains("evil.test"), "{}", sent.text());
        assert!(
            sent.text().contains("<a href=\"/api/auth/login\">"),
            "{}",
            sent.text()
        );
    }
    let quoted = "/%22%3E%3Cscript%3Ex%3C%2Fscript%3E";
    let page = get_with(
        &gw.url(&format!("/api/auth/forgot-password?next={quoted}")),
        &[],
    )
    .await;
    let text = page.text();
    assert!(!text.contains("<script>"), "{text}");
    assert!(
        text.contains("value=\"/&quot;&gt;&lt;script&gt;x&lt;/script&gt;\""),
        "{text}"
    );
}
