//! Second factors end to end: setting up an authenticator app, the login's second step with a
//! code or a recovery code, step-up, `mfa: required` routes and `auth.mfa.required_for_roles`,
//! the `X-Auth-MFA` header, brute-force regulation, removal and the admin's reset. Codes are
//! computed from the secret the gateway hands out, at the real time (a test run never spans
//! more than the one step of skew the gateway allows either side).

use std::time::{SystemTime, UNIX_EPOCH};

use gateway::auth::mfa::totp;
use serde_json::{Value, json};

use crate::util::*;

const PW: &str = "correct horse battery staple";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// RFC 4648 base32 (no padding), as the setup answer gives the secret.
fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut acc, mut out) = (0u32, 0u64, Vec::new());
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c).unwrap() as u64;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// The app a test user set up: computes codes for any time.
struct App(totp::TotpSecret);

impl App {
    fn code(&self, at: u64) -> String {
        totp::code_at(&self.0, at)
    }
}

async fn gateway(up: &Upstream, auth: &str) -> Gateway {
    Gateway::start(&auth_config(
        auth,
        &format!(
            "rate_limits: {{login_per_ip: 'off', login_per_account: 'off'}}\n\
             routes:\n  - {{path: /app, upstream: '{u}', auth: required}}\n  \
             - {{path: /admin, upstream: '{u}', auth: required, mfa: required}}\n",
            u = up.url()
        ),
    ))
    .await
}

fn headers(access: &str) -> [(&'static str, String); 1] {
    [("authorization", bearer(access))]
}

async fn api(gw: &Gateway, method: &str, path: &str, access: &str, body: Option<&Value>) -> Resp {
    let auth = bearer(access);
    call(
        method,
        &gw.url(&format!("/api/auth{path}")),
        &[("authorization", &auth)],
        body,
    )
    .await
}

/// Sets up an authenticator app for the user of `access`; returns the app and the recovery
/// codes. The confirming code is the current step's.
async fn enrol(gw: &Gateway, access: &str) -> (App, Vec<String>) {
    let setup = api(gw, "POST", "/mfa/totp/setup", access, Some(&json!({}))).await;
    assert_eq!(setup.status, 200, "{}", setup.text());
    let v = setup.json();
    let uri = v["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(v["qr_svg"].as_str().unwrap().starts_with("<svg"));
    let secret = base32_decode(v["secret"].as_str().unwrap());
    let app = App(totp::TotpSecret::from_bytes(secret).unwrap());

    let wrong = api(
        gw,
        "POST",
        "/mfa/totp/confirm",
        access,
        Some(&json!({"code": "000000"})),
    )
    .await;
    assert_eq!(wrong.status, 403, "{}", wrong.text());
    let ok = api(
        gw,
        "POST",
        "/mfa/totp/confirm",
        access,
        Some(&json!({"code": app.code(now())})),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let codes: Vec<String> = ok.json()["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    (app, codes)
}

async fn password_step(gw: &Gateway, email: &str) -> Value {
    let r = post_json(
        &gw.url("/api/auth/login"),
        &json!({"email": email, "password": PW}),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

async fn second_step(gw: &Gateway, mfa_token: &str, code: &str) -> Resp {
    post_json(
        &gw.url("/api/auth/login/mfa"),
        &json!({"mfa_token": mfa_token, "code": code}),
        &[],
    )
    .await
}

/// The `amr` claim of an access token.
fn amr(access: &str) -> Vec<String> {
    use base64::Engine as _;
    let payload = access.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    v["amr"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_authenticator_app_makes_login_a_two_step_affair() {
    let up = Upstream::start().await;
    let gw = gateway(&up, "").await;
    let first = signup(&gw, "ada@example.com", PW).await;
    assert_eq!(amr(&first.access), ["pwd"]);
    let (app, codes) = enrol(&gw, &first.access).await;
    let status = api(&gw, "GET", "/mfa", &first.access, None).await;
    assert_eq!(
        status.json(),
        json!({"totp": true, "passkeys": 0, "recovery_codes_left": 10, "session_mfa": false})
    );

    // The password alone gives no session.
    let step = password_step(&gw, "ada@example.com").await;
    assert_eq!(step["mfa_required"], true);
    assert_eq!(step["methods"], json!(["totp", "recovery_code"]));
    assert!(step.get("access_token").is_none(), "{step}");
    let mfa_token = step["mfa_token"].as_str().unwrap().to_owned();
    // The mfa_token is not a credential anywhere else.
    let as_bearer = get_with(
        &gw.url("/app/x"),
        &headers(&mfa_token)
            .each_ref()
            .map(|(n, v)| (*n, v.as_str())),
    )
    .await;
    assert_eq!(as_bearer.status, 401);
    assert_eq!(refresh(&gw, &mfa_token).await.status, 401);

    // A wrong code, then the next step's code (the confirming code used the current one).
    let wrong = second_step(&gw, &mfa_token, "123456").await;
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    let next_code = app.code(now() + 30);
    let done = second_step(&gw, &mfa_token, &next_code).await;
    assert_eq!(done.status, 200, "{}", done.text());
    let session = Tokens::from_resp(done);
    assert_eq!(amr(&session.access), ["pwd", "otp", "mfa"]);
    // Single use: the token, and the code.
    assert_eq!(second_step(&gw, &mfa_token, &next_code).await.status, 401);
    let again = password_step(&gw, "ada@example.com").await;
    let replay = second_step(&gw, again["mfa_token"].as_str().unwrap(), &next_code).await;
    assert_eq!(replay.status, 401, "a code is accepted once");

    // The upstream is told, and a client cannot pretend.
    let seen = get_with(
        &gw.url("/admin/x"),
        &[
            ("authorization", &bearer(&session.access)),
            ("x-auth-mfa", "true"),
        ],
    )
    .await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    assert_eq!(up.last().all("x-auth-mfa"), ["true"]);
    let plain = get_with(
        &gw.url("/app/x"),
        &[
            ("authorization", &bearer(&first.access)),
            ("x-auth-mfa", "true"),
        ],
    )
    .await;
    assert_eq!(plain.status, 200);
    assert_eq!(up.last().all("x-auth-mfa"), ["false"]);

    // A refreshed session keeps its amr.
    let refreshed = refreshed(&gw, &session.refresh).await;
    assert_eq!(amr(&refreshed.access), ["pwd", "otp", "mfa"]);
    // So does the session a password change starts (it is signed in as the one that changed).
    let changed = api(
        &gw,
        "POST",
        "/change-password",
        &refreshed.access,
        Some(&json!({"current_password": PW, "new_password": "another long passphrase"})),
    )
    .await;
    assert_eq!(changed.status, 200, "{}", changed.text());
    assert_eq!(
        amr(changed.json()["access_token"].as_str().unwrap()),
        ["pwd", "otp", "mfa"]
    );
    let changed_back = api(
        &gw,
        "POST",
        "/change-password",
        changed.json()["access_token"].as_str().unwrap(),
        Some(&json!({"current_password": "another long passphrase", "new_password": PW})),
    )
    .await;
    assert_eq!(changed_back.status, 200, "{}", changed_back.text());

    // A recovery code works once, in any spelling.
    let step = password_step(&gw, "ada@example.com").await;
    let token = step["mfa_token"].as_str().unwrap();
    let spelled = codes[0].to_uppercase().replace('-', " ");
    let by_code = second_step(&gw, token, &spelled).await;
    assert_eq!(by_code.status, 200, "{}", by_code.text());
    let step = password_step(&gw, "ada@example.com").await;
    let token = step["mfa_token"].as_str().unwrap();
    assert_eq!(second_step(&gw, token, &codes[0]).await.status, 401);
    let latest = changed_back.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let status = api(&gw, "GET", "/mfa", &latest, None).await;
    assert_eq!(status.json()["recovery_codes_left"], 9);

    // Counted: one enrolment; the wrong confirm code, the wrong login code, the replays.
    let metrics = get(&format!("http://{}/metrics", gw.admin))
        .await
        .unwrap()
        .text();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert_eq!(value("gateway_mfa_enrolled_total"), 1.0);
    assert_eq!(value("gateway_mfa_code_failures_total"), 4.0);
    assert_eq!(value("gateway_logins_total{result=\"ok\"}"), 2.0);
}

#[tokio::test]
async fn mfa_routes_refuse_password_sessions_until_a_step_up() {
    let up = Upstream::start().await;
    let gw = gateway(&up, "").await;
    let s = signup(&gw, "bo@example.com", PW).await;

    // Without any factor: 403 for an API client, the second-factor page for a browser.
    let json_refusal = get_with(
        &gw.url("/admin/panel"),
        &[("authorization", &bearer(&s.access))],
    )
    .await;
    assert_eq!(json_refusal.status, 403, "{}", json_refusal.text());
    assert_eq!(
        json_refusal.json()["detail"],
        "Sign in with your second factor to continue"
    );
    let browser = get_with(
        &gw.url("/admin/panel?tab=1"),
        &[
            ("authorization", &bearer(&s.access)),
            ("accept", "text/html"),
        ],
    )
    .await;
    assert_eq!(browser.status, 303, "{}", browser.text());
    assert_eq!(
        browser.header("location").as_deref(),
        Some("/api/auth/two-factor?next=/admin/panel%3Ftab%3D1")
    );
    // Over HTTP/2 too.
    let (_, h2) = h2_send(
        &gw,
        http::Request::get(format!("https://{}/admin/panel", gw.https))
            .header("authorization", bearer(&s.access))
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(h2.status, 403);
    assert_eq!(up.count(), 0, "nothing reached the upstream");

    // Step-up: a new session with the factor; the old one ends.
    let (app, codes) = enrol(&gw, &s.access).await;
    assert_eq!(
        get_with(
            &gw.url("/admin/panel"),
            &[("authorization", &bearer(&s.access))]
        )
        .await
        .status,
        403,
        "setting up a factor does not make this session a two-factor one"
    );
    let wrong = api(
        &gw,
        "POST",
        "/mfa/verify",
        &s.access,
        Some(&json!({"code": "999999"})),
    )
    .await;
    assert_eq!(wrong.status, 403, "{}", wrong.text());
    let up_step = api(
        &gw,
        "POST",
        "/mfa/verify",
        &s.access,
        Some(&json!({"code": app.code(now() + 30)})),
    )
    .await;
    assert_eq!(up_step.status, 200, "{}", up_step.text());
    let stepped = Tokens::from_resp(up_step);
    assert_eq!(amr(&stepped.access), ["pwd", "otp", "mfa"]);
    let ok = get_with(
        &gw.url("/admin/panel"),
        &[("authorization", &bearer(&stepped.access))],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        me_status(&gw, &s.access).await,
        401,
        "the old session ended"
    );
    assert_eq!(refresh(&gw, &s.refresh).await.status, 401);

    // Two step-ups sent at once from one session, each with a good code: one new session,
    // the other refused (the session it would replace has just ended).
    let again = login_with_code(&gw, "bo@example.com", &codes[0]).await;
    let (first, second) = (json!({"code": codes[1]}), json!({"code": codes[2]}));
    let (a, b) = tokio::join!(
        api(&gw, "POST", "/mfa/verify", &again.access, Some(&first)),
        api(&gw, "POST", "/mfa/verify", &again.access, Some(&second)),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401], "{} / {}", a.text(), b.text());
}

/// Signs in with the password and then `code`.
async fn login_with_code(gw: &Gateway, email: &str, code: &str) -> Tokens {
    let step = password_step(gw, email).await;
    let r = second_step(gw, step["mfa_token"].as_str().unwrap(), code).await;
    assert_eq!(r.status, 200, "{}", r.text());
    Tokens::from_resp(r)
}

#[tokio::test]
async fn required_for_roles_asks_those_users_everywhere() {
    let up = Upstream::start().await;
    let gw = gateway(
        &up,
        "default_roles: [admin], mfa: {required_for_roles: [admin], issuer: 'Acme Corp'}",
    )
    .await;
    let s = signup(&gw, "root@example.com", PW).await;
    let r = get_with(&gw.url("/app/x"), &[("authorization", &bearer(&s.access))]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let setup = api(&gw, "POST", "/mfa/totp/setup", &s.access, Some(&json!({}))).await;
    let uri = setup.json()["otpauth_uri"].as_str().unwrap().to_owned();
    assert!(
        uri.starts_with("otpauth://totp/Acme%20Corp:root%40example.com?"),
        "{uri}"
    );
    assert!(uri.contains("issuer=Acme%20Corp"), "{uri}");

    // Signing in on the hosted page sends such a user to set a factor up first.
    let r = crate::account::post_form(
        &gw.url("/api/auth/login"),
        &format!(
            "email=root%40example.com&password={}&next=/app/x",
            PW.replace(' ', "+")
        ),
        &[],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(
        r.header("location").as_deref(),
        Some("/api/auth/two-factor?next=/app/x")
    );
}

#[tokio::test]
async fn wrong_codes_are_regulated_like_wrong_passwords() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&auth_config(
        "",
        &format!(
            "rate_limits: {{login_per_ip: 'off', login_per_account: 'off'}}\n\
             regulation: {{max_retries: 3}}\n\
             routes:\n  - {{path: /app, upstream: '{}', auth: required}}\n",
            up.url()
        ),
    ))
    .await;
    let s = signup(&gw, "cy@example.com", PW).await;
    let (app, _) = enrol(&gw, &s.access).await;
    let step = password_step(&gw, "cy@example.com").await;
    let token = step["mfa_token"].as_str().unwrap();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(second_step(&gw, token, "000001").await.status);
    }
    assert!(
        statuses.contains(&429),
        "no ban after wrong codes: {statuses:?}"
    );
    // Banned: even the right code is refused now.
    let right = second_step(&gw, token, &app.code(now() + 30)).await;
    assert_eq!(right.status, 429, "{}", right.text());
}

#[tokio::test]
async fn removing_the_app_needs_the_password_and_a_code_or_the_admin() {
    let up = Upstream::start().await;
    let gw = gateway(&up, "").await;
    let s = signup(&gw, "di@example.com", PW).await;
    let (app, codes) = enrol(&gw, &s.access).await;
    let remove = |password: &str, code: &str| json!({"password": password, "code": code});
    let r = api(
        &gw,
        "DELETE",
        "/mfa/totp",
        &s.access,
        Some(&remove("wrong password 1", &codes[1])),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = api(
        &gw,
        "DELETE",
        "/mfa/totp",
        &s.access,
        Some(&remove(PW, "000000")),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = api(
        &gw,
        "DELETE",
        "/mfa/totp",
        &s.access,
        Some(&remove(PW, &codes[1])),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let step = password_step(&gw, "di@example.com").await;
    assert!(step["access_token"].is_string(), "one step again: {step}");

    // Set up again; the admin's reset removes it and ends the sessions.
    let again = Tokens::from_resp(
        post_json(
            &gw.url("/api/auth/login"),
            &json!({"email": "di@example.com", "password": PW}),
            &[],
        )
        .await,
    );
    let _ = app;
    enrol(&gw, &again.access).await;
    let shown = cli(
        &gw.path("gateway.yaml"),
        &["user", "show", "di@example.com"],
        "",
    )
    .await;
    assert!(
        shown
            .stdout
            .contains("second factor:   authenticator app, 10 recovery codes left"),
        "{shown:?}"
    );
    let out = cli(
        &gw.path("gateway.yaml"),
        &["user", "reset-mfa", "di@example.com"],
        "",
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    let shown = cli(
        &gw.path("gateway.yaml"),
        &["user", "show", "di@example.com"],
        "",
    )
    .await;
    assert!(shown.stdout.contains("second factor:   none"), "{shown:?}");
    wait_until("the reset ends the session", || true).await;
    let step = password_step(&gw, "di@example.com").await;
    assert!(step["access_token"].is_string(), "{step}");
}

/// The value of `name="field" value="..."` in a page (HTML-escaped values are not expected).
fn field(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no {name} field in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// The hosted pages, by form: set up the app from the second-factor page, sign in with the
/// second screen, and be sent back to an `mfa: required` page.
#[tokio::test]
async fn the_hosted_pages_set_up_and_use_the_app() {
    use crate::account::post_form;
    let up = Upstream::start().await;
    let gw = gateway(&up, "").await;
    let me = signup(&gw, "eve@example.com", PW).await;
    let jar = cookie_header(&[
        ("gw_access", &me.cookie("gw_access")),
        ("gw_csrf", &me.cookie("gw_csrf")),
    ]);
    let csrf = me.cookie("gw_csrf");
    let page = gw.url("/api/auth/two-factor");

    // A browser at an mfa route goes to the second-factor page, which offers the setup.
    let r = get_with(
        &gw.url("/admin/x"),
        &[("cookie", &jar), ("accept", "text/html")],
    )
    .await;
    assert_eq!(r.status, 303);
    let to = r.header("location").unwrap();
    let r = get_with(&gw.url(&to), &[("cookie", &jar)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("Set up an authenticator app"),
        "{}",
        r.text()
    );
    let account = get_with(&gw.url("/api/auth/account"), &[("cookie", &jar)]).await;
    assert!(account.text().contains("Two-factor sign-in</h2><p>Off."));

    // Setup: a page with the QR code and the key; without the CSRF field, refused.
    let r = post_form(&page, "op=setup&next=/admin/x", &[("cookie", &jar)]).await;
    assert_eq!(r.status, 403);
    let r = post_form(
        &page,
        &format!("op=setup&next=/admin/x&csrf={csrf}"),
        &[("cookie", &jar)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let html = r.text();
    assert!(html.contains("<svg"), "{html}");
    let key = html
        .split("Key: <code>")
        .nth(1)
        .and_then(|t| t.split('<').next())
        .unwrap()
        .to_owned();
    let app = App(totp::TotpSecret::from_bytes(base32_decode(&key)).unwrap());
    let r = post_form(
        &page,
        &format!(
            "op=confirm&next=/admin/x&csrf={csrf}&code={}",
            app.code(now())
        ),
        &[("cookie", &jar)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text().matches("<li><code>").count(), 10, "{}", r.text());

    // Sign in by form: the second screen, then the page asked for, with a two-factor session.
    let r = post_form(
        &gw.url("/api/auth/login"),
        &format!(
            "email=eve%40example.com&password={}&next=/admin/x",
            PW.replace(' ', "+")
        ),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let html = r.text();
    assert!(set_cookies(&r).is_empty(), "no session before the code");
    let token = field(&html, "mfa_token");
    let r = post_form(
        &gw.url("/api/auth/login/mfa"),
        &format!("mfa_token={token}&next=/admin/x&code=000000"),
        &[],
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("Invalid code"));
    let r = post_form(
        &gw.url("/api/auth/login/mfa"),
        &format!(
            "mfa_token={token}&next=/admin/x&code={}",
            app.code(now() + 30)
        ),
        &[],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location").as_deref(), Some("/admin/x"));
    let signed_in = Tokens {
        access: set_cookie(&r, "gw_access").value,
        refresh: String::new(),
        resp: r,
    };
    let jar = cookie_header(&[("gw_access", &signed_in.access)]);
    let r = get_with(&gw.url("/admin/x"), &[("cookie", &jar)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().all("x-auth-mfa"), ["true"]);
}

// ---- Passkeys (the ceremonies themselves run in Chromium: tests/browser/passkeys.mjs) ----

async fn passkey_gateway(up: &Upstream, webauthn: &str) -> Gateway {
    gateway(up, &format!("webauthn: {{{webauthn}}}")).await
}

/// `POST mfa/webauthn/register/finish` with `state` and `credential`.
async fn finish(gw: &Gateway, access: &str, state: &Value, credential: &Value) -> Resp {
    let body = json!({"state": state, "credential": credential});
    api(
        gw,
        "POST",
        "/mfa/webauthn/register/finish",
        access,
        Some(&body),
    )
    .await
}

#[tokio::test]
async fn passkey_endpoints_exist_only_when_configured() {
    let up = Upstream::start().await;
    let off = gateway(&up, "").await;
    let s = signup(&off, "pk0@example.com", PW).await;
    for (method, path) in [
        ("POST", "/mfa/webauthn/register/start"),
        ("GET", "/mfa/webauthn"),
        ("POST", "/passkey/start"),
    ] {
        let r = api(&off, method, path, &s.access, Some(&json!({}))).await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
    }
    let page = get_with(&off.url("/api/auth/login"), &[]).await;
    assert!(!page.text().contains("data-passkey"), "{}", page.text());

    // On, without passwordless: second factor only.
    let on = passkey_gateway(&up, "origin: 'https://login.example.com'").await;
    let s = signup(&on, "pk1@example.com", PW).await;
    let started = api(
        &on,
        "POST",
        "/mfa/webauthn/register/start",
        &s.access,
        Some(&json!({})),
    )
    .await;
    assert_eq!(started.status, 200, "{}", started.text());
    let v = started.json();
    assert_eq!(v["publicKey"]["rp"]["id"], "login.example.com");
    assert_eq!(v["publicKey"]["user"]["name"], "pk1@example.com");
    assert_eq!(
        v["publicKey"]["authenticatorSelection"]["userVerification"],
        "required"
    );
    assert!(v["state"].as_str().unwrap().len() > 40);
    assert_eq!(started.header("cache-control").as_deref(), Some("no-store"));
    let r = post_json(&on.url("/api/auth/passkey/start"), &json!({}), &[]).await;
    assert_eq!(r.status, 404, "passwordless is off");
    let page = get_with(&on.url("/api/auth/login"), &[]).await;
    assert!(!page.text().contains("data-passkey"));

    // A bad answer is refused, and its state is then used up.
    let state = v["state"].clone();
    let bogus = json!({"id": "AAAA", "rawId": "AAAA", "type": "public-key", "extensions": {},
        "response": {"attestationObject": "AAAA", "clientDataJSON": "AAAA"}});
    let r = finish(&on, &s.access, &state, &bogus).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = finish(&on, &s.access, &state, &bogus).await;
    assert_eq!(r.status, 409, "a state is answered once: {}", r.text());
    // Another user's state, or a forged one: refused before any check (and not used up).
    let other = signup(&on, "pk2@example.com", PW).await;
    let theirs = api(
        &on,
        "POST",
        "/mfa/webauthn/register/start",
        &other.access,
        Some(&json!({})),
    )
    .await;
    let their_state = theirs.json()["state"].clone();
    let r = finish(&on, &s.access, &their_state, &bogus).await;
    assert_eq!(r.status, 409, "{}", r.text());
    let r = finish(&on, &other.access, &their_state, &bogus).await;
    assert_eq!(r.status, 403, "still usable by its owner: {}", r.text());
    let r = finish(&on, &s.access, &json!("forged"), &bogus).await;
    assert_eq!(r.status, 409, "{}", r.text());
    let listed = api(&on, "GET", "/mfa/webauthn", &s.access, None).await;
    assert_eq!(listed.json(), json!({"passkeys": []}));
    // No passkey yet: nothing to verify with.
    let r = api(
        &on,
        "POST",
        "/mfa/webauthn/challenge",
        &s.access,
        Some(&json!({})),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text());

    // Passwordless: the sign-in page offers it, with the script its CSP allows.
    let pl = passkey_gateway(
        &up,
        "origin: 'https://login.example.com', passwordless: true",
    )
    .await;
    let r = post_json(&pl.url("/api/auth/passkey/start"), &json!({}), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["publicKey"]["rpId"], "login.example.com");
    let page = get_with(&pl.url("/api/auth/login"), &[]).await;
    assert!(
        page.text().contains("data-passkey=\"sign-in\""),
        "{}",
        page.text()
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    // `gateway check` says so, and names the routes that need a second factor.
    let out = cli(&pl.path("gateway.yaml"), &["check"], "").await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(
            "passkeys: on (origin https://login.example.com, rp_id login.example.com, also without a password)"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("/admin") && l.contains("mfa=required")),
        "{}",
        out.stdout
    );
    let js = get_with(&pl.url("/api/auth/webauthn.js"), &[]).await;
    assert_eq!(js.status, 200);
    assert!(js.text().contains("navigator.credentials"));
}

#[test]
fn webauthn_settings_are_checked() {
    let load = |auth: &str| {
        gateway::config::from_str(
            &format!("version: 1\nauth:\n  webauthn: {auth}\n"),
            "gateway.yaml",
            std::path::Path::new("."),
            &|_| None,
        )
    };
    let ok = load("{origin: 'https://login.example.com', rp_id: example.com, passwordless: true}")
        .unwrap();
    let w = ok.auth.webauthn.unwrap();
    assert_eq!((w.rp_id.as_str(), w.passwordless), ("example.com", true));
    assert_eq!(w.rp_name, "Gateway");
    for (bad, says) in [
        ("{origin: 'http://login.example.com'}", "https"),
        ("{origin: 'https://login.example.com/path'}", "no path"),
        ("{origin: 'https://127.0.0.1:8443'}", "IP address"),
        (
            "{origin: 'https://login.example.com', rp_id: other.com}",
            "domain it is under",
        ),
        (
            "{origin: 'https://login.example.com', colour: red}",
            "colour",
        ),
    ] {
        let e = load(bad).unwrap_err().to_string();
        assert!(
            e.contains(says) && (e.contains("gateway.yaml:3:") || e.contains("line 3")),
            "{bad}: {e}"
        );
    }
    // Localhost may be plain http (development); no origin and no email: off.
    assert!(
        load("{origin: 'http://localhost:8080'}")
            .unwrap()
            .auth
            .webauthn
            .is_some()
    );
    assert!(
        load("{passwordless: true}")
            .unwrap()
            .auth
            .webauthn
            .is_none()
    );
}
