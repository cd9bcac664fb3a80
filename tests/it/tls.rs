//! The HTTPS listener: the generated certificate, ALPN (HTTP/2 and HTTP/1.1), HSTS.

use bytes::Bytes;
use http_body_util::Full;

use crate::util::*;

fn routes(upstream: &str) -> String {
    format!("routes:\n  - {{path: /public, upstream: '{upstream}', auth: public}}\n")
}

#[tokio::test]
async fn http2_over_tls_reaches_the_upstream_as_http1_with_host() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&routes(&up.url())).await;
    let url = format!("https://localhost:{}/public/h2?x=1", gw.https.port());
    let (version, r) = guard(
        20,
        h2_send(&gw, req("GET", &url).body(Full::default()).unwrap()),
    )
    .await;
    assert_eq!(version, http::Version::HTTP_2);
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert_eq!(seen.uri, "/public/h2?x=1");
    assert_eq!(seen.version, http::Version::HTTP_11);
    assert_eq!(
        seen.get("host"),
        Some(format!("localhost:{}", gw.https.port()))
    );
    assert_eq!(seen.all("x-forwarded-proto"), ["https"]);

    // A body over HTTP/2 arrives whole.
    let (_, r) = guard(
        20,
        h2_send(
            &gw,
            req("POST", &url)
                .body(Full::new(Bytes::from(vec![b'z'; 100_000])))
                .unwrap(),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().body_len, 100_000);
    assert_eq!(up.last().method, "POST");
}

#[tokio::test]
async fn http1_over_tls() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&routes(&up.url())).await;
    let (version, r) = guard(
        20,
        h1_tls_send(
            &gw,
            req("GET", "/public/h1")
                .header("host", "localhost")
                .body(Full::default())
                .unwrap(),
        ),
    )
    .await;
    assert_eq!(version, http::Version::HTTP_11);
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert_eq!(seen.uri, "/public/h1");
    assert_eq!(seen.get("host").as_deref(), Some("localhost"));
    assert_eq!(seen.all("x-forwarded-proto"), ["https"]);
}

#[tokio::test]
async fn hsts_is_sent_on_tls_responses_only() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!("{}tls: {{hsts_max_age: 1d}}\n", routes(&up.url()))).await;
    let url = format!("https://localhost:{}/public/x", gw.https.port());
    let (_, r) = guard(
        20,
        h2_send(&gw, req("GET", &url).body(Full::default()).unwrap()),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("strict-transport-security").as_deref(),
        Some("max-age=86400")
    );
    // Gateway-made responses over TLS carry it too.
    let url = format!("https://localhost:{}/nowhere", gw.https.port());
    let (_, r) = guard(
        20,
        h2_send(&gw, req("GET", &url).body(Full::default()).unwrap()),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.header("strict-transport-security").as_deref(),
        Some("max-age=86400")
    );
    // Never over plain HTTP.
    let r = get(&gw.url("/public/x")).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("strict-transport-security").is_none());
}

#[tokio::test]
async fn no_hsts_by_default_with_a_self_signed_certificate() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&routes(&up.url())).await;
    let url = format!("https://localhost:{}/public/x", gw.https.port());
    let (_, r) = guard(
        20,
        h2_send(&gw, req("GET", &url).body(Full::default()).unwrap()),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.header("strict-transport-security").is_none());
}
