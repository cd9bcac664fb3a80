//! Table layout of the redb file and the small helpers every store module shares:
//! JSON encoding, error context, flag rows and the change feed append.
//!
//! Layout (schema version 4; version 3 had no identity tables; version 2 had no `factors`;
//! version 1 had neither the one-time tokens nor the sessions, and its `User` values no
//! `email_verified`, which reads as false). Keys are `&str`, tuples of them or fixed byte
//! arrays, values JSON bytes unless noted. The `meta` table's type must never change: `open` reads the schema
//! version from it before touching anything else.
//!
//! | table              | key                 | value                                   |
//! |--------------------|---------------------|-----------------------------------------|
//! | `meta`             | name                | raw bytes (`schema_version` is JSON u32)|
//! | `users`            | user id             | `User`                                  |
//! | `user_email`       | normalised email    | user id (`&str`)                        |
//! | `user_flags`       | user id             | `UserFlags` (only non-default rows)     |
//! | `refresh`          | SHA-256 of token    | `RefreshRecord`                         |
//! | `family_tokens`    | family (multimap)   | token hash                              |
//! | `user_families`    | user id (multimap)  | family                                  |
//! | `revoked_families` | family              | family expiry (`u64`, unix seconds)     |
//! | `revoked_jtis`     | jti                 | token expiry (`u64`, unix seconds)      |
//! | `changes`          | sequence (`u64`)    | `Change`                                |
//! | `one_time`         | SHA-256 of token    | `OneTimeToken`                          |
//! | `user_one_time`    | user id (multimap)  | token hash                              |
//! | `sessions`         | family              | `SessionInfo`                           |
//! | `factors`          | user id             | `Factors` JSON, sealed with a store key |
//! | `identities`       | (provider, subject) | (user id, `LinkedIdentity` JSON, sealed)|
//! | `user_identities`  | (user id, provider) | subject (`&str`)                        |
//!
//! A user's sessions are found through `user_families`, which lists every family of theirs
//! until it expires.
//! A user's linked identities through `user_identities`, which holds exactly one entry per
//! `identities` row; its key is also what keeps a user to one identity per provider.

use redb::{MultimapTableDefinition, ReadableTable, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::super::model::{Change, StoreError, UserFlags};

pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(super) const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
pub(super) const USER_EMAIL: TableDefinition<&str, &str> = TableDefinition::new("user_email");
pub(super) const USER_FLAGS: TableDefinition<&str, &[u8]> = TableDefinition::new("user_flags");
pub(super) const REFRESH: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("refresh");
pub(super) const FAMILY_TOKENS: MultimapTableDefinition<&str, &[u8; 32]> =
    MultimapTableDefinition::new("family_tokens");
pub(super) const USER_FAMILIES: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("user_families");
pub(super) const REVOKED_FAMILIES: TableDefinition<&str, u64> =
    TableDefinition::new("revoked_families");
pub(super) const REVOKED_JTIS: TableDefinition<&str, u64> = TableDefinition::new("revoked_jtis");
pub(super) const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");
pub(super) const ONE_TIME: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("one_time");
pub(super) const USER_ONE_TIME: MultimapTableDefinition<&str, &[u8; 32]> =
    MultimapTableDefinition::new("user_one_time");
pub(super) const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
pub(super) const FACTORS: TableDefinition<&str, &[u8]> = TableDefinition::new("factors");
pub(super) const IDENTITIES: TableDefinition<(&str, &str), (&str, &[u8])> =
    TableDefinition::new("identities");
pub(super) const USER_IDENTITIES: TableDefinition<(&str, &str), &str> =
    TableDefinition::new("user_identities");

/// Creates every table of the current schema (opening a table in a write
/// transaction creates it).
pub(super) fn create_all(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(USERS).ctx("create table users")?;
    txn.open_table(USER_EMAIL).ctx("create table user_email")?;
    txn.open_table(USER_FLAGS).ctx("create table user_flags")?;
    txn.open_table(REFRESH).ctx("create table refresh")?;
    txn.open_multimap_table(FAMILY_TOKENS)
        .ctx("create table family_tokens")?;
    txn.open_multimap_table(USER_FAMILIES)
        .ctx("create table user_families")?;
    txn.open_table(REVOKED_FAMILIES)
        .ctx("create table revoked_families")?;
    txn.open_table(REVOKED_JTIS)
        .ctx("create table revoked_jtis")?;
    txn.open_table(CHANGES).ctx("create table changes")?;
    txn.open_table(ONE_TIME).ctx("create table one_time")?;
    txn.open_multimap_table(USER_ONE_TIME)
        .ctx("create table user_one_time")?;
    txn.open_table(SESSIONS).ctx("create table sessions")?;
    txn.open_table(FACTORS).ctx("create table factors")?;
    txn.open_table(IDENTITIES).ctx("create table identities")?;
    txn.open_table(USER_IDENTITIES)
        .ctx("create table user_identities")?;
    Ok(())
}

/// Adds what the store was doing to a redb error. redb errors carry no keys or
/// values, so nothing secret ends up in the message.
pub(super) trait Context<T> {
    fn ctx(self, what: &str) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> Context<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::Io(format!("{what}: {}", e.into())))
    }
}

pub(super) fn encode<T: Serialize>(table: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value)
        .map_err(|e| StoreError::Corrupt(format!("{table}: cannot encode value: {e}")))
}

/// Decodes a JSON value. The message names the table and the position but not
/// serde's text, which can quote the stored value (a password hash, say).
pub(super) fn decode<T: DeserializeOwned>(table: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| {
        StoreError::Corrupt(format!(
            "{table}: undecodable value ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

/// Writes the flag row of a user: present only when it differs from the default
/// (enabled, session version 0), so the startup load stays small.
pub(super) fn set_flags(
    txn: &WriteTransaction,
    id: &str,
    flags: UserFlags,
) -> Result<(), StoreError> {
    let mut table = txn.open_table(USER_FLAGS).ctx("open table user_flags")?;
    if flags == UserFlags::default() {
        table.remove(id).ctx("remove from user_flags")?;
    } else {
        let bytes = encode("user_flags", &flags)?;
        table
            .insert(id, bytes.as_slice())
            .ctx("insert into user_flags")?;
    }
    Ok(())
}

/// Appends a change to the feed with the next sequence number. Write transactions
/// are serialised across processes, so reading the last key here is race free.
pub(super) fn append_change(txn: &WriteTransaction, change: &Change) -> Result<u64, StoreError> {
    let mut table = txn.open_table(CHANGES).ctx("open table changes")?;
    let last = table
        .last()
        .ctx("read last change")?
        .map(|(k, _)| k.value())
        .unwrap_or(0);
    let seq = last
        .checked_add(1)
        .ok_or_else(|| StoreError::Corrupt("changes: sequence number overflow".into()))?;
    let bytes = encode("changes", change)?;
    table
        .insert(seq, bytes.as_slice())
        .ctx("insert into changes")?;
    Ok(seq)
}
