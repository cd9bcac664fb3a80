//! Key material at rest: the Ed25519 keys as the store keeps them (serde JSON, byte fields as
//! base64url, the private key never in `Debug`), making a new one, and checking at start-up that a
//! stored pair belongs together.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};

use super::{Algorithm, TokenError};
use crate::secret::Secret;

/// Key material as persisted in the store (serde JSON; byte fields as base64url).
/// `Debug` never prints the private key.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredKey {
    /// Key id, as put in token headers and the JWKS.
    pub kid: String,
    /// Algorithm of the key; only [`Algorithm::EdDSA`] keys are stored.
    pub alg: Algorithm,
    /// The private key as PKCS#8 DER.
    #[serde(with = "b64_secret")]
    pub private_der: Secret<Vec<u8>>,
    /// The raw 32-byte Ed25519 public key.
    #[serde(with = "b64_bytes")]
    pub public_raw: Vec<u8>,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: u64,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("private_der", &self.private_der)
            .field("public_raw", &URL_SAFE_NO_PAD.encode(&self.public_raw))
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// Generates a fresh Ed25519 key with a random, url-safe 16-character kid.
pub fn generate_ed25519(now: u64) -> Result<StoredKey, TokenError> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .map_err(|e| TokenError::Internal(format!("generating Ed25519 key: {e}")))?;
    Ok(StoredKey {
        kid: URL_SAFE_NO_PAD.encode(rand::random::<[u8; 12]>()),
        alg: Algorithm::EdDSA,
        private_der: Secret::new(pair.serialize_der()),
        public_raw: pair.public_key_raw().to_vec(),
        created_at: now,
    })
}

/// Signs and verifies a probe so that a private key that does not match its public key (or is not
/// a PKCS#8 Ed25519 key) is found at start-up, not when the first token fails.
pub(super) fn check_pair(
    signing: &EncodingKey,
    public_raw: &[u8],
    kid: &str,
) -> Result<(), TokenError> {
    let alg = jsonwebtoken::Algorithm::EdDSA;
    let probe = b"gateway key check";
    let signature = jsonwebtoken::crypto::sign(probe, signing, alg)
        .map_err(|e| TokenError::Internal(format!("private key of {kid:?} is unusable: {e}")))?;
    let matches = jsonwebtoken::crypto::verify(
        &signature,
        probe,
        &DecodingKey::from_ed_der(public_raw),
        alg,
    )
    .map_err(|e| TokenError::Internal(format!("public key of {kid:?} is unusable: {e}")))?;
    if matches {
        Ok(())
    } else {
        Err(TokenError::Internal(format!(
            "private and public key of {kid:?} do not match"
        )))
    }
}

/// Serde for byte vectors as unpadded base64url strings.
mod b64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        URL_SAFE_NO_PAD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// Serde for secret byte vectors as unpadded base64url strings.
mod b64_secret {
    use serde::{Deserializer, Serializer};

    use crate::secret::Secret;

    pub fn serialize<S: Serializer>(secret: &Secret<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        super::b64_bytes::serialize(secret.expose(), s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Secret<Vec<u8>>, D::Error> {
        super::b64_bytes::deserialize(d).map(Secret::new)
    }
}
