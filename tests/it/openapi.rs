//! `docs/openapi.yaml` against the code: the documented operations are exactly the routed ones,
//! every answer a running gateway gives is documented for its operation (status, required
//! headers, content type, body shape), and the response schemas have exactly the keys of real
//! responses.

use std::collections::BTreeSet;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};

use crate::util::*;

/// `auth.prefix` in the document and in the test config (the default).
const PREFIX: &str = "/api/auth";
/// The probes: served by the handler, not by the auth API.
const HEALTH: &[&str] = &["/healthz", "/readyz"];
/// Methods tried on every documented path.
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
];
/// E-mail on (to a port nothing listens on), so the password-reset operations are served. The
/// `auth:` mapping comes last: some tests add keys to it.
const CONFIG: &str = "email: {smtp_url: 'smtp://127.0.0.1:9', from: 'a@example.com', public_url: 'https://x.example'}\nauth:\n  password: {memory_kib: 1024, iterations: 1}\n";
const PASSWORD: &str = "correct horse battery staple";

fn doc() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("docs/openapi.yaml: {e}"))
}

/// Follows `$ref`s (local ones only) to the object they name.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let target = r
                .strip_prefix('#')
                .and_then(|p| doc.pointer(p))
                .unwrap_or_else(|| panic!("dangling $ref {r}"));
            resolve(doc, target)
        }
        None => v,
    }
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc.pointer(&format!("/components/schemas/{name}"))
        .unwrap_or_else(|| panic!("no schema {name}"))
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn names(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// Every documented `(METHOD, path)`.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method.to_ascii_lowercase()).is_some() {
                ops.insert(((*method).to_owned(), path.clone()));
            }
        }
    }
    ops
}

fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    doc["paths"][path]
        .get(method.to_ascii_lowercase())
        .unwrap_or_else(|| panic!("{method} {path} is not documented"))
}

/// Whether `value` fits `schema` (the subset of JSON Schema the document uses).
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) {
    let schema = resolve(doc, schema);
    if let Some(c) = schema.get("const") {
        assert_eq!(value, c, "{at}: const");
    }
    if let Some(ty) = schema.get("type") {
        let types: Vec<&str> = match ty {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().map(|t| t.as_str().unwrap()).collect(),
            other => panic!("{at}: odd type {other}"),
        };
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        assert!(
            types.contains(&actual) || (actual == "integer" && types.contains(&"number")),
            "{at}: {value} is not of type {types:?}"
        );
    }
    if let (Some(Value::String(fmt)), Value::String(s)) = (schema.get("format"), value) {
        match fmt.as_str() {
            "date-time" => assert!(
                humantime::parse_rfc3339(s).is_ok(),
                "{at}: {s} is not a date-time"
            ),
            "uuid" => assert!(uuid::Uuid::parse_str(s).is_ok(), "{at}: {s} is not a uuid"),
            _ => {}
        }
    }
    if let Value::Object(obj) = value {
        let props = schema.get("properties").map(keys).unwrap_or_default();
        if let Some(req) = schema.get("required") {
            for k in names(req) {
                assert!(
                    obj.contains_key(&k),
                    "{at}: required `{k}` missing in {value}"
                );
            }
        }
        if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
            for k in obj.keys() {
                assert!(props.contains(k), "{at}: `{k}` is not documented");
            }
        }
        for (k, v) in obj {
            if let Some(s) = schema.pointer(&format!("/properties/{k}")) {
                conforms(doc, s, v, &format!("{at}.{k}"));
            }
        }
    }
    if let (Value::Array(items), Some(s)) = (value, schema.get("items")) {
        for (i, v) in items.iter().enumerate() {
            conforms(doc, s, v, &format!("{at}[{i}]"));
        }
    }
}

/// Sends a request and checks the answer against the document: the status is one listed for the
/// operation, the headers it marks required are present, the content type is one it lists and a
/// JSON body fits the schema.
async fn check(doc: &Value, req: http::Request<Full<Bytes>>) -> Resp {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let r = send(req).await.unwrap();
    let what = format!("{method} {path} -> {}", r.status);
    let op = operation(doc, &method, &path);
    let resp = op["responses"]
        .get(r.status.to_string())
        .map(|v| resolve(doc, v))
        .unwrap_or_else(|| panic!("{what} is not documented: {}", r.text()));
    if let Some(headers) = resp.get("headers").and_then(Value::as_object) {
        for (name, h) in headers {
            if resolve(doc, h)["required"] == Value::Bool(true) {
                assert!(r.headers.contains_key(name.as_str()), "{what}: no {name}");
            }
        }
    }
    if r.body.is_empty() {
        return r;
    }
    let content_type = r.header("content-type").unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or("").trim();
    let content = resp
        .get("content")
        .unwrap_or_else(|| panic!("{what}: a body where none is documented"));
    let media_doc = content
        .get(media)
        .unwrap_or_else(|| panic!("{what}: {media} is not documented"));
    if media == "application/json" {
        conforms(doc, &media_doc["schema"], &r.json(), &what);
    }
    r
}

fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> http::Request<Full<Bytes>> {
    let mut b = req(method, url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body.to_owned()))).unwrap()
}

fn post_json(url: &str, body: &Value, headers: &[(&str, &str)]) -> http::Request<Full<Bytes>> {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    request("POST", url, &h, &body.to_string())
}

/// The value of the cookie `name` among a response's `Set-Cookie` headers.
fn set_cookie(r: &Resp, name: &str) -> String {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("no {name} cookie"))
        .to_owned()
}

/// (a) The documented operations are exactly `auth::http::ENDPOINTS` (which a unit test ties to
/// the router) plus the probes, and every `$ref` resolves.
#[test]
fn documented_operations_are_the_routed_ones() {
    let doc = doc();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .filter(|(_, p)| !HEALTH.contains(&p.as_str()))
        .collect();
    let routed: BTreeSet<(String, String)> = gateway::auth::http::ENDPOINTS
        .iter()
        .map(|(m, p)| {
            let p = if p.starts_with("/.well-known/") {
                (*p).to_owned()
            } else {
                format!("{PREFIX}{p}")
            };
            ((*m).to_owned(), p)
        })
        .collect();
    assert_eq!(
        documented, routed,
        "docs/openapi.yaml and auth::http::ENDPOINTS differ"
    );
    for path in HEALTH {
        assert!(
            doc["paths"][path].get("get").is_some(),
            "{path} not documented"
        );
    }
    fn walk(doc: &Value, v: &Value) {
        match v {
            Value::Object(o) => {
                if o.contains_key("$ref") {
                    resolve(doc, v);
                }
                o.values().for_each(|c| walk(doc, c));
            }
            Value::Array(a) => a.iter().for_each(|c| walk(doc, c)),
            _ => {}
        }
    }
    walk(&doc, &doc);
}

/// (a) Against a running gateway: a minimal request to every documented operation gets a
/// documented answer; any other method on a documented path (the probes' too) is 405 with an
/// `Allow` that lists exactly the documented methods.
#[tokio::test]
async fn every_operation_answers_as_documented() {
    let doc = doc();
    let gw = Gateway::start(CONFIG).await;
    let ops = operations(&doc);
    for (method, path) in &ops {
        check(&doc, request(method, &gw.url(path), &[], "")).await;
    }
    for path in doc["paths"].as_object().unwrap().keys() {
        let allowed: BTreeSet<String> = ops
            .iter()
            .filter(|(_, p)| p == path)
            .map(|(m, _)| m.clone())
            .collect();
        for method in METHODS.iter().filter(|m| !allowed.contains(**m)) {
            let r = send(request(method, &gw.url(path), &[], "")).await.unwrap();
            assert_eq!(r.status, 405, "{method} {path}: undocumented method");
            let allow: BTreeSet<String> = r
                .header("allow")
                .unwrap_or_default()
                .split(',')
                .map(|m| m.trim().to_owned())
                .collect();
            assert_eq!(
                allow, allowed,
                "{path}: Allow differs from the documented methods"
            );
        }
    }
}

/// (a) and (b): a real session, with each documented status the test can provoke, and the
/// response schemas compared key for key with real responses.
#[tokio::test]
async fn real_answers_match_the_schemas() {
    let doc = doc();
    let gw = Gateway::start(CONFIG).await;
    let url = |p: &str| gw.url(&format!("{PREFIX}{p}"));
    let creds = json!({"email": "Ada@Example.com", "password": PASSWORD, "name": "Ada"});

    // Sign-up, and the schemas against its answer.
    let r = check(&doc, post_json(&url("/signup"), &creds, &[])).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let body = r.json();
    assert_eq!(
        keys(&body),
        keys(&schema(&doc, "TokenResponse")["properties"]),
        "TokenResponse properties differ from a real sign-up"
    );
    assert_eq!(
        keys(&body["user"]),
        keys(&schema(&doc, "User")["properties"]),
        "User properties differ from a real sign-up"
    );
    assert_eq!(
        keys(&body["user"]),
        names(&schema(&doc, "User")["required"]),
        "every User property is always present"
    );
    let access = body["access_token"].as_str().unwrap().to_owned();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {access}");

    // Sign-up failures.
    let r = check(&doc, post_json(&url("/signup"), &creds, &[])).await;
    assert_eq!(r.status, 409);
    let weak = json!({"email": "bob@example.com", "password": "short"});
    assert_eq!(
        check(&doc, post_json(&url("/signup"), &weak, &[]))
            .await
            .status,
        422
    );
    let missing = json!({"email": "bob@example.com"});
    assert_eq!(
        check(&doc, post_json(&url("/signup"), &missing, &[]))
            .await
            .status,
        422
    );
    let r = request(
        "POST",
        &url("/signup"),
        &[("content-type", "application/json")],
        "{",
    );
    assert_eq!(check(&doc, r).await.status, 422);
    let r = request(
        "POST",
        &url("/signup"),
        &[("content-type", "text/plain")],
        "x",
    );
    assert_eq!(check(&doc, r).await.status, 415);
    let big = json!({"email": "bob@example.com", "password": "x".repeat(20_000)});
    assert_eq!(
        check(&doc, post_json(&url("/signup"), &big, &[]))
            .await
            .status,
        413
    );
    let cross = [("sec-fetch-site", "cross-site")];
    assert_eq!(
        check(&doc, post_json(&url("/signup"), &weak, &cross))
            .await
            .status,
        403
    );

    // Login.
    let wrong = json!({"email": "ada@example.com", "password": "not the password"});
    assert_eq!(
        check(&doc, post_json(&url("/login"), &wrong, &[]))
            .await
            .status,
        401
    );
    // The hosted forms answer a failure with their page, and a 401 still names its scheme.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let r = check(
        &doc,
        request(
            "POST",
            &url("/login"),
            &form,
            "email=ada%40example.com&password=nope",
        ),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    let r = check(
        &doc,
        request("POST", &url("/signup"), &form, "email=x&password=short"),
    )
    .await;
    assert_eq!(r.status, 422);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert_eq!(
        check(&doc, post_json(&url("/login"), &creds, &cross))
            .await
            .status,
        403
    );
    let r = check(&doc, post_json(&url("/login"), &creds, &[])).await;
    assert_eq!(r.status, 200);
    assert_eq!(keys(&r.json()), keys(&body));

    // The user.
    let r = check(
        &doc,
        request("GET", &url("/me"), &[("authorization", &bearer)], ""),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), body["user"]);
    let page = [("accept", "text/html"), ("sec-fetch-mode", "navigate")];
    let r = check(&doc, request("GET", &url("/me"), &page, "")).await;
    assert_eq!(
        (
            r.status,
            r.header("content-type").unwrap().starts_with("text/html")
        ),
        (401, true)
    );
    let r = check(
        &doc,
        request("HEAD", &url("/me"), &[("authorization", &bearer)], ""),
    )
    .await;
    assert_eq!(r.status, 200);

    // Refresh by body, then by cookie (which needs the CSRF token).
    let r = check(
        &doc,
        post_json(&url("/refresh"), &json!({"refresh_token": refresh}), &[]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(keys(&r.json()), keys(&body));
    let cookie = format!(
        "gw_refresh={}; gw_csrf={}",
        set_cookie(&r, "gw_refresh"),
        set_cookie(&r, "gw_csrf")
    );
    let csrf = set_cookie(&r, "gw_csrf");
    let r = check(
        &doc,
        request("POST", &url("/refresh"), &[("cookie", &cookie)], ""),
    )
    .await;
    assert_eq!(r.status, 403);
    let with_csrf = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];
    let r = check(&doc, request("POST", &url("/refresh"), &with_csrf, "")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let access_cookie = format!("gw_access={}", set_cookie(&r, "gw_access"));
    let r = check(
        &doc,
        request(
            "POST",
            &url("/refresh"),
            &[("content-type", "application/json")],
            "{}",
        ),
    )
    .await;
    assert_eq!(r.status, 401);

    // Logout everywhere: by cookie without CSRF refused, by bearer done; then the token is dead.
    let r = request(
        "POST",
        &url("/logout-all"),
        &[("cookie", &access_cookie)],
        "",
    );
    assert_eq!(check(&doc, r).await.status, 403);
    let r = request(
        "POST",
        &url("/logout-all"),
        &[("authorization", &bearer)],
        "",
    );
    assert_eq!(check(&doc, r).await.status, 204);
    let r = request("GET", &url("/me"), &[("authorization", &bearer)], "");
    assert_eq!(check(&doc, r).await.status, 401);
    let r = request("POST", &url("/logout"), &[("authorization", &bearer)], "");
    let r = check(&doc, r).await;
    assert_eq!(r.status, 204);
    // As many Set-Cookie headers as the document says sign-out sends.
    let cleared = doc
        .pointer("/components/headers/Set-Cookie-Cleared/description")
        .and_then(Value::as_str)
        .unwrap();
    let count = r.headers.get_all("set-cookie").iter().count();
    let words = ["", "One", "Two", "Three", "Four", "Five"];
    assert!(
        cleared.starts_with(&format!("{} `Set-Cookie` headers", words[count])),
        "sign-out sent {count} Set-Cookie headers; the document says: {cleared}"
    );
    // Logout ignores a body it cannot use, as documented (any JSON).
    for body in ["{\"refresh_token\": 5}", "[1, 2]", "not json"] {
        let r = request(
            "POST",
            &url("/logout"),
            &[("content-type", "application/json")],
            body,
        );
        assert_eq!(check(&doc, r).await.status, 204, "{body}");
    }
    assert!(
        schema(&doc, "LogoutRequest").get("type").is_none(),
        "LogoutRequest must admit any JSON, as logout does"
    );
    // The password rule the schema can state.
    let min = schema(&doc, "SignupRequest")
        .pointer("/properties/password/minLength")
        .and_then(Value::as_u64);
    assert_eq!(
        min,
        Some(8),
        "SignupRequest.password.minLength is the default min_length"
    );

    // Errors and keys.
    let r = send(request("GET", &url("/me"), &[], "")).await.unwrap();
    assert_eq!(keys(&r.json()), keys(&schema(&doc, "Error")["properties"]));
    let r = check(
        &doc,
        request("GET", &gw.url("/.well-known/jwks.json"), &[], ""),
    )
    .await;
    let jwk = &r.json()["keys"][0];
    assert_eq!(keys(jwk), keys(&schema(&doc, "JWK")["properties"]));
}

/// (b) With `tokens_in_body: false` the body has exactly TokenResponse's required properties.
#[tokio::test]
async fn tokens_out_of_body_leave_the_required_properties() {
    let doc = doc();
    let gw = Gateway::start(&format!("{CONFIG}  tokens_in_body: false\n")).await;
    let creds = json!({"email": "ada@example.com", "password": PASSWORD});
    let r = check(
        &doc,
        post_json(&gw.url(&format!("{PREFIX}/signup")), &creds, &[]),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        keys(&r.json()),
        names(&schema(&doc, "TokenResponse")["required"]),
        "TokenResponse.required differs from a sign-up with tokens_in_body: false"
    );
}
