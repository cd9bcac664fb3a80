//! HTTP/2 on both serving paths: with `listen.fast_path` on, a bodiless HTTP/2 request that the
//! planned forward can take skips the general pipeline (`App::handle`), as the fast path's
//! HTTP/1.1 requests do. The [`Pair`]'s two gateways get the same HTTP/2 requests (over TLS,
//! ALPN h2); what their upstream received and what the client got must agree.

use bytes::Bytes;
use http_body_util::Full;

use super::*;

/// The TLS session cookies of the [`Pair`]'s user (the access cookie valid).
const SESSION: &str = "__Host-gw_access=<token>; __Host-gw_csrf=c; __Host-gw_refresh=r";

impl Pair {
    /// Sends one HTTP/2 request (`<session>`, `<token>` and `<sub>` filled in per gateway, in
    /// the path and the header values) to each gateway: (fast, general).
    async fn both_h2(
        &self,
        up: &RawUpstream,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &'static [u8],
    ) -> (Outcome, Outcome) {
        let mut out = Vec::new();
        for (gw, (id, token)) in [&self.fast, &self.general].into_iter().zip(&self.users) {
            let fill = |s: &str| {
                s.replace("<session>", SESSION)
                    .replace("<token>", token)
                    .replace("<sub>", id)
            };
            let url = format!("https://localhost:{}{}", gw.https.port(), fill(path));
            let mut b = req(method, &url);
            for (k, v) in headers {
                b = b.header(*k, fill(v));
            }
            let before = up.heads().len();
            let (version, r) = guard(
                20,
                h2_send(gw, b.body(Full::new(Bytes::from_static(body))).unwrap()),
            )
            .await;
            assert_eq!(version, http::Version::HTTP_2);
            let heads = up.heads();
            assert!(
                heads.len() <= before + 1,
                "{method} {path}: sent upstream more than once"
            );
            let answer = Answer {
                status: r.status,
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                        (k.as_str().to_owned(), v)
                    })
                    .collect(),
                body: r.text(),
            };
            out.push(outcome(gw, id, token, heads.get(before), Some(answer)));
        }
        (out[0].clone(), out[1].clone())
    }

    /// [`Pair::both_h2`] for a bodiless GET (or `method`), asserting that the two paths agree;
    /// returns the fast path's outcome.
    async fn agree_h2(
        &self,
        up: &RawUpstream,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Outcome {
        let (fast, general) = self.both_h2(up, method, path, headers, b"").await;
        assert_eq!(
            fast, general,
            "the paths disagree on HTTP/2 {method} {path} {headers:?}"
        );
        fast
    }
}

const BEARER_H2: (&str, &str) = ("authorization", "Bearer <token>");
const JSON: (&str, &str) = ("accept", "application/json");

/// One HTTP/2 request and what it must get: the status, the target the upstream must receive
/// (`None`: nothing may be forwarded), and (when forwarded) the Cookie values it must receive.
struct H2Case {
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    status: u16,
    target: Option<&'static str>,
    cookie: &'static [&'static str],
}

fn h2(
    path: &'static str,
    headers: &[(&'static str, &'static str)],
    status: u16,
    target: Option<&'static str>,
) -> H2Case {
    H2Case {
        method: "GET",
        path,
        headers: headers.to_vec(),
        status,
        target,
        cookie: &[],
    }
}

#[tokio::test]
async fn http2_requests_get_the_same_answer_and_upstream_head_on_both_paths() {
    let up = ok_upstream().await;
    let pair = Pair::start(&auth_config("", &routes(&up.url()))).await;
    let b = BEARER_H2;
    let spoof = [
        ("x-auth-user-id", "spoofed"),
        ("x_auth_roles", "spoofed"),
        ("x-auth-", "spoofed"),
        ("x-forwarded-for", "spoofed"),
        ("x-forwarded-proto", "spoofed"),
        ("x-forwarded-host", "spoofed"),
        ("forwarded", "spoofed"),
        ("x-real-ip", "spoofed"),
        ("x_real_ip", "spoofed"),
        ("x-request-id", "spoofed"),
        ("true-client-ip", "spoofed"),
        ("proxy-authorization", "spoofed"),
        ("te", "trailers"),
        ("x-custom", "kept"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        spoof.iter().chain(extra).copied().collect()
    };
    let cases = vec![
        // Bearer tokens, spoofed identity and forwarding headers, public and required routes.
        h2("/app", &[b], 200, Some("/app")),
        h2("/app", &with(&[b]), 200, Some("/app")),
        h2("/public/x?q=1", &with(&[b]), 200, Some("/public/x?q=1")),
        h2("/public", &with(&[]), 200, Some("/public")),
        h2("/public?", &[], 200, Some("/public?")),
        h2("/%70ublic", &[], 200, Some("/public")),
        h2("/public/%2e%2e/app", &[JSON], 401, None),
        h2("/public/..%2fapp", &[], 400, None),
        // Refused tokens, roles, owner paths, forward_token, strip_prefix, method rules.
        h2("/app", &[JSON], 401, None),
        h2(
            "/app",
            &[("authorization", "Bearer garbage"), JSON],
            401,
            None,
        ),
        h2(
            "/app",
            &[("authorization", "Basic dXNlcjpwdw==")],
            401,
            None,
        ),
        h2("/app", &[("accept", "text/html")], 303, None),
        h2("/admin", &[b, JSON], 403, None),
        h2("/admin", &[b, ("accept", "text/html")], 403, None),
        h2("/users/<sub>/x", &[b], 200, Some("/users/<sub>/x")),
        h2("/users//<sub>/./x", &[b], 200, Some("/users/<sub>/x")),
        h2("/users/other/x", &[b, JSON], 403, None),
        h2("/ft/y", &[b], 200, Some("/ft/y")),
        h2("/api/../api/x?y", &[b], 200, Some("/base/x?y")),
        h2("/only-post", &[b], 200, Some("/only-post")),
        h2("/only-post", &[JSON], 401, None),
        // Hosts: a Host header names the host as on the general path (not :authority).
        h2("/app", &[b, ("host", "admin.test"), JSON], 403, None),
        h2("/app", &[("host", "x.pub.test")], 200, Some("/app")),
        h2("/app", &[b, ("host", "localhost")], 200, Some("/app")),
        // Never forwarded: the auth API, forward-auth, the health endpoints.
        h2("/api/auth/me", &[b], 200, None),
        h2("/api/auth/verify", &[b], 403, None),
        h2("/healthz", &[], 200, None),
        // Error answers: JSON, or an HTML page for a browser navigation.
        h2("/dead", &[b], 502, None),
        h2("/dead", &[("accept", "text/html")], 502, None),
        H2Case {
            method: "HEAD",
            ..h2("/app", &[b], 200, Some("/app"))
        },
        H2Case {
            method: "DELETE",
            ..h2("/app", &[b], 200, Some("/app"))
        },
        // Browser sessions: the access cookie, the gateway's cookies stripped from the one
        // forwarded Cookie, several cookie headers (HTTP/2 may split them) merged.
        H2Case {
            cookie: &["theme=dark; k=v"],
            ..h2(
                "/app",
                &[("cookie", "theme=dark; <session>; k=v")],
                200,
                Some("/app"),
            )
        },
        H2Case {
            cookie: &["x=1; y=2"],
            ..h2(
                "/app",
                &[
                    ("cookie", "__Host-gw_access=<token>"),
                    ("cookie", "x=1"),
                    ("cookie", "__Host-gw_csrf=c; y=2"),
                ],
                200,
                Some("/app"),
            )
        },
        H2Case {
            cookie: &["k=v"],
            ..h2(
                "/users/<sub>/x",
                &[("cookie", "<session>; k=v")],
                200,
                Some("/users/<sub>/x"),
            )
        },
        h2(
            "/app",
            &[("cookie", "<session>"), ("x-auth-user-id", "spoofed")],
            200,
            Some("/app"),
        ),
        h2("/admin", &[("cookie", "<session>"), JSON], 403, None),
        h2(
            "/users/other/x",
            &[("cookie", "<session>"), JSON],
            403,
            None,
        ),
        // The plain-HTTP spelling is no session over TLS; a refused cookie goes the general
        // way (refresh or 401).
        h2("/app", &[("cookie", "gw_access=<token>"), JSON], 401, None),
        h2(
            "/app",
            &[("cookie", "__Host-gw_access=garbage"), JSON],
            401,
            None,
        ),
        h2(
            "/app",
            &[
                ("cookie", "__Host-gw_access=garbage"),
                ("accept", "text/html"),
            ],
            303,
            None,
        ),
        // A bearer token first; the cookies are stripped all the same.
        H2Case {
            cookie: &["k=v"],
            ..h2(
                "/app",
                &[b, ("cookie", "__Host-gw_access=garbage; k=v")],
                200,
                Some("/app"),
            )
        },
        H2Case {
            cookie: &["k=v"],
            ..h2(
                "/public",
                &[("cookie", "<session>; k=v")],
                200,
                Some("/public"),
            )
        },
        // A cookie session's unsafe method needs the CSRF check: the general way.
        H2Case {
            method: "POST",
            ..h2("/app", &[("cookie", "<session>"), JSON], 403, None)
        },
    ];
    for c in &cases {
        let what = format!("HTTP/2 {} {} {:?}", c.method, c.path, c.headers);
        let o = pair.agree_h2(&up, c.method, c.path, &c.headers).await;
        assert_eq!(o.status(), c.status, "{what}: {o:#?}");
        assert_eq!(o.target(), c.target, "{what}: {o:#?}");
        let Some(_) = c.target else { continue };
        let h = o.up_headers();
        for (k, v) in &h {
            assert!(v != "spoofed", "{what}: {k}: {v} reached the upstream");
            assert!(!v.contains("gw_"), "{what}: {k}: {v} reached the upstream");
        }
        let host = values(&h, "host");
        assert_eq!(host.len(), 1, "{what}: {h:?}");
        assert_eq!(values(&h, "x-forwarded-host"), host, "{what}");
        assert_eq!(values(&h, "x-forwarded-for"), ["127.0.0.1"], "{what}");
        assert_eq!(values(&h, "x-real-ip"), ["127.0.0.1"], "{what}");
        assert_eq!(values(&h, "x-forwarded-proto"), ["https"], "{what}");
        assert!(values(&h, "te").is_empty(), "{what}");
        assert_eq!(values(&h, "cookie"), c.cookie, "{what}");
        if c.headers.contains(&("x-custom", "kept")) {
            assert_eq!(values(&h, "x-custom"), ["kept"], "{what}");
        }
        let public = c.target.is_some_and(|t| t.starts_with("/public"))
            || c.headers.contains(&("host", "x.pub.test"));
        let auth = values(&h, "authorization");
        if c.path == "/ft/y" {
            assert_eq!(auth, ["Bearer <token>"], "{what}");
        } else {
            assert!(auth.is_empty(), "{what}: {auth:?}");
        }
        if !public {
            assert_eq!(values(&h, "x-auth-user-id"), ["<sub>"], "{what}");
            // Vary: Cookie when the access cookie decided the answer.
            let by_cookie = !c.headers.iter().any(|(k, _)| *k == "authorization");
            let answer = o.answer.as_ref().unwrap();
            assert_eq!(
                values(&answer.headers, "vary").contains(&"Cookie"),
                by_cookie,
                "{what}: {o:#?}"
            );
        }
    }
}

#[tokio::test]
async fn http2_requests_with_a_body_go_the_general_way_on_both_paths() {
    let up = ok_upstream().await;
    let pair = Pair::start(&auth_config("", &routes(&up.url()))).await;
    for (path, headers, status) in [
        ("/public", vec![("content-type", "text/plain")], 200),
        ("/app", vec![BEARER_H2], 200),
        ("/app", vec![JSON], 401),
    ] {
        let (fast, general) = pair.both_h2(&up, "POST", path, &headers, b"hello").await;
        assert_eq!(fast, general, "POST {path}");
        assert_eq!(fast.status(), status, "POST {path}: {fast:#?}");
    }
    // The three bodies reached the upstream from each gateway (the 401 sent nothing).
    let seen = up.requests();
    assert_eq!(seen.iter().filter(|r| r.body == b"hello").count(), 4);
}

#[tokio::test]
async fn the_fast_gateway_plans_http2_requests_and_the_general_one_does_not() {
    let up = ok_upstream().await;
    let pair = Pair::start(&auth_config("", &routes(&up.url()))).await;
    // The planned forward writes `host` first (where an HTTP/1.1 client puts it) and
    // X-Forwarded-For before X-Real-IP; the general path adds Host to the map last, after
    // the forwarding headers it set (X-Real-IP first). Headers a client sent in HTTP/2 come
    // grouped by name on both paths (hyper's map), so the order of the gateway's own lines is
    // what tells the paths apart.
    for headers in [
        vec![BEARER_H2, ("x-dup", "1")],
        vec![("cookie", "<session>"), ("cookie", "k=v")],
    ] {
        let (fast, general) = pair.both_h2(&up, "GET", "/app", &headers, b"").await;
        assert_eq!(fast, general, "{headers:?}");
        assert_eq!(fast.status(), 200, "{fast:#?}");
        let heads = up.heads();
        let order = |h: &[u8]| -> Vec<String> {
            header_lines(h)
                .into_iter()
                .map(|(k, _)| k)
                .filter(|k| ["host", "x-forwarded-for", "x-real-ip"].contains(&k.as_str()))
                .collect()
        };
        let n = heads.len();
        assert_eq!(
            order(&heads[n - 2]),
            ["host", "x-forwarded-for", "x-real-ip"],
            "the fast gateway did not plan {headers:?}"
        );
        assert_eq!(
            order(&heads[n - 1]),
            ["x-real-ip", "x-forwarded-for", "host"],
            "{headers:?}"
        );
    }
}
