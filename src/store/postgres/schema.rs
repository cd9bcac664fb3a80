//! The PostgreSQL schema and its versioned migrations.
//!
//! Every table is prefixed `gateway_`, so the gateway can share a database with other
//! software. Migrations run at start-up inside one transaction that first takes a
//! transaction-scoped advisory lock: replicas starting together wait for one another, and the
//! second finds the work done. `gateway_schema_migrations` records each applied version.
//!
//! | table                        | holds                                                   |
//! |------------------------------|---------------------------------------------------------|
//! | `gateway_users`              | one row a user; `email` unique (normalised by the caller)|
//! | `gateway_user_flags`         | disabled / session version, only for non-default users |
//! | `gateway_refresh_tokens`     | SHA-256 of each refresh token, its family and state      |
//! | `gateway_revoked_families`   | revoked refresh families until they would have expired   |
//! | `gateway_revoked_jtis`       | deny-listed access-token ids until their expiry          |
//! | `gateway_meta`               | signing keys, the refresh and CSRF keys                  |
//! | `gateway_changes`            | the change feed: gapless `seq`, JSON [`Change`](super::Change) |
//! | `gateway_login_regulation`   | failed-login counts per account, shared by replicas     |
//! | `gateway_one_time_tokens`    | SHA-256 of each email-verification / reset token (v2)   |
//! | `gateway_sessions`           | one row per refresh family, for the user's session list (v2) |
//! | `gateway_factors`            | each user's second factors, one encoded value (v3)      |
//! | `gateway_identities`         | linked single sign-on identities, one encoded value each (v4) |
//!
//! Version 2 added `gateway_users.email_verified` (false for existing users), the one-time
//! tokens, and the session rows, filled from the refresh tokens already stored so sessions
//! started before the upgrade are listed too (without user agent or address). Version 3 added
//! `gateway_factors` and `gateway_refresh_tokens.amr` (empty for existing sessions: password); a
//! version-2 gateway refuses the database from then on, since it would sign users in without
//! their second factor. Version 4 added `gateway_identities` (and `gateway_refresh_tokens.provider`, the identity
//! provider of a federated session), keyed by (provider, subject), one per provider and user, deleted with their user. Version 5 makes `gateway_factors` follow its
//! user the same way (a foreign key, `ON DELETE CASCADE`; the gateway deleted them together
//! already, so the key only guards against a user row deleted by other means), first dropping
//! any factor row whose user is gone. A version-4 gateway refuses the database from then on.

use deadpool_postgres::Transaction;

use super::{StoreError, db_error};

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = 5;

/// Advisory lock key taken while migrating ("gw-schema").
const MIGRATION_LOCK: i64 = 0x6777_2d73_6368_656d;

/// The migrations, in order; entry `i` brings the schema to version `i + 1`. Never edit a
/// released one: add a new one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE gateway_users (
    id              text PRIMARY KEY,
    email           text NOT NULL UNIQUE,
    name            text,
    password_hash   text NOT NULL,
    roles           text[] NOT NULL,
    disabled        boolean NOT NULL,
    created_at      bigint NOT NULL,
    updated_at      bigint NOT NULL,
    session_version bigint NOT NULL
);
CREATE TABLE gateway_user_flags (
    user_id         text PRIMARY KEY,
    disabled        boolean NOT NULL,
    session_version bigint NOT NULL
);
CREATE TABLE gateway_refresh_tokens (
    hash              bytea PRIMARY KEY,
    family            text NOT NULL,
    user_id           text NOT NULL,
    issued_at         bigint NOT NULL,
    family_expires_at bigint NOT NULL,
    state             text NOT NULL,
    state_at          bigint NOT NULL
);
CREATE INDEX gateway_refresh_tokens_family ON gateway_refresh_tokens (family);
CREATE INDEX gateway_refresh_tokens_user ON gateway_refresh_tokens (user_id);
CREATE INDEX gateway_refresh_tokens_expiry ON gateway_refresh_tokens (family_expires_at);
CREATE TABLE gateway_revoked_families (
    family text PRIMARY KEY,
    exp    bigint NOT NULL
);
CREATE TABLE gateway_revoked_jtis (
    jti text PRIMARY KEY,
    exp bigint NOT NULL
);
CREATE TABLE gateway_meta (
    key   text PRIMARY KEY,
    value bytea NOT NULL
);
CREATE TABLE gateway_changes (
    seq    bigint PRIMARY KEY,
    change text NOT NULL
);
CREATE TABLE gateway_login_regulation (
    account text PRIMARY KEY,
    state   text NOT NULL,
    touched bigint NOT NULL
);
"#,
    r#"
ALTER TABLE gateway_users ADD COLUMN email_verified boolean NOT NULL DEFAULT false;
CREATE TABLE gateway_one_time_tokens (
    hash       bytea PRIMARY KEY,
    kind       text NOT NULL,
    user_id    text NOT NULL,
    email      text NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX gateway_one_time_tokens_user ON gateway_one_time_tokens (user_id, kind);
CREATE INDEX gateway_one_time_tokens_expiry ON gateway_one_time_tokens (expires_at);
CREATE TABLE gateway_sessions (
    family       text PRIMARY KEY,
    user_id      text NOT NULL,
    created_at   bigint NOT NULL,
    last_used_at bigint NOT NULL,
    expires_at   bigint NOT NULL,
    user_agent   text,
    ip           text,
    ended_at     bigint
);
CREATE INDEX gateway_sessions_user ON gateway_sessions (user_id);
CREATE INDEX gateway_sessions_expiry ON gateway_sessions (expires_at);
INSERT INTO gateway_sessions (family, user_id, created_at, last_used_at, expires_at, ended_at)
SELECT family, min(user_id), min(issued_at), max(issued_at), max(family_expires_at),
       max(state_at) FILTER (WHERE state = 'revoked')
FROM gateway_refresh_tokens
GROUP BY family;
"#,
    r#"
CREATE TABLE gateway_factors (
    user_id text PRIMARY KEY,
    value   bytea NOT NULL
);
ALTER TABLE gateway_refresh_tokens ADD COLUMN amr text[] NOT NULL DEFAULT '{}';
"#,
    r#"
CREATE TABLE gateway_identities (
    provider text NOT NULL,
    subject  text NOT NULL,
    user_id  text NOT NULL REFERENCES gateway_users (id) ON DELETE CASCADE,
    value    bytea NOT NULL,
    PRIMARY KEY (provider, subject),
    UNIQUE (user_id, provider)
);
ALTER TABLE gateway_refresh_tokens ADD COLUMN provider text;
"#,
    r#"
DELETE FROM gateway_factors f WHERE NOT EXISTS (SELECT 1 FROM gateway_users u WHERE u.id = f.user_id);
ALTER TABLE gateway_factors ADD CONSTRAINT gateway_factors_user_id_fkey
    FOREIGN KEY (user_id) REFERENCES gateway_users (id) ON DELETE CASCADE;
"#,
];

/// The SQL of migration `version` (1-based), for tests that build a database as an older
/// gateway left it.
#[doc(hidden)]
pub fn migration_sql(version: usize) -> Option<&'static str> {
    MIGRATIONS.get(version.checked_sub(1)?).copied()
}

/// Brings the database to [`SCHEMA_VERSION`]; refuses a newer one.
pub(super) async fn migrate(txn: &Transaction<'_>) -> Result<(), StoreError> {
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| db_error("take the migration lock", e))?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS gateway_schema_migrations (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(|e| db_error("create gateway_schema_migrations", e))?;
    let row = txn
        .query_one(
            "SELECT coalesce(max(version), 0) FROM gateway_schema_migrations",
            &[],
        )
        .await
        .map_err(|e| db_error("read the schema version", e))?;
    let found: i32 = row.get(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: u32::try_from(found).unwrap_or(u32::MAX),
            supported: u32::try_from(SCHEMA_VERSION).unwrap_or(0),
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
        if version <= found {
            continue;
        }
        tracing::info!(version, "migrating the PostgreSQL schema");
        txn.batch_execute(sql)
            .await
            .map_err(|e| db_error(&format!("apply schema migration {version}"), e))?;
        txn.execute(
            "INSERT INTO gateway_schema_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(|e| db_error("record the schema version", e))?;
    }
    Ok(())
}
