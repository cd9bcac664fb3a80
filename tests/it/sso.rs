//! Single sign-on against a small OpenID provider written here, which can be made to misbehave
//! in the ways a certified provider never does: ID tokens for another audience, expired, with
//! `alg: none`, the wrong nonce, a key it does not publish, a new key after rotation, or no
//! answer at all. (The happy path against a certified provider, `oidc-provider` from npm, runs
//! in Chromium: tests/browser/sso.mjs.) The provider checks PKCE and the client secret as a
//! real one does, and refuses a code twice.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::util::*;

/// How the provider's next ID tokens go wrong.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    None,
    OtherAudience,
    Expired,
    AlgNone,
    WrongNonce,
    UnpublishedKey,
}

struct Key {
    kid: String,
    pem: String,
    x: String,
    y: String,
}

impl Key {
    fn new(kid: &str) -> Key {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = kp.public_key_raw().to_vec();
        assert_eq!(raw.len(), 65);
        Key {
            kid: kid.into(),
            pem: kp.serialize_pem(),
            x: B64.encode(&raw[1..33]),
            y: B64.encode(&raw[33..]),
        }
    }
}

struct State {
    issuer: String,
    /// Published keys; the first signs.
    keys: Vec<Key>,
    fault: Fault,
    /// code -> (nonce, PKCE challenge, subject)
    codes: HashMap<String, (String, String, String)>,
    /// subject -> claims
    users: HashMap<String, Value>,
    /// refresh token -> subject
    refresh: HashMap<String, String>,
    token_calls: usize,
}

struct Idp {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _stop: oneshot::Sender<()>,
}

impl Idp {
    async fn start() -> Idp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut users = HashMap::new();
        for (sub, email, verified, groups) in [
            (
                "alice",
                "alice@example.com",
                true,
                vec!["engineering", "admins"],
            ),
            ("bob", "bob@example.com", false, vec!["engineering"]),
            ("carol", "carol@contractor.test", true, vec!["contractors"]),
        ] {
            users.insert(
                sub.to_owned(),
                json!({"email": email, "email_verified": verified, "name": sub, "groups": groups}),
            );
        }
        let state = Arc::new(Mutex::new(State {
            issuer: format!("http://{addr}"),
            keys: vec![Key::new("k1")],
            fault: Fault::None,
            codes: HashMap::new(),
            users,
            refresh: HashMap::new(),
            token_calls: 0,
        }));
        let (tx, mut rx) = oneshot::channel::<()>();
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = &mut rx => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| serve(req, st.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Idp {
            addr,
            state,
            _stop: tx,
        }
    }

    fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap());
    }
}

async fn serve(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let auth = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let mut s = state.lock().unwrap();
    let answer = |status: u16, v: Value| {
        Ok(Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(v.to_string())))
            .unwrap())
    };
    let iss = s.issuer.clone();
    match path.as_str() {
        "/.well-known/openid-configuration" => answer(
            200,
            json!({
                "issuer": iss,
                "authorization_endpoint": format!("{iss}/authorize"),
                "token_endpoint": format!("{iss}/token"),
                "jwks_uri": format!("{iss}/jwks"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                "end_session_endpoint": format!("{iss}/logout"),
            }),
        ),
        "/jwks" => {
            let keys: Vec<Value> = s
                .keys
                .iter()
                .map(|k| json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": k.kid, "x": k.x, "y": k.y}))
                .collect();
            answer(200, json!({ "keys": keys }))
        }
        "/token" => {
            s.token_calls += 1;
            let basic = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("gw:s3cret")
            );
            if auth.as_deref() != Some(basic.as_str()) {
                return answer(401, json!({"error": "invalid_client"}));
            }
            let (sub, nonce) = match form.get("grant_type").map(String::as_str) {
                Some("authorization_code") => {
                    let code = form.get("code").cloned().unwrap_or_default();
                    let Some((nonce, challenge, sub)) = s.codes.remove(&code) else {
                        return answer(400, json!({"error": "invalid_grant"}));
                    };
                    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
                    if B64.encode(Sha256::digest(verifier.as_bytes())) != challenge {
                        return answer(
                            400,
                            json!({"error": "invalid_grant", "error_description": "PKCE"}),
                        );
                    }
                    (sub, Some(nonce))
                }
                Some("refresh_token") => {
                    let rt = form.get("refresh_token").cloned().unwrap_or_default();
                    match s.refresh.get(&rt) {
                        Some(sub) if s.users.contains_key(sub) => (sub.clone(), None),
                        _ => return answer(400, json!({"error": "invalid_grant"})),
                    }
                }
                _ => return answer(400, json!({"error": "unsupported_grant_type"})),
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let mut claims = json!({
                "iss": iss, "sub": sub, "aud": "gw",
                "iat": now, "exp": now + 300,
            });
            if let Some(n) = nonce {
                claims["nonce"] = json!(n);
            }
            for (k, v) in s.users[&sub].as_object().unwrap() {
                claims[k] = v.clone();
            }
            match s.fault {
                Fault::OtherAudience => claims["aud"] = json!("someone-else"),
                Fault::Expired => {
                    claims["iat"] = json!(now - 900);
                    claims["exp"] = json!(now - 600);
                }
                Fault::WrongNonce => claims["nonce"] = json!("not-the-nonce"),
                _ => {}
            }
            let id_token = if s.fault == Fault::AlgNone {
                format!(
                    "{}.{}.",
                    B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
                    B64.encode(claims.to_string())
                )
            } else {
                let signer = if s.fault == Fault::UnpublishedKey {
                    Key::new("k-unpublished")
                } else {
                    let k = &s.keys[0];
                    Key {
                        kid: k.kid.clone(),
                        pem: k.pem.clone(),
                        x: String::new(),
                        y: String::new(),
                    }
                };
                let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
                header.kid = Some(signer.kid.clone());
                let key = jsonwebtoken::EncodingKey::from_ec_pem(signer.pem.as_bytes()).unwrap();
                jsonwebtoken::encode(&header, &claims, &key).unwrap()
            };
            let rt = format!("rt-{sub}-{}", s.token_calls);
            s.refresh.insert(rt.clone(), sub.clone());
            answer(
                200,
                json!({"access_token": "at", "token_type": "Bearer", "expires_in": 300, "id_token": id_token, "refresh_token": rt}),
            )
        }
        _ => answer(404, json!({"error": "not_found"})),
    }
}

fn config(idp: &Idp, upstream: &Upstream, extra: &str) -> String {
    auth_config(
        "",
        &format!(
            "sso:\n  public_url: http://127.0.0.1:1\n  providers:\n    - id: corp\n      display_name: Corp\n      issuer: {}\n      client_id: gw\n      client_secret: s3cret\n      scopes: [openid, email, profile, groups]\n      allowed_groups: [engineering]\n      role_mappings:\n        admins: [admin]\n{extra}routes:\n  - path: /app\n    upstream: {}\n    auth: required\n",
            idp.issuer(),
            upstream.url()
        ),
    )
}

/// A started sign-in: the flow cookie and what the authorization URL carried.
struct Started {
    cookie: String,
    state: String,
    nonce: String,
    challenge: String,
}

async fn start(gw: &Gateway) -> Started {
    let resp = get(&gw.url("/api/auth/sso/corp/start?next=/app/x"))
        .await
        .unwrap();
    assert_eq!(resp.status, 302, "{}", resp.text());
    let location = resp.header("location").unwrap();
    let query: HashMap<String, String> =
        form_urlencoded::parse(location.split_once('?').unwrap().1.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["client_id"], "gw");
    assert!(query["scope"].contains("openid") && query["scope"].contains("groups"));
    let flow = set_cookie(&resp, "gw_sso");
    assert!(flow.has("HttpOnly"), "{flow:?}");
    assert_eq!(flow.attr("SameSite"), Some("Lax"));
    Started {
        cookie: flow.value,
        state: query["state"].clone(),
        nonce: query["nonce"].clone(),
        challenge: query["code_challenge"].clone(),
    }
}

/// The provider's login for `sub`, then the browser's return to the callback.
async fn callback(gw: &Gateway, idp: &Idp, s: &Started, sub: &str, code: &str) -> Resp {
    idp.set(|st| {
        st.codes.insert(
            code.to_owned(),
            (s.nonce.clone(), s.challenge.clone(), sub.to_owned()),
        );
    });
    let url = gw.url(&format!(
        "/api/auth/sso/corp/callback?code={code}&state={}",
        s.state
    ));
    get_with(&url, &[("cookie", &format!("gw_sso={}", s.cookie))]).await
}

fn access_cookie(resp: &Resp) -> String {
    set_cookie(resp, "gw_access").value
}

#[tokio::test]
async fn sign_in_gives_the_ordinary_session_and_a_callback_works_once() {
    let (idp, upstream) = (Idp::start().await, Upstream::start().await);
    let gw = Gateway::start(&config(&idp, &upstream, "")).await;
    let s = start(&gw).await;
    let resp = callback(&gw, &idp, &s, "alice", "c1").await;
    assert_eq!(resp.status, 303, "{}", resp.text());
    assert_eq!(resp.header("location").as_deref(), Some("/app/x"));
    let access = access_cookie(&resp);
    let app = get_with(&gw.url("/app/x"), &[("authorization", &bearer(&access))]).await;
    assert_eq!(app.status, 200);
    let seen = upstream.last();
    assert_eq!(seen.get("x-auth-provider").as_deref(), Some("corp"));
    assert_eq!(
        seen.get("x-auth-email").as_deref(),
        Some("alice@example.com")
    );
    let roles = seen.get("x-auth-roles").unwrap();
    assert!(roles.split(',').any(|r| r == "admin"), "{roles}");
    let me = get_with(
        &gw.url("/api/auth/me"),
        &[("authorization", &bearer(&access))],
    )
    .await;
    assert_eq!(me.json()["email_verified"], true);
    // The access token says how: federated, at corp.
    let payload: Value =
        serde_json::from_slice(&B64.decode(access.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(payload["idp"], "corp");
    assert_eq!(payload["amr"][0], "fed");
    // A client cannot pass for another provider: its own X-Auth-Provider is dropped.
    let forged = get_with(
        &gw.url("/app/x"),
        &[
            ("authorization", &bearer(&access)),
            ("x-auth-provider", "evil"),
        ],
    )
    .await;
    assert_eq!(forged.status, 200);
    assert_eq!(upstream.last().all("x-auth-provider"), ["corp"]);

    // The same callback again (URL and cookie replayed): refused before the provider is asked.
    let calls = idp.state.lock().unwrap().token_calls;
    let again = callback(&gw, &idp, &s, "alice", "c1").await;
    assert_eq!(again.status, 400, "{}", again.text());
    assert!(set_cookies(&again).iter().all(|c| c.name != "gw_access"));
    assert_eq!(idp.state.lock().unwrap().token_calls, calls);

    // A second sign-in finds the linked identity: the same account.
    let s2 = start(&gw).await;
    let resp2 = callback(&gw, &idp, &s2, "alice", "c2").await;
    assert_eq!(resp2.status, 303);
    let me2 = get_with(
        &gw.url("/api/auth/me"),
        &[("authorization", &bearer(&access_cookie(&resp2)))],
    )
    .await;
    assert_eq!(me2.json()["id"], me.json()["id"]);
    let ids = get_with(
        &gw.url("/api/auth/identities"),
        &[("authorization", &bearer(&access_cookie(&resp2)))],
    )
    .await;
    assert_eq!(ids.json()["identities"][0]["provider"], "corp");

    // Per provider in the metrics: two sign-ins, one replayed callback.
    let metrics = get(&format!("http://{}/metrics", gw.admin))
        .await
        .unwrap()
        .text();
    assert!(
        metrics.contains("sso_events_total{provider=\"corp\",outcome=\"ok\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sso_events_total{provider=\"corp\",outcome=\"bad_state\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn signing_out_can_end_the_session_at_the_provider_too() {
    let (idp, upstream) = (Idp::start().await, Upstream::start().await);
    let gw = Gateway::start(&config(&idp, &upstream, "      logout_at_provider: true\n")).await;
    let s = start(&gw).await;
    let resp = callback(&gw, &idp, &s, "alice", "c1").await;
    let (access, csrf) = (access_cookie(&resp), set_cookie(&resp, "gw_csrf").value);
    let form = format!("csrf={csrf}");
    let out = send(
        req("POST", &gw.url("/api/auth/logout"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(
                "cookie",
                cookie_header(&[("gw_access", &access), ("gw_csrf", &csrf)]),
            )
            .body(Full::new(Bytes::from(form)))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(out.status, 303, "{}", out.text());
    let location = out.header("location").unwrap();
    assert!(
        location.starts_with(&format!("{}/logout?", idp.issuer())),
        "{location}"
    );
    assert!(location.contains("client_id=gw"), "{location}");
    assert!(
        location
            .contains("post_logout_redirect_uri=http%3A%2F%2F127.0.0.1%3A1%2Fapi%2Fauth%2Flogin"),
        "{location}"
    );
    // The gateway's session is over as well.
    let me = get_with(
        &gw.url("/api/auth/me"),
        &[("authorization", &bearer(&access))],
    )
    .await;
    assert_eq!(me.status, 401);
}

#[tokio::test]
async fn a_callback_not_started_here_is_refused() {
    let (idp, upstream) = (Idp::start().await, Upstream::start().await);
    let gw = Gateway::start(&config(&idp, &upstream, "")).await;
    let s = start(&gw).await;
    // Wrong state.
    let wrong = Started {
        state: "forged".into(),
        ..start(&gw).await
    };
    let resp = callback(&gw, &idp, &wrong, "alice", "c1").await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    // No flow cookie (login CSRF: the attacker's code in the victim's browser).
    let url = gw.url(&format!(
        "/api/auth/sso/corp/callback?code=c9&state={}",
        s.state
    ));
    assert_eq!(get(&url).await.unwrap().status, 400);
    // A tampered cookie.
    let tampered = Started {
        cookie: format!("{}A", s.cookie),
        ..start(&gw).await
    };
    assert_eq!(
        callback(&gw, &idp, &tampered, "alice", "c3").await.status,
        400
    );
    // The provider's own error.
    let url = gw.url(&format!(
        "/api/auth/sso/corp/callback?error=access_denied&state={}",
        s.state
    ));
    let denied = get_with(&url, &[("cookie", &format!("gw_sso={}", s.cookie))]).await;
    assert_eq!(denied.status, 401);
    assert!(
        denied.text().contains("did not sign you in"),
        "{}",
        denied.text()
    );
    // Unknown provider.
    assert_eq!(
        get(&gw.url("/api/auth/sso/nope/start"))
            .await
            .unwrap()
            .status,
        404
    );
}

#[tokio::test]
async fn bad_id_tokens_are_refused() {
    let (idp, upstream) = (Idp::start().await, Upstream::start().await);
    let gw = Gateway::start(&config(&idp, &upstream, "")).await;
    for (i, fault) in [
        Fault::OtherAudience,
        Fault::Expired,
        Fault::AlgNone,
        Fault::WrongNonce,
        Fault::UnpublishedKey,
    ]
    .into_iter()
    .enumerate()
    {
        idp.set(|st| st.fault = fault);
        let s = start(&gw).await;
        let resp = callback(&gw, &idp, &s, "alice", &format!("bad{i}")).await;
        assert_eq!(resp.status, 401, "{fault:?}: {}", resp.text());
        assert!(resp.text().contains("token was refused"), "{fault:?}");
        assert!(
            set_cookies(&resp).iter().all(|c| c.name != "gw_access"),
            "{fault:?}"
        );
    }
    // And a good one still works.
    idp.set(|st| st.fault = Fault::None);
    let s = start(&gw).await;
    assert_eq!(callback(&gw, &idp, &s, "alice", "good").await.status, 303);
}

#[tokio::test]
async fn a_new_signing_key_at_the_provider_is_fetched() {
    let (idp, upstream) = (Idp::start().await, Upstream::start().await);
    let gw = Gateway::start(&config(&idp, &upstream, "")).await;
    let s = start(&gw).await;
    assert_eq!(callback(&gw, &idp, &s, "alice", "c1").await.status, 303);
    // The gateway has the key set cached; the provider rotates to a key it has not seen.
    idp.set(|st| st.keys.insert(0, Key::new("k2")));
    let s = start(&gw).await;
    let resp = callback(&gw, &idp, &s, "alice", "c2").await;
    assert_eq!(resp.status, 303, "{}", resp.text());
}

#[tokio::test]
async fn the_providers_rules_and_unverified_emails_are_enforced() {
    let (idp, upstream) = (Idp::start().await, Upstream::start().await);
    let gw = Gateway::start(&config(&idp, &upstream, "")).await;
    // carol is in no allowed group.
    let s = start(&gw).await;
    let resp = callback(&gw, &idp, &s, "carol", "c1").await;
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert!(resp.text().contains("not in a group allowed here"));
    // bob's address is unverified at the provider and an account has it: no takeover.
    signup(&gw, "bob@example.com", "a long enough password").await;
    let s = start(&gw).await;
    let resp = callback(&gw, &idp, &s, "bob", "c2").await;
    assert_eq!(resp.status, 409, "{}", resp.text());
    assert!(set_cookies(&resp).iter().all(|c| c.name != "gw_access"));
    // The account still signs in with its password, unlinked.
    let t = login(&gw, "bob@example.com", "a long enough password").await;
    let ids = get_with(
        &gw.url("/api/auth/identities"),
        &[("authorization", &bearer(&t.access))],
    )
    .await;
    assert_eq!(ids.json()["identities"], json!([]));
}

#[tokio::test]
async fn an_sso_account_has_no_password_until_it_sets_one() {
    let (idp, upstream) = (Idp::start().await, Upstream::start().await);
    let gw = Gateway::start(&config(&idp, &upstream, "")).await;
    let s = start(&gw).await;
    let access = access_cookie(&callback(&gw, &idp, &s, "alice", "c1").await);
    // No password: any password is wrong, and a reset is not offered.
    let bad = post_json(
        &gw.url("/api/auth/login"),
        &json!({"email": "alice@example.com", "password": ""}),
        &[],
    )
    .await;
    assert_eq!(bad.status, 401);
    // Unlinking the only way in is refused.
    let unlink = call(
        "DELETE",
        &gw.url("/api/auth/identities/corp"),
        &[("authorization", &bearer(&access))],
        None,
    )
    .await;
    assert_eq!(unlink.status, 409, "{}", unlink.text());
    // Its session sets a password without a current one; then unlinking is allowed.
    let set = post_json(
        &gw.url("/api/auth/change-password"),
        &json!({"current_password": "", "new_password": "a brand new passphrase"}),
        &[("authorization", &bearer(&access))],
    )
    .await;
    assert_eq!(set.status, 200, "{}", set.text());
    let t = login(&gw, "alice@example.com", "a brand new passphrase").await;
    let unlink = call(
        "DELETE",
        &gw.url("/api/auth/identities/corp"),
        &[("authorization", &bearer(&t.access))],
        None,
    )
    .await;
    assert_eq!(unlink.status, 204, "{}", unlink.text());
}

#[tokio::test]
async fn a_provider_that_is_down_gets_a_clear_page_and_proxied_traffic_goes_on() {
    let (idp, upstream) = (Idp::start().await, Upstream::start().await);
    let yaml = config(&idp, &upstream, "");
    drop(idp);
    let gw = Gateway::start(&yaml).await;
    let t = signup(&gw, "dana@example.com", "a long enough password").await;
    let resp = get(&gw.url("/api/auth/sso/corp/start?next=/app/"))
        .await
        .unwrap();
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert!(resp.text().contains("cannot be reached"));
    assert!(resp.header("retry-after").is_some());
    let app = get_with(&gw.url("/app/"), &[("authorization", &bearer(&t.access))]).await;
    assert_eq!(app.status, 200);
}

/// The sign-in on the PostgreSQL store: the identity is linked at the first sign-in and found
/// at the second (the same account, one row), listed, and a refresh of the federated session
/// keeps its provider (`idp` in the new access token, from the refresh token's row).
#[tokio::test]
async fn sign_in_works_on_the_postgres_store() {
    let Some(pg) = crate::pg::PgServer::start_async().await else {
        return;
    };
    let url = pg.create_database_async("sso").await;
    let (idp, upstream) = (Idp::start().await, Upstream::start().await);
    let yaml = format!(
        "store:\n  postgres: {{url: '{url}'}}\n{}",
        config(&idp, &upstream, "")
    );
    let gw = Gateway::start(&yaml).await;
    let me = |resp: Resp| {
        let access = access_cookie(&resp);
        let url = gw.url("/api/auth/me");
        async move {
            get_with(&url, &[("authorization", &bearer(&access))])
                .await
                .json()
        }
    };
    let first = callback(&gw, &idp, &start(&gw).await, "alice", "c1").await;
    assert_eq!(first.status, 303, "{}", first.text());
    let first = me(first).await;
    let second = callback(&gw, &idp, &start(&gw).await, "alice", "c2").await;
    assert_eq!(second.status, 303, "{}", second.text());
    let refresh_token = set_cookie(&second, "gw_refresh").value;
    let ids = get_with(
        &gw.url("/api/auth/identities"),
        &[("authorization", &bearer(&access_cookie(&second)))],
    )
    .await
    .json();
    assert_eq!(me(second).await["id"], first["id"]);
    assert_eq!(ids["identities"].as_array().map(Vec::len), Some(1), "{ids}");
    assert_eq!(ids["identities"][0]["provider"], "corp");
    assert_eq!(
        crate::store::query(&url, "SELECT count(*)::int4 FROM gateway_identities"),
        vec![1]
    );
    let r = refresh(&gw, &refresh_token).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let access = r.json()["access_token"].as_str().unwrap().to_owned();
    let payload: Value =
        serde_json::from_slice(&B64.decode(access.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(payload["idp"], "corp");
    assert_eq!(payload["amr"][0], "fed");
}

/// A provider that accepts connections and never answers, down since the gateway started:
/// sign-ins started together wait for one discovery attempt, not one each in turn, and those
/// right after get its failure at once.
#[tokio::test]
async fn sign_ins_during_an_outage_share_one_failed_discovery() {
    let (idp, upstream) = (Idp::start().await, Upstream::start().await);
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_issuer = format!("http://{}", silent.local_addr().unwrap());
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(stream);
        }
    });
    let yaml =
        config(&idp, &upstream, "      timeout: 1s\n").replace(&idp.issuer(), &silent_issuer);
    let gw = Gateway::start(&yaml).await;
    let url = gw.url("/api/auth/sso/corp/start?next=/app/");
    let together: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    for started in together {
        let resp = started.await.unwrap().unwrap();
        assert_eq!(resp.status, 503, "{}", resp.text());
        assert!(resp.text().contains("cannot be reached"));
    }
    let again = get(&url).await.unwrap();
    assert_eq!(again.status, 503, "{}", again.text());
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "each sign-in asked the unanswering provider again"
    );
}

#[tokio::test]
async fn password_login_off_leaves_only_single_sign_on() {
    let (idp, upstream) = (Idp::start().await, Upstream::start().await);
    let yaml = config(&idp, &upstream, "").replace("auth: {", "auth: {password_login: false, ");
    let gw = Gateway::start(&yaml).await;
    let r = post_json(
        &gw.url("/api/auth/signup"),
        &json!({"email": "e@example.com", "password": "a long enough password"}),
        &[],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let page = get(&gw.url("/api/auth/login")).await.unwrap();
    assert!(!page.text().contains("name=\"password\""));
    assert!(page.text().contains("Sign in with Corp"));
    let p = get(&gw.url("/api/auth/providers")).await.unwrap().json();
    assert_eq!(p["password_login"], false);
    assert_eq!(p["providers"][0]["id"], "corp");
}

/// Removing someone from the group at the provider ends their session at the first refresh
/// after `recheck_interval` (its least, a minute: this test waits for it).
#[tokio::test]
async fn a_refresh_rechecks_the_provider_after_the_interval() {
    let (idp, upstream) = (Idp::start().await, Upstream::start().await);
    let gw = Gateway::start(&config(&idp, &upstream, "      recheck_interval: 1m\n")).await;
    let s = start(&gw).await;
    let resp = callback(&gw, &idp, &s, "alice", "c1").await;
    let refresh_token = set_cookie(&resp, "gw_refresh").value;
    // Within the interval: no provider call.
    let calls = idp.state.lock().unwrap().token_calls;
    let r = refresh(&gw, &refresh_token).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(idp.state.lock().unwrap().token_calls, calls);
    let next = r.json()["refresh_token"].as_str().unwrap().to_owned();
    idp.set(|st| {
        st.users.get_mut("alice").unwrap()["groups"] = json!(["admins"]);
    });
    tokio::time::sleep(std::time::Duration::from_secs(61)).await;
    let r = refresh(&gw, &next).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(idp.state.lock().unwrap().token_calls > calls);
}
