//! Keys the service keeps in the store's meta table, created on first start with
//! `put_secret_if_absent` so that processes starting together agree on them. They are the
//! store's secrets: encrypted at rest when `store.encryption_key` is set (see
//! [`crate::store::seal`]), and listed in [`SECRET_META`] so that start-up and `gateway keys
//! encrypt` find every one of them.
//!
//! - `signing_keys`: the EdDSA key set, JSON `{"current": kid, "keys": [StoredKey]}`.
//! - `refresh_key`: the 32 raw bytes of the HMAC key deriving refresh-token successors.
//! - `csrf_key`: the 32 raw bytes of the HMAC key signing double-submit CSRF tokens.

use serde::{Deserialize, Serialize};

use super::error::AuthError;
use super::refresh_token;
use super::token::{self, Keys, StoredKey, TokenError};
use crate::secret::Secret;
use crate::store::Store;

/// Meta key of the EdDSA key set.
const SIGNING_KEYS_META: &str = "signing_keys";
/// Meta key of the refresh successor key (raw bytes).
const REFRESH_KEY_META: &str = "refresh_key";
/// Meta key of the CSRF token key (raw bytes).
const CSRF_KEY_META: &str = "csrf_key";
/// Every meta value that is a secret. A new secret kept in the meta table belongs here.
pub const SECRET_META: [&str; 3] = [SIGNING_KEYS_META, REFRESH_KEY_META, CSRF_KEY_META];

/// The EdDSA key set as stored under [`SIGNING_KEYS_META`].
#[derive(Serialize, Deserialize)]
struct KeySet {
    current: String,
    keys: Vec<StoredKey>,
}

/// Loads the EdDSA key set, creating it on first start (atomically: concurrent first starts
/// agree on one key).
pub(crate) fn load_eddsa_keys(store: &Store, now: u64) -> Result<Keys, AuthError> {
    let bytes = match store.get_secret(SIGNING_KEYS_META)? {
        Some(bytes) => bytes,
        None => {
            let key = token::generate_ed25519(now).map_err(token_error)?;
            let set = KeySet {
                current: key.kid.clone(),
                keys: vec![key],
            };
            let json = serde_json::to_vec(&set)
                .map_err(|e| AuthError::Internal(format!("encoding signing keys: {e}")))?;
            let stored = store.put_secret_if_absent(SIGNING_KEYS_META, &json)?;
            if *stored.expose() == json {
                tracing::info!(kid = %set.current, "generated a new Ed25519 signing key");
            }
            stored
        }
    };
    // serde's message could quote key material; report only where it failed.
    let set: KeySet = serde_json::from_slice(bytes.expose()).map_err(|e| {
        AuthError::Internal(format!(
            "meta {SIGNING_KEYS_META}: undecodable key set (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    Keys::eddsa(&set.keys, &set.current).map_err(token_error)
}

/// Adds a new EdDSA key and makes it the one that signs. Older keys keep verifying until every
/// token they signed has expired: a key is dropped once its successor has been current for
/// longer than `retire_after` (the longest token lifetime plus leeway). Running servers learn
/// of the change through the store's change feed. Returns (new kid, dropped kids).
pub(crate) fn rotate_eddsa(
    store: &Store,
    now: u64,
    retire_after: u64,
) -> Result<(String, Vec<String>), AuthError> {
    // Make sure a set exists (first start may not have happened yet).
    load_eddsa_keys(store, now)?;
    let key = token::generate_ed25519(now).map_err(token_error)?;
    let kid = key.kid.clone();
    let mut dropped = Vec::new();
    // Read, change and write the set in one transaction: two concurrent rotations cannot lose
    // each other's key.
    store.update_secret_announced(SIGNING_KEYS_META, |bytes| -> Result<Vec<u8>, AuthError> {
        let bytes = bytes.ok_or_else(|| AuthError::Internal("signing keys vanished".into()))?;
        let mut set: KeySet = serde_json::from_slice(bytes).map_err(|e| {
            AuthError::Internal(format!("meta {SIGNING_KEYS_META}: line {}", e.line()))
        })?;
        set.keys.push(key);
        set.current = kid.clone();
        // Keys in creation order; key i retired when key i+1 was created.
        set.keys.sort_by_key(|k| k.created_at);
        let retired_at: Vec<u64> = set
            .keys
            .iter()
            .skip(1)
            .map(|k| k.created_at)
            .chain(std::iter::once(u64::MAX))
            .collect();
        let mut keep = Vec::with_capacity(set.keys.len());
        for (k, retired) in std::mem::take(&mut set.keys).into_iter().zip(retired_at) {
            if retired != u64::MAX && retired.saturating_add(retire_after) < now && k.kid != kid {
                dropped.push(k.kid.clone());
            } else {
                keep.push(k);
            }
        }
        set.keys = keep;
        // Check the result loads before saving it.
        Keys::eddsa(&set.keys, &set.current).map_err(token_error)?;
        serde_json::to_vec(&set)
            .map_err(|e| AuthError::Internal(format!("encoding signing keys: {e}")))
    })?;
    tracing::info!(target: "audit", event = "keys_rotated", %kid, dropped = dropped.len());
    Ok((kid, dropped))
}

/// The stored EdDSA key ids with their creation time and whether each is current.
pub(crate) fn list_eddsa(store: &Store) -> Result<Vec<(String, u64, bool)>, AuthError> {
    let Some(bytes) = store.get_secret(SIGNING_KEYS_META)? else {
        return Ok(Vec::new());
    };
    let set: KeySet = serde_json::from_slice(bytes.expose())
        .map_err(|e| AuthError::Internal(format!("meta {SIGNING_KEYS_META}: line {}", e.line())))?;
    Ok(set
        .keys
        .iter()
        .map(|k| (k.kid.clone(), k.created_at, k.kid == set.current))
        .collect())
}

/// Loads the refresh successor key, creating it on first start.
pub(super) fn load_refresh_key(store: &Store) -> Result<Secret<Vec<u8>>, AuthError> {
    load_raw_key(store, REFRESH_KEY_META, || {
        refresh_token::generate_key().expose().clone()
    })
}

/// Loads the CSRF token key, creating it on first start.
pub(super) fn load_csrf_key(store: &Store) -> Result<Secret<Vec<u8>>, AuthError> {
    load_raw_key(store, CSRF_KEY_META, || rand::random::<[u8; 32]>().to_vec())
}

/// A 32-byte key under `name`, made by `fresh` on first start.
fn load_raw_key(
    store: &Store,
    name: &str,
    fresh: impl FnOnce() -> Vec<u8>,
) -> Result<Secret<Vec<u8>>, AuthError> {
    let key = match store.get_secret(name)? {
        Some(key) => key,
        None => store.put_secret_if_absent(name, &fresh())?,
    };
    if key.expose().len() != refresh_token::KEY_LEN {
        return Err(AuthError::Internal(format!(
            "meta {name}: expected {} bytes, found {}",
            refresh_token::KEY_LEN,
            key.expose().len()
        )));
    }
    Ok(key)
}

fn token_error(e: TokenError) -> AuthError {
    AuthError::Internal(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_keys_until_their_tokens_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("g.redb")).unwrap();
        let first = load_eddsa_keys(&store, 0).unwrap().current_kid().to_owned();
        let (second, dropped) = rotate_eddsa(&store, 10, 100).unwrap();
        assert!(dropped.is_empty());
        let keys = load_eddsa_keys(&store, 10).unwrap();
        assert_eq!(keys.current_kid(), second);
        assert_eq!(keys.jwks()["keys"].as_array().unwrap().len(), 2);
        // The first key retired at 10; by 200 every token it signed (100 s) is gone.
        let (third, dropped) = rotate_eddsa(&store, 200, 100).unwrap();
        assert_eq!(dropped, vec![first]);
        let listed: Vec<String> = list_eddsa(&store)
            .unwrap()
            .into_iter()
            .map(|k| k.0)
            .collect();
        assert_eq!(listed, vec![second, third.clone()]);
        // Running servers hear about it on the change feed.
        let last = store.changes_since(0, 1000).unwrap();
        assert!(last.iter().any(|(_, c)| *c == crate::store::Change::Keys));
        assert_eq!(load_eddsa_keys(&store, 200).unwrap().current_kid(), third);
    }
}
