//! The store contract of the account lifecycle (issue 16), on both backends like `store`:
//! one-time tokens (single use under concurrency, expiry, kind, per-user invalidation), the
//! sessions a user sees (listing, ending one, all or all but one), `email_verified`, and
//! opening a store written by the previous schema.

use std::sync::{Arc, Barrier};

use gateway::store::{
    Change, OneTimeToken, RefreshState, SessionInfo, Snapshot, Store, TokenKind,
    USER_AGENT_MAX_CHARS,
};

use crate::pg::PgServer;
use crate::store::{hash, on_each_backend, refresh, settings, user};

fn token(kind: TokenKind, user_id: &str, expires_at: u64) -> OneTimeToken {
    OneTimeToken {
        kind,
        user_id: user_id.into(),
        email: format!("{user_id}@x.test"),
        created_at: 10,
        expires_at,
    }
}

fn session(family: &str, user_id: &str, created_at: u64, expires_at: u64) -> SessionInfo {
    SessionInfo {
        family: family.into(),
        user_id: user_id.into(),
        created_at,
        last_used_at: created_at,
        expires_at,
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0".into()),
        ip: Some("192.0.2.7".into()),
        ended_at: None,
    }
}

/// Starts a session the way the auth service does: its first refresh token, then its record.
fn login(s: &Store, n: u32, family: &str, user_id: &str, at: u64, expires_at: u64) {
    let mut rec = refresh(family, user_id, expires_at);
    rec.issued_at = at;
    s.insert_refresh(&hash(n), &rec).unwrap();
    s.start_session(&session(family, user_id, at, expires_at))
        .unwrap();
}

fn families(sessions: &[SessionInfo]) -> Vec<&str> {
    sessions.iter().map(|s| s.family.as_str()).collect()
}

#[test]
fn one_time_tokens_are_bound_to_their_kind_and_die_at_expiry() {
    on_each_backend(|b| {
        let s = &b.store;
        let verify = token(TokenKind::VerifyEmail, "u1", 1000);
        s.insert_one_time(&hash(1), &verify).unwrap();
        assert!(
            s.insert_one_time(&hash(1), &verify).is_err(),
            "{}: a hash is stored once",
            b.name
        );

        // Peeking does not consume; the wrong kind is never returned nor consumed.
        let peeked = s.peek_one_time(&hash(1), TokenKind::VerifyEmail, 500);
        assert_eq!(peeked.unwrap(), Some(verify.clone()), "{}", b.name);
        assert_eq!(
            s.peek_one_time(&hash(1), TokenKind::ResetPassword, 500)
                .unwrap(),
            None
        );
        assert_eq!(
            s.consume_one_time(&hash(1), TokenKind::ResetPassword, 500)
                .unwrap(),
            None
        );
        assert_eq!(
            s.consume_one_time(&hash(1), TokenKind::VerifyEmail, 500)
                .unwrap(),
            Some(verify),
            "{}",
            b.name
        );
        assert_eq!(
            s.consume_one_time(&hash(1), TokenKind::VerifyEmail, 500)
                .unwrap(),
            None,
            "{}: single use",
            b.name
        );
        assert_eq!(
            s.peek_one_time(&hash(1), TokenKind::VerifyEmail, 500)
                .unwrap(),
            None
        );
        assert_eq!(
            s.consume_one_time(&hash(9), TokenKind::VerifyEmail, 500)
                .unwrap(),
            None,
            "unknown"
        );

        // Live while now < expires_at.
        let reset = token(TokenKind::ResetPassword, "u1", 1000);
        s.insert_one_time(&hash(2), &reset).unwrap();
        assert!(
            s.peek_one_time(&hash(2), TokenKind::ResetPassword, 999)
                .unwrap()
                .is_some()
        );
        assert_eq!(
            s.peek_one_time(&hash(2), TokenKind::ResetPassword, 1000)
                .unwrap(),
            None
        );
        assert_eq!(
            s.consume_one_time(&hash(2), TokenKind::ResetPassword, 1000)
                .unwrap(),
            None,
            "{}: expired",
            b.name
        );
        assert_eq!(
            s.consume_one_time(&hash(2), TokenKind::ResetPassword, 999)
                .unwrap(),
            None,
            "{}: an expired token presented once is gone",
            b.name
        );

        // The sweep drops expired tokens and counts them.
        s.insert_one_time(&hash(3), &token(TokenKind::VerifyEmail, "u2", 2000))
            .unwrap();
        s.insert_one_time(&hash(4), &token(TokenKind::ResetPassword, "u2", 3000))
            .unwrap();
        assert_eq!(s.sweep(1999).unwrap().one_time_tokens, 0, "{}", b.name);
        assert_eq!(s.sweep(2000).unwrap().one_time_tokens, 1, "{}", b.name);
        assert!(
            s.peek_one_time(&hash(4), TokenKind::ResetPassword, 2000)
                .unwrap()
                .is_some()
        );
    });
}

#[test]
fn concurrent_consumers_of_one_token_have_exactly_one_winner() {
    on_each_backend(|b| {
        let other = (b.reopen)();
        for round in 0..5u32 {
            let h = hash(100 + round);
            b.store
                .insert_one_time(&h, &token(TokenKind::ResetPassword, "u1", 10_000))
                .unwrap();
            let barrier = Arc::new(Barrier::new(6));
            let winners: usize = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..6)
                    .map(|i| {
                        let store = if i % 2 == 0 {
                            b.store.clone()
                        } else {
                            other.clone()
                        };
                        let barrier = barrier.clone();
                        scope.spawn(move || {
                            barrier.wait();
                            store
                                .consume_one_time(&h, TokenKind::ResetPassword, 100)
                                .unwrap()
                                .is_some()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| usize::from(h.join().unwrap()))
                    .sum()
            });
            assert_eq!(winners, 1, "{} round {round}", b.name);
        }
    });
}

#[test]
fn a_users_tokens_of_one_kind_are_voided_together_and_deletion_voids_all() {
    on_each_backend(|b| {
        let s = &b.store;
        s.create_user(&user("u1", "ada@x.test")).unwrap();
        s.create_user(&user("u2", "bob@x.test")).unwrap();
        let reset = |u: &str| token(TokenKind::ResetPassword, u, 10_000);
        s.insert_one_time(&hash(1), &reset("u1")).unwrap();
        s.insert_one_time(&hash(2), &reset("u1")).unwrap();
        s.insert_one_time(&hash(3), &token(TokenKind::VerifyEmail, "u1", 10_000))
            .unwrap();
        s.insert_one_time(&hash(4), &reset("u2")).unwrap();

        assert_eq!(
            s.delete_one_time_for("u1", TokenKind::ResetPassword)
                .unwrap(),
            2,
            "{}",
            b.name
        );
        assert_eq!(
            s.delete_one_time_for("u1", TokenKind::ResetPassword)
                .unwrap(),
            0
        );
        for n in [1, 2] {
            assert_eq!(
                s.peek_one_time(&hash(n), TokenKind::ResetPassword, 100)
                    .unwrap(),
                None
            );
        }
        assert!(
            s.peek_one_time(&hash(3), TokenKind::VerifyEmail, 100)
                .unwrap()
                .is_some(),
            "{}: another kind stays",
            b.name
        );
        assert!(
            s.peek_one_time(&hash(4), TokenKind::ResetPassword, 100)
                .unwrap()
                .is_some(),
            "{}: another user's stays",
            b.name
        );

        assert!(s.delete_user("u1", 100).unwrap());
        assert_eq!(
            s.consume_one_time(&hash(3), TokenKind::VerifyEmail, 100)
                .unwrap(),
            None,
            "{}: deletion voids the user's tokens",
            b.name
        );
        assert!(
            s.peek_one_time(&hash(4), TokenKind::ResetPassword, 100)
                .unwrap()
                .is_some()
        );
    });
}

#[test]
fn sessions_are_listed_live_and_newest_first_and_rotation_touches_them() {
    on_each_backend(|b| {
        let s = &b.store;
        s.create_user(&user("u1", "ada@x.test")).unwrap();
        login(s, 1, "f-old", "u1", 100, 10_000);
        login(s, 2, "f-new", "u1", 300, 10_000);
        login(s, 3, "f-mid", "u1", 200, 10_000);
        login(s, 4, "f-short", "u1", 400, 1_000);
        login(s, 5, "f-bob", "u2", 500, 10_000);
        login(s, 6, "f-gone", "u1", 350, 10_000);
        s.revoke_family("f-gone", 360).unwrap();

        let listed = s.sessions_of("u1", 500).unwrap();
        assert_eq!(
            families(&listed),
            ["f-short", "f-new", "f-mid", "f-old"],
            "{}",
            b.name
        );
        assert_eq!(listed[1], session("f-new", "u1", 300, 10_000), "{}", b.name);
        assert_eq!(
            families(&s.sessions_of("u1", 1_000).unwrap()),
            ["f-new", "f-mid", "f-old"],
            "{}: expired at expires_at",
            b.name
        );
        assert_eq!(families(&s.sessions_of("u2", 500).unwrap()), ["f-bob"]);
        assert!(s.sessions_of("nobody", 500).unwrap().is_empty());

        // A rotation records the use.
        s.rotate_refresh(&hash(1), &hash(11), 700).unwrap();
        let old = s.sessions_of("u1", 800).unwrap();
        let old = old.iter().find(|i| i.family == "f-old").unwrap();
        assert_eq!((old.created_at, old.last_used_at), (100, 700), "{}", b.name);

        // A family is recorded once; a long user agent is cut to its first 256 characters.
        assert!(
            s.start_session(&session("f-old", "u1", 900, 10_000))
                .is_err()
        );
        let mut long = session("f-long", "u1", 50, 10_000);
        long.user_agent = Some("é".repeat(USER_AGENT_MAX_CHARS + 44));
        s.start_session(&long).unwrap();
        let listed = s.sessions_of("u1", 800).unwrap();
        assert_eq!(families(&listed).last(), Some(&"f-long"));
        let ua = listed.last().unwrap().user_agent.clone().unwrap();
        assert_eq!(ua, "é".repeat(USER_AGENT_MAX_CHARS), "{}", b.name);
    });
}

#[test]
fn ending_a_session_needs_its_owner_and_reaches_replicas_like_a_revoked_family() {
    on_each_backend(|b| {
        let s = &b.store;
        login(s, 1, "f-ada", "u1", 100, 10_000);
        login(s, 2, "f-bob", "u2", 100, 10_000);
        let before = s.last_change().unwrap();

        assert!(!s.end_session("u1", "f-bob", 200).unwrap(), "{}", b.name);
        assert!(!s.end_session("u1", "no-such-family", 200).unwrap());
        assert_eq!(
            s.last_change().unwrap(),
            before,
            "{}: nothing written",
            b.name
        );
        assert_eq!(
            s.get_refresh(&hash(2)).unwrap().unwrap().state,
            RefreshState::Active
        );
        assert_eq!(families(&s.sessions_of("u2", 200).unwrap()), ["f-bob"]);

        assert!(s.end_session("u1", "f-ada", 200).unwrap(), "{}", b.name);
        assert!(
            !s.end_session("u1", "f-ada", 200).unwrap(),
            "{}: already ended",
            b.name
        );
        assert!(s.sessions_of("u1", 200).unwrap().is_empty());
        assert_eq!(
            s.get_refresh(&hash(1)).unwrap().unwrap().state,
            RefreshState::Revoked { at: 200 }
        );
        assert_eq!(
            s.revoked_families(200).unwrap(),
            vec![("f-ada".to_owned(), 10_000)]
        );
        // Another replica learns it from the change feed, as from revoke_family.
        let replica = (b.reopen)();
        assert_eq!(
            replica
                .changes_since(before, 10)
                .unwrap()
                .into_iter()
                .map(|(_, c)| c)
                .collect::<Vec<_>>(),
            vec![Change::Family {
                family: "f-ada".into(),
                exp: 10_000
            }],
            "{}",
            b.name
        );
    });
}

#[test]
fn ending_other_sessions_keeps_one_and_ending_all_ends_every_record() {
    on_each_backend(|b| {
        let s = &b.store;
        s.create_user(&user("u1", "ada@x.test")).unwrap();
        login(s, 1, "f1", "u1", 100, 10_000);
        login(s, 2, "f2", "u1", 200, 10_000);
        login(s, 3, "f3", "u1", 300, 10_000);
        login(s, 4, "f-short", "u1", 50, 150);
        login(s, 5, "f-bob", "u2", 100, 10_000);

        assert_eq!(
            s.end_other_sessions("u1", "f2", 400).unwrap(),
            2,
            "{}",
            b.name
        );
        assert_eq!(families(&s.sessions_of("u1", 400).unwrap()), ["f2"]);
        for (n, state) in [
            (1, RefreshState::Revoked { at: 400 }),
            (2, RefreshState::Active),
            (3, RefreshState::Revoked { at: 400 }),
            (5, RefreshState::Active),
        ] {
            assert_eq!(
                s.get_refresh(&hash(n)).unwrap().unwrap().state,
                state,
                "{} token {n}",
                b.name
            );
        }
        let mut revoked = s.revoked_families(400).unwrap();
        revoked.sort();
        assert_eq!(
            revoked,
            vec![("f1".to_owned(), 10_000), ("f3".to_owned(), 10_000)]
        );
        assert_eq!(s.end_other_sessions("u1", "f2", 400).unwrap(), 0);

        // "Log out everywhere" ends the kept one too; the sweep then drops the records of
        // ended and expired sessions, and keeps live ones.
        s.end_all_sessions("u1", 500).unwrap().unwrap();
        assert!(s.sessions_of("u1", 500).unwrap().is_empty(), "{}", b.name);
        let stats = s.sweep(500).unwrap();
        assert_eq!(stats.sessions, 4, "{}: {stats:?}", b.name);
        assert_eq!(families(&s.sessions_of("u2", 500).unwrap()), ["f-bob"]);
        assert_eq!(s.sweep(500).unwrap().sessions, 0);
    });
}

#[test]
fn deleting_a_user_ends_their_sessions() {
    on_each_backend(|b| {
        let s = &b.store;
        s.create_user(&user("u1", "ada@x.test")).unwrap();
        login(s, 1, "f1", "u1", 100, 10_000);
        assert!(s.delete_user("u1", 200).unwrap());
        assert!(s.sessions_of("u1", 200).unwrap().is_empty(), "{}", b.name);
        assert!(!s.end_session("u1", "f1", 200).unwrap());
    });
}

#[test]
fn email_verified_is_stored_and_edited() {
    on_each_backend(|b| {
        let s = &b.store;
        s.create_user(&user("u1", "ada@x.test")).unwrap();
        assert!(!s.user_by_id("u1").unwrap().unwrap().email_verified);
        let mut verified = user("u2", "bob@x.test");
        verified.email_verified = true;
        s.create_user(&verified).unwrap();
        assert_eq!(s.user_by_email("bob@x.test").unwrap(), Some(verified));
        let edited = s
            .modify_user("u1", |u| {
                u.email_verified = true;
                Ok(())
            })
            .unwrap();
        assert!(edited.email_verified);
        assert!(
            s.user_by_id("u1").unwrap().unwrap().email_verified,
            "{}",
            b.name
        );
        assert!(s.list_users().unwrap().iter().all(|u| u.email_verified));
    });
}

/// Adds the lifecycle records to the source of `store::export_and_import_round_trip_...`
/// (which exports at 100): users u0 and u1 exist there.
pub(crate) fn sample_lifecycle_records(s: &Store) {
    s.modify_user("u0", |u| {
        u.email_verified = true;
        Ok(())
    })
    .unwrap();
    s.insert_one_time(&hash(100), &token(TokenKind::VerifyEmail, "u0", 10_000))
        .unwrap();
    s.insert_one_time(&hash(101), &token(TokenKind::ResetPassword, "u1", 50))
        .unwrap();
    s.start_session(&session("s1", "u0", 90, 10_000)).unwrap();
    s.start_session(&session("s-ended", "u0", 80, 10_000))
        .unwrap();
    assert!(s.end_session("u0", "s-ended", 95).unwrap());
    s.start_session(&session("s-gone", "u1", 20, 50)).unwrap();
}

/// What the snapshot of [`sample_lifecycle_records`] holds.
pub(crate) fn check_lifecycle_snapshot(snap: &Snapshot) {
    let u0 = snap.users.iter().find(|u| u.id == "u0").unwrap();
    assert!(u0.email_verified);
    assert!(snap.users.iter().any(|u| !u.email_verified));
    assert_eq!(
        snap.one_time,
        vec![(hash(100), token(TokenKind::VerifyEmail, "u0", 10_000))],
        "the expired token stays behind"
    );
    let mut sessions: Vec<&str> = snap.sessions.iter().map(|s| s.family.as_str()).collect();
    sessions.sort();
    assert_eq!(
        sessions,
        ["s-ended", "s1"],
        "the expired session stays behind"
    );
}

/// What a store holds after importing the snapshot of [`sample_lifecycle_records`].
pub(crate) fn check_lifecycle_records(s: &Store) {
    assert!(s.user_by_id("u0").unwrap().unwrap().email_verified);
    assert!(!s.user_by_id("u1").unwrap().unwrap().email_verified);
    assert!(
        s.peek_one_time(&hash(100), TokenKind::VerifyEmail, 100)
            .unwrap()
            .is_some()
    );
    assert_eq!(
        s.sessions_of("u0", 100).unwrap(),
        vec![session("s1", "u0", 90, 10_000)]
    );
    assert!(!s.end_session("u0", "s-ended", 100).unwrap());
    assert!(s.end_session("u0", "s1", 100).unwrap());
}

/// A PostgreSQL database as the previous gateway (schema 1) left it, with a user and a refresh
/// family, opens with the user unverified and the family listed as a session.
#[test]
fn a_postgres_database_of_schema_1_is_migrated_and_keeps_working() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.create_database("schema1");
    let v1 = gateway::store::postgres::migration_sql(1).unwrap();
    crate::store::batch(
        &url,
        &format!(
            "CREATE TABLE gateway_schema_migrations (
                 version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
             {v1}
             INSERT INTO gateway_schema_migrations (version) VALUES (1);
             INSERT INTO gateway_users VALUES
                 ('u1', 'ada@x.test', 'Ada', '$argon2id$x', '{{admin}}', false, 10, 10, 0);
             INSERT INTO gateway_refresh_tokens VALUES
                 ('\\x01', 'f1', 'u1', 100, 10000, 'rotated', 200),
                 ('\\x02', 'f1', 'u1', 200, 10000, 'active', 0),
                 ('\\x03', 'f2', 'u1', 150, 10000, 'revoked', 250);"
        ),
    );
    let store = Store::connect(&gateway::config::StoreSettings::Postgres(settings(&url))).unwrap();
    // (The redb counterpart is a unit test beside the redb table layout:
    // `store::redb::tests::a_file_of_schema_1_is_migrated_and_keeps_working`.)
    let name = "postgres";
    let ada = store.user_by_id("u1").unwrap().unwrap();
    assert!(!ada.email_verified, "{name}");
    let listed = store.sessions_of("u1", 300).unwrap();
    assert_eq!(
        families(&listed),
        ["f1"],
        "{name}: the revoked family is not listed"
    );
    assert_eq!(
        (
            listed[0].created_at,
            listed[0].last_used_at,
            listed[0].expires_at
        ),
        (100, 200, 10_000),
        "{name}"
    );
    assert_eq!(listed[0].user_agent, None);
    // It keeps working: new records, and ending the migrated session.
    store
        .insert_one_time(&hash(7), &token(TokenKind::VerifyEmail, "u1", 1000))
        .unwrap();
    assert!(
        store
            .consume_one_time(&hash(7), TokenKind::VerifyEmail, 300)
            .unwrap()
            .is_some()
    );
    assert!(store.end_session("u1", "f1", 300).unwrap(), "{name}");
    assert!(store.sessions_of("u1", 300).unwrap().is_empty());

    // During a rolling upgrade a replica of the previous version revokes families without
    // marking their session rows: such a session is not listed either.
    login(&store, 9, "f9", "u1", 300, 10_000);
    assert_eq!(families(&store.sessions_of("u1", 300).unwrap()), ["f9"]);
    crate::store::batch(
        &url,
        "UPDATE gateway_refresh_tokens SET state = 'revoked', state_at = 310 WHERE family = 'f9';
         INSERT INTO gateway_revoked_families (family, exp) VALUES ('f9', 10000);",
    );
    assert!(store.sessions_of("u1", 310).unwrap().is_empty());
}
