//! Forward-auth (`GET /api/auth/verify`) for proxies that keep their own routing: directly, and
//! behind the real Debian nginx with `auth_request`.

use std::process::{Child, Command, Stdio};

use crate::util::*;

const PW: &str = "correct horse battery";

fn config(upstream: &str, trusted: bool) -> String {
    let trusted = if trusted {
        "trusted_proxies: [127.0.0.1]\n"
    } else {
        ""
    };
    auth_config(
        "",
        &format!(
            "{trusted}routes:\n  - {{path: /public, upstream: '{upstream}', auth: public}}\n  - {{path: /admin, upstream: '{upstream}', roles: [admin]}}\n  - {{path: /, upstream: '{upstream}', auth: required}}\n"
        ),
    )
}

async fn verify(gw: &Gateway, headers: &[(&str, &str)]) -> Resp {
    get_with(&gw.url("/api/auth/verify"), headers).await
}

#[tokio::test]
async fn verify_answers_like_the_route_policy() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), true)).await;
    let user = signup(&gw, "fa@example.com", PW).await;
    let bearer = format!("Bearer {}", user.access);

    // nginx style.
    let ok = verify(
        &gw,
        &[
            ("x-original-uri", "/app/page?x=1"),
            ("x-original-method", "GET"),
            ("authorization", &bearer),
            ("x-auth-user-id", "spoofed"),
        ],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let id = user.resp.json()["user"]["id"].as_str().unwrap().to_owned();
    assert_eq!(ok.header("x-auth-user-id").as_deref(), Some(id.as_str()));
    assert_eq!(ok.header("x-auth-email").as_deref(), Some("fa@example.com"));
    assert_eq!(ok.header("x-auth-roles").as_deref(), Some("user"));

    let public = verify(
        &gw,
        &[
            ("x-original-uri", "/public/x"),
            ("x-original-method", "GET"),
        ],
    )
    .await;
    assert_eq!(public.status, 200);
    // Present but empty: proxies that copy a header the answer lacks may copy garbage.
    assert_eq!(public.header("x-auth-user-id").as_deref(), Some(""));

    let anon = verify(
        &gw,
        &[
            ("x-original-uri", "/app"),
            ("x-original-method", "GET"),
            ("accept", "text/html"),
        ],
    )
    .await;
    assert_eq!(
        anon.status, 401,
        "nginx turns 401 into the login redirect itself"
    );
    assert_eq!(anon.header("www-authenticate").as_deref(), Some("Bearer"));

    let forbidden = verify(
        &gw,
        &[
            ("x-original-uri", "/admin/x"),
            ("x-original-method", "GET"),
            ("authorization", &bearer),
        ],
    )
    .await;
    assert_eq!(forbidden.status, 403);

    // The path is normalised before the decision: no way around /admin.
    let sneaky = verify(
        &gw,
        &[
            ("x-original-uri", "/public/../admin"),
            ("x-original-method", "GET"),
            ("authorization", &bearer),
        ],
    )
    .await;
    assert_eq!(sneaky.status, 403);
    let bad = verify(
        &gw,
        &[
            ("x-original-uri", "/admin%2f"),
            ("x-original-method", "GET"),
        ],
    )
    .await;
    assert_eq!(bad.status, 400);

    // A client can add the other proxy family's header (proxies pass client headers on):
    // never guess which one describes the real request.
    let confused = verify(
        &gw,
        &[
            ("x-original-uri", "/public/x"),
            ("x-original-method", "GET"),
            ("x-forwarded-uri", "/app/secret"),
            ("x-forwarded-method", "GET"),
        ],
    )
    .await;
    assert_eq!(confused.status, 400);
    // Without the method the CSRF rule could not apply: refused, not assumed GET.
    let no_method = verify(&gw, &[("x-original-uri", "/public/x")]).await;
    assert_eq!(no_method.status, 400);
    // nginx mode takes the host from Host, never from a client's X-Forwarded-Host.
    let spoofed_host = verify(
        &gw,
        &[
            ("x-original-uri", "/app"),
            ("x-original-method", "GET"),
            ("x-forwarded-host", "public.example.test"),
        ],
    )
    .await;
    assert_eq!(spoofed_host.status, 401);

    // Traefik / Caddy style: browsers get a redirect the proxy passes on, API clients a 401.
    let browser = verify(
        &gw,
        &[
            ("x-forwarded-uri", "/app/page?x=1"),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-host", "app.example.test"),
            ("x-forwarded-proto", "https"),
            ("accept", "text/html"),
        ],
    )
    .await;
    assert_eq!(browser.status, 302);
    assert_eq!(
        browser.header("location").as_deref(),
        Some("https://app.example.test/api/auth/login?next=/app/page%3Fx%3D1")
    );
    let api = verify(
        &gw,
        &[
            ("x-forwarded-uri", "/app/data"),
            ("x-forwarded-method", "POST"),
            ("x-forwarded-host", "app.example.test"),
        ],
    )
    .await;
    assert_eq!(api.status, 401);
    let missing = verify(&gw, &[]).await;
    assert_eq!(missing.status, 400);
    assert_eq!(up.count(), 0, "verify never forwards anything");
}

/// The two things a proxy cannot work out itself, in the answer to it: which cookies the app
/// may see, and (nginx, for a browser) where to sign in with `next` encoded. On both serving
/// paths.
#[tokio::test]
async fn verify_names_the_app_cookies_and_the_login_location() {
    for fast_path in [true, false] {
        let up = Upstream::start().await;
        let yaml = format!(
            "{}listen: {{http: 127.0.0.1:0, https: 127.0.0.1:0, fast_path: {fast_path}}}\n",
            config(&up.url(), true)
        );
        let gw = Gateway::start(&yaml).await;
        let user = signup(&gw, "cookies@example.com", PW).await;
        let nginx = [("x-original-uri", "/app/x"), ("x-original-method", "GET")];
        fn with<'a>(nginx: &[(&'a str, &'a str)], cookie: &'a str) -> Vec<(&'a str, &'a str)> {
            let mut h = nginx.to_vec();
            h.push(("cookie", cookie));
            h
        }
        let ours = format!("gw_access={}", user.cookie("gw_access"));
        let mixed = format!(
            "a=1; {ours}; gw_refresh={}; __Host-gw_csrf=x; b=2",
            user.cookie("gw_refresh")
        );
        let r = verify(&gw, &with(&nginx, &mixed)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-upstream-cookie").as_deref(), Some("a=1; b=2"));
        assert_eq!(r.header("cookie").as_deref(), Some("a=1; b=2"));
        let r = verify(&gw, &with(&nginx, &ours)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-upstream-cookie").as_deref(), Some(""));
        assert_eq!(r.header("cookie"), None);

        let r = verify(
            &gw,
            &[
                ("x-original-uri", "/app/page?a=1&b=2"),
                ("x-original-method", "GET"),
                ("accept", "text/html"),
            ],
        )
        .await;
        assert_eq!(r.status, 401);
        assert_eq!(
            r.header("x-login-location").as_deref(),
            Some("/api/auth/login?next=/app/page%3Fa%3D1%26b%3D2")
        );
        // API clients are not sent anywhere.
        let r = verify(&gw, &nginx).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.header("x-login-location"), None);

        // A session refreshed during the check: nginx gets each new cookie in a header of its
        // own; Caddy and Traefik, which drop a 2xx answer's Set-Cookie, a 307 back to the URL.
        let fresh_login = login(&gw, "cookies@example.com", PW).await;
        let cookie = format!("gw_refresh={}", fresh_login.cookie("gw_refresh"));
        let r = verify(&gw, &with(&nginx, &cookie)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let numbered: Vec<String> = (1..=4)
            .filter_map(|i| r.header(&format!("x-set-cookie-{i}")))
            .collect();
        assert_eq!(numbered.len(), 3, "{numbered:?}");
        assert!(numbered.iter().any(|c| c.starts_with("gw_refresh=")));
        let fresh_login = login(&gw, "cookies@example.com", PW).await;
        let cookie = format!("gw_refresh={}", fresh_login.cookie("gw_refresh"));
        let r = verify(
            &gw,
            &[
                ("x-forwarded-uri", "/app/page?a=1&b=2"),
                ("x-forwarded-method", "GET"),
                ("x-forwarded-host", "app.example.test"),
                ("cookie", &cookie),
            ],
        )
        .await;
        assert_eq!(r.status, 307, "{}", r.text());
        assert_eq!(
            r.header("location").as_deref(),
            Some("http://app.example.test/app/page?a=1&b=2")
        );
        assert_eq!(set_cookies(&r).len(), 3);
        assert_eq!(r.header("x-set-cookie-1"), None);
    }
}

#[tokio::test]
async fn verify_is_only_for_trusted_proxies() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), false)).await;
    let r = verify(
        &gw,
        &[("x-original-uri", "/public"), ("x-original-method", "GET")],
    )
    .await;
    assert_eq!(r.status, 403);
}

/// nginx in front of the mock upstream, asking the gateway through `auth_request`.
struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> Option<&'static str> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

async fn start_nginx(bin: &str, gateway_port: u16, upstream_port: u16) -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nginx/gateway.conf"),
    )
    .unwrap();
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    for _ in 0..5 {
        let port = free_ports(1)[0];
        // The shipped example, with this test's ports: the test checks what users copy.
        let server = example
            .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{gateway_port}"))
            .replace("127.0.0.1:3000", &format!("127.0.0.1:{upstream_port}"));
        let d = dir.path().display();
        // One process (no master and workers): killing it at the end of the test leaves no
        // orphaned worker holding the port.
        let conf = format!(
            "{user}daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n{server}\n}}\n",
            user = if root { "user root;\n" } else { "" },
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new(bin)
            .args(["-p", &d.to_string(), "-e", &format!("{d}/error.log"), "-c"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut nginx = Nginx {
            child,
            port,
            _dir: tempfile::tempdir().unwrap(),
        };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                nginx._dir = dir;
                return nginx;
            }
            if let Ok(Some(_)) = nginx.child.try_wait() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        drop(nginx);
    }
    let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
    panic!("nginx did not start:\n{log}");
}

#[tokio::test]
async fn real_nginx_with_auth_request() {
    let Some(bin) = nginx_binary() else {
        // .ci/run installs nginx and sets this, so CI cannot skip the test.
        assert!(
            std::env::var_os("GATEWAY_REQUIRE_NGINX").is_none(),
            "nginx is required (GATEWAY_REQUIRE_NGINX is set) but not installed"
        );
        eprintln!("skipping: nginx is not installed (apt-get install nginx-light)");
        return;
    };
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), true)).await;
    let nginx = start_nginx(bin, gw.http.port(), up.addr.port()).await;
    let base = format!("http://127.0.0.1:{}", nginx.port);
    // nginx sends browsers to the page the gateway named, relative (absolute_redirect off).
    proxy_checks(&base, &up, "ngx@example.com", 303, "").await;
}

/// What every forward-auth proxy example must do, checked through the proxy at `base` in front
/// of `up`: a browser without a session is sent (`status`) to `{login_base}/api/auth/login`
/// with the whole original URL as `next`; API clients get 401; identity headers reach the app
/// and spoofed ones do not; roles give 403; the gateway's cookies never reach the app.
async fn proxy_checks(base: &str, up: &Upstream, email: &str, status: u16, login_base: &str) {
    // Sign up through the proxy (it passes /api/auth/ to the gateway).
    let r = post_json(
        &format!("{base}/api/auth/signup"),
        &serde_json::json!({"email": email, "password": PW}),
        &[],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let session = Tokens::from_resp(r);
    let id = session.resp.json()["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bearer = format!("Bearer {}", session.access);

    // Allowed: identity headers reach the upstream, spoofed ones don't.
    let ok = get_with(
        &format!("{base}/app/page"),
        &[
            ("authorization", &bearer),
            ("x-auth-user-id", "spoofed-admin"),
            ("x-auth-roles", "admin"),
        ],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let seen = up.last();
    assert_eq!(seen.uri, "/app/page");
    assert_eq!(seen.all("x-auth-user-id"), std::slice::from_ref(&id));
    assert_eq!(seen.all("x-auth-roles"), ["user"]);
    assert_eq!(seen.all("x-auth-email"), [email]);
    let count = up.count();

    // A browser without a session is sent to the login page, the whole URL kept in `next`.
    let anon = get_with(
        &format!("{base}/app/page?x=1&y=2"),
        &[("accept", "text/html")],
    )
    .await;
    assert_eq!(anon.status, status, "{}", anon.text());
    let location = anon.header("location").unwrap();
    assert_eq!(
        location,
        format!("{login_base}/api/auth/login?next=/app/page%3Fx%3D1%26y%3D2")
    );
    // An API client gets the 401.
    let api = get_with(
        &format!("{base}/app/data"),
        &[("x-auth-user-id", "spoofed")],
    )
    .await;
    assert_eq!(api.status, 401);
    // Forbidden by role.
    let admin = get_with(
        &format!("{base}/admin/panel"),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(admin.status, 403);
    assert_eq!(
        up.count(),
        count,
        "refused requests never reached the upstream"
    );

    // A public route passes without identity, and a spoofed identity is removed.
    let public = get_with(
        &format!("{base}/public/x"),
        &[("x-auth-user-id", "spoofed"), ("x-auth-roles", "admin")],
    )
    .await;
    assert_eq!(public.status, 200);
    // nginx removes them; Caddy 2.6 sets them empty.
    let seen = up.last();
    for name in ["x-auth-user-id", "x-auth-roles"] {
        assert!(
            seen.all(name).iter().all(|v| v.is_empty()),
            "{name}: {:?}",
            seen.all(name)
        );
    }

    // Signed in with the session cookies (the refresh cookie has Path=/, so browsers send it
    // everywhere): the app gets the identity and its own cookies, never the gateway's.
    let cookies = cookie_header(&[
        ("gw_access", &session.cookie("gw_access")),
        ("theme", "dark"),
        ("gw_refresh", &session.cookie("gw_refresh")),
        ("gw_csrf", &session.cookie("gw_csrf")),
        ("lang", "en"),
    ]);
    let r = get_with(&format!("{base}/app/cookies"), &[("cookie", &cookies)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert_eq!(seen.all("x-auth-user-id"), std::slice::from_ref(&id));
    assert_eq!(seen.all("cookie"), ["theme=dark; lang=en"]);
    assert!(seen.all("x-upstream-cookie").is_empty());
    // Only the gateway's cookies: none reach the app.
    let only_ours = cookie_header(&[
        ("gw_access", &session.cookie("gw_access")),
        ("gw_refresh", &session.cookie("gw_refresh")),
    ]);
    let r = get_with(&format!("{base}/app/cookies"), &[("cookie", &only_ours)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert_eq!(seen.all("x-auth-user-id"), std::slice::from_ref(&id));
    assert!(
        seen.all("cookie").iter().all(|c| c.trim().is_empty()),
        "{:?}",
        seen.all("cookie")
    );
    // On a public route too.
    let r = get_with(&format!("{base}/public/c"), &[("cookie", &cookies)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().all("cookie"), ["theme=dark; lang=en"]);
}

/// A browser whose access cookie has gone (expired) but whose refresh cookie is valid: the
/// gateway refreshes the session during the check, and the browser must get all the new
/// cookies, or its next refresh would replay the rotated token. Returns the response to the
/// first request.
async fn refreshed_through(base: &str, up: &Upstream, email: &str) -> (Resp, String) {
    let r = post_json(
        &format!("{base}/api/auth/signup"),
        &serde_json::json!({"email": email, "password": PW}),
        &[],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let session = Tokens::from_resp(r);
    let id = session.resp.json()["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let old_refresh = session.cookie("gw_refresh");
    let only_refresh = cookie_header(&[("gw_refresh", &old_refresh)]);
    let r = get_with(
        &format!("{base}/app/again?y=1"),
        &[("cookie", &only_refresh)],
    )
    .await;
    let refreshed = set_cookie(&r, "gw_refresh").value;
    assert_ne!(refreshed, old_refresh, "the refresh token was not rotated");
    let fresh = cookie_header(&[
        ("gw_access", &set_cookie(&r, "gw_access").value),
        ("gw_refresh", &refreshed),
        ("gw_csrf", &set_cookie(&r, "gw_csrf").value),
    ]);
    // With the new cookies the next request passes without another refresh.
    let next = get_with(&format!("{base}/app/next"), &[("cookie", &fresh)]).await;
    assert_eq!(next.status, 200, "{}", next.text());
    assert!(set_cookies(&next).is_empty(), "refreshed again");
    assert_eq!(up.last().all("x-auth-user-id"), [id]);
    (r, fresh)
}

#[tokio::test]
async fn a_session_refreshed_behind_nginx_hands_the_browser_every_cookie() {
    let Some(bin) = nginx_binary() else {
        assert!(
            std::env::var_os("GATEWAY_REQUIRE_NGINX").is_none(),
            "nginx is required (GATEWAY_REQUIRE_NGINX is set) but not installed"
        );
        eprintln!("skipping: nginx is not installed (apt-get install nginx-light)");
        return;
    };
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), true)).await;
    let nginx = start_nginx(bin, gw.http.port(), up.addr.port()).await;
    let base = format!("http://127.0.0.1:{}", nginx.port);
    let (first, _) = refreshed_through(&base, &up, "ngx-refresh@example.com").await;
    // nginx serves the request at once, with the cookies added to the app's answer.
    assert_eq!(first.status, 200, "{}", first.text());
}

/// Caddy in front of the mock upstream, asking the gateway through `forward_auth`.
struct Caddy {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_caddy(bin: &str, gateway_port: u16, upstream_port: u16) -> Caddy {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/caddy/Caddyfile"),
    )
    .unwrap();
    for _ in 0..5 {
        let port = free_ports(1)[0];
        // The shipped example with this test's ports (plain HTTP: no certificate to obtain),
        // after global options that keep Caddy's admin API and state out of the way.
        let site = example
            .replace("app.example.com {", &format!("http://127.0.0.1:{port} {{"))
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{gateway_port}"))
            .replace("127.0.0.1:3000", &format!("127.0.0.1:{upstream_port}"));
        let conf = format!("{{\n\tadmin off\n}}\n{site}");
        let path = dir.path().join("Caddyfile");
        std::fs::write(&path, conf).unwrap();
        let log = std::fs::File::create(dir.path().join("caddy.log")).unwrap();
        let child = Command::new(bin)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&path)
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut caddy = Caddy {
            child,
            port,
            _dir: tempfile::tempdir().unwrap(),
        };
        for _ in 0..500 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                caddy._dir = dir;
                return caddy;
            }
            if let Ok(Some(_)) = caddy.child.try_wait() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        drop(caddy);
    }
    let log = std::fs::read_to_string(dir.path().join("caddy.log")).unwrap_or_default();
    panic!("caddy did not start:\n{log}");
}

#[tokio::test]
async fn real_caddy_with_forward_auth() {
    let Some(bin) = ["/usr/bin/caddy", "/usr/local/bin/caddy"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        // .ci/run installs Caddy and sets this, so CI cannot skip the test.
        assert!(
            std::env::var_os("GATEWAY_REQUIRE_CADDY").is_none(),
            "Caddy is required (GATEWAY_REQUIRE_CADDY is set) but not installed"
        );
        eprintln!("skipping: Caddy is not installed (apt-get install caddy)");
        return;
    };
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), true)).await;
    let caddy = start_caddy(bin, gw.http.port(), up.addr.port()).await;
    let base = format!("http://127.0.0.1:{}", caddy.port);
    // Caddy passes the gateway's 302 on; its Location is absolute, built from the
    // X-Forwarded-Host/-Proto Caddy sent.
    proxy_checks(&base, &up, "caddy@example.com", 302, &base).await;

    // Caddy drops a 2xx answer's Set-Cookie: the gateway sends the browser back to the same URL
    // with the refreshed cookies instead.
    let (first, _) = refreshed_through(&base, &up, "caddy-refresh@example.com").await;
    assert_eq!(first.status, 307, "{}", first.text());
    assert_eq!(
        first.header("location"),
        Some(format!("{base}/app/again?y=1"))
    );
}
