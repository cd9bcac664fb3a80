//! Refresh tokens (stored by SHA-256, grouped in rotation families), revoked
//! families and the access-token (`jti`) deny list.
//!
//! A login starts a family; each refresh rotates the presented token into a new
//! one of the same family, which expires as a whole at `family_expires_at`.
//! Presenting an already rotated token is reuse, reported as
//! [`Rotation::AlreadyRotated`] so the caller can revoke the family (or allow a
//! short grace window for concurrent tabs).

use std::collections::BTreeSet;

use redb::{ReadableMultimapTable, ReadableTable, WriteTransaction};

use super::super::model::{
    Change, JtiRange, RefreshRecord, RefreshState, Rotation, StoreError, SweepStats, TokenHash,
};
use super::tables::{
    Context, FAMILY_TOKENS, REFRESH, REVOKED_FAMILIES, REVOKED_JTIS, USER_FAMILIES, append_change,
    decode, encode,
};
use super::{RedbStore, commit, session_info};

impl RedbStore {
    /// Stores a new refresh token (a login starting a family, or a caller-managed
    /// rotation). Refuses a hash that is already present.
    pub fn insert_refresh(&self, hash: &TokenHash, rec: &RefreshRecord) -> Result<(), StoreError> {
        let txn = self.write()?;
        insert_refresh_in(&txn, hash, rec)?;
        commit(txn)
    }

    pub fn get_refresh(&self, hash: &TokenHash) -> Result<Option<RefreshRecord>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(REFRESH).ctx("open table refresh")?;
        let found = table.get(hash).ctx("read refresh")?;
        found.map(|v| decode("refresh", v.value())).transpose()
    }

    /// In one write transaction: if `old` is active and its family unexpired, marks
    /// it `Rotated { at: now }` and stores `new` in the same family (issued now,
    /// active). A rotated `old` gives [`Rotation::AlreadyRotated`] and writes
    /// nothing; anything else gives [`Rotation::Invalid`].
    pub fn rotate_refresh(
        &self,
        old: &TokenHash,
        new: &TokenHash,
        now: u64,
    ) -> Result<Rotation, StoreError> {
        let txn = self.write()?;
        let record: RefreshRecord = {
            let table = txn.open_table(REFRESH).ctx("open table refresh")?;
            let found = table.get(old).ctx("read refresh")?;
            match found {
                Some(v) => decode("refresh", v.value())?,
                None => return Ok(Rotation::Invalid),
            }
        };
        if now >= record.family_expires_at {
            return Ok(Rotation::Invalid);
        }
        match record.state {
            RefreshState::Revoked { .. } => return Ok(Rotation::Invalid),
            RefreshState::Rotated { at } => return Ok(Rotation::AlreadyRotated { at, record }),
            RefreshState::Active => {}
        }
        let rotated = RefreshRecord {
            state: RefreshState::Rotated { at: now },
            ..record.clone()
        };
        {
            let mut table = txn.open_table(REFRESH).ctx("open table refresh")?;
            let bytes = encode("refresh", &rotated)?;
            table
                .insert(old, bytes.as_slice())
                .ctx("insert into refresh")?;
        }
        let next = RefreshRecord {
            issued_at: now,
            state: RefreshState::Active,
            ..record.clone()
        };
        insert_refresh_in(&txn, new, &next)?;
        session_info::touch_in(&txn, &record.family, now)?;
        commit(txn)?;
        Ok(Rotation::Rotated(record))
    }

    /// Revokes every token of `family` (`Revoked { at: now }`) and remembers the
    /// family as revoked until it would have expired. Returns how many tokens
    /// changed state; 0 for an unknown family, which writes nothing.
    pub fn revoke_family(&self, family: &str, now: u64) -> Result<usize, StoreError> {
        let txn = self.write()?;
        let count = revoke_family_in(&txn, family, now)?;
        commit(txn)?;
        Ok(count)
    }

    /// Revoked families that have not yet expired, with their expiry.
    pub fn revoked_families(&self, now: u64) -> Result<Vec<(String, u64)>, StoreError> {
        let txn = self.read()?;
        let table = txn
            .open_table(REVOKED_FAMILIES)
            .ctx("open table revoked_families")?;
        unexpired(&table, now, "read revoked_families")
    }

    /// Deny-lists an access token id until `exp`.
    pub fn revoke_jti(&self, jti: &str, exp: u64) -> Result<(), StoreError> {
        let txn = self.write()?;
        let exp = {
            let mut table = txn
                .open_table(REVOKED_JTIS)
                .ctx("open table revoked_jtis")?;
            let existing = table.get(jti).ctx("read revoked_jtis")?.map(|v| v.value());
            let exp = existing.map_or(exp, |e| e.max(exp));
            table.insert(jti, exp).ctx("insert into revoked_jtis")?;
            exp
        };
        append_change(
            &txn,
            &Change::Jti {
                jti: jti.to_owned(),
                exp,
            },
        )?;
        commit(txn)
    }

    /// How many jtis the deny list holds, expired ones included.
    pub fn revoked_jti_count(&self) -> Result<u64, StoreError> {
        let txn = self.read()?;
        let table = txn
            .open_table(REVOKED_JTIS)
            .ctx("open table revoked_jtis")?;
        redb::ReadableTableMetadata::len(&table).ctx("count revoked_jtis")
    }

    /// Calls `visit` with each deny-listed jti in `range` that has not yet expired, and its
    /// expiry. Threads reading disjoint ranges each have their own read transaction.
    pub fn for_each_revoked_jti(
        &self,
        now: u64,
        range: JtiRange<'_>,
        visit: &mut dyn FnMut(&str, u64),
    ) -> Result<(), StoreError> {
        use std::ops::Bound;
        let txn = self.read()?;
        let table = txn
            .open_table(REVOKED_JTIS)
            .ctx("open table revoked_jtis")?;
        let bounds: (Bound<&str>, Bound<&str>) = (
            range.from.map_or(Bound::Unbounded, Bound::Included),
            range.below.map_or(Bound::Unbounded, Bound::Excluded),
        );
        if let (Some(from), Some(below)) = (range.from, range.below)
            && from >= below
        {
            return Ok(()); // redb refuses a reversed range; an empty slice has nothing to visit
        }
        for entry in table.range::<&str>(bounds).ctx("read revoked_jtis")? {
            let (k, v) = entry.ctx("read revoked_jtis")?;
            if v.value() > now {
                visit(k.value(), v.value());
            }
        }
        Ok(())
    }

    /// Deny-listed jtis that have not yet expired, with their expiry.
    pub fn revoked_jtis(&self, now: u64) -> Result<Vec<(String, u64)>, StoreError> {
        let txn = self.read()?;
        let table = txn
            .open_table(REVOKED_JTIS)
            .ctx("open table revoked_jtis")?;
        unexpired(&table, now, "read revoked_jtis")
    }
}

pub(super) fn unexpired(
    table: &impl ReadableTable<&'static str, u64>,
    now: u64,
    what: &str,
) -> Result<Vec<(String, u64)>, StoreError> {
    let mut out = Vec::new();
    for entry in table.iter().ctx(what)? {
        let (k, v) = entry.ctx(what)?;
        if v.value() > now {
            out.push((k.value().to_owned(), v.value()));
        }
    }
    Ok(out)
}

pub(super) fn insert_refresh_in(
    txn: &WriteTransaction,
    hash: &TokenHash,
    rec: &RefreshRecord,
) -> Result<(), StoreError> {
    {
        let mut table = txn.open_table(REFRESH).ctx("open table refresh")?;
        if table.get(hash).ctx("read refresh")?.is_some() {
            // 256 random bits never collide; this is a caller bug, not bad luck.
            return Err(StoreError::Corrupt(
                "refresh: token hash already present".into(),
            ));
        }
        let bytes = encode("refresh", rec)?;
        table
            .insert(hash, bytes.as_slice())
            .ctx("insert into refresh")?;
    }
    txn.open_multimap_table(FAMILY_TOKENS)
        .ctx("open table family_tokens")?
        .insert(rec.family.as_str(), hash)
        .ctx("insert into family_tokens")?;
    txn.open_multimap_table(USER_FAMILIES)
        .ctx("open table user_families")?
        .insert(rec.user_id.as_str(), rec.family.as_str())
        .ctx("insert into user_families")?;
    Ok(())
}

/// Revokes a family inside `txn`; see [`RedbStore::revoke_family`]. Appends a
/// [`Change::Family`] unless the family was unknown or already fully revoked, and marks its
/// session record ended.
pub(super) fn revoke_family_in(
    txn: &WriteTransaction,
    family: &str,
    now: u64,
) -> Result<usize, StoreError> {
    let hashes: Vec<TokenHash> = {
        let table = txn
            .open_multimap_table(FAMILY_TOKENS)
            .ctx("open table family_tokens")?;
        let values = table.get(family).ctx("read family_tokens")?;
        values
            .map(|v| v.map(|v| *v.value()))
            .collect::<Result<_, _>>()
            .ctx("read family_tokens")?
    };
    let mut count = 0;
    let mut exp: Option<u64> = None;
    {
        let mut table = txn.open_table(REFRESH).ctx("open table refresh")?;
        for hash in &hashes {
            let mut rec: RefreshRecord = match table.get(hash).ctx("read refresh")? {
                Some(v) => decode("refresh", v.value())?,
                None => continue,
            };
            exp = Some(exp.map_or(rec.family_expires_at, |e| e.max(rec.family_expires_at)));
            if matches!(rec.state, RefreshState::Revoked { .. }) {
                continue;
            }
            rec.state = RefreshState::Revoked { at: now };
            let bytes = encode("refresh", &rec)?;
            table
                .insert(hash, bytes.as_slice())
                .ctx("insert into refresh")?;
            count += 1;
        }
    }
    let Some(exp) = exp else {
        return Ok(0);
    };
    session_info::mark_ended_in(txn, family, now)?;
    let newly_remembered = {
        let mut table = txn
            .open_table(REVOKED_FAMILIES)
            .ctx("open table revoked_families")?;
        let previous = table
            .insert(family, exp)
            .ctx("insert into revoked_families")?
            .map(|v| v.value());
        previous.is_none()
    };
    if count > 0 || newly_remembered {
        append_change(
            txn,
            &Change::Family {
                family: family.to_owned(),
                exp,
            },
        )?;
    }
    Ok(count)
}

/// The session part of [`RedbStore::sweep`]: expired refresh records and their index
/// entries, expired revoked families and jtis.
pub(super) fn sweep_sessions(txn: &WriteTransaction, now: u64) -> Result<SweepStats, StoreError> {
    let mut stats = SweepStats::default();
    // (hash, family, user) of every record whose family has expired.
    let mut expired: Vec<(TokenHash, String, String)> = Vec::new();
    {
        let table = txn.open_table(REFRESH).ctx("open table refresh")?;
        for entry in table.iter().ctx("read refresh")? {
            let (k, v) = entry.ctx("read refresh")?;
            let rec: RefreshRecord = decode("refresh", v.value())?;
            if rec.family_expires_at <= now {
                expired.push((*k.value(), rec.family, rec.user_id));
            }
        }
    }
    {
        let mut table = txn.open_table(REFRESH).ctx("open table refresh")?;
        for (hash, _, _) in &expired {
            table.remove(hash).ctx("remove from refresh")?;
        }
    }
    stats.refresh_tokens = expired.len();
    let families: BTreeSet<(String, String)> = expired
        .into_iter()
        .map(|(_, family, user)| (family, user))
        .collect();
    {
        let mut by_family = txn
            .open_multimap_table(FAMILY_TOKENS)
            .ctx("open table family_tokens")?;
        let mut by_user = txn
            .open_multimap_table(USER_FAMILIES)
            .ctx("open table user_families")?;
        for (family, user) in &families {
            by_family
                .remove_all(family.as_str())
                .ctx("remove from family_tokens")?;
            by_user
                .remove(user.as_str(), family.as_str())
                .ctx("remove from user_families")?;
        }
    }
    stats.families = families.len();
    stats.revoked_families = retain_unexpired(txn, REVOKED_FAMILIES, now, "revoked_families")?;
    stats.jtis = retain_unexpired(txn, REVOKED_JTIS, now, "revoked_jtis")?;
    Ok(stats)
}

/// Deletes rows whose expiry (the value) is not after `now`; returns how many.
fn retain_unexpired(
    txn: &WriteTransaction,
    def: redb::TableDefinition<&str, u64>,
    now: u64,
    name: &str,
) -> Result<usize, StoreError> {
    let mut table = txn.open_table(def).ctx(&format!("open table {name}"))?;
    let mut removed = 0;
    table
        .retain(|_, exp| {
            let keep = exp > now;
            removed += usize::from(!keep);
            keep
        })
        .ctx(&format!("sweep {name}"))?;
    Ok(removed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::test_util::{temp_store, user};
    use super::*;

    fn h(n: u8) -> TokenHash {
        [n; 32]
    }

    fn record(family: &str, user_id: &str, exp: u64) -> RefreshRecord {
        RefreshRecord {
            family: family.into(),
            user_id: user_id.into(),
            issued_at: 100,
            family_expires_at: exp,
            state: RefreshState::Active,
            amr: Vec::new(),
            provider: None,
        }
    }

    #[test]
    fn rotation_lifecycle() {
        let (_dir, store) = temp_store();
        let first = record("f1", "u1", 1000);
        store.insert_refresh(&h(1), &first).unwrap();
        assert_eq!(store.get_refresh(&h(1)).unwrap(), Some(first.clone()));

        assert_eq!(
            store.rotate_refresh(&h(1), &h(2), 200).unwrap(),
            Rotation::Rotated(first.clone())
        );
        assert_eq!(
            store.get_refresh(&h(1)).unwrap().unwrap().state,
            RefreshState::Rotated { at: 200 }
        );
        let second = store.get_refresh(&h(2)).unwrap().unwrap();
        assert_eq!(
            second,
            RefreshRecord {
                issued_at: 200,
                ..first.clone()
            }
        );

        // Reuse of the old token: reported, nothing written.
        match store.rotate_refresh(&h(1), &h(3), 300).unwrap() {
            Rotation::AlreadyRotated { at, record } => {
                assert_eq!(at, 200);
                assert_eq!(record.state, RefreshState::Rotated { at: 200 });
            }
            other => panic!("expected AlreadyRotated, got {other:?}"),
        }
        assert_eq!(store.get_refresh(&h(3)).unwrap(), None);

        // Unknown token.
        assert_eq!(
            store.rotate_refresh(&h(9), &h(3), 300).unwrap(),
            Rotation::Invalid
        );
        // Family expired.
        assert_eq!(
            store.rotate_refresh(&h(2), &h(3), 1000).unwrap(),
            Rotation::Invalid
        );
        assert_eq!(store.get_refresh(&h(3)).unwrap(), None);
    }

    #[test]
    fn rotate_of_revoked_is_invalid() {
        let (_dir, store) = temp_store();
        store
            .insert_refresh(&h(1), &record("f1", "u1", 1000))
            .unwrap();
        assert_eq!(store.revoke_family("f1", 150).unwrap(), 1);
        assert_eq!(
            store.rotate_refresh(&h(1), &h(2), 200).unwrap(),
            Rotation::Invalid
        );
        assert_eq!(store.get_refresh(&h(2)).unwrap(), None);
    }

    #[test]
    fn revoke_family_revokes_every_token() {
        let (_dir, store) = temp_store();
        store
            .insert_refresh(&h(1), &record("f1", "u1", 1000))
            .unwrap();
        store.rotate_refresh(&h(1), &h(2), 200).unwrap();
        store.rotate_refresh(&h(2), &h(3), 300).unwrap();
        store
            .insert_refresh(&h(7), &record("f2", "u1", 1000))
            .unwrap();
        let before = store.last_change().unwrap();

        assert_eq!(store.revoke_family("f1", 400).unwrap(), 3);
        for n in 1..=3 {
            assert_eq!(
                store.get_refresh(&h(n)).unwrap().unwrap().state,
                RefreshState::Revoked { at: 400 }
            );
        }
        assert_eq!(
            store.get_refresh(&h(7)).unwrap().unwrap().state,
            RefreshState::Active
        );
        assert_eq!(
            store.revoked_families(400).unwrap(),
            vec![("f1".to_owned(), 1000)]
        );
        assert!(store.revoked_families(1000).unwrap().is_empty());
        assert_eq!(
            store.changes_since(before, 10).unwrap(),
            vec![(
                before + 1,
                Change::Family {
                    family: "f1".into(),
                    exp: 1000
                }
            )]
        );
        // Idempotent, and an unknown family writes nothing.
        assert_eq!(store.revoke_family("f1", 500).unwrap(), 0);
        assert_eq!(store.revoke_family("nope", 500).unwrap(), 0);
        assert_eq!(store.last_change().unwrap(), before + 1);
    }

    #[test]
    fn end_all_sessions_bumps_version_and_revokes_families() {
        let (_dir, store) = temp_store();
        store.create_user(&user("u1", "ada@example.com")).unwrap();
        store
            .insert_refresh(&h(1), &record("f1", "u1", 1000))
            .unwrap();
        store
            .insert_refresh(&h(2), &record("f2", "u1", 2000))
            .unwrap();
        store
            .insert_refresh(&h(3), &record("f3", "u2", 1000))
            .unwrap();

        let updated = store.end_all_sessions("u1", 500).unwrap().unwrap();
        assert_eq!(updated.session_version, 1);
        assert_eq!(updated.updated_at, 500);
        assert_eq!(store.user_by_id("u1").unwrap(), Some(updated));
        assert_eq!(store.flags_of("u1").unwrap().unwrap().session_version, 1);
        for n in [1, 2] {
            assert_eq!(
                store.get_refresh(&h(n)).unwrap().unwrap().state,
                RefreshState::Revoked { at: 500 }
            );
        }
        assert_eq!(
            store.get_refresh(&h(3)).unwrap().unwrap().state,
            RefreshState::Active
        );
        let mut revoked = store.revoked_families(500).unwrap();
        revoked.sort();
        assert_eq!(
            revoked,
            vec![("f1".to_owned(), 1000), ("f2".to_owned(), 2000)]
        );
        let changes: Vec<Change> = store
            .changes_since(1, 10)
            .unwrap()
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        assert_eq!(changes.len(), 3);
        assert_eq!(changes[2], Change::User { id: "u1".into() });
        assert_eq!(store.end_all_sessions("nobody", 500).unwrap(), None);
    }

    #[test]
    fn delete_user_revokes_their_families() {
        let (_dir, store) = temp_store();
        store.create_user(&user("u1", "ada@example.com")).unwrap();
        store
            .insert_refresh(&h(1), &record("f1", "u1", 1000))
            .unwrap();
        assert!(store.delete_user("u1", 600).unwrap());
        assert_eq!(
            store.get_refresh(&h(1)).unwrap().unwrap().state,
            RefreshState::Revoked { at: 600 }
        );
        assert_eq!(
            store.rotate_refresh(&h(1), &h(2), 700).unwrap(),
            Rotation::Invalid
        );
    }

    #[test]
    fn revoked_jtis_filters_expired() {
        let (_dir, store) = temp_store();
        store.revoke_jti("old", 100).unwrap();
        store.revoke_jti("new", 300).unwrap();
        // A later, shorter revocation never shortens an existing one.
        store.revoke_jti("new", 200).unwrap();
        let mut live = store.revoked_jtis(150).unwrap();
        live.sort();
        assert_eq!(live, vec![("new".to_owned(), 300)]);
        assert!(store.revoked_jtis(300).unwrap().is_empty());
    }

    #[test]
    fn insert_refuses_a_duplicate_hash() {
        let (_dir, store) = temp_store();
        store
            .insert_refresh(&h(1), &record("f1", "u1", 1000))
            .unwrap();
        assert!(matches!(
            store.insert_refresh(&h(1), &record("f2", "u1", 1000)),
            Err(StoreError::Corrupt(_))
        ));
        store
            .insert_refresh(&h(2), &record("f1", "u1", 1000))
            .unwrap();
        assert!(matches!(
            store.rotate_refresh(&h(1), &h(2), 200),
            Err(StoreError::Corrupt(_))
        ));
        // The failed rotation wrote nothing.
        assert_eq!(
            store.get_refresh(&h(1)).unwrap().unwrap().state,
            RefreshState::Active
        );
    }

    #[test]
    fn sweep_removes_expired_rows() {
        let (_dir, store) = temp_store();
        store
            .insert_refresh(&h(1), &record("f1", "u1", 1000))
            .unwrap();
        store.rotate_refresh(&h(1), &h(2), 200).unwrap();
        store
            .insert_refresh(&h(5), &record("f2", "u1", 5000))
            .unwrap();
        store.revoke_family("f1", 300).unwrap();
        store.revoke_jti("j-old", 1000).unwrap();
        store.revoke_jti("j-new", 5000).unwrap();

        assert_eq!(store.sweep(999).unwrap(), SweepStats::default());
        let stats = store.sweep(1000).unwrap();
        assert_eq!(
            stats,
            SweepStats {
                refresh_tokens: 2,
                families: 1,
                revoked_families: 1,
                jtis: 1,
                changes: 0,
                ..SweepStats::default()
            }
        );
        assert_eq!(store.get_refresh(&h(1)).unwrap(), None);
        assert_eq!(store.get_refresh(&h(2)).unwrap(), None);
        assert!(store.get_refresh(&h(5)).unwrap().is_some());
        assert_eq!(
            store.revoked_jtis(0).unwrap(),
            vec![("j-new".to_owned(), 5000)]
        );
        assert!(store.revoked_families(0).unwrap().is_empty());
        // The indexes lost f1 but kept f2.
        let txn = store.read().unwrap();
        let by_family = txn.open_multimap_table(FAMILY_TOKENS).unwrap();
        assert_eq!(by_family.get("f1").unwrap().count(), 0);
        assert_eq!(by_family.get("f2").unwrap().count(), 1);
        let by_user = txn.open_multimap_table(USER_FAMILIES).unwrap();
        let families: Vec<String> = by_user
            .get("u1")
            .unwrap()
            .map(|v| v.unwrap().value().to_owned())
            .collect();
        assert_eq!(families, vec!["f2".to_owned()]);
    }
}
