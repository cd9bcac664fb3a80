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

mod schema;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime, Transaction,
};
use tokio::sync::Notify;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, NoTls, Row, Socket, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::model::{
    CHANGE_RETENTION, Change, JtiRange, RefreshRecord, RefreshState, Regulation, Rotation,
    Snapshot, StoreError, SweepStats, TokenHash, User, UserFlags,
};
use crate::config::PostgresSettings;

pub use schema::SCHEMA_VERSION;

/// The notification channel.
const CHANNEL: &str = "gateway_changes";

/// Advisory lock key serialising change-feed appends ("gw-chang").
const CHANGES_LOCK: i64 = 0x6777_2d63_6861_6e67;

/// How long the listener waits before reconnecting.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

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

/// Describes a driver error without quoting data: DETAIL lines can carry key values.
pub(super) fn db_error(what: &str, e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        return StoreError::Io(format!("{what}: {} ({})", db.message(), db.code().code()));
    }
    if e.is_closed() {
        return StoreError::Unavailable(format!("{what}: connection closed"));
    }
    // The causes (I/O, TLS) say what went wrong and hold no data.
    let mut text = format!("{what}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    StoreError::Unavailable(text)
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => db_error("connect to the database", e),
        PoolError::Timeout(kind) => {
            StoreError::Unavailable(format!("no database connection ({kind:?} timed out)"))
        }
        other => StoreError::Unavailable(format!("no database connection: {other}")),
    }
}

/// Unix seconds and counters are `u64` in the gateway and `bigint` in PostgreSQL.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn uint(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
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

    /// Poked when another replica (or this one) committed a change; see [`super::Store::change_hint`].
    pub fn change_hint(&self) -> Arc<Notify> {
        self.inner.hint.clone()
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

    pub fn last_change(&self) -> Result<u64, StoreError> {
        self.run("read the change feed", |pool| async move {
            let client = get(&pool).await?;
            let row = query_one(
                &client,
                "SELECT coalesce(max(seq), 0) FROM gateway_changes",
                &[],
            )
            .await?;
            Ok(uint(row.get(0)))
        })
    }

    pub fn changes_since(&self, seq: u64, limit: usize) -> Result<Vec<(u64, Change)>, StoreError> {
        self.run("read the change feed", |pool| async move {
            let client = get(&pool).await?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = query(
                &client,
                "SELECT seq, change FROM gateway_changes WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&int(seq), &limit],
            )
            .await?;
            rows.iter()
                .map(|row| {
                    let text: String = row.get(1);
                    let change = serde_json::from_str(&text)
                        .map_err(|_| corrupt("gateway_changes: undecodable change"))?;
                    Ok((uint(row.get(0)), change))
                })
                .collect()
        })
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

    pub fn create_user(&self, user: &User) -> Result<(), StoreError> {
        self.run("create user", |pool| async move {
            let mut client = get(&pool).await?;
            let txn = begin(&mut client).await?;
            let taken = query_opt(
                &txn,
                "SELECT id FROM gateway_users WHERE email = $1 OR id = $2",
                &[&user.email, &user.id],
            )
            .await?;
            if let Some(row) = taken {
                let id: String = row.get(0);
                return Err(if id == user.id {
                    StoreError::IdTaken
                } else {
                    StoreError::EmailTaken
                });
            }
            match insert_user(&txn, user).await {
                Err(StoreError::Io(msg)) if msg.contains("23505") => {
                    // A concurrent sign-up with the same email committed first.
                    return Err(StoreError::EmailTaken);
                }
                other => other?,
            }
            // Also clears a stale row left by a deleted user with the same id.
            set_flags(&txn, &user.id, UserFlags::of(user)).await?;
            append_change(
                &txn,
                &Change::User {
                    id: user.id.clone(),
                },
            )
            .await?;
            commit(txn).await
        })
    }

    pub fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        self.run("read user", |pool| async move {
            let client = get(&pool).await?;
            let sql = format!("SELECT {USER_COLUMNS} FROM gateway_users WHERE id = $1");
            let row = query_opt(&client, &sql, &[&id]).await?;
            Ok(row.as_ref().map(user_of))
        })
    }

    pub fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        self.run("read user", |pool| async move {
            let client = get(&pool).await?;
            let sql = format!("SELECT {USER_COLUMNS} FROM gateway_users WHERE email = $1");
            let row = query_opt(&client, &sql, &[&email]).await?;
            Ok(row.as_ref().map(user_of))
        })
    }

    pub fn modify_user(
        &self,
        id: &str,
        change: impl FnOnce(&mut User) -> Result<(), StoreError>,
    ) -> Result<User, StoreError> {
        self.run("update user", |pool| async move {
            let mut client = get(&pool).await?;
            let txn = begin(&mut client).await?;
            let sql = format!("SELECT {USER_COLUMNS} FROM gateway_users WHERE id = $1 FOR UPDATE");
            let Some(row) = query_opt(&txn, &sql, &[&id]).await? else {
                return Err(StoreError::NotFound);
            };
            let old = user_of(&row);
            let mut new = old.clone();
            change(&mut new)?;
            new.id = old.id.clone();
            new.session_version = new.session_version.max(old.session_version);
            if new.email != old.email {
                let owner = query_opt(
                    &txn,
                    "SELECT id FROM gateway_users WHERE email = $1",
                    &[&new.email],
                )
                .await?;
                if owner.is_some() {
                    return Err(StoreError::EmailTaken);
                }
            }
            let updated = execute(
                &txn,
                "UPDATE gateway_users SET email = $2, name = $3, password_hash = $4, roles = $5,
                     disabled = $6, created_at = $7, updated_at = $8, session_version = $9
                 WHERE id = $1",
                &[
                    &new.id,
                    &new.email,
                    &new.name,
                    &new.password_hash,
                    &new.roles,
                    &new.disabled,
                    &int(new.created_at),
                    &int(new.updated_at),
                    &int(new.session_version),
                ],
            )
            .await;
            match updated {
                Err(StoreError::Io(msg)) if msg.contains("23505") => {
                    return Err(StoreError::EmailTaken);
                }
                other => other?,
            };
            set_flags(&txn, &new.id, UserFlags::of(&new)).await?;
            append_change(&txn, &Change::User { id: new.id.clone() }).await?;
            commit(txn).await?;
            Ok(new)
        })
    }

    pub fn delete_user(&self, id: &str, now: u64) -> Result<bool, StoreError> {
        self.run("delete user", |pool| async move {
            let mut client = get(&pool).await?;
            let txn = begin(&mut client).await?;
            let Some(row) = query_opt(
                &txn,
                "DELETE FROM gateway_users WHERE id = $1 RETURNING session_version",
                &[&id],
            )
            .await?
            else {
                return Ok(false);
            };
            let flags = UserFlags {
                disabled: true,
                session_version: uint(row.get(0)),
            };
            set_flags(&txn, id, flags).await?;
            revoke_user_families(&txn, id, now).await?;
            append_change(&txn, &Change::UserDeleted { id: id.to_owned() }).await?;
            commit(txn).await?;
            Ok(true)
        })
    }

    pub fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.run("list users", |pool| async move {
            let client = get(&pool).await?;
            let sql = format!("SELECT {USER_COLUMNS} FROM gateway_users ORDER BY id");
            let rows = query(&client, &sql, &[]).await?;
            Ok(rows.iter().map(user_of).collect())
        })
    }

    pub fn user_count(&self) -> Result<u64, StoreError> {
        self.run("count users", |pool| async move {
            let client = get(&pool).await?;
            let row = query_one(&client, "SELECT count(*) FROM gateway_users", &[]).await?;
            Ok(uint(row.get(0)))
        })
    }

    pub fn user_flags(&self) -> Result<Vec<(String, UserFlags)>, StoreError> {
        self.run("read user flags", |pool| async move {
            let client = get(&pool).await?;
            let rows = query(
                &client,
                "SELECT user_id, disabled, session_version FROM gateway_user_flags",
                &[],
            )
            .await?;
            Ok(rows
                .iter()
                .map(|r| {
                    let flags = UserFlags {
                        disabled: r.get(1),
                        session_version: uint(r.get(2)),
                    };
                    (r.get(0), flags)
                })
                .collect())
        })
    }

    pub fn flags_of(&self, id: &str) -> Result<Option<UserFlags>, StoreError> {
        self.run("read user flags", |pool| async move {
            let client = get(&pool).await?;
            let row = query_opt(
                &client,
                "SELECT disabled, session_version FROM gateway_user_flags WHERE user_id = $1",
                &[&id],
            )
            .await?;
            Ok(row.map(|r| UserFlags {
                disabled: r.get(0),
                session_version: uint(r.get(1)),
            }))
        })
    }

    pub fn end_all_sessions(&self, user_id: &str, now: u64) -> Result<Option<User>, StoreError> {
        self.run("end sessions", |pool| async move {
            let mut client = get(&pool).await?;
            let txn = begin(&mut client).await?;
            let sql = format!(
                "UPDATE gateway_users SET session_version = session_version + 1, updated_at = $2
                 WHERE id = $1 RETURNING {USER_COLUMNS}"
            );
            let Some(row) = query_opt(&txn, &sql, &[&user_id, &int(now)]).await? else {
                return Ok(None);
            };
            let user = user_of(&row);
            set_flags(&txn, user_id, UserFlags::of(&user)).await?;
            revoke_user_families(&txn, user_id, now).await?;
            append_change(
                &txn,
                &Change::User {
                    id: user_id.to_owned(),
                },
            )
            .await?;
            commit(txn).await?;
            Ok(Some(user))
        })
    }

    pub fn insert_refresh(&self, hash: &TokenHash, rec: &RefreshRecord) -> Result<(), StoreError> {
        self.run("store refresh token", |pool| async move {
            let client = get(&pool).await?;
            insert_refresh(&client, hash, rec).await
        })
    }

    pub fn get_refresh(&self, hash: &TokenHash) -> Result<Option<RefreshRecord>, StoreError> {
        self.run("read refresh token", |pool| async move {
            let client = get(&pool).await?;
            let sql =
                format!("SELECT {REFRESH_COLUMNS} FROM gateway_refresh_tokens WHERE hash = $1");
            let row = query_opt(&client, &sql, &[&hash.as_slice()]).await?;
            row.as_ref().map(refresh_of).transpose()
        })
    }

    pub fn rotate_refresh(
        &self,
        old: &TokenHash,
        new: &TokenHash,
        now: u64,
    ) -> Result<Rotation, StoreError> {
        self.run("rotate refresh token", |pool| async move {
            let mut client = get(&pool).await?;
            let txn = begin(&mut client).await?;
            // The row lock decides between replicas presenting the same token at once: the
            // second waits here and then sees the token rotated.
            let sql = format!(
                "SELECT {REFRESH_COLUMNS} FROM gateway_refresh_tokens WHERE hash = $1 FOR UPDATE"
            );
            let Some(row) = query_opt(&txn, &sql, &[&old.as_slice()]).await? else {
                return Ok(Rotation::Invalid);
            };
            let record = refresh_of(&row)?;
            if now >= record.family_expires_at {
                return Ok(Rotation::Invalid);
            }
            // A revocation racing this rotation marks the family before its tokens; either
            // way the successor must not outlive it.
            let revoked = query_opt(
                &txn,
                "SELECT 1 FROM gateway_revoked_families WHERE family = $1",
                &[&record.family],
            )
            .await?;
            if revoked.is_some() && record.state == RefreshState::Active {
                return Ok(Rotation::Invalid);
            }
            match record.state {
                RefreshState::Revoked { .. } => return Ok(Rotation::Invalid),
                RefreshState::Rotated { at } => return Ok(Rotation::AlreadyRotated { at, record }),
                RefreshState::Active => {}
            }
            execute(
                &txn,
                "UPDATE gateway_refresh_tokens SET state = 'rotated', state_at = $2 WHERE hash = $1",
                &[&old.as_slice(), &int(now)],
            )
            .await?;
            let next = RefreshRecord {
                issued_at: now,
                state: RefreshState::Active,
                ..record.clone()
            };
            insert_refresh(&txn, new, &next).await?;
            commit(txn).await?;
            Ok(Rotation::Rotated(record))
        })
    }

    pub fn revoke_family(&self, family: &str, now: u64) -> Result<usize, StoreError> {
        self.run("revoke refresh family", |pool| async move {
            let mut client = get(&pool).await?;
            let txn = begin(&mut client).await?;
            let count = revoke_family_in(&txn, family, now).await?;
            commit(txn).await?;
            Ok(count)
        })
    }

    pub fn revoked_families(&self, now: u64) -> Result<Vec<(String, u64)>, StoreError> {
        self.unexpired(
            "SELECT family, exp FROM gateway_revoked_families WHERE exp > $1",
            now,
        )
    }

    pub fn revoke_jti(&self, jti: &str, exp: u64) -> Result<(), StoreError> {
        self.run("revoke access token", |pool| async move {
            let mut client = get(&pool).await?;
            let txn = begin(&mut client).await?;
            let row = query_one(
                &txn,
                "INSERT INTO gateway_revoked_jtis (jti, exp) VALUES ($1, $2)
                 ON CONFLICT (jti) DO UPDATE SET exp = greatest(gateway_revoked_jtis.exp, excluded.exp)
                 RETURNING exp",
                &[&jti, &int(exp)],
            )
            .await?;
            let exp = uint(row.get(0));
            append_change(
                &txn,
                &Change::Jti {
                    jti: jti.to_owned(),
                    exp,
                },
            )
            .await?;
            commit(txn).await
        })
    }

    pub fn revoked_jti_count(&self) -> Result<u64, StoreError> {
        self.run("count revocations", |pool| async move {
            let client = get(&pool).await?;
            let row = query_one(&client, "SELECT count(*) FROM gateway_revoked_jtis", &[]).await?;
            Ok(uint(row.get(0)))
        })
    }

    pub fn revoked_jtis(&self, now: u64) -> Result<Vec<(String, u64)>, StoreError> {
        self.unexpired(
            "SELECT jti, exp FROM gateway_revoked_jtis WHERE exp > $1",
            now,
        )
    }

    /// The unexpired deny-listed jtis in `range`; compared in the "C" collation, byte by byte
    /// as Rust compares strings, whatever the database's locale.
    pub fn revoked_jtis_in(
        &self,
        now: u64,
        range: JtiRange<'_>,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        if range == JtiRange::default() {
            return self.revoked_jtis(now);
        }
        let (from, below) = (
            range.from.map(str::to_owned),
            range.below.map(str::to_owned),
        );
        self.run("read revocations", |pool| async move {
            let client = get(&pool).await?;
            let rows = query(
                &client,
                "SELECT jti, exp FROM gateway_revoked_jtis WHERE exp > $1 \
                 AND ($2::text IS NULL OR jti COLLATE \"C\" >= $2) \
                 AND ($3::text IS NULL OR jti COLLATE \"C\" < $3)",
                &[&int(now), &from, &below],
            )
            .await?;
            Ok(rows.iter().map(|r| (r.get(0), uint(r.get(1)))).collect())
        })
    }

    fn unexpired(&self, sql: &'static str, now: u64) -> Result<Vec<(String, u64)>, StoreError> {
        self.run("read revocations", |pool| async move {
            let client = get(&pool).await?;
            let rows = query(&client, sql, &[&int(now)]).await?;
            Ok(rows.iter().map(|r| (r.get(0), uint(r.get(1)))).collect())
        })
    }

    /// The regulation record of an account, if any.
    pub fn regulation(&self, account: &str) -> Result<Option<Regulation>, StoreError> {
        self.run("read login regulation", |pool| async move {
            let client = get(&pool).await?;
            let row = query_opt(
                &client,
                "SELECT state FROM gateway_login_regulation WHERE account = $1",
                &[&account],
            )
            .await?;
            row.map(|r| regulation_of(&r)).transpose()
        })
    }

    /// Read-modify-write of an account's regulation record under a row lock, so failures
    /// counted by several replicas at once all count.
    pub fn update_regulation(
        &self,
        account: &str,
        now: u64,
        change: impl FnOnce(&mut Regulation),
    ) -> Result<Regulation, StoreError> {
        self.run("update login regulation", |pool| async move {
            let mut client = get(&pool).await?;
            let txn = begin(&mut client).await?;
            let empty = serde_json::to_string(&Regulation::default())
                .map_err(|_| corrupt("cannot encode regulation"))?;
            execute(
                &txn,
                "INSERT INTO gateway_login_regulation (account, state, touched) VALUES ($1, $2, $3)
                 ON CONFLICT (account) DO NOTHING",
                &[&account, &empty, &int(now)],
            )
            .await?;
            let row = query_one(
                &txn,
                "SELECT state FROM gateway_login_regulation WHERE account = $1 FOR UPDATE",
                &[&account],
            )
            .await?;
            let mut state = regulation_of(&row)?;
            change(&mut state);
            state.touched = now;
            let text =
                serde_json::to_string(&state).map_err(|_| corrupt("cannot encode regulation"))?;
            execute(
                &txn,
                "UPDATE gateway_login_regulation SET state = $2, touched = $3 WHERE account = $1",
                &[&account, &text, &int(now)],
            )
            .await?;
            commit(txn).await?;
            Ok(state)
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
            snap.meta = query(&txn, "SELECT key, value FROM gateway_meta", &[])
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
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

/// Keeps a `LISTEN` connection open and pokes `hint` on every notification and after every
/// (re)connect, forever (the task ends with the store's runtime).
async fn listen<T>(config: tokio_postgres::Config, tls: T, hint: Arc<Notify>)
where
    T: MakeTlsConnect<Socket> + Clone,
    T::Stream: Send + 'static,
{
    let mut healthy = true;
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let poke = hint.clone();
                let driver = tokio::spawn(async move {
                    loop {
                        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                            Some(Ok(AsyncMessage::Notification(_))) => poke.notify_one(),
                            Some(Ok(_)) => {}
                            Some(Err(e)) => return Some(e),
                            None => return None,
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        if !healthy {
                            tracing::info!("listening for store changes again");
                        }
                        // Anything committed while we were not listening is read now.
                        hint.notify_one();
                        if let Ok(Some(e)) = driver.await {
                            tracing::warn!(error = %e, "store change listener lost its connection");
                        }
                    }
                    Err(e) => {
                        driver.abort();
                        if healthy {
                            tracing::warn!(error = %db_error("LISTEN", e), "store change listener failed");
                        }
                    }
                }
                healthy = false;
                drop(client);
            }
            Err(e) => {
                if healthy {
                    tracing::warn!(error = %db_error("connect", e), "store change listener cannot connect; retrying");
                }
                healthy = false;
            }
        }
        // Wake the poller anyway: it reads by sequence number and finds whatever was missed.
        hint.notify_one();
        tokio::time::sleep(RECONNECT_DELAY).await;
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

const USER_COLUMNS: &str =
    "id, email, name, password_hash, roles, disabled, created_at, updated_at, session_version";

fn user_of(row: &Row) -> User {
    User {
        id: row.get("id"),
        email: row.get("email"),
        name: row.get("name"),
        password_hash: row.get("password_hash"),
        roles: row.get("roles"),
        disabled: row.get("disabled"),
        created_at: uint(row.get("created_at")),
        updated_at: uint(row.get("updated_at")),
        session_version: uint(row.get("session_version")),
    }
}

const REFRESH_COLUMNS: &str = "family, user_id, issued_at, family_expires_at, state, state_at";

fn refresh_of(row: &Row) -> Result<RefreshRecord, StoreError> {
    let at = uint(row.get("state_at"));
    let state = match row.get::<_, &str>("state") {
        "active" => RefreshState::Active,
        "rotated" => RefreshState::Rotated { at },
        "revoked" => RefreshState::Revoked { at },
        _ => return Err(corrupt("gateway_refresh_tokens: unknown state")),
    };
    Ok(RefreshRecord {
        family: row.get("family"),
        user_id: row.get("user_id"),
        issued_at: uint(row.get("issued_at")),
        family_expires_at: uint(row.get("family_expires_at")),
        state,
    })
}

fn regulation_of(row: &Row) -> Result<Regulation, StoreError> {
    let text: &str = row.get(0);
    serde_json::from_str(text).map_err(|_| corrupt("gateway_login_regulation: undecodable state"))
}

fn count(n: impl TryInto<usize>) -> usize {
    n.try_into().unwrap_or(usize::MAX)
}

async fn get(pool: &Pool) -> Result<Object, StoreError> {
    pool.get().await.map_err(pool_error)
}

async fn begin(client: &mut Object) -> Result<Transaction<'_>, StoreError> {
    client
        .transaction()
        .await
        .map_err(|e| db_error("begin transaction", e))
}

async fn commit(txn: Transaction<'_>) -> Result<(), StoreError> {
    txn.commit().await.map_err(|e| db_error("commit", e))
}

type Params<'a> = [&'a (dyn tokio_postgres::types::ToSql + Sync)];

/// A prepared statement, cached per connection: each SQL text is parsed once per connection.
async fn prepare(c: &impl GenericClient, sql: &str) -> Result<Statement, StoreError> {
    c.prepare_cached(sql)
        .await
        .map_err(|e| db_error("prepare", e))
}

async fn query(
    c: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> Result<Vec<Row>, StoreError> {
    let stmt = prepare(c, sql).await?;
    c.query(&stmt, params)
        .await
        .map_err(|e| db_error("query", e))
}

async fn query_opt(
    c: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> Result<Option<Row>, StoreError> {
    let stmt = prepare(c, sql).await?;
    c.query_opt(&stmt, params)
        .await
        .map_err(|e| db_error("query", e))
}

async fn query_one(
    c: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> Result<Row, StoreError> {
    let stmt = prepare(c, sql).await?;
    c.query_one(&stmt, params)
        .await
        .map_err(|e| db_error("query", e))
}

async fn execute(
    c: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> Result<u64, StoreError> {
    let stmt = prepare(c, sql).await?;
    c.execute(&stmt, params)
        .await
        .map_err(|e| db_error("execute", e))
}

async fn insert_user(c: &impl GenericClient, user: &User) -> Result<(), StoreError> {
    execute(
        c,
        "INSERT INTO gateway_users (id, email, name, password_hash, roles, disabled, created_at,
             updated_at, session_version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &user.id,
            &user.email,
            &user.name,
            &user.password_hash,
            &user.roles,
            &user.disabled,
            &int(user.created_at),
            &int(user.updated_at),
            &int(user.session_version),
        ],
    )
    .await?;
    Ok(())
}

/// Writes a flag row only when it differs from the default, like the redb backend.
async fn set_flags(c: &impl GenericClient, id: &str, flags: UserFlags) -> Result<(), StoreError> {
    if flags == UserFlags::default() {
        execute(
            c,
            "DELETE FROM gateway_user_flags WHERE user_id = $1",
            &[&id],
        )
        .await?;
    } else {
        execute(
            c,
            "INSERT INTO gateway_user_flags (user_id, disabled, session_version) VALUES ($1, $2, $3)
             ON CONFLICT (user_id) DO UPDATE
             SET disabled = excluded.disabled, session_version = excluded.session_version",
            &[&id, &flags.disabled, &int(flags.session_version)],
        )
        .await?;
    }
    Ok(())
}

async fn insert_refresh(
    c: &impl GenericClient,
    hash: &TokenHash,
    rec: &RefreshRecord,
) -> Result<(), StoreError> {
    let (state, at) = match rec.state {
        RefreshState::Active => ("active", 0),
        RefreshState::Rotated { at } => ("rotated", at),
        RefreshState::Revoked { at } => ("revoked", at),
    };
    let inserted = execute(
        c,
        "INSERT INTO gateway_refresh_tokens
             (hash, family, user_id, issued_at, family_expires_at, state, state_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &hash.as_slice(),
            &rec.family,
            &rec.user_id,
            &int(rec.issued_at),
            &int(rec.family_expires_at),
            &state,
            &int(at),
        ],
    )
    .await;
    match inserted {
        // 256 random bits never collide; this is a caller bug, not bad luck.
        Err(StoreError::Io(msg)) if msg.contains("23505") => Err(corrupt(
            "gateway_refresh_tokens: token hash already present",
        )),
        other => other.map(|_| ()),
    }
}

/// Revokes a family inside `txn`; see [`super::Store::revoke_family`].
async fn revoke_family_in(
    txn: &Transaction<'_>,
    family: &str,
    now: u64,
) -> Result<usize, StoreError> {
    let rows = query(
        txn,
        "SELECT state, family_expires_at FROM gateway_refresh_tokens WHERE family = $1 FOR UPDATE",
        &[&family],
    )
    .await?;
    let Some(exp) = rows.iter().map(|r| uint(r.get(1))).max() else {
        return Ok(0);
    };
    let count = count(
        execute(
            txn,
            "UPDATE gateway_refresh_tokens SET state = 'revoked', state_at = $2
             WHERE family = $1 AND state <> 'revoked'",
            &[&family, &int(now)],
        )
        .await?,
    );
    let newly_remembered = query_opt(
        txn,
        "INSERT INTO gateway_revoked_families (family, exp) VALUES ($1, $2)
         ON CONFLICT (family) DO NOTHING RETURNING exp",
        &[&family, &int(exp)],
    )
    .await?
    .is_some();
    if count > 0 || newly_remembered {
        execute(
            txn,
            "UPDATE gateway_revoked_families SET exp = greatest(exp, $2) WHERE family = $1",
            &[&family, &int(exp)],
        )
        .await?;
        append_change(
            txn,
            &Change::Family {
                family: family.to_owned(),
                exp,
            },
        )
        .await?;
    }
    Ok(count)
}

async fn revoke_user_families(
    txn: &Transaction<'_>,
    user_id: &str,
    now: u64,
) -> Result<(), StoreError> {
    let rows = query(
        txn,
        "SELECT DISTINCT family FROM gateway_refresh_tokens WHERE user_id = $1",
        &[&user_id],
    )
    .await?;
    for row in rows {
        let family: String = row.get(0);
        revoke_family_in(txn, &family, now).await?;
    }
    Ok(())
}

/// Appends a change with the next sequence number and notifies listeners at commit. The
/// advisory lock, held until the transaction ends, makes numbers gapless and visible in order.
async fn append_change(txn: &Transaction<'_>, change: &Change) -> Result<u64, StoreError> {
    execute(txn, "SELECT pg_advisory_xact_lock($1)", &[&CHANGES_LOCK]).await?;
    let text = serde_json::to_string(change).map_err(|_| corrupt("cannot encode change"))?;
    let row = query_one(
        txn,
        "INSERT INTO gateway_changes (seq, change)
         SELECT coalesce(max(seq), 0) + 1, $1 FROM gateway_changes
         RETURNING seq",
        &[&text],
    )
    .await?;
    let seq: i64 = row.get(0);
    execute(
        txn,
        "SELECT pg_notify($1, $2)",
        &[&CHANNEL, &seq.to_string()],
    )
    .await?;
    Ok(uint(seq))
}
