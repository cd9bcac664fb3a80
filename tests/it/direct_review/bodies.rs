//! Requests with small bodies on both HTTP/1.1 serving paths: the fast path reads a body framed
//! by one `Content-Length` of up to 64 KiB itself, and its planned forward sends POST, PUT,
//! PATCH and DELETE with a bearer token (or on a public route) head and body in one write; a
//! cookie session's unsafe request, and everything else, goes the general way. Either way the
//! upstream must get what the general path sends, body included.

use std::time::Duration;

use super::*;

/// `method path` with `headers` and a body framed by its Content-Length.
fn with_body(method: &str, path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The body the upstream received for the last request, if one arrived since `before`.
fn last_body(up: &RawUpstream, before: usize) -> Option<Vec<u8>> {
    up.requests().get(before).map(|r| r.body.clone())
}

/// A request, its status, and the body the upstream must get (`None`: nothing forwarded).
type Case<'a> = (Vec<u8>, u16, Option<&'a [u8]>);

#[tokio::test]
async fn small_bodies_reach_the_upstream_alike_on_both_paths() {
    let up = ok_upstream().await;
    let pair = Pair::start(&auth_config("", &routes(&up.url()))).await;
    let b = BEARER;
    let json = br#"{"name":"x","list":[1,2,3]}"#.to_vec();
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let big: Vec<u8> = (0..=255u8).cycle().take(64 * 1024).collect();
    let over: Vec<u8> = vec![b'a'; 64 * 1024 + 1];
    let session = "Cookie: gw_access=<token>; gw_csrf=c\r\n";
    let cases: Vec<Case> = vec![
        (with_body("POST", "/app", b, &json), 200, Some(&json)),
        (
            with_body(
                "POST",
                "/app",
                &format!("Content-Type: application/octet-stream\r\n{b}"),
                &binary,
            ),
            200,
            Some(&binary),
        ),
        (
            with_body("PUT", "/users/<sub>/doc", b, &json),
            200,
            Some(&json),
        ),
        (with_body("PATCH", "/api/x?y=1", b, &json), 200, Some(&json)),
        (with_body("DELETE", "/app", b, b""), 200, Some(b"")),
        (with_body("POST", "/app", b, b""), 200, Some(b"")),
        (with_body("POST", "/only-post", "", &json), 200, Some(&json)),
        (
            with_body("POST", "/public", "X-Auth-User-Id: spoofed\r\n", &json),
            200,
            Some(&json),
        ),
        (with_body("POST", "/app", b, &big), 200, Some(&big)),
        // Over the fast path's bound: hyper reads it, the same bytes arrive.
        (with_body("POST", "/app", b, &over), 200, Some(&over)),
        // Refusals before anything is forwarded.
        (with_body("POST", "/app", "", &json), 401, None),
        (with_body("POST", "/admin", b, &json), 403, None),
        (with_body("POST", "/users/other/doc", b, &json), 403, None),
        (
            with_body("POST", "/app", "Authorization: Bearer garbage\r\n", &json),
            401,
            None,
        ),
        // A cookie session's unsafe request needs its CSRF token (the general path's check).
        (with_body("POST", "/app", session, &json), 403, None),
        (
            with_body(
                "POST",
                "/app",
                &format!("{session}X-CSRF-Token: forged\r\n"),
                &json,
            ),
            403,
            None,
        ),
        // A bearer token with cookies: no CSRF needed, the cookies stripped.
        (
            with_body(
                "POST",
                "/app",
                &format!("{b}Cookie: gw_csrf=c; k=v\r\n"),
                &json,
            ),
            200,
            Some(&json),
        ),
        // Methods the planned forward leaves to the general path.
        (with_body("OPTIONS", "/app", b, &json), 200, Some(&json)),
        (with_body("TRACE", "/public", "", b""), 200, Some(b"")),
    ];
    for (raw, status, body) in &cases {
        let text = String::from_utf8_lossy(&raw[..raw.len().min(200)]).into_owned();
        let mut bodies = Vec::new();
        let before = up.requests().len();
        let o = pair.agree(&up, raw).await;
        let requests = up.requests();
        for r in &requests[before..] {
            bodies.push(r.body.clone());
        }
        assert_eq!(o.status(), *status, "{text:?}: {o:#?}");
        match body {
            Some(want) => {
                assert_eq!(bodies.len(), 2, "{text:?}: both gateways forward");
                for got in &bodies {
                    assert!(
                        got == want,
                        "{text:?}: the upstream got {} bytes",
                        got.len()
                    );
                }
                let headers = o.up_headers();
                assert_eq!(
                    values(&headers, "content-length"),
                    [want.len().to_string()],
                    "{text:?}"
                );
                assert!(
                    values(&headers, "cookie")
                        .iter()
                        .all(|c| !c.contains("gw_"))
                );
            }
            None => assert!(bodies.is_empty(), "{text:?}: forwarded"),
        }
    }
    // The comparison means something: the fast gateway's planned forward took the POST (it
    // keeps the client's header order; the general path groups a name's values).
    pair.agree_planned(
        &up,
        &with_body("POST", "/app", &format!("{DUPS}{b}"), &json),
    )
    .await;
}

/// Bytes after a body are the next request, with its own credentials, on a kept-alive
/// connection: and several requests with bodies follow each other.
#[tokio::test]
async fn bytes_after_a_body_are_a_request_of_their_own() {
    let up = ok_upstream().await;
    let pair = Pair::start(&auth_config("", &routes(&up.url()))).await;
    for (gw, (_, token)) in [&pair.fast, &pair.general].into_iter().zip(&pair.users) {
        let before = up.requests().len();
        let mut c = Client::connect(gw.http).await;
        let auth = format!("Authorization: Bearer {token}\r\n");
        let smuggled = "GET /admin HTTP/1.1\r\nHost: localhost\r\nX-Auth-Roles: admin\r\nAccept: application/json\r\n\r\n";
        let mut bytes = Vec::new();
        bytes.extend(with_body("POST", "/app", &auth, b"first"));
        bytes.extend(with_body("PUT", "/public", "", smuggled.as_bytes()));
        bytes.extend(smuggled.as_bytes());
        c.send(bytes).await;
        let statuses: Vec<u16> = [
            c.try_response(false).await,
            c.try_response(false).await,
            c.try_response(false).await,
        ]
        .into_iter()
        .map(|w| w.map_or(0, |w| w.status))
        .collect();
        assert_eq!(statuses, [200, 200, 401]);
        let seen = up.requests();
        let seen: Vec<(String, Vec<u8>)> = seen[before..]
            .iter()
            .map(|r| (r.method.clone(), r.body.clone()))
            .collect();
        assert_eq!(
            seen,
            [
                ("POST".to_owned(), b"first".to_vec()),
                ("PUT".to_owned(), smuggled.as_bytes().to_vec())
            ]
        );
    }
}

/// A client that stops sending its body gets 408 after `limits.body_timeout`, one that closes
/// its side mid-body 400, and nothing is forwarded.
#[tokio::test]
async fn a_body_cut_short_is_never_forwarded() {
    let up = ok_upstream().await;
    let pair = Pair::start(&auth_config(
        "",
        &format!("limits: {{body_timeout: 300ms}}\n{}", routes(&up.url())),
    ))
    .await;
    for (gw, (_, token)) in [&pair.fast, &pair.general].into_iter().zip(&pair.users) {
        let before = up.requests().len();
        let head = format!(
            "POST /app HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nAccept: application/json\r\nContent-Length: 100\r\n\r\nonly part"
        );
        let mut c = Client::connect(gw.http).await;
        c.send(head.clone()).await;
        let answer = guard(10, c.try_response(false)).await;
        let answer = answer.expect("an answer");
        assert_eq!(answer.status, 408, "{}", answer.head);
        assert!(answer.text().contains("detail"), "{}", answer.text());

        let mut c = Client::connect(gw.http).await;
        c.send(head).await;
        c.r.s.shutdown().await.unwrap();
        let cut = guard(10, c.try_response(false)).await.expect("an answer");
        assert_eq!(cut.status, 400, "{}", cut.head);
        assert_eq!(last_body(&up, before), None, "forwarded");
    }
}

/// A body that arrives in pieces (the head alone first, then parts of several reads each, the
/// last one followed at once by the next request) reaches the upstream whole and in order.
#[tokio::test]
async fn a_body_arriving_in_pieces_is_forwarded_whole() {
    let up = ok_upstream().await;
    let pair = Pair::start(&auth_config("", &routes(&up.url()))).await;
    let body: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    for (gw, (_, token)) in [&pair.fast, &pair.general].into_iter().zip(&pair.users) {
        let before = up.requests().len();
        let mut c = Client::connect(gw.http).await;
        c.send(format!(
            "PUT /app HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ))
        .await;
        for (i, piece) in body.chunks(20_001).enumerate() {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let mut bytes = piece.to_vec();
            if i == 2 {
                bytes.extend_from_slice(b"GET /public HTTP/1.1\r\nHost: localhost\r\n\r\n");
            }
            c.send(bytes).await;
        }
        assert_eq!(c.try_response(false).await.map(|w| w.status), Some(200));
        assert_eq!(c.try_response(false).await.map(|w| w.status), Some(200));
        let seen = up.requests();
        assert_eq!(seen.len(), before + 2);
        assert!(
            seen[before].body == body,
            "{} bytes arrived",
            seen[before].body.len()
        );
        assert_eq!(seen[before + 1].target, "/public");
    }
}
