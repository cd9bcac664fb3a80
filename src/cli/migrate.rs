//! `gateway migrate --to <postgres://... | file.redb>`: moves everything a running gateway
//! needs (users with their password hashes and verified state, live refresh sessions with
//! their records, pending reset and verification links, second factors and passkeys, linked
//! single sign-on identities, revocations, and the signing,
//! refresh and CSRF keys, so issued tokens stay valid) from the configured store into another,
//! empty one. The copy is read in one consistent snapshot and written in one transaction: the
//! target gets all of it or nothing. Stop the servers (or accept that sessions started during
//! the copy stay behind), then point the config at the new store.

use std::path::Path;

use anyhow::{Context, bail};

use crate::clock::Clock;
use crate::store::{Store, StoreError};

/// Runs the migration and prints what was copied.
pub fn run(config_path: &Path, to: &str) -> anyhow::Result<()> {
    let config = super::load(config_path)?;
    super::init_logging(config.log.format, "warn");
    let target_name = if crate::config::is_postgres_url(to) {
        crate::config::describe_postgres(to)
    } else {
        format!("redb file {to}")
    };
    let from_name = config.store.describe();
    let source = super::open_store(&config)?;
    let target = Store::open_location(to).with_context(|| format!("open {target_name}"))?;
    let snapshot = source
        .export(Clock::system().unix())
        .with_context(|| format!("read {from_name}"))?;
    match target.import(&snapshot) {
        Ok(()) => {}
        Err(StoreError::NotEmpty) => bail!(
            "{target_name} is in use: it has users or signing keys, so a gateway has started on \
             it. Migrate into a new, empty store before starting gateways on it (nothing was \
             written)"
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("write {target_name} (nothing was written)"));
        }
    }
    say!(
        "copied {} users, {} sessions with {} refresh tokens, {} pending mail links, {} users' \
         second factors, {} linked sign-in identities, {} revoked token ids, {} revoked sessions \
         and {} keys from {from_name} to {target_name}",
        snapshot.users.len(),
        snapshot.sessions.len(),
        snapshot.refresh.len(),
        snapshot.one_time.len(),
        snapshot.factors.len(),
        snapshot.identities.len(),
        snapshot.revoked_jtis.len(),
        snapshot.revoked_families.len(),
        snapshot.meta.len(),
    )?;
    Ok(())
}
