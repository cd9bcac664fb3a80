//! Several gateway replicas in one process on one PostgreSQL database: sessions, revocations,
//! refresh rotation, login regulation and signing keys are shared; a database outage is ridden
//! out (tokens keep working, logins answer 503) and, past `stale_after`, fails closed; `gateway
//! migrate` moves everything between redb and PostgreSQL.
//!
//! Every test has its own PostgreSQL server ([`PgServer`]) and skips when PostgreSQL is not
//! installed. Propagation bounds ("within 1 s") are what the store promises (NOTIFY wakes every
//! replica at once); each is polled every [`POLL`] up to the bound, and the measured time is in
//! the assertion message (and on stderr with `--nocapture`).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_postgres::NoTls;

use crate::pg::PgServer;
use crate::util::*;

const PW: &str = "correct horse battery";
const WRONG: &str = "wrong horse battery";

/// How often a propagation is checked.
const POLL: Duration = Duration::from_millis(50);
/// What the store promises for a revocation made on one replica to reach the others.
const PROPAGATION: Duration = Duration::from_secs(1);
/// A generous bound for "promptly" (with [`SHORT_TIMEOUTS`]).
const PROMPTLY: Duration = Duration::from_secs(5);
/// Database timeouts for the outage tests, so that "promptly" can be bounded. The other tests
/// keep the defaults (5 s): with many tests starting PostgreSQL servers on a loaded machine, a
/// start-up can take longer than a second.
const SHORT_TIMEOUTS: &str = "connect_timeout: 1s, query_timeout: 1s";
/// How long a replica may take to notice the database is back (polls every second).
const RECOVERY: Duration = Duration::from_secs(10);

// ---- Setup ----

/// Per-test settings on top of the common replica config.
#[derive(Default, Clone, Copy)]
struct Opts<'a> {
    /// Extra `store.postgres` members, e.g. `"stale_after: 2s"`.
    store: &'a str,
    /// Extra `auth` members, e.g. `"refresh_grace: 0s"`.
    auth: &'a str,
    /// Extra top-level YAML, e.g. a `regulation:` line.
    extra: &'a str,
}

/// The config every replica of a test shares: the database, fast hashing, per-IP limits off,
/// `/public` open and `/app` behind a token, both to `upstream`.
fn replica_yaml(url: &str, upstream: &str, o: Opts) -> String {
    let sep = |s: &str| if s.is_empty() { "" } else { ", " };
    format!(
        "version: 1\nlisten: {{http: 127.0.0.1:0, https: 127.0.0.1:0}}\n\
         store:\n  postgres: {{url: '{url}'{}{}}}\n\
         {}",
        sep(o.store),
        o.store,
        auth_config(
            o.auth,
            &format!(
                "rate_limits: {{login_per_ip: 'off', login_per_account: 'off'}}\n{}\n{}",
                o.extra,
                routes(upstream)
            ),
        ),
    )
}

fn routes(upstream: &str) -> String {
    format!(
        "routes:\n  - {{path: /public, upstream: '{upstream}', auth: public}}\n  - {{path: /app, upstream: '{upstream}', auth: required}}\n"
    )
}

/// N gateways in this process on one database of a private PostgreSQL server, one mock
/// upstream behind all of them, and a config file for the admin CLI naming the same database.
struct Replicas {
    /// First, so that the replicas stop before the database does.
    gws: Vec<Gateway>,
    pg: PgServer,
    /// The database every replica uses.
    url: String,
    upstream: Upstream,
    yaml: String,
    /// Holds `cli.yaml`.
    dir: tempfile::TempDir,
}

impl Replicas {
    /// Starts `n` replicas at once (they race to create the schema and keys, as replicas
    /// deployed together do); `None` when PostgreSQL is not installed.
    async fn start(n: usize, opts: Opts<'_>) -> Option<Replicas> {
        let pg = PgServer::start_async().await?;
        let url = pg.create_database_async("gateway").await;
        let upstream = Upstream::start().await;
        let yaml = replica_yaml(&url, &upstream.url(), opts);
        let gws = futures_util::future::join_all((0..n).map(|_| Gateway::start(&yaml))).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cli.yaml"), &yaml).unwrap();
        Some(Replicas {
            gws,
            pg,
            url,
            upstream,
            yaml,
            dir,
        })
    }

    fn a(&self) -> &Gateway {
        &self.gws[0]
    }

    fn b(&self) -> &Gateway {
        &self.gws[1]
    }

    /// The config for `gateway` commands run against the shared database.
    fn cli_config(&self) -> std::path::PathBuf {
        self.dir.path().join("cli.yaml")
    }

    /// Runs the CLI against the shared database; it must succeed.
    async fn cli_ok(&self, args: &[&str]) -> String {
        let out = cli(&self.cli_config(), args, "").await;
        assert_eq!(out.code, 0, "gateway {args:?}: {out:?}");
        out.stdout
    }

    /// A client connection to the shared database.
    async fn db(&self) -> tokio_postgres::Client {
        db(&self.url).await
    }
}

async fn db(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    tokio::spawn(conn);
    client
}

// ---- Requests ----

/// GET /app/x with a bearer token: the status.
async fn app(gw: &Gateway, access: &str) -> u16 {
    get_with(&gw.url("/app/x"), &[("authorization", &bearer(access))])
        .await
        .status
}

async fn login_attempt(gw: &Gateway, email: &str, password: &str) -> Resp {
    post_json(
        &gw.url("/api/auth/login"),
        &json!({"email": email, "password": password}),
        &[],
    )
    .await
}

/// POST /logout with the session's access token and refresh token; expects 204.
async fn logout(gw: &Gateway, s: &Tokens) {
    let r = post_json(
        &gw.url("/api/auth/logout"),
        &json!({"refresh_token": s.refresh}),
        &[("authorization", &bearer(&s.access))],
    )
    .await;
    assert_eq!(r.status, 204, "logout: {}", r.text());
}

fn user_id(t: &Tokens) -> String {
    t.resp.json()["user"]["id"].as_str().unwrap().to_owned()
}

/// The decoded header and payload of a JWT.
fn jwt(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut part = || -> Value {
        let bytes = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    (part(), part())
}

/// The session (refresh family) of an access token.
fn sid(access: &str) -> String {
    jwt(access).1["sid"].as_str().unwrap().to_owned()
}

fn kid(access: &str) -> String {
    jwt(access).0["kid"].as_str().unwrap().to_owned()
}

/// A client `LISTEN`ing on the change channel like a replica; the receiver gets each
/// notification's payload (the change's sequence number). Drop the client to stop.
async fn notifications(
    url: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<i64>,
) {
    let (client, mut conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = tx.send(n.payload().parse().unwrap());
            }
        }
    });
    client
        .batch_execute("LISTEN gateway_changes")
        .await
        .unwrap();
    (client, rx)
}

/// The changes notified until none came for 200 ms (at least one, within 5 s), as stored.
async fn notified_changes(
    client: &tokio_postgres::Client,
    notes: &mut tokio::sync::mpsc::UnboundedReceiver<i64>,
) -> Vec<String> {
    let first = tokio::time::timeout(Duration::from_secs(5), notes.recv())
        .await
        .expect("no NOTIFY on gateway_changes within 5 s of the change");
    let mut seqs = vec![first.unwrap()];
    while let Ok(Some(seq)) = tokio::time::timeout(Duration::from_millis(200), notes.recv()).await {
        seqs.push(seq);
    }
    client
        .query(
            "SELECT change FROM gateway_changes WHERE seq = ANY($1) ORDER BY seq",
            &[&seqs],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

// ---- Waiting ----

/// Polls `check` every [`POLL`] until it holds or `bound` has passed since `since`; returns how
/// long after `since` it first held.
async fn first_true<F, Fut>(since: Instant, bound: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        if check().await {
            return Some(since.elapsed());
        }
        if since.elapsed() >= bound {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `gw` answers `want` for `access` on `/app`, at most `bound` after `since`;
/// returns the time taken (and prints it), panics with the last status otherwise.
async fn app_becomes(
    what: &str,
    gw: &Gateway,
    access: &str,
    want: u16,
    since: Instant,
    bound: Duration,
) -> Duration {
    let last = Cell::new(0);
    let last_ref = &last;
    let took = first_true(since, bound, || async move {
        last_ref.set(app(gw, access).await);
        last_ref.get() == want
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "{what}: still {}, not {want}, {:?} after (bound {bound:?})",
            last.get(),
            since.elapsed()
        )
    });
    eprintln!("replicas: {what}: {took:?}");
    took
}

/// [`app_becomes`] 401 within [`PROPAGATION`] on every gateway, for every token.
async fn refused_everywhere(what: &str, gws: &[&Gateway], tokens: &[&str], since: Instant) {
    for (i, gw) in gws.iter().enumerate() {
        for (j, t) in tokens.iter().enumerate() {
            let what = format!("{what} (replica {i}, token {j})");
            app_becomes(&what, gw, t, 401, since, PROPAGATION).await;
        }
    }
}

// ---- 1. Sessions are shared ----

#[tokio::test]
async fn a_session_from_one_replica_is_honoured_by_the_other() {
    let Some(r) = Replicas::start(2, Opts::default()).await else {
        return;
    };
    let (a, b) = (r.a(), r.b());
    let on_a = signup(a, "ada@example.com", PW).await;
    let on_b = login(b, "ada@example.com", PW).await;
    let id = user_id(&on_a);
    assert_eq!(user_id(&on_b), id, "the same account on both replicas");

    // Each replica's token works on the other, and the upstream sees the same identity.
    for (gw, token, what) in [
        (b, &on_a.access, "A's token on B"),
        (a, &on_b.access, "B's token on A"),
    ] {
        assert_eq!(app(gw, token).await, 200, "{what}");
        assert_eq!(
            r.upstream.last().all("x-auth-user-id"),
            [id.as_str()],
            "{what}"
        );
        let me = get_with(
            &gw.url("/api/auth/me"),
            &[("authorization", &bearer(token))],
        )
        .await;
        assert_eq!(me.status, 200, "{what}: {}", me.text());
        assert_eq!(me.json()["id"], id.as_str(), "{what}");
    }
    // A's refresh token refreshes on B.
    let next = refreshed(b, &on_a.refresh).await;
    assert_eq!(app(a, &next.access).await, 200);

    // A cookie session from A passes B's CSRF check (one CSRF key for all replicas).
    let (access, csrf) = (on_a.cookie("gw_access"), on_a.cookie("gw_csrf"));
    let cookies = cookie_header(&[("gw_access", &access), ("gw_csrf", &csrf)]);
    let post = |headers: Vec<(&'static str, String)>| async move {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        call("POST", &b.url("/app/x"), &headers, None).await.status
    };
    let with_token = vec![("cookie", cookies.clone()), ("x-csrf-token", csrf.clone())];
    assert_eq!(
        post(with_token).await,
        200,
        "cookie session from A with its CSRF token on B"
    );
    assert_eq!(
        post(vec![("cookie", cookies.clone())]).await,
        403,
        "without the CSRF token"
    );
}

// ---- 2. Revocations reach every replica ----

#[tokio::test]
async fn a_logout_on_one_replica_is_refused_by_the_other_within_a_second() {
    let Some(r) = Replicas::start(2, Opts::default()).await else {
        return;
    };
    let (a, b) = (r.a(), r.b());
    let other = signup(a, "ada@example.com", PW).await;
    let s = login(b, "ada@example.com", PW).await;
    assert_eq!(app(a, &s.access).await, 200, "the session works on A first");
    // The 1 s bound would also be met by the 1 s poll alone: check the wake-up itself too.
    let (listener, mut notes) = notifications(&r.url).await;

    logout(b, &s).await;
    let since = Instant::now();
    assert_eq!(
        app(b, &s.access).await,
        401,
        "refused at once where it was ended"
    );
    app_becomes(
        "logout on B reaches A",
        a,
        &s.access,
        401,
        since,
        PROPAGATION,
    )
    .await;
    let changes = notified_changes(&listener, &mut notes).await;
    let jti = jwt(&s.access).1["jti"].as_str().unwrap().to_owned();
    assert!(
        changes.iter().any(|c| c.contains(&jti)),
        "the logout was not notified: {changes:?}"
    );
    assert_eq!(
        refresh(a, &s.refresh).await.status,
        401,
        "its refresh token too"
    );

    // Only that session ended.
    assert_eq!(app(a, &other.access).await, 200);
    assert_eq!(app(b, &other.access).await, 200);
}

#[tokio::test]
async fn logout_all_and_admin_commands_reach_every_replica_within_a_second() {
    let Some(r) = Replicas::start(2, Opts::default()).await else {
        return;
    };
    let (a, b) = (r.a(), r.b());
    signup(a, "ada@example.com", PW).await;
    // A session started on each replica, both working on both.
    let sessions = || async move {
        let s = [
            login(a, "ada@example.com", PW).await,
            login(b, "ada@example.com", PW).await,
        ];
        for t in &s {
            assert_eq!(app(a, &t.access).await, 200);
            assert_eq!(app(b, &t.access).await, 200);
        }
        s
    };

    // logout-all through the API of A.
    let s = sessions().await;
    let r1 = post_json(
        &a.url("/api/auth/logout-all"),
        &json!({}),
        &[("authorization", &bearer(&s[0].access))],
    )
    .await;
    assert_eq!(r1.status, 204, "{}", r1.text());
    let since = Instant::now();
    refused_everywhere(
        "logout-all on A",
        &[a, b],
        &[&s[0].access, &s[1].access],
        since,
    )
    .await;

    // `gateway user revoke-sessions`, measured from the command's exit.
    let s = sessions().await;
    r.cli_ok(&["user", "revoke-sessions", "ada@example.com"])
        .await;
    let since = Instant::now();
    refused_everywhere(
        "CLI revoke-sessions",
        &[a, b],
        &[&s[0].access, &s[1].access],
        since,
    )
    .await;
    for t in &s {
        assert_eq!(refresh(b, &t.refresh).await.status, 401);
    }

    // `gateway user disable`: tokens refused, logins too, until `enable`.
    let s = sessions().await;
    r.cli_ok(&["user", "disable", "ada@example.com"]).await;
    let since = Instant::now();
    refused_everywhere("CLI disable", &[a, b], &[&s[0].access, &s[1].access], since).await;
    for gw in [a, b] {
        assert_eq!(login_attempt(gw, "ada@example.com", PW).await.status, 401);
    }
    // Enabling travels like any change: A may refuse a token B issued right after it until A
    // has read the change, so this too is "within a second".
    r.cli_ok(&["user", "enable", "ada@example.com"]).await;
    let since = Instant::now();
    let again = login(b, "ada@example.com", PW).await;
    app_becomes(
        "CLI enable reaches A",
        a,
        &again.access,
        200,
        since,
        PROPAGATION,
    )
    .await;
}

// ---- 3 and 4. Refresh rotation across replicas ----

#[tokio::test]
async fn a_rotated_refresh_token_reused_on_another_replica_kills_the_family() {
    let Some(r) = Replicas::start(
        2,
        Opts {
            auth: "refresh_grace: 0s",
            ..Opts::default()
        },
    )
    .await
    else {
        return;
    };
    let (a, b) = (r.a(), r.b());
    let first = signup(a, "ada@example.com", PW).await;
    let second = refreshed(a, &first.refresh).await;
    assert_eq!(app(b, &second.access).await, 200);

    // The rotated token comes back, on the other replica: reuse.
    let reuse = refresh(b, &first.refresh).await;
    assert_eq!(reuse.status, 401, "{}", reuse.text());
    let since = Instant::now();
    // The successor is dead in the database at once, wherever it is presented.
    let r2 = refresh(a, &second.refresh).await;
    assert_eq!(r2.status, 401, "the successor after reuse: {}", r2.text());
    assert_eq!(
        app(b, &second.access).await,
        401,
        "refused at once where reuse was seen"
    );
    refused_everywhere(
        "reuse on B reaches A",
        &[a, b],
        &[&second.access, &first.access],
        since,
    )
    .await;
}

/// One round: a fresh session on A, its refresh token presented to A and B at the same time.
/// Returns both answers and the session id.
async fn refresh_on_both(r: &Replicas, email: &str) -> (Resp, Resp, Tokens) {
    let s = login(r.a(), email, PW).await;
    let (x, y) = tokio::join!(refresh(r.a(), &s.refresh), refresh(r.b(), &s.refresh));
    (x, y, s)
}

/// The states of a family's rows in the database, sorted (`active`, `revoked`, `rotated`).
async fn family_rows(client: &tokio_postgres::Client, family: &str) -> Vec<(String, Vec<u8>)> {
    let rows = client
        .query(
            "SELECT state, hash FROM gateway_refresh_tokens WHERE family = $1 ORDER BY state",
            &[&family],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refresh_token_on_two_replicas_at_once_rotates_once_within_grace() {
    let Some(r) = Replicas::start(2, Opts::default()).await else {
        return;
    };
    signup(r.a(), "ada@example.com", PW).await;
    let client = r.db().await;
    for round in 0..10 {
        let (x, y, s) = refresh_on_both(&r, "ada@example.com").await;
        assert_eq!(
            (x.status, y.status),
            (200, 200),
            "round {round}: {} / {}",
            x.text(),
            y.text()
        );
        let (x, y) = (x.json(), y.json());
        let token = x["refresh_token"].as_str().unwrap();
        assert_eq!(
            token, y["refresh_token"],
            "round {round}: both replicas hand out the same successor"
        );
        let rows = family_rows(&client, &sid(&s.access)).await;
        let states: Vec<&str> = rows.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            states,
            ["active", "rotated"],
            "round {round}: exactly one new token"
        );
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        assert_eq!(
            rows[0].1, hash,
            "round {round}: the active row is the token handed out"
        );
        for t in [&x, &y] {
            let access = t["access_token"].as_str().unwrap();
            assert_eq!(app(r.a(), access).await, 200, "round {round}");
            assert_eq!(app(r.b(), access).await, 200, "round {round}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refresh_token_on_two_replicas_at_once_rotates_once_without_grace() {
    let Some(r) = Replicas::start(
        2,
        Opts {
            auth: "refresh_grace: 0s",
            ..Opts::default()
        },
    )
    .await
    else {
        return;
    };
    signup(r.a(), "ada@example.com", PW).await;
    let client = r.db().await;
    for round in 0..10 {
        let (x, y, s) = refresh_on_both(&r, "ada@example.com").await;
        let mut statuses = [x.status, y.status];
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [200, 401],
            "round {round}: {} / {}",
            x.text(),
            y.text()
        );
        // Whichever came second presented a rotated token without grace: that is reuse, and
        // the whole family (the winner's new token too) is revoked. No second successor.
        let rows = family_rows(&client, &sid(&s.access)).await;
        let states: Vec<&str> = rows.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            states,
            ["revoked", "revoked"],
            "round {round}: one successor, then revoked"
        );
        let winner = if x.status == 200 { x.json() } else { y.json() };
        let token = winner["refresh_token"].as_str().unwrap();
        assert_eq!(refresh(r.a(), token).await.status, 401, "round {round}");
    }
}

// ---- 5. Login regulation is shared ----

const REGULATION: &str = "regulation: {max_retries: 4, find_time: 5m, ban_time: 5m}";

#[tokio::test]
async fn failed_logins_on_two_replicas_are_counted_together() {
    let Some(r) = Replicas::start(
        2,
        Opts {
            extra: REGULATION,
            ..Opts::default()
        },
    )
    .await
    else {
        return;
    };
    let (a, b) = (r.a(), r.b());
    // Sign-up is not a login: 127.0.0.1 is not a familiar network of these accounts.
    signup(a, "ada@example.com", PW).await;
    signup(a, "bob@example.com", PW).await;

    // Three failures (two on A, one on B) are below the limit: the right password still works.
    for gw in [a, b, a] {
        assert_eq!(
            login_attempt(gw, "bob@example.com", WRONG).await.status,
            401
        );
    }
    login(b, "bob@example.com", PW).await;

    // Four failures, two on each replica: banned on both, even with the right password.
    for gw in [a, b, a, b] {
        assert_eq!(
            login_attempt(gw, "ada@example.com", WRONG).await.status,
            401
        );
    }
    for (gw, name) in [(a, "A"), (b, "B")] {
        let r = login_attempt(gw, "ada@example.com", PW).await;
        assert_eq!(r.status, 429, "{name}: {}", r.text());
        assert!(r.header("retry-after").is_some(), "{name}");
    }
}

#[tokio::test]
async fn on_redb_one_gateway_counts_the_same_failures() {
    let gw = Gateway::start(&auth_config(
        "",
        &format!("rate_limits: {{login_per_ip: 'off', login_per_account: 'off'}}\n{REGULATION}\n"),
    ))
    .await;
    signup(&gw, "ada@example.com", PW).await;
    signup(&gw, "bob@example.com", PW).await;
    for _ in 0..3 {
        assert_eq!(
            login_attempt(&gw, "bob@example.com", WRONG).await.status,
            401
        );
    }
    login(&gw, "bob@example.com", PW).await;
    for _ in 0..4 {
        assert_eq!(
            login_attempt(&gw, "ada@example.com", WRONG).await.status,
            401
        );
    }
    assert_eq!(login_attempt(&gw, "ada@example.com", PW).await.status, 429);
}

// ---- 6 and 7. Database outages ----

/// How many replicas are `LISTEN`ing for changes right now.
async fn listeners(url: &str) -> i64 {
    db(url)
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND query = 'LISTEN gateway_changes'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn replicas_ride_out_a_database_restart() {
    let opts = Opts {
        store: SHORT_TIMEOUTS,
        ..Opts::default()
    };
    let Some(mut r) = Replicas::start(2, opts).await else {
        return;
    };
    let token = signup(r.a(), "ada@example.com", PW).await;
    assert_eq!(listeners(&r.url).await, 2, "each replica listens");

    r.pg.stop_async().await;
    // Tokens are checked in memory: proxied requests keep working on both replicas.
    for round in 0..8 {
        for (i, gw) in r.gws.iter().enumerate() {
            assert_eq!(
                app(gw, &token.access).await,
                200,
                "replica {i}, round {round}, database down"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Logins need the database: 503, promptly.
    for (i, gw) in r.gws.iter().enumerate() {
        let t = Instant::now();
        let resp = login_attempt(gw, "ada@example.com", PW).await;
        let took = t.elapsed();
        eprintln!(
            "replicas: login with the database down answered {} in {took:?}",
            resp.status
        );
        assert_eq!(resp.status, 503, "replica {i}: {}", resp.text());
        assert!(took < PROMPTLY, "replica {i}: the 503 took {took:?}");
    }

    r.pg.start_again_async().await;
    let restarted = Instant::now();
    for (i, gw) in r.gws.iter().enumerate() {
        let took = first_true(restarted, RECOVERY, || async move {
            login_attempt(gw, "ada@example.com", PW).await.status == 200
        })
        .await
        .unwrap_or_else(|| panic!("replica {i}: no login {RECOVERY:?} after the restart"));
        eprintln!("replicas: replica {i} logs in again {took:?} after the restart");
    }
    let url = r.url.as_str();
    let took = first_true(
        restarted,
        RECOVERY,
        || async move { listeners(url).await == 2 },
    )
    .await
    .unwrap_or_else(|| panic!("the replicas did not LISTEN again within {RECOVERY:?}"));
    eprintln!("replicas: both replicas LISTEN again {took:?} after the restart");

    // A revocation made after the restart travels as before.
    let s = login(r.b(), "ada@example.com", PW).await;
    assert_eq!(app(r.a(), &s.access).await, 200);
    logout(r.b(), &s).await;
    let since = Instant::now();
    app_becomes(
        "logout after the restart reaches A",
        r.a(),
        &s.access,
        401,
        since,
        PROPAGATION,
    )
    .await;
    assert_eq!(app(r.a(), &token.access).await, 200);
}

/// /readyz: status code and the `status` member.
async fn readyz(gw: &Gateway) -> (u16, Value) {
    let resp = get(&gw.url("/readyz")).await.unwrap();
    let status = resp.json()["status"].clone();
    (resp.status, status)
}

/// Stops the database and waits (at most 10 s) until every replica says on /readyz that it
/// lost it; returns how long that took.
async fn stop_until_stale(r: &mut Replicas) -> Duration {
    r.pg.stop_async().await;
    let stopped = Instant::now();
    let mut took = Duration::ZERO;
    for (i, gw) in r.gws.iter().enumerate() {
        took = first_true(
            stopped,
            RECOVERY,
            || async move { readyz(gw).await.0 == 503 },
        )
        .await
        .unwrap_or_else(|| panic!("replica {i}: /readyz still 200 {RECOVERY:?} after"));
        let (_, status) = readyz(gw).await;
        assert_eq!(status, "store_unreachable", "replica {i}");
    }
    eprintln!("replicas: stale (stale_after 2s) {took:?} after the database stopped");
    took
}

#[tokio::test]
async fn a_replica_cut_off_from_the_database_for_too_long_fails_closed() {
    let Some(mut r) = Replicas::start(
        2,
        Opts {
            store: "stale_after: 2s, connect_timeout: 1s, query_timeout: 1s",
            ..Opts::default()
        },
    )
    .await
    else {
        return;
    };
    let token = signup(r.a(), "ada@example.com", PW).await;
    for gw in &r.gws {
        assert_eq!(app(gw, &token.access).await, 200);
        assert_eq!(readyz(gw).await.0, 200);
    }

    stop_until_stale(&mut r).await;
    for (i, gw) in r.gws.iter().enumerate() {
        // The readiness flip and the refusal are the same decision: no waiting here.
        let resp = get_with(
            &gw.url("/app/x"),
            &[("authorization", &bearer(&token.access))],
        )
        .await;
        assert_eq!(resp.status, 503, "replica {i}, stale: {}", resp.text());
        let public = get(&gw.url("/public/x")).await.unwrap();
        assert_eq!(
            public.status, 200,
            "replica {i}: public routes need no token"
        );
        assert_eq!(
            get(&gw.url("/healthz")).await.unwrap().status,
            200,
            "replica {i}"
        );
    }

    r.pg.start_again_async().await;
    let back = Instant::now();
    for (i, gw) in r.gws.iter().enumerate() {
        app_becomes(
            &format!("replica {i} serves again"),
            gw,
            &token.access,
            200,
            back,
            RECOVERY,
        )
        .await;
        first_true(back, RECOVERY, || async move { readyz(gw).await.0 == 200 })
            .await
            .unwrap_or_else(|| panic!("replica {i}: /readyz not 200 {RECOVERY:?} after"));
    }
}

#[tokio::test]
async fn when_stale_accept_keeps_tokens_working_but_reports_not_ready() {
    let Some(mut r) = Replicas::start(
        2,
        Opts {
            store: "stale_after: 2s, when_stale: accept, connect_timeout: 1s, query_timeout: 1s",
            ..Opts::default()
        },
    )
    .await
    else {
        return;
    };
    let token = signup(r.a(), "ada@example.com", PW).await;
    stop_until_stale(&mut r).await;
    for (i, gw) in r.gws.iter().enumerate() {
        assert_eq!(
            app(gw, &token.access).await,
            200,
            "replica {i}, stale but accepting"
        );
        let ready = get(&gw.url("/readyz")).await.unwrap();
        assert!(
            ready.json()["detail"]
                .as_str()
                .unwrap()
                .contains("still accepted"),
            "replica {i}: {}",
            ready.text()
        );
    }
    r.pg.start_again_async().await;
    let back = Instant::now();
    for (i, gw) in r.gws.iter().enumerate() {
        first_true(back, RECOVERY, || async move { readyz(gw).await.0 == 200 })
            .await
            .unwrap_or_else(|| panic!("replica {i}: /readyz not 200 {RECOVERY:?} after"));
    }
}

// ---- 8. A restarted replica catches up ----

#[tokio::test]
async fn a_replica_restarted_after_missing_changes_refuses_what_was_revoked_meanwhile() {
    let Some(mut r) = Replicas::start(2, Opts::default()).await else {
        return;
    };
    let kept = signup(r.a(), "ada@example.com", PW).await;
    let ended = login(r.b(), "ada@example.com", PW).await;
    signup(r.b(), "bob@example.com", PW).await;
    let bob = login(r.a(), "bob@example.com", PW).await;

    let a = r.gws.remove(0);
    a.shutdown().await;
    // While A is down: a logout on B, and an admin command.
    logout(&r.gws[0], &ended).await;
    r.cli_ok(&["user", "revoke-sessions", "bob@example.com"])
        .await;

    let a = Gateway::start(&r.yaml).await;
    assert_eq!(
        app(&a, &ended.access).await,
        401,
        "the logged-out session, at once"
    );
    assert_eq!(
        app(&a, &bob.access).await,
        401,
        "the revoked sessions, at once"
    );
    assert_eq!(
        app(&a, &kept.access).await,
        200,
        "other sessions still work"
    );
}

// ---- 9. Migration ----

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

// ---- 10. Key rotation ----

#[tokio::test]
async fn a_key_rotation_reaches_every_replica() {
    let Some(r) = Replicas::start(2, Opts::default()).await else {
        return;
    };
    let (a, b) = (r.a(), r.b());
    let before = signup(a, "ada@example.com", PW).await;
    let old_kid = kid(&before.access);

    let out = r.cli_ok(&["keys", "rotate"]).await;
    let rotated = Instant::now();
    let new_kid = out
        .lines()
        .find_map(|l| l.strip_prefix("new signing key "))
        .unwrap_or_else(|| panic!("no new key in {out:?}"))
        .trim()
        .to_owned();
    assert_ne!(new_kid, old_kid);

    // A signs with the new key once it has read the rotation...
    let fresh = RefCell::new(None);
    let (fresh_ref, new_kid_ref) = (&fresh, &new_kid);
    let took = first_true(rotated, PROMPTLY, || async move {
        let t = login(a, "ada@example.com", PW).await;
        let signed_new = kid(&t.access) == *new_kid_ref;
        *fresh_ref.borrow_mut() = Some(t);
        signed_new
    })
    .await
    .unwrap_or_else(|| panic!("A still signs with {old_kid} {PROMPTLY:?} after the rotation"));
    eprintln!("replicas: A signs with the new key {took:?} after the rotation");
    let fresh = fresh.into_inner().unwrap();

    // ... and B accepts such a token within 2 s, and publishes both keys.
    let issued = Instant::now();
    app_becomes(
        "B accepts the new key",
        b,
        &fresh.access,
        200,
        issued,
        Duration::from_secs(2),
    )
    .await;
    let jwks = get(&b.url("/.well-known/jwks.json")).await.unwrap().json();
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
    // Tokens signed before the rotation stay valid everywhere.
    assert_eq!(app(a, &before.access).await, 200);
    assert_eq!(app(b, &before.access).await, 200);
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
