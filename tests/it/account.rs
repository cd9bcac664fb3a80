//! The signed-in user's own account: change-password and the sessions list, over the real
//! server (redb store; the store contract tests cover PostgreSQL).

use crate::util::*;

const PW: &str = "correct horse battery staple";
const NEW_PW: &str = "a whole new password 2";

async fn gateway(up: &Upstream) -> Gateway {
    Gateway::start(&auth_config(
        "",
        &format!(
            "routes:\n  - {{path: /app, upstream: '{}', auth: required}}\n",
            up.url()
        ),
    ))
    .await
}

async fn sessions(gw: &Gateway, access: &str) -> Resp {
    get_with(
        &gw.url("/api/auth/sessions"),
        &[("authorization", &bearer(access))],
    )
    .await
}

async fn change(gw: &Gateway, access: &str, current: &str, new: &str) -> Resp {
    post_json(
        &gw.url("/api/auth/change-password"),
        &serde_json::json!({"current_password": current, "new_password": new}),
        &[("authorization", &bearer(access))],
    )
    .await
}

#[tokio::test]
async fn change_password_ends_every_other_session_and_keeps_the_asker_signed_in() {
    let up = Upstream::start().await;
    let gw = gateway(&up).await;
    let a = signup(&gw, "cpw@example.com", PW).await;
    let b = login(&gw, "cpw@example.com", PW).await;
    let other = signup(&gw, "bystander@example.com", PW).await;

    // A wrong current password: 403 (not 401), and nothing changes.
    let r = change(&gw, &a.access, "not the password", NEW_PW).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["detail"], "Current password is incorrect");
    assert_eq!(me_status(&gw, &b.access).await, 200);
    // A new password the policy refuses: 422.
    let r = change(&gw, &a.access, PW, "short").await;
    assert_eq!(r.status, 422, "{}", r.text());
    // Without a session: 401.
    let r = post_json(
        &gw.url("/api/auth/change-password"),
        &serde_json::json!({"current_password": PW, "new_password": NEW_PW}),
        &[],
    )
    .await;
    assert_eq!(r.status, 401);

    let r = change(&gw, &a.access, PW, NEW_PW).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let fresh = Tokens::from_resp(r);
    // The asker goes on with the new tokens; every earlier token of the user is dead.
    assert_eq!(me_status(&gw, &fresh.access).await, 200);
    for s in [&a, &b] {
        assert_eq!(me_status(&gw, &s.access).await, 401);
        assert_eq!(refresh(&gw, &s.refresh).await.status, 401);
    }
    refreshed(&gw, &fresh.refresh).await;
    // Another user is untouched.
    assert_eq!(me_status(&gw, &other.access).await, 200);
    // The old password no longer signs in; the new one does.
    let r = post_json(
        &gw.url("/api/auth/login"),
        &serde_json::json!({"email": "cpw@example.com", "password": PW}),
        &[],
    )
    .await;
    assert_eq!(r.status, 401);
    login(&gw, "cpw@example.com", NEW_PW).await;
}

#[tokio::test]
async fn a_user_sees_and_ends_their_own_sessions_only() {
    let up = Upstream::start().await;
    let gw = gateway(&up).await;
    let a = signup(&gw, "ses@example.com", PW).await;
    let r = post_json(
        &gw.url("/api/auth/login"),
        &serde_json::json!({"email": "ses@example.com", "password": PW}),
        &[("user-agent", "Firefox/140 <script>")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = Tokens::from_resp(r);
    let eve = signup(&gw, "eve@example.com", PW).await;

    let r = sessions(&gw, &b.access).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let list = r.json()["sessions"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{list:?}");
    let current: Vec<_> = list.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1, "{list:?}");
    let a_id = list.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for s in &list {
        for key in ["id", "created_at", "last_used_at", "expires_at"] {
            assert!(s[key].is_string(), "{key} in {s}");
        }
        assert_eq!(s["ip"], "127.0.0.1", "{s}");
    }
    // The session of this login carries its user agent; the sign-up's sent none.
    assert_eq!(current[0]["user_agent"], "Firefox/140 <script>");
    assert!(list.iter().any(|s| s["user_agent"].is_null()), "{list:?}");

    // Eve cannot end (or see) Ada's session: 404, and it lives on.
    let url = gw.url(&format!("/api/auth/sessions/{a_id}"));
    let r = call(
        "DELETE",
        &url,
        &[("authorization", &bearer(&eve.access))],
        None,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(me_status(&gw, &a.access).await, 200);
    let eve_list = sessions(&gw, &eve.access).await.json();
    assert_eq!(eve_list["sessions"].as_array().unwrap().len(), 1);

    // From session b, end session a: a's tokens die at once, b's live.
    let r = call(
        "DELETE",
        &url,
        &[("authorization", &bearer(&b.access))],
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(me_status(&gw, &a.access).await, 401);
    assert_eq!(refresh(&gw, &a.refresh).await.status, 401);
    assert_eq!(me_status(&gw, &b.access).await, 200);
    let r = call(
        "DELETE",
        &url,
        &[("authorization", &bearer(&b.access))],
        None,
    )
    .await;
    assert_eq!(r.status, 404, "ending it twice");
    let list = sessions(&gw, &b.access).await.json();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);

    // Ending the current session is a logout: cookies cleared, token dead.
    let b_id = list["sessions"][0]["id"].as_str().unwrap().to_owned();
    let r = call(
        "DELETE",
        &gw.url(&format!("/api/auth/sessions/{b_id}")),
        &[("authorization", &bearer(&b.access))],
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    assert!(
        !set_cookies(&r).is_empty(),
        "the session cookies are cleared"
    );
    assert_eq!(me_status(&gw, &b.access).await, 401);

    // Without a session: 401; other methods: 405.
    assert_eq!(
        get_with(&gw.url("/api/auth/sessions"), &[]).await.status,
        401
    );
    let r = call(
        "POST",
        &url,
        &[("authorization", &bearer(&eve.access))],
        None,
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("DELETE"));
}

/// POST a form body.
pub(crate) async fn post_form(url: &str, body: &str, headers: &[(&str, &str)]) -> Resp {
    let mut b = req("POST", url).header("content-type", "application/x-www-form-urlencoded");
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    send(
        b.body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_owned(),
        )))
        .unwrap(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn the_account_page_lists_sessions_ends_them_and_changes_the_password() {
    let up = Upstream::start().await;
    let gw = gateway(&up).await;
    let page = gw.url("/api/auth/account");

    // Not signed in: to the sign-in page, which comes back here.
    let r = get_with(&page, &[]).await;
    assert_eq!(r.status, 303);
    assert_eq!(
        r.header("location").as_deref(),
        Some("/api/auth/login?next=/api/auth/account")
    );

    let other = signup(&gw, "page@example.com", PW).await;
    let me = login(&gw, "page@example.com", PW).await;
    let (access, csrf) = (me.cookie("gw_access"), me.cookie("gw_csrf"));
    let jar = cookie_header(&[("gw_access", &access), ("gw_csrf", &csrf)]);
    let r = get_with(&page, &[("cookie", &jar)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let html = r.text();
    assert!(html.contains("page@example.com"), "{html}");
    assert!(html.contains("(this browser)"), "{html}");
    assert!(r.header("content-security-policy").is_some());
    // Two sessions, each with a sign-out form carrying the CSRF token.
    assert_eq!(
        html.matches("name=\"op\" value=\"end\"").count(),
        2,
        "{html}"
    );
    assert!(html.contains(&format!("name=\"csrf\" value=\"{csrf}\"")));
    let other_id = get_with(
        &gw.url("/api/auth/sessions"),
        &[("authorization", &bearer(&other.access))],
    )
    .await
    .json()["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Without the CSRF token, or from another site: refused, nothing ends.
    let body = format!("op=end&session={other_id}");
    let r = post_form(&page, &body, &[("cookie", &jar)]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = post_form(
        &page,
        &format!("{body}&csrf={csrf}"),
        &[("cookie", &jar), ("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(me_status(&gw, &other.access).await, 200);

    // With it: the other session ends, back to the page.
    let r = post_form(&page, &format!("{body}&csrf={csrf}"), &[("cookie", &jar)]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(
        r.header("location").as_deref(),
        Some("/api/auth/account?done=session")
    );
    assert_eq!(me_status(&gw, &other.access).await, 401);

    // A wrong current password: the page again with the message, nothing changed.
    let r = post_form(
        &page,
        &format!(
            "op=change-password&csrf={csrf}&current_password=nope&new_password=another+long+one"
        ),
        &[("cookie", &jar)],
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.text().contains("Current password is incorrect"));
    assert_eq!(me_status(&gw, &access).await, 200);

    // The right one: new cookies, back to the page; the old access token is dead.
    let r = post_form(
        &page,
        &format!(
            "op=change-password&csrf={csrf}&current_password={}&new_password=another+long+one",
            PW.replace(' ', "+")
        ),
        &[("cookie", &jar)],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(
        r.header("location").as_deref(),
        Some("/api/auth/account?done=password")
    );
    let new_access = set_cookie(&r, "gw_access").value;
    let new_csrf = set_cookie(&r, "gw_csrf").value;
    assert_eq!(me_status(&gw, &access).await, 401);
    let jar = cookie_header(&[("gw_access", &new_access), ("gw_csrf", &new_csrf)]);
    let r = get_with(&format!("{page}?done=password"), &[("cookie", &jar)]).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("Password changed"));
    login(&gw, "page@example.com", "another long one").await;
}

/// A cookie session needs the CSRF token to change the password or end a session through
/// the JSON API too; a bearer token does not.
#[tokio::test]
async fn cookie_sessions_need_the_csrf_token_on_the_account_api() {
    let up = Upstream::start().await;
    let gw = gateway(&up).await;
    let me = signup(&gw, "csrf-acct@example.com", PW).await;
    let (access, csrf) = (me.cookie("gw_access"), me.cookie("gw_csrf"));
    let jar = cookie_header(&[("gw_access", &access), ("gw_csrf", &csrf)]);
    let list = get_with(&gw.url("/api/auth/sessions"), &[("cookie", &jar)]).await;
    assert_eq!(list.status, 200, "GET needs no CSRF token");
    let id = list.json()["sessions"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = gw.url(&format!("/api/auth/sessions/{id}"));
    let r = call("DELETE", &url, &[("cookie", &jar)], None).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let body = serde_json::json!({"current_password": PW, "new_password": NEW_PW});
    let r = post_json(
        &gw.url("/api/auth/change-password"),
        &body,
        &[("cookie", &jar)],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(me_status(&gw, &me.access).await, 200);
    let r = call(
        "DELETE",
        &url,
        &[("cookie", &jar), ("x-csrf-token", &csrf)],
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(me_status(&gw, &me.access).await, 401);
}
