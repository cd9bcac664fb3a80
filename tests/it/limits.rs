//! Abuse resistance over real sockets: rate limits and login regulation on the auth API, the
//! connection and request limits of `limits.*`, and the security headers on what the gateway
//! serves itself. Every case checks the answer and that the mock upstream received nothing it
//! should not have.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::raw;
use crate::util::*;

/// How long the gateway has to close a connection it should close.
const TEN_SECONDS: Duration = Duration::from_secs(10);

const PW: &str = "limits-suite-pw-1";

fn routes(upstream: &str) -> String {
    format!(
        "routes:\n  - {{path: /public, upstream: '{upstream}', auth: public}}\n  - {{path: /, upstream: '{upstream}', auth: required}}\n"
    )
}

async fn login_attempt(gw: &Gateway, email: &str, password: &str, xff: Option<&str>) -> Resp {
    let mut headers = Vec::new();
    if let Some(x) = xff {
        headers.push(("x-forwarded-for", x));
    }
    post_json(
        &gw.url("/api/auth/login"),
        &json!({"email": email, "password": password}),
        &headers,
    )
    .await
}

/// A 429 with a `{"detail"}` body and a whole number of seconds in `Retry-After`.
fn assert_throttled(r: &Resp, what: &str) {
    assert_eq!(r.status, 429, "{what}: {}", r.text());
    let retry = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: no Retry-After"));
    assert!(
        retry.parse::<u64>().is_ok_and(|s| s >= 1),
        "{what}: Retry-After {retry:?}"
    );
    assert!(r.json()["detail"].is_string(), "{what}: {}", r.text());
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
}

// ---- rate limits ----

/// A throttled login never costs a hash. The hasher's `completed()` counter is not reachable from
/// outside the process, so the proof is by configuration: one hash at a time, a queue of four
/// (the hasher's `max_waiting` is 4 x `max_concurrent`), and a deliberately slow hash. Twenty
/// parallel logins that reached the hasher would overflow its queue and some would get 503
/// ("busy"); the rest 401. All twenty being 429 means none of them got to the hasher.
#[tokio::test]
async fn logins_over_the_ip_limit_are_429_without_hashing() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "auth: {{password: {{memory_kib: 65536, iterations: 3, max_concurrent_hashes: 1}}}}\nrate_limits: {{login_per_ip: 3/min, login_per_account: 'off'}}\n{}",
        routes(&up.url())
    ))
    .await;
    for i in 0..3 {
        let r = login_attempt(&gw, &format!("nobody{i}@example.com"), PW, None).await;
        assert_eq!(r.status, 401, "attempt {i}: {}", r.text());
    }
    let attempts = (0..20).map(|i| {
        let gw = &gw;
        async move { login_attempt(gw, &format!("flood{i}@example.com"), PW, None).await }
    });
    let answers = guard(60, futures_util::future::join_all(attempts)).await;
    for (i, r) in answers.iter().enumerate() {
        assert_throttled(r, &format!("parallel attempt {i}"));
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn spoofed_forwarded_for_does_not_buy_a_fresh_bucket() {
    // Every attempt uses its own email: failed logins also feed the per-account regulation
    // (default 5 failures), which must not be what answers 429 here.
    let up = Upstream::start().await;
    let limits = "rate_limits: {login_per_ip: 3/min, login_per_account: 'off'}\n";
    let gw = Gateway::start(&auth_config("", &format!("{limits}{}", routes(&up.url())))).await;
    for i in 0..3 {
        let r = login_attempt(
            &gw,
            &format!("u{i}@example.com"),
            PW,
            Some(&format!("10.9.0.{i}")),
        )
        .await;
        assert_eq!(r.status, 401, "{}", r.text());
    }
    // The peer (127.0.0.1) is not a trusted proxy: its X-Forwarded-For is not believed.
    for xff in [
        "203.0.113.7",
        "198.51.100.1, 203.0.113.8",
        "2001:db8::1",
        "garbage",
        "127.0.0.2",
    ] {
        let r = login_attempt(&gw, &format!("s-{}@example.com", xff.len()), PW, Some(xff)).await;
        assert_throttled(&r, xff);
    }

    // Behind a trusted proxy the right-most untrusted hop is the client, one bucket each.
    let trusted = Gateway::start(&auth_config(
        "",
        &format!(
            "trusted_proxies: [127.0.0.1]\n{limits}{}",
            routes(&up.url())
        ),
    ))
    .await;
    for i in 0..3 {
        let r = login_attempt(
            &trusted,
            &format!("t{i}@example.com"),
            PW,
            Some("203.0.113.1"),
        )
        .await;
        assert_eq!(r.status, 401, "{}", r.text());
    }
    let r = login_attempt(&trusted, "v0@example.com", PW, Some("203.0.113.1")).await;
    assert_throttled(&r, "203.0.113.1 over its limit");
    // A left-most hop the client made up does not move it to another bucket...
    let r = login_attempt(
        &trusted,
        "v1@example.com",
        PW,
        Some("192.0.2.99, 203.0.113.1"),
    )
    .await;
    assert_throttled(&r, "spoofed left-most hop");
    // ...a trusted hop on the right is skipped...
    let r = login_attempt(
        &trusted,
        "v2@example.com",
        PW,
        Some("203.0.113.1, 127.0.0.1"),
    )
    .await;
    assert_throttled(&r, "trusted right-most hop");
    // ...while another client behind the proxy has its own bucket.
    for xff in ["203.0.113.2", "203.0.113.1, 198.51.100.4"] {
        let r = login_attempt(&trusted, "v3@example.com", PW, Some(xff)).await;
        assert_eq!(r.status, 401, "{xff}: {}", r.text());
    }
    // The proxy itself (no X-Forwarded-For) is a client of its own too.
    let r = login_attempt(&trusted, "v4@example.com", PW, None).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(up.count(), 0);
}

/// Status, body and header names: what an observer could compare.
fn shape(r: &Resp) -> (u16, serde_json::Value, BTreeSet<String>) {
    let names = r
        .headers
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k != "date")
        .collect();
    (r.status, r.json(), names)
}

#[tokio::test]
async fn regulation_bans_an_account_after_failures_but_not_its_familiar_ip() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&auth_config(
        "",
        &format!(
            "rate_limits: {{login_per_ip: 'off', login_per_account: 'off'}}\nregulation: {{max_retries: 3, find_time: 2m, ban_time: 5m}}\n{}",
            routes(&up.url())
        ),
    ))
    .await;
    // Signing up is not a login: 127.0.0.1 is not yet familiar to these accounts.
    signup(&gw, "victim@example.com", PW).await;
    signup(&gw, "bystander@example.com", PW).await;

    for _ in 0..3 {
        let r = login_attempt(&gw, "victim@example.com", "wrong-password-1", None).await;
        assert_eq!(r.status, 401, "{}", r.text());
    }
    let known = login_attempt(&gw, "victim@example.com", PW, None).await;
    assert_throttled(&known, "banned account, correct password");
    // Email normalisation does not give another account key.
    let r = login_attempt(&gw, "  Victim@Example.COM ", PW, None).await;
    assert_throttled(&r, "banned account, other spelling");

    // An unknown email is regulated the same way, and its answer looks the same.
    for _ in 0..3 {
        let r = login_attempt(&gw, "ghost@example.com", "wrong-password-1", None).await;
        assert_eq!(r.status, 401, "{}", r.text());
    }
    let unknown = login_attempt(&gw, "ghost@example.com", PW, None).await;
    assert_throttled(&unknown, "banned unknown email");
    assert_eq!(shape(&known), shape(&unknown));

    // Another account is unaffected.
    login(&gw, "bystander@example.com", PW).await;

    // A familiar IP is exempt from the ban: an attacker who knows the email can lock the account
    // out everywhere else, but not from where its owner last signed in successfully (see the
    // `ratelimit` module docs: ASVS 6.1.1 lock-out abuse). All requests here come from
    // 127.0.0.1, so: log in once, fail three times, and the right password still works.
    signup(&gw, "owner@example.com", PW).await;
    login(&gw, "owner@example.com", PW).await;
    for _ in 0..3 {
        let r = login_attempt(&gw, "owner@example.com", "wrong-password-1", None).await;
        assert_eq!(r.status, 401, "{}", r.text());
    }
    let s = login(&gw, "owner@example.com", PW).await;
    assert_eq!(me_status(&gw, &s.access).await, 200);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn signup_and_refresh_have_per_ip_limits() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&auth_config(
        "",
        &format!(
            "rate_limits: {{signup_per_ip: 2/min, refresh_per_ip: 2/min}}\n{}",
            routes(&up.url())
        ),
    ))
    .await;
    let a = signup(&gw, "s1@example.com", PW).await;
    signup(&gw, "s2@example.com", PW).await;
    let r = post_json(
        &gw.url("/api/auth/signup"),
        &json!({"email": "s3@example.com", "password": PW}),
        &[],
    )
    .await;
    assert_throttled(&r, "third signup");
    // Throttled before anything is done: the account was not created.
    let r = login_attempt(&gw, "s3@example.com", PW, None).await;
    assert_eq!(r.status, 401, "{}", r.text());

    let b = refreshed(&gw, &a.refresh).await;
    refreshed(&gw, &b.refresh).await;
    let r = refresh(&gw, "any-token").await;
    assert_throttled(&r, "third refresh");
    assert_eq!(up.count(), 0);
}

// ---- connection and request limits ----

#[tokio::test]
async fn a_slowloris_head_is_cut_off() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "limits: {{header_read_timeout: 300ms}}\n{}",
        routes(&up.url())
    ))
    .await;
    // A partial head, a few bytes (too few to tell HTTP/1.1 from HTTP/2), or nothing at all.
    for (what, bytes) in [
        (
            "partial head",
            &b"GET /public/slow HTTP/1.1\r\nHost: localhost\r\nX-Slow: a"[..],
        ),
        ("a few bytes", b"GET /public"),
        ("part of the HTTP/2 preface", b"PRI * HTTP"),
        ("HTTP/2 preface only", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        ("nothing", b""),
    ] {
        let mut c = raw::Client::connect(gw.http).await;
        c.send(bytes).await;
        let out = c.until_closed_within(TEN_SECONDS, what).await;
        let out = String::from_utf8_lossy(&out);
        assert!(!out.contains("HTTP/1.1 2"), "{what}: {out}");
    }
    // Over TLS: half a handshake, or a whole one and then nothing.
    let mut c = raw::Client::connect(gw.https).await;
    c.send([0x16, 0x03, 0x01, 0x02, 0x00]).await;
    c.until_closed_within(TEN_SECONDS, "half a TLS handshake")
        .await;
    for alpn in [&b"http/1.1"[..], b"h2"] {
        raw::Client::over(tls_connect(&gw, &[alpn]).await)
            .until_closed_within(
                TEN_SECONDS,
                &format!("TLS ({}) then nothing", String::from_utf8_lossy(alpn)),
            )
            .await;
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "limits: {{idle_timeout: 1s, header_read_timeout: 60s}}\n{}",
        routes(&up.url())
    ))
    .await;
    let mut c = raw::Client::connect(gw.http).await;
    c.send(raw::get_req("/public/a")).await;
    let r = guard(10, c.try_response(false)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(up.count(), 1);
    // Then silence: the gateway closes the connection (well before the header timeout).
    let rest = c
        .until_closed_within(TEN_SECONDS, "idle keep-alive connection")
        .await;
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn oversized_heads_are_431() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "limits: {{max_header_bytes: 8KiB, max_headers: 20}}\n{}",
        routes(&up.url())
    ))
    .await;
    let big = format!(
        "GET /public/big HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let out = raw::until_close(gw.http, big.as_bytes(), Duration::from_secs(10)).await;
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 431"), "{out}");

    let many: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req_text =
        format!("GET /public/many HTTP/1.1\r\nHost: localhost\r\n{many}Connection: close\r\n\r\n");
    let out = raw::until_close(gw.http, req_text.as_bytes(), Duration::from_secs(10)).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");

    // Within the limits the same route works.
    let r = get(&gw.url("/public/ok")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(up.count(), 1, "{:?}", up.requests());

    // HTTP/2: a header list over the limit is refused too.
    let url = format!("https://localhost:{}/public/h2big", gw.https.port());
    let b = req("GET", &url).header("x-big", "a".repeat(64 * 1024));
    let tls = tls_connect(&gw, &[b"h2"]).await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    match guard(
        10,
        sender.send_request(b.body(Full::<Bytes>::default()).unwrap()),
    )
    .await
    {
        Ok(resp) => assert_eq!(resp.status(), 431),
        Err(e) => eprintln!("h2 oversized head refused at the protocol level: {e}"),
    }
    assert_eq!(up.count(), 1, "{:?}", up.requests());
}

#[tokio::test]
async fn auth_bodies_over_the_limit_are_413_and_not_read_to_the_end() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&auth_config(
        "",
        &format!("limits: {{auth_body_bytes: 1KiB}}\n{}", routes(&up.url())),
    ))
    .await;
    let big = json!({"email": "a@example.com", "password": "x".repeat(2000)});
    let r = post_json(&gw.url("/api/auth/login"), &big, &[]).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.json()["detail"].is_string());

    // An endless chunked body: the gateway answers 413 (or hangs up) long before 10 MB.
    let s = TcpStream::connect(gw.http).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    wr.write_all(
        b"POST /api/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = answered.clone();
    let writer = tokio::spawn(async move {
        let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, "x".repeat(16 * 1024));
        let mut sent = 0usize;
        while sent < 10 * 1024 * 1024 && !flag.load(Ordering::SeqCst) {
            if wr.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
            sent += 16 * 1024;
        }
        sent
    });
    let mut out = Vec::new();
    guard(30, async {
        let mut buf = [0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    answered.store(true, Ordering::SeqCst);
                }
            }
        }
    })
    .await;
    answered.store(true, Ordering::SeqCst);
    let sent = guard(30, writer).await.unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(sent < 10 * 1024 * 1024, "the gateway read all {sent} bytes");
    assert_eq!(up.count(), 0);
}

/// An HTTP/1.1 connection that sends requests one after another.
async fn h1_conn(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
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
    let resp = sender.send_request(r).await?;
    let (_, r) = read_resp(resp).await;
    Ok(r.status)
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "limits: {{max_connections: 5}}\n{}",
        routes(&up.url())
    ))
    .await;
    // Five working keep-alive connections. The readiness probe's connection may still hold a
    // slot for a moment after it was dropped, so a refused one is retried (bounded).
    let mut held = Vec::new();
    for i in 0..5 {
        let mut tries = 0;
        loop {
            let mut c = h1_conn(gw.http).await;
            if let Ok(status) = guard(10, h1_get(&mut c, &format!("/public/{i}"))).await {
                assert_eq!(status, 200);
                held.push(c);
                break;
            }
            tries += 1;
            assert!(tries < 200, "connection {i} never got a slot");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let before = up.count();
    // The sixth is closed without an answer.
    let mut sixth = h1_conn(gw.http).await;
    assert!(
        guard(10, h1_get(&mut sixth, "/public/sixth"))
            .await
            .is_err()
    );
    assert_eq!(up.count(), before);
    // The five still work.
    for (i, c) in held.iter_mut().enumerate() {
        assert_eq!(
            guard(10, h1_get(c, &format!("/public/again{i}")))
                .await
                .unwrap(),
            200
        );
    }
    // Closing one frees its slot.
    held.pop();
    let mut tries = 0;
    loop {
        let mut c = h1_conn(gw.http).await;
        if guard(10, h1_get(&mut c, "/public/freed")).await.is_ok() {
            break;
        }
        tries += 1;
        assert!(tries < 200, "the freed slot was never reused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!up.requests().iter().any(|s| s.uri == "/public/sixth"));
}

#[tokio::test]
async fn websocket_tunnels_count_against_the_connection_limit() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "limits: {{max_connections: 2}}\nroutes:\n  - {{path: /ws, upstream: '{u}', auth: public}}\n  - {{path: /public, upstream: '{u}', auth: public}}\n",
        u = up.url()
    ))
    .await;
    // Two WebSockets fill the limit, and keep it filled after the upgrade.
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let mut tries = 0;
        loop {
            let tcp = TcpStream::connect(gw.http).await.unwrap();
            match guard(
                10,
                tokio_tungstenite::client_async(format!("ws://{}/ws", gw.http), tcp),
            )
            .await
            {
                Ok((ws, _)) => {
                    sockets.push(ws);
                    break;
                }
                Err(_) => {
                    tries += 1;
                    assert!(tries < 200, "no slot for a websocket");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    // Both slots are held by the tunnels: a third connection is refused.
    let mut third = h1_conn(gw.http).await;
    assert!(
        guard(10, h1_get(&mut third, "/public/third"))
            .await
            .is_err(),
        "a connection beyond the limit was served while two tunnels were open"
    );
    // The tunnels still work; closing one frees its slot.
    let ws = &mut sockets[0];
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));
    let mut closed = sockets.remove(0);
    closed.close(None).await.unwrap();
    drop(closed);
    let mut tries = 0;
    loop {
        let mut c = h1_conn(gw.http).await;
        if guard(10, h1_get(&mut c, "/public/freed")).await.is_ok() {
            break;
        }
        tries += 1;
        assert!(tries < 250, "the closed tunnel's slot was never released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn idle_websocket_tunnels_are_closed() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "limits: {{idle_timeout: 1s}}\nroutes:\n  - {{path: /ws, upstream: '{}', auth: public}}\n",
        up.url()
    ))
    .await;
    let tcp = TcpStream::connect(gw.http).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", gw.http), tcp)
        .await
        .unwrap();
    ws.send(Message::text("alive")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("alive"));
    // Then silence: the gateway closes the tunnel (the stream ends) instead of holding the
    // connection's slot forever. The guard only keeps a broken build from hanging.
    guard(20, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => break,
                Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
}

/// An upstream that holds every request until the test releases it, counting how many it holds
/// at once.
struct Gate {
    addr: SocketAddr,
    in_flight: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
    release: Arc<tokio::sync::Semaphore>,
}

async fn gate_upstream() -> Gate {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gate = Gate {
        addr: l.local_addr().unwrap(),
        in_flight: Arc::default(),
        max: Arc::default(),
        done: Arc::default(),
        release: Arc::new(tokio::sync::Semaphore::new(0)),
    };
    let (in_flight, max, done, release) = (
        gate.in_flight.clone(),
        gate.max.clone(),
        gate.done.clone(),
        gate.release.clone(),
    );
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (in_flight, max, done, release) = (
                in_flight.clone(),
                max.clone(),
                done.clone(),
                release.clone(),
            );
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let (in_flight, max, done, release) = (
                        in_flight.clone(),
                        max.clone(),
                        done.clone(),
                        release.clone(),
                    );
                    async move {
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        max.fetch_max(now, Ordering::SeqCst);
                        release.acquire().await.unwrap().forget();
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        done.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    gate
}

#[tokio::test]
async fn h2_streams_beyond_the_limit_wait_their_turn() {
    let gate = gate_upstream().await;
    let gw = Gateway::start(&format!(
        "limits: {{h2_max_concurrent_streams: 2}}\nroutes:\n  - {{path: /, upstream: 'http://{}', auth: public}}\n",
        gate.addr
    ))
    .await;
    let tls = tls_connect(&gw, &[b"h2"]).await;
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let base = format!("https://localhost:{}", gw.https.port());
    // One request first, released at once: by its answer the client has the server's SETTINGS.
    // (Streams opened before them may be refused with REFUSED_STREAM, RFC 9113 §6.5.3.)
    let mut first = sender.clone();
    let warmup = tokio::spawn(async move {
        let r = first
            .send_request(
                req("GET", &format!("{base}/warmup"))
                    .body(Full::<Bytes>::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        read_resp(r).await.1.status
    });
    wait_until("the warm-up request", || {
        gate.in_flight.load(Ordering::SeqCst) == 1
    })
    .await;
    gate.release.add_permits(1);
    assert_eq!(guard(20, warmup).await.unwrap(), 200);
    gate.max.store(0, Ordering::SeqCst);
    gate.done.store(0, Ordering::SeqCst);
    let base = format!("https://localhost:{}", gw.https.port());
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let mut sender = sender.clone();
            let url = format!("{base}/held/{i}");
            tokio::spawn(async move {
                let r = sender
                    .send_request(req("GET", &url).body(Full::<Bytes>::default()).unwrap())
                    .await
                    .unwrap();
                read_resp(r).await.1.status
            })
        })
        .collect();
    // Two streams reach the upstream; the others wait on the client for a free stream.
    wait_until("two requests at the upstream", || {
        gate.in_flight.load(Ordering::SeqCst) == 2
    })
    .await;
    // Release them one at a time; each finished stream lets one more in.
    for n in 1..=6 {
        gate.release.add_permits(1);
        wait_until("a released request to finish", || {
            gate.done.load(Ordering::SeqCst) == n
        })
        .await;
        assert!(gate.max.load(Ordering::SeqCst) <= 2);
    }
    for c in calls {
        assert_eq!(guard(20, c).await.unwrap(), 200);
    }
    assert_eq!(gate.max.load(Ordering::SeqCst), 2);
}

// ---- security headers ----

fn assert_json_headers(r: &Resp, what: &str) {
    assert_eq!(
        r.header("cache-control").as_deref(),
        Some("no-store"),
        "{what}"
    );
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff"),
        "{what}"
    );
}

fn assert_html_headers(r: &Resp, what: &str) {
    assert!(
        r.header("content-type")
            .is_some_and(|v| v.starts_with("text/html")),
        "{what}: {:?}",
        r.headers
    );
    let csp = r.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(csp.contains("default-src"), "{what}: {csp}");
    assert_eq!(
        r.header("x-frame-options").as_deref(),
        Some("DENY"),
        "{what}"
    );
    assert!(r.header("referrer-policy").is_some(), "{what}");
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff"),
        "{what}"
    );
}

#[tokio::test]
async fn gateway_responses_carry_security_headers() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&auth_config(
        "",
        &format!("tls: {{hsts_max_age: 1d}}\n{}", routes(&up.url())),
    ))
    .await;
    let s = signup(&gw, "headers@example.com", PW).await;
    assert_json_headers(&s.resp, "signup");
    let l = login(&gw, "headers@example.com", PW).await;
    assert_json_headers(&l.resp, "login");
    assert_json_headers(&refresh(&gw, &l.refresh).await, "refresh");
    let me = get_with(
        &gw.url("/api/auth/me"),
        &[("authorization", &bearer(&s.access))],
    )
    .await;
    assert_eq!(me.status, 200);
    assert_json_headers(&me, "me");
    for (what, r) in [
        ("401 on /me", get(&gw.url("/api/auth/me")).await.unwrap()),
        ("401 on a route", get(&gw.url("/app")).await.unwrap()),
        ("404", get(&gw.url("/api/auth/nope")).await.unwrap()),
        (
            "422",
            post_json(&gw.url("/api/auth/login"), &json!({"email": 1}), &[]).await,
        ),
    ] {
        assert!(r.status >= 400, "{what}");
        assert_json_headers(&r, what);
    }
    let html = [("accept", "text/html")];
    for (what, path) in [
        ("login page", "/api/auth/login"),
        ("signup page", "/api/auth/signup"),
        ("HTML 404", "/api/auth/nope"),
    ] {
        let r = get_with(&gw.url(path), &html).await;
        assert_html_headers(&r, what);
    }

    // HSTS on TLS only.
    let r = https_call(&gw, "GET", "/api/auth/me", &[], None).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("strict-transport-security").as_deref(),
        Some("max-age=86400")
    );
    let r = https_call(&gw, "GET", "/public/x", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("strict-transport-security").as_deref(),
        Some("max-age=86400")
    );
    let r = get(&gw.url("/public/x")).await.unwrap();
    assert!(r.header("strict-transport-security").is_none());
}
