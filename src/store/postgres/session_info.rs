//! The sessions a user can see in the PostgreSQL backend: one `gateway_sessions` row per
//! refresh family. Rotation touches it and every revocation of the family marks it ended, in
//! their own transactions (see `sessions.rs`); ending sessions here goes through
//! `revoke_family_in`, so it is announced on the change feed like any revoked family.

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::Row;

use super::sessions::revoke_family_in;
use super::sql::{begin, commit, corrupt, execute, get, int, query, query_opt, uint};
use super::{PgStore, SessionInfo, StoreError};
use crate::store::model::newest_first;

impl PgStore {
    pub fn start_session(&self, info: &SessionInfo) -> Result<(), StoreError> {
        self.run("record session", |pool| async move {
            let client = get(&pool).await?;
            insert_session(&client, &info.bounded()).await
        })
    }

    pub fn sessions_of(&self, user_id: &str, now: u64) -> Result<Vec<SessionInfo>, StoreError> {
        self.run("list sessions", |pool| async move {
            let client = get(&pool).await?;
            // A revoked family is over even if its row was not marked (a replica of the
            // previous version revoked it since the migration).
            let sql = format!(
                "SELECT {SESSION_COLUMNS} FROM gateway_sessions s
                 WHERE user_id = $1 AND ended_at IS NULL AND expires_at > $2
                   AND NOT EXISTS
                       (SELECT 1 FROM gateway_revoked_families r WHERE r.family = s.family)"
            );
            let rows = query(&client, &sql, &[&user_id, &int(now)]).await?;
            let mut out: Vec<SessionInfo> = rows.iter().map(session_of).collect();
            newest_first(&mut out);
            Ok(out)
        })
    }

    pub fn end_session(&self, user_id: &str, family: &str, now: u64) -> Result<bool, StoreError> {
        self.run("end session", |pool| async move {
            let mut client = get(&pool).await?;
            let txn = begin(&mut client).await?;
            let sql = format!(
                "SELECT {SESSION_COLUMNS} FROM gateway_sessions WHERE family = $1 FOR UPDATE"
            );
            let Some(row) = query_opt(&txn, &sql, &[&family]).await? else {
                return Ok(false);
            };
            let info = session_of(&row);
            if info.user_id != user_id || !info.is_live(now) {
                return Ok(false);
            }
            revoke_family_in(&txn, family, now).await?;
            mark_ended(&txn, family, now).await?;
            commit(txn).await?;
            Ok(true)
        })
    }

    pub fn end_other_sessions(
        &self,
        user_id: &str,
        keep: &str,
        now: u64,
    ) -> Result<usize, StoreError> {
        self.run("end other sessions", |pool| async move {
            let mut client = get(&pool).await?;
            let txn = begin(&mut client).await?;
            let live = query(
                &txn,
                "SELECT family FROM gateway_sessions
                 WHERE user_id = $1 AND family <> $2 AND ended_at IS NULL AND expires_at > $3
                 FOR UPDATE",
                &[&user_id, &keep, &int(now)],
            )
            .await?
            .len();
            // Every family of the user, recorded as a session or not.
            let families = query(
                &txn,
                "SELECT family FROM gateway_refresh_tokens WHERE user_id = $1 AND family <> $2
                 UNION SELECT family FROM gateway_sessions WHERE user_id = $1 AND family <> $2",
                &[&user_id, &keep],
            )
            .await?;
            for row in families {
                let family: String = row.get(0);
                revoke_family_in(&txn, &family, now).await?;
                mark_ended(&txn, &family, now).await?;
            }
            commit(txn).await?;
            Ok(live)
        })
    }
}

pub(super) const SESSION_COLUMNS: &str =
    "family, user_id, created_at, last_used_at, expires_at, user_agent, ip, ended_at";

pub(super) fn session_of(row: &Row) -> SessionInfo {
    SessionInfo {
        family: row.get("family"),
        user_id: row.get("user_id"),
        created_at: uint(row.get("created_at")),
        last_used_at: uint(row.get("last_used_at")),
        expires_at: uint(row.get("expires_at")),
        user_agent: row.get("user_agent"),
        ip: row.get("ip"),
        ended_at: row.get::<_, Option<i64>>("ended_at").map(uint),
    }
}

/// Inserts a session row as it is (the caller bounds it); refuses a family already recorded.
pub(super) async fn insert_session(
    c: &impl GenericClient,
    info: &SessionInfo,
) -> Result<(), StoreError> {
    let inserted = execute(
        c,
        "INSERT INTO gateway_sessions
             (family, user_id, created_at, last_used_at, expires_at, user_agent, ip, ended_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &info.family,
            &info.user_id,
            &int(info.created_at),
            &int(info.last_used_at),
            &int(info.expires_at),
            &info.user_agent,
            &info.ip,
            &info.ended_at.map(int),
        ],
    )
    .await;
    match inserted {
        Err(StoreError::Io(msg)) if msg.contains("23505") => {
            Err(corrupt("gateway_sessions: family already recorded"))
        }
        other => other.map(|_| ()),
    }
}

/// Marks the family's session ended at `now`, unless it already ended.
pub(super) async fn mark_ended(
    txn: &Transaction<'_>,
    family: &str,
    now: u64,
) -> Result<(), StoreError> {
    execute(
        txn,
        "UPDATE gateway_sessions SET ended_at = $2 WHERE family = $1 AND ended_at IS NULL",
        &[&family, &int(now)],
    )
    .await?;
    Ok(())
}
