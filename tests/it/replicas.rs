//! Several gateway replicas in one process on one PostgreSQL database: sessions, revocations,
//! refresh rotation, login regulation and signing keys are shared; a database outage is ridden
//! out (tokens keep working, logins answer 503) and, past `stale_after`, fails closed; `gateway
//! migrate` moves everything between redb and PostgreSQL.
//!
//! Every test has its own PostgreSQL server ([`PgServer`]) and skips when PostgreSQL is not
//! installed. Propagation bounds ("within 1 s") are what the store promises (NOTIFY wakes every
//! replica at once); each is polled every [`POLL`] up to the bound, and the measured time is in
//! the assertion message (and on stderr with `--nocapture`).
//!
//! Here: the [`Replicas`] builder and helpers, and what is simply shared (sessions, login
//! regulation, signing keys). By concern: [`revocation`], [`refresh`] rotation, database
//! [`outage`]s, [`migration`].

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

mod migration;
mod outage;
mod refresh;
mod revocation;

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

// ---- Sessions are shared ----

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

// ---- Login regulation is shared ----

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

// ---- Signing keys are shared ----

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
