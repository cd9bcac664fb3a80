//! The store contract for linked single sign-on identities, on both backends: one identity per
//! (provider, subject) and per (user, provider), read-modify-write in one transaction across
//! handles and replicas, encrypted with the store key, gone with the user, carried by
//! export/import, and added to a store of the previous schema in place.

use std::sync::{Arc, Barrier};

use gateway::secret::Secret;
use gateway::store::{LinkedIdentity, Store, StoreError, seal};

use crate::pg::PgServer;
use crate::store::{on_each_backend, postgres, redb, settings, user};

fn identity(provider: &str, subject: &str, user_id: &str) -> LinkedIdentity {
    LinkedIdentity {
        provider: provider.into(),
        subject: subject.into(),
        user_id: user_id.into(),
        email: Some(format!("{subject}@idp.test")),
        linked_at: 100,
        last_login_at: 100,
        checked_at: 100,
        groups: vec!["staff".into()],
        refresh_token: Some(format!("rt-{provider}-{subject}")),
    }
}

fn key(fill: u8) -> Secret<Vec<u8>> {
    Secret::new(vec![fill; 40])
}

#[test]
fn identities_are_linked_once_listed_by_provider_and_unlinked() {
    on_each_backend(|b| {
        let s = &b.store;
        let name = b.name;
        s.create_user(&user("u1", "ada@x.test")).unwrap();
        s.create_user(&user("u2", "bob@x.test")).unwrap();
        assert_eq!(s.identity("okta", "s1").unwrap(), None, "{name}");
        assert!(s.identities_of("u1").unwrap().is_empty());

        // Linked in an order that is not the providers' ("Zed" sorts before "google" by byte).
        for (provider, subject) in [("okta", "s1"), ("google", "g1"), ("Zed", "z1")] {
            s.link_identity(&identity(provider, subject, "u1")).unwrap();
        }
        assert_eq!(
            s.identity("okta", "s1").unwrap(),
            Some(identity("okta", "s1", "u1")),
            "{name}"
        );
        assert_eq!(s.identity("okta", "g1").unwrap(), None, "{name}");
        let providers: Vec<String> = s
            .identities_of("u1")
            .unwrap()
            .into_iter()
            .map(|i| i.provider)
            .collect();
        assert_eq!(providers, ["Zed", "google", "okta"], "{name}");
        assert_eq!(
            s.identities_of("u1").unwrap()[1],
            identity("google", "g1", "u1")
        );
        assert!(s.identities_of("u2").unwrap().is_empty(), "{name}");

        // The same subject again (to the same user or another), or a second identity at a
        // provider: taken, and nothing changes.
        for taken in [
            identity("okta", "s1", "u2"),
            identity("okta", "s1", "u1"),
            identity("okta", "s2", "u1"),
        ] {
            match s.link_identity(&taken) {
                Err(StoreError::IdentityTaken) => {}
                other => panic!("{name}: {taken:?}: {other:?}"),
            }
        }
        match s.link_identity(&identity("okta", "s9", "nobody")) {
            Err(StoreError::NotFound) => {}
            other => panic!("{name}: a missing user: {other:?}"),
        }
        assert_eq!(s.identities_of("u1").unwrap().len(), 3, "{name}");
        assert!(s.identities_of("u2").unwrap().is_empty(), "{name}");
        assert_eq!(s.identity("okta", "s9").unwrap(), None, "{name}");

        // Unlinking frees both the subject and the user's place at the provider.
        assert!(!s.unlink_identity("u2", "okta").unwrap(), "{name}");
        assert!(!s.unlink_identity("u1", "github").unwrap(), "{name}");
        assert!(s.unlink_identity("u1", "okta").unwrap(), "{name}");
        assert!(!s.unlink_identity("u1", "okta").unwrap(), "{name}");
        assert_eq!(s.identity("okta", "s1").unwrap(), None, "{name}");
        s.link_identity(&identity("okta", "s1", "u2")).unwrap();
        s.link_identity(&identity("okta", "s3", "u1")).unwrap();
        assert_eq!(
            s.identity("okta", "s1").unwrap().unwrap().user_id,
            "u2",
            "{name}"
        );

        // Another handle (process, replica) sees it all.
        let other = (b.reopen)();
        assert_eq!(
            other.identities_of("u1").unwrap(),
            s.identities_of("u1").unwrap(),
            "{name}"
        );
    });
}

#[test]
fn deleting_a_user_deletes_their_identities() {
    on_each_backend(|b| {
        let s = &b.store;
        let name = b.name;
        s.create_user(&user("u1", "ada@x.test")).unwrap();
        s.create_user(&user("u2", "bob@x.test")).unwrap();
        s.link_identity(&identity("okta", "s1", "u1")).unwrap();
        s.link_identity(&identity("google", "g1", "u1")).unwrap();
        s.link_identity(&identity("okta", "s2", "u2")).unwrap();
        assert!(s.delete_user("u1", 200).unwrap());
        assert_eq!(s.identity("okta", "s1").unwrap(), None, "{name}");
        assert_eq!(s.identity("google", "g1").unwrap(), None, "{name}");
        assert!(s.identities_of("u1").unwrap().is_empty(), "{name}");
        let left: Vec<_> = s
            .export(0)
            .unwrap()
            .identities
            .into_iter()
            .map(|i| (i.provider, i.subject, i.user_id))
            .collect();
        assert_eq!(left, [("okta".into(), "s2".into(), "u2".into())], "{name}");
        assert!(matches!(
            s.update_identity("okta", "s1", |_| Ok(())),
            Err(StoreError::NotFound)
        ));
        // A new user with the old id starts without them, and the subject is free.
        s.create_user(&user("u1", "ada@x.test")).unwrap();
        assert!(s.identities_of("u1").unwrap().is_empty(), "{name}");
        s.link_identity(&identity("okta", "s1", "u1")).unwrap();
    });
}

#[test]
fn concurrent_updates_and_links_lose_nothing() {
    on_each_backend(|b| {
        let s = &b.store;
        let name = b.name;
        s.create_user(&user("u1", "ada@x.test")).unwrap();
        s.link_identity(&identity("okta", "s1", "u1")).unwrap();

        // Four threads on two handles each bump the check time and add a group, 15 times: an
        // update that read before another committed and wrote after it would lose a bump.
        let other = (b.reopen)();
        let (threads, rounds) = (4, 15);
        let barrier = Arc::new(Barrier::new(threads));
        std::thread::scope(|scope| {
            for t in 0..threads {
                let store = if t % 2 == 0 { s.clone() } else { other.clone() };
                let barrier = barrier.clone();
                scope.spawn(move || {
                    barrier.wait();
                    for r in 0..rounds {
                        let seen = store
                            .update_identity("okta", "s1", |i| {
                                i.checked_at += 1;
                                i.groups.push(format!("t{t}r{r}"));
                                Ok(i.checked_at)
                            })
                            .unwrap();
                        assert!(seen > 100);
                    }
                });
            }
        });
        let now = s.identity("okta", "s1").unwrap().unwrap();
        let total = (threads * rounds) as u64;
        assert_eq!(now.checked_at, 100 + total, "{name}: lost updates");
        assert_eq!(now.groups.len(), 1 + threads * rounds, "{name}");
        assert_eq!(now.refresh_token.as_deref(), Some("rt-okta-s1"));

        // What `change` returns comes back; a refusal writes nothing.
        let refused = s.update_identity("okta", "s1", |i| -> Result<(), StoreError> {
            i.refresh_token = None;
            Err(StoreError::Io("refused".into()))
        });
        assert!(matches!(refused, Err(StoreError::Io(_))), "{name}");
        assert_eq!(s.identity("okta", "s1").unwrap().unwrap(), now, "{name}");
        let email = s
            .update_identity("okta", "s1", |i| Ok(i.email.take()))
            .unwrap();
        assert_eq!(email.as_deref(), Some("s1@idp.test"));
        assert_eq!(s.identity("okta", "s1").unwrap().unwrap().email, None);

        // Six users link the same subject at once: exactly one gets it. Then six links of one
        // user at one provider, each with its own subject: exactly one again.
        for i in 0..6 {
            s.create_user(&user(&format!("r{i}"), &format!("r{i}@x.test")))
                .unwrap();
        }
        for same_subject in [true, false] {
            let barrier = Arc::new(Barrier::new(6));
            let outcomes: Vec<Result<(), StoreError>> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..6)
                    .map(|i| {
                        let store = if i % 2 == 0 { s.clone() } else { other.clone() };
                        let barrier = barrier.clone();
                        let linked = if same_subject {
                            identity("google", "shared", &format!("r{i}"))
                        } else {
                            identity("github", &format!("gh{i}"), "r0")
                        };
                        scope.spawn(move || {
                            barrier.wait();
                            store.link_identity(&linked)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let won = outcomes.iter().filter(|o| o.is_ok()).count();
            let taken = outcomes
                .iter()
                .filter(|o| matches!(o, Err(StoreError::IdentityTaken)))
                .count();
            assert_eq!((won, taken), (1, 5), "{name}: {outcomes:?}");
        }
        let shared = s.identity("google", "shared").unwrap().unwrap();
        let of_r0 = s.identities_of("r0").unwrap();
        let expected = if shared.user_id == "r0" { 2 } else { 1 };
        assert_eq!(of_r0.len(), expected, "{name}: {of_r0:?}");
    });
}

#[test]
fn identities_are_encrypted_with_the_store_key() {
    on_each_backend(|b| {
        let name = b.name;
        b.store.create_user(&user("u1", "ada@x.test")).unwrap();
        b.store.create_user(&user("u2", "bob@x.test")).unwrap();
        // One linked in the clear before a key was configured.
        b.store
            .link_identity(&identity("okta", "plain", "u2"))
            .unwrap();
        let sealed = b.store.clone().with_encryption(Some(&key(1))).unwrap();
        sealed
            .link_identity(&identity("okta", "secret", "u1"))
            .unwrap();
        let raw = |store: &Store, subject: &str| {
            let snap = store.export(0).unwrap();
            snap.identities
                .into_iter()
                .find(|i| i.subject == subject)
                .map(|i| i.value)
                .unwrap()
        };
        let stored = raw(&b.store, "secret");
        assert!(seal::is_sealed(&stored), "{name}");
        assert!(
            !stored.windows(14).any(|w| w == b"rt-okta-secret"),
            "{name}"
        );
        match (b.reopen)().identity("okta", "secret") {
            Err(StoreError::Sealed(_)) => {}
            r => panic!("{name}: read without the key: {r:?}"),
        }
        assert!((b.reopen)().identities_of("u1").is_err(), "{name}");
        let other_key = b.store.clone().with_encryption(Some(&key(2))).unwrap();
        assert!(matches!(
            other_key.identity("okta", "secret"),
            Err(StoreError::Sealed(_))
        ));
        assert_eq!(
            sealed.identity("okta", "secret").unwrap(),
            Some(identity("okta", "secret", "u1"))
        );
        // An update under the key keeps it sealed.
        sealed
            .update_identity("okta", "secret", |i| {
                i.refresh_token = Some("rt-rotated".into());
                Ok(())
            })
            .unwrap();
        assert!(seal::is_sealed(&raw(&b.store, "secret")), "{name}");

        // Start-up with the key seals what was in the clear; without a key, start-up refuses
        // a store holding sealed identities; `keys decrypt` opens them all again.
        assert!(!seal::is_sealed(&raw(&b.store, "plain")), "{name}");
        assert!(matches!(
            b.store.seal_secrets(&[]),
            Err(StoreError::Sealed(_))
        ));
        assert!(sealed.seal_secrets(&[]).unwrap() >= 1, "{name}");
        assert!(seal::is_sealed(&raw(&b.store, "plain")), "{name}");
        assert_eq!(sealed.seal_secrets(&[]).unwrap(), 0, "{name}: nothing left");
        assert!(sealed.reseal_secrets(&[], None).unwrap() >= 2, "{name}");
        let plain = (b.reopen)();
        assert!(!seal::is_sealed(&raw(&plain, "secret")), "{name}");
        assert_eq!(
            plain
                .identity("okta", "secret")
                .unwrap()
                .unwrap()
                .refresh_token
                .as_deref(),
            Some("rt-rotated")
        );
        assert_eq!(
            plain.identity("okta", "plain").unwrap(),
            Some(identity("okta", "plain", "u2"))
        );
        assert_eq!(plain.seal_secrets(&[]).unwrap(), 0, "{name}");
        // Rotating to another key opens each under the old one and seals it under the new.
        let next = seal::SealKey::derive(&[3; 40]).unwrap();
        assert!(
            plain.reseal_secrets(&[], Some(&next)).unwrap() >= 2,
            "{name}"
        );
        let rotated = b.store.clone().with_encryption(Some(&key(3))).unwrap();
        assert!(
            rotated.identity("okta", "plain").unwrap().is_some(),
            "{name}"
        );
        assert!(sealed.identity("okta", "plain").is_err(), "{name}");
    });
}

/// The refresh token of a linked identity never reaches the redb file in the clear when a key
/// is configured; without one it does (which shows the search would find it).
#[test]
fn a_sealed_refresh_token_is_not_in_the_redb_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.redb");
    let plain = Store::open(&path).unwrap();
    let sealed = plain.clone().with_encryption(Some(&key(1))).unwrap();
    plain.create_user(&user("u1", "ada@x.test")).unwrap();
    plain.create_user(&user("u2", "bob@x.test")).unwrap();
    let secret = "rt-SEALED-5f3a9c1e7d2b4a6f8e0c";
    let mut linked = identity("okta", "s1", "u1");
    linked.refresh_token = Some(secret.into());
    sealed.link_identity(&linked).unwrap();
    sealed
        .update_identity("okta", "s1", |i| {
            i.last_login_at = 300;
            Ok(())
        })
        .unwrap();
    drop((plain, sealed));
    let contains = |needle: &str| {
        let bytes = std::fs::read(&path).unwrap();
        bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
    };
    assert!(!contains(secret), "the sealed refresh token is in the file");
    assert!(contains("okta"), "the keys are in the clear");

    let control = "rt-CLEAR-0b1d3f5a7c9e2d4f6a8c";
    let plain = Store::open(&path).unwrap();
    let mut linked = identity("okta", "s2", "u2");
    linked.refresh_token = Some(control.into());
    plain.link_identity(&linked).unwrap();
    drop(plain);
    assert!(contains(control), "a token stored in the clear is found");
    assert!(!contains(secret));
}

fn sample_identities(s: &Store) {
    s.create_user(&user("u1", "ada@x.test")).unwrap();
    s.create_user(&user("u2", "bob@x.test")).unwrap();
    s.link_identity(&identity("okta", "s1", "u1")).unwrap();
    s.link_identity(&identity("google", "g1", "u1")).unwrap();
    let mut bare = identity("okta", "s2", "u2");
    (bare.email, bare.refresh_token, bare.groups) = (None, None, Vec::new());
    s.link_identity(&bare).unwrap();
}

fn check_identities(s: &Store, name: &str) {
    assert_eq!(
        s.identities_of("u1").unwrap(),
        vec![identity("google", "g1", "u1"), identity("okta", "s1", "u1")],
        "{name}"
    );
    let bare = s.identity("okta", "s2").unwrap().unwrap();
    assert_eq!(
        (bare.user_id.as_str(), bare.email, bare.refresh_token),
        ("u2", None, None),
        "{name}"
    );
    // The uniqueness rules came along.
    assert!(matches!(
        s.link_identity(&identity("okta", "s1", "u2")),
        Err(StoreError::IdentityTaken)
    ));
    assert!(matches!(
        s.link_identity(&identity("google", "g2", "u1")),
        Err(StoreError::IdentityTaken)
    ));
}

fn sorted(snap: &gateway::store::Snapshot) -> Vec<gateway::store::StoredIdentity> {
    let mut rows = snap.identities.clone();
    rows.sort_by(|a, b| (&a.provider, &a.subject).cmp(&(&b.provider, &b.subject)));
    rows
}

/// redb -> PostgreSQL -> redb (what `gateway migrate` does both ways) keeps every identity,
/// sealed as it was: the targets open them with the same key.
#[test]
fn identities_survive_a_migration_round_trip() {
    let with_key = |s: &Store| s.clone().with_encryption(Some(&key(1))).unwrap();
    let source = redb();
    let src = with_key(&source.store);
    sample_identities(&src);
    let snap = src.export(100).unwrap();
    assert_eq!(snap.identities.len(), 3);
    assert!(snap.identities.iter().all(|i| seal::is_sealed(&i.value)));

    let middle = postgres().unwrap_or_else(redb);
    let mid = with_key(&middle.store);
    mid.import(&snap).unwrap();
    let copied = mid.export(100).unwrap();
    assert_eq!(sorted(&copied), sorted(&snap), "{}", middle.name);
    check_identities(&mid, middle.name);
    assert!(middle.store.identity("okta", "s1").is_err(), "still sealed");

    let back = redb();
    let end = with_key(&back.store);
    end.import(&copied).unwrap();
    assert_eq!(sorted(&end.export(100).unwrap()), sorted(&snap));
    check_identities(&end, "back in redb");

    // An identity whose user is not in the snapshot is refused, and nothing is written.
    let mut orphan = snap.clone();
    orphan.users.retain(|u| u.id != "u2");
    let target = redb();
    assert!(target.store.import(&orphan).is_err());
    assert_eq!(target.store.user_count().unwrap(), 0);
    if let Some(pg) = postgres() {
        assert!(pg.store.import(&orphan).is_err());
        assert_eq!(pg.store.user_count().unwrap(), 0);
    }
}

/// A redb file as a schema-3 gateway left it (no identity tables, version 3) opens, gains
/// the tables and keeps its data.
#[test]
fn a_redb_file_of_schema_3_is_upgraded_in_place() {
    use redb::{Builder, ConcurrencyMode, ReadableDatabase, TableDefinition};
    const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
    const IDENTITIES: TableDefinition<(&str, &str), (&str, &[u8])> =
        TableDefinition::new("identities");
    const USER_IDENTITIES: TableDefinition<(&str, &str), &str> =
        TableDefinition::new("user_identities");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.redb");
    {
        let store = Store::open(&path).unwrap();
        store.create_user(&user("u1", "ada@x.test")).unwrap();
        store.put_meta("refresh_key", &[7; 32]).unwrap();
    }
    let open_raw = || {
        Builder::new()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .create(&path)
            .unwrap()
    };
    {
        let db = open_raw();
        let txn = db.begin_write().unwrap();
        assert!(txn.delete_table(IDENTITIES).unwrap());
        assert!(txn.delete_table(USER_IDENTITIES).unwrap());
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", b"3".as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let version = || {
        let db = open_raw();
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        let v = meta
            .get("schema_version")
            .unwrap()
            .unwrap()
            .value()
            .to_vec();
        String::from_utf8(v).unwrap()
    };
    assert_eq!(version(), "3");

    let store = Store::open(&path).unwrap();
    assert!(store.user_by_id("u1").unwrap().is_some());
    assert_eq!(store.get_meta("refresh_key").unwrap(), Some(vec![7; 32]));
    assert!(store.identities_of("u1").unwrap().is_empty());
    store.link_identity(&identity("okta", "s1", "u1")).unwrap();
    drop(store);
    assert_eq!(version(), "4");
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.identities_of("u1").unwrap(),
        vec![identity("okta", "s1", "u1")]
    );
}

/// Builds the database at `url` as a gateway of schema `version` left it (its migrations, run
/// outside the store), then runs `rows`.
fn database_of_schema(url: &str, version: usize, rows: &str) {
    let migrations: Vec<&str> = (1..=version)
        .map(|v| gateway::store::postgres::migration_sql(v).unwrap())
        .collect();
    let versions: Vec<String> = (1..=version).map(|v| format!("({v})")).collect();
    crate::store::batch(
        url,
        &format!(
            "CREATE TABLE gateway_schema_migrations (
                 version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
             {}
             INSERT INTO gateway_schema_migrations (version) VALUES {};
             {rows}",
            migrations.join("\n"),
            versions.join(", ")
        ),
    );
}

/// A PostgreSQL database as a schema-3 gateway left it gains `gateway_identities` at start-up
/// and keeps its users; the new table follows them (deleted with their user).
#[test]
fn a_postgres_database_of_schema_3_is_upgraded_in_place() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.create_database("schema3");
    database_of_schema(
        &url,
        3,
        "INSERT INTO gateway_users VALUES
             ('u1', 'ada@x.test', 'Ada', '$argon2id$x', '{admin}', false, 10, 10, 0, true);
         INSERT INTO gateway_factors VALUES ('u1', '\\x7b7d');",
    );
    let store = Store::connect(&gateway::config::StoreSettings::Postgres(settings(&url))).unwrap();
    assert_eq!(
        crate::store::query(
            &url,
            "SELECT version FROM gateway_schema_migrations ORDER BY version"
        ),
        (1..=gateway::store::postgres::SCHEMA_VERSION).collect::<Vec<_>>()
    );
    let ada = store.user_by_id("u1").unwrap().unwrap();
    assert!(ada.email_verified);
    assert!(!store.factors_of("u1").unwrap().any());
    assert!(store.identities_of("u1").unwrap().is_empty());
    store.link_identity(&identity("okta", "s1", "u1")).unwrap();
    assert_eq!(
        store.identity("okta", "s1").unwrap(),
        Some(identity("okta", "s1", "u1"))
    );
    assert!(store.delete_user("u1", 50).unwrap());
    assert_eq!(
        crate::store::query(&url, "SELECT count(*)::int4 FROM gateway_identities"),
        vec![0]
    );
}

/// A PostgreSQL database as a schema-4 gateway left it: the upgrade drops a factor row whose
/// user is gone and ties the rest to their users, so that a user row deleted by any means takes
/// its second factors with it (as `gateway_identities` already did).
#[test]
fn a_postgres_database_of_schema_4_ties_factors_to_their_users() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.create_database("schema4");
    database_of_schema(
        &url,
        4,
        "INSERT INTO gateway_users VALUES
             ('u1', 'ada@x.test', 'Ada', '$argon2id$x', '{}', false, 10, 10, 0, true),
             ('u2', 'bob@x.test', 'Bob', '$argon2id$x', '{}', false, 10, 10, 0, true);
         INSERT INTO gateway_factors VALUES
             ('u1', '\\x7b7d'), ('u2', '\\x7b7d'), ('gone', '\\x7b7d');",
    );
    let count = |sql: &str| crate::store::query(&url, sql);
    let _store = Store::connect(&gateway::config::StoreSettings::Postgres(settings(&url))).unwrap();
    assert_eq!(
        count("SELECT max(version) FROM gateway_schema_migrations"),
        vec![5]
    );
    assert_eq!(
        count("SELECT count(*)::int4 FROM gateway_factors WHERE user_id = 'gone'"),
        vec![0],
        "the orphaned factor row stays"
    );
    assert_eq!(count("SELECT count(*)::int4 FROM gateway_factors"), vec![2]);
    // A user row deleted outside the gateway takes its factors along.
    crate::store::batch(&url, "DELETE FROM gateway_users WHERE id = 'u1'");
    assert_eq!(
        count("SELECT count(*)::int4 FROM gateway_factors WHERE user_id = 'u1'"),
        vec![0],
        "u1's factors outlived u1"
    );
    assert_eq!(count("SELECT count(*)::int4 FROM gateway_factors"), vec![1]);
    // And no factor row can name a user that does not exist.
    let orphan = crate::store::try_batch(
        &url,
        "INSERT INTO gateway_factors VALUES ('nobody', '\\x7b7d')",
    );
    assert!(
        orphan.is_err(),
        "a factor row without its user was accepted"
    );
}
