//! `gateway keys`: list and rotate the EdDSA signing keys in the store.
//!
//! `rotate` adds a new key and makes it the one that signs; tokens signed by older keys stay
//! valid until they expire (the JWKS lists every key still in use), and keys whose tokens can no
//! longer be alive are dropped. A running gateway picks the new key up from the store's change
//! feed within about a second, like user changes.

use std::path::Path;

use anyhow::bail;
use clap::Subcommand;

use crate::auth::keystore;
use crate::config::TokenAlgorithm;

/// `gateway keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Show the key ids, when each was created, and which one signs.
    List,
    /// Add a new signing key; older keys keep verifying until their tokens expire.
    Rotate,
}

/// Runs a `keys` command against the store named in the config.
pub fn run(config_path: &Path, command: KeysCommand) -> anyhow::Result<()> {
    let config = super::load(config_path)?;
    super::init_logging(config.log.format, "warn");
    if config.auth.algorithm != TokenAlgorithm::EdDSA {
        bail!(
            "auth.algorithm is HS256: its key is the configured secret; rotate it by changing \
             auth.jwt_secret and restarting"
        );
    }
    let store = super::open_store(&config)?;
    let now = crate::clock::Clock::system().unix();
    match command {
        KeysCommand::List => {
            for (kid, created, current) in keystore::list_eddsa(&store)? {
                let created = humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(created),
                );
                println!(
                    "{kid}  created {created}{}",
                    if current { "  (signing)" } else { "" }
                );
            }
        }
        KeysCommand::Rotate => {
            // Tokens signed with the old key live at most one access TTL (identity assertions
            // at most an hour), plus leeway.
            let longest = config.auth.access_ttl.as_secs().max(3600);
            let retire_after = longest + crate::auth::service::ACCESS_LEEWAY_SECS + 60;
            let (kid, dropped) = keystore::rotate_eddsa(&store, now, retire_after)?;
            println!("new signing key {kid}");
            for old in dropped {
                println!("dropped expired key {old}");
            }
        }
    }
    Ok(())
}
