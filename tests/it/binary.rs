//! The real `gateway` binary: `check` and `serve` with a signal.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::*;

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

fn write_config(dir: &Path, yaml: &str) -> std::path::PathBuf {
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn check_prints_the_routes_and_rejects_a_misspelt_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "version: 1\nroutes:\n  - {path: /app, upstream: 'http://127.0.0.1:3000/base', strip_prefix: true, auth: public}\n  - {path: /, upstream: 'builtin:whoami'}\n",
    );
    let out = Command::new(BIN)
        .arg("check")
        .arg("--config")
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("is valid"), "{stdout}");
    assert!(
        stdout.contains("/app") && stdout.contains("http://127.0.0.1:3000/base"),
        "{stdout}"
    );
    assert!(stdout.contains("builtin:whoami"), "{stdout}");
    assert!(
        stdout.contains("auth=public") && stdout.contains("auth=required"),
        "{stdout}"
    );

    let path = write_config(
        dir.path(),
        "version: 1\nroutes:\n  - {path: /, upstream: 'builtin:whoami'}\nlimits:\n  max_bodybytes: 1MiB\n",
    );
    let out = Command::new(BIN)
        .arg("check")
        .arg("--config")
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("limits.max_bodybytes"), "{stderr}");
}

/// Kills the child if the test fails before it exits.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serve_answers_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // The binary binds the addresses in its config: pick ports that were free a moment ago and
    // retry if another process took one in between.
    for attempt in 0..5 {
        let [http, https] = free_ports(2)[..] else {
            unreachable!()
        };
        let path = write_config(
            dir.path(),
            &format!(
                "version: 1\nadmin: {{listen: null}}\nlisten:\n  http: 127.0.0.1:{http}\n  https: 127.0.0.1:{https}\nroutes:\n  - {{path: /who, upstream: 'builtin:whoami', auth: public}}\n"
            ),
        );
        let mut child = Child(
            Command::new(BIN)
                .arg("serve")
                .arg("--config")
                .arg(&path)
                .current_dir(dir.path())
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );

        let mut ready = false;
        for _ in 0..500 {
            if let Ok(r) = get(&format!("http://127.0.0.1:{http}/healthz")).await
                && r.status == 200
            {
                ready = true;
                break;
            }
            if child.0.try_wait().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !ready {
            let status = child.0.try_wait().unwrap();
            let mut stderr = String::new();
            if status.is_some() {
                use std::io::Read;
                child
                    .0
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr)
                    .unwrap();
            }
            if attempt < 4 && stderr.contains("cannot listen") {
                continue;
            }
            panic!("the gateway did not become ready ({status:?}): {stderr}");
        }

        let r = get(&format!("http://127.0.0.1:{http}/who/x?a=1"))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        // It generated its certificate and store in its working directory.
        assert!(dir.path().join("certs/localhost.pem").exists());

        // SIGHUP reloads the file: a new route appears; a broken file is refused and the
        // running configuration stays.
        assert_eq!(
            get(&format!("http://127.0.0.1:{http}/new/x"))
                .await
                .unwrap()
                .status,
            404
        );
        write_config(
            dir.path(),
            &format!(
                "version: 1\nadmin: {{listen: null}}\nlisten:\n  http: 127.0.0.1:{http}\n  https: 127.0.0.1:{https}\nroutes:\n  - {{path: /who, upstream: 'builtin:whoami', auth: public}}\n  - {{path: /new, upstream: 'builtin:whoami', auth: public}}\n"
            ),
        );
        let hup = || {
            Command::new("kill")
                .arg("-HUP")
                .arg(child.0.id().to_string())
                .status()
                .unwrap()
        };
        assert!(hup().success());
        let mut reloaded = false;
        for _ in 0..250 {
            if get(&format!("http://127.0.0.1:{http}/new/x"))
                .await
                .unwrap()
                .status
                == 200
            {
                reloaded = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(reloaded, "SIGHUP did not reload the configuration");
        write_config(
            dir.path(),
            "version: 1\nroutes:\n  - {path: /x, upstream: 'ftp://no'}\n",
        );
        assert!(hup().success());
        for _ in 0..10 {
            let r = get(&format!("http://127.0.0.1:{http}/new/x"))
                .await
                .unwrap();
            assert_eq!(
                r.status, 200,
                "a broken file replaced the running configuration"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let killed = Command::new("kill")
            .arg("-TERM")
            .arg(child.0.id().to_string())
            .status()
            .unwrap();
        assert!(killed.success());
        let mut status = None;
        for _ in 0..1000 {
            status = child.0.try_wait().unwrap();
            if status.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let status = status.expect("hang guard: the gateway did not exit after SIGTERM");
        assert!(status.success(), "{status:?}");
        return;
    }
}

#[test]
fn check_applies_environment_overrides_and_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "version: 1\nroutes:\n  - {path: /app, upstream: 'http://127.0.0.1:3000', auth: public}\n",
    );
    std::fs::write(dir.path().join("jwt"), "j".repeat(40)).unwrap();
    // Key files must be private (see tests/it/secrets_at_rest.rs).
    std::fs::set_permissions(
        dir.path().join("jwt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    // GATEWAY_CONFIG instead of --config.
    let out = Command::new(BIN)
        .arg("check")
        .current_dir(dir.path())
        .env("GATEWAY_CONFIG", &path)
        .env("GATEWAY_LISTEN__HTTP", "0.0.0.0:18080")
        .env("GATEWAY_LISTEN__HTTPS", "null")
        .env("GATEWAY_AUTH__SIGNUP", "closed")
        .env("GATEWAY_AUTH__ALGORITHM", "HS256")
        .env("GATEWAY_AUTH__JWT_SECRET_FILE", dir.path().join("jwt"))
        .env("GATEWAY_ROUTES__0__UPSTREAM", "http://app:80")
        .env("GATEWAY_JWT_SECRET", "not an override")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("config {} is valid", path.display())),
        "{stdout}"
    );
    assert!(stdout.contains("http   0.0.0.0:18080"), "{stdout}");
    assert!(stdout.contains("https  off"), "{stdout}");
    assert!(stdout.contains("signup Closed, tokens HS256"), "{stdout}");
    assert!(stdout.contains("-> http://app:80"), "{stdout}");
    assert!(
        stdout.contains(
            "overrides from environment: GATEWAY_AUTH__ALGORITHM, GATEWAY_AUTH__JWT_SECRET_FILE, \
             GATEWAY_AUTH__SIGNUP, GATEWAY_LISTEN__HTTP, GATEWAY_LISTEN__HTTPS, GATEWAY_ROUTES__0__UPSTREAM\n"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains(&"j".repeat(40)), "{stdout}");

    // A misspelt override is refused with the variable's name.
    let out = Command::new(BIN)
        .arg("check")
        .current_dir(dir.path())
        .env("GATEWAY_CONFIG", &path)
        .env("GATEWAY_AUTH__SIGNUPP", "closed")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("auth.signupp") && stderr.contains("(from GATEWAY_AUTH__SIGNUPP)"),
        "{stderr}"
    );
}

/// Answers every connection with `status_line` and closes it.
fn one_line_server(status_line: &'static str) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                stream,
                "{status_line}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    addr
}

#[test]
fn healthcheck_exits_by_the_liveness_answer() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "version: 1\nhealth:\n  live: /live\n");
    let run = |listen: String| {
        Command::new(BIN)
            .args(["healthcheck", "--timeout", "2s", "--config"])
            .arg(&path)
            .current_dir(dir.path())
            .env("GATEWAY_LISTEN__HTTP", listen)
            .output()
            .unwrap()
    };
    let ok = one_line_server("HTTP/1.1 200 OK");
    let out = run(ok.to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 0.0.0.0 (how a container listens) is probed on loopback.
    let out = run(format!("0.0.0.0:{}", ok.port()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let draining = one_line_server("HTTP/1.1 503 Service Unavailable");
    let out = run(draining.to_string());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/live answered 503"));

    let [closed] = free_ports(1)[..] else {
        unreachable!()
    };
    let out = run(format!("127.0.0.1:{closed}"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

#[tokio::test]
async fn healthcheck_passes_against_a_real_gateway() {
    let dir = tempfile::tempdir().unwrap();
    for attempt in 0..5 {
        let [http] = free_ports(1)[..] else {
            unreachable!()
        };
        let path = write_config(
            dir.path(),
            "version: 1\nadmin: {listen: null}\nlisten:\n  https: null\n",
        );
        let mut child = Child(
            Command::new(BIN)
                .arg("serve")
                .arg("--config")
                .arg(&path)
                .current_dir(dir.path())
                .env("GATEWAY_LISTEN__HTTP", format!("127.0.0.1:{http}"))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        for _ in 0..500 {
            let out = Command::new(BIN)
                .args(["healthcheck", "--timeout", "1s", "--config"])
                .arg(&path)
                .current_dir(dir.path())
                .env("GATEWAY_LISTEN__HTTP", format!("127.0.0.1:{http}"))
                .output()
                .unwrap();
            if out.status.success() {
                return;
            }
            if child.0.try_wait().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(attempt < 4, "the gateway never passed its healthcheck");
    }
}

/// Starts the binary with `env` and runs `gateway healthcheck` with the same environment until
/// it passes (bounded); returns whether it did.
async fn healthcheck_passes_with(env: &[(&str, String)]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "version: 1\n");
    let with_env = |c: &mut Command| {
        for (k, v) in env {
            c.env(k, v);
        }
    };
    let mut serve = Command::new(BIN);
    serve
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    with_env(&mut serve);
    let mut child = Child(serve.spawn().unwrap());
    for _ in 0..500 {
        let mut check = Command::new(BIN);
        check
            .args(["healthcheck", "--timeout", "1s", "--config"])
            .arg(&path)
            .current_dir(dir.path());
        with_env(&mut check);
        if check.output().unwrap().status.success() {
            return true;
        }
        if child.0.try_wait().unwrap().is_some() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn healthcheck_uses_https_without_a_plain_http_listener() {
    // Only HTTPS (the self-signed certificate the gateway generates: not verified on loopback).
    let mut passed = false;
    for _ in 0..5 {
        let [https] = free_ports(1)[..] else {
            unreachable!()
        };
        passed = healthcheck_passes_with(&[
            ("GATEWAY_LISTEN__HTTP", "null".into()),
            ("GATEWAY_LISTEN__HTTPS", format!("127.0.0.1:{https}")),
            ("GATEWAY_ADMIN__LISTEN", "null".into()),
        ])
        .await;
        if passed {
            break;
        }
    }
    assert!(passed, "healthcheck failed with only the HTTPS listener on");
}

#[test]
fn healthcheck_speaks_tls_to_the_https_listener() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "version: 1\n");
    let run = |vars: &[(&str, &str)]| {
        let mut c = Command::new(BIN);
        c.args(["healthcheck", "--timeout", "2s", "--config"])
            .arg(&path)
            .current_dir(dir.path());
        for (k, v) in vars {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    // A plain-HTTP server where HTTPS is expected: the probe spoke TLS to it, so it failed.
    let plain = one_line_server("HTTP/1.1 200 OK").to_string();
    let out = run(&[
        ("GATEWAY_LISTEN__HTTP", "null"),
        ("GATEWAY_LISTEN__HTTPS", &plain),
        ("GATEWAY_ADMIN__LISTEN", "null"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("HTTPS health check"), "{stderr}");
}
