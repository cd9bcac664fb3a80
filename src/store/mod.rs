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

mod model;
pub mod postgres;
pub mod redb;

use std::path::Path;
use std::sync::Arc;

pub use model::{
    CHANGE_RETENTION, Change, JtiRange, RefreshRecord, RefreshState, Regulation, Rotation,
    Snapshot, StoreError, SweepStats, TokenHash, User, UserFlags,
};

use crate::config::StoreSettings;

/// A handle on the configured store. Cheap to clone; clones share connections.
#[derive(Clone, Debug)]
pub enum Store {
    Redb(redb::RedbStore),
    Postgres(postgres::PgStore),
}

/// Forwards a method to whichever backend this is.
macro_rules! delegate {
    ($( $(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )*) => {
        $(
            $(#[$doc])*
            pub fn $name(&self $(, $arg: $ty)*) -> $ret {
                match self {
                    Store::Redb(s) => s.$name($($arg),*),
                    Store::Postgres(s) => s.$name($($arg),*),
                }
            }
        )*
    };
}

impl Store {
    /// Opens (or creates) a redb file: the default store, and what tests and the admin CLI use
    /// for a path.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        redb::RedbStore::open(path).map(Store::Redb)
    }

    /// Opens the store the configuration names: creates or migrates its schema, and for
    /// PostgreSQL starts listening for other replicas' changes.
    pub fn connect(settings: &StoreSettings) -> Result<Store, StoreError> {
        match settings {
            StoreSettings::Redb { path } => Store::open(path),
            StoreSettings::Postgres(pg) => postgres::PgStore::connect(pg).map(Store::Postgres),
        }
    }

    /// Opens a store named on the command line: a `postgres://` URL (with default pool
    /// settings) or a redb file path.
    pub fn open_location(location: &str) -> Result<Store, StoreError> {
        if crate::config::is_postgres_url(location) {
            let settings = crate::config::PostgresSettings::with_url(location.to_owned());
            postgres::PgStore::connect(&settings).map(Store::Postgres)
        } else {
            Store::open(Path::new(location))
        }
    }

    /// Whether several servers share this store at once (PostgreSQL). Shared stores also share
    /// login regulation, and a server that loses its store for too long stops vouching for
    /// tokens.
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Signalled when another replica may have appended to the change feed (PostgreSQL
    /// `LISTEN/NOTIFY`); `None` for redb, which is polled only. The signal is a hint: the
    /// change feed, read by sequence number, is the truth.
    pub fn change_hint(&self) -> Option<Arc<tokio::sync::Notify>> {
        match self {
            Store::Redb(_) => None,
            Store::Postgres(s) => Some(s.change_hint()),
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
        match self {
            Store::Redb(s) => s.update_meta_announced(key, change),
            Store::Postgres(s) => s.update_meta_announced(key, change),
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
        match self {
            Store::Redb(s) => s.modify_user(id, change),
            Store::Postgres(s) => s.modify_user(id, change),
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
        match self {
            Store::Redb(_) => Err(regulation_in_memory()),
            Store::Postgres(s) => s.regulation(account),
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
        match self {
            Store::Redb(_) => Err(regulation_in_memory()),
            Store::Postgres(s) => s.update_regulation(account, now, change),
        }
    }

    /// How many deny-listed jtis are stored, expired ones included (to size a load).
    pub fn revoked_jti_count(&self) -> Result<u64, StoreError> {
        match self {
            Store::Redb(s) => s.revoked_jti_count(),
            Store::Postgres(s) => s.revoked_jti_count(),
        }
    }

    /// How many threads should read the deny list at start-up: one per core for the embedded
    /// file, where the load is CPU-bound (1M jtis: 175 ms on one core, 108 ms on two); one for
    /// PostgreSQL, where a slice by byte order cannot use the primary key's index and each
    /// slice would scan the whole table.
    pub fn deny_list_readers(&self) -> usize {
        match self {
            Store::Redb(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Store::Postgres(_) => 1,
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
        match self {
            Store::Redb(s) => s.for_each_revoked_jti(now, range, visit),
            Store::Postgres(s) => {
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
        /// family expired, revocations past their expiry and change-feed entries beyond the
        /// newest [`CHANGE_RETENTION`]. Deleted users' flag rows are kept.
        fn sweep(&self, now: u64) -> Result<SweepStats, StoreError>;
        /// Adds a user. [`StoreError::EmailTaken`] if the email is in use,
        /// [`StoreError::IdTaken`] if the id is.
        fn create_user(&self, user: &User) -> Result<(), StoreError>;
        fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError>;
        /// Looks a user up by normalised email.
        fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError>;
        /// Deletes a user and their email, revokes all their refresh families and leaves a flag
        /// row `{disabled: true}` so their live access tokens die. False if there was no such
        /// user.
        fn delete_user(&self, id: &str, now: u64) -> Result<bool, StoreError>;
        /// Every user, in id order.
        fn list_users(&self) -> Result<Vec<User>, StoreError>;
        fn user_count(&self) -> Result<u64, StoreError>;
        /// Every flag row (users that are disabled, deleted or have a session version above 0).
        fn user_flags(&self) -> Result<Vec<(String, UserFlags)>, StoreError>;
        /// The flag row of one user; `None` means enabled with session version 0.
        fn flags_of(&self, id: &str) -> Result<Option<UserFlags>, StoreError>;
        /// "Log out everywhere": bumps the session version, revokes all the user's refresh
        /// families and announces it, in one transaction. `None` if the user is absent.
        fn end_all_sessions(&self, user_id: &str, now: u64) -> Result<Option<User>, StoreError>;
        /// Stores a new refresh token. Refuses a hash that is already present.
        fn insert_refresh(&self, hash: &TokenHash, rec: &RefreshRecord) -> Result<(), StoreError>;
        fn get_refresh(&self, hash: &TokenHash) -> Result<Option<RefreshRecord>, StoreError>;
        /// Atomically: if `old` is active and its family unexpired, marks it rotated at `now`
        /// and stores `new` in the same family. A rotated `old` gives
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
        /// Everything `gateway migrate` copies, read consistently.
        fn export(&self, now: u64) -> Result<Snapshot, StoreError>;
        /// Writes a snapshot into an empty store ([`StoreError::NotEmpty`] otherwise).
        fn import(&self, snap: &Snapshot) -> Result<(), StoreError>;
    }
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
        (dir, Store::Redb(store))
    }
}
