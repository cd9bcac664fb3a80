//! Health endpoints, the HTTP -> HTTPS redirect and graceful shutdown.

use bytes::Bytes;
use http_body_util::Full;

use crate::util::*;

#[tokio::test]
async fn health_endpoints() {
    let gw = Gateway::start("routes: []\n").await;
    let r = get(&gw.url("/healthz")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "ok");
    let r = get(&gw.url("/readyz")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "ready");
}

#[tokio::test]
async fn plain_http_is_redirected_to_https() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "listen: {{http: 127.0.0.1:0, https: 127.0.0.1:0, redirect_http_to_https: true}}\nroutes:\n  - {{path: /public, upstream: '{}', auth: public}}\n",
        up.url()
    ))
    .await;
    let r = send(
        req("GET", &gw.url("/public/a/b?x=1&y=%2F"))
            .header("host", "app.test:8080")
            .body(Full::default())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 308, "{}", r.text());
    let location = r.header("location").unwrap();
    let rest = location
        .strip_prefix("https://app.test")
        .unwrap_or_else(|| panic!("{location}"));
    // The port comes from `listen.https` in the config (the harness binds its own sockets).
    let path = rest.trim_start_matches(|c: char| c == ':' || c.is_ascii_digit());
    assert_eq!(path, "/public/a/b?x=1&y=%2F", "{location}");
    assert_eq!(up.count(), 0);

    // Health checks are still answered over plain HTTP (load balancers probe them).
    assert_eq!(get(&gw.url("/healthz")).await.unwrap().status, 200);
    // The HTTPS listener serves normally.
    let url = format!("https://localhost:{}/public/x", gw.https.port());
    let (_, r) = h2_send(
        &gw,
        req("GET", &url).body(Full::<Bytes>::default()).unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_refuses_new_connections() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "routes:\n  - {{path: /slow, upstream: '{}', auth: public}}\n",
        up.url()
    ))
    .await;
    let http = gw.http;
    let url = gw.url("/slow/500");
    let in_flight = tokio::spawn(async move { get(&url).await });
    // The request is in flight once the upstream has it.
    wait_until("the upstream to receive the request", || up.count() == 1).await;
    let _dir = guard(20, gw.shutdown()).await;
    let r = guard(20, in_flight).await.unwrap().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["uri"], "/slow/500");
    // `run` has returned: the listener is closed.
    let e = tokio::net::TcpStream::connect(http).await;
    assert!(e.is_err(), "a new connection was accepted after shutdown");
}
