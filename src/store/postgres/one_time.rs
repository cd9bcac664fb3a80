//! One-time tokens (email verification, password reset) in the PostgreSQL backend.
//!
//! Consuming is one `DELETE ... RETURNING`: of two replicas consuming the same token at once,
//! the second waits on the row lock, then finds the row gone and gets nothing.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::sql::{corrupt, count, execute, get, int, query_opt, uint};
use super::{OneTimeToken, PgStore, StoreError, TokenHash, TokenKind};

impl PgStore {
    pub fn insert_one_time(&self, hash: &TokenHash, rec: &OneTimeToken) -> Result<(), StoreError> {
        self.run("store one-time token", |pool| async move {
            let client = get(&pool).await?;
            insert_one_time(&client, hash, rec).await
        })
    }

    pub fn consume_one_time(
        &self,
        hash: &TokenHash,
        kind: TokenKind,
        now: u64,
    ) -> Result<Option<OneTimeToken>, StoreError> {
        self.run("consume one-time token", |pool| async move {
            let client = get(&pool).await?;
            // Deletes the token if it is of this kind or expired; returns it only if both of
            // this kind and still live.
            let sql = format!(
                "DELETE FROM gateway_one_time_tokens
                 WHERE hash = $1 AND (kind = $2 OR expires_at <= $3)
                 RETURNING {ONE_TIME_COLUMNS}"
            );
            let row = query_opt(
                &client,
                &sql,
                &[&hash.as_slice(), &kind.as_str(), &int(now)],
            )
            .await?;
            let rec = row.as_ref().map(one_time_of).transpose()?;
            Ok(rec.filter(|r| r.kind == kind && now < r.expires_at))
        })
    }

    pub fn peek_one_time(
        &self,
        hash: &TokenHash,
        kind: TokenKind,
        now: u64,
    ) -> Result<Option<OneTimeToken>, StoreError> {
        self.run("read one-time token", |pool| async move {
            let client = get(&pool).await?;
            let sql = format!(
                "SELECT {ONE_TIME_COLUMNS} FROM gateway_one_time_tokens
                 WHERE hash = $1 AND kind = $2 AND expires_at > $3"
            );
            let row = query_opt(
                &client,
                &sql,
                &[&hash.as_slice(), &kind.as_str(), &int(now)],
            )
            .await?;
            row.as_ref().map(one_time_of).transpose()
        })
    }

    pub fn delete_one_time_for(&self, user_id: &str, kind: TokenKind) -> Result<usize, StoreError> {
        self.run("delete one-time tokens", |pool| async move {
            let client = get(&pool).await?;
            let deleted = execute(
                &client,
                "DELETE FROM gateway_one_time_tokens WHERE user_id = $1 AND kind = $2",
                &[&user_id, &kind.as_str()],
            )
            .await?;
            Ok(count(deleted))
        })
    }
}

pub(super) const ONE_TIME_COLUMNS: &str = "hash, kind, user_id, email, created_at, expires_at";

pub(super) fn one_time_of(row: &Row) -> Result<OneTimeToken, StoreError> {
    let kind = TokenKind::parse(row.get("kind"))
        .ok_or_else(|| corrupt("gateway_one_time_tokens: unknown kind"))?;
    Ok(OneTimeToken {
        kind,
        user_id: row.get("user_id"),
        email: row.get("email"),
        created_at: uint(row.get("created_at")),
        expires_at: uint(row.get("expires_at")),
    })
}

/// The hash column of a row read with [`ONE_TIME_COLUMNS`].
pub(super) fn hash_of(row: &Row) -> Result<TokenHash, StoreError> {
    let hash: Vec<u8> = row.get("hash");
    hash.try_into()
        .map_err(|_| corrupt("gateway_one_time_tokens: hash is not 32 bytes"))
}

pub(super) async fn insert_one_time(
    c: &impl GenericClient,
    hash: &TokenHash,
    rec: &OneTimeToken,
) -> Result<(), StoreError> {
    let inserted = execute(
        c,
        "INSERT INTO gateway_one_time_tokens (hash, kind, user_id, email, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &hash.as_slice(),
            &rec.kind.as_str(),
            &rec.user_id,
            &rec.email,
            &int(rec.created_at),
            &int(rec.expires_at),
        ],
    )
    .await;
    match inserted {
        // 256 random bits never collide; this is a caller bug, not bad luck.
        Err(StoreError::Io(msg)) if msg.contains("23505") => Err(corrupt(
            "gateway_one_time_tokens: token hash already present",
        )),
        other => other.map(|_| ()),
    }
}
