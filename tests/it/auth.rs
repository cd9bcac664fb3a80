//! The auth API over real HTTP: sign-up, login, refresh, logout, `me`, JWKS, cookies and CSRF,
//! and what a `required` route forwards. The service's finer rules (clock-driven expiry, the
//! grace chain, change feed) are unit-tested beside it; these tests check what a client sees.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::util::*;

const PW: &str = "correct horse battery staple";

fn routes(upstream: &str) -> String {
    format!(
        "routes:\n  - {{path: /admin, upstream: '{upstream}', auth: required, roles: [admin]}}\n  - {{path: /staff, upstream: '{upstream}', auth: required, roles: [user]}}\n  - {{path: /app, upstream: '{upstream}', auth: required}}\n  - {{path: /public, upstream: '{upstream}', auth: public}}\n"
    )
}

/// A gateway with fast hashing, `extra` auth settings and the test routes.
async fn gateway(extra: &str, up: &Upstream) -> Gateway {
    Gateway::start(&auth_config(extra, &routes(&up.url()))).await
}

fn detail(r: &Resp) -> String {
    r.json()["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("no detail in {}", r.text()))
        .to_owned()
}

/// Nothing that looks like a password hash or a password field in a response.
fn assert_no_secrets(r: &Resp) {
    let text = r.text();
    assert!(!text.contains("$argon2"), "{text}");
    assert!(!text.contains("password"), "{text}");
    assert!(!text.contains(PW), "{text}");
}

fn assert_user_shape(user: &Value, email: &str, name: Option<&str>) {
    let obj = user.as_object().unwrap_or_else(|| panic!("{user}"));
    let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "id",
            "email",
            "name",
            "roles",
            "email_verified",
            "created_at"
        ]),
        "{user}"
    );
    assert_eq!(user["email_verified"], false, "no mail was sent");
    assert!(!user["id"].as_str().unwrap().is_empty());
    assert_eq!(user["email"], email);
    assert_eq!(user["name"], name.map_or(Value::Null, |n| json!(n)));
    assert_eq!(user["roles"], json!(["user"]));
    assert!(user["created_at"].as_str().unwrap().ends_with('Z'));
}

fn assert_token_shape(v: &Value) {
    assert_eq!(v["token_type"], "bearer", "{v}");
    assert!(
        v["access_token"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3),
        "{v}"
    );
    assert!(
        v["refresh_token"].as_str().is_some_and(|t| !t.is_empty()),
        "{v}"
    );
    assert!(
        v["expires_in"].as_u64().is_some_and(|n| n > 0 && n <= 900),
        "{v}"
    );
}

#[tokio::test]
async fn signup_login_refresh_me_logout_happy_path() {
    let up = Upstream::start().await;
    let gw = gateway("", &up).await;

    let r = post_json(
        &gw.url("/api/auth/signup"),
        &json!({"email": "ada@example.com", "password": PW, "name": "Ada"}),
        &[],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_no_secrets(&r);
    let v = r.json();
    assert_token_shape(&v);
    assert_user_shape(&v["user"], "ada@example.com", Some("Ada"));
    let id = v["user"]["id"].as_str().unwrap().to_owned();
    let signup_access = v["access_token"].as_str().unwrap().to_owned();

    // `me` answers the user object itself, not wrapped.
    let me = get_with(
        &gw.url("/api/auth/me"),
        &[("authorization", &bearer(&signup_access))],
    )
    .await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_no_secrets(&me);
    assert_user_shape(&me.json(), "ada@example.com", Some("Ada"));
    assert_eq!(me.json()["id"], id.as_str());

    let login = login(&gw, "ada@example.com", PW).await;
    assert_no_secrets(&login.resp);
    let v = login.resp.json();
    assert_token_shape(&v);
    assert_user_shape(&v["user"], "ada@example.com", Some("Ada"));
    assert_eq!(v["user"]["id"], id.as_str());

    let r = refresh(&gw, &login.refresh).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_no_secrets(&r);
    let v = r.json();
    assert_token_shape(&v);
    assert_user_shape(&v["user"], "ada@example.com", Some("Ada"));
    let new_access = v["access_token"].as_str().unwrap();
    assert_eq!(me_status(&gw, new_access).await, 200);

    let out = call(
        "POST",
        &gw.url("/api/auth/logout"),
        &[("authorization", &bearer(new_access))],
        None,
    )
    .await;
    assert_eq!(out.status, 204, "{}", out.text());
    assert!(out.body.is_empty());
    assert_eq!(me_status(&gw, new_access).await, 401);
    // The other session (from sign-up) is untouched by a plain logout.
    assert_eq!(me_status(&gw, &signup_access).await, 200);

    let jwks = get(&gw.url("/.well-known/jwks.json")).await.unwrap();
    assert_eq!(jwks.status, 200);
    assert_no_secrets(&jwks);
}

#[tokio::test]
async fn email_is_normalised() {
    let up = Upstream::start().await;
    let gw = gateway("", &up).await;
    let s = signup(&gw, "  Alice@EXAMPLE.com ", PW).await;
    assert_eq!(s.resp.json()["user"]["email"], "alice@example.com");
    let l = login(&gw, "alice@example.com", PW).await;
    assert_eq!(l.resp.json()["user"]["id"], s.resp.json()["user"]["id"]);
    let l = login(&gw, "ALICE@example.COM", PW).await;
    assert_eq!(l.resp.json()["user"]["id"], s.resp.json()["user"]["id"]);
}

#[tokio::test]
async fn duplicate_email_is_409() {
    let up = Upstream::start().await;
    let gw = gateway("", &up).await;
    signup(&gw, "bob@example.com", PW).await;
    for email in ["bob@example.com", "BOB@Example.com "] {
        let r = post_json(
            &gw.url("/api/auth/signup"),
            &json!({"email": email, "password": "another long password"}),
            &[],
        )
        .await;
        assert_eq!(r.status, 409, "{}", r.text());
        assert_eq!(r.json(), json!({"detail": "Email already registered"}));
    }
    // The first account keeps its password.
    login(&gw, "bob@example.com", PW).await;
}

#[tokio::test]
async fn password_policy_is_explained() {
    let up = Upstream::start().await;
    let gw = gateway("", &up).await;
    let long_local = "averyverylonglocalpart@example.com";
    let cases: [(&str, &str, &str); 6] = [
        ("a@example.com", "abcdxy7", "at least 8 characters"),
        ("b@example.com", "password123", "too common"),
        ("c@example.com", "12345678", "too common"),
        ("d@example.com", &"x".repeat(300), "at most 256 bytes"),
        (long_local, long_local, "email"),
        (long_local, "AveryVeryLongLocalPart", "email"),
    ];
    for (email, password, says) in cases {
        let r = post_json(
            &gw.url("/api/auth/signup"),
            &json!({"email": email, "password": password}),
            &[],
        )
        .await;
        assert_eq!(r.status, 422, "{password:.20}: {}", r.text());
        let d = detail(&r);
        assert!(d.contains(says), "{password:.20}: {d}");
        assert!(!d.contains(password), "the detail echoes the password: {d}");
    }
    // Boundaries that must pass: 8 characters, and 64 (NIST's minimum maximum).
    signup(&gw, "e@example.com", "abcdxy78").await;
    let long = "Zq7-".repeat(16);
    assert_eq!(long.len(), 64);
    signup(&gw, "f@example.com", &long).await;
    login(&gw, "f@example.com", &long).await;
}

#[tokio::test]
async fn wrong_password_and_unknown_email_look_the_same() {
    let up = Upstream::start().await;
    let gw = gateway("", &up).await;
    signup(&gw, "carol@example.com", PW).await;
    let try_login = |email: &'static str, password: &'static str| {
        let url = gw.url("/api/auth/login");
        async move { post_json(&url, &json!({"email": email, "password": password}), &[]).await }
    };
    let wrong = try_login("carol@example.com", "not the password at all").await;
    let unknown = try_login("nobody@example.com", "not the password at all").await;
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    assert_eq!(wrong.status, unknown.status);
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(
        wrong.json(),
        json!({"detail": "Incorrect email or password"})
    );
    let names = |r: &Resp| -> BTreeSet<String> {
        r.headers.keys().map(|k| k.as_str().to_owned()).collect()
    };
    assert_eq!(names(&wrong), names(&unknown));
    assert_eq!(
        wrong.header("www-authenticate"),
        unknown.header("www-authenticate")
    );
    assert!(set_cookies(&wrong).is_empty());
    // And the right password does work, so the failures above are about the password.
    login(&gw, "carol@example.com", PW).await;
}

#[tokio::test]
async fn signup_closed_is_403() {
    let up = Upstream::start().await;
    let gw = gateway("signup: closed", &up).await;
    let r = post_json(
        &gw.url("/api/auth/signup"),
        &json!({"email": "dan@example.com", "password": PW}),
        &[],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json(), json!({"detail": "Sign-up is closed"}));
    assert!(set_cookies(&r).is_empty());
    // No account was created.
    let r = post_json(
        &gw.url("/api/auth/login"),
        &json!({"email": "dan@example.com", "password": PW}),
        &[],
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn refresh_reuse_after_grace_kills_the_family() {
    let up = Upstream::start().await;
    let gw = gateway("refresh_grace: 0s", &up).await;
    let first = signup(&gw, "eve@example.com", PW).await;
    let other = login(&gw, "eve@example.com", PW).await;
    let second = refreshed(&gw, &first.refresh).await;
    assert_ne!(second.refresh, first.refresh);
    assert_ne!(second.access, first.access);
    assert_eq!(me_status(&gw, &second.access).await, 200);

    // Replayed with no grace window: reuse.
    let r = refresh(&gw, &first.refresh).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    assert!(detail(&r).contains("refresh token"), "{}", r.text());
    // The newest token of the family is dead too, and so is its access token.
    assert_eq!(refresh(&gw, &second.refresh).await.status, 401);
    assert_eq!(me_status(&gw, &second.access).await, 401);
    // Another session of the same user is untouched.
    assert_eq!(me_status(&gw, &other.access).await, 200);
    refreshed(&gw, &other.refresh).await;
}

#[tokio::test]
async fn concurrent_refreshes_within_grace_agree() {
    let up = Upstream::start().await;
    let gw = gateway("", &up).await;
    let first = signup(&gw, "fay@example.com", PW).await;
    let (a, b) = tokio::join!(refresh(&gw, &first.refresh), refresh(&gw, &first.refresh));
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(b.status, 200, "{}", b.text());
    let (a, b) = (a.json(), b.json());
    assert_eq!(a["refresh_token"], b["refresh_token"]);
    assert_ne!(a["refresh_token"], first.refresh.as_str());
    for v in [&a, &b] {
        assert_eq!(
            me_status(&gw, v["access_token"].as_str().unwrap()).await,
            200
        );
    }
    // The shared token keeps the session going.
    refreshed(&gw, a["refresh_token"].as_str().unwrap()).await;
}

#[tokio::test]
async fn logout_kills_access_and_refresh_at_once() {
    let up = Upstream::start().await;
    let gw = gateway("", &up).await;
    let s = signup(&gw, "gus@example.com", PW).await;
    let auth = bearer(&s.access);
    let app = gw.url("/app/data");
    assert_eq!(me_status(&gw, &s.access).await, 200);
    assert_eq!(
        get_with(&app, &[("authorization", &auth)]).await.status,
        200
    );

    let r = call(
        "POST",
        &gw.url("/api/auth/logout"),
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());

    assert_eq!(me_status(&gw, &s.access).await, 401);
    let seen = up.count();
    let r = get_with(&app, &[("authorization", &auth)]).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(up.count(), seen, "the upstream was reached after logout");
    assert_eq!(refresh(&gw, &s.refresh).await.status, 401);
}

#[tokio::test]
async fn logout_with_refresh_token_in_body() {
    let up = Upstream::start().await;
    let gw = gateway("", &up).await;
    let s = signup(&gw, "hal@example.com", PW).await;
    let r = post_json(
        &gw.url("/api/auth/logout"),
        &json!({"refresh_token": s.refresh}),
        &[],
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(refresh(&gw, &s.refresh).await.status, 401);
    // Its access token belongs to the revoked family.
    assert_eq!(me_status(&gw, &s.access).await, 401);
}

#[tokio::test]
async fn logout_all_ends_every_session_of_that_user_only() {
    let up = Upstream::start().await;
    let gw = gateway("", &up).await;
    let a1 = signup(&gw, "ivy@example.com", PW).await;
    let a2 = login(&gw, "ivy@example.com", PW).await;
    let b = signup(&gw, "jon@example.com", PW).await;

    let r = call(
        "POST",
        &gw.url("/api/auth/logout-all"),
        &[("authorization", &bearer(&a2.access))],
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());

    for s in [&a1, &a2] {
        assert_eq!(me_status(&gw, &s.access).await, 401);
        assert_eq!(refresh(&gw, &s.refresh).await.status, 401);
    }
    assert_eq!(me_status(&gw, &b.access).await, 200);
    refreshed(&gw, &b.refresh).await;
    // The user can sign in again.
    let again = login(&gw, "ivy@example.com", PW).await;
    assert_eq!(me_status(&gw, &again.access).await, 200);

    // Without credentials it is refused.
    let r = call("POST", &gw.url("/api/auth/logout-all"), &[], None).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn access_and_refresh_tokens_are_not_interchangeable() {
    let up = Upstream::start().await;
    let gw = gateway("", &up).await;
    let s = signup(&gw, "kim@example.com", PW).await;
    let r = refresh(&gw, &s.access).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(me_status(&gw, &s.refresh).await, 401);
    let r = get_with(&gw.url("/app/x"), &[("authorization", &bearer(&s.refresh))]).await;
    assert_eq!(r.status, 401);
    assert_eq!(up.count(), 0);
    // Each in its right place works.
    assert_eq!(me_status(&gw, &s.access).await, 200);
    refreshed(&gw, &s.refresh).await;
}

/// An HS256 access token with the claims of `template` (a real token) but new times, signed the
/// way the gateway signs (typ `at+jwt`, kid = hex of the first 8 bytes of SHA-256(secret)).
fn forge_hs256(secret: &str, template: &str, iat: u64, exp: u64) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use sha2::{Digest, Sha256};
    let payload = template.split('.').nth(1).unwrap();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["iat"] = json!(iat);
    claims["nbf"] = json!(iat);
    claims["exp"] = json!(exp);
    claims["jti"] = json!(format!("forged-{iat}-{exp}"));
    let kid: String = Sha256::digest(secret.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.kid = Some(kid);
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn expired_access_token_is_rejected() {
    let secret = "0123456789abcdefghijklmnopqrstuvwxyzABCD";
    assert_eq!(secret.len(), 40);
    let up = Upstream::start().await;
    let gw = gateway(&format!("algorithm: HS256, jwt_secret: '{secret}'"), &up).await;
    let s = signup(&gw, "lou@example.com", PW).await;
    let real_header = jsonwebtoken::decode_header(&s.access).unwrap();
    assert_eq!(real_header.alg, jsonwebtoken::Algorithm::HS256);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Signed the same way and still valid: accepted, so the forgery itself is right.
    let fresh = forge_hs256(secret, &s.access, now - 10, now + 600);
    assert_eq!(
        jsonwebtoken::decode_header(&fresh).unwrap().kid,
        real_header.kid
    );
    assert_eq!(me_status(&gw, &fresh).await, 200);
    assert_eq!(
        get_with(&gw.url("/app/x"), &[("authorization", &bearer(&fresh))])
            .await
            .status,
        200
    );
    // Expired a minute ago (well past the few seconds of leeway): refused everywhere.
    let expired = forge_hs256(secret, &s.access, now - 1000, now - 60);
    assert_eq!(me_status(&gw, &expired).await, 401);
    let seen = up.count();
    let r = get_with(&gw.url("/app/x"), &[("authorization", &bearer(&expired))]).await;
    assert_eq!(r.status, 401);
    assert_eq!(up.count(), seen);
    let r = get_with(
        &gw.url("/api/auth/me"),
        &[("cookie", &cookie_header(&[("gw_access", &expired)]))],
    )
    .await;
    assert_eq!(r.status, 401);
    // HS256 publishes no keys.
    let jwks = get(&gw.url("/.well-known/jwks.json")).await.unwrap();
    assert_eq!(jwks.json(), json!({"keys": []}));
    assert!(!jwks.text().contains(secret));
}

#[tokio::test]
async fn data_and_keys_survive_a_restart() {
    let up = Upstream::start().await;
    let yaml = auth_config("", &routes(&up.url()));
    let gw = Gateway::start(&yaml).await;
    let s = signup(&gw, "max@example.com", PW).await;
    let id = s.resp.json()["user"]["id"].clone();
    let dir = gw.shutdown().await;

    let gw = Gateway::start_in(dir, &yaml).await;
    let l = login(&gw, "max@example.com", PW).await;
    assert_eq!(l.resp.json()["user"]["id"], id);
    // Tokens from before the restart: the signing key and the refresh rows were kept.
    assert_eq!(me_status(&gw, &s.access).await, 200);
    refreshed(&gw, &s.refresh).await;
    // And the email is still taken.
    let r = post_json(
        &gw.url("/api/auth/signup"),
        &json!({"email": "max@example.com", "password": PW}),
        &[],
    )
    .await;
    assert_eq!(r.status, 409);
}

#[tokio::test]
async fn jwks_publishes_the_signing_key_without_private_parts() {
    let up = Upstream::start().await;
    let gw = gateway("", &up).await;
    let s = signup(&gw, "ned@example.com", PW).await;
    let header = jsonwebtoken::decode_header(&s.access).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let kid = header.kid.expect("no kid in the token header");

    let r = get(&gw.url("/.well-known/jwks.json")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let jwks = r.json();
    let keys = jwks["keys"].as_array().unwrap();
    let jwk = keys
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} not in {jwks}"));
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    assert_eq!(jwk["alg"], "EdDSA");
    for k in keys {
        assert!(k.get("d").is_none(), "private member in {k}");
    }
    // The published key verifies the token.
    let parsed: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&parsed).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&["gateway"]);
    v.set_issuer(&["gateway"]);
    let claims = jsonwebtoken::decode::<Value>(&s.access, &key, &v)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], s.resp.json()["user"]["id"]);
}

#[tokio::test]
async fn refresh_cookie_is_scoped_to_the_auth_api_without_transparent_refresh() {
    let up = Upstream::start().await;
    let gw = gateway("transparent_refresh: false", &up).await;
    signup(&gw, "scoped@example.com", PW).await;
    let l = login(&gw, "scoped@example.com", PW).await;
    assert_eq!(
        set_cookie(&l.resp, "gw_refresh").attr("Path"),
        Some("/api/auth")
    );
    assert_eq!(set_cookie(&l.resp, "gw_access").attr("Path"), Some("/"));
}

#[tokio::test]
async fn login_sets_session_cookies() {
    let up = Upstream::start().await;
    let gw = gateway("", &up).await;
    signup(&gw, "ora@example.com", PW).await;
    let l = login(&gw, "ora@example.com", PW).await;
    let access = set_cookie(&l.resp, "gw_access");
    let refresh = set_cookie(&l.resp, "gw_refresh");
    let csrf = set_cookie(&l.resp, "gw_csrf");
    assert_eq!(access.value, l.access);
    assert_eq!(refresh.value, l.refresh);
    assert!(access.has("HttpOnly") && refresh.has("HttpOnly"));
    assert!(
        !csrf.has("HttpOnly"),
        "the CSRF cookie must be readable by scripts"
    );
    assert_eq!(access.attr("Path"), Some("/"));
    // Path=/ because the gateway refreshes expired cookie sessions in-request (the default);
    // the cookie never reaches upstreams, the gateway strips it.
    assert_eq!(refresh.attr("Path"), Some("/"));
    assert_eq!(csrf.attr("Path"), Some("/"));
    for c in [&access, &refresh, &csrf] {
        assert_eq!(c.attr("SameSite"), Some("Lax"), "{c:?}");
        // Plain HTTP: no Secure (browsers would drop it), no __Host- prefix.
        assert!(!c.has("Secure"), "{c:?}");
        assert!(
            c.attr("Max-Age").unwrap().parse::<u64>().unwrap() > 0,
            "{c:?}"
        );
    }
    assert!(!csrf.value.is_empty());
}

/// Logs in and returns the tokens plus the three cookie values.
async fn browser_login(gw: &Gateway, email: &str) -> (Tokens, String, String, String) {
    let l = login(gw, email, PW).await;
    let (a, r, c) = (
        l.cookie("gw_access"),
        l.cookie("gw_refresh"),
        l.cookie("gw_csrf"),
    );
    (l, a, r, c)
}

#[tokio::test]
async fn cookie_session_needs_csrf_for_logout() {
    let up = Upstream::start().await;
    let gw = gateway("", &up).await;
    signup(&gw, "pam@example.com", PW).await;
    let (_, access, _, csrf) = browser_login(&gw, "pam@example.com").await;
    let me = gw.url("/api/auth/me");
    let logout = gw.url("/api/auth/logout");

    let only_access = cookie_header(&[("gw_access", &access)]);
    let r = get_with(&me, &[("cookie", &only_access)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["email"], "pam@example.com");

    // No CSRF token: refused, and the session lives on.
    let r = call("POST", &logout, &[("cookie", &only_access)], None).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(detail(&r).contains("CSRF"), "{}", r.text());
    // Header without the cookie, or cookie without the header: refused too.
    let r = call(
        "POST",
        &logout,
        &[("cookie", &only_access), ("x-csrf-token", &csrf)],
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    let with_csrf = cookie_header(&[("gw_access", &access), ("gw_csrf", &csrf)]);
    let r = call("POST", &logout, &[("cookie", &with_csrf)], None).await;
    assert_eq!(r.status, 403);
    assert_eq!(get_with(&me, &[("cookie", &only_access)]).await.status, 200);

    let r = call(
        "POST",
        &logout,
        &[("cookie", &with_csrf), ("x-csrf-token", &csrf)],
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    for name in ["gw_access", "gw_refresh", "gw_csrf"] {
        let all: Vec<_> = set_cookies(&r)
            .into_iter()
            .filter(|c| c.name == name)
            .collect();
        assert!(!all.is_empty(), "{name} not deleted");
        for c in all {
            assert_eq!(c.value, "", "{c:?}");
            assert_eq!(c.attr("Max-Age"), Some("0"), "{c:?}");
        }
    }
    // The refresh cookie is deleted on both paths it may have been set with.
    let mut paths: Vec<String> = set_cookies(&r)
        .into_iter()
        .filter(|c| c.name == "gw_refresh")
        .filter_map(|c| c.attr("Path").map(str::to_owned))
        .collect();
    paths.sort();
    assert_eq!(paths, ["/", "/api/auth"]);
    assert_eq!(get_with(&me, &[("cookie", &only_access)]).await.status, 401);
}

#[tokio::test]
async fn cookie_refresh_needs_the_csrf_token_of_its_session() {
    let up = Upstream::start().await;
    let gw = gateway("", &up).await;
    signup(&gw, "quinn@example.com", PW).await;
    let (_, _, refresh1, csrf1) = browser_login(&gw, "quinn@example.com").await;
    let (_, _, _, csrf2) = browser_login(&gw, "quinn@example.com").await;
    let url = gw.url("/api/auth/refresh");

    // A CSRF token from another session of the same user, echoed consistently: refused.
    let other = cookie_header(&[("gw_refresh", &refresh1), ("gw_csrf", &csrf2)]);
    let r = call(
        "POST",
        &url,
        &[("cookie", &other), ("x-csrf-token", &csrf2)],
        None,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    // No header at all: refused.
    let own = cookie_header(&[("gw_refresh", &refresh1), ("gw_csrf", &csrf1)]);
    let r = call("POST", &url, &[("cookie", &own)], None).await;
    assert_eq!(r.status, 403, "{}", r.text());

    // The refusals did not rotate the token: the right CSRF token still refreshes it.
    let r = call(
        "POST",
        &url,
        &[("cookie", &own), ("x-csrf-token", &csrf1)],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let new_refresh = set_cookie(&r, "gw_refresh").value;
    assert_ne!(new_refresh, refresh1);
    assert_eq!(r.json()["refresh_token"], new_refresh.as_str());
    let new_access = set_cookie(&r, "gw_access").value;
    let r = get_with(
        &gw.url("/api/auth/me"),
        &[("cookie", &cookie_header(&[("gw_access", &new_access)]))],
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn cross_site_login_is_refused() {
    let up = Upstream::start().await;
    let gw = gateway("", &up).await;
    signup(&gw, "rae@example.com", PW).await;
    let body = json!({"email": "rae@example.com", "password": PW});
    let url = gw.url("/api/auth/login");
    let r = post_json(&url, &body, &[("sec-fetch-site", "cross-site")]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(set_cookies(&r).is_empty());
    let r = post_json(&url, &body, &[("sec-fetch-site", "same-origin")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn bodies_are_checked() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&auth_config(
        "",
        &format!("limits: {{auth_body_bytes: 1KiB}}\n{}", routes(&up.url())),
    ))
    .await;
    let url = gw.url("/api/auth/signup");

    let big = json!({"email": "sam@example.com", "password": PW, "name": "n".repeat(1100)});
    let r = post_json(&url, &big, &[]).await;
    assert_eq!(r.status, 413, "{}", r.text());
    // The same request under the limit is fine, so the size was the reason.
    let small = json!({"email": "sam@example.com", "password": PW, "name": "n".repeat(900)});
    let r = post_json(&url, &small, &[]).await;
    assert_eq!(r.status, 201, "{}", r.text());

    let r = send(
        req("POST", &gw.url("/api/auth/login"))
            .header("content-type", "text/plain")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                json!({"email": "sam@example.com", "password": PW}).to_string(),
            )))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 415, "{}", r.text());
    let r = send(
        req("POST", &gw.url("/api/auth/login"))
            .body(http_body_util::Full::new(bytes::Bytes::from(
                json!({"email": "sam@example.com", "password": PW}).to_string(),
            )))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 415, "{}", r.text());

    let r = post_json(
        &gw.url("/api/auth/login"),
        &json!({"email": "sam@example.com"}),
        &[],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(detail(&r).contains("password"), "{}", r.text());
    let r = post_json(&url, &json!({"password": PW}), &[]).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(detail(&r).contains("email"), "{}", r.text());
    let r = send(
        req("POST", &gw.url("/api/auth/login"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"{not json",
            )))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(!r.text().contains("not json"));
}

#[tokio::test]
async fn required_route_gets_identity_not_credentials() {
    let up = Upstream::start().await;
    let gw = gateway("", &up).await;
    let r = post_json(
        &gw.url("/api/auth/signup"),
        &json!({"email": "tess@example.com", "password": PW, "name": "Tess"}),
        &[],
    )
    .await;
    assert_eq!(r.status, 201);
    let user = r.json()["user"].clone();
    let access = r.json()["access_token"].as_str().unwrap().to_owned();
    let csrf = set_cookie(&r, "gw_csrf").value;
    let id = user["id"].as_str().unwrap();

    // Bearer, with spoofed identity headers and a mix of cookies.
    let cookies = cookie_header(&[
        ("theme", "dark"),
        ("gw_access", &access),
        ("gw_csrf", &csrf),
        ("gw_refresh", "x"),
        ("lang", "en"),
    ]);
    let r = get_with(
        &gw.url("/app/page"),
        &[
            ("authorization", &bearer(&access)),
            ("x-auth-user-id", "admin-0000"),
            ("x-auth-email", "root@evil.example"),
            ("x-auth-roles", "admin"),
            ("cookie", &cookies),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert_eq!(seen.all("x-auth-user-id"), vec![id.to_owned()]);
    assert_eq!(
        seen.all("x-auth-email"),
        vec!["tess@example.com".to_owned()]
    );
    assert_eq!(seen.all("x-auth-roles"), vec!["user".to_owned()]);
    assert_eq!(seen.get("authorization"), None);
    assert_eq!(seen.all("cookie"), vec!["theme=dark; lang=en".to_owned()]);

    // Cookie session (safe method, so no CSRF needed): same identity, no gateway cookies.
    let r = get_with(
        &gw.url("/app/other"),
        &[
            (
                "cookie",
                &cookie_header(&[("gw_access", &access), ("sid", "app")]),
            ),
            ("x-auth-user-id", "admin-0000"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert_eq!(seen.uri, "/app/other");
    assert_eq!(seen.all("x-auth-user-id"), vec![id.to_owned()]);
    assert_eq!(seen.all("cookie"), vec!["sid=app".to_owned()]);

    // No token: 401 and the upstream is not reached, spoofed header or not.
    let before = up.count();
    let r = get_with(&gw.url("/app/page"), &[("x-auth-user-id", id)]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    assert_eq!(up.count(), before);

    // A public route never gets a client's identity headers either.
    let r = get_with(&gw.url("/public/x"), &[("x-auth-user-id", id)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.last().get("x-auth-user-id"), None);
}

#[tokio::test]
async fn cookie_session_unsafe_method_on_required_route_needs_csrf() {
    let up = Upstream::start().await;
    let gw = gateway("", &up).await;
    signup(&gw, "uma@example.com", PW).await;
    let (_, access, _, csrf) = browser_login(&gw, "uma@example.com").await;
    let cookies = cookie_header(&[("gw_access", &access), ("gw_csrf", &csrf)]);
    let url = gw.url("/app/items");
    let before = up.count();
    let r = call(
        "POST",
        &url,
        &[("cookie", &cookies)],
        Some(&json!({"a": 1})),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(up.count(), before);
    let r = call(
        "POST",
        &url,
        &[("cookie", &cookies), ("x-csrf-token", &csrf)],
        Some(&json!({"a": 1})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().method, "POST");
    assert_eq!(
        up.last().get("x-csrf-token").as_deref(),
        Some(csrf.as_str())
    );
}

#[tokio::test]
async fn roles_are_enforced() {
    let up = Upstream::start().await;
    let gw = gateway("", &up).await;
    let s = signup(&gw, "vic@example.com", PW).await;
    let auth = bearer(&s.access);
    let r = get_with(&gw.url("/admin/panel"), &[("authorization", &auth)]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(up.count(), 0);
    // The same token passes where its role is enough.
    let r = get_with(&gw.url("/staff/panel"), &[("authorization", &auth)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().uri, "/staff/panel");
}

#[tokio::test]
async fn admin_role_from_default_roles_passes() {
    let up = Upstream::start().await;
    let gw = gateway("default_roles: [user, admin]", &up).await;
    let s = signup(&gw, "wes@example.com", PW).await;
    assert_eq!(s.resp.json()["user"]["roles"], json!(["user", "admin"]));
    let r = get_with(
        &gw.url("/admin/panel"),
        &[("authorization", &bearer(&s.access))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().get("x-auth-roles").as_deref(), Some("user,admin"));
}

#[tokio::test]
async fn tls_cookies_use_prefixed_names_and_secure() {
    let up = Upstream::start().await;
    let gw = gateway("", &up).await;
    signup(&gw, "xia@example.com", PW).await;
    let r = https_call(
        &gw,
        "POST",
        "/api/auth/login",
        &[],
        Some(&json!({"email": "xia@example.com", "password": PW})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let names: BTreeSet<String> = set_cookies(&r).into_iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "__Host-gw_access".to_owned(),
            // Path=/ (transparent refresh), so __Host-: a sibling subdomain cannot plant it.
            "__Host-gw_refresh".to_owned(),
            "__Host-gw_csrf".to_owned()
        ])
    );
    let access = set_cookie(&r, "__Host-gw_access");
    let refresh = set_cookie(&r, "__Host-gw_refresh");
    let csrf = set_cookie(&r, "__Host-gw_csrf");
    for c in [&access, &refresh, &csrf] {
        assert!(c.has("Secure"), "{c:?}");
    }
    // `__Host-` cookies must have Path=/ (and no Domain) or browsers drop them.
    assert_eq!(access.attr("Path"), Some("/"));
    assert_eq!(csrf.attr("Path"), Some("/"));
    assert!(access.attr("Domain").is_none() && csrf.attr("Domain").is_none());
    assert_eq!(refresh.attr("Path"), Some("/"));
    assert!(access.has("HttpOnly") && refresh.has("HttpOnly") && !csrf.has("HttpOnly"));

    let me = |cookie: String| {
        let gw = &gw;
        async move { https_call(gw, "GET", "/api/auth/me", &[("cookie", &cookie)], None).await }
    };
    assert_eq!(
        me(cookie_header(&[("__Host-gw_access", &access.value)]))
            .await
            .status,
        200
    );
    // Over TLS the unprefixed name is not a credential (it could have been planted over HTTP
    // or by a sibling domain).
    assert_eq!(
        me(cookie_header(&[("gw_access", &access.value)]))
            .await
            .status,
        401
    );

    // Logout over TLS deletes the prefixed cookies, with Secure (or the browser ignores it).
    let cookies = cookie_header(&[
        ("__Host-gw_access", &access.value),
        ("__Host-gw_csrf", &csrf.value),
    ]);
    let r = https_call(
        &gw,
        "POST",
        "/api/auth/logout",
        &[("cookie", &cookies), ("x-csrf-token", &csrf.value)],
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    for name in [
        "__Host-gw_access",
        "__Host-gw_refresh",
        "__Secure-gw_refresh",
        "__Host-gw_csrf",
    ] {
        let all: Vec<_> = set_cookies(&r)
            .into_iter()
            .filter(|c| c.name == name)
            .collect();
        assert!(!all.is_empty(), "{name} not deleted");
        for c in all {
            assert_eq!(c.attr("Max-Age"), Some("0"), "{c:?}");
            assert!(c.has("Secure"), "{c:?}");
        }
    }
}
