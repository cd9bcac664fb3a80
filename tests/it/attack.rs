//! The attack suite: forged and misused tokens, refresh replay after a password change, session
//! fixation, request smuggling and path tricks over HTTP/2. Every case checks the gateway's answer
//! and that the mock upstream received nothing it should not have.
//!
//! Covered elsewhere and not repeated here: refresh reuse after the grace window killing the
//! family (`auth::refresh_reuse_after_grace_kills_the_family`), refresh after logout
//! (`auth::logout_kills_access_and_refresh_at_once`), identity-header spoofing over HTTP/1.1 and
//! HTTP/2 (`enforce::spoofed_identity_headers_never_reach_the_upstream`,
//! `proxy::client_identity_headers_never_reach_the_upstream_over_http2`), path tricks over
//! HTTP/1.1 (`enforce::path_tricks_never_reach_the_admin_upstream`), and oversized heads and
//! endless auth bodies (`limits`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use crate::raw;
use crate::util::*;

const PW: &str = "attack-suite-pw-1";
/// A 40-byte HS256 secret for the claim-level cases (we need the key to sign test tokens).
const SECRET: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCD";

fn routes(upstream: &str) -> String {
    format!(
        "routes:\n  - {{path: /public, upstream: '{upstream}', auth: public}}\n  - {{path: /admin, upstream: '{upstream}', auth: required, roles: [admin]}}\n  - {{path: /, upstream: '{upstream}', auth: required}}\n"
    )
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).unwrap()
}

/// The three parts of a real token.
fn parts(token: &str) -> (String, String, String) {
    let p: Vec<&str> = token.split('.').collect();
    assert_eq!(p.len(), 3, "{token}");
    (p[0].to_owned(), p[1].to_owned(), p[2].to_owned())
}

fn decode_part(part: &str) -> Value {
    serde_json::from_slice(&unb64(part)).unwrap()
}

/// `header.payload` signed with `key` as `alg` (HS256 keys are raw secrets, EdDSA keys PKCS#8).
fn sign(header: &Value, payload: &Value, alg: Algorithm, key: &EncodingKey) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(payload.to_string()));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap();
    format!("{input}.{sig}")
}

/// The kid the gateway gives an HS256 secret: hex of the first 8 bytes of SHA-256(secret).
fn hs256_kid(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(secret.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The status a token gets on a required route and at `/me`; both must agree. The upstream count
/// is checked by the caller.
async fn token_status(gw: &Gateway, token: &str) -> u16 {
    let auth = bearer(token);
    let app = get_with(&gw.url("/app/x"), &[("authorization", &auth)]).await;
    let me = get_with(&gw.url("/api/auth/me"), &[("authorization", &auth)]).await;
    assert_eq!(
        app.status,
        me.status,
        "route and /me disagree: {}",
        app.text()
    );
    if app.status == 401 {
        assert_eq!(app.header("www-authenticate").as_deref(), Some("Bearer"));
        assert_eq!(app.json(), json!({"detail": "Not authenticated"}));
    }
    app.status
}

/// A listener that counts the connections made to it: proof that nothing is fetched from a URL
/// a token names.
async fn counting_listener() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((_s, _)) = l.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
        }
    });
    (addr, hits)
}

// ---- forged tokens: algorithm confusion and header tricks (EdDSA gateway) ----

#[tokio::test]
async fn forged_and_confused_tokens_never_reach_the_upstream() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&auth_config("", &routes(&up.url()))).await;
    let alice = signup(&gw, "alice@example.com", PW).await;
    let bob = signup(&gw, "bob@example.com", PW).await;

    // The real token works: the forgeries below differ from it only in the attacked part.
    assert_eq!(token_status(&gw, &alice.access).await, 200);
    assert_eq!(up.count(), 1);

    let (h, p, s) = parts(&alice.access);
    let header = decode_part(&h);
    assert_eq!(header["alg"], "EdDSA");
    let kid = header["kid"].as_str().unwrap().to_owned();
    let payload = decode_part(&p);

    // The public key, as an attacker would take it from the JWKS, in every shape an HMAC key
    // confusion could use.
    let jwks = get(&gw.url("/.well-known/jwks.json")).await.unwrap().json();
    let x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let raw = unb64(&x);
    assert_eq!(raw.len(), 32);
    let mut der = hex_bytes("302a300506032b6570032100");
    der.extend_from_slice(&raw);
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(&der)
    );
    let pem_flat = pem.replace('\n', "");
    let confusion_keys: [(&str, Vec<u8>); 6] = [
        ("raw public key", raw.clone()),
        ("x as text", x.as_bytes().to_vec()),
        ("PEM (SPKI)", pem.as_bytes().to_vec()),
        ("PEM without newlines", pem_flat.as_bytes().to_vec()),
        (
            "PEM without the final newline",
            pem.trim_end().as_bytes().to_vec(),
        ),
        ("DER (SPKI)", der.clone()),
    ];

    let mut forged: Vec<(String, String)> = Vec::new();
    // alg none, in its spellings, without and with a signature.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let hn = b64(json!({"alg": alg, "typ": "at+jwt", "kid": kid}).to_string());
        forged.push((format!("alg {alg}, no signature"), format!("{hn}.{p}.")));
        forged.push((format!("alg {alg}, two parts"), format!("{hn}.{p}")));
        forged.push((
            format!("alg {alg}, with signature"),
            format!("{hn}.{p}.{s}"),
        ));
    }
    // HS256 keyed with the public key.
    for (what, key) in &confusion_keys {
        for alg_kid in [Some(kid.as_str()), None] {
            let mut hh = json!({"alg": "HS256", "typ": "at+jwt"});
            if let Some(k) = alg_kid {
                hh["kid"] = json!(k);
            }
            let t = sign(
                &hh,
                &payload,
                Algorithm::HS256,
                &EncodingKey::from_secret(key),
            );
            forged.push((format!("HS256 with {what}, kid {alg_kid:?}"), t));
        }
    }
    // kid tricks, signed with an attacker key (the real signature would not match anyway).
    let attacker = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let attacker_key = EncodingKey::from_ed_der(&attacker.serialize_der());
    let attacker_x = b64(attacker.public_key_raw());
    for bad_kid in [
        json!("unknown-kid"),
        json!("../../etc/passwd"),
        json!("' OR 1=1 --"),
        json!(""),
        json!(null),
        json!(["a", "b"]),
        json!(format!("{kid}\u{0}")),
        json!(kid.to_uppercase()),
    ] {
        let hh = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": bad_kid});
        let t = sign(&hh, &payload, Algorithm::EdDSA, &attacker_key);
        forged.push((format!("kid {bad_kid}"), t));
        // The same header with the real signature.
        forged.push((
            format!("kid {bad_kid}, real signature"),
            format!("{}.{p}.{s}", b64(hh.to_string())),
        ));
    }
    // Headers that point at a key the token chooses; nothing must be fetched from them.
    let (fetch_addr, fetches) = counting_listener().await;
    let url = format!("http://{fetch_addr}/keys.json");
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": attacker_x, "kid": kid});
    for (name, value) in [
        ("jwk", jwk.clone()),
        ("jku", json!(url)),
        ("x5u", json!(url)),
        ("x5c", json!([STANDARD.encode(&der)])),
        ("crit", json!(["exp"])),
    ] {
        let mut hh = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid});
        hh[name] = value.clone();
        let t = sign(&hh, &payload, Algorithm::EdDSA, &attacker_key);
        forged.push((format!("embedded {name}, attacker-signed"), t));
        let mut hh = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "attacker"});
        hh[name] = value;
        let t = sign(&hh, &payload, Algorithm::EdDSA, &attacker_key);
        forged.push((format!("embedded {name}, attacker kid"), t));
    }
    // A header with a duplicate member: one parser might read the first, another the last.
    let dup = format!(r#"{{"alg":"none","alg":"EdDSA","typ":"at+jwt","kid":"{kid}"}}"#);
    forged.push(("duplicate alg".into(), format!("{}.{p}.{s}", b64(&dup))));

    // Tampered payload with the original signature: admin role, another subject, later expiry.
    for (field, value) in [
        ("roles", json!(["admin"])),
        ("sub", json!(decode_part(&parts(&bob.access).1)["sub"])),
        ("exp", json!(now() + 86_400)),
    ] {
        let mut tampered = payload.clone();
        tampered[field] = value;
        forged.push((
            format!("tampered {field}"),
            format!("{h}.{}.{s}", b64(tampered.to_string())),
        ));
    }
    // Another token's signature.
    let (_, _, bob_sig) = parts(&bob.access);
    forged.push(("bob's signature".into(), format!("{h}.{p}.{bob_sig}")));
    // Truncated and mangled.
    forged.push((
        "signature cut short".into(),
        format!("{h}.{p}.{}", &s[..s.len() - 2]),
    ));
    forged.push(("no signature".into(), format!("{h}.{p}.")));
    forged.push(("header and payload only".into(), format!("{h}.{p}")));
    forged.push(("header only".into(), h.clone()));
    forged.push(("four parts".into(), format!("{h}.{p}.{s}.{s}")));
    forged.push(("padded base64".into(), format!("{h}=.{p}.{s}")));
    forged.push((
        "standard base64 alphabet".into(),
        format!("{h}.{p}.{}", STANDARD.encode(unb64(&s))),
    ));
    forged.push(("not base64".into(), format!("{h}.{p}.!!!*")));
    forged.push(("whitespace inside".into(), format!("{h}. {p}.{s}")));
    forged.push(("garbage".into(), "not-a-token".into()));
    forged.push(("dots".into(), "..".into()));
    forged.push(("huge".into(), format!("{h}.{}.{s}", "A".repeat(16 * 1024))));
    // A refresh token is not an access token.
    forged.push(("refresh token as bearer".into(), alice.refresh.clone()));

    for (what, token) in &forged {
        let status = guard(10, token_status(&gw, token)).await;
        assert_eq!(status, 401, "{what}: {token}");
    }
    assert_eq!(up.count(), 1, "a forged token reached the upstream");
    assert_eq!(fetches.load(Ordering::SeqCst), 0, "a key URL was fetched");

    // The same forgeries as the access cookie.
    for (what, token) in forged.iter().take(12) {
        let r = get_with(
            &gw.url("/app/cookie"),
            &[("cookie", &cookie_header(&[("gw_access", token)]))],
        )
        .await;
        assert_eq!(r.status, 401, "{what} as cookie");
    }
    assert_eq!(up.count(), 1);

    // An access token at /refresh: refused, and nothing is rotated.
    let r = refresh(&gw, &alice.access).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(token_status(&gw, &alice.access).await, 200);
    refreshed(&gw, &alice.refresh).await;
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

// ---- claim-level checks (HS256 gateway, so the test can sign) ----

#[tokio::test]
async fn tokens_with_bad_claims_are_refused() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&auth_config(
        &format!("algorithm: HS256, jwt_secret: '{SECRET}'"),
        &routes(&up.url()),
    ))
    .await;
    let user = signup(&gw, "claims@example.com", PW).await;
    let (h, p, _) = parts(&user.access);
    let real_header = decode_part(&h);
    let kid = hs256_kid(SECRET);
    assert_eq!(real_header["kid"], kid.as_str());
    let template = decode_part(&p);
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": kid});
    let t = now();
    let claims = |edit: &dyn Fn(&mut Value)| {
        let mut c = template.clone();
        c["iat"] = json!(t - 10);
        c["nbf"] = json!(t - 10);
        c["exp"] = json!(t + 600);
        c["jti"] = json!(uuid::Uuid::new_v4().to_string());
        edit(&mut c);
        c
    };

    // Control: our signing is the gateway's, so a well-formed forgery with good claims passes.
    let good = sign(&header, &claims(&|_| {}), Algorithm::HS256, &key);
    assert_eq!(token_status(&gw, &good).await, 200);
    assert_eq!(up.count(), 1);

    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "exp a minute ago",
            Box::new(move |c: &mut Value| c["exp"] = json!(t - 60)),
        ),
        // Leeway is ACCESS_LEEWAY_SECS = 5: one second past it is expired.
        (
            "exp just past the leeway",
            Box::new(move |c: &mut Value| c["exp"] = json!(t - 6)),
        ),
        (
            "exp missing",
            Box::new(|c: &mut Value| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        (
            "exp as a string",
            Box::new(move |c: &mut Value| c["exp"] = json!((t + 600).to_string())),
        ),
        (
            "exp as 1e300",
            Box::new(|c: &mut Value| c["exp"] = json!(1e300)),
        ),
        (
            "exp negative",
            Box::new(|c: &mut Value| c["exp"] = json!(-1)),
        ),
        (
            "exp as a float",
            Box::new(move |c: &mut Value| c["exp"] = json!(t as f64 + 600.5)),
        ),
        (
            "nbf in an hour",
            Box::new(move |c: &mut Value| c["nbf"] = json!(t + 3600)),
        ),
        (
            "iat in an hour",
            Box::new(move |c: &mut Value| c["iat"] = json!(t + 3600)),
        ),
        (
            "nbf missing",
            Box::new(|c: &mut Value| {
                c.as_object_mut().unwrap().remove("nbf");
            }),
        ),
        (
            "wrong iss",
            Box::new(|c: &mut Value| c["iss"] = json!("someone-else")),
        ),
        (
            "iss missing",
            Box::new(|c: &mut Value| {
                c.as_object_mut().unwrap().remove("iss");
            }),
        ),
        (
            "wrong aud",
            Box::new(|c: &mut Value| c["aud"] = json!("another-service")),
        ),
        (
            "aud as a list",
            Box::new(|c: &mut Value| c["aud"] = json!(["gateway", "other"])),
        ),
        (
            "aud missing",
            Box::new(|c: &mut Value| {
                c.as_object_mut().unwrap().remove("aud");
            }),
        ),
        (
            "sub missing",
            Box::new(|c: &mut Value| {
                c.as_object_mut().unwrap().remove("sub");
            }),
        ),
        (
            "sv as a string",
            Box::new(|c: &mut Value| c["sv"] = json!("x")),
        ),
    ];
    for (what, edit) in &cases {
        let token = sign(&header, &claims(edit.as_ref()), Algorithm::HS256, &key);
        assert_eq!(token_status(&gw, &token).await, 401, "{what}");
    }
    // Header-level: the access-token type is required.
    for (what, hh) in [
        ("typ JWT", json!({"alg": "HS256", "typ": "JWT", "kid": kid})),
        ("typ missing", json!({"alg": "HS256", "kid": kid})),
        ("kid missing", json!({"alg": "HS256", "typ": "at+jwt"})),
        (
            "alg HS512",
            json!({"alg": "HS512", "typ": "at+jwt", "kid": kid}),
        ),
    ] {
        let alg = if what == "alg HS512" {
            Algorithm::HS512
        } else {
            Algorithm::HS256
        };
        let token = sign(&hh, &claims(&|_| {}), alg, &key);
        assert_eq!(token_status(&gw, &token).await, 401, "{what}");
    }
    // Signed with another secret that has the same kid written in.
    let other = EncodingKey::from_secret(b"another-secret-of-forty-bytes-0123456789");
    let token = sign(&header, &claims(&|_| {}), Algorithm::HS256, &other);
    assert_eq!(token_status(&gw, &token).await, 401, "wrong secret");

    assert_eq!(up.count(), 1, "a bad token reached the upstream");
}

// ---- sessions ----

/// Runs `gateway user set-password` against the running gateway's store.
async fn set_password(gw: &Gateway, email: &str, password: &str) {
    let out = cli(
        &gw.path("gateway.yaml"),
        &["user", "set-password", email, "--password-stdin"],
        &format!("{password}\n"),
    )
    .await;
    assert_eq!(out.code, 0, "gateway user set-password: {}", out.stderr);
}

#[tokio::test]
async fn a_password_change_ends_every_session() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&auth_config("refresh_grace: 0s", &routes(&up.url()))).await;
    let first = signup(&gw, "changer@example.com", PW).await;
    let second = login(&gw, "changer@example.com", PW).await;
    let rotated = refreshed(&gw, &second.refresh).await;

    let new_pw = "a-brand-new-password-2";
    set_password(&gw, "changer@example.com", new_pw).await;

    // Refresh reads the store: refused at once, for every token of every session.
    for (what, r) in [
        ("first", &first.refresh),
        ("rotated", &rotated.refresh),
        ("replayed", &second.refresh),
    ] {
        let resp = refresh(&gw, r).await;
        assert_eq!(resp.status, 401, "{what}: {}", resp.text());
    }
    // Access tokens die once the gateway has read the change feed (polled every second).
    for _ in 0..500 {
        if me_status(&gw, &rotated.access).await == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = up.count();
    for a in [&first.access, &rotated.access] {
        assert_eq!(token_status(&gw, a).await, 401);
    }
    assert_eq!(up.count(), before);

    // Only the new password signs in.
    let r = post_json(
        &gw.url("/api/auth/login"),
        &json!({"email": "changer@example.com", "password": PW}),
        &[],
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    let fresh = login(&gw, "changer@example.com", new_pw).await;
    assert_eq!(token_status(&gw, &fresh.access).await, 200);
}

#[tokio::test]
async fn planted_cookies_are_replaced_at_login_and_worthless() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&auth_config("", &routes(&up.url()))).await;
    signup(&gw, "fixation@example.com", PW).await;
    let planted = "attacker-value";
    let jar = cookie_header(&[
        ("gw_access", planted),
        ("gw_refresh", planted),
        ("gw_csrf", planted),
    ]);

    // The planted cookies alone get nothing.
    let r = get_with(&gw.url("/api/auth/me"), &[("cookie", &jar)]).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = get_with(&gw.url("/app/x"), &[("cookie", &jar)]).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = call(
        "POST",
        &gw.url("/api/auth/refresh"),
        &[("cookie", &jar), ("x-csrf-token", planted)],
        None,
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(up.count(), 0);

    // Login with them in the jar: every session cookie is set anew.
    let r = post_json(
        &gw.url("/api/auth/login"),
        &json!({"email": "fixation@example.com", "password": PW}),
        &[("cookie", &jar)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let access = set_cookie(&r, "gw_access").value;
    let csrf = set_cookie(&r, "gw_csrf").value;
    for name in ["gw_access", "gw_refresh", "gw_csrf"] {
        let v = set_cookie(&r, name).value;
        assert!(!v.is_empty() && v != planted, "{name} = {v:?}");
    }

    // The new session with the planted CSRF value (cookie and header agree, as an attacker who
    // planted the cookie would send them): refused, nothing forwarded.
    let mixed = cookie_header(&[("gw_access", &access), ("gw_csrf", planted)]);
    let r = call(
        "POST",
        &gw.url("/app/things"),
        &[("cookie", &mixed), ("x-csrf-token", planted)],
        None,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = call(
        "POST",
        &gw.url("/app/things"),
        &[
            (
                "cookie",
                &cookie_header(&[("gw_access", &access), ("gw_csrf", &csrf)]),
            ),
            ("x-csrf-token", planted),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(up.count(), 0);

    // The session's own CSRF token works.
    let r = call(
        "POST",
        &gw.url("/app/things"),
        &[
            (
                "cookie",
                &cookie_header(&[("gw_access", &access), ("gw_csrf", &csrf)]),
            ),
            ("x-csrf-token", &csrf),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.count(), 1);
    // The planted access cookie is still worthless.
    let r = get_with(&gw.url("/api/auth/me"), &[("cookie", &jar)]).await;
    assert_eq!(r.status, 401);
}

// ---- request smuggling ----

/// How a correct HTTP/1.1 server treats one smuggling attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// 400 and the connection closed: nothing forwarded.
    Rejected,
    /// The first request is forwarded (normalised), then the connection is closed (RFC 9112
    /// §6.1: a request with both Transfer-Encoding and Content-Length).
    ForwardedThenClosed,
    /// The first request is forwarded with the smuggled bytes as its body, and the pipelined
    /// request after it is served too.
    ForwardedWithBody,
}

#[tokio::test]
async fn smuggling_attempts_never_reach_the_upstream_as_requests() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&auth_config(
        "",
        &format!(
            "routes:\n  - {{path: /, upstream: '{}', auth: public}}\n",
            up.url()
        ),
    ))
    .await;

    // `{n}` is the case number, `{S}` the smuggled request, `{L}` its length.
    let smuggled = |n: usize| format!("GET /smuggled{n} HTTP/1.1\r\nHost: x\r\n\r\n");
    type Build = Box<dyn Fn(usize) -> String>;
    let cases: Vec<(&str, Expect, Build)> = vec![
        (
            "Content-Length with Transfer-Encoding",
            Expect::ForwardedThenClosed,
            Box::new(move |n: usize| {
                let body = format!("0\r\n\r\n{}", smuggled(n));
                format!(
                    "POST /case{n} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
                    body.len()
                )
            }),
        ),
        (
            "Transfer-Encoding with Content-Length",
            Expect::ForwardedThenClosed,
            Box::new(move |n: usize| {
                let body = format!("0\r\n\r\n{}", smuggled(n));
                format!(
                    "POST /case{n} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            }),
        ),
        (
            "two differing Content-Length headers",
            Expect::Rejected,
            Box::new(move |n: usize| {
                let s = smuggled(n);
                format!(
                    "POST /case{n} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{s}",
                    s.len()
                )
            }),
        ),
        (
            "Content-Length list",
            Expect::Rejected,
            Box::new(move |n: usize| {
                let s = smuggled(n);
                format!(
                    "POST /case{n} HTTP/1.1\r\nHost: x\r\nContent-Length: 0, {}\r\n\r\n{s}",
                    s.len()
                )
            }),
        ),
        (
            "Content-Length: +5",
            Expect::Rejected,
            Box::new(move |n: usize| {
                format!(
                    "POST /case{n} HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello{}",
                    smuggled(n)
                )
            }),
        ),
        (
            "Transfer-Encoding: chunked, identity",
            Expect::Rejected,
            Box::new(move |n: usize| {
                format!(
                    "POST /case{n} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{}",
                    smuggled(n)
                )
            }),
        ),
        (
            "space before the colon",
            Expect::Rejected,
            Box::new(move |n: usize| {
                format!(
                    "POST /case{n} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{}",
                    smuggled(n)
                )
            }),
        ),
        (
            "obs-fold",
            Expect::Rejected,
            Box::new(move |n: usize| {
                format!(
                    "POST /case{n} HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{}",
                    smuggled(n)
                )
            }),
        ),
        (
            "obs-fold of Transfer-Encoding",
            Expect::Rejected,
            Box::new(move |n: usize| {
                format!(
                    "POST /case{n} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n{}",
                    smuggled(n)
                )
            }),
        ),
        (
            // A bare LF is a line ending (RFC 9112 §2.2 allows it); the framing stays
            // Content-Length, so the smuggled text is body.
            "bare LF line endings",
            Expect::ForwardedWithBody,
            Box::new(move |n: usize| {
                let s = smuggled(n);
                format!(
                    "POST /case{n} HTTP/1.1\nHost: x\nContent-Length: {}\n\n{s}",
                    s.len()
                )
            }),
        ),
        (
            "NUL in a header value",
            Expect::Rejected,
            Box::new(move |n: usize| {
                format!(
                    "POST /case{n} HTTP/1.1\r\nHost: x\r\nX-Nul: a\0b\r\nContent-Length: 0\r\n\r\n{}",
                    smuggled(n)
                )
            }),
        ),
        (
            "NUL in a header name",
            Expect::Rejected,
            Box::new(move |n: usize| {
                format!(
                    "POST /case{n} HTTP/1.1\r\nHost: x\r\nTransfer\0Encoding: chunked\r\nContent-Length: 0\r\n\r\n{}",
                    smuggled(n)
                )
            }),
        ),
        (
            "HTTP/1.0 with Transfer-Encoding: chunked",
            Expect::Rejected,
            Box::new(move |n: usize| {
                format!(
                    "POST /case{n} HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{}",
                    smuggled(n)
                )
            }),
        ),
    ];

    for (n, (what, expect, build)) in cases.iter().enumerate() {
        // A legitimate pipelined request after the attempt: served only when the connection
        // legitimately stays open, and it closes the connection so the read ends.
        let tail = format!("GET /end{n} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let bytes = format!("{}{tail}", build(n));
        let before = up.count();
        let out = raw::until_close(gw.http, bytes.as_bytes(), Duration::from_secs(10)).await;
        let statuses = statuses(&out);
        // The gateway answers only after the upstream has answered, so everything the upstream
        // saw for this case is recorded by now.
        let seen: Vec<String> = up.requests()[before..]
            .iter()
            .map(|s| s.uri.clone())
            .collect();
        assert!(
            !seen.iter().any(|u| u.starts_with("/smuggled")),
            "{what}: smuggled request reached the upstream: {seen:?}"
        );
        match expect {
            Expect::Rejected => {
                assert_eq!(statuses, [400], "{what}: {out}");
                assert!(seen.is_empty(), "{what}: {seen:?}");
            }
            Expect::ForwardedThenClosed => {
                assert_eq!(statuses, [200], "{what}: {out}");
                assert_eq!(seen, [format!("/case{n}")], "{what}");
                assert_eq!(up.last().body_len, 0, "{what}");
            }
            Expect::ForwardedWithBody => {
                assert_eq!(statuses, [200, 200], "{what}: {out}");
                assert_eq!(seen, [format!("/case{n}"), format!("/end{n}")], "{what}");
                let case = up
                    .requests()
                    .into_iter()
                    .find(|s| s.uri == format!("/case{n}"))
                    .unwrap();
                assert_eq!(case.body_len, smuggled(n).len() as u64, "{what}");
            }
        }
    }
    assert!(
        !up.requests().iter().any(|s| s.uri.contains("smuggled")),
        "{:?}",
        up.requests()
    );
}

#[tokio::test]
async fn an_overflowing_chunk_size_is_refused() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&auth_config(
        "",
        &format!(
            "routes:\n  - {{path: /public, upstream: '{}', auth: public}}\n",
            up.url()
        ),
    ))
    .await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    // At the auth API the gateway reads the body itself: a framing error is a 400.
    let login = format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nxx\r\n0\r\n\r\n{smuggled}"
    );
    let out = raw::until_close(gw.http, login.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(statuses(&out), [400], "{out}");
    // On a proxied route the head is forwarded before the body fails: the upstream may see the
    // aborted request, never the smuggled one, and the client never gets a 2xx for it.
    let proxied = format!(
        "POST /public/overflow HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nxx\r\n0\r\n\r\n{smuggled}"
    );
    let out = raw::until_close(gw.http, proxied.as_bytes(), Duration::from_secs(10)).await;
    let st = statuses(&out);
    assert!(st.len() <= 1 && st.iter().all(|s| *s >= 400), "{out}");
    assert!(
        up.requests().iter().all(|s| s.uri == "/public/overflow"),
        "{:?}",
        up.requests()
    );
}

/// The status codes of every response in a raw HTTP/1.x answer stream.
fn statuses(out: &str) -> Vec<u16> {
    out.match_indices("HTTP/1.")
        .filter_map(|(i, _)| out[i..].split(' ').nth(1)?.parse().ok())
        .collect()
}

// ---- path tricks over HTTP/2 ----

#[tokio::test]
async fn path_tricks_over_http2_never_reach_the_admin_upstream() {
    let admin_up = Upstream::start().await;
    let rest = Upstream::start().await;
    let gw = Gateway::start(&auth_config(
        "",
        &format!(
            "routes:\n  - {{path: /public, upstream: '{r}', auth: public}}\n  - {{path: /admin, upstream: '{a}', auth: required, roles: [admin]}}\n  - {{path: /, upstream: '{r}', auth: public}}\n",
            r = rest.url(),
            a = admin_up.url()
        ),
    ))
    .await;
    let user = signup(&gw, "h2tricks@example.com", PW).await;
    let auth = bearer(&user.access);
    let base = format!("https://localhost:{}", gw.https.port());

    // (path, status without a token, status with a non-admin token): the same answers as over
    // HTTP/1.1 in `enforce::path_tricks_never_reach_the_admin_upstream`.
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
    ];
    for (path, anon, plain) in cases {
        for (token, want) in [(None, anon), (Some(&auth), plain)] {
            let mut b = req("GET", &format!("{base}{path}")).header("x-auth-roles", "admin");
            if let Some(t) = token {
                b = b.header("authorization", t);
            }
            let (version, r) = guard(20, h2_send(&gw, b.body(Full::default()).unwrap())).await;
            assert_eq!(version, http::Version::HTTP_2);
            assert_eq!(
                r.status,
                want,
                "{path} (token: {}): {}",
                token.is_some(),
                r.text()
            );
        }
    }
    assert_eq!(admin_up.count(), 0, "{:?}", admin_up.requests());
    assert_eq!(rest.count(), 0, "{:?}", rest.requests());

    // An :authority that differs from a Host header does not change routing or identity.
    let b = req("GET", &format!("{base}/public/x"))
        .header("host", "evil.example")
        .header("x-auth-user-id", "spoofed");
    let (_, r) = guard(20, h2_send(&gw, b.body(Full::new(Bytes::new())).unwrap())).await;
    assert!(r.status == 200 || r.status == 400, "{}", r.text());
    assert_eq!(admin_up.count(), 0);
    if r.status == 200 {
        assert!(rest.last().get("x-auth-user-id").is_none());
    }
}

/// Findings of the review after the first attack suite: h2c upgrade smuggling, duplicate
/// Authorization headers, odd Host values.
#[tokio::test]
async fn h2c_upgrades_duplicate_authorization_and_odd_hosts_are_refused() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&auth_config(
        "",
        &format!(
            "routes:\n  - {{path: /public, upstream: '{u}', auth: public}}\n  - {{path: /, host: admin.example.test, upstream: '{u}', auth: required, roles: [admin]}}\n  - {{path: /, upstream: '{u}', auth: public}}\n",
            u = up.url()
        ),
    ))
    .await;

    // h2c: forwarded as a plain request, never as an upgrade the upstream could accept.
    let out = raw::until_close(
        gw.http,
        b"GET /public/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let seen = up.last();
    assert!(seen.get("upgrade").is_none(), "{:?}", seen.headers);
    assert!(seen.get("http2-settings").is_none(), "{:?}", seen.headers);

    // Several Authorization headers: which one would the upstream believe? Refused.
    let count = up.count();
    let out = raw::until_close(
        gw.http,
        b"GET /public/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer one\r\nAuthorization: Bearer two\r\nConnection: close\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");

    // Userinfo in Host is refused; a trailing dot does not dodge a host rule.
    let out = raw::until_close(
        gw.http,
        b"GET /x HTTP/1.1\r\nHost: x@admin.example.test\r\nConnection: close\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    let out = raw::until_close(
        gw.http,
        b"GET /x HTTP/1.1\r\nHost: admin.example.test.\r\nConnection: close\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert!(
        out.starts_with("HTTP/1.1 401"),
        "the admin route must match: {out}"
    );
    assert_eq!(up.count(), count, "none of these reached the upstream");
}
