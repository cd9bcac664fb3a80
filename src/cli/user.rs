//! `gateway user ...`: account administration on the store the server uses.
//!
//! Every command loads the same config file as `serve` (so the same store path) and opens the
//! redb file in its multi-writer mode, so it works while the server runs. Each write goes
//! through a store method that appends to the change feed in the same transaction; the server
//! polls that feed every second, so a disabled user or ended sessions take effect on the running
//! server within about a second.
//!
//! How each change reaches live sessions:
//! - `set-roles` stores the roles and bumps the user's session version: roles travel inside
//!   access tokens, so the old tokens are refused and clients refresh, which issues a token with
//!   the new roles. Refresh families stay valid: nobody is logged out.
//! - `disable` marks the user disabled (their access tokens are refused, refreshes fail) and
//!   ends all their sessions; `enable` lets them log in again.
//! - `set-password` stores a new hash and ends all sessions; `revoke-sessions` only ends them.
//! - `delete` removes the account; the store keeps a "disabled" flag row so tokens stay dead.
//! - `reset-mfa` removes the second factors (authenticator app, recovery codes) and ends all
//!   sessions: the way back in for a user who lost their device and their recovery codes.
//!
//! Emails go through the sign-up normalisation, new passwords through the sign-up policy and
//! the configured argon2id parameters, roles through the config's role-name rule.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use clap::Subcommand;

use super::prompt;
use crate::auth::email::normalize_email;
use crate::auth::password::Hasher;
use crate::auth::service::{ServiceSettings, clean_name};
use crate::clock::Clock;
use crate::config::is_role_name;
use crate::secret::SecretString;
use crate::store::{Store, StoreError, User};

/// The `user` subcommands. A user is named by email or by id.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user and print their id.
    ///
    /// The password is prompted for (twice, without echo) on a terminal, otherwise read from
    /// the first line of stdin; never from the command line.
    Add {
        /// Email address (normalised as at sign-up: trimmed, lowercased).
        email: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// A role to give (repeat for several); the configured default roles when none is given.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Read the password from the first line of stdin, even on a terminal.
        #[arg(long)]
        password_stdin: bool,
        /// Mark the email address as verified (the admin vouches for it); otherwise the user
        /// starts unverified, as after sign-up.
        #[arg(long)]
        verified: bool,
    },
    /// List all users.
    List,
    /// Show one user (never the password hash).
    Show {
        /// The user's email address or id.
        #[arg(value_name = "EMAIL|ID")]
        user: String,
    },
    /// Replace a user's roles.
    ///
    /// Their current access tokens are refused so that clients refresh and get the new roles;
    /// their sessions (refresh tokens) stay valid, so nobody has to log in again.
    SetRoles {
        /// The user's email address or id.
        #[arg(value_name = "EMAIL|ID")]
        user: String,
        /// The new roles, replacing the old ones.
        #[arg(value_name = "ROLE", required_unless_present = "none")]
        roles: Vec<String>,
        /// Remove all roles.
        #[arg(long, conflicts_with = "roles")]
        none: bool,
    },
    /// Disable a user and end all their sessions.
    ///
    /// Their tokens are refused by a running server within about a second, and logins and
    /// refreshes fail until `enable`.
    Disable {
        /// The user's email address or id.
        #[arg(value_name = "EMAIL|ID")]
        user: String,
    },
    /// Enable a disabled user again (they must log in anew).
    Enable {
        /// The user's email address or id.
        #[arg(value_name = "EMAIL|ID")]
        user: String,
    },
    /// Delete a user and end their sessions; asks for confirmation.
    Delete {
        /// The user's email address or id.
        #[arg(value_name = "EMAIL|ID")]
        user: String,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
    /// Set a new password (same policy as sign-up) and end all the user's sessions.
    ///
    /// The password is prompted for (twice, without echo) on a terminal, otherwise read from
    /// the first line of stdin.
    SetPassword {
        /// The user's email address or id.
        #[arg(value_name = "EMAIL|ID")]
        user: String,
        /// Read the password from the first line of stdin, even on a terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    /// End all of a user's sessions (every access and refresh token issued so far).
    RevokeSessions {
        /// The user's email address or id.
        #[arg(value_name = "EMAIL|ID")]
        user: String,
    },
    /// Remove a user's second factors (authenticator app, recovery codes) and end all their
    /// sessions, for a user who lost their device; they sign in with the password alone and
    /// can set up a new app.
    ResetMfa {
        /// The user's email address or id.
        #[arg(value_name = "EMAIL|ID")]
        user: String,
    },
}

/// Runs a `user` subcommand against the store named in the config at `config_path`.
pub fn run(config_path: &Path, command: UserCommand) -> anyhow::Result<()> {
    let config = super::load(config_path)?;
    // Quiet by default (RUST_LOG overrides): audit events of these commands are on the `audit`
    // target at info level.
    super::init_logging(config.log.format, "warn");
    let store = super::open_store(&config)?;
    let admin = Admin {
        store,
        settings: crate::auth::service_settings(&config),
        clock: Clock::system(),
    };
    let out = match command {
        UserCommand::Add {
            email,
            name,
            roles,
            password_stdin,
            verified,
        } => {
            // Cheap checks first, so a typo does not cost a password prompt.
            let mut new = admin.prepare_add(&email, name.as_deref(), &roles)?;
            new.email_verified = verified;
            let password = prompt::new_password(password_stdin)?;
            admin.add(new, &password)?
        }
        UserCommand::List => table(&admin.store.list_users()?),
        UserCommand::Show { user } => {
            let found = admin.find(&user)?;
            let factors = admin.store.factors_of(&found.id)?;
            format!("{}\n{}", describe(&found), describe_factors(&factors))
        }
        UserCommand::SetRoles { user, roles, none } => {
            let roles = if none { Vec::new() } else { roles };
            admin.set_roles(&user, &roles)?
        }
        UserCommand::Disable { user } => admin.disable(&user)?,
        UserCommand::Enable { user } => admin.enable(&user)?,
        UserCommand::Delete { user, yes } => {
            let found = admin.find(&user)?;
            let question = format!(
                "Delete user {} ({})? This cannot be undone.",
                found.email, found.id
            );
            if !yes && !prompt::confirm(&question)? {
                bail!("not deleted");
            }
            admin.delete(&found)?
        }
        UserCommand::SetPassword {
            user,
            password_stdin,
        } => {
            let found = admin.find(&user)?;
            let password = prompt::new_password(password_stdin)?;
            admin.set_password(&found, &password)?
        }
        UserCommand::RevokeSessions { user } => admin.revoke_sessions(&user)?,
        UserCommand::ResetMfa { user } => admin.reset_mfa(&user)?,
    };
    say!("{out}")?;
    Ok(())
}

/// The store plus what the account rules need from the config. Methods return what to print.
struct Admin {
    store: Store,
    settings: ServiceSettings,
    clock: Clock,
}

/// A user about to be created, checked except for the password.
#[derive(Debug)]
struct NewUser {
    email: String,
    name: Option<String>,
    roles: Vec<String>,
    email_verified: bool,
}

impl Admin {
    /// Finds a user by email (anything with an `@`) or id.
    fn find(&self, key: &str) -> anyhow::Result<User> {
        let key = key.trim();
        if key.contains('@') {
            let email =
                normalize_email(key).ok_or_else(|| anyhow!("invalid email address {key:?}"))?;
            self.store
                .user_by_email(&email)?
                .ok_or_else(|| anyhow!("no user with email {email}"))
        } else {
            self.store
                .user_by_id(key)?
                .ok_or_else(|| anyhow!("no user with id {key:?}"))
        }
    }

    fn prepare_add(
        &self,
        email: &str,
        name: Option<&str>,
        roles: &[String],
    ) -> anyhow::Result<NewUser> {
        let email =
            normalize_email(email).ok_or_else(|| anyhow!("invalid email address {email:?}"))?;
        let roles = if roles.is_empty() {
            self.settings.default_roles.clone()
        } else {
            parse_roles(roles)?
        };
        if self.store.user_by_email(&email)?.is_some() {
            bail!("a user with email {email} already exists");
        }
        Ok(NewUser {
            email,
            name: name.and_then(clean_name),
            roles,
            email_verified: false,
        })
    }

    fn add(&self, new: NewUser, password: &SecretString) -> anyhow::Result<String> {
        let password_hash = self.hash(password, &new.email)?;
        let now = self.clock.unix();
        let user = User {
            id: uuid::Uuid::new_v4().to_string(),
            email: new.email,
            name: new.name,
            password_hash,
            roles: new.roles,
            disabled: false,
            created_at: now,
            updated_at: now,
            session_version: 0,
            email_verified: new.email_verified,
        };
        match self.store.create_user(&user) {
            Ok(()) => {}
            Err(StoreError::EmailTaken) => {
                bail!("a user with email {} already exists", user.email)
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(target: "audit", event = "user_add", via = "cli", user_id = %user.id);
        Ok(user.id)
    }

    fn set_roles(&self, key: &str, roles: &[String]) -> anyhow::Result<String> {
        let roles = parse_roles(roles)?;
        let user = self.find(key)?;
        if user.roles == roles {
            return Ok(format!(
                "{} already has roles {}; nothing changed",
                user.email,
                show_roles(&roles)
            ));
        }
        let now = self.clock.unix();
        // One transaction, touching only the roles: a concurrent change by the server (a
        // password rehash) or another admin is not overwritten.
        let user = self.store.modify_user(&user.id, |u| {
            u.roles = roles;
            u.updated_at = now;
            // Roles live in the access token: refuse the old tokens so clients refresh now
            // instead of carrying the old roles until the tokens expire.
            u.session_version = u.session_version.saturating_add(1);
            Ok(())
        })?;
        tracing::info!(target: "audit", event = "user_set_roles", via = "cli", user_id = %user.id, roles = ?user.roles);
        Ok(format!(
            "{} now has roles {}; current access tokens are refused and clients get the new roles on their next refresh",
            user.email,
            show_roles(&user.roles)
        ))
    }

    fn disable(&self, key: &str) -> anyhow::Result<String> {
        let user = self.find(key)?;
        let now = self.clock.unix();
        let user = self.store.modify_user(&user.id, |u| {
            if !u.disabled {
                u.disabled = true;
                u.updated_at = now;
            }
            Ok(())
        })?;
        self.end_sessions(&user)?;
        tracing::info!(target: "audit", event = "user_disable", via = "cli", user_id = %user.id);
        Ok(format!(
            "{} is disabled and all their sessions are ended",
            user.email
        ))
    }

    fn enable(&self, key: &str) -> anyhow::Result<String> {
        let user = self.find(key)?;
        if !user.disabled {
            return Ok(format!("{} is not disabled; nothing changed", user.email));
        }
        let now = self.clock.unix();
        let user = self.store.modify_user(&user.id, |u| {
            u.disabled = false;
            u.updated_at = now;
            Ok(())
        })?;
        tracing::info!(target: "audit", event = "user_enable", via = "cli", user_id = %user.id);
        Ok(format!("{} is enabled", user.email))
    }

    fn delete(&self, user: &User) -> anyhow::Result<String> {
        if !self.store.delete_user(&user.id, self.clock.unix())? {
            bail!("no user with id {:?}", user.id);
        }
        tracing::info!(target: "audit", event = "user_delete", via = "cli", user_id = %user.id);
        Ok(format!("{} ({}) is deleted", user.email, user.id))
    }

    fn set_password(&self, user: &User, password: &SecretString) -> anyhow::Result<String> {
        let password_hash = self.hash(password, &user.email)?;
        // One transaction touching only the hash: the prompt and the hash take a while, and
        // this must not undo changes made meanwhile.
        let now = self.clock.unix();
        let current = self.store.modify_user(&user.id, |u| {
            u.password_hash = password_hash;
            u.updated_at = now;
            Ok(())
        })?;
        self.end_sessions(&current)?;
        tracing::info!(target: "audit", event = "user_set_password", via = "cli", user_id = %current.id);
        Ok(format!(
            "password of {} changed and all their sessions are ended",
            current.email
        ))
    }

    fn revoke_sessions(&self, key: &str) -> anyhow::Result<String> {
        let user = self.find(key)?;
        self.end_sessions(&user)?;
        tracing::info!(target: "audit", event = "user_revoke_sessions", via = "cli", user_id = %user.id);
        Ok(format!("all sessions of {} are ended", user.email))
    }

    fn reset_mfa(&self, key: &str) -> anyhow::Result<String> {
        let user = self.find(key)?;
        self.store
            .update_factors(&user.id, |f| *f = crate::store::Factors::default())?;
        self.end_sessions(&user)?;
        tracing::info!(target: "audit", event = "user_reset_mfa", via = "cli", user_id = %user.id);
        Ok(format!(
            "second factors of {} removed and all their sessions ended",
            user.email
        ))
    }

    /// Bumps the session version and revokes every refresh family, in one transaction.
    fn end_sessions(&self, user: &User) -> anyhow::Result<()> {
        match self.store.end_all_sessions(&user.id, self.clock.unix())? {
            Some(_) => Ok(()),
            None => bail!("no user with id {:?}", user.id),
        }
    }

    /// Checks `password` against the policy for `email` and hashes it with the configured
    /// argon2id parameters (on a small runtime: the hasher runs on tokio's blocking pool).
    fn hash(&self, password: &SecretString, email: &str) -> anyhow::Result<String> {
        self.settings
            .policy
            .check(password.expose(), email)
            .map_err(|e| anyhow!("{e}"))?;
        let config = self.settings.hasher.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start the hashing runtime")?;
        runtime
            .block_on(async {
                let hasher = Hasher::new(config)?;
                hasher.hash(password).await
            })
            .context("hash the password")
    }
}

/// Checks role names like the config does and drops duplicates, keeping the order given.
fn parse_roles(roles: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(roles.len());
    for role in roles {
        if !is_role_name(role) {
            bail!("invalid role {role:?} (letters, digits, - _ . : only, at most 64)");
        }
        if !out.contains(role) {
            out.push(role.clone());
        }
    }
    Ok(out)
}

fn show_roles(roles: &[String]) -> String {
    if roles.is_empty() {
        "(none)".to_owned()
    } else {
        roles.join(",")
    }
}

fn timestamp(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// The `user list` table: id, email, roles, disabled, verified, created; columns padded to
/// fit.
fn table(users: &[User]) -> String {
    let mut rows: Vec<[String; 6]> = vec![[
        "ID".into(),
        "EMAIL".into(),
        "ROLES".into(),
        "DISABLED".into(),
        "VERIFIED".into(),
        "CREATED".into(),
    ]];
    rows.extend(users.iter().map(|u| {
        [
            u.id.clone(),
            u.email.clone(),
            if u.roles.is_empty() {
                "-".to_owned()
            } else {
                u.roles.join(",")
            },
            if u.disabled { "yes" } else { "no" }.to_owned(),
            if u.email_verified { "yes" } else { "no" }.to_owned(),
            timestamp(u.created_at),
        ]
    }));
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let lines: Vec<String> = rows
        .iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect();
    lines.join("\n")
}

/// The `user show` text. Everything but the password hash.
fn describe(u: &User) -> String {
    [
        format!("id:              {}", u.id),
        format!("email:           {}", u.email),
        format!(
            "email verified:  {}",
            if u.email_verified { "yes" } else { "no" }
        ),
        format!("name:            {}", u.name.as_deref().unwrap_or("-")),
        format!("roles:           {}", show_roles(&u.roles)),
        format!("disabled:        {}", if u.disabled { "yes" } else { "no" }),
        format!("created:         {}", timestamp(u.created_at)),
        format!("updated:         {}", timestamp(u.updated_at)),
        format!("session version: {}", u.session_version),
    ]
    .join("\n")
}

/// The `user show` lines about second factors.
fn describe_factors(f: &crate::store::Factors) -> String {
    let mut kinds = Vec::new();
    if f.totp.is_some() {
        kinds.push("authenticator app".to_owned());
    }
    match f.passkeys.len() {
        0 => {}
        1 => kinds.push("1 passkey".to_owned()),
        n => kinds.push(format!("{n} passkeys")),
    }
    let second = if kinds.is_empty() {
        "none".to_owned()
    } else {
        format!(
            "{}, {} recovery codes left",
            kinds.join(", "),
            f.recovery_codes.len()
        )
    };
    format!("second factor:   {second}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::auth::password::{Argon2Params, HasherConfig, Policy};
    use crate::store::test_util::{temp_store, user};

    fn admin(store: Store) -> Admin {
        let config = crate::config::from_str(
            "version: 1\nauth:\n  default_roles: [member]\n  password: {memory_kib: 1024, iterations: 1}\n",
            "test.yaml",
            Path::new("."),
            &|_| None,
        )
        .unwrap();
        let settings = crate::auth::service_settings(&config);
        assert_eq!(
            settings.hasher.params,
            Argon2Params {
                m_cost_kib: 1024,
                t_cost: 1,
                p_cost: 1
            }
        );
        Admin {
            store,
            settings: ServiceSettings {
                policy: Policy::default(),
                hasher: HasherConfig {
                    params: settings.hasher.params,
                    ..HasherConfig::default()
                },
                ..settings
            },
            clock: Clock::system(),
        }
    }

    fn pw(s: &str) -> SecretString {
        SecretString::new(s.to_owned())
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn roles_are_checked_and_deduplicated() {
        assert_eq!(
            parse_roles(&strings(&["admin", "team:ops", "admin", "a.b-c_d"])).unwrap(),
            strings(&["admin", "team:ops", "a.b-c_d"])
        );
        assert!(parse_roles(&[]).unwrap().is_empty());
        for bad in ["", "has space", "ümlaut", "a,b", &"x".repeat(65)] {
            let err = parse_roles(&[bad.to_owned()]).unwrap_err().to_string();
            assert!(err.starts_with("invalid role"), "{bad}: {err}");
        }
    }

    #[test]
    fn table_aligns_columns() {
        let mut bob = user("u-2", "bob@example.com");
        bob.roles.clear();
        bob.disabled = true;
        bob.email_verified = true;
        let out = table(&[user("u-1", "a@example.com"), bob]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID   EMAIL            ROLES  DISABLED  VERIFIED  CREATED"));
        assert!(
            lines[1].starts_with(
                "u-1  a@example.com    admin  no        no        1970-01-01T00:00:10Z"
            )
        );
        assert!(lines[2].starts_with("u-2  bob@example.com  -      yes       yes"));
        assert_eq!(table(&[]), "ID  EMAIL  ROLES  DISABLED  VERIFIED  CREATED");
    }

    #[test]
    fn describe_hides_the_hash() {
        let shown = describe(&user("u1", "ada@example.com"));
        assert!(!shown.contains("argon2"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("ada@example.com") && shown.contains("roles:           admin"));
    }

    #[test]
    fn find_by_email_or_id() {
        let (_dir, store) = temp_store();
        store.create_user(&user("u1", "ada@example.com")).unwrap();
        let admin = admin(store);
        assert_eq!(admin.find("u1").unwrap().email, "ada@example.com");
        assert_eq!(admin.find(" Ada@Example.COM ").unwrap().id, "u1");
        assert_eq!(
            admin.find("nobody@example.com").unwrap_err().to_string(),
            "no user with email nobody@example.com"
        );
        assert_eq!(
            admin.find("u9").unwrap_err().to_string(),
            "no user with id \"u9\""
        );
        assert!(
            admin
                .find("bad@@example.com")
                .unwrap_err()
                .to_string()
                .starts_with("invalid email address")
        );
    }

    #[test]
    fn add_applies_signup_rules() {
        let (_dir, store) = temp_store();
        let admin = admin(store);
        let new = admin
            .prepare_add("  Ada@Example.com", Some("  Ada\u{7} L. "), &[])
            .unwrap();
        assert_eq!(new.email, "ada@example.com");
        assert_eq!(new.name.as_deref(), Some("Ada L."));
        assert_eq!(new.roles, strings(&["member"]), "default roles");
        let err = admin.add(new, &pw("short")).unwrap_err().to_string();
        assert_eq!(err, "Password must be at least 8 characters");

        let new = admin.prepare_add("ada@example.com", None, &[]).unwrap();
        let id = admin.add(new, &pw("zq8vLw2x-long")).unwrap();
        let stored = admin.store.user_by_id(&id).unwrap().unwrap();
        assert!(!stored.email_verified, "unverified unless --verified");
        assert!(describe(&stored).contains("email verified:  no"));
        assert!(
            stored
                .password_hash
                .starts_with("$argon2id$v=19$m=1024,t=1,p=1$")
        );
        assert_eq!(
            admin
                .prepare_add("ADA@example.com", None, &[])
                .unwrap_err()
                .to_string(),
            "a user with email ada@example.com already exists"
        );
        let err = admin
            .prepare_add("bob@example.com", None, &strings(&["no spaces"]))
            .unwrap_err();
        assert!(err.to_string().starts_with("invalid role"), "{err}");

        let mut new = admin.prepare_add("cy@example.com", None, &[]).unwrap();
        new.email_verified = true; // `--verified`
        let id = admin.add(new, &pw("zq8vLw2x-long")).unwrap();
        let stored = admin.store.user_by_id(&id).unwrap().unwrap();
        assert!(stored.email_verified);
        assert!(describe(&stored).contains("email verified:  yes"));
    }

    #[test]
    fn set_roles_bumps_the_session_version_only_on_change() {
        let (_dir, store) = temp_store();
        store.create_user(&user("u1", "ada@example.com")).unwrap();
        let admin = admin(store);
        admin.set_roles("u1", &strings(&["admin", "ops"])).unwrap();
        let after = admin.store.user_by_id("u1").unwrap().unwrap();
        assert_eq!(after.roles, strings(&["admin", "ops"]));
        assert_eq!(after.session_version, 1);
        let seen = admin.store.last_change().unwrap();
        let msg = admin.set_roles("u1", &strings(&["admin", "ops"])).unwrap();
        assert!(msg.contains("nothing changed"), "{msg}");
        assert_eq!(admin.store.last_change().unwrap(), seen, "no write");
        admin.set_roles("u1", &[]).unwrap();
        let after = admin.store.user_by_id("u1").unwrap().unwrap();
        assert!(after.roles.is_empty());
        assert_eq!(after.session_version, 2);
    }

    #[test]
    fn disable_enable_delete_and_sessions_write_the_change_feed() {
        let (_dir, store) = temp_store();
        store.create_user(&user("u1", "ada@example.com")).unwrap();
        let admin = admin(store);
        let before = admin.store.last_change().unwrap();

        admin.disable("ada@example.com").unwrap();
        let flags = admin.store.flags_of("u1").unwrap().unwrap();
        assert!(flags.disabled);
        assert_eq!(flags.session_version, 1);
        assert!(admin.store.last_change().unwrap() > before);

        admin.enable("u1").unwrap();
        let flags = admin.store.flags_of("u1").unwrap().unwrap();
        assert!(!flags.disabled);
        assert!(admin.enable("u1").unwrap().contains("nothing changed"));

        admin.revoke_sessions("u1").unwrap();
        assert_eq!(
            admin.store.flags_of("u1").unwrap().unwrap().session_version,
            2
        );

        let found = admin.find("u1").unwrap();
        admin.set_password(&found, &pw("zq8vLw2x-new")).unwrap();
        let after = admin.store.user_by_id("u1").unwrap().unwrap();
        assert!(after.password_hash.starts_with("$argon2id$"));
        assert_eq!(after.session_version, 3);
        assert!(admin.set_password(&after, &pw("password")).is_err());

        admin.delete(&after).unwrap();
        assert!(admin.find("u1").is_err());
        assert!(admin.store.flags_of("u1").unwrap().unwrap().disabled);
        assert!(admin.delete(&after).is_err());
    }
}
