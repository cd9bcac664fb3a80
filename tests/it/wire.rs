//! What a client can do to the gateway on the wire: too many header fields over HTTP/2, request
//! bodies sent too slowly (`limits.body_timeout`), too many connections from one address
//! (`limits.max_connections_per_ip`), and malformed body framing, which is the client's fault
//! (400) and never the upstream's (502). Each HTTP/1.1 case runs with the fast path on and off.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;

use crate::raw;
use crate::util::*;

/// A gateway with a public route named `pub` to `up`, the fast path on or off, and `limits`
/// (YAML flow-mapping members).
async fn gateway(up: &Upstream, fast: bool, limits: &str, extra: &str) -> Gateway {
    Gateway::start(&auth_config(
        "",
        &format!(
            "listen: {{http: 127.0.0.1:0, https: 127.0.0.1:0, fast_path: {fast}}}\n\
             limits: {{{limits}}}\n{extra}\
             routes:\n  - {{name: pub, path: /public, upstream: '{u}', auth: public}}\n",
            u = up.url()
        ),
    ))
    .await
}

fn metric(text: &str, line_prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn scrape(gw: &Gateway) -> String {
    get(&format!("http://{}/metrics", gw.admin))
        .await
        .unwrap()
        .text()
}

// ---- limits.max_headers on HTTP/2 ----

fn with_headers(url: &str, n: usize) -> http::Request<Full<Bytes>> {
    let mut b = req("GET", url);
    for i in 0..n {
        b = b.header(format!("x-h{i}"), "v");
    }
    b.body(Full::default()).unwrap()
}

#[tokio::test]
async fn header_count_limit_holds_on_h2_as_on_h1() {
    for fast in [true, false] {
        let up = Upstream::start().await;
        let gw = gateway(&up, fast, "max_headers: 20", "").await;

        // HTTP/1.1: 30 fields are refused, 10 pass.
        let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
        let out = raw::until_close(
            gw.http,
            format!(
                "GET /public/h1many HTTP/1.1\r\nHost: localhost\r\n{many}Connection: close\r\n\r\n"
            )
            .as_bytes(),
            Duration::from_secs(10),
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 431"), "fast={fast}: {out}");
        let few: String = (0..10).map(|i| format!("X-H{i}: v\r\n")).collect();
        let out = raw::until_close(
            gw.http,
            format!(
                "GET /public/h1few HTTP/1.1\r\nHost: localhost\r\n{few}Connection: close\r\n\r\n"
            )
            .as_bytes(),
            Duration::from_secs(10),
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 200"), "fast={fast}: {out}");

        // HTTP/2 (TLS + ALPN): the same count, the same 431, as JSON.
        let base = format!("https://localhost:{}", gw.https.port());
        for n in [30, 150, 1000] {
            let (version, r) =
                h2_send(&gw, with_headers(&format!("{base}/public/h2many{n}"), n)).await;
            assert_eq!(version, http::Version::HTTP_2);
            assert_eq!(r.status, 431, "fast={fast}, {n} fields: {}", r.text());
            assert!(r.json()["detail"].is_string());
        }
        let (_, r) = h2_send(&gw, with_headers(&format!("{base}/public/h2few"), 10)).await;
        assert_eq!(r.status, 200, "{}", r.text());

        let seen: Vec<String> = up.requests().into_iter().map(|s| s.uri).collect();
        assert_eq!(seen, ["/public/h1few", "/public/h2few"], "fast={fast}");
    }
}

// ---- limits.body_timeout ----

/// The status of the last response in `out` (a bodiless GET may come first).
fn last_status(out: &str) -> &str {
    out.rsplit("HTTP/1.1 ")
        .next()
        .and_then(|s| s.get(..3))
        .unwrap_or("")
}

#[tokio::test]
async fn slow_request_bodies_are_408() {
    for fast in [true, false] {
        let up = Upstream::start().await;
        let gw = gateway(&up, fast, "body_timeout: 300ms", "").await;
        let gap = Duration::from_millis(1000);
        // A fast-path GET first, so that the slow POST reaches hyper by a handover when the fast
        // path is on; then a proxied body by Content-Length, one chunked, and an auth endpoint.
        let get = "GET /public/first HTTP/1.1\r\nHost: localhost\r\n\r\n";
        for (what, head, body) in [
            (
                "proxied, Content-Length",
                format!("{get}POST /public/slow HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n\r\n"),
                &b"abcd"[..],
            ),
            (
                "proxied, chunked",
                format!("{get}POST /public/slow HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"),
                b"1\r\na\r\n0\r\n\r\n",
            ),
            (
                "auth endpoint",
                "POST /api/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 4\r\n\r\n".to_owned(),
                b"{}  ",
            ),
        ] {
            let out = raw::slow_sender(gw.http, &head, body, gap).await;
            assert_eq!(last_status(&out), "408", "fast={fast}, {what}: {out}");
            assert!(out.contains("\"detail\""), "fast={fast}, {what}: {out}");
        }
        // Bodies that keep coming, if slower than usual, are not cut off: the limit is on the
        // gap between reads, not on the whole body.
        let out = raw::slow_sender(
            gw.http,
            "POST /public/steady HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
            b"xyz",
            Duration::from_millis(50),
        )
        .await;
        assert_eq!(last_status(&out), "200", "fast={fast}: {out}");
        let m = scrape(&gw).await;
        assert_eq!(
            metric(&m, "gateway_requests_total{route=\"pub\",class=\"5xx\"}"),
            Some(0.0),
            "{m}"
        );
    }
}

#[tokio::test]
async fn slow_request_bodies_are_408_on_h2() {
    let up = Upstream::start().await;
    let gw = gateway(&up, true, "body_timeout: 300ms", "").await;
    let tls = tls_connect(&gw, &[b"h2"]).await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    // One byte, then nothing (the stream stays open).
    for path in ["/public/h2slow", "/api/auth/login"] {
        let frames = futures_util::StreamExt::chain(
            futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(Bytes::from_static(
                b"{",
            )))]),
            futures_util::stream::pending(),
        );
        let r = req(
            "POST",
            &format!("https://localhost:{}{path}", gw.https.port()),
        )
        .header("content-type", "application/json")
        .body(StreamBody::new(Box::pin(frames)))
        .unwrap();
        let (_, r) = read_resp(guard(20, sender.send_request(r)).await.unwrap()).await;
        assert_eq!(r.status, 408, "{path}: {}", r.text());
    }
}

// ---- limits.max_connections_per_ip ----

/// An HTTP/1.1 connection from `from` (any 127.0.0.0/8 address) to `to`.
async fn h1_from(
    from: &str,
    to: SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let tcp = socket.connect(to).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn h1_get(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
) -> Result<u16, hyper::Error> {
    let r = req("GET", path)
        .header("host", "localhost")
        .body(Full::default())
        .unwrap();
    let resp = guard(10, sender.send_request(r)).await?;
    Ok(read_resp(resp).await.1.status)
}

/// A working keep-alive connection from `from`. The readiness probe's connection may hold a
/// slot for a moment after it was dropped, so a refused one is retried (bounded).
async fn held(from: &str, to: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    for _ in 0..200 {
        let mut c = h1_from(from, to).await;
        if let Ok(status) = h1_get(&mut c, "/public/held").await {
            assert_eq!(status, 200);
            return c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no connection slot for {from}");
}

#[tokio::test]
async fn connections_per_address_are_capped_and_trusted_proxies_are_exempt() {
    let up = Upstream::start().await;
    let gw = gateway(&up, true, "max_connections_per_ip: 3", "").await;
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(held("127.0.0.1", gw.http).await);
    }
    // The fourth from the same address is closed without an answer, over TLS too.
    let mut fourth = h1_from("127.0.0.1", gw.http).await;
    assert!(h1_get(&mut fourth, "/public/fourth").await.is_err());
    let mut tls = raw::Client::connect(gw.https).await;
    let _ = tls.r.s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05]).await;
    assert_eq!(tls.until_closed("over the limit").await, b"");
    // Another address is not affected.
    let mut other = h1_from("127.0.0.2", gw.http).await;
    assert_eq!(h1_get(&mut other, "/public/other").await.unwrap(), 200);
    // The three still work; closing one frees its slot.
    for c in &mut conns {
        assert_eq!(h1_get(c, "/public/again").await.unwrap(), 200);
    }
    conns.pop();
    conns.push(held("127.0.0.1", gw.http).await);
    assert!(!up.requests().iter().any(|s| s.uri == "/public/fourth"));
    let m = scrape(&gw).await;
    assert!(
        metric(&m, "gateway_connections_refused_per_ip_total").unwrap_or(0.0) >= 2.0,
        "{m}"
    );

    // A trusted proxy carries many clients: it is not capped.
    let gw = gateway(
        &up,
        true,
        "max_connections_per_ip: 2",
        "trusted_proxies: [127.0.0.1/32]\n",
    )
    .await;
    let mut conns = Vec::new();
    for _ in 0..5 {
        conns.push(held("127.0.0.1", gw.http).await);
    }
    for c in &mut conns {
        assert_eq!(h1_get(c, "/public/trusted").await.unwrap(), 200);
    }
}

// ---- malformed request framing is the client's fault ----

#[tokio::test]
async fn malformed_request_framing_is_400_and_not_blamed_on_the_upstream() {
    for fast in [true, false] {
        let up = Upstream::start().await;
        let gw = gateway(&up, fast, "", "").await;
        let get = "GET /public/first HTTP/1.1\r\nHost: localhost\r\n\r\n";
        for (what, bytes) in [
            (
                "bad chunk size",
                format!(
                    "{get}POST /public/bad HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
                ),
            ),
            (
                "chunk data longer than its size",
                format!(
                    "{get}POST /public/bad HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n"
                ),
            ),
        ] {
            let mut c = raw::Client::connect(gw.http).await;
            c.send(&bytes).await;
            let out = String::from_utf8_lossy(&c.until_closed(what).await).into_owned();
            assert_eq!(last_status(&out), "400", "fast={fast}, {what}: {out}");
            assert!(out.contains("\"detail\""), "fast={fast}, {what}: {out}");
        }
        // A body shorter than its Content-Length, then the client stops sending (EOF on its
        // write side): there may be nobody left to read an answer, but the request counts as
        // a client error.
        let mut c = raw::Client::connect(gw.http).await;
        c.send(format!(
            "{get}POST /public/short HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nabc"
        ))
        .await;
        c.r.s.shutdown().await.unwrap();
        let out = String::from_utf8_lossy(&c.until_closed("short body").await).into_owned();
        assert!(
            matches!(last_status(&out), "200" | "400"),
            "fast={fast}: {out}"
        );
        let mut m = String::new();
        for _ in 0..200 {
            m = scrape(&gw).await;
            if metric(&m, "gateway_requests_total{route=\"pub\",class=\"4xx\"}") == Some(3.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            metric(&m, "gateway_requests_total{route=\"pub\",class=\"4xx\"}"),
            Some(3.0),
            "fast={fast}: {m}"
        );
        assert_eq!(
            metric(&m, "gateway_requests_total{route=\"pub\",class=\"5xx\"}"),
            Some(0.0),
            "fast={fast}: {m}"
        );
    }
}

// ---- the new keys ----

#[test]
fn body_timeout_and_per_address_cap_have_defaults_and_bounds() {
    let load = |yaml: &str| {
        gateway::config::from_str(
            yaml,
            "gateway.yaml",
            std::path::Path::new("/srv/gw"),
            &|_| None,
        )
    };
    let c = load("version: 1\n").unwrap();
    assert_eq!(c.limits.body_timeout, Duration::from_secs(30));
    assert_eq!(c.limits.max_connections_per_ip, 256);
    let c = load("version: 1\nlimits: {body_timeout: 2m, max_connections_per_ip: 10}\n").unwrap();
    assert_eq!(c.limits.body_timeout, Duration::from_secs(120));
    assert_eq!(c.limits.max_connections_per_ip, 10);
    for (yaml, key) in [
        (
            "limits: {max_connections_per_ip: 0}",
            "limits.max_connections_per_ip",
        ),
        ("limits: {body_timeout: 0s}", "limits.body_timeout"),
        ("limits: {body_timeout: soon}", "limits.body_timeout"),
    ] {
        let e = load(&format!("version: 1\n{yaml}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "{yaml}: {e}");
    }
    // The shipped file documents both.
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.yaml"),
    )
    .unwrap();
    assert!(shipped.contains("body_timeout:") && shipped.contains("max_connections_per_ip:"));
}
