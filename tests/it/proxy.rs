//! The proxy half: routing, forwarding, header rewriting, errors, upgrades, TLS.

use bytes::Bytes;
use http_body_util::Full;

use crate::util::*;

fn routes(upstream: &str) -> String {
    format!(
        "routes:\n  - {{path: /public, upstream: '{upstream}', auth: public}}\n  - {{path: /who, upstream: 'builtin:whoami', auth: public}}\n  - {{path: /, upstream: '{upstream}', auth: required}}\n"
    )
}

#[tokio::test]
async fn public_route_is_forwarded_with_query() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&routes(&up.url())).await;
    let r = get(&gw.url("/public/a/b?x=1&y=%20")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().uri, "/public/a/b?x=1&y=%20");
}

/// Only public routes to the mock upstream, no catch-all: unmatched paths are 404.
fn public(upstream: &str, extra: &str) -> String {
    format!("routes:\n  - {{path: /public, upstream: '{upstream}', auth: public}}\n{extra}")
}

#[tokio::test]
async fn methods_and_bodies_are_forwarded_intact() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&public(&up.url(), "")).await;
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        let body = format!("payload for {method}");
        let r = send(
            req(method, &gw.url("/public/m"))
                .body(Full::new(Bytes::from(body.clone())))
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{method}: {}", r.text());
        let seen = up.last();
        assert_eq!(seen.method, method);
        assert_eq!(seen.uri, "/public/m");
        assert_eq!(seen.body_len, body.len() as u64, "{method}");
    }
}

#[tokio::test]
async fn a_50_mb_body_streams_through() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&public(&up.url(), "limits: {max_body_bytes: 100MiB}\n")).await;
    let (count, size) = (800, 64 * 1024); // 50 MiB
    let r = guard(
        120,
        send_body(
            req("POST", &gw.url("/public/upload"))
                .body(chunked_body(count, size))
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().body_len, (count * size) as u64);
    assert_eq!(r.json()["body_len"], (count * size) as u64);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_with_content_length() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&public(&up.url(), "limits: {max_body_bytes: 1KiB}\n")).await;
    // At the limit: forwarded.
    let r = send(
        req("POST", &gw.url("/public/ok"))
            .body(Full::new(Bytes::from(vec![b'a'; 1024])))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().body_len, 1024);
    // One byte over: refused before anything reaches the upstream.
    let r = send(
        req("POST", &gw.url("/public/big"))
            .body(Full::new(Bytes::from(vec![b'a'; 1025])))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.json()["detail"].is_string());
    // A large declared body is refused from its headers alone; the client still reads the 413.
    let r = send(
        req("POST", &gw.url("/public/huge"))
            .body(Full::new(Bytes::from(vec![b'a'; 8 * 1024 * 1024])))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&public(&up.url(), "limits: {max_body_bytes: 1KiB}\n")).await;
    let r = guard(
        20,
        send_body(
            req("POST", &gw.url("/public/big"))
                .body(chunked_body(4, 512))
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.json()["detail"].is_string());
    // Whatever part reached the upstream, never more than the limit.
    for seen in up.requests() {
        assert!(seen.body_len <= 1024, "{seen:?}");
    }
}

#[tokio::test]
async fn query_strings_are_preserved_exactly() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&public(&up.url(), "")).await;
    for q in [
        "a=1&b=2",
        "x=%20%2F%3F%26%3D%25&y=caf%C3%A9",
        "empty=&flag&a=1&a=2",
        "plus=a+b&sl=/x/../y",
    ] {
        let r = get(&gw.url(&format!("/public/q?{q}"))).await.unwrap();
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        assert_eq!(up.last().uri, format!("/public/q?{q}"));
    }
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&public(&up.url(), "")).await;
    let r = send(
        req("GET", &gw.url("/public/hop"))
            .header("connection", "keep-alive, X-Hop")
            .header("x-hop", "secret")
            .header("keep-alive", "timeout=5")
            .header("te", "trailers")
            .header("proxy-authorization", "Basic Zm9vOmJhcg==")
            .header("upgrade", "h2c")
            .header("x-end-to-end", "kept")
            .header("accept", "application/json")
            .body(Full::default())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    for gone in [
        "x-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
    ] {
        assert!(seen.get(gone).is_none(), "{gone} reached the upstream");
    }
    for v in seen.all("connection") {
        assert!(!v.to_ascii_lowercase().contains("x-hop"), "connection: {v}");
    }
    assert_eq!(seen.get("x-end-to-end").as_deref(), Some("kept"));
    assert_eq!(seen.get("accept").as_deref(), Some("application/json"));
    // The mock answers with `Connection: keep-alive, x-upstream-hop` and `x-upstream-hop`.
    assert!(r.header("x-upstream-hop").is_none(), "{:?}", r.headers);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
}

#[tokio::test]
async fn spoofed_forwarded_headers_are_replaced_for_untrusted_peers() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&public(&up.url(), "")).await;
    let r = send(
        req("GET", &gw.url("/public/xff"))
            .header("host", "app.test")
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "evil.test")
            .header("forwarded", "for=6.6.6.6;proto=https;host=evil.test")
            .body(Full::default())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert_eq!(seen.all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.all("x-forwarded-proto"), ["http"]);
    assert_eq!(seen.all("x-forwarded-host"), ["app.test"]);
    assert!(seen.get("forwarded").is_none());
    // The Host header is preserved by default.
    assert_eq!(seen.all("host"), ["app.test"]);
}

#[tokio::test]
async fn forwarded_for_is_appended_for_trusted_proxies() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&public(&up.url(), "trusted_proxies: [127.0.0.1]\n")).await;
    let r = send(
        req("GET", &gw.url("/public/xff"))
            .header("host", "app.test")
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-proto", "https")
            .body(Full::default())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert_eq!(seen.all("x-forwarded-for"), ["203.0.113.7, 127.0.0.1"]);
    assert_eq!(seen.all("x-forwarded-proto"), ["https"]);
    assert_eq!(seen.all("host"), ["app.test"]);
}

fn assert_no_identity_headers(seen: &Seen) {
    for name in seen.headers.keys() {
        let n = name.as_str().replace('_', "-");
        assert!(!n.starts_with("x-auth-"), "{name} reached the upstream");
    }
}

fn with_identity_headers(b: http::request::Builder, twice: bool) -> http::request::Builder {
    let mut b = b
        .header("X-Auth-User-Id", "admin")
        .header("x_auth_roles", "admin")
        .header("X-AUTH-EMAIL", "root@example.com")
        .header("x-not-identity", "kept");
    if twice {
        b = b
            .header("X-Auth-User-Id", "admin2")
            .header("x_auth_roles", "superuser")
            .header("X-AUTH-EMAIL", "other@example.com");
    }
    b
}

#[tokio::test]
async fn client_identity_headers_never_reach_the_upstream_over_http1() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&public(&up.url(), "")).await;
    for twice in [false, true] {
        let r = send(
            with_identity_headers(req("GET", &gw.url("/public/id")), twice)
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let seen = up.last();
        assert_eq!(seen.get("x-not-identity").as_deref(), Some("kept"));
        assert_no_identity_headers(&seen);
    }
}

#[tokio::test]
async fn client_identity_headers_never_reach_the_upstream_over_http2() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&public(&up.url(), "")).await;
    for twice in [false, true] {
        let url = format!("https://localhost:{}/public/id", gw.https.port());
        let (version, r) = h2_send(
            &gw,
            with_identity_headers(req("GET", &url), twice)
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(version, http::Version::HTTP_2);
        assert_eq!(r.status, 200, "{}", r.text());
        let seen = up.last();
        assert_eq!(seen.get("x-not-identity").as_deref(), Some("kept"));
        assert_no_identity_headers(&seen);
    }
}

#[tokio::test]
async fn unmatched_paths_are_404_with_json_detail() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&public(&up.url(), "")).await;
    for path in ["/nothing", "/publicity", "/publi", "/"] {
        let r = get(&gw.url(path)).await.unwrap();
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(r.json()["detail"].is_string(), "{}", r.text());
    }
    assert_eq!(up.count(), 0);
    // Prefix matching is by segment: /public and /public/... match.
    for path in ["/public", "/public/", "/public/x/y"] {
        let r = get(&gw.url(path)).await.unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
}

#[tokio::test]
async fn methods_and_hosts_select_routes() {
    let up = Upstream::start().await;
    let extra = "  - {path: /posts, methods: [POST], upstream: 'builtin:whoami', auth: public}\n  - {path: /hosted, host: app.test, upstream: 'builtin:whoami', auth: public}\n  - {path: /hosted, host: '*.wild.test', upstream: 'builtin:whoami', auth: public}\n";
    let gw = Gateway::start(&public(&up.url(), extra)).await;
    let r = send(
        req("POST", &gw.url("/posts"))
            .body(Full::default())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(&gw.url("/posts")).await.unwrap();
    assert_eq!(r.status, 404, "{}", r.text());

    let host = |h: &'static str| {
        send(
            req("GET", &gw.url("/hosted/x"))
                .header("host", h)
                .body(Full::default())
                .unwrap(),
        )
    };
    assert_eq!(host("app.test").await.unwrap().status, 200);
    assert_eq!(host("APP.test:8080").await.unwrap().status, 200);
    assert_eq!(host("a.wild.test").await.unwrap().status, 200);
    assert_eq!(host("other.test").await.unwrap().status, 404);
    assert_eq!(host("wild.test").await.unwrap().status, 404);
    assert_eq!(host("app.test.evil").await.unwrap().status, 404);
}

#[tokio::test]
async fn strip_prefix_and_upstream_base_path() {
    let up = Upstream::start().await;
    let extra = format!(
        "  - {{path: /strip, strip_prefix: true, upstream: '{u}', auth: public}}\n  - {{path: /based, strip_prefix: true, upstream: '{u}/base/', auth: public}}\n  - {{path: /kept, upstream: '{u}/base', auth: public}}\n",
        u = up.url()
    );
    let gw = Gateway::start(&public(&up.url(), &extra)).await;
    for (path, want) in [
        ("/strip/a/b?q=1", "/a/b?q=1"),
        ("/strip", "/"),
        ("/based/a?x=%2F", "/base/a?x=%2F"),
        ("/based", "/base/"),
        ("/kept/a", "/base/kept/a"),
    ] {
        let r = get(&gw.url(path)).await.unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(up.last().uri, want, "{path}");
    }
}

#[tokio::test]
async fn upstream_down_is_502_json_or_html() {
    let dead = dead_addr().await;
    let gw = Gateway::start(&public(&format!("http://{dead}"), "")).await;
    let r = guard(20, get(&gw.url("/public/x"))).await.unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert!(r.json()["detail"].is_string());
    // The cause (with the upstream address) is logged, not sent.
    assert!(!r.text().contains(&dead.port().to_string()), "{}", r.text());

    let r = guard(
        20,
        send(
            req("GET", &gw.url("/public/x"))
                .header("accept", "text/html,application/xhtml+xml")
                .body(Full::default())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 502);
    assert!(
        r.header("content-type").unwrap().starts_with("text/html"),
        "{:?}",
        r.headers
    );
    assert!(r.text().contains("502"), "{}", r.text());
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "routes:\n  - {{path: /slow, upstream: '{}', auth: public}}\nupstream: {{response_timeout: 200ms}}\n",
        up.url()
    ))
    .await;
    let r = guard(5, get(&gw.url("/slow/3000"))).await.unwrap();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.json()["detail"].is_string());
    assert_eq!(up.last().uri, "/slow/3000");
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "routes:\n  - {{path: /ws, upstream: '{}', auth: public}}\n",
        up.url()
    ))
    .await;
    let tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let (mut ws, resp) = guard(
        10,
        tokio_tungstenite::client_async(format!("ws://{}/ws", gw.http), tcp),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("hello through the gateway"))
        .await
        .unwrap();
    let echoed = guard(10, ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("hello through the gateway"));
    let bin = vec![0u8, 1, 2, 255, 254];
    ws.send(Message::binary(bin.clone())).await.unwrap();
    let echoed = guard(10, ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::binary(bin));
    ws.close(None).await.unwrap();

    let seen = up.last();
    assert_eq!(seen.uri, "/ws");
    assert_eq!(
        seen.get("upgrade")
            .map(|v| v.to_ascii_lowercase())
            .as_deref(),
        Some("websocket")
    );
    assert!(
        seen.all("connection")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("upgrade"))
    );
}
