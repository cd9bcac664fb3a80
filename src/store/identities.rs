//! Linked single sign-on identities: the [`Store`] side, which encodes each
//! [`LinkedIdentity`] as JSON and seals it (with `store.encryption_key`, when configured) under
//! the name `identity/{provider}/{subject}`; backends keep the sealed bytes beside the keys they
//! find them by, as they do for second factors.
//!
//! The record repeats its keys (provider, subject, user) inside the sealed value, and every
//! read checks them against the row: a value moved to another row, or another user, is refused
//! as corrupt even where the name alone would not tell (a provider id containing `/`).

use super::model::{LinkedIdentity, RawWrite, StoreError, StoredIdentity};
use super::{Backend, SealKey, Store};

impl Store {
    /// The identity `subject` at `provider`, if it is linked.
    pub fn identity(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<LinkedIdentity>, StoreError> {
        let stored = match &self.backend {
            Backend::Redb(s) => s.get_identity(provider, subject)?,
            Backend::Postgres(s) => s.get_identity(provider, subject)?,
        };
        stored.map(|row| self.open_identity(&row)).transpose()
    }

    /// A user's linked identities, sorted by provider; empty if they have none (or there is no
    /// such user).
    pub fn identities_of(&self, user_id: &str) -> Result<Vec<LinkedIdentity>, StoreError> {
        let stored = match &self.backend {
            Backend::Redb(s) => s.identities_of(user_id)?,
            Backend::Postgres(s) => s.identities_of(user_id)?,
        };
        let mut out = stored
            .iter()
            .map(|row| self.open_identity(row))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| a.provider.cmp(&b.provider));
        Ok(out)
    }

    /// Links an identity to its user, atomically: [`StoreError::NotFound`] if the user does
    /// not exist, [`StoreError::IdentityTaken`] if (provider, subject) is linked already (to
    /// anyone) or the user has an identity at this provider (one per provider per user).
    pub fn link_identity(&self, identity: &LinkedIdentity) -> Result<(), StoreError> {
        let row = self.seal_identity(identity)?;
        match &self.backend {
            Backend::Redb(s) => s.insert_identity(&row),
            Backend::Postgres(s) => s.insert_identity(&row),
        }
    }

    /// Reads an identity, lets `change` edit it and writes it back, in one transaction (of one
    /// identity, on every backend and replica), so two concurrent updates cannot lose one
    /// another's write. `change` may refuse with an error, which writes nothing; nothing is
    /// written either if it left the record as it was. It must not change the provider, the
    /// subject or the user (unlink and link instead): that is refused with
    /// [`StoreError::Corrupt`]. [`StoreError::NotFound`] if the identity is not linked.
    pub fn update_identity<T>(
        &self,
        provider: &str,
        subject: &str,
        change: impl FnOnce(&mut LinkedIdentity) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut out = None;
        let raw = |current: &StoredIdentity| -> Result<RawWrite, StoreError> {
            let old = self.open_identity(current)?;
            let mut new = old.clone();
            let result = change(&mut new)?;
            if (&new.provider, &new.subject, &new.user_id)
                != (&old.provider, &old.subject, &old.user_id)
            {
                return Err(StoreError::Corrupt(format!(
                    "an update of the identity at {provider} changed its provider, subject or \
                     user (unlink it and link another instead)"
                )));
            }
            let write = if new == old {
                RawWrite::Keep
            } else {
                RawWrite::Put(self.seal_identity(&new)?.value)
            };
            out = Some(result);
            Ok(write)
        };
        match &self.backend {
            Backend::Redb(s) => s.update_identity(provider, subject, raw)?,
            Backend::Postgres(s) => s.update_identity(provider, subject, raw)?,
        }
        out.ok_or_else(|| StoreError::Io("update identity: the change did not run".into()))
    }

    /// Unlinks the user's identity at `provider`; false if they had none.
    pub fn unlink_identity(&self, user_id: &str, provider: &str) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Redb(s) => s.delete_identity(user_id, provider),
            Backend::Postgres(s) => s.delete_identity(user_id, provider),
        }
    }

    /// [`Store::reseal_secrets`] for every linked identity (their provider refresh tokens):
    /// each value not already under `to` is opened and written back under `to` (or in the
    /// clear), each in its own transaction. Returns how many changed.
    pub(super) fn reseal_identities(&self, to: Option<&SealKey>) -> Result<usize, StoreError> {
        let mut changed = 0;
        for (provider, subject) in self.identity_keys()? {
            let name = identity_name(&provider, &subject);
            let rewrite = |current: &StoredIdentity| -> Result<RawWrite, StoreError> {
                let resealed = self.reseal_value(&name, &current.value, to)?;
                if resealed.is_some() {
                    changed += 1;
                }
                Ok(resealed.map_or(RawWrite::Keep, RawWrite::Put))
            };
            let done = match &self.backend {
                Backend::Redb(s) => s.update_identity(&provider, &subject, rewrite),
                Backend::Postgres(s) => s.update_identity(&provider, &subject, rewrite),
            };
            match done {
                // Unlinked meanwhile: nothing to reseal.
                Ok(()) | Err(StoreError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(changed)
    }

    /// Opens every linked identity, so a value the configured key (or its absence) cannot open
    /// fails at start-up rather than at a user's sign-in.
    pub(super) fn check_identities(&self) -> Result<(), StoreError> {
        for (provider, subject) in self.identity_keys()? {
            self.identity(&provider, &subject)?;
        }
        Ok(())
    }

    fn identity_keys(&self) -> Result<Vec<(String, String)>, StoreError> {
        match &self.backend {
            Backend::Redb(s) => s.identity_keys(),
            Backend::Postgres(s) => s.identity_keys(),
        }
    }

    fn seal_identity(&self, identity: &LinkedIdentity) -> Result<StoredIdentity, StoreError> {
        let json = serde_json::to_vec(identity)
            .map_err(|e| StoreError::Corrupt(format!("encode a linked identity: {e}")))?;
        Ok(StoredIdentity {
            provider: identity.provider.clone(),
            subject: identity.subject.clone(),
            user_id: identity.user_id.clone(),
            value: self.seal_value(&identity_name(&identity.provider, &identity.subject), &json)?,
        })
    }

    fn open_identity(&self, row: &StoredIdentity) -> Result<LinkedIdentity, StoreError> {
        let name = identity_name(&row.provider, &row.subject);
        let plain = self.unseal(&name, row.value.clone())?;
        // serde's message can quote the value (the refresh token): say where, not what.
        let identity: LinkedIdentity = serde_json::from_slice(plain.expose()).map_err(|e| {
            StoreError::Corrupt(format!(
                "linked identity at {}: undecodable value ({:?} error at line {}, column {})",
                row.provider,
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        if (&identity.provider, &identity.subject, &identity.user_id)
            != (&row.provider, &row.subject, &row.user_id)
        {
            return Err(StoreError::Corrupt(format!(
                "linked identity at {}: the stored record belongs to another identity or user",
                row.provider
            )));
        }
        Ok(identity)
    }
}

/// The name an identity is sealed under (the associated data: a sealed value cannot be moved
/// to another identity).
fn identity_name(provider: &str, subject: &str) -> String {
    format!("identity/{provider}/{subject}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::test_util::{temp_store, user};
    use super::*;
    use crate::secret::Secret;

    fn identity(provider: &str, subject: &str, user_id: &str) -> LinkedIdentity {
        LinkedIdentity {
            provider: provider.into(),
            subject: subject.into(),
            user_id: user_id.into(),
            email: Some("ada@idp.test".into()),
            linked_at: 100,
            last_login_at: 100,
            checked_at: 100,
            groups: vec!["staff".into()],
            refresh_token: Some("rt-very-secret".into()),
        }
    }

    #[test]
    fn debug_hides_the_refresh_token() {
        let shown = format!("{:?}", identity("okta", "s1", "u1"));
        assert!(!shown.contains("rt-very-secret"), "{shown}");
        assert!(
            shown.contains("***") && shown.contains("ada@idp.test"),
            "{shown}"
        );
        let mut none = identity("okta", "s1", "u1");
        none.refresh_token = None;
        assert!(format!("{none:?}").contains("refresh_token: None"));
        let row = StoredIdentity {
            provider: "okta".into(),
            subject: "s1".into(),
            user_id: "u1".into(),
            value: b"{\"refresh_token\":\"rt-very-secret\"}".to_vec(),
        };
        let shown = format!("{row:?}");
        assert!(
            !shown.contains("rt-very-secret") && shown.contains("bytes"),
            "{shown}"
        );
    }

    #[test]
    fn records_written_before_groups_and_tokens_existed_still_read() {
        let (_dir, store) = temp_store();
        store.create_user(&user("u1", "ada@x.test")).unwrap();
        let old = br#"{"provider":"okta","subject":"s1","user_id":"u1","email":null,"linked_at":1,"last_login_at":2,"checked_at":3}"#;
        let Backend::Redb(redb) = &store.backend else {
            unreachable!()
        };
        redb.insert_identity(&StoredIdentity {
            provider: "okta".into(),
            subject: "s1".into(),
            user_id: "u1".into(),
            value: old.to_vec(),
        })
        .unwrap();
        let read = store.identity("okta", "s1").unwrap().unwrap();
        assert_eq!((read.groups.len(), read.refresh_token), (0, None));
    }

    #[test]
    fn an_update_may_not_move_the_identity() {
        let (_dir, store) = temp_store();
        store.create_user(&user("u1", "ada@x.test")).unwrap();
        store.create_user(&user("u2", "bob@x.test")).unwrap();
        store.link_identity(&identity("okta", "s1", "u1")).unwrap();
        for change in [
            (|i: &mut LinkedIdentity| i.user_id = "u2".into()) as fn(&mut LinkedIdentity),
            |i| i.subject = "s2".into(),
            |i| i.provider = "google".into(),
        ] {
            let refused = store.update_identity("okta", "s1", |i| {
                i.checked_at = 999;
                change(i);
                Ok(())
            });
            assert!(
                matches!(refused, Err(StoreError::Corrupt(_))),
                "{refused:?}"
            );
        }
        assert_eq!(
            store.identity("okta", "s1").unwrap(),
            Some(identity("okta", "s1", "u1")),
            "nothing written"
        );
        assert!(store.identities_of("u2").unwrap().is_empty());
        // A refusal by `change` writes nothing either; a missing identity is NotFound.
        let refused = store.update_identity("okta", "s1", |i| -> Result<(), _> {
            i.checked_at = 999;
            Err(StoreError::NotFound)
        });
        assert!(refused.is_err());
        assert_eq!(
            store.identity("okta", "s1").unwrap().unwrap().checked_at,
            100
        );
        assert!(matches!(
            store.update_identity("okta", "nobody", |_| Ok(())),
            Err(StoreError::NotFound)
        ));
    }

    #[test]
    fn a_sealed_value_opens_only_under_its_own_keys() {
        let (_dir, plain) = temp_store();
        let store = plain
            .clone()
            .with_encryption(Some(&Secret::new(vec![7; 32])))
            .unwrap();
        store.create_user(&user("u1", "ada@x.test")).unwrap();
        store.create_user(&user("u2", "bob@x.test")).unwrap();
        store.link_identity(&identity("okta", "s1", "u1")).unwrap();
        let Backend::Redb(redb) = &store.backend else {
            unreachable!()
        };
        let sealed = redb.get_identity("okta", "s1").unwrap().unwrap();
        assert!(super::super::seal::is_sealed(&sealed.value));
        assert!(matches!(
            plain.identity("okta", "s1"),
            Err(StoreError::Sealed(_))
        ));
        // Moved to another subject: the name no longer matches.
        redb.insert_identity(&StoredIdentity {
            subject: "s2".into(),
            user_id: "u2".into(),
            ..sealed.clone()
        })
        .unwrap();
        assert!(matches!(
            store.identity("okta", "s2"),
            Err(StoreError::Sealed(_))
        ));
        // Under its own name but another user: the record says whose it is.
        assert!(redb.delete_identity("u1", "okta").unwrap());
        redb.update_identity("okta", "s2", |_| Ok(RawWrite::Delete))
            .unwrap();
        redb.insert_identity(&StoredIdentity {
            user_id: "u2".into(),
            ..sealed
        })
        .unwrap();
        assert!(matches!(
            store.identities_of("u2"),
            Err(StoreError::Corrupt(_))
        ));
    }
}
