//! Users and their flags (disabled, session version) in the PostgreSQL backend.

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::Row;

use super::feed::append_change;
use super::sessions::revoke_family_in;
use super::sql::{begin, commit, execute, get, int, query, query_one, query_opt, uint};
use super::{Change, PgStore, StoreError, User, UserFlags};

impl PgStore {
    pub fn create_user(&self, user: &User) -> Result<(), StoreError> {
        self.run("create user", |pool| async move {
            let mut client = get(&pool).await?;
            let txn = begin(&mut client).await?;
            let taken = query_opt(
                &txn,
                "SELECT id FROM gateway_users WHERE email = $1 OR id = $2",
                &[&user.email, &user.id],
            )
            .await?;
            if let Some(row) = taken {
                let id: String = row.get(0);
                return Err(if id == user.id {
                    StoreError::IdTaken
                } else {
                    StoreError::EmailTaken
                });
            }
            match insert_user(&txn, user).await {
                Err(StoreError::Io(msg)) if msg.contains("23505") => {
                    // A concurrent sign-up with the same email committed first.
                    return Err(StoreError::EmailTaken);
                }
                other => other?,
            }
            // Also clears a stale row left by a deleted user with the same id.
            set_flags(&txn, &user.id, UserFlags::of(user)).await?;
            append_change(
                &txn,
                &Change::User {
                    id: user.id.clone(),
                },
            )
            .await?;
            commit(txn).await
        })
    }

    pub fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        self.run("read user", |pool| async move {
            let client = get(&pool).await?;
            let sql = format!("SELECT {USER_COLUMNS} FROM gateway_users WHERE id = $1");
            let row = query_opt(&client, &sql, &[&id]).await?;
            Ok(row.as_ref().map(user_of))
        })
    }

    pub fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        self.run("read user", |pool| async move {
            let client = get(&pool).await?;
            let sql = format!("SELECT {USER_COLUMNS} FROM gateway_users WHERE email = $1");
            let row = query_opt(&client, &sql, &[&email]).await?;
            Ok(row.as_ref().map(user_of))
        })
    }

    pub fn modify_user(
        &self,
        id: &str,
        change: impl FnOnce(&mut User) -> Result<(), StoreError>,
    ) -> Result<User, StoreError> {
        self.run("update user", |pool| async move {
            let mut client = get(&pool).await?;
            let txn = begin(&mut client).await?;
            let sql = format!("SELECT {USER_COLUMNS} FROM gateway_users WHERE id = $1 FOR UPDATE");
            let Some(row) = query_opt(&txn, &sql, &[&id]).await? else {
                return Err(StoreError::NotFound);
            };
            let old = user_of(&row);
            let mut new = old.clone();
            change(&mut new)?;
            new.id = old.id.clone();
            new.session_version = new.session_version.max(old.session_version);
            if new.email != old.email {
                let owner = query_opt(
                    &txn,
                    "SELECT id FROM gateway_users WHERE email = $1",
                    &[&new.email],
                )
                .await?;
                if owner.is_some() {
                    return Err(StoreError::EmailTaken);
                }
            }
            let updated = execute(
                &txn,
                "UPDATE gateway_users SET email = $2, name = $3, password_hash = $4, roles = $5,
                     disabled = $6, created_at = $7, updated_at = $8, session_version = $9,
                     email_verified = $10
                 WHERE id = $1",
                &[
                    &new.id,
                    &new.email,
                    &new.name,
                    &new.password_hash,
                    &new.roles,
                    &new.disabled,
                    &int(new.created_at),
                    &int(new.updated_at),
                    &int(new.session_version),
                    &new.email_verified,
                ],
            )
            .await;
            match updated {
                Err(StoreError::Io(msg)) if msg.contains("23505") => {
                    return Err(StoreError::EmailTaken);
                }
                other => other?,
            };
            set_flags(&txn, &new.id, UserFlags::of(&new)).await?;
            append_change(&txn, &Change::User { id: new.id.clone() }).await?;
            commit(txn).await?;
            Ok(new)
        })
    }

    pub fn delete_user(&self, id: &str, now: u64) -> Result<bool, StoreError> {
        self.run("delete user", |pool| async move {
            let mut client = get(&pool).await?;
            let txn = begin(&mut client).await?;
            let Some(row) = query_opt(
                &txn,
                "DELETE FROM gateway_users WHERE id = $1 RETURNING session_version",
                &[&id],
            )
            .await?
            else {
                return Ok(false);
            };
            let flags = UserFlags {
                disabled: true,
                session_version: uint(row.get(0)),
            };
            set_flags(&txn, id, flags).await?;
            revoke_user_families(&txn, id, now).await?;
            execute(
                &txn,
                "DELETE FROM gateway_one_time_tokens WHERE user_id = $1",
                &[&id],
            )
            .await?;
            execute(
                &txn,
                "DELETE FROM gateway_factors WHERE user_id = $1",
                &[&id],
            )
            .await?;
            // Their linked identities went with the user's row (ON DELETE CASCADE).
            append_change(&txn, &Change::UserDeleted { id: id.to_owned() }).await?;
            commit(txn).await?;
            Ok(true)
        })
    }

    pub fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.run("list users", |pool| async move {
            let client = get(&pool).await?;
            let sql = format!("SELECT {USER_COLUMNS} FROM gateway_users ORDER BY id");
            let rows = query(&client, &sql, &[]).await?;
            Ok(rows.iter().map(user_of).collect())
        })
    }

    pub fn user_count(&self) -> Result<u64, StoreError> {
        self.run("count users", |pool| async move {
            let client = get(&pool).await?;
            let row = query_one(&client, "SELECT count(*) FROM gateway_users", &[]).await?;
            Ok(uint(row.get(0)))
        })
    }

    pub fn user_flags(&self) -> Result<Vec<(String, UserFlags)>, StoreError> {
        self.run("read user flags", |pool| async move {
            let client = get(&pool).await?;
            let rows = query(
                &client,
                "SELECT user_id, disabled, session_version FROM gateway_user_flags",
                &[],
            )
            .await?;
            Ok(rows
                .iter()
                .map(|r| {
                    let flags = UserFlags {
                        disabled: r.get(1),
                        session_version: uint(r.get(2)),
                    };
                    (r.get(0), flags)
                })
                .collect())
        })
    }

    pub fn flags_of(&self, id: &str) -> Result<Option<UserFlags>, StoreError> {
        self.run("read user flags", |pool| async move {
            let client = get(&pool).await?;
            let row = query_opt(
                &client,
                "SELECT disabled, session_version FROM gateway_user_flags WHERE user_id = $1",
                &[&id],
            )
            .await?;
            Ok(row.map(|r| UserFlags {
                disabled: r.get(0),
                session_version: uint(r.get(1)),
            }))
        })
    }

    pub fn end_all_sessions(&self, user_id: &str, now: u64) -> Result<Option<User>, StoreError> {
        self.run("end sessions", |pool| async move {
            let mut client = get(&pool).await?;
            let txn = begin(&mut client).await?;
            let sql = format!(
                "UPDATE gateway_users SET session_version = session_version + 1, updated_at = $2
                 WHERE id = $1 RETURNING {USER_COLUMNS}"
            );
            let Some(row) = query_opt(&txn, &sql, &[&user_id, &int(now)]).await? else {
                return Ok(None);
            };
            let user = user_of(&row);
            set_flags(&txn, user_id, UserFlags::of(&user)).await?;
            revoke_user_families(&txn, user_id, now).await?;
            append_change(
                &txn,
                &Change::User {
                    id: user_id.to_owned(),
                },
            )
            .await?;
            commit(txn).await?;
            Ok(Some(user))
        })
    }
}

pub(super) const USER_COLUMNS: &str = "id, email, name, password_hash, roles, disabled, created_at, updated_at, session_version, \
     email_verified";

pub(super) fn user_of(row: &Row) -> User {
    User {
        id: row.get("id"),
        email: row.get("email"),
        name: row.get("name"),
        password_hash: row.get("password_hash"),
        roles: row.get("roles"),
        disabled: row.get("disabled"),
        created_at: uint(row.get("created_at")),
        updated_at: uint(row.get("updated_at")),
        session_version: uint(row.get("session_version")),
        email_verified: row.get("email_verified"),
    }
}

pub(super) async fn insert_user(c: &impl GenericClient, user: &User) -> Result<(), StoreError> {
    execute(
        c,
        "INSERT INTO gateway_users (id, email, name, password_hash, roles, disabled, created_at,
             updated_at, session_version, email_verified)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &user.id,
            &user.email,
            &user.name,
            &user.password_hash,
            &user.roles,
            &user.disabled,
            &int(user.created_at),
            &int(user.updated_at),
            &int(user.session_version),
            &user.email_verified,
        ],
    )
    .await?;
    Ok(())
}

/// Writes a flag row only when it differs from the default, like the redb backend.
pub(super) async fn set_flags(
    c: &impl GenericClient,
    id: &str,
    flags: UserFlags,
) -> Result<(), StoreError> {
    if flags == UserFlags::default() {
        execute(
            c,
            "DELETE FROM gateway_user_flags WHERE user_id = $1",
            &[&id],
        )
        .await?;
    } else {
        execute(
            c,
            "INSERT INTO gateway_user_flags (user_id, disabled, session_version) VALUES ($1, $2, $3)
             ON CONFLICT (user_id) DO UPDATE
             SET disabled = excluded.disabled, session_version = excluded.session_version",
            &[&id, &flags.disabled, &int(flags.session_version)],
        )
        .await?;
    }
    Ok(())
}

async fn revoke_user_families(
    txn: &Transaction<'_>,
    user_id: &str,
    now: u64,
) -> Result<(), StoreError> {
    let rows = query(
        txn,
        "SELECT DISTINCT family FROM gateway_refresh_tokens WHERE user_id = $1",
        &[&user_id],
    )
    .await?;
    for row in rows {
        let family: String = row.get(0);
        revoke_family_in(txn, &family, now).await?;
    }
    Ok(())
}
