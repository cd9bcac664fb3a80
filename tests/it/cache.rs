//! Answers to authenticated requests are kept out of caches (`src/proxy/cache.rs`): an upstream
//! answer without `Cache-Control` gets `private, no-store` (or what the route's `cache` says),
//! and a cookie session adds `Vary: Cookie`. On the general path, the HTTP/1.1 direct path and
//! HTTP/2.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::util::*;

/// An upstream with no auth code: `/marked` says `Cache-Control: max-age=60` and
/// `Vary: Accept-Encoding`, everything else says nothing about caching.
async fn plain_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let mut resp = Response::new(Full::new(Bytes::from_static(b"page")));
                    if req.uri().path().ends_with("/marked") {
                        let h = resp.headers_mut();
                        h.insert("cache-control", "max-age=60".parse().unwrap());
                        h.insert("vary", "Accept-Encoding".parse().unwrap());
                    }
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

async fn start(fast: bool) -> (Gateway, String) {
    let up = plain_upstream().await;
    let gw = Gateway::start(&auth_config(
        "",
        &format!(
            "listen: {{http: 127.0.0.1:0, https: 127.0.0.1:0, fast_path: {fast}}}\n\
             routes:\n\
             \x20 - {{path: /pub, upstream: '{up}', auth: public}}\n\
             \x20 - {{path: /priv, upstream: '{up}', auth: required, cache: private}}\n\
             \x20 - {{path: /pass, upstream: '{up}', auth: required, cache: pass}}\n\
             \x20 - {{path: /, upstream: '{up}', auth: required}}\n"
        ),
    ))
    .await;
    let token = signup(&gw, "cache@example.com", "cache-password-1")
        .await
        .access;
    (gw, token)
}

/// (Cache-Control, every Vary) of an answer that must be the upstream's.
fn caching(r: &Resp) -> (Option<String>, Vec<String>) {
    assert_eq!((r.status, r.text().as_str()), (200, "page"));
    let vary = r
        .headers
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    (r.header("cache-control"), vary)
}

fn want(cc: Option<&str>, vary: &[&str]) -> (Option<String>, Vec<String>) {
    (
        cc.map(str::to_owned),
        vary.iter().map(|v| (*v).to_owned()).collect(),
    )
}

#[tokio::test]
async fn authenticated_answers_without_cache_control_are_not_stored_on_both_paths() {
    for fast in [true, false] {
        let (gw, token) = start(fast).await;
        let bearer = bearer(&token);
        let by_bearer = [("authorization", bearer.as_str())];
        let cookie = format!("gw_access={token}");
        let by_cookie = [("cookie", cookie.as_str())];
        let at = |p: &str| gw.url(p);
        for (path, headers, expected) in [
            // A bearer token (the direct path when it is on): no Vary.
            (
                "/app/plain",
                &by_bearer[..],
                want(Some("private, no-store"), &[]),
            ),
            ("/priv/plain", &by_bearer, want(Some("private"), &[])),
            ("/pass/plain", &by_bearer, want(None, &[])),
            (
                "/app/marked",
                &by_bearer,
                want(Some("max-age=60"), &["Accept-Encoding"]),
            ),
            // A cookie session decided: Vary: Cookie too.
            (
                "/app/plain",
                &by_cookie,
                want(Some("private, no-store"), &["Cookie"]),
            ),
            (
                "/priv/plain",
                &by_cookie,
                want(Some("private"), &["Cookie"]),
            ),
            ("/pass/plain", &by_cookie, want(None, &[])),
            (
                "/app/marked",
                &by_cookie,
                want(Some("max-age=60"), &["Accept-Encoding", "Cookie"]),
            ),
            // Nobody was authenticated: the upstream's answer is left alone.
            ("/pub/plain", &by_cookie, want(None, &[])),
            ("/pub/plain", &[], want(None, &[])),
        ] {
            let r = get_with(&at(path), headers).await;
            assert_eq!(
                caching(&r),
                expected,
                "fast_path {fast}: {path} {headers:?}"
            );
        }
    }
}

#[tokio::test]
async fn authenticated_answers_over_http2_are_not_stored() {
    let (gw, token) = start(true).await;
    let url = format!("https://localhost:{}/app/plain", gw.https.port());
    let send = |auth: (&'static str, String)| {
        let req = req("GET", &url)
            .header(auth.0, auth.1)
            .body(Full::default())
            .unwrap();
        h2_send(&gw, req)
    };
    let (v, r) = send(("authorization", bearer(&token))).await;
    assert_eq!(v, http::Version::HTTP_2);
    assert_eq!(caching(&r), want(Some("private, no-store"), &[]));
    let (_, r) = send(("cookie", format!("__Host-gw_access={token}"))).await;
    assert_eq!(caching(&r), want(Some("private, no-store"), &["Cookie"]));
}

#[tokio::test]
async fn a_route_with_an_unknown_cache_value_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(
        &path,
        "version: 1\nroutes:\n  - {path: /, upstream: builtin:whoami, cache: public}\n",
    )
    .unwrap();
    let e = gateway::config::load(&path).unwrap_err().to_string();
    assert!(
        e.contains("routes[0].cache") && e.contains("no-store, private or pass"),
        "{e}"
    );
}
