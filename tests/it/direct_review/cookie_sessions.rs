//! Browser sessions on both HTTP/1.1 serving paths: the planned forward takes a GET whose
//! access cookie is valid, and must then do exactly what the general path does with it (the
//! gateway's cookies removed from the one forwarded `Cookie`, the identity headers set,
//! `Vary: Cookie` on the answer); anything else about cookies it leaves to the general path.

use super::*;

/// The access cookie of the [`Pair`]'s user over plain HTTP, plus the other two session cookies.
const SESSION: &str = "gw_access=<token>; gw_csrf=csrf-value; gw_refresh=refresh-value";

fn cookie(value: &str) -> String {
    format!("Cookie: {value}\r\n")
}

#[tokio::test]
async fn cookie_sessions_get_the_same_answer_and_upstream_head_on_both_paths() {
    let up = ok_upstream().await;
    let pair = Pair::start(&auth_config("", &routes(&up.url()))).await;
    let s = SESSION;
    // (request, status, the Cookie values the upstream must get when forwarded)
    let cases: Vec<(Vec<u8>, u16, &[&str])> = vec![
        (get("/app", &cookie(s)), 200, &[]),
        (get("/app", &cookie(&format!("theme=dark; {s}; lang=en"))), 200, &["theme=dark; lang=en"]),
        // Quotes, an empty name and odd spacing pass as the client wrote each pair.
        (
            get("/app", &cookie(&format!("a=\"b c\";{s};  =v ;noequals; x= y "))),
            200,
            &["a=\"b c\"; =v; x= y"],
        ),
        // Several Cookie lines become one.
        (
            get("/app", "Cookie: gw_access=<token>\r\nCookie: x=1\r\nCookie: gw_csrf=c; y=2\r\n"),
            200,
            &["x=1; y=2"],
        ),
        // The TLS spelling is not the access cookie on plain HTTP (and is stripped all the same).
        (get("/app", &cookie("__Host-gw_access=<token>")), 401, &[]),
        // The first access cookie counts (browsers send the longest path first).
        (get("/app", &cookie("gw_access=garbage; gw_access=<token>")), 401, &[]),
        (get("/app", &cookie("gw_access=<token>; gw_access=garbage")), 200, &[]),
        (get("/app", &cookie("gw_access=")), 401, &[]),
        (get("/app", &cookie("gw_access=garbage; theme=dark")), 401, &[]),
        (get("/app", &format!("Accept: text/html\r\n{}", cookie("gw_access=garbage"))), 303, &[]),
        // A value that is not text is no cookie at all: no session, and nothing forwarded.
        (
            b"GET /public HTTP/1.1\r\nHost: localhost\r\nCookie: gw_access=<token>; t=caf\xc3\xa9\r\n\r\n".to_vec(),
            200,
            &[],
        ),
        (
            b"GET /app HTTP/1.1\r\nHost: localhost\r\nCookie: gw_access=<token>; t=caf\xc3\xa9\r\n\r\n".to_vec(),
            401,
            &[],
        ),
        // Roles, owner paths, strip_prefix and HEAD as for a bearer token.
        (get("/admin", &cookie(s)), 403, &[]),
        (get("/users/<sub>/x", &cookie(&format!("{s}; k=v"))), 200, &["k=v"]),
        (get("/users/other/x", &cookie(s)), 403, &[]),
        (get("/api/x?y", &cookie(s)), 200, &[]),
        (format!("HEAD /app HTTP/1.1\r\nHost: localhost\r\n{}\r\n", cookie(s)).into_bytes(), 200, &[]),
        // A bearer token comes first; the cookies are stripped all the same.
        (get("/app", &format!("{BEARER}{}", cookie("gw_access=garbage; k=v"))), 200, &["k=v"]),
        (get("/app", &format!("Authorization: Bearer garbage\r\n{}", cookie(s))), 401, &[]),
        // Public routes: the session cookies never reach the upstream.
        (get("/public", &cookie(&format!("{s}; k=v"))), 200, &["k=v"]),
        (get("/public", &cookie(s)), 200, &[]),
        // A forged identity next to a cookie session is dropped.
        (get("/app", &format!("X-Auth-User-Id: spoofed\r\n{}", cookie(s))), 200, &[]),
    ];
    for (raw, status, forwarded) in &cases {
        let text = String::from_utf8_lossy(raw).into_owned();
        let o = pair.agree(&up, raw).await;
        assert_eq!(o.status(), *status, "{text:?}: {o:#?}");
        let answer = o.answer.as_ref().unwrap();
        if *status != 200 {
            assert_eq!(o.target(), None, "{text:?}");
            continue;
        }
        let headers = o.up_headers();
        assert_eq!(values(&headers, "cookie"), *forwarded, "{text:?}");
        for (k, v) in &headers {
            assert!(
                !v.contains("gw_"),
                "{text:?}: {k}: {v} reached the upstream"
            );
            assert_ne!(v, "spoofed", "{text:?}: {k}");
        }
        let authenticated = !text.starts_with("GET /public");
        if authenticated {
            assert_eq!(values(&headers, "x-auth-user-id"), ["<sub>"], "{text:?}");
        }
        // Vary: Cookie when the access cookie decided the answer (not for a bearer token, not
        // on a public route).
        let by_cookie = authenticated && !text.contains("Authorization:");
        assert_eq!(
            values(&answer.headers, "vary").contains(&"Cookie"),
            by_cookie,
            "{text:?}: {o:#?}"
        );
    }
    // The comparison means something: the fast gateway did take the planned forward for a
    // cookie session (it keeps the client's header order; the general path groups a name's
    // values).
    let before = up.heads().len();
    let raw = get(
        "/app",
        &format!("X-Dup: 1\r\nX-Mid: m\r\nX-Dup: 2\r\n{}", cookie(s)),
    );
    pair.agree(&up, &raw).await;
    let heads = up.heads();
    let order = |h: &[u8]| -> Vec<String> {
        header_lines(h)
            .into_iter()
            .filter(|(k, _)| k == "x-dup" || k == "x-mid")
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    };
    assert_eq!(order(&heads[before]), ["x-dup=1", "x-mid=m", "x-dup=2"]);
    assert_eq!(order(&heads[before + 1]), ["x-dup=1", "x-dup=2", "x-mid=m"]);
}

#[tokio::test]
async fn cookie_sessions_over_tls_use_the_host_prefixed_names_on_both_paths() {
    let up = ok_upstream().await;
    let pair = Pair::start(&auth_config("", &routes(&up.url()))).await;
    for (raw, status, forwarded) in [
        (
            get(
                "/app",
                &cookie("__Host-gw_access=<token>; __Host-gw_csrf=c; __Host-gw_refresh=r; k=v"),
            ),
            200,
            vec!["k=v"],
        ),
        // The plain-HTTP spelling is not a session over TLS, and is stripped all the same.
        (get("/app", &cookie("gw_access=<token>")), 401, vec![]),
        (
            get("/public", &cookie("gw_access=<token>; k=v")),
            200,
            vec!["k=v"],
        ),
    ] {
        let o = pair.agree_on(&up, &raw, true).await;
        assert_eq!(o.status(), status, "{o:#?}");
        if status == 200 {
            assert_eq!(values(&o.up_headers(), "cookie"), forwarded);
        }
    }
}

#[tokio::test]
async fn behind_a_trusted_tls_proxy_the_tls_cookie_names_count_on_both_paths() {
    let up = ok_upstream().await;
    let pair = Pair::start(&auth_config(
        "",
        &format!("trusted_proxies: ['127.0.0.1/32']\n{}", routes(&up.url())),
    ))
    .await;
    let https = "X-Forwarded-Proto: https\r\nAccept: application/json\r\n";
    for (headers, status, forwarded) in [
        // The proxy's client came over HTTPS: the session is the `__Host-` cookie's.
        (
            format!("{https}{}", cookie("__Host-gw_access=<token>; k=v")),
            200,
            vec!["k=v"],
        ),
        // The plain-HTTP spelling is no session there (and is stripped all the same).
        (
            format!("{https}{}", cookie("gw_access=<token>; k=v")),
            401,
            vec![],
        ),
        // Without the proxy's word, plain HTTP's names.
        (cookie("gw_access=<token>; k=v"), 200, vec!["k=v"]),
    ] {
        let o = pair.agree(&up, &get("/app", &headers)).await;
        assert_eq!(o.status(), status, "{headers:?}: {o:#?}");
        if status == 200 {
            assert_eq!(values(&o.up_headers(), "cookie"), forwarded, "{headers:?}");
        }
    }
}
