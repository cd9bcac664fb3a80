//! User records, the email index and the per-user flag rows the hot path loads.
//!
//! Emails are stored as given: the caller normalises them before calling (the
//! index is an exact-match `&str` key).

use redb::{ReadableMultimapTable, ReadableTable, ReadableTableMetadata};

use super::super::model::{Change, StoreError, User, UserFlags};
use super::tables::{
    Context, USER_EMAIL, USER_FAMILIES, USER_FLAGS, USERS, append_change, decode, encode, set_flags,
};
use super::{RedbStore, commit, one_time, sessions};

impl RedbStore {
    /// Adds a user. [`StoreError::EmailTaken`] if the email is in use,
    /// [`StoreError::IdTaken`] if the id is (checked in the same write transaction).
    pub fn create_user(&self, user: &User) -> Result<(), StoreError> {
        let txn = self.write()?;
        {
            let mut users = txn.open_table(USERS).ctx("open table users")?;
            let mut emails = txn.open_table(USER_EMAIL).ctx("open table user_email")?;
            if emails
                .get(user.email.as_str())
                .ctx("read user_email")?
                .is_some()
            {
                return Err(StoreError::EmailTaken);
            }
            if users.get(user.id.as_str()).ctx("read users")?.is_some() {
                return Err(StoreError::IdTaken);
            }
            let bytes = encode("users", user)?;
            users
                .insert(user.id.as_str(), bytes.as_slice())
                .ctx("insert into users")?;
            emails
                .insert(user.email.as_str(), user.id.as_str())
                .ctx("insert into user_email")?;
        }
        // Also clears a stale row left by a deleted user with the same id.
        set_flags(&txn, &user.id, UserFlags::of(user))?;
        append_change(
            &txn,
            &Change::User {
                id: user.id.clone(),
            },
        )?;
        commit(txn)
    }

    pub fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        let txn = self.read()?;
        let users = txn.open_table(USERS).ctx("open table users")?;
        let found = users.get(id).ctx("read users")?;
        found.map(|v| decode("users", v.value())).transpose()
    }

    pub fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let txn = self.read()?;
        let emails = txn.open_table(USER_EMAIL).ctx("open table user_email")?;
        let Some(id) = emails.get(email).ctx("read user_email")? else {
            return Ok(None);
        };
        let users = txn.open_table(USERS).ctx("open table users")?;
        let found = users.get(id.value()).ctx("read users")?;
        match found {
            Some(v) => decode("users", v.value()).map(Some),
            None => Err(StoreError::Corrupt(
                "user_email: entry points at a missing user".into(),
            )),
        }
    }

    /// Replaces a user record, keeping the email index and flag row in step.
    /// [`StoreError::NotFound`] if absent, [`StoreError::EmailTaken`] if the new
    /// email belongs to someone else. The session version never goes down: if
    /// another process ended the user's sessions after `user` was read, the higher
    /// stored version wins, so a stale write cannot revive revoked tokens. Prefer
    /// [`RedbStore::modify_user`] for read-modify-write: this overwrites every other field.
    pub fn update_user(&self, user: &User) -> Result<(), StoreError> {
        self.modify_user(&user.id, |stored| {
            *stored = user.clone();
            Ok(())
        })
        .map(|_| ())
    }

    /// Reads the user, lets `change` edit it and writes it back, all in one write
    /// transaction, so concurrent writers (the server rehashing a password, the admin CLI
    /// disabling the account) cannot overwrite each other's fields. `change` may refuse with an
    /// error, which aborts the transaction. The same guarantees as [`RedbStore::update_user`] hold
    /// (email index, session version never lowered, flags, change feed). Returns the user as
    /// stored.
    pub fn modify_user(
        &self,
        id: &str,
        change: impl FnOnce(&mut User) -> Result<(), StoreError>,
    ) -> Result<User, StoreError> {
        let txn = self.write()?;
        let new = {
            let mut users = txn.open_table(USERS).ctx("open table users")?;
            let old: User = match users.get(id).ctx("read users")? {
                Some(v) => decode("users", v.value())?,
                None => return Err(StoreError::NotFound),
            };
            let mut new = old.clone();
            change(&mut new)?;
            new.id = old.id.clone();
            if old.email != new.email {
                let mut emails = txn.open_table(USER_EMAIL).ctx("open table user_email")?;
                let owner = emails
                    .get(new.email.as_str())
                    .ctx("read user_email")?
                    .map(|v| v.value().to_owned());
                if owner.is_some_and(|owner| owner != new.id) {
                    return Err(StoreError::EmailTaken);
                }
                emails
                    .remove(old.email.as_str())
                    .ctx("remove from user_email")?;
                emails
                    .insert(new.email.as_str(), new.id.as_str())
                    .ctx("insert into user_email")?;
            }
            new.session_version = new.session_version.max(old.session_version);
            let bytes = encode("users", &new)?;
            users
                .insert(new.id.as_str(), bytes.as_slice())
                .ctx("insert into users")?;
            new
        };
        set_flags(&txn, &new.id, UserFlags::of(&new))?;
        append_change(&txn, &Change::User { id: new.id.clone() })?;
        commit(txn)?;
        Ok(new)
    }

    /// Deletes a user, their email index entry, one-time tokens, second factors and linked
    /// identities, revokes all their refresh families (`at: now`, which ends their sessions),
    /// and leaves a flag row `{disabled: true}` so their live access tokens die. Returns false
    /// if there was no such user.
    pub fn delete_user(&self, id: &str, now: u64) -> Result<bool, StoreError> {
        let txn = self.write()?;
        let old: User = {
            let mut users = txn.open_table(USERS).ctx("open table users")?;
            let removed = users.remove(id).ctx("remove from users")?;
            match removed {
                Some(v) => decode("users", v.value())?,
                None => return Ok(false),
            }
        };
        {
            let mut emails = txn.open_table(USER_EMAIL).ctx("open table user_email")?;
            let owner = emails
                .get(old.email.as_str())
                .ctx("read user_email")?
                .map(|v| v.value().to_owned());
            if owner.as_deref() == Some(id) {
                emails
                    .remove(old.email.as_str())
                    .ctx("remove from user_email")?;
            }
        }
        let flags = UserFlags {
            disabled: true,
            session_version: old.session_version,
        };
        set_flags(&txn, id, flags)?;
        revoke_user_families(&txn, id, now)?;
        one_time::delete_for_in(&txn, id, None)?;
        super::factors::delete_in(&txn, id)?;
        super::identities::delete_all_in(&txn, id)?;
        append_change(&txn, &Change::UserDeleted { id: id.to_owned() })?;
        commit(txn)?;
        Ok(true)
    }

    /// Every user, in id order.
    pub fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let txn = self.read()?;
        let users = txn.open_table(USERS).ctx("open table users")?;
        let mut out = Vec::new();
        for entry in users.iter().ctx("read users")? {
            let (_, v) = entry.ctx("read users")?;
            out.push(decode("users", v.value())?);
        }
        Ok(out)
    }

    pub fn user_count(&self) -> Result<u64, StoreError> {
        let txn = self.read()?;
        let users = txn.open_table(USERS).ctx("open table users")?;
        users.len().ctx("count users")
    }

    /// Every flag row, for the server's start-up load.
    pub fn user_flags(&self) -> Result<Vec<(String, UserFlags)>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(USER_FLAGS).ctx("open table user_flags")?;
        let mut out = Vec::new();
        for entry in table.iter().ctx("read user_flags")? {
            let (k, v) = entry.ctx("read user_flags")?;
            out.push((k.value().to_owned(), decode("user_flags", v.value())?));
        }
        Ok(out)
    }

    /// The flag row of one user; `None` means enabled with session version 0.
    pub fn flags_of(&self, id: &str) -> Result<Option<UserFlags>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(USER_FLAGS).ctx("open table user_flags")?;
        let found = table.get(id).ctx("read user_flags")?;
        found.map(|v| decode("user_flags", v.value())).transpose()
    }

    /// "Log out everywhere": in one transaction, bumps the session version (killing
    /// every access token issued so far), revokes all the user's refresh families
    /// and records the changes. Returns the updated user, `None` if absent.
    pub fn end_all_sessions(&self, user_id: &str, now: u64) -> Result<Option<User>, StoreError> {
        let txn = self.write()?;
        let user = {
            let mut users = txn.open_table(USERS).ctx("open table users")?;
            let mut user: User = match users.get(user_id).ctx("read users")? {
                Some(v) => decode("users", v.value())?,
                None => return Ok(None),
            };
            user.session_version = user.session_version.saturating_add(1);
            user.updated_at = now;
            let bytes = encode("users", &user)?;
            users
                .insert(user_id, bytes.as_slice())
                .ctx("insert into users")?;
            user
        };
        set_flags(&txn, user_id, UserFlags::of(&user))?;
        revoke_user_families(&txn, user_id, now)?;
        append_change(
            &txn,
            &Change::User {
                id: user_id.to_owned(),
            },
        )?;
        commit(txn)?;
        Ok(Some(user))
    }
}

/// Revokes every refresh family of a user inside `txn`.
fn revoke_user_families(
    txn: &redb::WriteTransaction,
    user_id: &str,
    now: u64,
) -> Result<(), StoreError> {
    let families: Vec<String> = {
        let table = txn
            .open_multimap_table(USER_FAMILIES)
            .ctx("open table user_families")?;
        let values = table.get(user_id).ctx("read user_families")?;
        values
            .map(|v| v.map(|v| v.value().to_owned()))
            .collect::<Result<_, _>>()
            .ctx("read user_families")?
    };
    for family in families {
        sessions::revoke_family_in(txn, &family, now)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::test_util::{temp_store, user};
    use super::*;

    #[test]
    fn create_and_look_up_by_id_and_email() {
        let (_dir, store) = temp_store();
        let ada = user("u1", "ada@example.com");
        store.create_user(&ada).unwrap();
        assert_eq!(store.user_by_id("u1").unwrap(), Some(ada.clone()));
        assert_eq!(store.user_by_email("ada@example.com").unwrap(), Some(ada));
        assert_eq!(store.user_by_id("nope").unwrap(), None);
        assert_eq!(store.user_by_email("nope@example.com").unwrap(), None);
        assert_eq!(store.user_count().unwrap(), 1);
        assert_eq!(store.list_users().unwrap().len(), 1);
        // Default flags have no row.
        assert_eq!(store.flags_of("u1").unwrap(), None);
        assert!(store.user_flags().unwrap().is_empty());
    }

    #[test]
    fn modify_user_changes_only_what_it_touches() {
        let (_dir, store) = temp_store();
        store.create_user(&user("u1", "ada@example.com")).unwrap();
        // Another process disables the account after this one read it...
        let stale = store.user_by_id("u1").unwrap().unwrap();
        store
            .modify_user("u1", |u| {
                u.disabled = true;
                Ok(())
            })
            .unwrap();
        // ...then this one rehashes the password: the account stays disabled.
        let after = store
            .modify_user("u1", |u| {
                assert!(u.disabled, "modify_user must see the latest record");
                u.password_hash = format!("{}-new", stale.password_hash);
                Ok(())
            })
            .unwrap();
        assert!(after.disabled);
        assert!(after.password_hash.ends_with("-new"));
        assert_eq!(
            store.flags_of("u1").unwrap().map(|f| f.disabled),
            Some(true)
        );
        // A refusal aborts the whole change; an unknown id is NotFound.
        let refused = store.modify_user("u1", |u| {
            u.disabled = false;
            Err(StoreError::Corrupt("refused".into()))
        });
        assert!(refused.is_err());
        assert!(store.user_by_id("u1").unwrap().unwrap().disabled);
        assert!(matches!(
            store.modify_user("nope", |_| Ok(())),
            Err(StoreError::NotFound)
        ));
    }

    #[test]
    fn duplicate_email_or_id_is_refused() {
        let (_dir, store) = temp_store();
        store.create_user(&user("u1", "ada@example.com")).unwrap();
        assert!(matches!(
            store.create_user(&user("u2", "ada@example.com")),
            Err(StoreError::EmailTaken)
        ));
        assert!(matches!(
            store.create_user(&user("u1", "other@example.com")),
            Err(StoreError::IdTaken)
        ));
        assert_eq!(store.user_count().unwrap(), 1);
        assert_eq!(store.user_by_email("other@example.com").unwrap(), None);
    }

    #[test]
    fn update_moves_the_email_index_and_flags() {
        let (_dir, store) = temp_store();
        store.create_user(&user("u1", "ada@example.com")).unwrap();
        store.create_user(&user("u2", "bob@example.com")).unwrap();
        let mut ada = user("u1", "ada@new.example");
        ada.disabled = true;
        store.update_user(&ada).unwrap();
        assert_eq!(store.user_by_email("ada@example.com").unwrap(), None);
        assert_eq!(store.user_by_email("ada@new.example").unwrap(), Some(ada));
        assert_eq!(
            store.flags_of("u1").unwrap(),
            Some(UserFlags {
                disabled: true,
                session_version: 0
            })
        );
        // Clash with bob's email.
        let clash = user("u1", "bob@example.com");
        assert!(matches!(
            store.update_user(&clash),
            Err(StoreError::EmailTaken)
        ));
        assert!(matches!(
            store.update_user(&user("u9", "x@example.com")),
            Err(StoreError::NotFound)
        ));
        // Re-enabling removes the flag row.
        store.update_user(&user("u1", "ada@new.example")).unwrap();
        assert_eq!(store.flags_of("u1").unwrap(), None);
        let last = store.changes_since(0, 100).unwrap();
        assert_eq!(last.last().unwrap().1, Change::User { id: "u1".into() });
    }

    #[test]
    fn stale_update_cannot_lower_session_version() {
        let (_dir, store) = temp_store();
        let ada = user("u1", "ada@example.com");
        store.create_user(&ada).unwrap();
        store.end_all_sessions("u1", 20).unwrap();
        store.update_user(&ada).unwrap(); // read before end_all_sessions
        assert_eq!(store.user_by_id("u1").unwrap().unwrap().session_version, 1);
        assert_eq!(store.flags_of("u1").unwrap().unwrap().session_version, 1);
    }

    #[test]
    fn delete_leaves_a_disabled_flag_row() {
        let (_dir, store) = temp_store();
        store.create_user(&user("u1", "ada@example.com")).unwrap();
        assert!(store.delete_user("u1", 50).unwrap());
        assert!(!store.delete_user("u1", 50).unwrap());
        assert_eq!(store.user_by_id("u1").unwrap(), None);
        assert_eq!(store.user_by_email("ada@example.com").unwrap(), None);
        assert_eq!(
            store.flags_of("u1").unwrap(),
            Some(UserFlags {
                disabled: true,
                session_version: 0
            })
        );
        assert_eq!(
            store.user_flags().unwrap(),
            vec![(
                "u1".to_owned(),
                UserFlags {
                    disabled: true,
                    session_version: 0
                }
            )]
        );
        let changes = store.changes_since(0, 100).unwrap();
        assert_eq!(
            changes.last().unwrap().1,
            Change::UserDeleted { id: "u1".into() }
        );
        // The email is free again.
        store.create_user(&user("u2", "ada@example.com")).unwrap();
    }

    #[test]
    fn data_survives_close_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.redb");
        let ada = user("u1", "ada@example.com");
        {
            let store = RedbStore::open(&path).unwrap();
            store.create_user(&ada).unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.user_by_email("ada@example.com").unwrap(), Some(ada));
        assert_eq!(store.last_change().unwrap(), 1);
    }

    #[test]
    fn two_handles_on_one_file_see_each_others_writes() {
        // Stands in for the server and the `gateway user add` CLI process: redb's
        // MultiWriter locks are per open file description (OFD locks), so two
        // handles in one process contend exactly as two processes do.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.redb");
        let server = RedbStore::open(&path).unwrap();
        let cli = RedbStore::open(&path).unwrap();
        let seen = server.last_change().unwrap();

        cli.create_user(&user("u1", "ada@example.com")).unwrap();
        assert!(server.user_by_email("ada@example.com").unwrap().is_some());
        assert_eq!(
            server.changes_since(seen, 10).unwrap(),
            vec![(seen + 1, Change::User { id: "u1".into() })]
        );

        // And the other way round, with interleaved writes.
        server.end_all_sessions("u1", 30).unwrap();
        cli.revoke_jti("j1", 99).unwrap();
        assert_eq!(cli.flags_of("u1").unwrap().unwrap().session_version, 1);
        let changes = server.changes_since(seen, 10).unwrap();
        assert_eq!(changes.len(), 3);
        assert_eq!(
            changes[2],
            (
                seen + 3,
                Change::Jti {
                    jti: "j1".into(),
                    exp: 99
                }
            )
        );
    }

    #[test]
    fn two_handles_write_concurrently_from_two_threads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.redb");
        let a = RedbStore::open(&path).unwrap();
        let b = RedbStore::open(&path).unwrap();
        let threads: Vec<_> = [("a", a.clone()), ("b", b.clone())]
            .into_iter()
            .map(|(name, store)| {
                std::thread::spawn(move || {
                    for i in 0..20 {
                        let id = format!("{name}{i}");
                        store
                            .create_user(&user(&id, &format!("{id}@example.com")))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(a.user_count().unwrap(), 40);
        let seqs: Vec<u64> = b
            .changes_since(0, 100)
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
    }

    #[test]
    fn debug_hides_the_password_hash() {
        let shown = format!("{:?}", user("u1", "ada@example.com"));
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("***") && shown.contains("ada@example.com"));
    }

    #[test]
    fn corrupt_user_row_is_an_error() {
        let (_dir, store) = temp_store();
        let txn = store.write().unwrap();
        txn.open_table(USERS)
            .unwrap()
            .insert("u1", b"{not json".as_slice())
            .unwrap();
        txn.commit().unwrap();
        match store.user_by_id("u1") {
            Err(StoreError::Corrupt(msg)) => assert!(msg.starts_with("users:"), "{msg}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(store.list_users().is_err());
    }
}
