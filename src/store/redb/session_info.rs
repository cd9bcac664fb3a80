//! The sessions a user can see in the redb backend: one [`SessionInfo`] per refresh family,
//! written when the family starts, touched by rotation (inside `rotate_refresh`'s
//! transaction) and marked ended by every revocation of the family (`revoke_family_in`), so
//! logout, "log out everywhere", reuse detection and user deletion all end it.
//!
//! Ending sessions goes through `revoke_family_in`, the path of [`RedbStore::revoke_family`]:
//! the family's tokens are revoked and a [`Change::Family`](super::super::model::Change) is
//! appended, which is how every server learns of it.

use redb::{ReadableMultimapTable, ReadableTable, WriteTransaction};

use super::super::model::{RefreshRecord, RefreshState, SessionInfo, StoreError, newest_first};
use super::tables::{
    Context, FAMILY_TOKENS, REFRESH, REVOKED_FAMILIES, SESSIONS, USER_FAMILIES, decode, encode,
};
use super::{RedbStore, commit, sessions};

impl RedbStore {
    /// Records the start of a session (its family). Refuses a family that already has one.
    pub fn start_session(&self, info: &SessionInfo) -> Result<(), StoreError> {
        let txn = self.write()?;
        if read(&txn, &info.family)?.is_some() {
            return Err(StoreError::Corrupt(
                "sessions: family already recorded".into(),
            ));
        }
        put_in(&txn, &info.bounded())?;
        commit(txn)
    }

    /// The live sessions of a user (not ended, not expired at `now`), newest first.
    pub fn sessions_of(&self, user_id: &str, now: u64) -> Result<Vec<SessionInfo>, StoreError> {
        let txn = self.read()?;
        let index = txn
            .open_multimap_table(USER_FAMILIES)
            .ctx("open table user_families")?;
        let table = txn.open_table(SESSIONS).ctx("open table sessions")?;
        let revoked = txn
            .open_table(REVOKED_FAMILIES)
            .ctx("open table revoked_families")?;
        let mut out = Vec::new();
        for family in index.get(user_id).ctx("read user_families")? {
            let family = family.ctx("read user_families")?;
            let Some(v) = table.get(family.value()).ctx("read sessions")? else {
                continue;
            };
            let info: SessionInfo = decode("sessions", v.value())?;
            // The revoked families are the truth: a revoked family is over whatever its
            // record says (as in the PostgreSQL backend, where it matters during upgrades).
            let over = revoked
                .get(family.value())
                .ctx("read revoked_families")?
                .is_some();
            if info.user_id == user_id && info.is_live(now) && !over {
                out.push(info);
            }
        }
        newest_first(&mut out);
        Ok(out)
    }

    /// Ends one live session of `user_id`; false (writing nothing) if the family is not a live
    /// session of that user.
    pub fn end_session(&self, user_id: &str, family: &str, now: u64) -> Result<bool, StoreError> {
        let txn = self.write()?;
        match read(&txn, family)? {
            Some(info) if info.user_id == user_id && info.is_live(now) => {}
            _ => return Ok(false),
        }
        sessions::revoke_family_in(&txn, family, now)?;
        mark_ended_in(&txn, family, now)?;
        commit(txn)?;
        Ok(true)
    }

    /// Ends every session of `user_id` but `keep`; returns how many live ones ended.
    pub fn end_other_sessions(
        &self,
        user_id: &str,
        keep: &str,
        now: u64,
    ) -> Result<usize, StoreError> {
        let txn = self.write()?;
        let families: Vec<String> = {
            let index = txn
                .open_multimap_table(USER_FAMILIES)
                .ctx("open table user_families")?;
            let values = index.get(user_id).ctx("read user_families")?;
            values
                .map(|v| v.map(|v| v.value().to_owned()))
                .collect::<Result<_, _>>()
                .ctx("read user_families")?
        };
        let mut ended = 0;
        for family in families.iter().filter(|f| f.as_str() != keep) {
            if read(&txn, family)?.is_some_and(|i| i.user_id == user_id && i.is_live(now)) {
                ended += 1;
            }
            sessions::revoke_family_in(&txn, family, now)?;
            mark_ended_in(&txn, family, now)?;
        }
        commit(txn)?;
        Ok(ended)
    }
}

fn read(txn: &WriteTransaction, family: &str) -> Result<Option<SessionInfo>, StoreError> {
    let table = txn.open_table(SESSIONS).ctx("open table sessions")?;
    let found = table.get(family).ctx("read sessions")?;
    found.map(|v| decode("sessions", v.value())).transpose()
}

/// Writes a session record and indexes its family under the user.
pub(super) fn put_in(txn: &WriteTransaction, info: &SessionInfo) -> Result<(), StoreError> {
    let bytes = encode("sessions", info)?;
    txn.open_table(SESSIONS)
        .ctx("open table sessions")?
        .insert(info.family.as_str(), bytes.as_slice())
        .ctx("insert into sessions")?;
    txn.open_multimap_table(USER_FAMILIES)
        .ctx("open table user_families")?
        .insert(info.user_id.as_str(), info.family.as_str())
        .ctx("insert into user_families")?;
    Ok(())
}

/// Sets `last_used_at` of the family's session, if it has one (rotation).
pub(super) fn touch_in(txn: &WriteTransaction, family: &str, now: u64) -> Result<(), StoreError> {
    if let Some(mut info) = read(txn, family)? {
        info.last_used_at = info.last_used_at.max(now);
        put_in(txn, &info)?;
    }
    Ok(())
}

/// Marks the family's session ended at `now`, unless it has no record or already ended.
pub(super) fn mark_ended_in(
    txn: &WriteTransaction,
    family: &str,
    now: u64,
) -> Result<(), StoreError> {
    if let Some(mut info) = read(txn, family)?
        && info.ended_at.is_none()
    {
        info.ended_at = Some(now);
        put_in(txn, &info)?;
    }
    Ok(())
}

/// The session part of [`RedbStore::sweep`]: deletes the records of ended or expired
/// sessions, and their `user_families` entry once no refresh token of the family is left
/// (the tokens of a revoked family stay until it expires, for reuse detection); returns how
/// many records.
pub(super) fn sweep_session_info(txn: &WriteTransaction, now: u64) -> Result<usize, StoreError> {
    let mut over: Vec<SessionInfo> = Vec::new();
    {
        let table = txn.open_table(SESSIONS).ctx("open table sessions")?;
        for entry in table.iter().ctx("read sessions")? {
            let (_, v) = entry.ctx("read sessions")?;
            let info: SessionInfo = decode("sessions", v.value())?;
            if !info.is_live(now) {
                over.push(info);
            }
        }
    }
    let mut table = txn.open_table(SESSIONS).ctx("open table sessions")?;
    let tokens = txn
        .open_multimap_table(FAMILY_TOKENS)
        .ctx("open table family_tokens")?;
    let mut index = txn
        .open_multimap_table(USER_FAMILIES)
        .ctx("open table user_families")?;
    for info in &over {
        table
            .remove(info.family.as_str())
            .ctx("remove from sessions")?;
        let has_tokens = tokens
            .get(info.family.as_str())
            .ctx("read family_tokens")?
            .next()
            .is_some();
        if !has_tokens {
            index
                .remove(info.user_id.as_str(), info.family.as_str())
                .ctx("remove from user_families")?;
        }
    }
    Ok(over.len())
}

/// Schema 1 -> 2: a session record for every family already stored, from its refresh tokens
/// (first issue, last rotation, expiry, revocation), without user agent or address.
pub(super) fn backfill(txn: &WriteTransaction) -> Result<usize, StoreError> {
    let mut by_family: std::collections::BTreeMap<String, SessionInfo> = Default::default();
    {
        let table = txn.open_table(REFRESH).ctx("open table refresh")?;
        for entry in table.iter().ctx("read refresh")? {
            let (_, v) = entry.ctx("read refresh")?;
            let rec: RefreshRecord = decode("refresh", v.value())?;
            let revoked = match rec.state {
                RefreshState::Revoked { at } => Some(at),
                _ => None,
            };
            let info = by_family
                .entry(rec.family.clone())
                .or_insert_with(|| SessionInfo {
                    family: rec.family.clone(),
                    user_id: rec.user_id.clone(),
                    created_at: rec.issued_at,
                    last_used_at: rec.issued_at,
                    expires_at: rec.family_expires_at,
                    user_agent: None,
                    ip: None,
                    ended_at: None,
                });
            info.created_at = info.created_at.min(rec.issued_at);
            info.last_used_at = info.last_used_at.max(rec.issued_at);
            info.expires_at = info.expires_at.max(rec.family_expires_at);
            info.ended_at = info.ended_at.max(revoked);
        }
    }
    for info in by_family.values() {
        put_in(txn, info)?;
    }
    Ok(by_family.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::test_util::temp_store;
    use super::*;

    fn info(family: &str) -> SessionInfo {
        SessionInfo {
            family: family.into(),
            user_id: "u1".into(),
            created_at: 100,
            last_used_at: 100,
            expires_at: 1000,
            user_agent: None,
            ip: None,
            ended_at: None,
        }
    }

    fn indexed(store: &RedbStore) -> Vec<String> {
        let txn = store.read().unwrap();
        let index = txn.open_multimap_table(USER_FAMILIES).unwrap();
        index
            .get("u1")
            .unwrap()
            .map(|v| v.unwrap().value().to_owned())
            .collect()
    }

    #[test]
    fn sweep_drops_the_index_entry_once_no_token_needs_it() {
        let (_dir, store) = temp_store();
        store.start_session(&info("bare")).unwrap();
        let mut with_tokens = info("tokens");
        with_tokens.created_at = 50;
        store.start_session(&with_tokens).unwrap();
        let rec = RefreshRecord {
            family: "tokens".into(),
            user_id: "u1".into(),
            issued_at: 50,
            family_expires_at: 1000,
            state: RefreshState::Active,
            amr: Vec::new(),
            provider: None,
        };
        store.insert_refresh(&[1; 32], &rec).unwrap();
        assert!(store.end_session("u1", "bare", 200).unwrap());
        assert!(store.end_session("u1", "tokens", 200).unwrap());
        assert_eq!(store.sweep(200).unwrap().sessions, 2);
        // The revoked family's tokens stay until it expires (reuse detection), and so does
        // its index entry, which revoking a user's families walks.
        assert_eq!(indexed(&store), vec!["tokens".to_owned()]);
        assert_eq!(store.sweep(1000).unwrap().families, 1);
        assert!(indexed(&store).is_empty());
    }
}
