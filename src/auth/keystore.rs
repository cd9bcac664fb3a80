//! Keys the service keeps in the store's meta table, created on first start with
//! `put_meta_if_absent` so that processes starting together agree on them.
//!
//! - `signing_keys`: the EdDSA key set, JSON `{"current": kid, "keys": [StoredKey]}`.
//! - `refresh_key`: the 32 raw bytes of the HMAC key deriving refresh-token successors.

use serde::{Deserialize, Serialize};

use super::refresh_token;
use super::service::AuthError;
use super::token::{self, Keys, StoredKey, TokenError};
use crate::secret::Secret;
use crate::store::Store;

/// Meta key of the EdDSA key set.
const SIGNING_KEYS_META: &str = "signing_keys";
/// Meta key of the refresh successor key (raw bytes).
const REFRESH_KEY_META: &str = "refresh_key";

/// The EdDSA key set as stored under [`SIGNING_KEYS_META`].
#[derive(Serialize, Deserialize)]
struct KeySet {
    current: String,
    keys: Vec<StoredKey>,
}

/// Loads the EdDSA key set, creating it on first start (atomically: concurrent first starts
/// agree on one key).
pub(super) fn load_eddsa_keys(store: &Store, now: u64) -> Result<Keys, AuthError> {
    let bytes = match store.get_meta(SIGNING_KEYS_META)? {
        Some(bytes) => bytes,
        None => {
            let key = token::generate_ed25519(now).map_err(token_error)?;
            let set = KeySet {
                current: key.kid.clone(),
                keys: vec![key],
            };
            let json = serde_json::to_vec(&set)
                .map_err(|e| AuthError::Internal(format!("encoding signing keys: {e}")))?;
            let stored = store.put_meta_if_absent(SIGNING_KEYS_META, &json)?;
            if stored == json {
                tracing::info!(kid = %set.current, "generated a new Ed25519 signing key");
            }
            stored
        }
    };
    // serde's message could quote key material; report only where it failed.
    let set: KeySet = serde_json::from_slice(&bytes).map_err(|e| {
        AuthError::Internal(format!(
            "meta {SIGNING_KEYS_META}: undecodable key set (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    Keys::eddsa(&set.keys, &set.current).map_err(token_error)
}

/// Loads the refresh successor key, creating it on first start.
pub(super) fn load_refresh_key(store: &Store) -> Result<Secret<Vec<u8>>, AuthError> {
    let bytes = match store.get_meta(REFRESH_KEY_META)? {
        Some(bytes) => bytes,
        None => {
            let fresh = refresh_token::generate_key();
            store.put_meta_if_absent(REFRESH_KEY_META, fresh.expose())?
        }
    };
    if bytes.len() != refresh_token::KEY_LEN {
        return Err(AuthError::Internal(format!(
            "meta {REFRESH_KEY_META}: expected {} bytes, found {}",
            refresh_token::KEY_LEN,
            bytes.len()
        )));
    }
    Ok(Secret::new(bytes))
}

fn token_error(e: TokenError) -> AuthError {
    AuthError::Internal(e.to_string())
}
