//! Encryption at rest for the secrets the store keeps (signing keys, the refresh and CSRF keys,
//! and later per-user secrets), with the operator's `store.encryption_key`.
//!
//! File modes protect a redb file on its host; they do nothing for a copied file or backup, nor
//! for a PostgreSQL database, where every role that can read the meta table would read the
//! signing keys. With a key configured, a copy of the store yields no usable secret.
//!
//! - The configured key material (at least 32 bytes, usually random text) goes through
//!   HKDF-SHA256 to an XChaCha20-Poly1305 key, so any byte string of that length works as it is.
//! - A sealed value is `MAGIC || key id (8) || nonce (24) || ciphertext+tag`. The nonce is random
//!   (192 bits, so random nonces never repeat in practice); the key id is derived from the key,
//!   so a wrong key is told apart from a damaged value; the name of the value is the associated
//!   data, so a sealed value cannot be moved under another name.
//! - A plaintext value never starts with the magic at that length: keys stored in the clear are
//!   JSON (`{...}`) or exactly 32 raw bytes, shorter than any sealed value.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use super::StoreError;

/// The first bytes of every sealed value.
const MAGIC: &[u8; 7] = b"GWSEAL1";
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// The shortest sealed value (an empty plaintext).
const MIN_SEALED_LEN: usize = MAGIC.len() + KEY_ID_LEN + NONCE_LEN + TAG_LEN;
/// The least key material accepted, in bytes.
pub const MIN_KEY_BYTES: usize = crate::config::MIN_ENCRYPTION_KEY_BYTES;

/// An encryption key for the store's secrets. `Debug` shows the key id only.
#[derive(Clone)]
pub struct SealKey {
    cipher: XChaCha20Poly1305,
    id: [u8; KEY_ID_LEN],
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealKey({})", self.id_hex())
    }
}

impl SealKey {
    /// Derives the key from the operator's key material; `None` if it is shorter than
    /// [`MIN_KEY_BYTES`].
    pub fn derive(material: &[u8]) -> Option<SealKey> {
        if material.len() < MIN_KEY_BYTES {
            return None;
        }
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"gateway store encryption"), material);
        let mut key = [0u8; 32];
        let mut id = [0u8; KEY_ID_LEN];
        hk.expand(b"xchacha20poly1305 key v1", &mut key).ok()?;
        hk.expand(b"key id v1", &mut id).ok()?;
        let cipher = XChaCha20Poly1305::new(&key.into());
        Some(SealKey { cipher, id })
    }

    /// A short public name of the key, for messages: which key sealed a value.
    pub fn id_hex(&self) -> String {
        hex(&self.id)
    }

    /// Encrypts `plaintext`, stored under `name`.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let ciphertext = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Sealed(format!("cannot encrypt {name}")))?;
        let mut out = Vec::with_capacity(MIN_SEALED_LEN + plaintext.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Decrypts a value [`SealKey::seal`] made under `name`.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let Some(parts) = split(sealed) else {
            return Err(StoreError::Sealed(format!(
                "{name}: not an encrypted value"
            )));
        };
        if parts.key_id != self.id {
            return Err(StoreError::Sealed(format!(
                "{name} was encrypted with another store.encryption_key (key id {}; the \
                 configured key's id is {}); configure the key it was encrypted with",
                hex(parts.key_id),
                self.id_hex()
            )));
        }
        let nonce: [u8; NONCE_LEN] = parts
            .nonce
            .try_into()
            .map_err(|_| StoreError::Sealed(format!("{name}: damaged nonce")))?;
        self.cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: parts.ciphertext,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| {
                StoreError::Sealed(format!(
                    "{name}: the encrypted value is damaged or was moved from another name"
                ))
            })
    }
}

/// Whether a stored value is sealed (rather than a secret kept in the clear).
pub fn is_sealed(value: &[u8]) -> bool {
    split(value).is_some()
}

/// The key id a sealed value names, in hex.
pub fn sealed_key_id(value: &[u8]) -> Option<String> {
    split(value).map(|p| hex(p.key_id))
}

struct Parts<'a> {
    key_id: &'a [u8],
    nonce: &'a [u8],
    ciphertext: &'a [u8],
}

fn split(value: &[u8]) -> Option<Parts<'_>> {
    if value.len() < MIN_SEALED_LEN {
        return None;
    }
    let rest = value.strip_prefix(MAGIC.as_slice())?;
    let (key_id, rest) = rest.split_at_checked(KEY_ID_LEN)?;
    let (nonce, ciphertext) = rest.split_at_checked(NONCE_LEN)?;
    Some(Parts {
        key_id,
        nonce,
        ciphertext,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(fill: u8) -> SealKey {
        SealKey::derive(&[fill; 32]).unwrap()
    }

    #[test]
    fn round_trip_and_fresh_nonces() {
        let k = key(1);
        let a = k.seal("refresh_key", b"secret bytes").unwrap();
        let b = k.seal("refresh_key", b"secret bytes").unwrap();
        assert_ne!(a, b, "each seal draws a new nonce");
        assert!(is_sealed(&a));
        assert!(!a.windows(12).any(|w| w == b"secret bytes"));
        assert_eq!(k.open("refresh_key", &a).unwrap(), b"secret bytes");
        assert_eq!(sealed_key_id(&a), Some(k.id_hex()));
    }

    #[test]
    fn short_key_material_is_refused() {
        assert!(SealKey::derive(&[7; 31]).is_none());
        assert!(SealKey::derive(&[7; 32]).is_some());
    }

    #[test]
    fn another_key_a_moved_value_or_a_flipped_bit_do_not_open() {
        let k = key(1);
        let sealed = k.seal("csrf_key", b"x").unwrap();
        let e = key(2).open("csrf_key", &sealed).unwrap_err().to_string();
        assert!(e.contains("another store.encryption_key"), "{e}");
        let e = k.open("refresh_key", &sealed).unwrap_err().to_string();
        assert!(e.contains("damaged or was moved"), "{e}");
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(k.open("csrf_key", &flipped).is_err());
        let e = k
            .open("csrf_key", b"{\"plain\": 1}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an encrypted value"), "{e}");
    }

    #[test]
    fn keys_in_the_clear_are_never_taken_for_sealed_values() {
        // A 32-byte raw key, even one that starts with the magic, is too short to be sealed.
        let mut raw = [0u8; 32];
        raw[..7].copy_from_slice(MAGIC);
        assert!(!is_sealed(&raw));
        assert!(!is_sealed(br#"{"current":"k1","keys":[]}"#));
    }

    #[test]
    fn debug_shows_the_key_id_only() {
        let k = key(3);
        assert_eq!(format!("{k:?}"), format!("SealKey({})", k.id_hex()));
    }
}
