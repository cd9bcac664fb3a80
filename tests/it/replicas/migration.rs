//! `gateway migrate` between redb and PostgreSQL keeps accounts, keys and sessions, refuses a
//! target that has users, and reaches replicas already running on the target.

use super::*;

/// Every gateway table, as text, to compare before and after.
async fn dump(url: &str) -> Vec<String> {
    let client = db(url).await;
    let mut out = Vec::new();
    for table in [
        "gateway_users",
        "gateway_user_flags",
        "gateway_refresh_tokens",
        "gateway_revoked_families",
        "gateway_revoked_jtis",
        "gateway_meta",
        "gateway_changes",
        "gateway_login_regulation",
    ] {
        let sql = format!("SELECT row_to_json(t)::text AS j FROM {table} t ORDER BY j");
        for row in client.query(&sql, &[]).await.unwrap() {
            out.push(format!("{table} {}", row.get::<_, String>(0)));
        }
    }
    out
}

/// A gateway on a redb file at `path` (absolute), routes to `upstream`.
fn redb_yaml(path: &Path, upstream: &str) -> String {
    format!(
        "store:\n  redb: {{path: '{}'}}\n{}",
        path.display(),
        auth_config(
            "",
            &format!(
                "rate_limits: {{login_per_ip: 'off', login_per_account: 'off'}}\n{}",
                routes(upstream)
            )
        )
    )
}

#[tokio::test]
async fn migrating_from_redb_to_postgres_and_back_keeps_accounts_keys_and_sessions() {
    let Some(pg) = PgServer::start_async().await else {
        return;
    };
    let url = pg.create_database_async("gateway").await;
    let up = Upstream::start().await;
    let users = ["ada@example.com", "bob@example.com", "cyd@example.com"];

    // Three accounts on redb; a live session, and a session ended before the move.
    let files = tempfile::tempdir().unwrap();
    let redb_yaml_1 = redb_yaml(&files.path().join("first.redb"), &up.url());
    let gw = Gateway::start(&redb_yaml_1).await;
    let mut sessions = Vec::new();
    for u in users {
        sessions.push(signup(&gw, u, PW).await);
    }
    let ended = login(&gw, users[1], PW).await;
    logout(&gw, &ended).await;
    let redb_config = gw.path("gateway.yaml");
    let redb_dir = gw.shutdown().await;

    let out = cli(&redb_config, &["migrate", "--to", &url], "").await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("copied 3 users, 4 sessions")
            && out
                .stdout
                .contains(" 0 users' second factors, 0 linked sign-in identities, "),
        "{}",
        out.stdout
    );

    let pg_yaml = replica_yaml(&url, &up.url(), Opts::default());
    let on_pg = Gateway::start(&pg_yaml).await;
    // The session records came along: the user still sees where they signed in.
    let listed = get_with(
        &on_pg.url("/api/auth/sessions"),
        &[("authorization", &bearer(&sessions[0].access))],
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    let listed = listed.json()["sessions"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], sid(&sessions[0].access).as_str());
    assert_eq!(listed[0]["current"], true);
    for u in users {
        login(&on_pg, u, PW).await;
    }
    assert_eq!(
        app(&on_pg, &sessions[0].access).await,
        200,
        "an access token from redb"
    );
    assert_eq!(
        app(&on_pg, &ended.access).await,
        401,
        "a revocation from redb"
    );
    let next = refreshed(&on_pg, &sessions[2].refresh).await;
    assert_eq!(app(&on_pg, &next.access).await, 200);

    // Into a store that has users: refused, nothing written.
    let late = Gateway::start_in(redb_dir, &redb_yaml_1).await;
    signup(&late, "late@example.com", PW).await;
    let _redb_dir = late.shutdown().await;
    let before = dump(&url).await;
    let out = cli(&redb_config, &["migrate", "--to", &url], "").await;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("is in use") && out.stderr.contains("nothing was written"),
        "{}",
        out.stderr
    );
    assert_eq!(
        dump(&url).await,
        before,
        "the refused migration wrote to the database"
    );
    assert_eq!(
        login_attempt(&on_pg, "late@example.com", PW).await.status,
        401
    );

    // And back, into a new redb file.
    let pg_config = files.path().join("pg.yaml");
    std::fs::write(&pg_config, &pg_yaml).unwrap();
    let back = files.path().join("back.redb");
    let out = cli(&pg_config, &["migrate", "--to", back.to_str().unwrap()], "").await;
    assert_eq!(out.code, 0, "{out:?}");
    let redb_yaml_2 = redb_yaml(&back, &up.url());
    let on_redb = Gateway::start(&redb_yaml_2).await;
    for u in users {
        login(&on_redb, u, PW).await;
    }
    assert_eq!(
        app(&on_redb, &sessions[0].access).await,
        200,
        "an access token from redb, twice moved"
    );
    assert_eq!(
        app(&on_redb, &next.access).await,
        200,
        "an access token from PostgreSQL"
    );
    refreshed(&on_redb, &next.refresh).await;
    on_redb.shutdown().await;

    // A redb file with users is no target either.
    signup(&on_pg, "dee@example.com", PW).await;
    let out = cli(&pg_config, &["migrate", "--to", back.to_str().unwrap()], "").await;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("is in use"), "{}", out.stderr);
    let on_redb = Gateway::start(&redb_yaml_2).await;
    assert_eq!(
        login_attempt(&on_redb, "dee@example.com", PW).await.status,
        401
    );
}

/// `gateway migrate` into a database a replica already serves from (it made its own keys
/// there) is refused and writes nothing: swapping the keys under a running replica would split
/// it from the migrated sessions (its refresh and CSRF keys are read once, at start).
#[tokio::test]
async fn migrating_into_a_database_a_gateway_already_uses_is_refused() {
    let Some(pg) = PgServer::start_async().await else {
        return;
    };
    let url = pg.create_database_async("gateway").await;
    let up = Upstream::start().await;
    let pg_yaml = replica_yaml(&url, &up.url(), Opts::default());
    // The replica makes its own keys in the empty database; it has no users yet.
    let running = Gateway::start(&pg_yaml).await;
    let before = dump(&url).await;

    let files = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&redb_yaml(&files.path().join("first.redb"), &up.url())).await;
    signup(&gw, "ada@example.com", PW).await;
    let redb_config = gw.path("gateway.yaml");
    let _redb_dir = gw.shutdown().await;
    let out = cli(&redb_config, &["migrate", "--to", &url], "").await;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("is in use") && out.stderr.contains("nothing was written"),
        "{}",
        out.stderr
    );
    assert_eq!(
        dump(&url).await,
        before,
        "the refused migration wrote something"
    );
    // The running replica is unaffected and still has no such user.
    let r = post_json(
        &running.url("/api/auth/login"),
        &serde_json::json!({"email": "ada@example.com", "password": PW}),
        &[],
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
}
