//! The browser client module: `GET {prefix}/client.js` and `GET {prefix}/client.d.ts` (headers,
//! content, methods, `auth.prefix`, CORS). Its behaviour in a browser is checked by
//! `tests/browser/client.mjs`.

use crate::util::*;

const JS: &str = include_str!("../../src/auth/http/browser_client/client.js");
const DTS: &str = include_str!("../../src/auth/http/browser_client/client.d.ts");

/// The named exports the module promises (and its declarations describe).
const EXPORTS: &[&str] = &[
    "configure",
    "csrfToken",
    "endpoint",
    "fetch",
    "login",
    "logout",
    "me",
    "refresh",
    "signup",
    "ApiError",
];

fn config(extra: &str) -> String {
    auth_config("", extra)
}

/// Whether the module source exports `name` (as a declaration or in an `export { x as name }`).
fn exports(js: &str, name: &str) -> bool {
    [
        format!("export function {name}("),
        format!("export async function {name}("),
        format!("export class {name} "),
        format!("export const {name} "),
    ]
    .iter()
    .any(|p| js.contains(p.as_str()))
        || js.contains(&format!(" as {name} }}"))
}

#[tokio::test]
async fn the_module_is_served_with_its_headers() {
    let gw = Gateway::start(&config("")).await;
    let r = get(&gw.url("/api/auth/client.js")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        r.header("cache-control").as_deref(),
        Some("public, max-age=300")
    );
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(
        r.header("x-typescript-types").as_deref(),
        Some("./client.d.ts")
    );
    assert!(r.headers.get("set-cookie").is_none());
    assert_eq!(r.text(), JS, "the served module is the file in the repo");

    let r = get(&gw.url("/api/auth/client.d.ts")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/typescript; charset=utf-8")
    );
    assert_eq!(
        r.header("cache-control").as_deref(),
        Some("public, max-age=300")
    );
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(r.text(), DTS);

    // HEAD: the headers without the body.
    for path in ["/api/auth/client.js", "/api/auth/client.d.ts"] {
        let r = send(req("HEAD", &gw.url(path)).body(Default::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status, 200, "HEAD {path}");
        assert!(r.body.is_empty(), "HEAD {path} has a body");
        assert_eq!(
            r.header("cache-control").as_deref(),
            Some("public, max-age=300")
        );
    }
    // Other methods: 405 with `Allow: GET, HEAD`; near misses: 404.
    for method in ["POST", "PUT", "DELETE"] {
        let r = call(method, &gw.url("/api/auth/client.js"), &[], None).await;
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD"));
    }
    for path in ["/api/auth/client", "/api/auth/client.mjs", "/client.js"] {
        assert_eq!(get(&gw.url(path)).await.unwrap().status, 404, "{path}");
    }
}

#[test]
fn the_module_has_the_expected_exports_and_declarations() {
    for name in EXPORTS {
        assert!(exports(JS, name), "client.js does not export {name}");
        assert!(
            DTS.contains(&format!("function {name}("))
                || DTS.contains(&format!("class {name} "))
                || DTS.contains(&format!("const {name}:"))
                || DTS.contains(&format!(" as {name} }}")),
            "client.d.ts does not declare {name}"
        );
    }
    assert!(JS.contains("export default"), "no default export");
    // It learns the API from its own URL rather than a hard-coded prefix, and is dependency-free.
    assert!(JS.contains("new URL(import.meta.url)"));
    let code: Vec<&str> = JS
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.starts_with("//") && !l.starts_with('*') && !l.starts_with("/*"))
        .collect();
    assert!(
        !code.iter().any(|l| l.contains("/api/auth")),
        "client.js hard-codes the prefix"
    );
    assert!(
        !code.iter().any(|l| l.starts_with("import ")),
        "client.js imports something"
    );
    // The pieces of the protocol it must speak.
    for needle in [
        "X-CSRF-Token",
        "gw_csrf",
        "__Host-gw_csrf",
        "/refresh",
        "/login?next=",
        "credentials: \"include\"",
    ] {
        assert!(JS.contains(needle), "client.js lacks {needle}");
    }
}

/// Under another `auth.prefix` the module is served there (and finds the API from its URL).
#[tokio::test]
async fn the_module_follows_the_prefix() {
    let gw = Gateway::start(&auth_config("prefix: /auth", "")).await;
    let r = get(&gw.url("/auth/client.js")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), JS);
    let r = get(&gw.url("/auth/client.d.ts")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        get(&gw.url("/api/auth/client.js")).await.unwrap().status,
        404
    );
}

/// An app on a listed origin can import the module cross-origin (module scripts are fetched in
/// CORS mode); other origins get no CORS headers.
#[tokio::test]
async fn listed_origins_may_import_the_module() {
    let gw = Gateway::start(&config(
        "cors:\n  allowed_origins: ['http://app.test']\n  allow_credentials: true\n",
    ))
    .await;
    let url = gw.url("/api/auth/client.js");
    let r = get_with(&url, &[("origin", "http://app.test")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("http://app.test")
    );
    let r = get_with(&url, &[("origin", "http://evil.test")]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
}
