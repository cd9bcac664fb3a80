//! One-time tokens (email verification, password reset) in the redb backend: stored by the
//! SHA-256 of the token, indexed by user so a login or a new reset can void a user's tokens.
//!
//! Consuming is a read-and-delete inside one write transaction; write transactions are
//! serialised across processes, so of two concurrent consumers exactly one gets the token.

use redb::{ReadableMultimapTable, ReadableTable, WriteTransaction};

use super::super::model::{OneTimeToken, StoreError, TokenHash, TokenKind};
use super::tables::{Context, ONE_TIME, USER_ONE_TIME, decode, encode};
use super::{RedbStore, commit};

impl RedbStore {
    /// Stores a one-time token. Refuses a hash that is already present.
    pub fn insert_one_time(&self, hash: &TokenHash, rec: &OneTimeToken) -> Result<(), StoreError> {
        let txn = self.write()?;
        insert_one_time_in(&txn, hash, rec)?;
        commit(txn)
    }

    /// Removes and returns the token if it is of `kind` and unexpired at `now`. An expired
    /// token is removed too; a token of another kind is left alone.
    pub fn consume_one_time(
        &self,
        hash: &TokenHash,
        kind: TokenKind,
        now: u64,
    ) -> Result<Option<OneTimeToken>, StoreError> {
        let txn = self.write()?;
        let Some(rec) = read(&txn, hash)? else {
            return Ok(None);
        };
        let live = now < rec.expires_at;
        if rec.kind != kind && live {
            return Ok(None);
        }
        remove(&txn, hash, &rec.user_id)?;
        commit(txn)?;
        Ok((rec.kind == kind && live).then_some(rec))
    }

    /// The token if it is of `kind` and unexpired at `now`, without consuming it.
    pub fn peek_one_time(
        &self,
        hash: &TokenHash,
        kind: TokenKind,
        now: u64,
    ) -> Result<Option<OneTimeToken>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(ONE_TIME).ctx("open table one_time")?;
        let found = table.get(hash).ctx("read one_time")?;
        let rec: Option<OneTimeToken> = found.map(|v| decode("one_time", v.value())).transpose()?;
        Ok(rec.filter(|r| r.kind == kind && now < r.expires_at))
    }

    /// Deletes every token of `kind` of a user; returns how many.
    pub fn delete_one_time_for(&self, user_id: &str, kind: TokenKind) -> Result<usize, StoreError> {
        // Every login asks this; almost always there is nothing to delete, and a read costs no
        // commit (no fsync, no wait for the single writer).
        {
            let txn = self.read()?;
            let index = txn
                .open_multimap_table(USER_ONE_TIME)
                .ctx("open table user_one_time")?;
            if index
                .get(user_id)
                .ctx("read user_one_time")?
                .next()
                .is_none()
            {
                return Ok(0);
            }
        }
        let txn = self.write()?;
        let count = delete_for_in(&txn, user_id, Some(kind))?;
        commit(txn)?;
        Ok(count)
    }
}

pub(super) fn insert_one_time_in(
    txn: &WriteTransaction,
    hash: &TokenHash,
    rec: &OneTimeToken,
) -> Result<(), StoreError> {
    {
        let mut table = txn.open_table(ONE_TIME).ctx("open table one_time")?;
        if table.get(hash).ctx("read one_time")?.is_some() {
            // 256 random bits never collide; this is a caller bug, not bad luck.
            return Err(StoreError::Corrupt(
                "one_time: token hash already present".into(),
            ));
        }
        let bytes = encode("one_time", rec)?;
        table
            .insert(hash, bytes.as_slice())
            .ctx("insert into one_time")?;
    }
    txn.open_multimap_table(USER_ONE_TIME)
        .ctx("open table user_one_time")?
        .insert(rec.user_id.as_str(), hash)
        .ctx("insert into user_one_time")?;
    Ok(())
}

fn read(txn: &WriteTransaction, hash: &TokenHash) -> Result<Option<OneTimeToken>, StoreError> {
    let table = txn.open_table(ONE_TIME).ctx("open table one_time")?;
    let found = table.get(hash).ctx("read one_time")?;
    found.map(|v| decode("one_time", v.value())).transpose()
}

fn remove(txn: &WriteTransaction, hash: &TokenHash, user_id: &str) -> Result<(), StoreError> {
    txn.open_table(ONE_TIME)
        .ctx("open table one_time")?
        .remove(hash)
        .ctx("remove from one_time")?;
    txn.open_multimap_table(USER_ONE_TIME)
        .ctx("open table user_one_time")?
        .remove(user_id, hash)
        .ctx("remove from user_one_time")?;
    Ok(())
}

/// Deletes a user's tokens of `kind` (of every kind for `None`) inside `txn`; returns how many.
pub(super) fn delete_for_in(
    txn: &WriteTransaction,
    user_id: &str,
    kind: Option<TokenKind>,
) -> Result<usize, StoreError> {
    let hashes: Vec<TokenHash> = {
        let index = txn
            .open_multimap_table(USER_ONE_TIME)
            .ctx("open table user_one_time")?;
        let values = index.get(user_id).ctx("read user_one_time")?;
        values
            .map(|v| v.map(|v| *v.value()))
            .collect::<Result<_, _>>()
            .ctx("read user_one_time")?
    };
    let mut count = 0;
    for hash in hashes {
        match read(txn, &hash)? {
            Some(rec) if kind.is_some_and(|k| k != rec.kind) => continue,
            Some(_) => count += 1,
            None => {} // a stale index entry: drop it
        }
        remove(txn, &hash, user_id)?;
    }
    Ok(count)
}

/// The one-time part of [`RedbStore::sweep`]: deletes expired tokens; returns how many.
pub(super) fn sweep_one_time(txn: &WriteTransaction, now: u64) -> Result<usize, StoreError> {
    let mut expired: Vec<(TokenHash, String)> = Vec::new();
    {
        let table = txn.open_table(ONE_TIME).ctx("open table one_time")?;
        for entry in table.iter().ctx("read one_time")? {
            let (k, v) = entry.ctx("read one_time")?;
            let rec: OneTimeToken = decode("one_time", v.value())?;
            if rec.expires_at <= now {
                expired.push((*k.value(), rec.user_id));
            }
        }
    }
    for (hash, user_id) in &expired {
        remove(txn, hash, user_id)?;
    }
    Ok(expired.len())
}
