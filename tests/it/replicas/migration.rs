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
    assert!(out.stdout.contains("copied 3 users"), "{}", out.stdout);

    let pg_yaml = replica_yaml(&url, &up.url(), Opts::default());
    let on_pg = Gateway::start(&pg_yaml).await;
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
        out.stderr.contains("already has users") && out.stderr.contains("nothing was written"),
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
    assert!(out.stderr.contains("already has users"), "{}", out.stderr);
    let on_redb = Gateway::start(&redb_yaml_2).await;
    assert_eq!(
        login_attempt(&on_redb, "dee@example.com", PW).await.status,
        401
    );
}

/// A replica running on an empty database, then `gateway migrate` from redb into that
/// database: the replica, a session that lives on, and one that was ended before the move.
struct MigratedUnder {
    running: Gateway,
    pg_yaml: String,
    live: Tokens,
    ended: Tokens,
    _up: Upstream,
    _files: tempfile::TempDir,
    _pg: PgServer,
}

async fn migrate_under_a_running_replica() -> Option<MigratedUnder> {
    let pg = PgServer::start_async().await?;
    let url = pg.create_database_async("gateway").await;
    let up = Upstream::start().await;
    let pg_yaml = replica_yaml(&url, &up.url(), Opts::default());
    // The replica makes its own keys in the empty database.
    let running = Gateway::start(&pg_yaml).await;

    let files = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&redb_yaml(&files.path().join("first.redb"), &up.url())).await;
    let live = signup(&gw, "ada@example.com", PW).await;
    let ended = login(&gw, "ada@example.com", PW).await;
    logout(&gw, &ended).await;
    let redb_config = gw.path("gateway.yaml");
    let redb_dir = gw.shutdown().await;
    let out = cli(&redb_config, &["migrate", "--to", &url], "").await;
    assert_eq!(out.code, 0, "{out:?}");
    drop(redb_dir);
    Some(MigratedUnder {
        running,
        pg_yaml,
        live,
        ended,
        _up: up,
        _files: files,
        _pg: pg,
    })
}

#[tokio::test]
async fn a_replica_running_on_the_target_of_a_migration_reads_its_revocations() {
    let Some(m) = migrate_under_a_running_replica().await else {
        return;
    };
    // The import announces itself like a key rotation: the running replica re-reads the keys
    // (tokens from redb verify) and the revocations that came with them.
    let since = Instant::now();
    app_becomes(
        "migrated keys",
        &m.running,
        &m.live.access,
        200,
        since,
        PROPAGATION,
    )
    .await;
    app_becomes(
        "migrated revocations",
        &m.running,
        &m.ended.access,
        401,
        since,
        PROPAGATION,
    )
    .await;
    let started = Gateway::start(&m.pg_yaml).await;
    assert_eq!(app(&started, &m.ended.access).await, 401);
    assert_eq!(app(&started, &m.live.access).await, 200);
}

#[tokio::test]
#[ignore = "known bug: a replica running on the target of `gateway migrate` keeps the refresh \
            and CSRF keys it generated; only the signing keys are re-read"]
async fn a_replica_running_on_the_target_of_a_migration_uses_its_refresh_and_csrf_keys() {
    let Some(m) = migrate_under_a_running_replica().await else {
        return;
    };
    let since = Instant::now();
    app_becomes(
        "migrated keys",
        &m.running,
        &m.live.access,
        200,
        since,
        PROPAGATION,
    )
    .await;
    let started = Gateway::start(&m.pg_yaml).await;

    // Two tabs refreshing the same token on the two replicas get the same successor.
    let x = refresh(&m.running, &m.live.refresh).await;
    let y = refresh(&started, &m.live.refresh).await;
    assert_eq!(
        (x.status, y.status),
        (200, 200),
        "grace refresh across replicas: {} / {}",
        x.text(),
        y.text()
    );

    // A cookie session from one replica passes the CSRF check of the other.
    let l = login(&m.running, "ada@example.com", PW).await;
    let (access, csrf) = (l.cookie("gw_access"), l.cookie("gw_csrf"));
    let cookies = cookie_header(&[("gw_access", &access), ("gw_csrf", &csrf)]);
    let r = call(
        "POST",
        &started.url("/app/x"),
        &[("cookie", &cookies), ("x-csrf-token", &csrf)],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "CSRF token across replicas: {}", r.text());
}
