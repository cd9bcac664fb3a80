//! Refresh tokens (families, rotation, revocation) and the access-token deny list in the
//! PostgreSQL backend.

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::Row;

use super::feed::append_change;
use super::sql::{
    begin, commit, corrupt, count, execute, get, int, query, query_one, query_opt, uint,
};
use super::{
    Change, JtiRange, PgStore, RefreshRecord, RefreshState, Rotation, StoreError, TokenHash,
};

impl PgStore {
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
            execute(
                &txn,
                "UPDATE gateway_sessions SET last_used_at = greatest(last_used_at, $2)
                 WHERE family = $1",
                &[&record.family, &int(now)],
            )
            .await?;
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
}

pub(super) const REFRESH_COLUMNS: &str =
    "family, user_id, issued_at, family_expires_at, state, state_at, amr, provider";

pub(super) fn refresh_of(row: &Row) -> Result<RefreshRecord, StoreError> {
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
        amr: row.get("amr"),
        provider: row.get("provider"),
    })
}

pub(super) async fn insert_refresh(
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
             (hash, family, user_id, issued_at, family_expires_at, state, state_at, amr, provider)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &hash.as_slice(),
            &rec.family,
            &rec.user_id,
            &int(rec.issued_at),
            &int(rec.family_expires_at),
            &state,
            &int(at),
            &rec.amr,
            &rec.provider,
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

/// Revokes a family inside `txn` and marks its session ended; see
/// [`crate::store::Store::revoke_family`].
pub(super) async fn revoke_family_in(
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
    super::session_info::mark_ended(txn, family, now).await?;
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
