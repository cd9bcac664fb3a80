//! Second factors in the PostgreSQL backend: one `gateway_factors` row per user, holding the
//! value the [`Store`](crate::store::Store) layer encoded (and perhaps encrypted).
//!
//! An update locks the user's row (`SELECT ... FOR UPDATE` on `gateway_users`) before reading
//! the factors, so updates of one user are serialised across replicas even when no factors row
//! exists yet: two replicas checking the same TOTP code, one waits and then sees the step used.

use deadpool_postgres::GenericClient;

use super::sql::{begin, commit, execute, get, query, query_opt};
use super::{PgStore, StoreError};
use crate::store::model::RawWrite;

impl PgStore {
    pub fn get_factors(&self, user_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.run("read factors", |pool| async move {
            let client = get(&pool).await?;
            let row = query_opt(
                &client,
                "SELECT value FROM gateway_factors WHERE user_id = $1",
                &[&user_id],
            )
            .await?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    /// The users that have a factors row.
    pub fn factors_users(&self) -> Result<Vec<String>, StoreError> {
        self.run("list factors", |pool| async move {
            let client = get(&pool).await?;
            let rows = query(&client, "SELECT user_id FROM gateway_factors", &[]).await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    pub fn update_factors(
        &self,
        user_id: &str,
        change: impl FnOnce(Option<&[u8]>) -> Result<RawWrite, StoreError>,
    ) -> Result<(), StoreError> {
        self.run("update factors", |pool| async move {
            let mut client = get(&pool).await?;
            let txn = begin(&mut client).await?;
            let user = query_opt(
                &txn,
                "SELECT id FROM gateway_users WHERE id = $1 FOR UPDATE",
                &[&user_id],
            )
            .await?;
            if user.is_none() {
                return Err(StoreError::NotFound);
            }
            let current: Option<Vec<u8>> = query_opt(
                &txn,
                "SELECT value FROM gateway_factors WHERE user_id = $1",
                &[&user_id],
            )
            .await?
            .map(|r| r.get(0));
            match change(current.as_deref())? {
                RawWrite::Keep => return Ok(()),
                RawWrite::Put(value) => {
                    insert_factors(&txn, user_id, &value).await?;
                }
                RawWrite::Delete => {
                    execute(
                        &txn,
                        "DELETE FROM gateway_factors WHERE user_id = $1",
                        &[&user_id],
                    )
                    .await?;
                }
            }
            commit(txn).await
        })
    }
}

/// Stores (or replaces) a user's value.
pub(super) async fn insert_factors(
    client: &impl GenericClient,
    user_id: &str,
    value: &[u8],
) -> Result<(), StoreError> {
    execute(
        client,
        "INSERT INTO gateway_factors (user_id, value) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET value = EXCLUDED.value",
        &[&user_id, &value],
    )
    .await?;
    Ok(())
}

/// Every stored value (export).
pub(super) async fn all_factors(
    client: &impl GenericClient,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let rows = query(client, "SELECT user_id, value FROM gateway_factors", &[]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
