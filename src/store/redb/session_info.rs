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
use super::tables::{Context, REFRESH, SESSIONS, USER_FAMILIES, decode, encode};
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
        let mut out = Vec::new();
        for family in index.get(user_id).ctx("read user_families")? {
            let family = family.ctx("read user_families")?;
            let Some(v) = table.get(family.value()).ctx("read sessions")? else {
                continue;
            };
            let info: SessionInfo = decode("sessions", v.value())?;
            if info.user_id == user_id && info.is_live(now) {
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
/// sessions; returns how many.
pub(super) fn sweep_session_info(txn: &WriteTransaction, now: u64) -> Result<usize, StoreError> {
    let mut table = txn.open_table(SESSIONS).ctx("open table sessions")?;
    let mut removed = 0;
    let mut failed = None;
    table
        .retain(|_, v| {
            let keep = match decode::<SessionInfo>("sessions", v) {
                Ok(info) => info.is_live(now),
                Err(e) => {
                    failed.get_or_insert(e);
                    true
                }
            };
            removed += usize::from(!keep);
            keep
        })
        .ctx("sweep sessions")?;
    match failed {
        Some(e) => Err(e),
        None => Ok(removed),
    }
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
