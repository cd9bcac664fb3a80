//! The embedded redb backend: users, refresh tokens, revocations, signing keys and the change
//! feed in one file.
//!
//! The server and the admin CLI open the same file at the same time, so the database runs in
//! redb's `ConcurrencyMode::MultiWriter`: any number of processes (or handles in one process)
//! may write, one write transaction at a time. Every mutation that affects the hot path appends
//! a [`Change`] in the same write transaction, so a change is visible exactly when its data is.
//!
//! All methods are synchronous and may block on the file lock. The table layout is documented in
//! `tables.rs`.

mod factors;
mod identities;
mod one_time;
mod session_info;
mod sessions;
mod tables;
mod users;

use std::path::Path;
use std::sync::Arc;

use redb::{
    Builder, ConcurrencyMode, Database, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, WriteTransaction,
};

#[cfg(test)]
use super::model::User;
use super::model::{CHANGE_RETENTION, Change, Snapshot, StoreError, SweepStats};

use crate::private_file;
use tables::{CHANGES, Context, META, decode};

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u32 = 4;

/// Meta key holding the schema version (JSON number).
const SCHEMA_KEY: &str = "schema_version";

/// A handle on the database file. Cheap to clone; all clones share one redb handle.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (or creates, with its parent directories) the database at `path`,
    /// creates missing tables and migrates older schemas. Refuses a file written by
    /// a newer schema with [`StoreError::SchemaTooNew`].
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let shown = path.display();
        // The file holds the signing keys: only the gateway's user may read it (see
        // `private_file`). A new file and the directories made for it are private whatever the
        // umask; an existing file that others can read is refused.
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            private_file::create_dir_all(parent).map_err(|e| {
                StoreError::Io(format!("create directory {}: {e}", parent.display()))
            })?;
        }
        match private_file::create_new(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                private_file::check(path, "store file", private_file::Rule::OwnerOnly)
                    .map_err(|e| StoreError::Permissions(e.to_string()))?;
            }
            Err(e) => return Err(StoreError::Io(format!("create {shown}: {e}"))),
        }
        let db = Builder::new()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .create(path)
            .ctx(&format!("open database {shown}"))?;
        let store = RedbStore { db: Arc::new(db) };
        store.init_schema()?;
        tracing::debug!(path = %shown, "store opened");
        Ok(store)
    }

    /// Checks the schema version and brings the file up to [`SCHEMA_VERSION`], all
    /// in one write transaction so two processes starting together agree.
    fn init_schema(&self) -> Result<(), StoreError> {
        let txn = self.write()?;
        let found = {
            let meta = txn.open_table(META).ctx("open table meta")?;
            let stored = meta.get(SCHEMA_KEY).ctx("read schema version")?;
            match stored {
                Some(bytes) => Some(decode::<u32>("meta", bytes.value())?),
                None => None,
            }
        };
        match found {
            Some(found) if found > SCHEMA_VERSION => {
                // Dropping the transaction aborts it: nothing is written to a newer file.
                return Err(StoreError::SchemaTooNew {
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            Some(found) if found == SCHEMA_VERSION => {}
            Some(found) => migrate(&txn, found)?,
            None => {}
        }
        tables::create_all(&txn)?;
        if found != Some(SCHEMA_VERSION) {
            let bytes = tables::encode("meta", &SCHEMA_VERSION)?;
            txn.open_table(META)
                .ctx("open table meta")?
                .insert(SCHEMA_KEY, bytes.as_slice())
                .ctx("write schema version")?;
        }
        commit(txn)
    }

    fn read(&self) -> Result<ReadTransaction, StoreError> {
        self.db.begin_read().ctx("begin read transaction")
    }

    fn write(&self) -> Result<WriteTransaction, StoreError> {
        self.db.begin_write().ctx("begin write transaction")
    }

    /// Sequence number of the newest change, 0 if none. At start-up, call this
    /// *before* loading flags and revocations, then poll from it: a change that
    /// lands in between is applied twice, which is harmless.
    pub fn last_change(&self) -> Result<u64, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(CHANGES).ctx("open table changes")?;
        let last = table.last().ctx("read last change")?;
        Ok(last.map(|(k, _)| k.value()).unwrap_or(0))
    }

    /// Up to `limit` changes with a sequence number greater than `seq`, oldest first.
    pub fn changes_since(&self, seq: u64, limit: usize) -> Result<Vec<(u64, Change)>, StoreError> {
        use std::ops::Bound;
        let txn = self.read()?;
        let table = txn.open_table(CHANGES).ctx("open table changes")?;
        let range = table
            .range::<u64>((Bound::Excluded(seq), Bound::Unbounded))
            .ctx("read changes")?;
        let mut out = Vec::new();
        for entry in range.take(limit) {
            let (k, v) = entry.ctx("read changes")?;
            out.push((k.value(), decode("changes", v.value())?));
        }
        Ok(out)
    }

    /// A meta value (signing keys and the like).
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(META).ctx("open table meta")?;
        let value = table.get(key).ctx("read meta")?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// Sets a meta value. `schema_version` is managed by [`RedbStore::open`]; do not write it.
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let txn = self.write()?;
        txn.open_table(META)
            .ctx("open table meta")?
            .insert(key, value)
            .ctx("write meta")?;
        commit(txn)
    }

    /// Read-modify-write of a meta value in one write transaction, announced on the change
    /// feed as [`Change::Keys`] if `announce`, so running servers pick up rotated signing keys
    /// and two concurrent rotations cannot lose one another's key. `change` gets the current
    /// value and returns the new one (or an error, which aborts the transaction).
    pub fn update_meta<E: From<StoreError>>(
        &self,
        key: &str,
        announce: bool,
        change: impl FnOnce(Option<&[u8]>) -> Result<Vec<u8>, E>,
    ) -> Result<Vec<u8>, E> {
        let txn = self.write()?;
        let new = {
            let mut table = txn.open_table(META).ctx("open table meta")?;
            let current = table.get(key).ctx("read meta")?.map(|v| v.value().to_vec());
            let new = change(current.as_deref())?;
            table.insert(key, new.as_slice()).ctx("write meta")?;
            new
        };
        if announce {
            tables::append_change(&txn, &Change::Keys)?;
        }
        commit(txn)?;
        Ok(new)
    }

    /// Stores `value` unless `key` already has one, atomically, and returns what is
    /// stored now: two processes generating a first signing key both end up with
    /// the same key.
    pub fn put_meta_if_absent(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        let txn = self.write()?;
        {
            let mut table = txn.open_table(META).ctx("open table meta")?;
            if let Some(existing) = table.get(key).ctx("read meta")? {
                return Ok(existing.value().to_vec());
            }
            table.insert(key, value).ctx("write meta")?;
        }
        commit(txn)?;
        Ok(value.to_vec())
    }

    /// Housekeeping, safe to run from any process at any time: deletes refresh
    /// records (and their index entries) whose family expired, revoked jtis and
    /// families past their expiry, and change feed entries beyond the newest
    /// [`CHANGE_RETENTION`]. Deleted users' flag rows are kept (they are tiny and
    /// keep any still-valid access token dead).
    pub fn sweep(&self, now: u64) -> Result<SweepStats, StoreError> {
        self.sweep_keeping(now, CHANGE_RETENTION)
    }

    fn sweep_keeping(&self, now: u64, retention: u64) -> Result<SweepStats, StoreError> {
        let txn = self.write()?;
        let mut stats = sessions::sweep_sessions(&txn, now)?;
        stats.one_time_tokens = one_time::sweep_one_time(&txn, now)?;
        stats.sessions = session_info::sweep_session_info(&txn, now)?;
        {
            let mut table = txn.open_table(CHANGES).ctx("open table changes")?;
            let last = table
                .last()
                .ctx("read last change")?
                .map(|(k, _)| k.value())
                .unwrap_or(0);
            if table.len().ctx("count changes")? > retention {
                let cutoff = last.saturating_sub(retention);
                let before = table.len().ctx("count changes")?;
                table
                    .retain_in::<u64, _>(..=cutoff, |_, _| false)
                    .ctx("delete old changes")?;
                let after = table.len().ctx("count changes")?;
                stats.changes = usize::try_from(before - after).unwrap_or(usize::MAX);
            }
        }
        commit(txn)?;
        if stats != SweepStats::default() {
            tracing::debug!(?stats, "store sweep");
        }
        Ok(stats)
    }

    /// Everything `gateway migrate` copies: see [`Snapshot`]. One read transaction, so the
    /// copy is consistent.
    pub fn export(&self, now: u64) -> Result<Snapshot, StoreError> {
        let txn = self.read()?;
        let mut snap = Snapshot::default();
        let users = txn.open_table(tables::USERS).ctx("open table users")?;
        for entry in users.iter().ctx("read users")? {
            let (_, v) = entry.ctx("read users")?;
            snap.users.push(decode("users", v.value())?);
        }
        let flags = txn
            .open_table(tables::USER_FLAGS)
            .ctx("open table user_flags")?;
        for entry in flags.iter().ctx("read user_flags")? {
            let (k, v) = entry.ctx("read user_flags")?;
            snap.flags
                .push((k.value().to_owned(), decode("user_flags", v.value())?));
        }
        let refresh = txn.open_table(tables::REFRESH).ctx("open table refresh")?;
        for entry in refresh.iter().ctx("read refresh")? {
            let (k, v) = entry.ctx("read refresh")?;
            let rec: super::model::RefreshRecord = decode("refresh", v.value())?;
            if rec.family_expires_at > now {
                snap.refresh.push((*k.value(), rec));
            }
        }
        let jtis = txn
            .open_table(tables::REVOKED_JTIS)
            .ctx("open table revoked_jtis")?;
        snap.revoked_jtis = sessions::unexpired(&jtis, now, "read revoked_jtis")?;
        let families = txn
            .open_table(tables::REVOKED_FAMILIES)
            .ctx("open table revoked_families")?;
        snap.revoked_families = sessions::unexpired(&families, now, "read revoked_families")?;
        let one_time = txn
            .open_table(tables::ONE_TIME)
            .ctx("open table one_time")?;
        for entry in one_time.iter().ctx("read one_time")? {
            let (k, v) = entry.ctx("read one_time")?;
            let rec: super::model::OneTimeToken = decode("one_time", v.value())?;
            if rec.expires_at > now {
                snap.one_time.push((*k.value(), rec));
            }
        }
        let sessions = txn
            .open_table(tables::SESSIONS)
            .ctx("open table sessions")?;
        for entry in sessions.iter().ctx("read sessions")? {
            let (_, v) = entry.ctx("read sessions")?;
            let info: super::model::SessionInfo = decode("sessions", v.value())?;
            if info.expires_at > now {
                snap.sessions.push(info);
            }
        }
        let meta = txn.open_table(META).ctx("open table meta")?;
        for entry in meta.iter().ctx("read meta")? {
            let (k, v) = entry.ctx("read meta")?;
            if k.value() != SCHEMA_KEY {
                snap.meta.push((k.value().to_owned(), v.value().to_vec()));
            }
        }
        snap.factors = factors::all_in(&txn)?;
        snap.identities = identities::all_in(&txn)?;
        Ok(snap)
    }

    /// Writes a [`Snapshot`] into this store in one transaction. Refuses with
    /// [`StoreError::NotEmpty`] if the store already has users or keys: a migration never
    /// merges, and never swaps the keys of a gateway running on the target.
    pub fn import(&self, snap: &Snapshot) -> Result<(), StoreError> {
        let txn = self.write()?;
        {
            let mut users = txn.open_table(tables::USERS).ctx("open table users")?;
            // Keys mean a gateway has started on this store and signs with them: replacing
            // them under it would split it from the migrated sessions.
            let meta = txn.open_table(META).ctx("open table meta")?;
            let mut keys = meta.iter().ctx("read meta")?;
            let has_keys = keys.any(|e| e.is_ok_and(|(k, _)| k.value() != SCHEMA_KEY));
            if users.len().ctx("count users")? > 0 || has_keys {
                return Err(StoreError::NotEmpty);
            }
            let mut emails = txn
                .open_table(tables::USER_EMAIL)
                .ctx("open table user_email")?;
            for user in &snap.users {
                let bytes = tables::encode("users", user)?;
                users
                    .insert(user.id.as_str(), bytes.as_slice())
                    .ctx("insert into users")?;
                if emails
                    .insert(user.email.as_str(), user.id.as_str())
                    .ctx("insert into user_email")?
                    .is_some()
                {
                    return Err(StoreError::EmailTaken);
                }
            }
        }
        for (id, flags) in &snap.flags {
            tables::set_flags(&txn, id, *flags)?;
        }
        for (hash, rec) in &snap.refresh {
            sessions::insert_refresh_in(&txn, hash, rec)?;
        }
        for (hash, rec) in &snap.one_time {
            one_time::insert_one_time_in(&txn, hash, rec)?;
        }
        for info in &snap.sessions {
            session_info::put_in(&txn, &info.bounded())?;
        }
        for (user_id, value) in &snap.factors {
            factors::insert_in(&txn, user_id, value)?;
        }
        for identity in &snap.identities {
            identities::insert_in(&txn, identity)?;
        }
        {
            let mut jtis = txn
                .open_table(tables::REVOKED_JTIS)
                .ctx("open table revoked_jtis")?;
            for (jti, exp) in &snap.revoked_jtis {
                jtis.insert(jti.as_str(), *exp)
                    .ctx("insert into revoked_jtis")?;
            }
            let mut families = txn
                .open_table(tables::REVOKED_FAMILIES)
                .ctx("open table revoked_families")?;
            for (family, exp) in &snap.revoked_families {
                families
                    .insert(family.as_str(), *exp)
                    .ctx("insert into revoked_families")?;
            }
            let mut meta = txn.open_table(META).ctx("open table meta")?;
            for (key, value) in &snap.meta {
                if key != SCHEMA_KEY {
                    meta.insert(key.as_str(), value.as_slice())
                        .ctx("write meta")?;
                }
            }
        }
        // Running servers on this file re-read keys and revocations.
        tables::append_change(&txn, &Change::Keys)?;
        commit(txn)
    }
}

/// Upgrades a file from schema `from` to [`SCHEMA_VERSION`], one step at a time,
/// inside the opening write transaction.
///
/// - 1 -> 2: users gain `email_verified`, read as false from older records (a serde default,
///   so they are not rewritten); the one-time token tables start empty; every stored refresh
///   family gets a session record, so sessions started before the upgrade are listed.
/// - 2 -> 3: the `factors` table, created empty. The version still changes: a gateway of
///   version 2 must refuse the file, or it would sign in users without their second factor.
/// - 3 -> 4: the `identities` and `user_identities` tables, created empty. A gateway of version
///   3 must refuse the file: deleting a user, it would leave their linked identities behind.
fn migrate(txn: &WriteTransaction, from: u32) -> Result<(), StoreError> {
    tracing::info!(from, to = SCHEMA_VERSION, "migrating store schema");
    if from < 2 {
        let sessions = session_info::backfill(txn)?;
        tracing::info!(
            sessions,
            "session records made for existing refresh families"
        );
    }
    Ok(())
}

fn commit(txn: WriteTransaction) -> Result<(), StoreError> {
    txn.commit().ctx("commit")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod test_util {
    use super::{RedbStore, User};

    /// A store on a fresh temporary file; keep the directory alive while using it.
    pub fn temp_store() -> (tempfile::TempDir, RedbStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("gateway.redb")).unwrap();
        (dir, store)
    }

    pub fn user(id: &str, email: &str) -> User {
        User {
            id: id.into(),
            email: email.into(),
            name: Some("Ada".into()),
            password_hash: "$argon2id$secret".into(),
            roles: vec!["admin".into()],
            disabled: false,
            created_at: 10,
            updated_at: 10,
            session_version: 0,
            email_verified: false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::test_util::temp_store;
    use super::*;

    #[test]
    fn open_creates_parent_directories_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/gateway.redb");
        let store = RedbStore::open(&path).unwrap();
        store.put_meta("k", b"v").unwrap();
        drop(store);
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.get_meta("k").unwrap(), Some(b"v".to_vec()));
        assert_eq!(
            store.get_meta(SCHEMA_KEY).unwrap(),
            Some(b"4".to_vec()),
            "schema version recorded"
        );
    }

    #[test]
    fn schema_too_new_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.redb");
        let store = RedbStore::open(&path).unwrap();
        store.put_meta(SCHEMA_KEY, b"5").unwrap();
        drop(store);
        match RedbStore::open(&path) {
            Err(StoreError::SchemaTooNew { found, supported }) => {
                assert_eq!((found, supported), (5, 4));
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }

    /// A file as schema 1 left it: only its tables, its JSON (no `email_verified`), version 1.
    fn write_schema_1_file(path: &Path) {
        use tables::{FAMILY_TOKENS, REFRESH, USER_EMAIL, USER_FAMILIES, USERS};
        let db = Builder::new()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .create(path)
            .unwrap();
        let txn = db.begin_write().unwrap();
        {
            txn.open_table(META)
                .unwrap()
                .insert(SCHEMA_KEY, b"1".as_slice())
                .unwrap();
            let v1_user = br#"{"id":"u1","email":"ada@x.test","name":"Ada","password_hash":"$argon2id$x","roles":["admin"],"disabled":false,"created_at":10,"updated_at":10,"session_version":0}"#;
            txn.open_table(USERS)
                .unwrap()
                .insert("u1", v1_user.as_slice())
                .unwrap();
            txn.open_table(USER_EMAIL)
                .unwrap()
                .insert("ada@x.test", "u1")
                .unwrap();
            let mut refresh = txn.open_table(REFRESH).unwrap();
            let mut by_family = txn.open_multimap_table(FAMILY_TOKENS).unwrap();
            let mut by_user = txn.open_multimap_table(USER_FAMILIES).unwrap();
            for (n, family, issued, state) in [
                (1u8, "f1", 100, r#"{"Rotated":{"at":200}}"#),
                (2, "f1", 200, r#""Active""#),
                (3, "f2", 150, r#"{"Revoked":{"at":250}}"#),
            ] {
                let rec = format!(
                    r#"{{"family":"{family}","user_id":"u1","issued_at":{issued},"family_expires_at":10000,"state":{state}}}"#
                );
                refresh.insert(&[n; 32], rec.as_bytes()).unwrap();
                by_family.insert(family, &[n; 32]).unwrap();
                by_user.insert("u1", family).unwrap();
            }
            txn.open_table(tables::CHANGES).unwrap();
            txn.open_table(tables::REVOKED_FAMILIES)
                .unwrap()
                .insert("f2", 10_000)
                .unwrap();
            txn.open_table(tables::REVOKED_JTIS).unwrap();
            txn.open_table(tables::USER_FLAGS).unwrap();
        }
        txn.commit().unwrap();
    }

    #[test]
    fn a_file_of_schema_1_is_migrated_and_keeps_working() {
        use super::super::model::{OneTimeToken, TokenKind};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.redb");
        write_schema_1_file(&path);
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.get_meta(SCHEMA_KEY).unwrap(), Some(b"4".to_vec()));
        let ada = store.user_by_email("ada@x.test").unwrap().unwrap();
        assert!(!ada.email_verified);
        let listed = store.sessions_of("u1", 300).unwrap();
        assert_eq!(listed.len(), 1, "the revoked family f2 is not listed");
        let f1 = &listed[0];
        assert_eq!(
            (
                f1.family.as_str(),
                f1.created_at,
                f1.last_used_at,
                f1.expires_at
            ),
            ("f1", 100, 200, 10_000)
        );
        assert_eq!((f1.user_agent.as_deref(), f1.ended_at), (None, None));
        // It keeps working: the user edits, tokens, sessions; reopening migrates nothing.
        store
            .modify_user("u1", |u| {
                u.email_verified = true;
                Ok(())
            })
            .unwrap();
        let token = OneTimeToken {
            kind: TokenKind::VerifyEmail,
            user_id: "u1".into(),
            email: "ada@x.test".into(),
            created_at: 300,
            expires_at: 1000,
        };
        store.insert_one_time(&[9; 32], &token).unwrap();
        assert!(store.end_session("u1", "f1", 300).unwrap());
        drop(store);
        let store = RedbStore::open(&path).unwrap();
        assert!(store.user_by_id("u1").unwrap().unwrap().email_verified);
        assert_eq!(
            store
                .consume_one_time(&[9; 32], TokenKind::VerifyEmail, 300)
                .unwrap(),
            Some(token)
        );
        assert!(store.sessions_of("u1", 300).unwrap().is_empty());
    }

    #[test]
    fn corrupt_schema_version_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.redb");
        let store = RedbStore::open(&path).unwrap();
        store.put_meta(SCHEMA_KEY, b"not json").unwrap();
        drop(store);
        match RedbStore::open(&path) {
            Err(StoreError::Corrupt(msg)) => assert!(msg.contains("meta"), "{msg}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn put_meta_if_absent_keeps_the_first_value() {
        let (_dir, store) = temp_store();
        assert_eq!(store.put_meta_if_absent("key", b"first").unwrap(), b"first");
        assert_eq!(
            store.put_meta_if_absent("key", b"second").unwrap(),
            b"first"
        );
        assert_eq!(store.get_meta("key").unwrap(), Some(b"first".to_vec()));
        store.put_meta("key", b"third").unwrap();
        assert_eq!(store.get_meta("key").unwrap(), Some(b"third".to_vec()));
    }

    #[test]
    fn change_feed_is_ordered_and_limited() {
        let (_dir, store) = temp_store();
        assert_eq!(store.last_change().unwrap(), 0);
        for i in 0..5 {
            store.revoke_jti(&format!("j{i}"), 100).unwrap();
        }
        assert_eq!(store.last_change().unwrap(), 5);
        let page = store.changes_since(1, 2).unwrap();
        assert_eq!(
            page,
            vec![
                (
                    2,
                    Change::Jti {
                        jti: "j1".into(),
                        exp: 100
                    }
                ),
                (
                    3,
                    Change::Jti {
                        jti: "j2".into(),
                        exp: 100
                    }
                ),
            ]
        );
        assert!(store.changes_since(5, 10).unwrap().is_empty());
        assert!(store.changes_since(u64::MAX, 10).unwrap().is_empty());
    }

    #[test]
    fn sweep_keeps_the_newest_changes() {
        let (_dir, store) = temp_store();
        for i in 0..5 {
            store.revoke_jti(&format!("j{i}"), 100).unwrap();
        }
        assert_eq!(store.sweep_keeping(0, 10).unwrap().changes, 0);
        assert_eq!(store.sweep_keeping(0, 2).unwrap().changes, 3);
        let kept: Vec<u64> = store
            .changes_since(0, 10)
            .unwrap()
            .into_iter()
            .map(|(seq, _)| seq)
            .collect();
        assert_eq!(kept, vec![4, 5]);
        // Numbering continues after the sweep.
        store.revoke_jti("j5", 100).unwrap();
        assert_eq!(store.last_change().unwrap(), 6);
    }

    #[test]
    fn store_is_clone_send_sync() {
        fn check<T: Clone + Send + Sync + 'static>() {}
        check::<RedbStore>();
    }
}
