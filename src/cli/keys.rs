//! `gateway keys`: list and rotate the EdDSA signing keys in the store, and encrypt the store's
//! secrets with a new `store.encryption_key` (or take the encryption off).
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
use crate::store::SealKey;

/// `gateway keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Show the key ids, when each was created, and which one signs.
    List,
    /// Add a new signing key; older keys keep verifying until their tokens expire.
    Rotate,
    /// Encrypt the store's secrets (signing, refresh and CSRF keys) with a new encryption key:
    /// they are decrypted with the configured store.encryption_key (or read in the clear) and
    /// written back under the new one. Stop the gateway (every replica), run this, set
    /// store.encryption_key to the new key, and start it again. Safe to repeat.
    Encrypt {
        /// File holding the new key material (at least 32 bytes; a trailing newline is
        /// ignored). Or set GATEWAY_NEW_STORE_ENCRYPTION_KEY.
        #[arg(long, conflicts_with = "new_key")]
        new_key_file: Option<std::path::PathBuf>,
        #[arg(
            long,
            env = "GATEWAY_NEW_STORE_ENCRYPTION_KEY",
            hide = true,
            hide_env_values = true
        )]
        new_key: Option<String>,
    },
    /// Store the secrets in the clear again (decrypted with the configured
    /// store.encryption_key); then remove the key from the config.
    Decrypt,
}

/// Runs a `keys` command against the store named in the config.
pub fn run(config_path: &Path, command: KeysCommand) -> anyhow::Result<()> {
    let config = super::load(config_path)?;
    super::init_logging(config.log.format, "warn");
    match command {
        KeysCommand::Encrypt {
            new_key_file,
            new_key,
        } => return encrypt(&config, new_key_file.as_deref(), new_key),
        KeysCommand::Decrypt => {
            if config.store_encryption_key.is_none() {
                bail!("store.encryption_key is not set: the store's secrets are not encrypted");
            }
            let store = super::open_store(&config)?;
            let n = store.reseal_secrets(&keystore::SECRET_META, None)?;
            say!(
                "{n} secrets now stored in the clear; remove store.encryption_key from the config"
            )?;
            return Ok(());
        }
        KeysCommand::List | KeysCommand::Rotate => {}
    }
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
                say!(
                    "{kid}  created {created}{}",
                    if current { "  (signing)" } else { "" }
                )?;
            }
        }
        KeysCommand::Rotate => {
            // Tokens signed with the old key live at most one access TTL (identity assertions
            // at most an hour), plus leeway.
            let longest = config.auth.access_ttl.as_secs().max(3600);
            let retire_after = longest + crate::auth::service::ACCESS_LEEWAY_SECS + 60;
            let (kid, dropped) = keystore::rotate_eddsa(&store, now, retire_after)?;
            say!("new signing key {kid}")?;
            for old in dropped {
                say!("dropped expired key {old}")?;
            }
        }
        KeysCommand::Encrypt { .. } | KeysCommand::Decrypt => {}
    }
    Ok(())
}

/// `gateway keys encrypt`: re-encrypts every secret under the new key.
fn encrypt(
    config: &crate::config::Config,
    file: Option<&Path>,
    inline: Option<String>,
) -> anyhow::Result<()> {
    let material = match (file, inline) {
        (Some(path), _) => {
            crate::private_file::check(path, "key file", crate::private_file::Rule::KeyFile)?;
            let bytes = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            bytes.trim_ascii_end().to_vec()
        }
        (None, Some(text)) => text.into_bytes(),
        (None, None) => {
            bail!("give the new key with --new-key-file or GATEWAY_NEW_STORE_ENCRYPTION_KEY")
        }
    };
    let Some(new) = SealKey::derive(&material) else {
        bail!(
            "the new key is {} bytes; use at least {} random bytes",
            material.len(),
            crate::store::seal::MIN_KEY_BYTES
        );
    };
    let store = super::open_store(config)?;
    let n = store.reseal_secrets(&keystore::SECRET_META, Some(&new))?;
    say!(
        "{n} secrets encrypted with the new key (key id {}); set store.encryption_key to it \
         before the gateway starts again",
        new.id_hex()
    )?;
    Ok(())
}
