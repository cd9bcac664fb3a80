//! Where users, refresh tokens, revocations, signing keys and the change feed live.
//!
//! [`Store`] is the one interface the rest of the gateway uses; config picks its backend:
//!
//! - [`redb`](self::redb): an embedded file, the default and the right choice for one machine.
//!   The server and the admin CLI open the same file at once.
//! - [`postgres`](self::postgres): a shared PostgreSQL database, for several replicas behind a
//!   load balancer. Failed-login regulation is shared through it too ([`Store::is_shared`]).
//!
//! Both keep the same contract:
//!
//! - Every mutation that affects the hot path (user flags, revoked jtis and families, signing
//!   keys) appends a [`Change`] in the same transaction, numbered in commit order, so a reader
//!   that remembers the last sequence number it applied never misses one. Servers keep the hot
//!   path in memory and poll [`Store::changes_since`]; PostgreSQL also wakes them at once
//!   ([`Store::change_hint`]).
//! - Read-modify-write operations (refresh rotation, user edits, key rotation) are atomic across
//!   processes and replicas: exactly one of two concurrent rotations of a refresh token wins.
//! - Methods are synchronous and may block (file lock, network round trip, bounded by the
//!   configured timeouts); async callers run them on the blocking pool. Time is passed in
//!   (`now`, unix seconds) so expiry is testable without a clock.
//! - One-time tokens (email verification, password reset) are single use: of two concurrent
//!   [`Store::consume_one_time`] calls exactly one gets the token.
//! - Each refresh family has a [`SessionInfo`] the user can see. Rotation touches it in the
//!   rotation's transaction; every revocation of the family marks it ended in the
//!   revocation's transaction, so whatever ends a family (logout, reuse, "log out
//!   everywhere", deletion, [`Store::end_session`]) ends the session, and ending a session is
//!   announced like any revoked family.
//! - Per-user secrets (second factors, linked identities' provider tokens) are sealed by this
//!   layer with `store.encryption_key` when one is configured; backends keep opaque bytes and
//!   delete them with their user in the deletion's transaction.

mod identities;
mod model;
pub mod postgres;
pub mod redb;
pub mod seal;

use std::path::Path;
use std::sync::Arc;

pub use model::{
    CHANGE_RETENTION, Change, Factors, JtiRange, LinkedIdentity, OneTimeToken, PasskeyRecord,
    RawWrite, RefreshRecord, RefreshState, Regulation, Rotation, SessionInfo, Snapshot, StoreError,
    StoredIdentity, SweepStats, TokenHash, TokenKind, TotpFactor, USER_AGENT_MAX_CHARS, User,
    UserFlags,
};

use crate::config::StoreSettings;
use crate::secret::Secret;
pub use seal::SealKey;

/// A handle on the configured store. Cheap to clone; clones share connections.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
    /// Encrypts the secrets kept in the meta table (`store.encryption_key`); see [`seal`].
    seal: Option<SealKey>,
}

#[derive(Clone, Debug)]
enum Backend {
    Redb(redb::RedbStore),
    Postgres(postgres::PgStore),
}

/// Forwards a method to whichever backend this is.
macro_rules! delegate {
    ($( $(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )*) => {
        $(
            $(#[$doc])*
            pub fn $name(&self $(, $arg: $ty)*) -> $ret {
                match &self.backend {
                    Backend::Redb(s) => s.$name($($arg),*),
                    Backend::Postgres(s) => s.$name($($arg),*),
                }
            }
        )*
    };
}

impl Store {
    /// Opens (or creates) a redb file: the default store, and what tests and the admin CLI use
    /// for a path.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        redb::RedbStore::open(path).map(Store::redb)
    }

    /// Opens the store the configuration names: creates or migrates its schema, and for
    /// PostgreSQL starts listening for other replicas' changes.
    pub fn connect(settings: &StoreSettings) -> Result<Store, StoreError> {
        match settings {
            StoreSettings::Redb { path } => Store::open(path),
            StoreSettings::Postgres(pg) => postgres::PgStore::connect(pg).map(Store::postgres),
        }
    }

    /// Opens a store named on the command line: a `postgres://` URL (with default pool
    /// settings) or a redb file path.
    pub fn open_location(location: &str) -> Result<Store, StoreError> {
        if crate::config::is_postgres_url(location) {
            let settings = crate::config::PostgresSettings::with_url(location.to_owned());
            postgres::PgStore::connect(&settings).map(Store::postgres)
        } else {
            Store::open(Path::new(location))
        }
    }

    /// Whether several servers share this store at once (PostgreSQL). Shared stores also share
    /// login regulation, and a server that loses its store for too long stops vouching for
    /// tokens.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Signalled when another replica may have appended to the change feed (PostgreSQL
    /// `LISTEN/NOTIFY`); `None` for redb, which is polled only. The signal is a hint: the
    /// change feed, read by sequence number, is the truth.
    pub fn change_hint(&self) -> Option<Arc<tokio::sync::Notify>> {
        match &self.backend {
            Backend::Redb(_) => None,
            Backend::Postgres(s) => Some(s.change_hint()),
        }
    }

    /// Read-modify-write of a meta value in one transaction, announced on the change feed as
    /// [`Change::Keys`], so running servers pick up rotated signing keys and two concurrent
    /// rotations cannot lose one another's key. `change` gets the current value and returns the
    /// new one (or an error, which aborts the transaction).
    pub fn update_meta_announced<E: From<StoreError>>(
        &self,
        key: &str,
        change: impl FnOnce(Option<&[u8]>) -> Result<Vec<u8>, E>,
    ) -> Result<Vec<u8>, E> {
        match &self.backend {
            Backend::Redb(s) => s.update_meta(key, true, change),
            Backend::Postgres(s) => s.update_meta(key, true, change),
        }
    }

    /// Encrypts the secrets kept in the meta table with `key` from now on
    /// (`store.encryption_key`); see [`Store::get_secret`].
    pub fn with_encryption(mut self, key: Option<&Secret<Vec<u8>>>) -> Result<Store, StoreError> {
        self.seal = match key {
            None => None,
            Some(material) => Some(SealKey::derive(material.expose()).ok_or_else(|| {
                StoreError::Sealed(format!(
                    "store.encryption_key must be at least {} bytes",
                    seal::MIN_KEY_BYTES
                ))
            })?),
        };
        Ok(self)
    }

    /// The id of the configured encryption key, if any (for messages; not secret).
    pub fn encryption_key_id(&self) -> Option<String> {
        self.seal.as_ref().map(SealKey::id_hex)
    }

    /// A secret meta value (signing keys, the refresh and CSRF keys), decrypted. A value kept
    /// in the clear is returned as it is (see [`Store::seal_secrets`]); an encrypted one needs
    /// the key it was encrypted with, else [`StoreError::Sealed`].
    pub fn get_secret(&self, name: &str) -> Result<Option<Secret<Vec<u8>>>, StoreError> {
        self.get_meta(name)?
            .map(|value| self.unseal(name, value))
            .transpose()
    }

    /// [`Store::put_meta_if_absent`] for a secret: stores `value` (encrypted when a key is
    /// configured) unless `name` has a value, and returns the value now stored, decrypted.
    pub fn put_secret_if_absent(
        &self,
        name: &str,
        value: &[u8],
    ) -> Result<Secret<Vec<u8>>, StoreError> {
        let stored = self.put_meta_if_absent(name, &self.seal_value(name, value)?)?;
        self.unseal(name, stored)
    }

    /// [`Store::update_meta_announced`] for a secret: `change` sees and returns plaintext.
    pub fn update_secret_announced<E: From<StoreError>>(
        &self,
        name: &str,
        change: impl FnOnce(Option<&[u8]>) -> Result<Vec<u8>, E>,
    ) -> Result<Secret<Vec<u8>>, E> {
        let stored = self.update_meta_announced(name, |current| -> Result<Vec<u8>, E> {
            let plain = current.map(|v| self.unseal(name, v.to_vec())).transpose()?;
            let new = change(plain.as_ref().map(|p| p.expose().as_slice()))?;
            Ok(self.seal_value(name, &new)?)
        })?;
        Ok(self.unseal(name, stored)?)
    }

    /// Brings the named secrets, and every user's second factors and linked identities, under
    /// `to`: each is decrypted with the configured key (or read in the clear) and written back
    /// encrypted with `to`, or in the clear when `to` is `None`. A value already under `to` is
    /// left alone, so an interrupted run can be repeated. Each value changes in its own transaction, not announced: running servers keep
    /// the keys they loaded. Returns how many values changed.
    pub fn reseal_secrets(
        &self,
        names: &[&str],
        to: Option<&SealKey>,
    ) -> Result<usize, StoreError> {
        let mut changed = 0;
        for name in names {
            let (backend, mut did_change) = (&self.backend, false);
            let rewrite = |current: Option<&[u8]>| -> Result<Vec<u8>, StoreError> {
                let Some(current) = current else {
                    return Err(StoreError::NotFound);
                };
                match self.reseal_value(name, current, to)? {
                    Some(resealed) => {
                        did_change = true;
                        Ok(resealed)
                    }
                    None => Ok(current.to_vec()),
                }
            };
            if self.get_meta(name)?.is_none() {
                continue;
            }
            match backend {
                Backend::Redb(s) => s.update_meta(name, false, rewrite)?,
                Backend::Postgres(s) => s.update_meta(name, false, rewrite)?,
            };
            if did_change {
                changed += 1;
            }
        }
        Ok(changed + self.reseal_factors(to)? + self.reseal_identities(to)?)
    }

    /// `current` (stored under `name`) brought under `to`, or in the clear when `to` is `None`;
    /// `None` if it is there already.
    fn reseal_value(
        &self,
        name: &str,
        current: &[u8],
        to: Option<&SealKey>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let already = match (to, seal::sealed_key_id(current)) {
            (Some(to), Some(id)) => id == to.id_hex(),
            (None, None) => true,
            _ => false,
        };
        if already {
            return Ok(None);
        }
        let plain = self.unseal(name, current.to_vec())?;
        Ok(Some(match to {
            Some(to) => to.seal(name, plain.expose())?,
            None => plain.into_inner(),
        }))
    }

    /// [`Store::reseal_secrets`] for every user's second factors (their TOTP secrets): each
    /// value not already under `to` is opened and written back under `to` (or in the clear).
    fn reseal_factors(&self, to: Option<&SealKey>) -> Result<usize, StoreError> {
        let users = match &self.backend {
            Backend::Redb(s) => s.factors_users()?,
            Backend::Postgres(s) => s.factors_users()?,
        };
        let mut changed = 0;
        for user_id in users {
            let name = factors_name(&user_id);
            let rewrite = |current: Option<&[u8]>| -> Result<RawWrite, StoreError> {
                let Some(current) = current else {
                    return Ok(RawWrite::Keep);
                };
                let resealed = self.reseal_value(&name, current, to)?;
                if resealed.is_some() {
                    changed += 1;
                }
                Ok(resealed.map_or(RawWrite::Keep, RawWrite::Put))
            };
            let done = match &self.backend {
                Backend::Redb(s) => s.update_factors(&user_id, rewrite),
                Backend::Postgres(s) => s.update_factors(&user_id, rewrite),
            };
            match done {
                // Deleted meanwhile: nothing to reseal.
                Ok(()) | Err(StoreError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(changed)
    }

    /// Encrypts the named secrets, second factors and linked identities that are still in the
    /// clear with the configured key, and checks that every encrypted named secret opens with
    /// it (a wrong key fails here, at start-up). Without a configured key, it only checks that
    /// none is encrypted. Returns how many were encrypted now.
    pub fn seal_secrets(&self, names: &[&str]) -> Result<usize, StoreError> {
        for name in names {
            self.get_secret(name)?;
        }
        if self.seal.is_none() {
            let users = match &self.backend {
                Backend::Redb(s) => s.factors_users()?,
                Backend::Postgres(s) => s.factors_users()?,
            };
            for user_id in users {
                self.factors_of(&user_id)?;
            }
            self.check_identities()?;
        }
        match &self.seal {
            Some(key) => self.reseal_secrets(names, Some(key)),
            None => Ok(0),
        }
    }

    /// A user's second factors; empty if they have none.
    pub fn factors_of(&self, user_id: &str) -> Result<Factors, StoreError> {
        let raw = match &self.backend {
            Backend::Redb(s) => s.get_factors(user_id)?,
            Backend::Postgres(s) => s.get_factors(user_id)?,
        };
        match raw {
            Some(value) => self.open_factors(user_id, value),
            None => Ok(Factors::default()),
        }
    }

    /// Reads a user's factors, lets `change` edit them and writes them back, in one
    /// transaction (of one user, on every backend and replica), so a TOTP step or a recovery
    /// code cannot be used twice. Nothing is written if `change` left them as they were.
    /// Returns the factors as stored and what `change` returned; [`StoreError::NotFound`] if
    /// the user does not exist.
    pub fn update_factors<T>(
        &self,
        user_id: &str,
        change: impl FnOnce(&mut Factors) -> T,
    ) -> Result<(Factors, T), StoreError> {
        let mut out = None;
        let raw = |current: Option<&[u8]>| -> Result<RawWrite, StoreError> {
            let old = match current {
                Some(value) => self.open_factors(user_id, value.to_vec())?,
                None => Factors::default(),
            };
            let mut new = old.clone();
            let result = change(&mut new);
            let write = if new == old {
                RawWrite::Keep
            } else if new.is_empty() {
                RawWrite::Delete
            } else {
                let json = serde_json::to_vec(&new)
                    .map_err(|e| StoreError::Corrupt(format!("encode factors: {e}")))?;
                RawWrite::Put(self.seal_value(&factors_name(user_id), &json)?)
            };
            out = Some((new, result));
            Ok(write)
        };
        match &self.backend {
            Backend::Redb(s) => s.update_factors(user_id, raw)?,
            Backend::Postgres(s) => s.update_factors(user_id, raw)?,
        }
        out.ok_or_else(|| StoreError::Io("update factors: the change did not run".into()))
    }

    fn open_factors(&self, user_id: &str, value: Vec<u8>) -> Result<Factors, StoreError> {
        let plain = self.unseal(&factors_name(user_id), value)?;
        serde_json::from_slice(plain.expose())
            .map_err(|e| StoreError::Corrupt(format!("factors of a user: {e}")))
    }

    fn unseal(&self, name: &str, value: Vec<u8>) -> Result<Secret<Vec<u8>>, StoreError> {
        if !seal::is_sealed(&value) {
            return Ok(Secret::new(value));
        }
        match &self.seal {
            Some(key) => key.open(name, &value).map(Secret::new),
            None => Err(StoreError::Sealed(format!(
                "{name} in the store is encrypted (key id {}); set store.encryption_key or \
                 store.encryption_key_file to the key it was encrypted with",
                seal::sealed_key_id(&value).unwrap_or_default()
            ))),
        }
    }

    fn seal_value(&self, name: &str, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        match &self.seal {
            Some(key) => key.seal(name, plain),
            None => Ok(plain.to_vec()),
        }
    }

    fn redb(store: redb::RedbStore) -> Store {
        Store {
            backend: Backend::Redb(store),
            seal: None,
        }
    }

    fn postgres(store: postgres::PgStore) -> Store {
        Store {
            backend: Backend::Postgres(store),
            seal: None,
        }
    }

    /// Reads the user, lets `change` edit it and writes it back, all in one transaction, so
    /// concurrent writers (the server rehashing a password, the admin CLI disabling the
    /// account) cannot overwrite each other's fields. `change` may refuse with an error, which
    /// aborts the transaction. The email index and flag row follow, the session version never
    /// goes down, and the change is announced. Returns the user as stored.
    pub fn modify_user(
        &self,
        id: &str,
        change: impl FnOnce(&mut User) -> Result<(), StoreError>,
    ) -> Result<User, StoreError> {
        match &self.backend {
            Backend::Redb(s) => s.modify_user(id, change),
            Backend::Postgres(s) => s.modify_user(id, change),
        }
    }

    /// Replaces a user record (see [`Store::modify_user`]; this overwrites every field).
    pub fn update_user(&self, user: &User) -> Result<(), StoreError> {
        self.modify_user(&user.id, |stored| {
            *stored = user.clone();
            Ok(())
        })
        .map(|_| ())
    }

    /// The failed-login regulation record of an account, for stores shared by several servers
    /// ([`Store::is_shared`]); a single server keeps regulation in memory.
    pub fn regulation(&self, account: &str) -> Result<Option<Regulation>, StoreError> {
        match &self.backend {
            Backend::Redb(_) => Err(regulation_in_memory()),
            Backend::Postgres(s) => s.regulation(account),
        }
    }

    /// Read-modify-write of an account's regulation record, atomic across servers; see
    /// [`Store::regulation`].
    pub fn update_regulation(
        &self,
        account: &str,
        now: u64,
        change: impl FnOnce(&mut Regulation),
    ) -> Result<Regulation, StoreError> {
        match &self.backend {
            Backend::Redb(_) => Err(regulation_in_memory()),
            Backend::Postgres(s) => s.update_regulation(account, now, change),
        }
    }

    /// How many deny-listed jtis are stored, expired ones included (to size a load).
    pub fn revoked_jti_count(&self) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Redb(s) => s.revoked_jti_count(),
            Backend::Postgres(s) => s.revoked_jti_count(),
        }
    }

    /// How many threads should read the deny list at start-up: one per core for the embedded
    /// file, where the load is CPU-bound (1M jtis: 175 ms on one core, 108 ms on two); one for
    /// PostgreSQL, where a slice by byte order cannot use the primary key's index and each
    /// slice would scan the whole table.
    pub fn deny_list_readers(&self) -> usize {
        match &self.backend {
            Backend::Redb(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Backend::Postgres(_) => 1,
        }
    }

    /// Calls `visit` with every deny-listed jti in `range` that has not expired and its
    /// expiry, without collecting them first (a server loads a million at start-up). Several
    /// threads may read disjoint ranges at once.
    pub fn for_each_revoked_jti(
        &self,
        now: u64,
        range: JtiRange<'_>,
        visit: &mut dyn FnMut(&str, u64),
    ) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Redb(s) => s.for_each_revoked_jti(now, range, visit),
            Backend::Postgres(s) => {
                for (jti, exp) in s.revoked_jtis_in(now, range)? {
                    visit(&jti, exp);
                }
                Ok(())
            }
        }
    }

    delegate! {
        /// Sequence number of the newest change, 0 if none. At start-up, call this *before*
        /// loading flags and revocations, then poll from it: a change that lands in between
        /// is applied twice, which is harmless.
        fn last_change(&self) -> Result<u64, StoreError>;
        /// Up to `limit` changes with a sequence number greater than `seq`, oldest first.
        fn changes_since(&self, seq: u64, limit: usize) -> Result<Vec<(u64, Change)>, StoreError>;
        /// A meta value (signing keys and the like).
        fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
        /// Sets a meta value.
        fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
        /// Stores `value` unless `key` already has one, atomically, and returns what is stored
        /// now: two servers generating a first signing key both end up with the same key.
        fn put_meta_if_absent(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError>;
        /// Housekeeping, safe to run from any server at any time: deletes refresh records whose
        /// family expired, revocations and one-time tokens past their expiry, session records
        /// of ended or expired sessions and change-feed entries beyond the newest
        /// [`CHANGE_RETENTION`]. Deleted users' flag rows are kept.
        fn sweep(&self, now: u64) -> Result<SweepStats, StoreError>;
        /// Adds a user. [`StoreError::EmailTaken`] if the email is in use,
        /// [`StoreError::IdTaken`] if the id is.
        fn create_user(&self, user: &User) -> Result<(), StoreError>;
        fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError>;
        /// Looks a user up by normalised email.
        fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError>;
        /// Deletes a user, their email, one-time tokens, second factors and linked identities,
        /// revokes all their refresh families (ending their sessions) and leaves a flag row
        /// `{disabled: true}` so their live access tokens die, in one transaction. False if
        /// there was no such user.
        fn delete_user(&self, id: &str, now: u64) -> Result<bool, StoreError>;
        /// Every user, in id order.
        fn list_users(&self) -> Result<Vec<User>, StoreError>;
        fn user_count(&self) -> Result<u64, StoreError>;
        /// Every flag row (users that are disabled, deleted or have a session version above 0).
        fn user_flags(&self) -> Result<Vec<(String, UserFlags)>, StoreError>;
        /// The flag row of one user; `None` means enabled with session version 0.
        fn flags_of(&self, id: &str) -> Result<Option<UserFlags>, StoreError>;
        /// "Log out everywhere": bumps the session version, revokes all the user's refresh
        /// families (marking their sessions ended) and announces it, in one transaction. `None`
        /// if the user is absent.
        fn end_all_sessions(&self, user_id: &str, now: u64) -> Result<Option<User>, StoreError>;
        /// Stores a new refresh token. Refuses a hash that is already present.
        fn insert_refresh(&self, hash: &TokenHash, rec: &RefreshRecord) -> Result<(), StoreError>;
        fn get_refresh(&self, hash: &TokenHash) -> Result<Option<RefreshRecord>, StoreError>;
        /// Atomically: if `old` is active and its family unexpired, marks it rotated at `now`,
        /// stores `new` in the same family and sets the session's `last_used_at` to `now`. A rotated `old` gives
        /// [`Rotation::AlreadyRotated`] and writes nothing; anything else
        /// [`Rotation::Invalid`].
        fn rotate_refresh(&self, old: &TokenHash, new: &TokenHash, now: u64) -> Result<Rotation, StoreError>;
        /// Revokes every token of `family` and remembers the family as revoked until it would
        /// have expired. Returns how many tokens changed state.
        fn revoke_family(&self, family: &str, now: u64) -> Result<usize, StoreError>;
        /// Revoked families that have not yet expired, with their expiry.
        fn revoked_families(&self, now: u64) -> Result<Vec<(String, u64)>, StoreError>;
        /// Deny-lists an access token id until `exp`.
        fn revoke_jti(&self, jti: &str, exp: u64) -> Result<(), StoreError>;
        /// Deny-listed jtis that have not yet expired, with their expiry.
        fn revoked_jtis(&self, now: u64) -> Result<Vec<(String, u64)>, StoreError>;
        /// Stores a one-time token (email verification, password reset) under the SHA-256 of
        /// the token. Refuses a hash that is already present.
        fn insert_one_time(&self, hash: &TokenHash, rec: &OneTimeToken) -> Result<(), StoreError>;
        /// Atomically removes and returns the token if it is of `kind` and unexpired
        /// (`now < expires_at`): of two concurrent consumers exactly one gets it. An expired
        /// token is removed and not returned; a token of another kind is left as it is.
        fn consume_one_time(&self, hash: &TokenHash, kind: TokenKind, now: u64) -> Result<Option<OneTimeToken>, StoreError>;
        /// What [`Store::consume_one_time`] would return, without consuming (for a page that
        /// asks to confirm before acting).
        fn peek_one_time(&self, hash: &TokenHash, kind: TokenKind, now: u64) -> Result<Option<OneTimeToken>, StoreError>;
        /// Deletes every token of `kind` of a user (a login or a new reset voids the reset
        /// tokens already sent). Returns how many.
        fn delete_one_time_for(&self, user_id: &str, kind: TokenKind) -> Result<usize, StoreError>;
        /// Records a session (refresh family) as it starts; the user agent is cut to
        /// [`USER_AGENT_MAX_CHARS`] characters. Refuses a family already recorded.
        fn start_session(&self, info: &SessionInfo) -> Result<(), StoreError>;
        /// The user's live sessions (not ended, not expired at `now`), newest (`created_at`)
        /// first.
        fn sessions_of(&self, user_id: &str, now: u64) -> Result<Vec<SessionInfo>, StoreError>;
        /// Ends one session: if `family` is a live session of `user_id`, revokes the family as
        /// [`Store::revoke_family`] does (announced on the change feed) and returns true; else
        /// changes nothing and returns false (another user's session, unknown, already ended,
        /// or expired).
        fn end_session(&self, user_id: &str, family: &str, now: u64) -> Result<bool, StoreError>;
        /// Ends every session of the user but `keep` (changing the password keeps the session
        /// that did it), in one transaction, each as [`Store::revoke_family`] does. Returns
        /// how many live sessions ended.
        fn end_other_sessions(&self, user_id: &str, keep: &str, now: u64) -> Result<usize, StoreError>;
        /// Everything `gateway migrate` copies, read consistently.
        fn export(&self, now: u64) -> Result<Snapshot, StoreError>;
        /// Writes a snapshot into an empty store ([`StoreError::NotEmpty`] otherwise).
        fn import(&self, snap: &Snapshot) -> Result<(), StoreError>;
    }
}

/// The name a user's factors are sealed under (the associated data: a sealed value cannot be
/// moved to another user).
fn factors_name(user_id: &str) -> String {
    format!("factors/{user_id}")
}

/// What a single-server store says when asked for shared regulation.
fn regulation_in_memory() -> StoreError {
    StoreError::Io("login regulation is kept in memory with redb".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod test_util {
    pub use super::redb::test_util::user;
    use super::{Store, redb};

    /// A redb store on a fresh temporary file; keep the directory alive while using it.
    pub fn temp_store() -> (tempfile::TempDir, Store) {
        let (dir, store) = redb::test_util::temp_store();
        (dir, Store::redb(store))
    }
}
