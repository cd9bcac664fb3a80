//! Opaque refresh tokens: generation, the SHA-256 under which the store keeps them, and the
//! derived successor used by rotation.
//!
//! A token is 32 random bytes in base64url without padding (43 characters). Only its SHA-256 is
//! stored. The token that replaces it on rotation is not random but
//! `base64url(HMAC-SHA256(refresh_key, token))`, with a 32-byte key kept in the store's meta
//! table: whoever holds a token can be handed its successor again (two tabs refreshing at once)
//! without the server ever storing a plaintext token, and without the key nobody can compute a
//! successor from a token.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::secret::{Secret, SecretString};
use crate::store::TokenHash;

/// Length of an encoded refresh token: 32 bytes in unpadded base64url.
pub const TOKEN_LEN: usize = 43;
/// Length of the HMAC key that derives successors.
pub const KEY_LEN: usize = 32;

/// A fresh random refresh token.
pub fn generate() -> SecretString {
    Secret::new(URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()))
}

/// A fresh random successor key.
pub fn generate_key() -> Secret<Vec<u8>> {
    Secret::new(rand::random::<[u8; KEY_LEN]>().to_vec())
}

/// Whether `token` has the shape of a refresh token; anything else is refused before hashing
/// or touching the store.
pub fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The key under which the store keeps `token`.
pub fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// The token that replaces `token` when it is rotated. `None` only if the key is unusable,
/// which [`crate::auth::service`] rules out when it loads the key.
pub fn successor(key: &Secret<Vec<u8>>, token: &str) -> Option<SecretString> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose()).ok()?;
    mac.update(token.as_bytes());
    Some(Secret::new(
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_well_formed_and_distinct() {
        let a = generate();
        let b = generate();
        assert!(well_formed(a.expose()));
        assert_ne!(a, b);
        assert!(!well_formed(""));
        assert!(!well_formed(&format!("{}=", &a.expose()[..42])));
        assert!(!well_formed(&format!("{}a", a.expose())));
        assert!(!well_formed(
            "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
        ));
    }

    #[test]
    fn successor_is_deterministic_keyed_and_well_formed() {
        let key = generate_key();
        let other = generate_key();
        let t = generate();
        let s1 = successor(&key, t.expose()).unwrap();
        assert_eq!(s1, successor(&key, t.expose()).unwrap());
        assert_ne!(s1, successor(&other, t.expose()).unwrap());
        assert_ne!(&s1, &t);
        assert!(well_formed(s1.expose()));
        assert_ne!(hash(s1.expose()), hash(t.expose()));
    }

    #[test]
    fn hash_is_sha256() {
        // SHA-256("abc"), FIPS 180-2 test vector.
        assert_eq!(
            hash("abc")[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "{:x?}",
            hash("abc")
        );
    }
}
