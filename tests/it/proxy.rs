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

/// An upstream that accepts upgrades on raw sockets: answers each 101 with `GREETING` in the
/// same write (bytes past the 101 that the gateway's client reads with the answer), echoes
/// everything it reads, and once the client's side has ended writes `TRAILER` and ends its own.
async fn raw_upgrade_upstream() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(upgrade_and_echo(s));
        }
    });
    addr
}

async fn upgrade_and_echo(mut s: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(
            s.read(&mut b).await.unwrap(),
            1,
            "the request head broke off"
        );
        head.push(b[0]);
    }
    let mut answer =
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
            .to_vec();
    answer.extend_from_slice(GREETING);
    s.write_all(&answer).await.unwrap();
    let (mut r, mut w) = s.split();
    tokio::io::copy(&mut r, &mut w).await.unwrap();
    w.write_all(TRAILER).await.unwrap();
    w.shutdown().await.unwrap();
}

const GREETING: &[u8] = b"first words from the upstream;";
const TRAILER: &[u8] = b";the upstream's last words";

/// Through an upgraded tunnel: bytes the upstream sends with its 101, 4 MiB each way while both
/// directions are busy, the client's end of input passed on (the upstream only writes its
/// trailer after it), and the upstream's end passed back (the client reads to the end).
async fn a_tunnel_carries_everything_both_ways<S>(client: S, fast_path: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let mut client = tokio::io::BufReader::new(client);
    client
        .write_all(b"GET /tunnel HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .unwrap();
    let mut head = String::new();
    loop {
        let mut line = String::new();
        client.read_line(&mut line).await.unwrap();
        assert!(!line.is_empty(), "no answer head (fast path {fast_path})");
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let payload: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = tokio::io::split(client);
    let write = async {
        w.write_all(&payload).await.unwrap();
        w.shutdown().await.unwrap();
        w
    };
    let read = async {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        got
    };
    let (_w, got) = guard(60, async { tokio::join!(write, read) }).await;
    let mut want = GREETING.to_vec();
    want.extend_from_slice(&payload);
    want.extend_from_slice(TRAILER);
    assert_eq!(got.len(), want.len(), "fast path {fast_path}");
    assert!(got == want, "the bytes differ (fast path {fast_path})");
}

#[tokio::test]
async fn a_tunnel_carries_large_data_and_half_closes_on_both_serving_paths() {
    for fast_path in [true, false] {
        let up = raw_upgrade_upstream().await;
        let gw = Gateway::start(&format!(
            "listen: {{http: 127.0.0.1:0, https: 127.0.0.1:0, fast_path: {fast_path}}}\nroutes:\n  - {{path: /tunnel, upstream: 'http://{up}', auth: public}}\n"
        ))
        .await;
        let tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
        a_tunnel_carries_everything_both_ways(tcp, fast_path).await;
        // The same over TLS, where what the tunnel writes must be flushed out of TLS.
        let tls = tls_connect(&gw, &[b"http/1.1"]).await;
        a_tunnel_carries_everything_both_ways(tls, fast_path).await;
    }
}
