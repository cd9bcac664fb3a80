//! Enforcement at the proxy: what an unauthenticated, unauthorised or forged request gets, and
//! what the upstream is (and is not) told. Every test checks both the gateway's answer and what
//! the mock upstream received.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::json;

use crate::raw;
use crate::util::*;

const PASSWORD: &str = "zq8vLw2x-enforce";

/// A config with small argon2 parameters; `auth_extra` holds more `auth:` keys (indented by two
/// spaces), `rest` the other top-level sections.
fn config(auth_extra: &str, rest: &str) -> String {
    format!("auth:\n  password: {{memory_kib: 1024, iterations: 1}}\n{auth_extra}{rest}")
}

/// A signed-in user, from a signup or login answer.
#[derive(Debug, Clone)]
struct User {
    id: String,
    email: String,
    access: String,
    /// Cookie name -> (value, attributes) from the answer's `Set-Cookie` headers.
    cookies: HashMap<String, (String, String)>,
}

impl User {
    fn bearer(&self) -> String {
        format!("Bearer {}", self.access)
    }

    fn cookie(&self, name: &str) -> String {
        self.cookies
            .get(name)
            .unwrap_or_else(|| panic!("no {name} cookie in {:?}", self.cookies))
            .0
            .clone()
    }
}

/// Name -> (value, attributes) of every `Set-Cookie` of a response.
fn set_cookies(r: &Resp) -> HashMap<String, (String, String)> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .map(|v| {
            let v = v.to_str().unwrap();
            let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (name, value) = pair.split_once('=').unwrap();
            (name.to_owned(), (value.to_owned(), attrs.trim().to_owned()))
        })
        .collect()
}

fn user_from(r: &Resp) -> User {
    let v = r.json();
    User {
        id: v["user"]["id"].as_str().unwrap().to_owned(),
        email: v["user"]["email"].as_str().unwrap().to_owned(),
        access: v["access_token"].as_str().unwrap().to_owned(),
        cookies: set_cookies(r),
    }
}

async fn post_json(url: &str, body: serde_json::Value) -> Resp {
    send(
        req("POST", url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap(),
    )
    .await
    .unwrap()
}

async fn signup(gw: &Gateway, email: &str) -> User {
    let r = post_json(
        &gw.url("/api/auth/signup"),
        json!({"email": email, "password": PASSWORD, "name": "Test User"}),
    )
    .await;
    assert_eq!(r.status, 201, "signup: {}", r.text());
    user_from(&r)
}

async fn login(gw: &Gateway, email: &str) -> User {
    let r = post_json(
        &gw.url("/api/auth/login"),
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(r.status, 200, "login: {}", r.text());
    user_from(&r)
}

/// Creates an admin with the CLI binary on the running gateway's store, then logs it in.
async fn admin(gw: &Gateway, email: &str) -> User {
    let out = cli(
        &gw.path("gateway.yaml"),
        &["user", "add", email, "--role", "admin", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    )
    .await;
    assert_eq!(out.code, 0, "gateway user add: {}", out.stderr);
    let user = login(gw, email).await;
    assert_eq!(out.stdout.trim(), user.id);
    user
}

/// Sends `method url` with `headers` (appended, so a name may repeat) and an optional body.
async fn call(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut b = req(method, url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap()
}

/// One request on a new TCP connection exactly as written (no client-side path cleaning); the
/// status and the whole answer.
async fn raw_get(gw: &Gateway, target: &str, extra_headers: &str) -> (u16, String) {
    let head = format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n{extra_headers}Connection: close\r\n\r\n"
    );
    // The gateway closes the connection after answering; the wait is only a hang guard.
    let out = raw::until_close(gw.http, head.as_bytes(), Duration::from_secs(10)).await;
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line for {target:?}: {out:?}"));
    (status, out)
}

/// `application/x-www-form-urlencoded` for one value: everything but unreserved characters is
/// escaped.
fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Decodes `%XX` escapes (for checking a `Location`).
fn percent_decode(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

// ---- 1. unauthenticated requests ----

#[tokio::test]
async fn unauthenticated_browsers_are_redirected_and_api_clients_get_401() {
    let up = Upstream::start().await;
    let u = up.url();
    let gw = Gateway::start(&config(
        "",
        &format!(
            "routes:\n  - {{path: /deny, upstream: '{u}', auth: required, on_unauthenticated: deny}}\n  - {{path: /redir, upstream: '{u}', auth: required, on_unauthenticated: redirect}}\n  - {{path: /, upstream: '{u}', auth: required}}\n"
        ),
    ))
    .await;
    const HTML: (&str, &str) = ("accept", "text/html,application/xhtml+xml");

    // A browser navigation: 303 to the login page, `next` = path and query, percent-encoded.
    let r = call("GET", &gw.url("/app/page?x=1&y=a%20b"), &[HTML], "").await;
    assert_eq!(r.status, 303, "{}", r.text());
    let location = r.header("location").unwrap();
    assert_eq!(
        location,
        "/api/auth/login?next=/app/page%3Fx%3D1%26y%3Da%2520b"
    );
    let next = location.strip_prefix("/api/auth/login?next=").unwrap();
    assert_eq!(percent_decode(next), "/app/page?x=1&y=a%20b");

    // Script and API clients: 401 JSON with a Bearer challenge.
    let api_clients: [&[(&str, &str)]; 4] = [
        &[("accept", "application/json")],
        &[HTML, ("x-requested-with", "XMLHttpRequest")],
        &[HTML, ("sec-fetch-mode", "cors")],
        &[HTML, ("sec-fetch-mode", "no-cors")],
    ];
    for headers in api_clients {
        let r = call("GET", &gw.url("/app/page"), headers, "").await;
        assert_eq!(r.status, 401, "{headers:?}: {}", r.text());
        assert_eq!(
            r.json(),
            json!({"detail": "Not authenticated"}),
            "{headers:?}"
        );
        assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
        assert!(r.header("location").is_none());
    }
    // A POST is never redirected (the form data would be lost).
    let r = call("POST", &gw.url("/app/form"), &[HTML], "a=1").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));

    // Per route: `deny` is 401 even for a browser, `redirect` is 303 even for an API client.
    let r = call("GET", &gw.url("/deny/x"), &[HTML], "").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    assert!(r.header("location").is_none());
    let r = call(
        "GET",
        &gw.url("/redir/x?q=1"),
        &[("accept", "application/json")],
        "",
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(
        r.header("location").as_deref(),
        Some("/api/auth/login?next=/redir/x%3Fq%3D1")
    );

    assert_eq!(up.count(), 0, "{:?}", up.requests());
}

// ---- 2. open redirects through `next` ----

#[tokio::test]
async fn next_never_leaves_the_origin() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(
        "",
        &format!(
            // Many logins for one account in a row: lift the login limits for this test.
            "rate_limits: {{login_per_ip: 'off', login_per_account: 'off'}}\nroutes:\n  - {{path: /, upstream: '{}', auth: required}}\n",
            up.url()
        ),
    ))
    .await;
    let user = signup(&gw, "nextuser@example.com").await;

    let hidden = |v: &str| format!("<input type=\"hidden\" name=\"next\" value=\"{v}\">");
    let login_form = |next_encoded: String| {
        let body = format!(
            "email={}&password={}&next={next_encoded}",
            form_encode(&user.email),
            form_encode(PASSWORD)
        );
        let url = gw.url("/api/auth/login");
        async move {
            call(
                "POST",
                &url,
                &[("content-type", "application/x-www-form-urlencoded")],
                &body,
            )
            .await
        }
    };

    let payloads = [
        "//evil.test",
        "/\\evil.test",
        "https:evil.test",
        "https://evil.test",
        // Decoded once, this still holds `%2F`.
        "/%2F%2Fevil.test",
        "/a\r\nLocation: https://evil.test",
    ];
    // Each payload fully encoded, plus some as a browser might send them unencoded.
    let mut sent: Vec<String> = payloads.iter().map(|p| form_encode(p)).collect();
    sent.extend(
        [
            "//evil.test",
            "https://evil.test",
            "/%2F%2Fevil.test",
            "/a%0d%0aLocation:%20https://evil.test",
            "/%5Cevil.test",
        ]
        .map(str::to_owned),
    );
    for next in &sent {
        let page = get(&gw.url(&format!("/api/auth/login?next={next}")))
            .await
            .unwrap();
        assert_eq!(page.status, 200, "{next}: {}", page.text());
        assert!(
            page.text().contains(&hidden("/")),
            "{next}: {}",
            page.text()
        );
        assert!(
            !page.text().contains("evil.test"),
            "{next}: {}",
            page.text()
        );

        let r = login_form(next.clone()).await;
        assert_eq!(r.status, 303, "{next}: {}", r.text());
        assert_eq!(r.header("location").as_deref(), Some("/"), "{next}");
        assert!(set_cookies(&r).contains_key("gw_access"), "{next}");
    }

    // A same-origin path with a query is kept, in the form and in the redirect.
    let good = "/dashboard?x=1";
    let page = get(&gw.url(&format!("/api/auth/login?next={}", form_encode(good))))
        .await
        .unwrap();
    assert!(page.text().contains(&hidden(good)), "{}", page.text());
    let r = login_form(form_encode(good)).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location").as_deref(), Some(good));

    assert_eq!(up.count(), 0);
}

// ---- 3. identity headers ----

/// Client-sent copies of identity headers in every spelling.
const SPOOFED: [(&str, &str); 7] = [
    ("X-Auth-User-Id", "spoofed-1"),
    ("x-auth-user-id", "spoofed-2"),
    ("x-auth-user-id", "spoofed-3"),
    ("X_Auth_User_Id", "spoofed-4"),
    ("X-AUTH-ROLES", "admin"),
    ("x-auth-email", "boss@evil.test"),
    ("x_auth_name", "Boss"),
];

/// Header names as an upstream framework might read them (`_` as `-`).
fn loose(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// No header the upstream saw is an `x-auth-*` one.
fn assert_no_identity(seen: &Seen, what: &str) {
    let leaked: Vec<_> = seen
        .headers
        .keys()
        .filter(|k| loose(k.as_str()).starts_with("x-auth-"))
        .collect();
    assert!(leaked.is_empty(), "{what}: {leaked:?} reached the upstream");
}

/// Exactly the gateway's identity headers for `user` (one copy each).
fn assert_identity(seen: &Seen, user: &User, what: &str) {
    assert_eq!(seen.all("x-auth-user-id"), [user.id.as_str()], "{what}");
    assert_eq!(seen.all("x-auth-email"), [user.email.as_str()], "{what}");
    assert_eq!(seen.all("x-auth-name"), ["Test User"], "{what}");
    assert_eq!(seen.all("x-auth-roles"), ["user"], "{what}");
    let others: Vec<_> = seen
        .headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.contains('_') && loose(k).starts_with("x-auth-"))
        .collect();
    assert!(others.is_empty(), "{what}: {others:?}");
    for v in seen.headers.values() {
        let v = v.to_str().unwrap_or("");
        assert!(
            !v.starts_with("spoofed") && v != "boss@evil.test" && v != "Boss",
            "{what}: a spoofed value reached the upstream: {:?}",
            seen.headers
        );
    }
}

fn public_and_required(upstream: &str) -> String {
    format!(
        "routes:\n  - {{path: /public, upstream: '{upstream}', auth: public}}\n  - {{path: /, upstream: '{upstream}', auth: required}}\n"
    )
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config("", &public_and_required(&up.url()))).await;
    let user = signup(&gw, "ident@example.com").await;
    let bearer = user.bearer();

    // HTTP/1.1: public without and with a token, required with a token.
    for (path, token) in [("/public/a", None), ("/public/b", Some(&bearer))] {
        let mut headers = SPOOFED.to_vec();
        if let Some(t) = token {
            headers.push(("authorization", t));
        }
        let r = call("GET", &gw.url(path), &headers, "").await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_no_identity(&up.last(), path);
    }
    let mut headers = SPOOFED.to_vec();
    headers.push(("authorization", &bearer));
    let r = call("GET", &gw.url("/app"), &headers, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_identity(&up.last(), &user, "HTTP/1.1 required");

    // A spoofed header without a token on a required route: refused, nothing forwarded.
    let before = up.count();
    let r = call("GET", &gw.url("/app"), &SPOOFED, "").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(up.count(), before);

    // HTTP/1.1 as raw bytes (`_` spellings no client library sends), pipelined on one
    // connection: the required route with a token, the public route without, the required
    // route without a token.
    let spoof = "X-Auth-User-Id: spoofed-1\r\nx_auth_user_id: spoofed-2\r\nX_AUTH_USER_ID: spoofed-3\r\nX-AUTH-ROLES: admin\r\nx-auth-email: boss@evil.test\r\n";
    let auth = format!("Authorization: {bearer}\r\n");
    let mut c = raw::Client::connect(gw.http).await;
    c.send(format!(
        "GET /app HTTP/1.1\r\nHost: localhost\r\n{spoof}{auth}\r\nGET /public/x HTTP/1.1\r\nHost: localhost\r\n{spoof}\r\nGET /app/2 HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n{spoof}\r\n"
    ))
    .await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "{} {}", r.head, r.text());
    let r = c.response().await;
    assert_eq!(r.status, 200, "{} {}", r.head, r.text());
    let r = c.response().await;
    assert_eq!(r.status, 401, "{} {}", r.head, r.text());
    let seen = up.requests().split_off(before);
    assert_eq!(seen.len(), 2, "{seen:?}");
    let (app, public) = (&seen[0], &seen[1]);
    assert_eq!(app.uri, "/app");
    assert_eq!(app.all("x-auth-user-id"), [user.id.as_str()]);
    assert_eq!(app.all("x-auth-email"), [user.email.as_str()]);
    assert_eq!(app.all("x-auth-roles"), ["user"]);
    assert_eq!(public.uri, "/public/x");
    for s in &seen {
        for (k, v) in &s.headers {
            let v = v.to_str().unwrap_or("");
            assert!(
                !v.starts_with("spoofed") && v != "admin" && v != "boss@evil.test",
                "{}: {k}: {v} reached the upstream",
                s.uri
            );
            assert!(!k.as_str().contains('_'), "{}: {k}", s.uri);
            if s.uri == "/public/x" {
                assert!(!loose(k.as_str()).starts_with("x-auth-"), "{k}");
            }
        }
    }

    // HTTP/2 over TLS.
    for (path, token) in [("/public/h2", false), ("/app/h2", true)] {
        let url = format!("https://localhost:{}{path}", gw.https.port());
        let mut b = req("GET", &url);
        for (k, v) in SPOOFED {
            b = b.header(k, v);
        }
        if token {
            b = b.header("authorization", &bearer);
        }
        let (version, r) = guard(20, h2_send(&gw, b.body(Full::default()).unwrap())).await;
        assert_eq!(version, http::Version::HTTP_2);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let seen = up.last();
        assert_eq!(seen.uri, path);
        if token {
            assert_identity(&seen, &user, "HTTP/2 required");
        } else {
            assert_no_identity(&seen, "HTTP/2 public");
        }
    }
}

#[tokio::test]
async fn configured_identity_header_names_are_set_and_stripped() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(
        "  identity_headers: {user_id: Remote-User}\n",
        &public_and_required(&up.url()),
    ))
    .await;
    let user = signup(&gw, "remote@example.com").await;
    let spoof = [
        ("Remote-User", "spoofed-1"),
        ("remote_user", "spoofed-2"),
        ("REMOTE-USER", "spoofed-3"),
        ("X-Auth-User-Id", "spoofed-4"),
    ];

    let r = call("GET", &gw.url("/public/x"), &spoof, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert!(
        !seen
            .headers
            .keys()
            .any(|k| loose(k.as_str()) == "remote-user"),
        "{:?}",
        seen.headers
    );
    assert_no_identity(&seen, "public");

    let mut headers = spoof.to_vec();
    let bearer = user.bearer();
    headers.push(("authorization", &bearer));
    let r = call("GET", &gw.url("/app"), &headers, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert_eq!(seen.all("remote-user"), [user.id.as_str()]);
    assert!(seen.get("remote_user").is_none(), "{:?}", seen.headers);
    // The default name is not used for the user id any more, and a client copy is still removed.
    assert!(seen.get("x-auth-user-id").is_none(), "{:?}", seen.headers);
    assert_eq!(seen.all("x-auth-email"), [user.email.as_str()]);
}

// ---- 4. roles ----

#[tokio::test]
async fn a_role_route_admits_only_that_role() {
    let admin_up = Upstream::start().await;
    let gw = Gateway::start(&config(
        "",
        &format!(
            "routes:\n  - {{path: /admin, upstream: '{}', auth: required, roles: [admin]}}\n",
            admin_up.url()
        ),
    ))
    .await;
    let user = signup(&gw, "plain@example.com").await;
    let r = call(
        "GET",
        &gw.url("/admin/x"),
        &[("authorization", &user.bearer())],
        "",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json(), json!({"detail": "Forbidden"}));
    assert_eq!(admin_up.count(), 0);

    let boss = admin(&gw, "boss@example.com").await;
    let r = call(
        "GET",
        &gw.url("/admin/x"),
        &[("authorization", &boss.bearer())],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(admin_up.count(), 1);
    let seen = admin_up.last();
    assert_eq!(seen.uri, "/admin/x");
    assert_eq!(seen.all("x-auth-user-id"), [boss.id.as_str()]);
    assert_eq!(seen.all("x-auth-roles"), ["admin"]);
}

// ---- 5. path-owner isolation ----

#[tokio::test]
async fn users_reach_only_their_own_path_unless_bypass_role() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(
        "",
        &format!(
            "routes:\n  - {{path: '/users/{{sub}}', upstream: '{}', auth: required, owner_bypass_roles: [admin]}}\n",
            up.url()
        ),
    ))
    .await;
    let alice = signup(&gw, "alice@example.com").await;
    let bob = signup(&gw, "bob@example.com").await;
    let a = alice.bearer();

    let own = format!("/users/{}/files/a.txt", alice.id);
    let r = call("GET", &gw.url(&own), &[("authorization", &a)], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.count(), 1);
    assert_eq!(up.last().uri, own);
    assert_eq!(up.last().all("x-auth-user-id"), [alice.id.as_str()]);

    // Another user's id, directly or through dot segments: 403, nothing forwarded.
    for path in [
        format!("/users/{}", bob.id),
        format!("/users/{}/files", bob.id),
        format!("/users/{}/../{}/files", alice.id, bob.id),
        format!("/users/{}", bob.id.to_uppercase()),
    ] {
        let (status, out) = raw_get(&gw, &path, &format!("Authorization: {a}\r\n")).await;
        assert_eq!(status, 403, "{path}: {out}");
    }
    let r = call(
        "POST",
        &gw.url(&format!("/users/{}/files", bob.id)),
        &[("authorization", &a)],
        "x",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(up.count(), 1, "{:?}", up.requests());

    // An admin may reach anyone's path.
    let boss = admin(&gw, "owner-admin@example.com").await;
    for id in [&alice.id, &bob.id] {
        let path = format!("/users/{id}/files");
        let r = call(
            "GET",
            &gw.url(&path),
            &[("authorization", &boss.bearer())],
            "",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(up.last().uri, path);
        assert_eq!(up.last().all("x-auth-user-id"), [boss.id.as_str()]);
    }
    assert_eq!(up.count(), 3);
}

// ---- 6. path-normalisation bypasses ----

#[tokio::test]
async fn path_tricks_never_reach_the_admin_upstream() {
    let admin_up = Upstream::start().await;
    let rest = Upstream::start().await;
    let gw = Gateway::start(&config(
        "",
        &format!(
            "routes:\n  - {{path: /public, upstream: '{r}', auth: public}}\n  - {{path: /admin, upstream: '{a}', auth: required, roles: [admin]}}\n  - {{path: /, upstream: '{r}', auth: public}}\n",
            r = rest.url(),
            a = admin_up.url()
        ),
    ))
    .await;
    let user = signup(&gw, "tricks@example.com").await;
    let user_auth = format!("Authorization: {}\r\n", user.bearer());

    // (request target, status without a token, status with a non-admin token)
    let cases = [
        ("//admin", 401, 403),
        ("/x/../admin", 401, 403),
        ("/%2e%2e/admin", 400, 400),
        ("/public/../admin", 401, 403),
        ("/public/%2e%2e/admin", 401, 403),
        ("/%61dmin", 401, 403),
        ("/admin%2F", 400, 400),
        ("/admin%2fx", 400, 400),
        ("/admin%00", 400, 400),
        ("/admin/./", 401, 403),
        ("/admin\\x", 400, 400),
        // Path parameters: Tomcat/Spring read /admin;x=1 as /admin.
        ("/admin;x=1", 400, 400),
        ("/public/..;/admin", 400, 400),
        // Case and trailing dots: IIS, ASP.NET and some Spring and Express setups serve
        // /admin for these, so they fall under the /admin route.
        ("/ADMIN", 401, 403),
        ("/Admin", 401, 403),
        ("/admin.", 401, 403),
        ("/admin%2e", 401, 403),
        ("/aDmIn../x", 401, 403),
    ];
    for (target, anon, plain) in cases {
        let (status, out) = raw_get(&gw, target, "").await;
        assert_eq!(status, anon, "{target} without a token: {out}");
        let (status, out) = raw_get(&gw, target, &user_auth).await;
        assert_eq!(status, plain, "{target} as a non-admin: {out}");
    }
    assert_eq!(admin_up.count(), 0, "{:?}", admin_up.requests());
    assert_eq!(rest.count(), 0, "{:?}", rest.requests());

    // A spoofed role header changes nothing for /ADMIN either.
    let (status, out) = raw_get(&gw, "/ADMIN", "X-Auth-Roles: admin\r\n").await;
    assert_eq!(status, 401, "{out}");
    assert_eq!(admin_up.count(), 0);
    assert_eq!(rest.count(), 0);

    // The same tricks with an admin token reach the admin upstream on the normalised path.
    let boss = admin(&gw, "tricks-admin@example.com").await;
    let (status, out) = raw_get(
        &gw,
        "/public/../%61dmin//x",
        &format!("Authorization: {}\r\n", boss.bearer()),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(admin_up.count(), 1);
    assert_eq!(admin_up.last().uri, "/admin/x");
    assert_eq!(admin_up.last().all("x-auth-user-id"), [boss.id.as_str()]);
    // Another spelling reaches it as the client wrote it (after normalisation).
    let (status, out) = raw_get(
        &gw,
        "/Admin./%78",
        &format!("Authorization: {}\r\n", boss.bearer()),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(admin_up.last().uri, "/Admin./x");
}

// ---- 7. transparent refresh ----

#[tokio::test]
async fn an_expired_cookie_session_is_refreshed_inside_parallel_requests() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config("", &public_and_required(&up.url()))).await;
    signup(&gw, "refresh@example.com").await;
    let user = login(&gw, "refresh@example.com").await;
    let (refresh, attrs) = user.cookies["gw_refresh"].clone();
    assert!(attrs.contains("Path=/;"), "{attrs}");
    assert!(attrs.contains("HttpOnly"), "{attrs}");
    // The browser has dropped the access cookie (its Max-Age passed).
    let jar = format!("gw_refresh={refresh}; gw_csrf={}", user.cookie("gw_csrf"));

    let calls = (0..5).map(|i| {
        let url = gw.url(&format!("/app/{i}"));
        let jar = jar.clone();
        async move {
            call(
                "GET",
                &url,
                &[("cookie", &jar), ("accept", "application/json")],
                "",
            )
            .await
        }
    });
    let answers = guard(30, futures_util::future::join_all(calls)).await;
    let mut new_refresh = Vec::new();
    let mut new_access = Vec::new();
    for r in &answers {
        assert_eq!(r.status, 200, "{}", r.text());
        let set = set_cookies(r);
        let access = &set.get("gw_access").expect("a new access cookie").0;
        let refresh = &set.get("gw_refresh").expect("a new refresh cookie").0;
        assert!(!access.is_empty() && !refresh.is_empty(), "{set:?}");
        assert!(set.contains_key("gw_csrf"), "{set:?}");
        new_access.push(access.clone());
        new_refresh.push(refresh.clone());
    }
    assert_eq!(up.count(), 5);
    for seen in up.requests() {
        assert_eq!(seen.all("x-auth-user-id"), [user.id.as_str()]);
        assert!(seen.get("cookie").is_none(), "{:?}", seen.headers);
    }
    // Within the grace window every request got the same successor, not a new one.
    new_refresh.dedup();
    assert_eq!(new_refresh.len(), 1, "{new_refresh:?}");
    assert_ne!(new_refresh[0], refresh);

    // The new access cookie works on its own.
    let r = call(
        "GET",
        &gw.url("/app/after"),
        &[("cookie", &format!("gw_access={}", new_access[0]))],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().all("x-auth-user-id"), [user.id.as_str()]);
    // And so does the new refresh cookie, once that access cookie is gone too.
    let r = call(
        "GET",
        &gw.url("/app/again"),
        &[
            ("cookie", &format!("gw_refresh={}", new_refresh[0])),
            ("accept", "application/json"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(set_cookies(&r).contains_key("gw_access"));
    assert_eq!(up.count(), 7);
}

#[tokio::test]
async fn a_refusal_or_upstream_error_after_a_transparent_refresh_keeps_the_new_cookies() {
    // The refresh rotated the browser's refresh token; an answer without the successor would
    // leave the browser with the old one, which counts as reuse after the grace window.
    let up = Upstream::start().await;
    let dead = dead_addr().await;
    let gw = Gateway::start(&config(
        "",
        &format!(
            "routes:\n  - {{path: /admin, upstream: '{u}', auth: required, roles: [admin]}}\n  \
             - {{path: /down, upstream: 'http://{dead}', auth: required}}\n  \
             - {{path: /, upstream: '{u}', auth: required}}\n",
            u = up.url()
        ),
    ))
    .await;
    signup(&gw, "rotated@example.com").await;
    for (path, method, status) in [("/admin/x", "GET", 403), ("/down/x", "GET", 502)] {
        let user = login(&gw, "rotated@example.com").await;
        let jar = format!(
            "gw_refresh={}; gw_csrf={}",
            user.cookie("gw_refresh"),
            user.cookie("gw_csrf")
        );
        let r = call(
            method,
            &gw.url(path),
            &[("cookie", &jar), ("accept", "application/json")],
            "",
        )
        .await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        let set = set_cookies(&r);
        let refresh = &set
            .get("gw_refresh")
            .unwrap_or_else(|| {
                panic!(
                    "{method} {path}: no rotated refresh cookie: {:?}",
                    r.headers
                )
            })
            .0;
        assert!(
            !refresh.is_empty() && *refresh != user.cookie("gw_refresh"),
            "{set:?}"
        );
        assert!(set.contains_key("gw_access"), "{set:?}");
    }
    assert_eq!(up.count(), 0, "nothing refused reached the upstream");
}

#[tokio::test]
async fn without_transparent_refresh_a_refresh_cookie_is_not_enough() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(
        "  transparent_refresh: false\n",
        &public_and_required(&up.url()),
    ))
    .await;
    signup(&gw, "norefresh@example.com").await;
    let user = login(&gw, "norefresh@example.com").await;
    let (refresh, attrs) = user.cookies["gw_refresh"].clone();
    assert!(attrs.contains("Path=/api/auth"), "{attrs}");
    let jar = format!("gw_refresh={refresh}; gw_csrf={}", user.cookie("gw_csrf"));
    let r = call(
        "GET",
        &gw.url("/app"),
        &[("cookie", &jar), ("accept", "application/json")],
        "",
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.header("set-cookie").is_none());
    let r = call(
        "GET",
        &gw.url("/app"),
        &[("cookie", &jar), ("accept", "text/html")],
        "",
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(r.header("set-cookie").is_none());
    assert_eq!(up.count(), 0);
}

// ---- 8. CSRF ----

#[tokio::test]
async fn cookie_sessions_need_the_csrf_token_for_unsafe_methods() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config("", &public_and_required(&up.url()))).await;
    signup(&gw, "csrf-a@example.com").await;
    signup(&gw, "csrf-b@example.com").await;
    let a = login(&gw, "csrf-a@example.com").await;
    let b = login(&gw, "csrf-b@example.com").await;
    let a_access = a.cookie("gw_access");
    let a_csrf = a.cookie("gw_csrf");
    let b_csrf = b.cookie("gw_csrf");
    let jar = |csrf: &str| format!("gw_access={a_access}; gw_csrf={csrf}");
    let post = |headers: Vec<(&'static str, String)>| {
        let url = gw.url("/app/things");
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            call("POST", &url, &h, "{}").await
        }
    };

    let refused: Vec<(&str, Vec<(&'static str, String)>)> = vec![
        ("no token", vec![("cookie", jar(&a_csrf))]),
        (
            "wrong token",
            vec![
                ("cookie", jar(&a_csrf)),
                ("x-csrf-token", "bm9uY2U.bWFj".to_owned()),
            ],
        ),
        (
            "header differs from cookie",
            vec![("cookie", jar(&a_csrf)), ("x-csrf-token", b_csrf.clone())],
        ),
        (
            "another user's token as cookie and header",
            vec![("cookie", jar(&b_csrf)), ("x-csrf-token", b_csrf.clone())],
        ),
        (
            "cross-site",
            vec![
                ("cookie", jar(&a_csrf)),
                ("x-csrf-token", a_csrf.clone()),
                ("sec-fetch-site", "cross-site".to_owned()),
            ],
        ),
    ];
    for (what, headers) in refused {
        let r = post(headers).await;
        assert_eq!(r.status, 403, "{what}: {}", r.text());
        assert!(r.json()["detail"].is_string(), "{what}");
    }
    assert_eq!(up.count(), 0, "{:?}", up.requests());

    let r = post(vec![
        ("cookie", jar(&a_csrf)),
        ("x-csrf-token", a_csrf.clone()),
        ("sec-fetch-site", "same-origin".to_owned()),
    ])
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.count(), 1);
    let seen = up.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.all("x-auth-user-id"), [a.id.as_str()]);

    // A refresh-cookie session (expired access cookie) gets the same rule before it refreshes.
    let refresh_jar = format!("gw_refresh={}; gw_csrf={a_csrf}", a.cookie("gw_refresh"));
    let r = post(vec![("cookie", refresh_jar.clone())]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.header("set-cookie").is_none());
    let r = post(vec![
        ("cookie", refresh_jar.replace(&a_csrf, &b_csrf)),
        ("x-csrf-token", b_csrf.clone()),
    ])
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(up.count(), 1);
    let r = post(vec![
        ("cookie", refresh_jar),
        ("x-csrf-token", a_csrf.clone()),
    ])
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.count(), 2);
    assert_eq!(up.last().all("x-auth-user-id"), [a.id.as_str()]);

    // Bearer requests carry no ambient credential: no CSRF token needed.
    let r = post(vec![("authorization", a.bearer())]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.count(), 3);
    assert_eq!(up.last().all("x-auth-user-id"), [a.id.as_str()]);
}

// ---- 9. the gateway's credentials stay at the gateway ----

#[tokio::test]
async fn the_upstream_never_sees_the_gateways_credentials() {
    let up = Upstream::start().await;
    let u = up.url();
    let gw = Gateway::start(&config(
        "",
        &format!(
            "routes:\n  - {{path: /public, upstream: '{u}', auth: public}}\n  - {{path: /fwd, upstream: '{u}', auth: required, forward_token: true}}\n  - {{path: /, upstream: '{u}', auth: required}}\n"
        ),
    ))
    .await;
    signup(&gw, "creds@example.com").await;
    let user = login(&gw, "creds@example.com").await;
    let all_cookies = format!(
        "theme=dark; gw_access={}; gw_refresh={}; gw_csrf={}",
        user.cookie("gw_access"),
        user.cookie("gw_refresh"),
        user.cookie("gw_csrf")
    );
    let bearer = user.bearer();

    let cases: [(&str, Vec<(&str, &str)>); 4] = [
        (
            "/app/bearer",
            vec![("authorization", &bearer), ("cookie", &all_cookies)],
        ),
        ("/app/cookie", vec![("cookie", &all_cookies)]),
        (
            "/public/bearer",
            vec![("authorization", &bearer), ("cookie", &all_cookies)],
        ),
        ("/public/cookie", vec![("cookie", &all_cookies)]),
    ];
    for (path, headers) in cases {
        let r = call("GET", &gw.url(path), &headers, "").await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let seen = up.last();
        assert_eq!(seen.uri, path);
        assert!(
            seen.get("authorization").is_none(),
            "{path}: {:?}",
            seen.headers
        );
        assert_eq!(seen.all("cookie"), ["theme=dark"], "{path}");
    }

    // forward_token: the Authorization header goes through; the session cookies still do not.
    let r = call(
        "GET",
        &gw.url("/fwd/x"),
        &[("authorization", &bearer), ("cookie", &all_cookies)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert_eq!(seen.all("authorization"), [bearer.as_str()]);
    assert_eq!(seen.all("cookie"), ["theme=dark"]);
    assert_eq!(seen.all("x-auth-user-id"), [user.id.as_str()]);
    assert_eq!(up.count(), 5);
}

// ---- 10. WebSocket ----

#[tokio::test]
async fn websocket_upgrade_needs_a_token() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(
        "",
        &format!(
            "routes:\n  - {{path: /ws, upstream: '{}', auth: required}}\n",
            up.url()
        ),
    ))
    .await;
    let user = signup(&gw, "ws@example.com").await;
    let url = format!("ws://{}/ws", gw.http);

    let tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let err = guard(10, tokio_tungstenite::client_async(url.clone(), tcp))
        .await
        .expect_err("an upgrade without a token must be refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 401),
        other => panic!("expected a 401, got {other:?}"),
    }
    assert_eq!(up.count(), 0);

    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", user.bearer().parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let (mut ws, resp) = guard(10, tokio_tungstenite::client_async(request, tcp))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("hello, authenticated"))
        .await
        .unwrap();
    let echoed = guard(10, ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("hello, authenticated"));
    ws.close(None).await.unwrap();
    let seen = up.last();
    assert_eq!(seen.uri, "/ws");
    assert_eq!(seen.all("x-auth-user-id"), [user.id.as_str()]);
    assert!(seen.get("authorization").is_none());
    assert_eq!(up.count(), 1);
}

// ---- 11. signed identity assertion ----

#[tokio::test]
async fn the_signed_assertion_verifies_and_is_not_an_access_token() {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    let up = Upstream::start().await;
    let u = up.url();
    let gw = Gateway::start(&config(
        "  assertion: {header: X-Auth-Assertion}\n",
        &format!(
            "routes:\n  - {{path: /public, upstream: '{u}', auth: public}}\n  - {{path: /app1, upstream: '{u}', auth: required, assertion_audience: app1}}\n  - {{path: /, upstream: '{u}', auth: required}}\n"
        ),
    ))
    .await;
    let user = signup(&gw, "assert@example.com").await;
    let r = call(
        "GET",
        &gw.url("/app1/x"),
        &[
            ("authorization", &user.bearer()),
            ("x-auth-assertion", "forged"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    let assertions = seen.all("x-auth-assertion");
    assert_eq!(assertions.len(), 1, "{assertions:?}");
    let jwt = &assertions[0];

    let header = jsonwebtoken::decode_header(jwt).unwrap();
    assert_eq!(header.typ.as_deref(), Some("gw-identity+jwt"));
    assert_eq!(header.alg, Algorithm::EdDSA);
    let jwks = get(&gw.url("/.well-known/jwks.json")).await.unwrap().json();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"].as_str() == header.kid.as_deref())
        .unwrap_or_else(|| panic!("kid {:?} not in {jwks}", header.kid));
    assert_eq!(jwk["crv"], "Ed25519");
    let key = DecodingKey::from_ed_components(jwk["x"].as_str().unwrap()).unwrap();
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_audience(&["app1"]);
    v.set_required_spec_claims(&["exp", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &v)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], user.id.as_str());
    assert_eq!(claims["aud"], "app1");
    assert_eq!(claims["email"], user.email.as_str());
    let mut other = Validation::new(Algorithm::EdDSA);
    other.set_audience(&["app2"]);
    assert!(jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &other).is_err());

    // The assertion is not an access token.
    let before = up.count();
    let r = call(
        "GET",
        &gw.url("/anything"),
        &[
            ("authorization", &format!("Bearer {jwt}")),
            ("accept", "application/json"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = call(
        "GET",
        &gw.url("/api/auth/me"),
        &[("authorization", &format!("Bearer {jwt}"))],
        "",
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(up.count(), before);

    // A client cannot hand the upstream an assertion of its own on a public route.
    let r = call(
        "GET",
        &gw.url("/public/x"),
        &[("x-auth-assertion", jwt)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(up.last().get("x-auth-assertion").is_none());
}

#[tokio::test]
async fn a_custom_assertion_header_is_stripped_from_clients() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(
        "  assertion: {header: X-Identity-Assertion}\n",
        &public_and_required(&up.url()),
    ))
    .await;
    let user = signup(&gw, "custom-assert@example.com").await;
    let spoof = [
        ("X-Identity-Assertion", "forged-1"),
        ("x_identity_assertion", "forged-2"),
    ];
    let r = call("GET", &gw.url("/public/x"), &spoof, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert!(
        !seen
            .headers
            .keys()
            .any(|k| loose(k.as_str()) == "x-identity-assertion"),
        "{:?}",
        seen.headers
    );

    let mut headers = spoof.to_vec();
    let bearer = user.bearer();
    headers.push(("authorization", &bearer));
    let r = call("GET", &gw.url("/app"), &headers, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    let got = seen.all("x-identity-assertion");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("ey"), "{got:?}");
    assert!(
        seen.get("x_identity_assertion").is_none(),
        "{:?}",
        seen.headers
    );
}

// ---- 12. CORS ----

#[tokio::test]
async fn cors_preflights_are_answered_at_the_edge() {
    let up = Upstream::start().await;
    let u = up.url();
    let gw = Gateway::start(&format!(
        "{}cors:\n  allowed_origins: ['http://app.test']\n  allow_credentials: true\n",
        config(
            "",
            &format!(
                "routes:\n  - {{path: /api, upstream: '{u}', auth: required, cors: true}}\n  - {{path: /, upstream: '{u}', auth: required}}\n"
            ),
        )
    ))
    .await;
    let user = signup(&gw, "cors@example.com").await;
    let preflight = |path: &str, origin: &'static str| {
        let url = gw.url(path);
        async move {
            call(
                "OPTIONS",
                &url,
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    (
                        "access-control-request-headers",
                        "authorization, content-type",
                    ),
                ],
                "",
            )
            .await
        }
    };

    // A preflight needs no token and never reaches the upstream.
    let r = preflight("/api/items", "http://app.test").await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("http://app.test")
    );
    assert_eq!(
        r.header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert!(
        r.header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    let allowed = r.header("access-control-allow-headers").unwrap();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"));

    let r = preflight("/api/items", "http://evil.test").await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.header("access-control-allow-origin").is_none());
    assert!(r.header("access-control-allow-credentials").is_none());

    // The auth API answers preflights too, and its answers carry the CORS headers.
    let r = preflight("/api/auth/login", "http://app.test").await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("http://app.test")
    );
    let body = json!({"email": "cors@example.com", "password": PASSWORD}).to_string();
    let r = call(
        "POST",
        &gw.url("/api/auth/login"),
        &[
            ("origin", "http://app.test"),
            ("content-type", "application/json"),
        ],
        &body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("http://app.test")
    );
    assert_eq!(up.count(), 0);

    // A route without `cors: true` gets no preflight answer (and no CORS headers).
    let r = preflight("/other", "http://app.test").await;
    assert!(
        r.header("access-control-allow-origin").is_none(),
        "{:?}",
        r.headers
    );
    assert_eq!(up.count(), 0);

    // Actual requests: the listed origin gets ACAO, another origin does not.
    let bearer = user.bearer();
    let r = call(
        "GET",
        &gw.url("/api/items"),
        &[("origin", "http://app.test"), ("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("http://app.test")
    );
    assert_eq!(
        r.header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert!(
        r.headers
            .get_all("vary")
            .iter()
            .any(|v| v.to_str().unwrap().contains("Origin"))
    );
    assert_eq!(up.count(), 1);
    assert_eq!(up.last().all("x-auth-user-id"), [user.id.as_str()]);
    let r = call(
        "GET",
        &gw.url("/api/items"),
        &[("origin", "http://evil.test"), ("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("access-control-allow-origin").is_none());
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn cors_errors_are_readable_by_the_allowed_origin() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "{}cors:\n  allowed_origins: ['http://app.test']\n  allow_credentials: true\n",
        config(
            "",
            &format!(
                "routes:\n  - {{path: /api, upstream: '{}', auth: required, cors: true}}\n",
                up.url()
            ),
        )
    ))
    .await;
    signup(&gw, "cors-err@example.com").await;
    const ORIGIN: (&str, &str) = ("origin", "http://app.test");

    // The single-page app must be able to read "not signed in" to send its user to sign in.
    let r = call(
        "GET",
        &gw.url("/api/items"),
        &[ORIGIN, ("accept", "application/json")],
        "",
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("http://app.test")
    );
    assert_eq!(
        r.header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    // ... and a wrong password on the auth API.
    let body = json!({"email": "cors-err@example.com", "password": "not-the-password"}).to_string();
    let r = call(
        "POST",
        &gw.url("/api/auth/login"),
        &[ORIGIN, ("content-type", "application/json")],
        &body,
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("http://app.test")
    );
    // Another origin still gets nothing.
    let r = call(
        "GET",
        &gw.url("/api/items"),
        &[
            ("origin", "http://evil.test"),
            ("accept", "application/json"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.header("access-control-allow-origin").is_none());
    assert_eq!(up.count(), 0);
}
