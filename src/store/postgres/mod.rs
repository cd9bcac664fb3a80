//! The PostgreSQL backend: the same records and contract as redb, in a database several
//! gateway replicas share.
//!
//! - **Blocking facade.** The store interface is synchronous (callers already run it on the
//!   blocking pool). This backend owns a one-thread tokio runtime where the connection pool
//!   (deadpool) and the notification listener live; each call blocks its caller on a future
//!   driven there, bounded by `query_timeout`. Connection loss and timeouts come back as
//!   [`StoreError::Unavailable`], which the HTTP layer answers with 503.
//! - **Change feed in commit order.** A transaction that appends a change first takes a
//!   transaction-scoped advisory lock, so sequence numbers are gapless and become visible in
//!   order: a reader that saw `n` can never later find a smaller number committed. The same
//!   transaction sends `NOTIFY gateway_changes`, delivered at commit.
//! - **Wake-ups.** A dedicated connection `LISTEN`s and pokes [`PgStore::change_hint`]; it
//!   reconnects after a failure and pokes once more, so a replica that missed notifications
//!   catches up by sequence number.
//! - **Races between replicas** are settled by row locks (`SELECT ... FOR UPDATE`) inside one
//!   transaction: refresh rotation, user edits, meta updates, regulation counts.
//!
//! The code is split like the redb backend: `users`, `sessions` (refresh tokens and
//! revocations), `session_info` (the sessions a user sees), `one_time` (verification and reset
//! tokens), `factors` (second factors), `identities` (linked single sign-on accounts),
//! `regulation`, `feed` (the change feed and its listener) and `sql` (the query helpers);
//! `schema` holds the tables and their migrations.

mod factors;
mod feed;
mod identities;
mod one_time;
mod regulation;
mod schema;
mod session_info;
mod sessions;
mod sql;
mod users;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::Notify;
use tokio_postgres::config::SslMode;
use tokio_postgres::{NoTls, Row};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::model::{
    CHANGE_RETENTION, Change, JtiRange, OneTimeToken, RefreshRecord, RefreshState, Regulation,
    Rotation, SessionInfo, Snapshot, StoreError, SweepStats, TokenHash, TokenKind, User, UserFlags,
};
use crate::config::PostgresSettings;
use feed::{append_change, listen};
use one_time::{ONE_TIME_COLUMNS, hash_of, insert_one_time, one_time_of};
use session_info::{SESSION_COLUMNS, insert_session, session_of};
use sessions::{REFRESH_COLUMNS, insert_refresh, refresh_of};
use sql::{
    begin, commit, corrupt, count, db_error, execute, get, int, query, query_one, query_opt, uint,
};
use users::{USER_COLUMNS, insert_user, set_flags, user_of};

pub use schema::{SCHEMA_VERSION, migration_sql};

/// A handle on the database. Cheap to clone; clones share the pool and the runtime.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    query_timeout: Duration,
    hint: Arc<Notify>,
    /// Where the pool's connections and the listener run; see the module docs.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio forbids inside async code; the last handle
        // may well be dropped there.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects, migrates the schema and starts the listener. Fails with
    /// [`StoreError::Unavailable`] if the database cannot be reached within the timeouts.
    pub fn connect(settings: &PostgresSettings) -> Result<PgStore, StoreError> {
        let mut config: tokio_postgres::Config = settings.url.expose().parse().map_err(|_| {
            StoreError::Io("store.postgres.url is not a valid connection URL".into())
        })?;
        config.connect_timeout(settings.connect_timeout);
        config.keepalives_idle(Duration::from_secs(30));
        if config.get_application_name().is_none() {
            config.application_name("gateway");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("gateway-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io(format!("start the database runtime: {e}")))?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let tls = tls_connector(&config, settings)?;
        let manager = match &tls {
            Some(tls) => Manager::from_config(config.clone(), tls.clone(), manager_config),
            None => Manager::from_config(config.clone(), NoTls, manager_config),
        };
        let pool = {
            // The pool spawns connection tasks on the runtime current when it connects.
            let _guard = runtime.enter();
            Pool::builder(manager)
                .max_size(settings.pool_size)
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(settings.query_timeout))
                .create_timeout(Some(settings.connect_timeout))
                .recycle_timeout(Some(settings.query_timeout))
                .build()
                .map_err(|e| StoreError::Io(format!("build the connection pool: {e}")))?
        };
        let hint = Arc::new(Notify::new());
        match tls {
            Some(tls) => runtime.spawn(listen(config, tls, hint.clone())),
            None => runtime.spawn(listen(config, NoTls, hint.clone())),
        };
        let store = PgStore {
            inner: Arc::new(Inner {
                pool,
                query_timeout: settings.query_timeout.max(settings.connect_timeout),
                hint,
                runtime: Some(runtime),
            }),
        };
        store.run("migrate the schema", |pool| async move {
            let mut client = get(&pool).await?;
            let txn = begin(&mut client).await?;
            schema::migrate(&txn).await?;
            commit(txn).await
        })?;
        tracing::debug!("PostgreSQL store ready");
        Ok(store)
    }

    /// Runs `f` on the store's runtime and waits for it, at most `query_timeout`.
    fn run<'a, T, F, Fut>(&'a self, what: &str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Pool) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + 'a,
    {
        let Some(runtime) = self.inner.runtime.as_ref() else {
            return Err(StoreError::Unavailable("the store is shut down".into()));
        };
        let timeout = self.inner.query_timeout;
        let fut = async {
            tokio::time::timeout(timeout, f(self.inner.pool.clone()))
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Unavailable(format!(
                        "{what}: no answer from the database within {}",
                        humantime::format_duration(timeout)
                    )))
                })
        };
        // On an async worker thread blocking is only allowed through block_in_place; on the
        // blocking pool and plain threads block_on is fine as it is.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| runtime.block_on(fut))
            }
            _ => runtime.block_on(fut),
        }
    }

    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.run("read meta", |pool| async move {
            let client = get(&pool).await?;
            let row = query_opt(
                &client,
                "SELECT value FROM gateway_meta WHERE key = $1",
                &[&key],
            )
            .await?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.run("write meta", |pool| async move {
            let client = get(&pool).await?;
            execute(
                &client,
                "INSERT INTO gateway_meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&key, &value],
            )
            .await?;
            Ok(())
        })
    }

    pub fn put_meta_if_absent(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.run("write meta", |pool| async move {
            let client = get(&pool).await?;
            execute(
                &client,
                "INSERT INTO gateway_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&key, &value],
            )
            .await?;
            let row = query_one(
                &client,
                "SELECT value FROM gateway_meta WHERE key = $1",
                &[&key],
            )
            .await?;
            Ok(row.get(0))
        })
    }

    pub fn update_meta<E: From<StoreError>>(
        &self,
        key: &str,
        announce: bool,
        change: impl FnOnce(Option<&[u8]>) -> Result<Vec<u8>, E>,
    ) -> Result<Vec<u8>, E> {
        // The edit runs between the locking read and the write, inside the transaction.
        let mut outcome: Option<E> = None;
        let result = self.run("update meta", |pool| {
            let outcome = &mut outcome;
            async move {
                let mut client = get(&pool).await?;
                let txn = begin(&mut client).await?;
                execute(
                    &txn,
                    "INSERT INTO gateway_meta (key, value) VALUES ($1, ''::bytea)
                     ON CONFLICT (key) DO NOTHING",
                    &[&key],
                )
                .await?;
                let row = query_one(
                    &txn,
                    "SELECT value FROM gateway_meta WHERE key = $1 FOR UPDATE",
                    &[&key],
                )
                .await?;
                let current: Vec<u8> = row.get(0);
                // An empty value is the placeholder just inserted: no value yet.
                let current = (!current.is_empty()).then_some(current);
                let new = match change(current.as_deref()) {
                    Ok(new) => new,
                    Err(e) => {
                        *outcome = Some(e);
                        return Err(StoreError::NotFound);
                    }
                };
                execute(
                    &txn,
                    "UPDATE gateway_meta SET value = $2 WHERE key = $1",
                    &[&key, &new],
                )
                .await?;
                if announce {
                    append_change(&txn, &Change::Keys).await?;
                }
                commit(txn).await?;
                Ok(new)
            }
        });
        match (result, outcome) {
            (_, Some(e)) => Err(e),
            (Ok(new), None) => Ok(new),
            (Err(e), None) => Err(E::from(e)),
        }
    }

    pub fn sweep(&self, now: u64) -> Result<SweepStats, StoreError> {
        self.run("sweep", |pool| async move {
            let mut client = get(&pool).await?;
            let txn = begin(&mut client).await?;
            let now = int(now);
            let mut stats = SweepStats::default();
            let families = query_one(
                &txn,
                "SELECT count(DISTINCT family) FROM gateway_refresh_tokens WHERE family_expires_at <= $1",
                &[&now],
            )
            .await?;
            stats.families = count(families.get::<_, i64>(0));
            stats.refresh_tokens = count(
                execute(
                    &txn,
                    "DELETE FROM gateway_refresh_tokens WHERE family_expires_at <= $1",
                    &[&now],
                )
                .await?,
            );
            stats.revoked_families = count(
                execute(
                    &txn,
                    "DELETE FROM gateway_revoked_families WHERE exp <= $1",
                    &[&now],
                )
                .await?,
            );
            stats.jtis = count(
                execute(
                    &txn,
                    "DELETE FROM gateway_revoked_jtis WHERE exp <= $1",
                    &[&now],
                )
                .await?,
            );
            stats.one_time_tokens = count(
                execute(
                    &txn,
                    "DELETE FROM gateway_one_time_tokens WHERE expires_at <= $1",
                    &[&now],
                )
                .await?,
            );
            stats.sessions = count(
                execute(
                    &txn,
                    "DELETE FROM gateway_sessions WHERE ended_at IS NOT NULL OR expires_at <= $1",
                    &[&now],
                )
                .await?,
            );
            stats.changes = count(
                execute(
                    &txn,
                    "DELETE FROM gateway_changes
                     WHERE seq <= (SELECT max(seq) FROM gateway_changes) - $1",
                    &[&int(CHANGE_RETENTION)],
                )
                .await?,
            );
            // Regulation entries untouched for a day hold nothing worth keeping.
            execute(
                &txn,
                "DELETE FROM gateway_login_regulation WHERE touched < $1",
                &[&(now - 86_400)],
            )
            .await?;
            commit(txn).await?;
            if stats != SweepStats::default() {
                tracing::debug!(?stats, "store sweep");
            }
            Ok(stats)
        })
    }

    pub fn export(&self, now: u64) -> Result<Snapshot, StoreError> {
        self.run("export", |pool| async move {
            let mut client = get(&pool).await?;
            // One snapshot of the whole database.
            let txn = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(|e| db_error("begin transaction", e))?;
            let mut snap = Snapshot::default();
            let sql = format!("SELECT {USER_COLUMNS} FROM gateway_users ORDER BY id");
            snap.users = query(&txn, &sql, &[]).await?.iter().map(user_of).collect();
            snap.flags = query(
                &txn,
                "SELECT user_id, disabled, session_version FROM gateway_user_flags",
                &[],
            )
            .await?
            .iter()
            .map(|r| {
                let flags = UserFlags {
                    disabled: r.get(1),
                    session_version: uint(r.get(2)),
                };
                (r.get(0), flags)
            })
            .collect();
            let sql = format!(
                "SELECT {REFRESH_COLUMNS}, hash FROM gateway_refresh_tokens WHERE family_expires_at > $1"
            );
            for row in query(&txn, &sql, &[&int(now)]).await? {
                let hash: Vec<u8> = row.get("hash");
                let hash: TokenHash = hash
                    .try_into()
                    .map_err(|_| corrupt("gateway_refresh_tokens: hash is not 32 bytes"))?;
                snap.refresh.push((hash, refresh_of(&row)?));
            }
            let pairs = |rows: Vec<Row>| -> Vec<(String, u64)> {
                rows.iter().map(|r| (r.get(0), uint(r.get(1)))).collect()
            };
            snap.revoked_jtis = pairs(
                query(
                    &txn,
                    "SELECT jti, exp FROM gateway_revoked_jtis WHERE exp > $1",
                    &[&int(now)],
                )
                .await?,
            );
            snap.revoked_families = pairs(
                query(
                    &txn,
                    "SELECT family, exp FROM gateway_revoked_families WHERE exp > $1",
                    &[&int(now)],
                )
                .await?,
            );
            let sql = format!(
                "SELECT {ONE_TIME_COLUMNS} FROM gateway_one_time_tokens WHERE expires_at > $1"
            );
            for row in query(&txn, &sql, &[&int(now)]).await? {
                snap.one_time.push((hash_of(&row)?, one_time_of(&row)?));
            }
            let sql =
                format!("SELECT {SESSION_COLUMNS} FROM gateway_sessions WHERE expires_at > $1");
            snap.sessions = query(&txn, &sql, &[&int(now)])
                .await?
                .iter()
                .map(session_of)
                .collect();
            snap.meta = query(&txn, "SELECT key, value FROM gateway_meta", &[])
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            snap.factors = factors::all_factors(&txn).await?;
            snap.identities = identities::all_identities(&txn).await?;
            commit(txn).await?;
            Ok(snap)
        })
    }

    pub fn import(&self, snap: &Snapshot) -> Result<(), StoreError> {
        self.run("import", |pool| async move {
            let mut client = get(&pool).await?;
            let txn = begin(&mut client).await?;
            // Two imports at once must not both find the store empty.
            execute(&txn, "LOCK TABLE gateway_users IN EXCLUSIVE MODE", &[]).await?;
            execute(&txn, "LOCK TABLE gateway_meta IN EXCLUSIVE MODE", &[]).await?;
            // Keys mean a gateway has started on this database and signs with them: replacing
            // them under it would split it from the migrated sessions.
            let row = query_one(
                &txn,
                "SELECT (SELECT count(*) FROM gateway_users) + (SELECT count(*) FROM gateway_meta)",
                &[],
            )
            .await?;
            if row.get::<_, i64>(0) > 0 {
                return Err(StoreError::NotEmpty);
            }
            for user in &snap.users {
                insert_user(&txn, user).await?;
            }
            for (id, flags) in &snap.flags {
                set_flags(&txn, id, *flags).await?;
            }
            for (hash, rec) in &snap.refresh {
                insert_refresh(&txn, hash, rec).await?;
            }
            for (hash, rec) in &snap.one_time {
                insert_one_time(&txn, hash, rec).await?;
            }
            for info in &snap.sessions {
                insert_session(&txn, &info.bounded()).await?;
            }
            for (user_id, value) in &snap.factors {
                factors::insert_factors(&txn, user_id, value).await?;
            }
            for identity in &snap.identities {
                identities::insert_identity(&txn, identity).await?;
            }
            for (jti, exp) in &snap.revoked_jtis {
                execute(
                    &txn,
                    "INSERT INTO gateway_revoked_jtis (jti, exp) VALUES ($1, $2)
                     ON CONFLICT (jti) DO UPDATE SET exp = excluded.exp",
                    &[jti, &int(*exp)],
                )
                .await?;
            }
            for (family, exp) in &snap.revoked_families {
                execute(
                    &txn,
                    "INSERT INTO gateway_revoked_families (family, exp) VALUES ($1, $2)
                     ON CONFLICT (family) DO UPDATE SET exp = excluded.exp",
                    &[family, &int(*exp)],
                )
                .await?;
            }
            for (key, value) in &snap.meta {
                execute(
                    &txn,
                    "INSERT INTO gateway_meta (key, value) VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &[key, value],
                )
                .await?;
            }
            // Running replicas re-read keys and revocations.
            append_change(&txn, &Change::Keys).await?;
            commit(txn).await
        })
    }
}

/// TLS for `sslmode=require`: rustls (ring) verifying the server's certificate against
/// `ca_file` or the web PKI roots. Without `sslmode=require` the connection is plain, as the
/// usual deployment (a database on a private network or loopback) expects.
fn tls_connector(
    config: &tokio_postgres::Config,
    settings: &PostgresSettings,
) -> Result<Option<MakeRustlsConnect>, StoreError> {
    if config.get_ssl_mode() != SslMode::Require {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    match &settings.ca_file {
        Some(path) => {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    StoreError::Io(format!("store.postgres.ca_file {}: {e}", path.display()))
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(StoreError::Io(format!(
                    "store.postgres.ca_file {}: no usable CA certificate",
                    path.display()
                )));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .map_err(|e| StoreError::Io(format!("TLS for PostgreSQL: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Some(MakeRustlsConnect::new(tls)))
}
