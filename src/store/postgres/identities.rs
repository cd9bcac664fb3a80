//! Linked single sign-on identities in the PostgreSQL backend: one `gateway_identities` row per
//! identity, keyed by (provider, subject), unique by (user, provider), holding the value the
//! [`Store`](crate::store::Store) layer encoded (and perhaps encrypted). The rows go with their
//! user (`ON DELETE CASCADE`).
//!
//! Linking takes a share lock on the user's row, so the user cannot be deleted meanwhile, and
//! lets the unique keys settle races (`ON CONFLICT DO NOTHING`): of two replicas linking the
//! same identity, one inserts and the other finds it taken. An update locks the identity's row
//! (`SELECT ... FOR UPDATE`) before reading it, so concurrent updates on two replicas run one
//! after the other and neither loses the other's write.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::sql::{begin, commit, execute, get, query, query_opt};
use super::{PgStore, StoreError};
use crate::store::model::{RawWrite, StoredIdentity};

/// The columns [`identity_of`] reads, in its order.
const IDENTITY_COLUMNS: &str = "provider, subject, user_id, value";

impl PgStore {
    pub fn get_identity(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<StoredIdentity>, StoreError> {
        self.run("read identity", |pool| async move {
            let client = get(&pool).await?;
            let sql = format!(
                "SELECT {IDENTITY_COLUMNS} FROM gateway_identities
                 WHERE provider = $1 AND subject = $2"
            );
            let row = query_opt(&client, &sql, &[&provider, &subject]).await?;
            Ok(row.as_ref().map(identity_of))
        })
    }

    /// A user's identities, by provider (byte order, as redb keeps them).
    pub fn identities_of(&self, user_id: &str) -> Result<Vec<StoredIdentity>, StoreError> {
        self.run("read identities", |pool| async move {
            let client = get(&pool).await?;
            let sql = format!(
                "SELECT {IDENTITY_COLUMNS} FROM gateway_identities
                 WHERE user_id = $1 ORDER BY provider COLLATE \"C\""
            );
            let rows = query(&client, &sql, &[&user_id]).await?;
            Ok(rows.iter().map(identity_of).collect())
        })
    }

    pub fn insert_identity(&self, identity: &StoredIdentity) -> Result<(), StoreError> {
        self.run("link identity", |pool| async move {
            let mut client = get(&pool).await?;
            let txn = begin(&mut client).await?;
            insert_identity(&txn, identity).await?;
            commit(txn).await
        })
    }

    pub fn update_identity(
        &self,
        provider: &str,
        subject: &str,
        change: impl FnOnce(&StoredIdentity) -> Result<RawWrite, StoreError>,
    ) -> Result<(), StoreError> {
        self.run("update identity", |pool| async move {
            let mut client = get(&pool).await?;
            let txn = begin(&mut client).await?;
            let sql = format!(
                "SELECT {IDENTITY_COLUMNS} FROM gateway_identities
                 WHERE provider = $1 AND subject = $2 FOR UPDATE"
            );
            let Some(row) = query_opt(&txn, &sql, &[&provider, &subject]).await? else {
                return Err(StoreError::NotFound);
            };
            match change(&identity_of(&row))? {
                // Dropping the transaction rolls it back (and releases the lock).
                RawWrite::Keep => return Ok(()),
                RawWrite::Put(value) => {
                    execute(
                        &txn,
                        "UPDATE gateway_identities SET value = $3
                         WHERE provider = $1 AND subject = $2",
                        &[&provider, &subject, &value],
                    )
                    .await?;
                }
                RawWrite::Delete => {
                    execute(
                        &txn,
                        "DELETE FROM gateway_identities WHERE provider = $1 AND subject = $2",
                        &[&provider, &subject],
                    )
                    .await?;
                }
            }
            commit(txn).await
        })
    }

    pub fn delete_identity(&self, user_id: &str, provider: &str) -> Result<bool, StoreError> {
        self.run("unlink identity", |pool| async move {
            let client = get(&pool).await?;
            let deleted = execute(
                &client,
                "DELETE FROM gateway_identities WHERE user_id = $1 AND provider = $2",
                &[&user_id, &provider],
            )
            .await?;
            Ok(deleted > 0)
        })
    }

    /// The (provider, subject) of every linked identity.
    pub fn identity_keys(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.run("list identities", |pool| async move {
            let client = get(&pool).await?;
            let rows = query(
                &client,
                "SELECT provider, subject FROM gateway_identities",
                &[],
            )
            .await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }
}

fn identity_of(row: &Row) -> StoredIdentity {
    StoredIdentity {
        provider: row.get(0),
        subject: row.get(1),
        user_id: row.get(2),
        value: row.get(3),
    }
}

/// Links an identity inside a transaction: [`StoreError::NotFound`] without the user,
/// [`StoreError::IdentityTaken`] if either unique key is in use (import uses it too).
pub(super) async fn insert_identity(
    client: &impl GenericClient,
    identity: &StoredIdentity,
) -> Result<(), StoreError> {
    let user = query_opt(
        client,
        "SELECT id FROM gateway_users WHERE id = $1 FOR SHARE",
        &[&identity.user_id],
    )
    .await?;
    if user.is_none() {
        return Err(StoreError::NotFound);
    }
    let inserted = execute(
        client,
        "INSERT INTO gateway_identities (provider, subject, user_id, value)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        &[
            &identity.provider,
            &identity.subject,
            &identity.user_id,
            &identity.value,
        ],
    )
    .await?;
    if inserted == 0 {
        return Err(StoreError::IdentityTaken);
    }
    Ok(())
}

/// Every linked identity (export).
pub(super) async fn all_identities(
    client: &impl GenericClient,
) -> Result<Vec<StoredIdentity>, StoreError> {
    let sql = format!("SELECT {IDENTITY_COLUMNS} FROM gateway_identities");
    let rows = query(client, &sql, &[]).await?;
    Ok(rows.iter().map(identity_of).collect())
}
