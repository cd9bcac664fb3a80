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
                "version: 1\nlisten:\n  http: 127.0.0.1:{http}\n  https: 127.0.0.1:{https}\nroutes:\n  - {{path: /who, upstream: 'builtin:whoami', auth: public}}\n"
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
