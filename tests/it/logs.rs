//! No secret in the logs: the real binary at `RUST_LOG=trace`, a whole session against it, then
//! a search of everything it wrote to stderr for each secret the session used.
//!
//! The session covers sign-up, login, `me`, proxied requests with the bearer token and with the
//! cookies (a POST with `X-CSRF-Token`), a forwarded token, an HTTP/2 request over TLS, refresh
//! by body and by cookie, failed logins, and logout; once with human logs, once with JSON logs,
//! and once with an HS256 secret taken from the environment. The log must also contain an audit
//! login event and access-log lines, so an empty or muted log cannot pass.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

use crate::util::*;

const BIN: &str = env!("CARGO_BIN_EXE_gateway");
const PASSWORD: &str = "log-test Passw0rd-9f2c71";
const WRONG_PASSWORD: &str = "log-test Wr0ng-5d8e03";
const JWT_SECRET: &str = "log-test-jwt-secret-4f9c2a7e1b3d5c6a8e0f77";
const EMAIL: &str = "logs@example.com";

/// Kills the child if the test fails before it exits.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One running gateway binary and where its stderr goes.
struct Running {
    child: Child,
    http: u16,
    https: u16,
    dir: PathBuf,
    log: PathBuf,
}

async fn start(dir: &Path, format: &str, hs256: bool, upstream: &str) -> Running {
    let auth = if hs256 {
        ", algorithm: HS256, jwt_secret: '${GATEWAY_JWT_SECRET}'"
    } else {
        ""
    };
    for attempt in 0..5 {
        let [http, https] = free_ports(2)[..] else {
            unreachable!()
        };
        let yaml = format!(
            "version: 1\n\
             listen: {{http: '127.0.0.1:{http}', https: '127.0.0.1:{https}'}}\n\
             admin: {{listen: null}}\n\
             log: {{format: {format}}}\n\
             shutdown_grace: 2s\n\
             auth: {{password: {{memory_kib: 1024, iterations: 1}}{auth}}}\n\
             routes:\n\
             \x20 - {{path: /app, upstream: '{upstream}', auth: required}}\n\
             \x20 - {{path: /fwd, upstream: '{upstream}', auth: required, forward_token: true}}\n"
        );
        let config = dir.join("gateway.yaml");
        std::fs::write(&config, yaml).unwrap();
        let log = dir.join(format!("stderr-{attempt}.log"));
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .current_dir(dir)
            .env("RUST_LOG", "trace")
            .env("GATEWAY_JWT_SECRET", JWT_SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        let mut child = Child(child);
        for _ in 0..500 {
            if let Ok(r) = get(&format!("http://127.0.0.1:{http}/healthz")).await
                && r.status == 200
            {
                return Running {
                    child,
                    http,
                    https,
                    dir: dir.to_owned(),
                    log,
                };
            }
            if child.0.try_wait().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stderr = std::fs::read_to_string(&log).unwrap_or_default();
        if attempt < 4 && stderr.contains("cannot listen") {
            continue;
        }
        panic!("the gateway did not become ready: {stderr}");
    }
    unreachable!()
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// SIGTERM, wait for a clean exit, return everything it logged.
    async fn stop(mut self) -> String {
        let killed = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.0.id().to_string())
            .status()
            .unwrap();
        assert!(killed.success());
        let mut status = None;
        for _ in 0..1000 {
            status = self.child.0.try_wait().unwrap();
            if status.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let status = status.expect("hang guard: the gateway did not exit after SIGTERM");
        assert!(status.success(), "{status:?}");
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// One request over HTTP/2 on TLS, trusting the certificate the gateway generated.
    async fn h2(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.dir.join("certs/localhost.pem")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.https))
            .await
            .unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut b = Request::get(format!("https://localhost:{}{path}", self.https));
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        let resp = sender
            .send_request(b.body(Full::<Bytes>::default()).unwrap())
            .await
            .unwrap();
        read_resp(resp).await.1
    }
}

/// Everything secret the session handled, by what it is.
#[derive(Default)]
struct Secrets(Vec<(String, String)>);

impl Secrets {
    fn add(&mut self, what: &str, value: &str) {
        if !value.is_empty() {
            self.0.push((what.to_owned(), value.to_owned()));
        }
    }

    /// An access token, and its signature on its own.
    fn access(&mut self, what: &str, token: &str) {
        self.add(what, token);
        if let Some(sig) = token.rsplit('.').next() {
            self.add(&format!("{what} (signature)"), sig);
        }
    }

    /// The tokens of a sign-up, login or refresh response, and the cookies it set.
    fn issued(&mut self, what: &str, r: &Resp) -> (String, String) {
        let v = r.json();
        let access = v["access_token"].as_str().unwrap().to_owned();
        let refresh = v["refresh_token"].as_str().unwrap().to_owned();
        self.access(&format!("{what} access token"), &access);
        self.add(&format!("{what} refresh token"), &refresh);
        for c in set_cookies(r) {
            self.add(&format!("{what} cookie {}", c.name), &c.value);
        }
        (access, refresh)
    }
}

/// Runs the whole session against a started gateway and returns the secrets it used.
async fn session(gw: &Running) -> Secrets {
    let mut secrets = Secrets::default();
    secrets.add("password", PASSWORD);
    secrets.add("wrong password", WRONG_PASSWORD);
    secrets.add("JWT secret", JWT_SECRET);
    secrets.add("argon2 PHC hash", "$argon2id$");
    let creds = json!({"email": EMAIL, "password": PASSWORD});

    let r = post_json(&gw.url("/api/auth/signup"), &creds, &[]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let (_, signup_refresh) = secrets.issued("signup", &r);

    let r = post_json(&gw.url("/api/auth/login"), &creds, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (access, _) = secrets.issued("login", &r);
    let access_cookie = set_cookie(&r, "gw_access").value;
    let refresh_cookie = set_cookie(&r, "gw_refresh").value;
    let csrf = set_cookie(&r, "gw_csrf").value;
    let auth = bearer(&access);

    let r = get_with(&gw.url("/api/auth/me"), &[("authorization", &auth)]).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Proxied: bearer, cookies, a cookie POST with the CSRF header, a forwarded token, HTTP/2.
    let r = get_with(&gw.url("/app/x?q=1"), &[("authorization", &auth)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cookie = cookie_header(&[
        ("gw_access", &access_cookie),
        ("gw_csrf", &csrf),
        ("theme", "dark"),
    ]);
    let r = get_with(&gw.url("/app/x"), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post_json(
        &gw.url("/app/x"),
        &json!({"hello": "world"}),
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get_with(&gw.url("/fwd/y"), &[("authorization", &auth)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = gw
        .h2("/app/h2", &[("authorization", &auth), ("cookie", &cookie)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Refresh by body (the sign-up session) and by cookie with the CSRF token (the login one).
    let r = post_json(
        &gw.url("/api/auth/refresh"),
        &json!({"refresh_token": signup_refresh}),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (refreshed_access, refreshed_refresh) = secrets.issued("refresh", &r);
    let refresh_cookies = cookie_header(&[("gw_refresh", &refresh_cookie), ("gw_csrf", &csrf)]);
    let r = call(
        "POST",
        &gw.url("/api/auth/refresh"),
        &[("cookie", &refresh_cookies), ("x-csrf-token", &csrf)],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    secrets.issued("cookie refresh", &r);

    // Failures.
    let r = post_json(
        &gw.url("/api/auth/login"),
        &json!({"email": EMAIL, "password": WRONG_PASSWORD}),
        &[],
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = post_json(
        &gw.url("/api/auth/login"),
        &json!({"email": "nobody@example.com", "password": WRONG_PASSWORD}),
        &[],
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = get_with(
        &gw.url("/app/x"),
        &[("authorization", "Bearer not.a.token")],
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());

    // Logout with the bearer token and the refresh token in the body.
    let r = post_json(
        &gw.url("/api/auth/logout"),
        &json!({"refresh_token": refreshed_refresh}),
        &[("authorization", &bearer(&refreshed_access))],
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    secrets
}

/// Fails with every secret found in `log`, and unless the expected lines are there.
fn assert_clean(label: &str, log: &str, secrets: &Secrets) {
    let leaks: Vec<String> = secrets
        .0
        .iter()
        .filter(|(_, value)| log.contains(value.as_str()))
        .map(|(what, value)| {
            let line = log
                .lines()
                .find(|l| l.contains(value.as_str()))
                .unwrap_or("");
            format!("  {what}, e.g. in: {line}")
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "{label}: secrets in the log:\n{}",
        leaks.join("\n")
    );
    // A log written to a file has no terminal colour codes (they split `key=value` apart).
    assert!(
        !log.contains('\x1b'),
        "{label}: ANSI escape codes in a log file:\n{}",
        tail(log)
    );
    // Not an empty or muted log: the audit login event and access-log lines are there.
    let has_login = log.lines().any(|l| {
        l.contains("audit") && (l.contains("event=\"login\"") || l.contains("\"event\":\"login\""))
    });
    assert!(
        has_login,
        "{label}: no audit login event in:\n{}",
        tail(log)
    );
    let has_access = log
        .lines()
        .any(|l| l.contains("access") && l.contains("/app/x") && l.contains("200"));
    assert!(
        has_access,
        "{label}: no access-log line for /app/x in:\n{}",
        tail(log)
    );
    assert!(
        log.contains("TRACE") || log.contains("\"level\":\"TRACE\""),
        "{label}: not at trace level"
    );
}

/// The last lines of a log, for failure messages (a trace log is thousands of lines).
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

async fn run(label: &str, format: &str, hs256: bool) {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start().await;
    let gw = start(dir.path(), format, hs256, &up.url()).await;
    let secrets = session(&gw).await;
    let log = gw.stop().await;
    // The upstream did get the forwarded token, so the test really handled it.
    assert!(
        up.requests()
            .iter()
            .any(|s| s.get("authorization").is_some())
    );
    assert_clean(label, &log, &secrets);
}

#[tokio::test]
async fn no_secret_in_human_logs() {
    run("human, EdDSA", "human", false).await;
}

#[tokio::test]
async fn no_secret_in_json_logs() {
    run("json, EdDSA", "json", false).await;
}

#[tokio::test]
async fn no_secret_in_logs_with_an_hs256_secret() {
    run("human, HS256", "human", true).await;
}
