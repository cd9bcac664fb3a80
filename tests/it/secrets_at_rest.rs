//! The store and key files at rest: created private whatever the umask, refused when other users
//! can read them, and the store's secrets encrypted with `store.encryption_key` (a copy of the
//! file without the key yields no signing key; a wrong key stops start-up; `gateway keys
//! encrypt` moves them to a new key).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use gateway::store::{Store, seal};

use crate::util::*;

const KEY_A: &str = "correct-horse-battery-staple-0123456789-A";
const KEY_B: &str = "correct-horse-battery-staple-0123456789-B";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("gateway.yaml");
    std::fs::write(
        &path,
        format!(
            "version: 1\nstore:\n  redb: {{path: state/db/gateway.redb}}\n{extra}\n\
             auth: {{password: {{memory_kib: 1024, iterations: 1}}}}\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_new_store_and_its_directories_are_private_whatever_the_umask() {
    for umask in [0o022, 0o000, 0o277] {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), "");
        let out = run_cli_with_umask(
            &config,
            &["user", "add", "ada@example.com", "--password-stdin"],
            "zq8vLw2x-long\n",
            Some(umask),
        );
        assert_eq!(out.code, 0, "umask {umask:o}: {out:?}");
        let db = dir.path().join("state/db/gateway.redb");
        assert_eq!(mode(&db), 0o600, "store file under umask {umask:o}");
        assert_eq!(mode(&dir.path().join("state/db")), 0o700, "umask {umask:o}");
        assert_eq!(mode(&dir.path().join("state")), 0o700, "umask {umask:o}");
    }
}

#[test]
fn a_store_other_users_can_read_or_write_is_refused_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let out = run_cli(
        &config,
        &["user", "add", "ada@example.com", "--password-stdin"],
        "zq8vLw2x-long\n",
    );
    assert_eq!(out.code, 0, "{out:?}");
    let db = dir.path().join("state/db/gateway.redb");
    for open in [0o644, 0o640, 0o606, 0o666] {
        chmod(&db, open);
        for args in [&["check"][..], &["user", "list"], &["serve"]] {
            let out = run_cli(&config, args, "");
            assert_ne!(out.code, 0, "{args:?} with mode {open:o}: {out:?}");
            assert!(
                out.stderr.contains(&db.display().to_string())
                    && out.stderr.contains(&format!("{open:04o}"))
                    && out.stderr.contains("chmod 600"),
                "{args:?}: {}",
                out.stderr
            );
        }
    }
    chmod(&db, 0o600);
    let out = run_cli(&config, &["check"], "");
    assert_eq!(out.code, 0, "{out:?}");
    let out = run_cli(&config, &["user", "list"], "");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("ada@example.com"), "{out:?}");
}

#[tokio::test]
async fn a_tls_key_or_key_file_other_users_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = gateway::tls::self_signed_pem().unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
    let key_path = dir.path().join("key.pem");
    std::fs::write(&key_path, key).unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        "version: 1\nlisten: {http: '127.0.0.1:0', https: '127.0.0.1:0'}\n\
         tls: {cert: cert.pem, key: key.pem, self_signed: false}\n\
         store: {redb: {path: gateway.redb}}\n",
    )
    .unwrap();
    chmod(&key_path, 0o644);
    let out = run_cli(&config, &["check"], "");
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("key.pem") && out.stderr.contains("0644"),
        "{}",
        out.stderr
    );
    let loaded = gateway::config::load(&config).unwrap();
    let listeners = gateway::Listeners::bind(&loaded).await.unwrap();
    let e = match gateway::server::start(listeners, loaded).await {
        Ok(_) => panic!("started with a TLS key others can read"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("key.pem") && e.contains("0644"), "{e}");
    chmod(&key_path, 0o600);
    let out = run_cli(&config, &["check"], "");
    assert_eq!(out.code, 0, "{out:?}");

    // Key files named in the config: the error names the key and its line.
    let secret = dir.path().join("store.key");
    std::fs::write(&secret, format!("{KEY_A}\n")).unwrap();
    chmod(&secret, 0o644);
    std::fs::write(
        &config,
        "version: 1\nstore:\n  redb: {path: gateway.redb}\n  encryption_key_file: store.key\n",
    )
    .unwrap();
    let e = gateway::config::load(&config).unwrap_err().to_string();
    assert!(
        e.contains("store.encryption_key_file")
            && e.contains("gateway.yaml:4:")
            && e.contains("0644"),
        "{e}"
    );
    chmod(&secret, 0o600);
    let loaded = gateway::config::load(&config).unwrap();
    assert_eq!(
        loaded.store_encryption_key.as_ref().unwrap().expose(),
        KEY_A.as_bytes(),
        "the trailing newline is not part of the key"
    );
}

#[test]
fn a_short_encryption_key_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "  encryption_key: too-short");
    let e = gateway::config::load(&config).unwrap_err().to_string();
    assert!(
        e.contains("store.encryption_key") && e.contains("at least 32"),
        "{e}"
    );
    assert!(
        !e.contains("too-short"),
        "the message never quotes the key: {e}"
    );
}

/// The store's secrets as stored, read without any key.
fn raw_secrets(db: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let store = Store::open(db).unwrap();
    gateway::auth::keystore::SECRET_META
        .iter()
        .map(|name| (*name, store.get_meta(name).unwrap().expect(name)))
        .collect()
}

async fn start_with_key(dir: tempfile::TempDir, key: Option<&str>) -> Result<Gateway, String> {
    let yaml = format!(
        "version: 1\nstore:\n  redb: {{path: data/gateway.redb}}\n{}{}",
        key.map(|k| format!("  encryption_key: {k}\n"))
            .unwrap_or_default(),
        auth_config("", "")
    );
    // Start-up errors surface from `server::start`; check them there before `Gateway` panics.
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let config = gateway::config::load(&path).map_err(|e| e.to_string())?;
    let listeners = gateway::Listeners {
        http: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
        https: None,
        admin: None,
    };
    match gateway::server::start(listeners, config).await {
        Ok(running) => running.shutdown().await,
        Err(e) => return Err(e.to_string()),
    }
    Ok(Gateway::start_in(dir, &yaml).await)
}

#[tokio::test]
async fn secrets_are_encrypted_at_rest_and_open_only_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/gateway.redb");

    // First start with a key: the keys are created encrypted.
    let gw = start_with_key(dir, Some(KEY_A)).await.unwrap();
    let tokens = signup(&gw, "ada@example.com", "zq8vLw2x-long").await;
    assert_eq!(me_status(&gw, &tokens.access).await, 200);
    let dir = gw.shutdown().await;

    for (name, raw) in raw_secrets(&db) {
        assert!(seal::is_sealed(&raw), "{name} is encrypted at rest");
    }
    // Nothing in the file looks like the Ed25519 key set's JSON.
    let file = std::fs::read(&db).unwrap();
    assert!(
        !file.windows(7).any(|w| w == b"\"kid\":\""),
        "no key set in the clear"
    );

    // No key, or another key: start-up stops with a message that says why.
    let dir = {
        let e = start_with_key(dir_copy(&dir), None).await.err().unwrap();
        assert!(
            e.contains("is encrypted") && e.contains("store.encryption_key"),
            "{e}"
        );
        let e = start_with_key(dir_copy(&dir), Some(KEY_B))
            .await
            .err()
            .unwrap();
        assert!(e.contains("another store.encryption_key"), "{e}");
        assert!(
            !e.contains(KEY_A) && !e.contains(KEY_B),
            "no key in messages: {e}"
        );
        dir
    };

    // The right key: the same signing key, so the token from before is still good.
    let gw = start_with_key(dir, Some(KEY_A)).await.unwrap();
    assert_eq!(me_status(&gw, &tokens.access).await, 200);
    let dir = gw.shutdown().await;

    // `gateway keys encrypt` moves them to key B; then only B starts, tokens survive.
    let config = dir.path().join("gateway.yaml");
    let new_key = dir.path().join("new.key");
    std::fs::write(&new_key, KEY_B).unwrap();
    chmod(&new_key, 0o600);
    let out = run_cli(
        &config,
        &[
            "keys",
            "encrypt",
            "--new-key-file",
            new_key.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("3 secrets"), "{out:?}");
    let e = start_with_key(dir_copy(&dir), Some(KEY_A))
        .await
        .err()
        .unwrap();
    assert!(e.contains("another store.encryption_key"), "{e}");
    let gw = start_with_key(dir, Some(KEY_B)).await.unwrap();
    assert_eq!(me_status(&gw, &tokens.access).await, 200);
    let dir = gw.shutdown().await;

    // And back to the clear.
    let out = run_cli(&dir.path().join("gateway.yaml"), &["keys", "decrypt"], "");
    assert_eq!(out.code, 0, "{out:?}");
    for (name, raw) in raw_secrets(&db) {
        assert!(!seal::is_sealed(&raw), "{name} in the clear again");
    }
    let gw = start_with_key(dir, None).await.unwrap();
    assert_eq!(me_status(&gw, &tokens.access).await, 200);
}

#[tokio::test]
async fn a_key_added_to_an_existing_store_encrypts_its_secrets_at_start() {
    let gw = start_with_key(tempfile::tempdir().unwrap(), None)
        .await
        .unwrap();
    let tokens = signup(&gw, "ada@example.com", "zq8vLw2x-long").await;
    let dir = gw.shutdown().await;
    let db = dir.path().join("data/gateway.redb");
    for (name, raw) in raw_secrets(&db) {
        assert!(!seal::is_sealed(&raw), "{name} starts in the clear");
    }
    let gw = start_with_key(dir, Some(KEY_A)).await.unwrap();
    assert_eq!(
        me_status(&gw, &tokens.access).await,
        200,
        "same signing key"
    );
    let refreshed = refresh(&gw, &tokens.refresh).await;
    assert_eq!(
        refreshed.status,
        200,
        "same refresh key: {}",
        refreshed.text()
    );
    let _dir = gw.shutdown().await;
    for (name, raw) in raw_secrets(&db) {
        assert!(
            seal::is_sealed(&raw),
            "{name} encrypted by the start with a key"
        );
    }
}

/// A copy of a gateway's directory (its config and store), for a start that is expected to fail
/// without touching the original.
fn dir_copy(from: &tempfile::TempDir) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    copy_tree(from.path(), to.path());
    to
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            chmod(&target, 0o700);
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
