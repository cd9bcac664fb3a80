//! Second factors in the redb backend: one value per user in the `factors` table, as the
//! [`Store`](crate::store::Store) layer encoded (and perhaps encrypted) it. An update is a
//! read-modify-write inside one write transaction; redb serialises write transactions across
//! processes, so two servers on the file cannot both use the same code.

use redb::{ReadableTable, WriteTransaction};

use super::super::model::{RawWrite, StoreError};
use super::tables::{Context, FACTORS, USERS};
use super::{RedbStore, commit};

impl RedbStore {
    /// The stored factors value of a user, if any.
    pub fn get_factors(&self, user_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(FACTORS).ctx("open table factors")?;
        let found = table.get(user_id).ctx("read factors")?;
        Ok(found.map(|v| v.value().to_vec()))
    }

    /// The users that have a factors value.
    pub fn factors_users(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(FACTORS).ctx("open table factors")?;
        let mut out = Vec::new();
        for entry in table.iter().ctx("read factors")? {
            let (k, _) = entry.ctx("read factors")?;
            out.push(k.value().to_owned());
        }
        Ok(out)
    }

    /// Replaces a user's factors value with what `change` makes of the current one,
    /// atomically. [`StoreError::NotFound`] if the user does not exist; an error from `change`
    /// writes nothing.
    pub fn update_factors(
        &self,
        user_id: &str,
        change: impl FnOnce(Option<&[u8]>) -> Result<RawWrite, StoreError>,
    ) -> Result<(), StoreError> {
        let txn = self.write()?;
        {
            let users = txn.open_table(USERS).ctx("open table users")?;
            if users.get(user_id).ctx("read users")?.is_none() {
                return Err(StoreError::NotFound);
            }
        }
        {
            let mut table = txn.open_table(FACTORS).ctx("open table factors")?;
            let current = table
                .get(user_id)
                .ctx("read factors")?
                .map(|v| v.value().to_vec());
            match change(current.as_deref())? {
                RawWrite::Keep => return Ok(()),
                RawWrite::Put(value) => {
                    table
                        .insert(user_id, value.as_slice())
                        .ctx("insert into factors")?;
                }
                RawWrite::Delete => {
                    table.remove(user_id).ctx("remove from factors")?;
                }
            }
        }
        commit(txn)
    }
}

/// Deletes a user's factors (the user is being deleted).
pub(super) fn delete_in(txn: &WriteTransaction, user_id: &str) -> Result<(), StoreError> {
    let mut table = txn.open_table(FACTORS).ctx("open table factors")?;
    table.remove(user_id).ctx("remove from factors")?;
    Ok(())
}

/// Stores a value as it is (import).
pub(super) fn insert_in(
    txn: &WriteTransaction,
    user_id: &str,
    value: &[u8],
) -> Result<(), StoreError> {
    let mut table = txn.open_table(FACTORS).ctx("open table factors")?;
    table.insert(user_id, value).ctx("insert into factors")?;
    Ok(())
}

/// Every stored value (export).
pub(super) fn all_in(txn: &redb::ReadTransaction) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let table = txn.open_table(FACTORS).ctx("open table factors")?;
    let mut out = Vec::new();
    for entry in table.iter().ctx("read factors")? {
        let (k, v) = entry.ctx("read factors")?;
        out.push((k.value().to_owned(), v.value().to_vec()));
    }
    Ok(out)
}
