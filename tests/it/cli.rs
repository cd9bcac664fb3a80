//! The admin CLI (`gateway user ...`), run as the real binary against a temp config, alone and
//! next to a gateway running in-process on the same redb file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;

use crate::util::*;

/// Small argon2 parameters: the CLI hashes for real.
const FAST_AUTH: &str = "auth:\n  password: {memory_kib: 1024, iterations: 1}\n";

/// Like [`cli`], and the command must succeed.
async fn cli_ok(config: &Path, args: &[&str], stdin: &str) -> String {
    let out = cli(config, args, stdin).await;
    assert_eq!(out.code, 0, "gateway {args:?} failed: {out:?}");
    out.stdout
}

/// A temp directory with a config file whose store lives inside it.
fn temp_config(extra: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(
        &path,
        format!("version: 1\nstore:\n  redb: {{path: users.redb}}\n{FAST_AUTH}{extra}"),
    )
    .unwrap();
    (dir, path)
}

#[test]
fn add_list_show() {
    let (dir, config) = temp_config("");
    let out = run_cli(
        &config,
        &[
            "user",
            "add",
            " Ada@Example.com",
            "--name",
            "Ada",
            "--role",
            "admin",
            "--role",
            "ops",
            "--password-stdin",
        ],
        "zq8vLw2x-long\nignored second line\n",
    );
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.stdout.trim().to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id:?}");
    assert!(dir.path().join("users.redb").exists());

    let list = run_cli(&config, &["user", "list"], "");
    assert_eq!(list.code, 0, "{list:?}");
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", list.stdout);
    for column in ["ID", "EMAIL", "ROLES", "DISABLED", "VERIFIED", "CREATED"] {
        assert!(lines[0].contains(column), "{}", lines[0]);
    }
    for cell in [id.as_str(), "ada@example.com", "admin,ops", "no"] {
        assert!(lines[1].contains(cell), "{}", lines[1]);
    }

    for key in ["ada@example.com", id.as_str()] {
        let show = run_cli(&config, &["user", "show", key], "");
        assert_eq!(show.code, 0, "{show:?}");
        assert!(show.stdout.contains(&id), "{}", show.stdout);
        assert!(show.stdout.contains("Ada"), "{}", show.stdout);
        assert!(show.stdout.contains("admin,ops"), "{}", show.stdout);
        assert!(
            !show.stdout.contains("argon2"),
            "hash shown: {}",
            show.stdout
        );
        assert!(!show.stdout.contains('$'), "hash shown: {}", show.stdout);
    }
}

#[test]
fn default_roles_apply_when_none_given() {
    let (_dir, config) = temp_config("");
    std::fs::write(
        &config,
        "version: 1\nstore:\n  redb: {path: users.redb}\nauth:\n  default_roles: [member]\n  password: {memory_kib: 1024, iterations: 1}\n",
    )
    .unwrap();
    let out = run_cli(
        &config,
        &["user", "add", "bob@example.com", "--password-stdin"],
        "zq8vLw2x-long",
    );
    assert_eq!(out.code, 0, "{out:?}");
    let show = run_cli(&config, &["user", "show", "bob@example.com"], "");
    assert!(show.stdout.contains("member"), "{}", show.stdout);
    assert!(
        show.stdout.contains("email verified:  no"),
        "{}",
        show.stdout
    );

    let out = run_cli(
        &config,
        &[
            "user",
            "add",
            "cy@example.com",
            "--verified",
            "--password-stdin",
        ],
        "zq8vLw2x-long",
    );
    assert_eq!(out.code, 0, "{out:?}");
    let show = run_cli(&config, &["user", "show", "cy@example.com"], "");
    assert!(
        show.stdout.contains("email verified:  yes"),
        "{}",
        show.stdout
    );
}

#[test]
fn bad_input_fails_with_exit_1_and_a_clear_message() {
    let (_dir, config) = temp_config("");
    let add = |email: &str, password: &str| {
        run_cli(
            &config,
            &["user", "add", email, "--password-stdin"],
            &format!("{password}\n"),
        )
    };
    let weak = add("ada@example.com", "password");
    assert_eq!(weak.code, 1, "{weak:?}");
    assert!(
        weak.stderr
            .contains("This password is too common; choose a less guessable one"),
        "{}",
        weak.stderr
    );
    let short = add("ada@example.com", "abc");
    assert_eq!(short.code, 1, "{short:?}");
    assert!(
        short
            .stderr
            .contains("Password must be at least 8 characters"),
        "{}",
        short.stderr
    );
    let empty = run_cli(
        &config,
        &["user", "add", "ada@example.com", "--password-stdin"],
        "",
    );
    assert_eq!(empty.code, 1, "{empty:?}");
    assert!(empty.stderr.contains("no password"), "{}", empty.stderr);
    // Nothing was created by the failures.
    let list = run_cli(&config, &["user", "list"], "");
    assert_eq!(list.stdout.lines().count(), 1, "{}", list.stdout);

    assert_eq!(add("ada@example.com", "zq8vLw2x-long").code, 0);
    let dup = add("ADA@example.com", "zq8vLw2x-other");
    assert_eq!(dup.code, 1, "{dup:?}");
    assert!(
        dup.stderr
            .contains("a user with email ada@example.com already exists"),
        "{}",
        dup.stderr
    );

    let bad_email = add("not-an-email", "zq8vLw2x-long");
    assert_eq!(bad_email.code, 1);
    assert!(
        bad_email.stderr.contains("invalid email address"),
        "{}",
        bad_email.stderr
    );

    let bad_role = run_cli(
        &config,
        &["user", "set-roles", "ada@example.com", "no spaces"],
        "",
    );
    assert_eq!(bad_role.code, 1);
    assert!(
        bad_role.stderr.contains("invalid role \"no spaces\""),
        "{}",
        bad_role.stderr
    );

    for cmd in ["show", "disable", "enable", "revoke-sessions"] {
        let unknown = run_cli(&config, &["user", cmd, "nobody@example.com"], "");
        assert_eq!(unknown.code, 1, "{cmd}: {unknown:?}");
        assert!(
            unknown
                .stderr
                .contains("no user with email nobody@example.com"),
            "{cmd}: {}",
            unknown.stderr
        );
    }
}

#[test]
fn config_error_names_the_key() {
    let (_dir, config) = temp_config("");
    std::fs::write(
        &config,
        "version: 1\nauth:\n  password: {memory_kib: 1024, iteratons: 1}\n",
    )
    .unwrap();
    let out = run_cli(&config, &["user", "list"], "");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("invalid configuration"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("auth.password"), "{}", out.stderr);

    let missing = run_cli(&config.with_file_name("absent.yaml"), &["user", "list"], "");
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("cannot read config file"),
        "{}",
        missing.stderr
    );
}

#[test]
fn delete_asks_for_confirmation() {
    let (_dir, config) = temp_config("");
    let add = run_cli(
        &config,
        &["user", "add", "ada@example.com", "--password-stdin"],
        "zq8vLw2x-long\n",
    );
    assert_eq!(add.code, 0, "{add:?}");
    let id = add.stdout.trim().to_owned();

    for answer in ["", "n\n", "whatever\n"] {
        let no = run_cli(&config, &["user", "delete", "ada@example.com"], answer);
        assert_eq!(no.code, 1, "{answer:?}: {no:?}");
        assert!(no.stderr.contains("Delete user ada@example.com"), "{no:?}");
        assert!(no.stderr.contains("not deleted"), "{no:?}");
    }
    assert_eq!(run_cli(&config, &["user", "show", &id], "").code, 0);

    let yes = run_cli(&config, &["user", "delete", "ada@example.com"], "y\n");
    assert_eq!(yes.code, 0, "{yes:?}");
    let gone = run_cli(&config, &["user", "show", &id], "");
    assert_eq!(gone.code, 1, "{gone:?}");

    // --yes does not read stdin at all; the email is free again.
    let again = run_cli(
        &config,
        &["user", "add", "ada@example.com", "--password-stdin"],
        "zq8vLw2x-long\n",
    );
    assert_eq!(again.code, 0, "{again:?}");
    let forced = run_cli(&config, &["user", "delete", "--yes", "ada@example.com"], "");
    assert_eq!(forced.code, 0, "{forced:?}");
}

// ---- against a running gateway ----

async fn post_json(url: &str, body: serde_json::Value) -> Resp {
    send(
        req("POST", url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap(),
    )
    .await
    .unwrap()
}

async fn get_bearer(url: &str, token: &str) -> Resp {
    send(
        req("GET", url)
            .header("authorization", format!("Bearer {token}"))
            .body(Full::default())
            .unwrap(),
    )
    .await
    .unwrap()
}

/// Access and refresh token from a login or refresh answer.
fn tokens(r: &Resp) -> (String, String) {
    let v = r.json();
    (
        v["access_token"].as_str().unwrap().to_owned(),
        v["refresh_token"].as_str().unwrap().to_owned(),
    )
}

async fn login(gw: &Gateway, email: &str, password: &str) -> Resp {
    post_json(
        &gw.url("/api/auth/login"),
        serde_json::json!({"email": email, "password": password}),
    )
    .await
}

async fn refresh(gw: &Gateway, refresh_token: &str) -> Resp {
    post_json(
        &gw.url("/api/auth/refresh"),
        serde_json::json!({ "refresh_token": refresh_token }),
    )
    .await
}

/// Polls GET `path` with `token` until it answers `status`, for at most 5 seconds (the server
/// polls the store's change feed every second).
async fn wait_for_status(gw: &Gateway, path: &str, token: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = get_bearer(&gw.url(path), token).await;
        if r.status == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "GET {path} still answers {} after 5 s (want {status}): {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn cli_changes_reach_a_running_gateway() {
    let gw = Gateway::start(&format!(
        "{FAST_AUTH}routes:\n  - {{path: /admin, upstream: 'builtin:whoami', auth: required, roles: [admin]}}\n  - {{path: /, upstream: 'builtin:whoami', auth: required}}\n"
    ))
    .await;
    let config = gw.path("gateway.yaml");
    let email = "carol@example.com";
    let password = "zq8vLw2x-carol";

    // Added while the server runs: it can log in at once (login reads the store).
    let id = cli_ok(
        &config,
        &["user", "add", email, "--role", "staff", "--password-stdin"],
        &format!("{password}\n"),
    )
    .await;
    let id = id.trim();
    let r = login(&gw, email, password).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (access, refresh_token) = tokens(&r);
    let me = get_bearer(&gw.url("/api/auth/me"), &access).await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["id"], id);
    assert_eq!(me.json()["roles"], serde_json::json!(["staff"]));
    assert_eq!(get_bearer(&gw.url("/admin/x"), &access).await.status, 403);

    // set-roles: the old access token is refused soon, a refresh gives one with the new roles.
    cli_ok(&config, &["user", "set-roles", email, "staff", "admin"], "").await;
    wait_for_status(&gw, "/api/auth/me", &access, 401).await;
    let r = refresh(&gw, &refresh_token).await;
    assert_eq!(r.status, 200, "refresh after set-roles: {}", r.text());
    let (access, refresh_token) = tokens(&r);
    let me = get_bearer(&gw.url("/api/auth/me"), &access).await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["roles"], serde_json::json!(["staff", "admin"]));
    let admin = get_bearer(&gw.url("/admin/x"), &access).await;
    assert_eq!(
        admin.status,
        200,
        "the token carries admin: {}",
        admin.text()
    );

    // revoke-sessions: the access token dies within the poll interval, the refresh token at once.
    cli_ok(&config, &["user", "revoke-sessions", id], "").await;
    wait_for_status(&gw, "/api/auth/me", &access, 401).await;
    assert_eq!(refresh(&gw, &refresh_token).await.status, 401);

    // disable: live tokens refused, login refused; enable: login works again.
    let r = login(&gw, email, password).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (access, refresh_token) = tokens(&r);
    assert_eq!(
        get_bearer(&gw.url("/api/auth/me"), &access).await.status,
        200
    );
    assert_eq!(get_bearer(&gw.url("/anything"), &access).await.status, 200);
    cli_ok(&config, &["user", "disable", email], "").await;
    // A proxied route checks only the token and the in-memory state the change feed updates
    // (`/me` would also re-read the user from the store).
    wait_for_status(&gw, "/anything", &access, 401).await;
    assert_eq!(
        get_bearer(&gw.url("/api/auth/me"), &access).await.status,
        401
    );
    assert_eq!(refresh(&gw, &refresh_token).await.status, 401);
    assert_eq!(login(&gw, email, password).await.status, 401);
    cli_ok(&config, &["user", "enable", email], "").await;
    assert_eq!(login(&gw, email, password).await.status, 200);

    // set-password: old password refused, sessions ended, new password works.
    let (access, _) = tokens(&login(&gw, email, password).await);
    cli_ok(
        &config,
        &["user", "set-password", email, "--password-stdin"],
        "zq8vLw2x-newer\n",
    )
    .await;
    wait_for_status(&gw, "/api/auth/me", &access, 401).await;
    assert_eq!(login(&gw, email, password).await.status, 401);
    assert_eq!(login(&gw, email, "zq8vLw2x-newer").await.status, 200);

    // delete: tokens die, login refused.
    let (access, _) = tokens(&login(&gw, email, "zq8vLw2x-newer").await);
    cli_ok(&config, &["user", "delete", "--yes", email], "").await;
    wait_for_status(&gw, "/anything", &access, 401).await;
    assert_eq!(login(&gw, email, "zq8vLw2x-newer").await.status, 401);
}

/// The `kid` in a JWT's header.
fn kid_of(jwt: &str) -> String {
    use base64::Engine;
    let header = jwt.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["kid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn key_rotation_reaches_a_running_gateway_and_old_tokens_stay_valid() {
    let gw = Gateway::start(FAST_AUTH).await;
    let config = gw.path("gateway.yaml");
    let pw = "correct horse battery";
    let first = signup(&gw, "rotate@example.com", pw).await;
    let old_kid = kid_of(&first.access);

    let out = cli(&config, &["keys", "rotate"], "").await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let new_kid = out
        .stdout
        .strip_prefix("new signing key ")
        .unwrap()
        .trim()
        .to_owned();
    assert_ne!(new_kid, old_kid);

    // The running gateway signs with the new key once it has read the change feed; its JWKS
    // shows that moment (polled: logins are rate limited).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let jwks = get(&gw.url("/.well-known/jwks.json")).await.unwrap().json();
        if jwks.to_string().contains(&new_kid) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never loaded the new key"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fresh = crate::util::login(&gw, "rotate@example.com", pw).await;
    assert_eq!(kid_of(&fresh.access), new_kid);
    // Tokens of both keys verify; the JWKS lists both.
    for token in [&first.access, &fresh.access] {
        let me = get_with(
            &gw.url("/api/auth/me"),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(me.status, 200, "{}", me.text());
    }
    let jwks = get(&gw.url("/.well-known/jwks.json")).await.unwrap().json();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()),
        "{kids:?}"
    );

    let list = cli(&config, &["keys", "list"], "").await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert_eq!(list.stdout.lines().count(), 2, "{}", list.stdout);
    assert!(
        list.stdout
            .lines()
            .any(|l| l.starts_with(&new_kid) && l.ends_with("(signing)")),
        "{}",
        list.stdout
    );
}

#[tokio::test]
async fn keys_rotate_refuses_hs256() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\n{FAST_AUTH}  algorithm: HS256\n  jwt_secret: {}\n",
            "s".repeat(40)
        ),
    )
    .unwrap();
    let out = cli(&config, &["keys", "rotate"], "").await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("HS256"), "{}", out.stderr);
}

/// `gateway check | head -1`: the reader leaves before the output is written. The command ends
/// quietly with success instead of panicking on the closed pipe.
#[test]
fn output_into_a_closed_pipe_is_not_a_panic() {
    let (_dir, config) = temp_config("");
    for args in [&["check"][..], &["user", "list"][..]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("GATEWAY_CONFIG")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "gateway {args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "gateway {args:?}: {stderr}");
    }
}
