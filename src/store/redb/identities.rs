//! Linked single sign-on identities in the redb backend. `identities`, keyed by (provider,
//! subject), holds the user id and the value the [`Store`](crate::store::Store) layer encoded
//! (and perhaps encrypted); `user_identities`, keyed by (user id, provider), lists a user's
//! identities and, being keyed so, keeps a user to one per provider. Both tables change
//! together in one write transaction; redb serialises write transactions across processes, so
//! a read-modify-write cannot lose a concurrent one.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::super::model::{RawWrite, StoreError, StoredIdentity};
use super::tables::{Context, IDENTITIES, USER_IDENTITIES, USERS};
use super::{RedbStore, commit};

impl RedbStore {
    /// The identity `subject` at `provider`, if linked.
    pub fn get_identity(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<StoredIdentity>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(IDENTITIES).ctx("open table identities")?;
        let found = table.get((provider, subject)).ctx("read identities")?;
        Ok(found.map(|v| {
            let (user_id, value) = v.value();
            stored(provider, subject, user_id, value)
        }))
    }

    /// A user's identities, by provider.
    pub fn identities_of(&self, user_id: &str) -> Result<Vec<StoredIdentity>, StoreError> {
        let txn = self.read()?;
        let index = txn
            .open_table(USER_IDENTITIES)
            .ctx("open table user_identities")?;
        let table = txn.open_table(IDENTITIES).ctx("open table identities")?;
        let mut out = Vec::new();
        for (provider, subject) in keys_of(&index, user_id)? {
            let found = table
                .get((provider.as_str(), subject.as_str()))
                .ctx("read identities")?;
            match found {
                Some(v) if v.value().0 == user_id => {
                    out.push(stored(&provider, &subject, user_id, v.value().1));
                }
                _ => {
                    return Err(StoreError::Corrupt(
                        "user_identities: entry points at a missing or another user's identity"
                            .into(),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Links an identity. [`StoreError::NotFound`] if the user does not exist,
    /// [`StoreError::IdentityTaken`] if the identity is linked already or the user has one at
    /// the provider (checked in the same write transaction).
    pub fn insert_identity(&self, identity: &StoredIdentity) -> Result<(), StoreError> {
        let txn = self.write()?;
        insert_in(&txn, identity)?;
        commit(txn)
    }

    /// Replaces an identity's value with what `change` makes of the current one, atomically.
    /// [`StoreError::NotFound`] if it is not linked; an error from `change` writes nothing.
    pub fn update_identity(
        &self,
        provider: &str,
        subject: &str,
        change: impl FnOnce(&StoredIdentity) -> Result<RawWrite, StoreError>,
    ) -> Result<(), StoreError> {
        let txn = self.write()?;
        {
            let mut table = txn.open_table(IDENTITIES).ctx("open table identities")?;
            let current = table
                .get((provider, subject))
                .ctx("read identities")?
                .map(|v| {
                    let (user_id, value) = v.value();
                    stored(provider, subject, user_id, value)
                });
            let Some(current) = current else {
                return Err(StoreError::NotFound);
            };
            match change(&current)? {
                // Dropping the transaction aborts it.
                RawWrite::Keep => return Ok(()),
                RawWrite::Put(value) => {
                    table
                        .insert(
                            (provider, subject),
                            (current.user_id.as_str(), value.as_slice()),
                        )
                        .ctx("insert into identities")?;
                }
                RawWrite::Delete => {
                    table
                        .remove((provider, subject))
                        .ctx("remove from identities")?;
                    txn.open_table(USER_IDENTITIES)
                        .ctx("open table user_identities")?
                        .remove((current.user_id.as_str(), provider))
                        .ctx("remove from user_identities")?;
                }
            }
        }
        commit(txn)
    }

    /// Unlinks the user's identity at `provider`; false if they had none.
    pub fn delete_identity(&self, user_id: &str, provider: &str) -> Result<bool, StoreError> {
        let txn = self.write()?;
        let removed = {
            let mut index = txn
                .open_table(USER_IDENTITIES)
                .ctx("open table user_identities")?;
            let subject = index
                .remove((user_id, provider))
                .ctx("remove from user_identities")?
                .map(|v| v.value().to_owned());
            match subject {
                Some(subject) => {
                    txn.open_table(IDENTITIES)
                        .ctx("open table identities")?
                        .remove((provider, subject.as_str()))
                        .ctx("remove from identities")?;
                    true
                }
                None => false,
            }
        };
        if removed {
            commit(txn)?;
        }
        Ok(removed)
    }

    /// The (provider, subject) of every linked identity.
    pub fn identity_keys(&self) -> Result<Vec<(String, String)>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(IDENTITIES).ctx("open table identities")?;
        let mut out = Vec::new();
        for entry in table.iter().ctx("read identities")? {
            let (k, _) = entry.ctx("read identities")?;
            let (provider, subject) = k.value();
            out.push((provider.to_owned(), subject.to_owned()));
        }
        Ok(out)
    }
}

fn stored(provider: &str, subject: &str, user_id: &str, value: &[u8]) -> StoredIdentity {
    StoredIdentity {
        provider: provider.to_owned(),
        subject: subject.to_owned(),
        user_id: user_id.to_owned(),
        value: value.to_vec(),
    }
}

/// The (provider, subject) of a user's identities, by provider.
fn keys_of(
    index: &impl ReadableTable<(&'static str, &'static str), &'static str>,
    user_id: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    let mut out = Vec::new();
    // Keys sort by user id first, then provider: the user's entries are one run from here.
    for entry in index.range((user_id, "")..).ctx("read user_identities")? {
        let (k, v) = entry.ctx("read user_identities")?;
        let (owner, provider) = k.value();
        if owner != user_id {
            break;
        }
        out.push((provider.to_owned(), v.value().to_owned()));
    }
    Ok(out)
}

/// Links an identity inside `txn` (see [`RedbStore::insert_identity`]; import uses it too).
pub(super) fn insert_in(
    txn: &WriteTransaction,
    identity: &StoredIdentity,
) -> Result<(), StoreError> {
    let StoredIdentity {
        provider,
        subject,
        user_id,
        value,
    } = identity;
    let users = txn.open_table(USERS).ctx("open table users")?;
    if users.get(user_id.as_str()).ctx("read users")?.is_none() {
        return Err(StoreError::NotFound);
    }
    let mut table = txn.open_table(IDENTITIES).ctx("open table identities")?;
    let mut index = txn
        .open_table(USER_IDENTITIES)
        .ctx("open table user_identities")?;
    let key = (provider.as_str(), subject.as_str());
    if table.get(key).ctx("read identities")?.is_some()
        || index
            .get((user_id.as_str(), provider.as_str()))
            .ctx("read user_identities")?
            .is_some()
    {
        return Err(StoreError::IdentityTaken);
    }
    table
        .insert(key, (user_id.as_str(), value.as_slice()))
        .ctx("insert into identities")?;
    index
        .insert((user_id.as_str(), provider.as_str()), subject.as_str())
        .ctx("insert into user_identities")?;
    Ok(())
}

/// Deletes a user's identities (the user is being deleted).
pub(super) fn delete_all_in(txn: &WriteTransaction, user_id: &str) -> Result<(), StoreError> {
    let mut index = txn
        .open_table(USER_IDENTITIES)
        .ctx("open table user_identities")?;
    let keys = keys_of(&index, user_id)?;
    let mut table = txn.open_table(IDENTITIES).ctx("open table identities")?;
    for (provider, subject) in &keys {
        table
            .remove((provider.as_str(), subject.as_str()))
            .ctx("remove from identities")?;
        index
            .remove((user_id, provider.as_str()))
            .ctx("remove from user_identities")?;
    }
    Ok(())
}

/// Every linked identity (export).
pub(super) fn all_in(txn: &ReadTransaction) -> Result<Vec<StoredIdentity>, StoreError> {
    let table = txn.open_table(IDENTITIES).ctx("open table identities")?;
    let mut out = Vec::new();
    for entry in table.iter().ctx("read identities")? {
        let (k, v) = entry.ctx("read identities")?;
        let ((provider, subject), (user_id, value)) = (k.value(), v.value());
        out.push(stored(provider, subject, user_id, value));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::test_util::{temp_store, user};
    use super::*;

    fn row(provider: &str, subject: &str, user_id: &str) -> StoredIdentity {
        stored(
            provider,
            subject,
            user_id,
            format!("{provider}:{subject}").as_bytes(),
        )
    }

    #[test]
    fn both_tables_change_together() {
        let (_dir, store) = temp_store();
        store.create_user(&user("u1", "ada@x.test")).unwrap();
        store.create_user(&user("u10", "bob@x.test")).unwrap();
        store.insert_identity(&row("okta", "s1", "u1")).unwrap();
        store.insert_identity(&row("google", "s2", "u1")).unwrap();
        // A user id that starts like another's is not in its run of the index.
        store.insert_identity(&row("azure", "s3", "u10")).unwrap();
        let listed = store.identities_of("u1").unwrap();
        assert_eq!(
            listed,
            vec![row("google", "s2", "u1"), row("okta", "s1", "u1")]
        );
        assert_eq!(store.identity_keys().unwrap().len(), 3);

        // The subject elsewhere, or a second one at the same provider: taken.
        store.create_user(&user("u2", "cy@x.test")).unwrap();
        assert!(matches!(
            store.insert_identity(&row("okta", "s1", "u2")),
            Err(StoreError::IdentityTaken)
        ));
        assert!(matches!(
            store.insert_identity(&row("okta", "s9", "u1")),
            Err(StoreError::IdentityTaken)
        ));
        assert!(matches!(
            store.insert_identity(&row("okta", "s9", "nobody")),
            Err(StoreError::NotFound)
        ));

        // Delete through update, unlink, and with the user: the index follows each time.
        store
            .update_identity("google", "s2", |_| Ok(RawWrite::Delete))
            .unwrap();
        assert!(store.delete_identity("u1", "okta").unwrap());
        assert!(!store.delete_identity("u1", "okta").unwrap());
        assert!(store.identities_of("u1").unwrap().is_empty());
        store.insert_identity(&row("okta", "s1", "u2")).unwrap();
        store.delete_user("u10", 5).unwrap();
        assert_eq!(
            store.identity_keys().unwrap(),
            vec![("okta".to_owned(), "s1".to_owned())]
        );
        let txn = store.read().unwrap();
        let index = txn.open_table(USER_IDENTITIES).unwrap();
        assert_eq!(index.iter().unwrap().count(), 1);
    }

    #[test]
    fn an_index_entry_without_its_identity_is_corrupt() {
        let (_dir, store) = temp_store();
        store.create_user(&user("u1", "ada@x.test")).unwrap();
        let txn = store.write().unwrap();
        txn.open_table(USER_IDENTITIES)
            .unwrap()
            .insert(("u1", "okta"), "s1")
            .unwrap();
        txn.commit().unwrap();
        assert!(matches!(
            store.identities_of("u1"),
            Err(StoreError::Corrupt(_))
        ));
    }
}
