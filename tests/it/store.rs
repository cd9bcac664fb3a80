//! The store contract, checked the same way on both backends: a redb file and a private
//! PostgreSQL server (skipped without PostgreSQL unless `GATEWAY_REQUIRE_POSTGRES` is set).
//! Races are real: threads hammer one store (or two handles on it) at once.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

use gateway::config::PostgresSettings;
use gateway::store::{
    Change, JtiRange, RefreshRecord, RefreshState, Rotation, Snapshot, Store, StoreError, User,
    UserFlags,
};

use crate::pg::PgServer;

/// A store under test and what keeps it alive.
pub(crate) struct Backend {
    pub(crate) name: &'static str,
    pub(crate) store: Store,
    /// Opens a second, independent handle on the same data (another process or replica).
    pub(crate) reopen: Box<dyn Fn() -> Store + Send + Sync>,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<Arc<PgServer>>,
}

pub(crate) fn redb() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.redb");
    let store = Store::open(&path).unwrap();
    Backend {
        name: "redb",
        store,
        reopen: Box::new(move || Store::open(&path).unwrap()),
        _dir: Some(dir),
        _pg: None,
    }
}

pub(crate) fn settings(url: &str) -> PostgresSettings {
    PostgresSettings::with_url(url.to_owned())
}

pub(crate) fn postgres() -> Option<Backend> {
    let pg = Arc::new(PgServer::start()?);
    let url = pg.create_database("store");
    let store = Store::connect(&gateway::config::StoreSettings::Postgres(settings(&url))).unwrap();
    Some(Backend {
        name: "postgres",
        store,
        reopen: Box::new(move || {
            Store::connect(&gateway::config::StoreSettings::Postgres(settings(&url))).unwrap()
        }),
        _dir: None,
        _pg: Some(pg),
    })
}

/// Runs `check` against redb and, when available, PostgreSQL.
pub(crate) fn on_each_backend(check: impl Fn(&Backend)) {
    let mut backends = vec![redb()];
    backends.extend(postgres());
    for b in &backends {
        eprintln!("store contract on {}", b.name);
        check(b);
    }
}

pub(crate) fn user(id: &str, email: &str) -> User {
    User {
        id: id.into(),
        email: email.into(),
        name: Some("Ada".into()),
        password_hash: "$argon2id$v=19$stand-in".into(),
        roles: vec!["admin".into(), "ops".into()],
        disabled: false,
        created_at: 10,
        updated_at: 10,
        session_version: 0,
        email_verified: false,
    }
}

pub(crate) fn refresh(family: &str, user_id: &str, expires: u64) -> RefreshRecord {
    RefreshRecord {
        family: family.into(),
        user_id: user_id.into(),
        issued_at: 100,
        family_expires_at: expires,
        state: RefreshState::Active,
        amr: Vec::new(),
        provider: None,
    }
}

pub(crate) fn hash(n: u32) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[..4].copy_from_slice(&n.to_be_bytes());
    h[31] = 0xAB;
    h
}

#[test]
fn users_are_unique_by_id_and_email_and_edits_keep_the_index() {
    on_each_backend(|b| {
        let s = &b.store;
        let ada = user("u1", "ada@x.test");
        s.create_user(&ada).unwrap();
        assert_eq!(s.user_by_id("u1").unwrap(), Some(ada.clone()), "{}", b.name);
        assert_eq!(s.user_by_email("ada@x.test").unwrap(), Some(ada.clone()));
        assert!(matches!(
            s.create_user(&user("u2", "ada@x.test")),
            Err(StoreError::EmailTaken)
        ));
        assert!(matches!(
            s.create_user(&user("u1", "other@x.test")),
            Err(StoreError::IdTaken)
        ));
        s.create_user(&user("u2", "bob@x.test")).unwrap();
        assert_eq!(s.user_count().unwrap(), 2);

        // Changing to a taken email is refused and changes nothing.
        let taken = s.modify_user("u2", |u| {
            u.email = "ada@x.test".into();
            Ok(())
        });
        assert!(matches!(taken, Err(StoreError::EmailTaken)), "{}", b.name);
        assert_eq!(s.user_by_email("bob@x.test").unwrap().unwrap().id, "u2");

        // A free email moves the index; the old one is free again.
        let moved = s
            .modify_user("u2", |u| {
                u.email = "robert@x.test".into();
                u.session_version = 0;
                Ok(())
            })
            .unwrap();
        assert_eq!(moved.email, "robert@x.test");
        assert_eq!(s.user_by_email("bob@x.test").unwrap(), None);
        assert_eq!(s.user_by_email("robert@x.test").unwrap().unwrap().id, "u2");

        // The session version never goes down, and a refused edit writes nothing.
        let ended = s.end_all_sessions("u2", 50).unwrap().unwrap();
        assert_eq!(ended.session_version, 1);
        let stale_write = s
            .modify_user("u2", |u| {
                u.session_version = 0;
                u.name = Some("Rob".into());
                Ok(())
            })
            .unwrap();
        assert_eq!(stale_write.session_version, 1, "{}", b.name);
        assert!(matches!(
            s.modify_user("u2", |_| Err(StoreError::NotFound)),
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            s.modify_user("nobody", |_| Ok(())),
            Err(StoreError::NotFound)
        ));
        assert_eq!(
            s.flags_of("u2").unwrap(),
            Some(UserFlags {
                disabled: false,
                session_version: 1
            })
        );

        let listed: Vec<String> = s.list_users().unwrap().into_iter().map(|u| u.id).collect();
        assert_eq!(listed, ["u1", "u2"]);

        // Deleting leaves a disabled flag row and frees the email.
        assert!(s.delete_user("u1", 60).unwrap());
        assert!(!s.delete_user("u1", 60).unwrap());
        assert_eq!(s.user_by_email("ada@x.test").unwrap(), None);
        assert!(s.flags_of("u1").unwrap().unwrap().disabled);
        let flags: BTreeSet<String> = s
            .user_flags()
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(flags, BTreeSet::from(["u1".into(), "u2".into()]));
    });
}

#[test]
fn refresh_tokens_rotate_once_and_die_with_their_family() {
    on_each_backend(|b| {
        let s = &b.store;
        s.create_user(&user("u1", "ada@x.test")).unwrap();
        s.insert_refresh(&hash(1), &refresh("f1", "u1", 1000))
            .unwrap();
        assert!(
            s.insert_refresh(&hash(1), &refresh("f1", "u1", 1000))
                .is_err(),
            "{}: a duplicate hash is refused",
            b.name
        );
        match s.rotate_refresh(&hash(1), &hash(2), 200).unwrap() {
            Rotation::Rotated(old) => assert_eq!(old.state, RefreshState::Active),
            other => panic!("{}: {other:?}", b.name),
        }
        assert_eq!(
            s.get_refresh(&hash(1)).unwrap().unwrap().state,
            RefreshState::Rotated { at: 200 }
        );
        let next = s.get_refresh(&hash(2)).unwrap().unwrap();
        assert_eq!((next.issued_at, next.state), (200, RefreshState::Active));
        assert!(matches!(
            s.rotate_refresh(&hash(1), &hash(3), 201).unwrap(),
            Rotation::AlreadyRotated { at: 200, .. }
        ));
        assert_eq!(s.get_refresh(&hash(3)).unwrap(), None, "nothing written");
        assert_eq!(
            s.rotate_refresh(&hash(9), &hash(10), 201).unwrap(),
            Rotation::Invalid
        );
        // Expired family.
        assert_eq!(
            s.rotate_refresh(&hash(2), &hash(4), 1000).unwrap(),
            Rotation::Invalid
        );

        let before = s.last_change().unwrap();
        assert_eq!(s.revoke_family("f1", 300).unwrap(), 2, "{}", b.name);
        assert_eq!(s.revoke_family("f1", 301).unwrap(), 0, "already revoked");
        assert_eq!(s.revoke_family("unknown", 301).unwrap(), 0);
        assert_eq!(
            s.rotate_refresh(&hash(2), &hash(5), 302).unwrap(),
            Rotation::Invalid
        );
        assert_eq!(s.revoked_families(300).unwrap(), vec![("f1".into(), 1000)]);
        let changes = s.changes_since(before, 10).unwrap();
        assert_eq!(
            changes.iter().map(|(_, c)| c.clone()).collect::<Vec<_>>(),
            vec![Change::Family {
                family: "f1".into(),
                exp: 1000
            }],
            "{}: one announcement for one revocation",
            b.name
        );

        // Ending all sessions revokes every family of the user.
        s.insert_refresh(&hash(20), &refresh("f2", "u1", 2000))
            .unwrap();
        s.insert_refresh(&hash(21), &refresh("f3", "u1", 3000))
            .unwrap();
        s.end_all_sessions("u1", 400).unwrap().unwrap();
        let families: BTreeSet<String> = s
            .revoked_families(400)
            .unwrap()
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            families,
            BTreeSet::from(["f1".into(), "f2".into(), "f3".into()])
        );
    });
}

/// Two replicas (two handles) and several threads present the same refresh token at once:
/// exactly one rotation happens.
#[test]
fn concurrent_rotations_of_one_token_have_exactly_one_winner() {
    on_each_backend(|b| {
        b.store.create_user(&user("u1", "ada@x.test")).unwrap();
        let other = (b.reopen)();
        for round in 0..5u32 {
            let old = hash(1000 + round);
            b.store
                .insert_refresh(&old, &refresh(&format!("f{round}"), "u1", 10_000))
                .unwrap();
            let threads = 6;
            let barrier = Arc::new(Barrier::new(threads));
            let outcomes: Vec<Rotation> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads)
                    .map(|i| {
                        let store = if i % 2 == 0 {
                            b.store.clone()
                        } else {
                            other.clone()
                        };
                        let barrier = barrier.clone();
                        scope.spawn(move || {
                            barrier.wait();
                            let new = hash(100_000 + round * 100 + i as u32);
                            store.rotate_refresh(&old, &new, 500).unwrap()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let won = outcomes
                .iter()
                .filter(|o| matches!(o, Rotation::Rotated(_)))
                .count();
            let lost = outcomes
                .iter()
                .filter(|o| matches!(o, Rotation::AlreadyRotated { .. }))
                .count();
            assert_eq!((won, lost), (1, threads - 1), "{} round {round}", b.name);
            let live = (0..threads)
                .filter(|i| {
                    b.store
                        .get_refresh(&hash(100_000 + round * 100 + *i as u32))
                        .unwrap()
                        .is_some()
                })
                .count();
            assert_eq!(live, 1, "{}: exactly one successor stored", b.name);
        }
    });
}

/// Writers on two handles append at once; a reader polling meanwhile must see sequence
/// numbers without gaps, in order, and never find a smaller one later (that would be a
/// change a server skips for good).
#[test]
fn the_change_feed_is_gapless_and_in_commit_order_under_concurrent_writers() {
    on_each_backend(|b| {
        let other = (b.reopen)();
        let writers = 4;
        let per_writer = 40;
        let total = writers * per_writer;
        let start = b.store.last_change().unwrap();
        let seen: Vec<(u64, Change)> = std::thread::scope(|scope| {
            for w in 0..writers {
                let store = if w % 2 == 0 {
                    b.store.clone()
                } else {
                    other.clone()
                };
                scope.spawn(move || {
                    for i in 0..per_writer {
                        store.revoke_jti(&format!("w{w}-j{i}"), 10_000).unwrap();
                    }
                });
            }
            let reader = b.store.clone();
            scope
                .spawn(move || {
                    let mut seen = Vec::new();
                    let mut last = start;
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                    while seen.len() < total {
                        assert!(std::time::Instant::now() < deadline, "reader timed out");
                        for (seq, change) in reader.changes_since(last, 7).unwrap() {
                            assert_eq!(seq, last + 1, "a gap after {last}");
                            last = seq;
                            seen.push((seq, change));
                        }
                    }
                    seen
                })
                .join()
                .unwrap()
        });
        let jtis: BTreeSet<String> = seen
            .into_iter()
            .map(|(_, c)| match c {
                Change::Jti { jti, .. } => jti,
                other => panic!("unexpected change {other:?}"),
            })
            .collect();
        assert_eq!(
            jtis.len(),
            total,
            "{}: every revocation announced once",
            b.name
        );
        assert_eq!(b.store.last_change().unwrap(), start + total as u64);
        assert_eq!(b.store.revoked_jtis(0).unwrap().len(), total);
    });
}

/// The start-up load reads the deny list in slices on several threads: slices by byte order
/// must cover every live jti exactly once, whatever its text, on both backends (PostgreSQL
/// compares in the "C" collation, not the database's locale).
#[test]
fn deny_list_slices_cover_every_live_jti_exactly_once() {
    on_each_backend(|b| {
        let s = &b.store;
        let jtis = [
            "0f1e2d3c-0000-4000-8000-000000000000",
            "7fffffff-ffff-4fff-bfff-ffffffffffff",
            "8",
            "80000000-0000-4000-8000-000000000000",
            "A0000000-0000-4000-8000-000000000000",
            "a0000000-0000-4000-8000-000000000000",
            "ffffffff-ffff-4fff-bfff-ffffffffffff",
            "7zzz",
            "Zed",
            "_under",
            "~tilde",
            "\u{e9}t\u{e9}",
            "\u{1f511}key",
            " space",
        ];
        for jti in jtis {
            s.revoke_jti(jti, 10_000).unwrap();
        }
        s.revoke_jti("3-expired", 50).unwrap();
        let read = |range: JtiRange<'_>| {
            let mut seen = Vec::new();
            s.for_each_revoked_jti(100, range, &mut |jti, exp| seen.push((jti.to_owned(), exp)))
                .unwrap();
            seen.sort();
            seen
        };
        let mut all: Vec<(String, u64)> = jtis.iter().map(|j| (j.to_string(), 10_000)).collect();
        all.sort();
        assert_eq!(read(JtiRange::default()), all, "{}: the whole list", b.name);
        for bounds in [
            vec!["8"],
            vec!["4", "8", "c"],
            vec![
                "1", "2", "3", "4", "5", "6", "7", "8", "9", "a", "b", "c", "d", "e", "f",
            ],
        ] {
            let mut slices = Vec::new();
            for i in 0..=bounds.len() {
                let range = JtiRange {
                    from: i.checked_sub(1).map(|p| bounds[p]),
                    below: bounds.get(i).copied(),
                };
                let slice = read(range);
                for (jti, _) in &slice {
                    assert!(range.contains(jti), "{}: {jti:?} outside {range:?}", b.name);
                }
                slices.extend(slice);
            }
            slices.sort();
            assert_eq!(slices, all, "{}: slices at {bounds:?}", b.name);
        }
        let reversed = JtiRange {
            from: Some("c"),
            below: Some("4"),
        };
        assert!(
            read(reversed).is_empty(),
            "{}: a reversed range is empty",
            b.name
        );
    });
}

#[test]
fn meta_values_are_set_once_and_updates_are_announced() {
    on_each_backend(|b| {
        let s = &b.store;
        let other = (b.reopen)();
        // Two servers creating the first key at once agree on one.
        let (x, y) = std::thread::scope(|scope| {
            let a = scope.spawn(|| s.put_meta_if_absent("k", b"first").unwrap());
            let c = scope.spawn(|| other.put_meta_if_absent("k", b"second").unwrap());
            (a.join().unwrap(), c.join().unwrap())
        });
        assert_eq!(x, y, "{}", b.name);
        assert_eq!(s.get_meta("k").unwrap(), Some(x));
        assert_eq!(s.get_meta("missing").unwrap(), None);

        let before = s.last_change().unwrap();
        let new = s
            .update_meta_announced("keys", |old| -> Result<Vec<u8>, StoreError> {
                assert_eq!(old, None);
                Ok(b"v1".to_vec())
            })
            .unwrap();
        assert_eq!(new, b"v1");
        let refused = s.update_meta_announced("keys", |_| -> Result<Vec<u8>, StoreError> {
            Err(StoreError::Corrupt("refused".into()))
        });
        assert!(matches!(refused, Err(StoreError::Corrupt(m)) if m == "refused"));
        assert_eq!(
            s.get_meta("keys").unwrap(),
            Some(b"v1".to_vec()),
            "{}",
            b.name
        );
        let changes: Vec<Change> = s
            .changes_since(before, 10)
            .unwrap()
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        assert_eq!(changes, vec![Change::Keys], "{}", b.name);

        // Concurrent read-modify-writes lose nothing.
        std::thread::scope(|scope| {
            for store in [s.clone(), other.clone(), s.clone(), other.clone()] {
                scope.spawn(move || {
                    for _ in 0..10 {
                        store
                            .update_meta_announced(
                                "counter",
                                |old| -> Result<Vec<u8>, StoreError> {
                                    let n: u32 = old
                                        .map(|v| String::from_utf8_lossy(v).parse().unwrap())
                                        .unwrap_or(0);
                                    Ok((n + 1).to_string().into_bytes())
                                },
                            )
                            .unwrap();
                    }
                });
            }
        });
        assert_eq!(
            s.get_meta("counter").unwrap(),
            Some(b"40".to_vec()),
            "{}",
            b.name
        );
    });
}

#[test]
fn secrets_are_encrypted_at_rest_and_open_only_with_their_key() {
    let material = |c: u8| gateway::secret::Secret::new(vec![c; 40]);
    on_each_backend(|b| {
        let sealed = b.store.clone().with_encryption(Some(&material(1))).unwrap();
        let plain_key = b"0123456789abcdef0123456789abcdef".to_vec();
        assert_eq!(
            sealed
                .put_secret_if_absent("refresh_key", &plain_key)
                .unwrap()
                .expose(),
            &plain_key
        );
        // What the table holds (what a copy of the file or a database reader sees) is not the
        // key, and a handle without the key or with another one cannot read it.
        let raw = b.store.get_meta("refresh_key").unwrap().unwrap();
        assert!(gateway::store::seal::is_sealed(&raw), "{}", b.name);
        assert!(
            !raw.windows(16).any(|w| w == &plain_key[..16]),
            "{}",
            b.name
        );
        let other = (b.reopen)();
        match other.get_secret("refresh_key") {
            Err(StoreError::Sealed(m)) => assert!(m.contains("is encrypted"), "{m}"),
            r => panic!("{}: read without the key: {r:?}", b.name),
        }
        let wrong = (b.reopen)().with_encryption(Some(&material(2))).unwrap();
        match wrong.get_secret("refresh_key") {
            Err(StoreError::Sealed(m)) => assert!(m.contains("another"), "{m}"),
            r => panic!("{}: read with another key: {r:?}", b.name),
        }
        let right = (b.reopen)().with_encryption(Some(&material(1))).unwrap();
        assert_eq!(
            right.get_secret("refresh_key").unwrap().unwrap().expose(),
            &plain_key
        );

        // Updates see and write plaintext; the stored value stays sealed.
        let updated = right
            .update_secret_announced("signing_keys", |old| -> Result<Vec<u8>, StoreError> {
                assert!(old.is_none());
                Ok(b"{\"current\":\"k\"}".to_vec())
            })
            .unwrap();
        assert_eq!(updated.expose(), b"{\"current\":\"k\"}");
        assert!(gateway::store::seal::is_sealed(
            &b.store.get_meta("signing_keys").unwrap().unwrap()
        ));

        // A value written in the clear (before a key was configured) is sealed by
        // seal_secrets, which also refuses to start with the wrong key.
        b.store.put_meta("csrf_key", &[7; 32]).unwrap();
        let names = ["signing_keys", "refresh_key", "csrf_key"];
        assert!(matches!(
            wrong.seal_secrets(&names),
            Err(StoreError::Sealed(_))
        ));
        assert_eq!(right.seal_secrets(&names).unwrap(), 1, "{}", b.name);
        assert_eq!(
            right.seal_secrets(&names).unwrap(),
            0,
            "{}: sealed once",
            b.name
        );
        assert!(gateway::store::seal::is_sealed(
            &b.store.get_meta("csrf_key").unwrap().unwrap()
        ));

        // Re-encryption under a new key, repeatable, and back to the clear.
        let new_key = gateway::store::SealKey::derive(&[3; 40]).unwrap();
        assert_eq!(right.reseal_secrets(&names, Some(&new_key)).unwrap(), 3);
        assert_eq!(right.reseal_secrets(&names, Some(&new_key)).unwrap(), 0);
        assert!(
            right.get_secret("csrf_key").is_err(),
            "the old key no longer opens them"
        );
        let renewed = (b.reopen)().with_encryption(Some(&material(3))).unwrap();
        assert_eq!(
            renewed.get_secret("csrf_key").unwrap().unwrap().expose(),
            &[7; 32]
        );
        assert_eq!(renewed.reseal_secrets(&names, None).unwrap(), 3);
        assert_eq!(
            b.store.get_secret("refresh_key").unwrap().unwrap().expose(),
            &plain_key
        );
    });
}

#[test]
fn sweep_drops_what_expired_and_keeps_the_rest() {
    on_each_backend(|b| {
        let s = &b.store;
        s.create_user(&user("u1", "ada@x.test")).unwrap();
        s.insert_refresh(&hash(1), &refresh("old", "u1", 100))
            .unwrap();
        s.insert_refresh(&hash(2), &refresh("new", "u1", 10_000))
            .unwrap();
        s.revoke_jti("j-old", 100).unwrap();
        s.revoke_jti("j-new", 10_000).unwrap();
        s.revoke_family("new", 50).unwrap();
        let stats = s.sweep(500).unwrap();
        assert_eq!(
            (stats.refresh_tokens, stats.families, stats.jtis),
            (1, 1, 1),
            "{}: {stats:?}",
            b.name
        );
        assert_eq!(s.get_refresh(&hash(1)).unwrap(), None);
        assert!(s.get_refresh(&hash(2)).unwrap().is_some());
        assert_eq!(s.revoked_jtis(0).unwrap(), vec![("j-new".into(), 10_000)]);
        assert_eq!(s.revoked_families(0).unwrap().len(), 1);
    });
}

fn sample_snapshot_source(s: &Store) {
    for i in 0..3 {
        s.create_user(&user(&format!("u{i}"), &format!("user{i}@x.test")))
            .unwrap();
    }
    s.insert_refresh(&hash(1), &refresh("f1", "u0", 10_000))
        .unwrap();
    s.rotate_refresh(&hash(1), &hash(2), 200).unwrap();
    s.insert_refresh(&hash(3), &refresh("gone", "u1", 50))
        .unwrap();
    s.insert_refresh(&hash(4), &refresh("f4", "u2", 10_000))
        .unwrap();
    s.revoke_family("f4", 300).unwrap();
    s.revoke_jti("jti-live", 10_000).unwrap();
    s.revoke_jti("jti-dead", 50).unwrap();
    s.end_all_sessions("u1", 300).unwrap();
    s.delete_user("u2", 400).unwrap();
    s.put_meta("signing_keys", b"{\"keys\":[]}").unwrap();
    s.put_meta("refresh_key", &[7u8; 32]).unwrap();
    s.update_factors("u0", |f| {
        f.totp = Some(gateway::store::TotpFactor {
            secret: vec![9; 20],
            created_at: 100,
            last_used_step: Some(55),
        });
        f.recovery_codes = vec![[3; 32]];
    })
    .unwrap();
    crate::store_lifecycle::sample_lifecycle_records(s);
}

/// Sorts a snapshot so two can be compared whatever order a backend reads in.
pub(crate) fn normalised(mut snap: Snapshot) -> String {
    snap.users.sort_by(|a, b| a.id.cmp(&b.id));
    snap.flags.sort_by(|a, b| a.0.cmp(&b.0));
    snap.refresh.sort_by_key(|a| a.0);
    snap.revoked_jtis.sort();
    snap.revoked_families.sort();
    snap.one_time.sort_by_key(|a| a.0);
    snap.sessions.sort_by(|a, b| a.family.cmp(&b.family));
    snap.meta.sort();
    snap.factors.sort();
    format!("{snap:?}")
}

/// redb -> PostgreSQL -> redb carries everything live, drops what expired, and refuses to
/// write into a store that has users.
#[test]
fn export_and_import_round_trip_between_backends() {
    let Some(pg) = postgres() else {
        // Still check redb -> redb.
        let (a, c) = (redb(), redb());
        sample_snapshot_source(&a.store);
        let snap = a.store.export(100).unwrap();
        c.store.import(&snap).unwrap();
        crate::store_lifecycle::check_lifecycle_snapshot(&snap);
        assert_eq!(normalised(c.store.export(100).unwrap()), normalised(snap));
        crate::store_lifecycle::check_lifecycle_records(&c.store);
        return;
    };
    let source = redb();
    sample_snapshot_source(&source.store);
    let snap = source.store.export(100).unwrap();
    assert_eq!(snap.users.len(), 2, "the deleted user is gone");
    assert_eq!(snap.refresh.len(), 3, "the expired family stays behind");
    assert_eq!(snap.revoked_jtis, vec![("jti-live".into(), 10_000)]);
    assert!(snap.meta.iter().all(|(k, _)| k != "schema_version"));
    crate::store_lifecycle::check_lifecycle_snapshot(&snap);

    pg.store.import(&snap).unwrap();
    let copied = pg.store.export(100).unwrap();
    assert_eq!(normalised(copied.clone()), normalised(snap.clone()));
    // Debug hides password hashes; compare the users themselves too.
    let by_id = |mut users: Vec<User>| {
        users.sort_by(|a, b| a.id.cmp(&b.id));
        users
    };
    assert_eq!(by_id(copied.users.clone()), by_id(snap.users.clone()));
    // What the hot path and logins read agrees too.
    assert_eq!(
        pg.store.user_by_email("user1@x.test").unwrap(),
        source.store.user_by_email("user1@x.test").unwrap()
    );
    assert_eq!(
        pg.store.get_refresh(&hash(2)).unwrap(),
        source.store.get_refresh(&hash(2)).unwrap()
    );
    assert!(pg.store.flags_of("u2").unwrap().unwrap().disabled);
    assert_eq!(
        pg.store.factors_of("u0").unwrap(),
        source.store.factors_of("u0").unwrap()
    );
    assert_eq!(snap.factors.len(), 1);
    crate::store_lifecycle::check_lifecycle_records(&pg.store);
    // The rotated token is still recognised as such (reuse detection survives).
    assert!(matches!(
        pg.store.rotate_refresh(&hash(1), &hash(50), 300).unwrap(),
        Rotation::AlreadyRotated { at: 200, .. }
    ));

    assert!(matches!(pg.store.import(&snap), Err(StoreError::NotEmpty)));
    assert_eq!(
        pg.store.user_count().unwrap(),
        2,
        "nothing written by the refused import"
    );

    let back = redb();
    back.store.import(&copied).unwrap();
    assert_eq!(
        normalised(back.store.export(100).unwrap()),
        normalised(snap)
    );
    crate::store_lifecycle::check_lifecycle_records(&back.store);
    assert!(matches!(
        back.store.import(&copied),
        Err(StoreError::NotEmpty)
    ));
}

#[test]
fn regulation_counts_from_every_replica_add_up() {
    let Some(b) = postgres() else { return };
    let other = (b.reopen)();
    assert_eq!(b.store.regulation("a@x.test").unwrap(), None);
    std::thread::scope(|scope| {
        for store in [
            b.store.clone(),
            other.clone(),
            b.store.clone(),
            other.clone(),
        ] {
            scope.spawn(move || {
                for _ in 0..5 {
                    store
                        .update_regulation("a@x.test", 1000, |r| r.failures += 1)
                        .unwrap();
                }
            });
        }
    });
    let rec = other.regulation("a@x.test").unwrap().unwrap();
    assert_eq!(rec.failures, 20);
    assert_eq!(rec.touched, 1000);
    // A redb store keeps regulation in memory and says so rather than pretending.
    assert!(redb().store.regulation("a@x.test").is_err());
}

/// Replicas starting together on an empty database: one migrates, the others wait and find
/// the schema in place.
#[test]
fn replicas_starting_at_once_migrate_the_schema_once() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.create_database("fresh");
    let barrier = Arc::new(Barrier::new(4));
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let barrier = barrier.clone();
            let url = url.clone();
            scope.spawn(move || {
                barrier.wait();
                let store =
                    Store::connect(&gateway::config::StoreSettings::Postgres(settings(&url)))
                        .unwrap();
                assert_eq!(store.user_count().unwrap(), 0);
            });
        }
    });
    let rows = query(
        &url,
        "SELECT version FROM gateway_schema_migrations ORDER BY version",
    );
    let versions: Vec<i32> = (1..=gateway::store::postgres::SCHEMA_VERSION).collect();
    assert_eq!(rows, versions);
}

#[test]
fn a_database_from_a_newer_gateway_is_refused() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.create_database("newer");
    drop(Store::connect(&gateway::config::StoreSettings::Postgres(settings(&url))).unwrap());
    query(
        &url,
        "INSERT INTO gateway_schema_migrations (version) VALUES (99) RETURNING version",
    );
    match Store::connect(&gateway::config::StoreSettings::Postgres(settings(&url))) {
        Err(StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!(
                (found, supported),
                (99, gateway::store::postgres::SCHEMA_VERSION as u32)
            )
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[test]
fn an_unreachable_database_fails_promptly_as_unavailable() {
    // Only the driver is exercised: nothing listens on this port.
    let port = crate::util::free_ports(1)[0];
    let mut s = settings(&format!("postgres://gateway:pw@127.0.0.1:{port}/db"));
    s.connect_timeout = std::time::Duration::from_millis(500);
    let started = std::time::Instant::now();
    let result = Store::connect(&gateway::config::StoreSettings::Postgres(s));
    assert!(
        matches!(&result, Err(StoreError::Unavailable(m)) if !m.contains("pw")),
        "{result:?}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

/// Runs SQL statements outside the store (to build a database as an older gateway left it).
pub(crate) fn batch(url: &str, sql: &str) {
    try_batch(url, sql).unwrap();
}

/// [`batch`], with the database's refusal as an error.
pub(crate) fn try_batch(url: &str, sql: &str) -> Result<(), String> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client.batch_execute(&sql).await.map_err(|e| e.to_string())
        })
    })
    .join()
    .unwrap()
}

/// Runs one SQL statement returning an int4 column, outside the store.
pub(crate) fn query(url: &str, sql: &str) -> Vec<i32> {
    let url = url.to_owned();
    let sql = sql.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
                .query(&sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect()
        })
    })
    .join()
    .unwrap()
}

/// A CA and a `localhost`/`127.0.0.1` server certificate it signed: (CA PEM, chain PEM, key PEM).
fn test_pki() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

/// `sslmode=require` encrypts the connection and verifies the server against `ca_file`; a
/// server the CA did not sign is refused.
#[tokio::test]
async fn postgres_over_tls_verifies_the_server_certificate() {
    let Some(pg) = PgServer::start_async().await else {
        return;
    };
    let (ca, chain, key) = test_pki();
    pg.enable_tls(&chain, &key).await;
    let url = pg.create_database_async("tls").await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();

    let url = url.replace("127.0.0.1", "localhost") + "?sslmode=require";
    let mut good = settings(&url);
    good.ca_file = Some(ca_file);
    let store = tokio::task::spawn_blocking(move || {
        Store::connect(&gateway::config::StoreSettings::Postgres(good))
    })
    .await
    .unwrap()
    .unwrap();
    let writer = store.clone();
    tokio::task::spawn_blocking(move || writer.create_user(&user("u1", "ada@x.test")))
        .await
        .unwrap()
        .unwrap();
    // The server saw an encrypted session from the gateway.
    let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.datname = 'tls' AND s.ssl",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, i64>(0) >= 1, "no TLS session from the gateway");
    drop(store);

    // Another CA: the handshake fails and says why.
    let (other_ca, _, _) = test_pki();
    let other_file = dir.path().join("other.pem");
    std::fs::write(&other_file, other_ca).unwrap();
    let mut bad = settings(&url);
    bad.ca_file = Some(other_file);
    let refused = tokio::task::spawn_blocking(move || {
        Store::connect(&gateway::config::StoreSettings::Postgres(bad))
    })
    .await
    .unwrap();
    match refused {
        Err(StoreError::Unavailable(m)) => assert!(m.contains("certificate"), "{m}"),
        other => panic!("expected a refused handshake, got {other:?}"),
    }
}
