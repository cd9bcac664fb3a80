//! The built-in upstream client (`src/proxy/http1_client.rs`) against its reference, hyper's client
//! (`upstream.builtin_client: false`): the same hostile upstream answers, served once through
//! each, on both serving paths. The gateway's client must see the same status class, body and
//! hop-by-hop handling either way; where the two clients differ today, each one's behaviour is
//! asserted as it is ([`KNOWN`]), so a change on either side shows here.
//! `GATEWAY_TEST_SHOW_CLIENTS=1` prints what each client gave for every case.

use std::time::Duration;

use crate::raw::*;
use crate::util::*;

/// One hostile upstream answer: the path it is served on and what the upstream does.
struct Case {
    name: &'static str,
    act: fn(&RawSeen) -> Act,
    /// The case answers the follow-up request too (otherwise: a plain 200 `next`).
    next_too: bool,
}

fn bytes(b: &[u8]) -> Vec<u8> {
    b.to_vec()
}

/// The hostile answers. Each case gets its own upstream, so a connection one answer leaves in
/// a bad state is only ever reused by that case's follow-up request.
fn cases() -> Vec<Case> {
    vec![
        Case {
            next_too: false,
            name: "plain",
            act: |_| reply(ok("hello")),
        },
        Case {
            next_too: false,
            name: "duplicate-content-length-same",
            act: |_| {
                reply(bytes(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
                ))
            },
        },
        Case {
            next_too: false,
            name: "duplicate-content-length-differing",
            act: |_| {
                reply(bytes(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                ))
            },
        },
        Case {
            next_too: false,
            name: "content-length-list",
            act: |_| {
                reply(bytes(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
                ))
            },
        },
        Case {
            next_too: false,
            name: "bad-content-length",
            act: |_| reply(bytes(b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello")),
        },
        Case {
            next_too: false,
            name: "content-length-and-chunked",
            act: |_| {
                reply(bytes(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                ))
            },
        },
        Case {
            next_too: false,
            name: "chunk-extensions",
            act: |_| {
                reply(bytes(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0;x\r\n\r\n",
                ))
            },
        },
        Case {
            next_too: false,
            name: "chunked-trailers",
            act: |_| {
                reply(bytes(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n",
                ))
            },
        },
        Case {
            next_too: false,
            name: "chunk-size-overflow",
            act: |_| {
                reply(bytes(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
                ))
            },
        },
        Case {
            next_too: false,
            name: "chunk-size-invalid",
            act: |_| {
                reply(bytes(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
                ))
            },
        },
        Case {
            next_too: false,
            name: "transfer-encoding-gzip-only",
            act: |_| {
                reply_close(bytes(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello",
                ))
            },
        },
        Case {
            next_too: false,
            name: "obs-fold",
            act: |_| {
                reply(bytes(
                    b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 5\r\n\r\nhello",
                ))
            },
        },
        Case {
            next_too: false,
            name: "huge-header",
            act: |_| {
                let mut b = bytes(b"HTTP/1.1 200 OK\r\nX-Big: ");
                b.extend(std::iter::repeat_n(b'a', 200 * 1024));
                b.extend_from_slice(b"\r\nContent-Length: 5\r\n\r\nhello");
                reply(b)
            },
        },
        Case {
            next_too: false,
            name: "connection-listed",
            act: |_| {
                reply(bytes(
                    b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nX-App: yes\r\nContent-Length: 5\r\n\r\nhello",
                ))
            },
        },
        Case {
            next_too: false,
            name: "early-close",
            act: |_| reply_close(bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel")),
        },
        Case {
            next_too: false,
            name: "close-delimited",
            act: |_| reply_close(bytes(b"HTTP/1.1 200 OK\r\n\r\nhello")),
        },
        Case {
            next_too: false,
            name: "no-answer",
            act: |_| hang_up(),
        },
        Case {
            next_too: false,
            name: "interim-103",
            act: |_| {
                reply(bytes(
                    b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                ))
            },
        },
        Case {
            next_too: false,
            name: "no-content-with-body",
            act: |_| {
                reply(bytes(
                    b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
                ))
            },
        },
        Case {
            next_too: false,
            name: "not-modified-with-body",
            act: |_| {
                reply(bytes(
                    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello",
                ))
            },
        },
        Case {
            next_too: false,
            name: "http10-keep-alive",
            act: |_| {
                reply(bytes(
                    b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello",
                ))
            },
        },
        Case {
            next_too: false,
            name: "slow-head",
            act: |_| {
                trickle(
                    vec![
                        bytes(b"HTTP/1.1 200 OK\r\nCont"),
                        bytes(b"ent-Length: 5\r\n"),
                        bytes(b"\r\nhel"),
                        bytes(b"lo"),
                    ],
                    Duration::from_millis(150),
                )
            },
        },
        Case {
            next_too: false,
            name: "bare-lf-head",
            act: |_| reply(bytes(b"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello")),
        },
        Case {
            next_too: false,
            name: "status-999",
            act: |_| reply(bytes(b"HTTP/1.1 999 Odd\r\nContent-Length: 5\r\n\r\nhello")),
        },
        Case {
            next_too: false,
            name: "status-two-digits",
            act: |_| reply(bytes(b"HTTP/1.1 20 OK\r\nContent-Length: 5\r\n\r\nhello")),
        },
        Case {
            next_too: false,
            name: "http2-status-line",
            act: |_| reply(bytes(b"HTTP/2.0 200 OK\r\nContent-Length: 5\r\n\r\nhello")),
        },
        Case {
            next_too: false,
            name: "not-http",
            act: |_| reply_close(bytes(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")),
        },
        Case {
            next_too: false,
            name: "switching-protocols-unasked",
            act: |_| {
                reply(bytes(
                    b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
                ))
            },
        },
        Case {
            next_too: false,
            name: "129-headers",
            act: |_| reply(many_headers(129)),
        },
        Case {
            next_too: false,
            name: "300-headers",
            act: |_| reply(many_headers(300)),
        },
        Case {
            next_too: false,
            name: "status-2000",
            act: |_| reply(bytes(b"HTTP/1.1 2000 OK\r\nContent-Length: 5\r\n\r\nhello")),
        },
        Case {
            next_too: false,
            name: "cut-head",
            act: |_| reply_close(bytes(b"HTTP/1.1 200 OK\r\nContent-Le")),
        },
        // The first request on each connection is answered, the next one is read and the
        // connection closed: the follow-up request finds its pooled connection gone.
        Case {
            next_too: true,
            name: "pooled-connection-lost",
            act: |req| {
                if req.nth == 0 {
                    reply(ok("first"))
                } else {
                    hang_up()
                }
            },
        },
        Case {
            next_too: false,
            name: "space-before-colon",
            act: |_| {
                reply(bytes(
                    b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\nX-App: yes\r\n\r\nhello",
                ))
            },
        },
    ]
}

/// What the gateway's client saw for one case: the answer to the hostile request, then the
/// answer to a plain follow-up request to the same upstream on a new client connection.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    /// Status class (`2xx`...), `closed` (no answer) or `hang` (nothing within the wait).
    class: String,
    body: String,
    /// Response headers the upstream sent that are hop-by-hop or odd, as the client got them.
    headers: Vec<String>,
    /// The follow-up request's status class and body.
    next: (String, String),
}

/// Headers of the hostile answers worth comparing.
const WATCHED: [&str; 12] = [
    "content-length",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "x-secret",
    "x-app",
    "x-folded",
    "x-sum",
    "trailer",
    "transfer-encoding",
    "link",
];

/// Sends a GET of `path` on `conn` (a new connection when there is none) and reads the answer.
/// `conn` is left empty unless the answer was whole, so the next request reuses the client
/// connection (and so the serving worker and its upstream pool) whenever it can.
async fn one(gw: &Gateway, conn: &mut Option<Client>, path: &str) -> (String, String, Vec<String>) {
    let mut c = match conn.take() {
        Some(c) => c,
        None => Client::connect(gw.http).await,
    };
    c.send(get_req(path)).await;
    let read = async {
        let head = c.r.head().await?;
        let head = String::from_utf8_lossy(&head).into_owned();
        let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
        let headers = header_lines(&head);
        // What the gateway sent may itself be odd (a repeated or listed Content-Length): read
        // it leniently and say so in the body.
        let lengths: Vec<&str> = values(&headers, "content-length")
            .into_iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut whole = false;
        let body = if status == 204 || status == 304 || (100..200).contains(&status) {
            whole = status != 101;
            Vec::new()
        } else if is_chunked(&headers) {
            let body = c.r.chunked().await.map(|(b, _)| b);
            whole = body.is_some();
            body.unwrap_or_else(|| b"<bad chunked body>".to_vec())
        } else if let Some(first) = lengths.first() {
            if lengths.iter().any(|l| l != first) {
                b"<differing content-lengths>".to_vec()
            } else {
                let n: usize = first.parse().ok()?;
                let body = c.r.exact(n).await;
                whole = body.is_some();
                body.unwrap_or_else(|| b"<cut short>".to_vec())
            }
        } else {
            c.r.rest_until_eof().await
        };
        Some((status, headers, body, whole))
    };
    match tokio::time::timeout(Duration::from_secs(4), read).await {
        Err(_) => ("hang".into(), String::new(), Vec::new()),
        Ok(None) => ("closed".into(), String::new(), Vec::new()),
        Ok(Some((status, headers, body, whole))) => {
            if whole {
                *conn = Some(c);
            }
            let mut watched: Vec<String> = headers
                .iter()
                .filter(|(k, _)| WATCHED.contains(&k.as_str()))
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            watched.sort();
            // The gateway's own error answers carry a JSON detail.
            let body = match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(v) if status >= 400 => v["detail"].as_str().unwrap_or("").to_owned(),
                _ => String::from_utf8_lossy(&body).into_owned(),
            };
            (format!("{}xx", status / 100), body, watched)
        }
    }
}

/// Runs every case through a gateway with the given serving path and upstream client.
async fn run(fast: bool, builtin: bool, upstreams: &[RawUpstream]) -> Vec<Seen> {
    let mut routes = String::from("routes:\n");
    for (i, up) in upstreams.iter().enumerate() {
        routes.push_str(&format!(
            "  - {{path: /c{i}, upstream: '{}', auth: public}}\n",
            up.url()
        ));
    }
    let gw = Gateway::start(&format!(
        "listen: {{http: 127.0.0.1:0, https: 127.0.0.1:0, fast_path: {fast}}}\n\
         upstream: {{response_timeout: 2s, builtin_client: {builtin}}}\n{routes}"
    ))
    .await;
    let mut out = Vec::new();
    for i in 0..upstreams.len() {
        let mut conn = None;
        let (class, body, headers) = one(&gw, &mut conn, &format!("/c{i}/case")).await;
        let (next_class, next_body, _) = one(&gw, &mut conn, &format!("/c{i}/next")).await;
        out.push(Seen {
            class,
            body,
            headers,
            next: (next_class, next_body),
        });
    }
    out
}

/// Where the two clients differ today: (case, serving path is fast, what the built-in client
/// gives, what hyper's gives), as `class body | headers | next`; ` || ` separates outcomes
/// that are both right for a case whose result depends on timing.
const KNOWN: &[(&str, bool, &str, &str)] = &[
    // `Content-Length: 5, 5`: the built-in client refuses it (502); hyper's takes it as 5, and on
    // the general path the client even gets the listed value back as it was.
    (
        "content-length-list",
        true,
        "5xx Upstream unavailable | content-length: 33 | 2xx next",
        "2xx hello | content-length: 5 | 2xx next",
    ),
    (
        "content-length-list",
        false,
        "5xx Upstream unavailable | content-length: 33 | 2xx next",
        "2xx hello | content-length: 5, 5 | 2xx next",
    ),
    // Content-Length and chunked together: the built-in client reads the chunked body (RFC 9112
    // section 6.3), hyper's the Content-Length (a truncated "hel").
    // On the fast path with hyper's client, the follow-up request on the same client connection
    // then gets no answer at all: the connection closes.
    (
        "content-length-and-chunked",
        true,
        "2xx hello | transfer-encoding: chunked | 2xx next",
        "2xx hel | content-length: 3 | closed ",
    ),
    (
        "content-length-and-chunked",
        false,
        "2xx hello | transfer-encoding: chunked | 2xx next",
        "2xx hel | content-length: 3 | 2xx next",
    ),
    // A body cut short by a close: whether the client gets a 200 head and a short body, a 502
    // (fast path) or nothing at all (general path) depends on whether the close is seen before
    // the first body byte goes out, which is timing with either client. Never a whole body.
    ("early-close", true, EARLY_CLOSE_FAST, EARLY_CLOSE_FAST),
    (
        "early-close",
        false,
        EARLY_CLOSE_GENERAL,
        EARLY_CLOSE_GENERAL,
    ),
    // A 101 to a request that asked for no upgrade: a broken upstream, 502 with either client
    // (passed on, it would leave the client with a bare 101 and no protocol to speak).
    (
        "switching-protocols-unasked",
        true,
        "5xx Upstream unavailable | content-length: 33 | 2xx next",
        "5xx Upstream unavailable | content-length: 33 | 2xx next",
    ),
    (
        "switching-protocols-unasked",
        false,
        "5xx Upstream unavailable | content-length: 33 | 2xx next",
        "5xx Upstream unavailable | content-length: 33 | 2xx next",
    ),
    // A pooled connection the upstream closes after reading the request: the built-in client
    // sends an idempotent request again on a new connection, hyper's answers 502.
    (
        "pooled-connection-lost",
        true,
        "2xx first | content-length: 5 | 2xx first",
        "2xx first | content-length: 5 | 5xx Upstream unavailable",
    ),
    (
        "pooled-connection-lost",
        false,
        "2xx first | content-length: 5 | 2xx first",
        "2xx first | content-length: 5 | 5xx Upstream unavailable",
    ),
];

const EARLY_CLOSE_FAST: &str = "2xx <cut short> | content-length: 10 | 2xx next || 5xx Upstream unavailable | content-length: 33 | 2xx next";
const EARLY_CLOSE_GENERAL: &str =
    "2xx <cut short> | content-length: 10 | 2xx next || closed  |  | 2xx next";

fn summary(s: &Seen) -> String {
    format!(
        "{} {} | {} | {} {}",
        s.class,
        s.body,
        s.headers.join(", "),
        s.next.0,
        s.next.1
    )
}

#[tokio::test]
async fn the_builtin_client_answers_like_hypers_client_to_hostile_upstreams() {
    let cases = cases();
    let mut upstreams = Vec::new();
    for case in &cases {
        let (act, next_too) = (case.act, case.next_too);
        upstreams.push(
            RawUpstream::start(move |req| {
                if req.target.ends_with("/next") && !next_too {
                    reply(ok("next"))
                } else {
                    act(req)
                }
            })
            .await,
        );
    }
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for fast in [true, false] {
        let builtin = run(fast, true, &upstreams).await;
        let hyper = run(fast, false, &upstreams).await;
        for ((case, b), h) in cases.iter().zip(&builtin).zip(&hyper) {
            let (b, h) = (summary(b), summary(h));
            report.push(format!(
                "{} fast={fast}\n  builtin: {b}\n  hyper:   {h}",
                case.name
            ));
            match KNOWN
                .iter()
                .find(|(name, f, _, _)| *name == case.name && *f == fast)
            {
                Some((_, _, want_b, want_h)) => {
                    let one_of = |got: &str, want: &str| want.split(" || ").any(|w| w == got);
                    if !one_of(&b, want_b) || !one_of(&h, want_h) {
                        failures.push(format!(
                            "{} fast={fast}: known difference changed\n  builtin: {b}\n  hyper:   {h}",
                            case.name
                        ));
                    }
                }
                None if b != h => failures.push(format!(
                    "{} fast={fast}: the clients differ\n  builtin: {b}\n  hyper:   {h}",
                    case.name
                )),
                None => {}
            }
        }
    }
    if std::env::var_os("GATEWAY_TEST_SHOW_CLIENTS").is_some() {
        eprintln!("{}", report.join("\n"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A request with a body always goes over hyper's client. An upstream that answers it with a
/// 101 the client never asked for is broken: the client gets a 502, not a bare 101 that leaves
/// its connection with no protocol to speak. On both serving paths.
#[tokio::test]
async fn a_101_to_a_request_that_asked_no_upgrade_is_a_502() {
    let up = RawUpstream::start(|_| {
        reply(bytes(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        ))
    })
    .await;
    for fast in [true, false] {
        let gw = Gateway::start(&format!(
            "listen: {{http: 127.0.0.1:0, https: 127.0.0.1:0, fast_path: {fast}}}\n\
             routes:\n  - {{path: /, upstream: '{}', auth: public}}\n",
            up.url()
        ))
        .await;
        let mut c = Client::connect(gw.http).await;
        c.send(
            "POST /form HTTP/1.1\r\nHost: app.test\r\nContent-Type: text/plain\r\n\
             Content-Length: 5\r\n\r\nhello",
        )
        .await;
        let w = c.try_response(false).await.expect("an answer");
        assert_eq!(w.status, 502, "fast path {fast}: {}", w.head);
        assert!(!w.has("upgrade"), "fast path {fast}: {}", w.head);
        assert_eq!(w.json()["detail"], "Upstream unavailable");
    }
}
