//! Signing keys, access tokens (RFC 9068 `at+jwt`) and the JWKS document.
//!
//! [`Keys`] is built once from configuration or the store (Ed25519 keys with one current signer, or
//! a single HS256 secret) and shared behind an `Arc`. It issues access tokens, verifies them, signs
//! other short-lived JWTs (identity assertions for upstreams) and renders the public JWKS.
//!
//! Verification is the security core and fails closed. Before any cryptography the token is
//! checked structurally by this module, not by `jsonwebtoken`: size cap, exactly three
//! base64url parts, a header without duplicate members whose `alg` equals the algorithm pinned in
//! `Keys` (never `none`, never chosen by the token), `typ` = `at+jwt`, a `kid` naming a known key,
//! and none of the members that point at other keys (`jwk`, `jku`, `x5u`, `x5c`, `crit`); nothing is
//! ever fetched. `jsonwebtoken` then checks only the signature; time (`exp`, `nbf`, `iat`) is judged
//! here against the caller's `now`, so tests drive the clock, and `iss`/`aud` must match exactly.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// Longest token accepted for verification; anything longer is rejected before parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// The JOSE `typ` of access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// Shortest accepted HS256 secret, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_HS256_SECRET_LEN: usize = 32;

/// Header members that name or embed a key, or demand extensions: a token must never choose its
/// own verification key, and we implement no critical extensions.
const FORBIDDEN_HEADERS: &[&str] = &["jwk", "jku", "x5u", "x5c", "crit"];

/// The signature algorithms the gateway signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    /// Ed25519 (RFC 8037); keys are published in the JWKS.
    EdDSA,
    /// HMAC-SHA-256 with a shared secret; nothing is published.
    HS256,
}

impl Algorithm {
    /// The JOSE `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::EdDSA => "EdDSA",
            Algorithm::HS256 => "HS256",
        }
    }

    fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Algorithm::HS256 => jsonwebtoken::Algorithm::HS256,
        }
    }

    /// Length in bytes of a signature made with this algorithm.
    fn signature_len(self) -> usize {
        match self {
            Algorithm::EdDSA => 64,
            Algorithm::HS256 => 32,
        }
    }
}

/// Failures of key handling, issuing and verification.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a well-formed token: size, shape, encoding, JSON, or claim types.
    #[error("malformed token")]
    Malformed,
    /// The header's `alg` is not the configured algorithm.
    #[error("token uses an algorithm that is not accepted")]
    WrongAlgorithm,
    /// The header's `typ` is not the expected one.
    #[error("token has the wrong type")]
    WrongType,
    /// The header's `kid` is missing or names no known key.
    #[error("token is signed with an unknown key")]
    UnknownKey,
    /// The header carries a member that names or embeds a key (`jwk`, `jku`, `x5u`, `x5c`) or `crit`.
    #[error("token header carries a forbidden member")]
    ForbiddenHeader,
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` has passed (beyond the leeway).
    #[error("token has expired")]
    Expired,
    /// `nbf` or `iat` lies in the future (beyond the leeway).
    #[error("token is not valid yet")]
    NotYetValid,
    /// `iss` is not ours.
    #[error("token has the wrong issuer")]
    WrongIssuer,
    /// `aud` is not ours.
    #[error("token has the wrong audience")]
    WrongAudience,
    /// An HS256 secret shorter than [`MIN_HS256_SECRET_LEN`] bytes.
    #[error("HS256 secret must be at least {MIN_HS256_SECRET_LEN} bytes")]
    WeakSecret,
    /// Bad key material or a failure that is not the token's fault.
    #[error("token key error: {0}")]
    Internal(String),
}

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

/// How access tokens are issued and what verification expects.
#[derive(Clone, Debug)]
pub struct TokenSettings {
    /// `iss` of issued tokens; verification requires exactly this value.
    pub issuer: String,
    /// `aud` of issued tokens; verification requires exactly this value.
    pub audience: String,
    /// Lifetime of an access token.
    pub access_ttl: Duration,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
}

/// Claims of an access token. The `typ` header is `at+jwt` (RFC 9068).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AccessClaims {
    /// User id.
    pub sub: String,
    /// User e-mail address.
    pub email: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Roles of the user at issue.
    pub roles: Vec<String>,
    /// Session id: the refresh-token family id.
    pub sid: String,
    /// The user's session version at issue; bumping it invalidates all their tokens.
    pub sv: u64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Not before, seconds since the Unix epoch.
    pub nbf: u64,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Unique token id (UUID v4), for revocation.
    pub jti: String,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// The identity header values made from these claims, made once per verified token (the
    /// verified-token cache keeps the claims, so every later request reuses them).
    #[serde(skip)]
    pub identity: IdentityValues,
}

/// A once-filled slot for the identity header values of some claims: user id, e-mail, name,
/// roles (`None` for a value that cannot be a header value). It takes no part in comparisons
/// and holds nothing secret.
#[derive(Clone, Default)]
pub struct IdentityValues(std::sync::OnceLock<[Option<http::HeaderValue>; 4]>);

impl IdentityValues {
    /// The values, made by `make` the first time.
    pub fn get_or_init(
        &self,
        make: impl FnOnce() -> [Option<http::HeaderValue>; 4],
    ) -> &[Option<http::HeaderValue>; 4] {
        self.0.get_or_init(make)
    }
}

impl PartialEq for IdentityValues {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for IdentityValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "IdentityValues(made)"
        } else {
            "IdentityValues(-)"
        })
    }
}

/// Who an access token is issued to.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// User id.
    pub user_id: &'a str,
    /// User e-mail address.
    pub email: &'a str,
    /// Display name.
    pub name: Option<&'a str>,
    /// Roles of the user.
    pub roles: &'a [String],
    /// Session (refresh family) id.
    pub session_id: &'a str,
    /// The user's current session version.
    pub session_version: u64,
}

/// The signing keys in force: one current key signs, every listed key verifies (so rotation keeps
/// tokens signed by an older key valid until they expire). Cheap to clone.
#[derive(Clone)]
pub struct Keys(Arc<KeysInner>);

struct KeysInner {
    alg: Algorithm,
    current_kid: String,
    signing: EncodingKey,
    verifying: Vec<VerifyingKey>,
    /// Signature-only validation: algorithm pinned, time and audience checked by us.
    validation: Validation,
}

struct VerifyingKey {
    kid: String,
    decoding: DecodingKey,
    /// Raw Ed25519 public key; empty for HS256.
    public_raw: Vec<u8>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<&str> = self.0.verifying.iter().map(|k| k.kid.as_str()).collect();
        f.debug_struct("Keys")
            .field("alg", &self.0.alg)
            .field("current_kid", &self.0.current_kid)
            .field("kids", &kids)
            .finish()
    }
}

impl Keys {
    /// Ed25519 keys: `current_kid` signs, all of `keys` verify. Checks every key's shape and that
    /// the current private key matches its public key.
    pub fn eddsa(keys: &[StoredKey], current_kid: &str) -> Result<Keys, TokenError> {
        let mut verifying = Vec::with_capacity(keys.len());
        for key in keys {
            if key.alg != Algorithm::EdDSA {
                return Err(TokenError::Internal(format!(
                    "key {:?} is {:?}, expected EdDSA",
                    key.kid, key.alg
                )));
            }
            if key.kid.is_empty() || verifying.iter().any(|v: &VerifyingKey| v.kid == key.kid) {
                return Err(TokenError::Internal(format!(
                    "key id {:?} is empty or not unique",
                    key.kid
                )));
            }
            // jsonwebtoken's Ed25519 verifier slices the first 32 bytes and panics on fewer.
            if key.public_raw.len() != 32 {
                return Err(TokenError::Internal(format!(
                    "public key of {:?} is {} bytes, expected 32",
                    key.kid,
                    key.public_raw.len()
                )));
            }
            verifying.push(VerifyingKey {
                kid: key.kid.clone(),
                decoding: DecodingKey::from_ed_der(&key.public_raw),
                public_raw: key.public_raw.clone(),
            });
        }
        let current = keys.iter().find(|k| k.kid == current_kid).ok_or_else(|| {
            TokenError::Internal(format!("current key {current_kid:?} not among the keys"))
        })?;
        let signing = EncodingKey::from_ed_der(current.private_der.expose());
        check_pair(&signing, &current.public_raw, &current.kid)?;
        Ok(Keys::build(
            Algorithm::EdDSA,
            current.kid.clone(),
            signing,
            verifying,
        ))
    }

    /// A single HS256 secret of at least [`MIN_HS256_SECRET_LEN`] bytes. Its kid is the hex of the
    /// first 8 bytes of SHA-256(secret), so replacing the secret changes the kid.
    pub fn hs256(secret: &Secret<Vec<u8>>) -> Result<Keys, TokenError> {
        let bytes = secret.expose();
        if bytes.len() < MIN_HS256_SECRET_LEN {
            return Err(TokenError::WeakSecret);
        }
        let digest = Sha256::digest(bytes);
        let kid: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let verifying = vec![VerifyingKey {
            kid: kid.clone(),
            decoding: DecodingKey::from_secret(bytes),
            public_raw: Vec::new(),
        }];
        Ok(Keys::build(
            Algorithm::HS256,
            kid,
            EncodingKey::from_secret(bytes),
            verifying,
        ))
    }

    fn build(
        alg: Algorithm,
        current_kid: String,
        signing: EncodingKey,
        verifying: Vec<VerifyingKey>,
    ) -> Keys {
        let mut validation = Validation::new(alg.jwt());
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        Keys(Arc::new(KeysInner {
            alg,
            current_kid,
            signing,
            verifying,
            validation,
        }))
    }

    /// The pinned algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.0.alg
    }

    /// The kid of the key that signs.
    pub fn current_kid(&self) -> &str {
        &self.0.current_kid
    }

    /// Issues an access token for `subject`: `iat = nbf = now`, `exp = now + access_ttl`, random `jti`.
    pub fn issue_access(
        &self,
        settings: &TokenSettings,
        subject: &Subject,
        now: u64,
    ) -> Result<(String, AccessClaims), TokenError> {
        let exp = now
            .checked_add(settings.access_ttl.as_secs())
            .ok_or_else(|| TokenError::Internal("access token expiry overflows".into()))?;
        let claims = AccessClaims {
            sub: subject.user_id.to_owned(),
            email: subject.email.to_owned(),
            name: subject.name.map(str::to_owned),
            roles: subject.roles.to_vec(),
            sid: subject.session_id.to_owned(),
            sv: subject.session_version,
            iat: now,
            nbf: now,
            exp,
            jti: uuid::Uuid::new_v4().to_string(),
            iss: settings.issuer.clone(),
            aud: settings.audience.clone(),
            identity: IdentityValues::default(),
        };
        let token = self.sign(ACCESS_TOKEN_TYP, &claims)?;
        Ok((token, claims))
    }

    /// Verifies an access token at time `now`; see the module docs for the rules.
    pub fn verify_access(
        &self,
        settings: &TokenSettings,
        token: &str,
        now: u64,
    ) -> Result<AccessClaims, TokenError> {
        let key = self.check_structure(token, ACCESS_TOKEN_TYP)?;
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &self.0.validation)
            .map_err(map_jwt_error)?
            .claims;
        if claims.iss != settings.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if claims.aud != settings.audience {
            return Err(TokenError::WrongAudience);
        }
        let leeway = settings.leeway_secs;
        // RFC 7519 §4.1.4: the token must not be accepted on or after `exp`.
        if now >= claims.exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        let horizon = now.saturating_add(leeway);
        if claims.nbf > horizon || claims.iat > horizon {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }

    /// The public keys as a JWKS document; `{"keys":[]}` for HS256, whose secret is never published.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = match self.0.alg {
            Algorithm::HS256 => Vec::new(),
            Algorithm::EdDSA => self
                .0
                .verifying
                .iter()
                .map(|k| {
                    serde_json::json!({
                        "kty": "OKP",
                        "crv": "Ed25519",
                        "x": URL_SAFE_NO_PAD.encode(&k.public_raw),
                        "kid": k.kid,
                        "alg": "EdDSA",
                        "use": "sig",
                    })
                })
                .collect(),
        };
        serde_json::json!({ "keys": keys })
    }

    /// Signs other short-lived JWTs (identity assertions for upstreams) with the current key; the
    /// caller chooses the header `typ`. `at+jwt` is refused so that nothing but
    /// [`Keys::issue_access`] can mint access tokens, and `claims` must be a JSON object.
    pub fn sign_json(&self, typ: &str, claims: &Value) -> Result<String, TokenError> {
        if typ.is_empty() || typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) {
            return Err(TokenError::WrongType);
        }
        if !claims.is_object() {
            return Err(TokenError::Internal(
                "JWT claims must be a JSON object".into(),
            ));
        }
        self.sign(typ, claims)
    }

    fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, TokenError> {
        let mut header = Header::new(self.0.alg.jwt());
        header.typ = Some(typ.to_owned());
        header.kid = Some(self.0.current_kid.clone());
        jsonwebtoken::encode(&header, claims, &self.0.signing)
            .map_err(|e| TokenError::Internal(format!("signing token: {e}")))
    }

    /// Everything that can be checked without cryptography; returns the key named by `kid`.
    fn check_structure(&self, token: &str, typ: &str) -> Result<&VerifyingKey, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| TokenError::Malformed)?;
        let header = serde_json::from_slice::<UniqueMap>(&header)
            .map_err(|_| TokenError::Malformed)?
            .0;

        match header.get("alg").and_then(Value::as_str) {
            None => return Err(TokenError::Malformed),
            Some(alg) if alg != self.0.alg.as_str() => return Err(TokenError::WrongAlgorithm),
            Some(_) => {}
        }
        if FORBIDDEN_HEADERS
            .iter()
            .any(|name| header.contains_key(*name))
        {
            return Err(TokenError::ForbiddenHeader);
        }
        match header.get("typ").and_then(Value::as_str) {
            Some(t) if t.eq_ignore_ascii_case(typ) => {}
            _ => return Err(TokenError::WrongType),
        }
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .ok_or(TokenError::UnknownKey)?;
        let key = self
            .0
            .verifying
            .iter()
            .find(|k| k.kid == kid)
            .ok_or(TokenError::UnknownKey)?;

        if payload.is_empty() || URL_SAFE_NO_PAD.decode(payload).is_err() {
            return Err(TokenError::Malformed);
        }
        match URL_SAFE_NO_PAD.decode(signature) {
            Ok(sig) if sig.len() == self.0.alg.signature_len() => Ok(key),
            _ => Err(TokenError::Malformed),
        }
    }
}

/// Signs and verifies a probe so that a private key that does not match its public key (or is not
/// a PKCS#8 Ed25519 key) is found at start-up, not when the first token fails.
fn check_pair(signing: &EncodingKey, public_raw: &[u8], kid: &str) -> Result<(), TokenError> {
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

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> TokenError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature => TokenError::BadSignature,
        K::InvalidAlgorithm
        | K::MissingAlgorithm
        | K::UnsupportedAlgorithm
        | K::InvalidAlgorithmName => TokenError::WrongAlgorithm,
        K::InvalidIssuer => TokenError::WrongIssuer,
        K::InvalidAudience => TokenError::WrongAudience,
        K::ExpiredSignature => TokenError::Expired,
        K::ImmatureSignature => TokenError::NotYetValid,
        K::InvalidToken
        | K::Base64(_)
        | K::Json(_)
        | K::Utf8(_)
        | K::MissingRequiredClaim(_)
        | K::InvalidClaimFormat(_)
        | K::InvalidSubject => TokenError::Malformed,
        _ => TokenError::Internal(e.to_string()),
    }
}

/// A JSON object that refuses duplicate members, so that our reading of a header cannot differ
/// from another parser's (`serde_json::Map` silently keeps the last duplicate).
struct UniqueMap(Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueMap {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = UniqueMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object without duplicate members")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<UniqueMap, A::Error> {
                let mut map = Map::new();
                while let Some((key, value)) = access.next_entry::<String, Value>()? {
                    if map.contains_key(&key) {
                        return Err(serde::de::Error::custom(format!(
                            "duplicate member {key:?}"
                        )));
                    }
                    map.insert(key, value);
                }
                Ok(UniqueMap(map))
            }
        }
        deserializer.deserialize_map(Visit)
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;

    fn settings() -> TokenSettings {
        TokenSettings {
            issuer: "https://gw.example".into(),
            audience: "gateway".into(),
            access_ttl: Duration::from_secs(300),
            leeway_secs: 30,
        }
    }

    fn roles() -> Vec<String> {
        vec!["admin".into(), "dev".into()]
    }

    fn issue(keys: &Keys) -> (String, AccessClaims) {
        let roles = roles();
        let subject = Subject {
            user_id: "u1",
            email: "a@example.com",
            name: Some("Ada"),
            roles: &roles,
            session_id: "fam1",
            session_version: 3,
        };
        keys.issue_access(&settings(), &subject, NOW).unwrap()
    }

    fn ed() -> (StoredKey, Keys) {
        let key = generate_ed25519(NOW).unwrap();
        let keys = Keys::eddsa(std::slice::from_ref(&key), &key.kid).unwrap();
        (key, keys)
    }

    fn hs_secret() -> Secret<Vec<u8>> {
        Secret::new(b"0123456789abcdef0123456789abcdef-hs".to_vec())
    }

    /// Valid access-token claims that tests then break one at a time.
    fn claims_json() -> Value {
        json!({
            "sub": "u1", "email": "a@example.com", "roles": ["admin"], "sid": "fam1", "sv": 1,
            "iat": NOW, "nbf": NOW, "exp": NOW + 300, "jti": "j1",
            "iss": "https://gw.example", "aud": "gateway",
        })
    }

    fn b64json(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    /// A hand-built token: header and claims exactly as given, signed with `key` under `alg`.
    fn forge(
        header: &Value,
        claims: &Value,
        key: &EncodingKey,
        alg: jsonwebtoken::Algorithm,
    ) -> String {
        let message = format!("{}.{}", b64json(header), b64json(claims));
        let sig = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
        format!("{message}.{sig}")
    }

    fn ed_header(kid: &str) -> Value {
        json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid})
    }

    /// Signs `claims` with the stored key under a correct header plus `extra` header members.
    fn forge_ed(key: &StoredKey, extra: Value, claims: &Value) -> String {
        let mut header = ed_header(&key.kid);
        for (k, v) in extra.as_object().unwrap() {
            header[k] = v.clone();
        }
        let enc = EncodingKey::from_ed_der(key.private_der.expose());
        forge(&header, claims, &enc, jsonwebtoken::Algorithm::EdDSA)
    }

    fn verify(keys: &Keys, token: &str) -> Result<AccessClaims, TokenError> {
        keys.verify_access(&settings(), token, NOW)
    }

    #[test]
    fn eddsa_round_trip() {
        let (key, keys) = ed();
        let (token, claims) = issue(&keys);
        assert_eq!(verify(&keys, &token).unwrap(), claims);
        assert_eq!((claims.iat, claims.nbf, claims.exp), (NOW, NOW, NOW + 300));
        assert_eq!(claims.name.as_deref(), Some("Ada"));
        assert_eq!(
            uuid::Uuid::parse_str(&claims.jti)
                .unwrap()
                .get_version_num(),
            4
        );
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.kid.as_deref(), Some(key.kid.as_str()));
        assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
        assert_eq!(keys.algorithm(), Algorithm::EdDSA);
        // A second token gets a fresh jti.
        assert_ne!(issue(&keys).1.jti, claims.jti);
    }

    #[test]
    fn generated_kids_are_url_safe_and_distinct() {
        let a = generate_ed25519(NOW).unwrap();
        let b = generate_ed25519(NOW).unwrap();
        assert_eq!(a.kid.len(), 16);
        assert!(
            a.kid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(a.kid, b.kid);
        assert_eq!(a.public_raw.len(), 32);
    }

    #[test]
    fn hs256_round_trip_and_kid() {
        let keys = Keys::hs256(&hs_secret()).unwrap();
        let (token, claims) = issue(&keys);
        assert_eq!(verify(&keys, &token).unwrap(), claims);
        let digest = Sha256::digest(hs_secret().expose());
        let kid: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(keys.current_kid(), kid);
        assert_eq!(
            jsonwebtoken::decode_header(&token).unwrap().kid.as_deref(),
            Some(kid.as_str())
        );
        assert_eq!(keys.jwks(), json!({"keys": []}));
        // Another secret: other kid, so the old token names an unknown key.
        let other = Keys::hs256(&Secret::new(vec![7u8; 32])).unwrap();
        assert_ne!(other.current_kid(), keys.current_kid());
        assert_eq!(verify(&other, &token), Err(TokenError::UnknownKey));
    }

    #[test]
    fn hs256_rejects_short_secret() {
        assert_eq!(
            Keys::hs256(&Secret::new(vec![1u8; 31])).unwrap_err(),
            TokenError::WeakSecret
        );
        assert!(Keys::hs256(&Secret::new(vec![1u8; 32])).is_ok());
    }

    #[test]
    fn tampered_payload_is_bad_signature() {
        for keys in [ed().1, Keys::hs256(&hs_secret()).unwrap()] {
            let (token, mut claims) = issue(&keys);
            claims.roles.push("superuser".into());
            let parts: Vec<&str> = token.split('.').collect();
            let forged = format!(
                "{}.{}.{}",
                parts[0],
                b64json(&serde_json::to_value(&claims).unwrap()),
                parts[2]
            );
            assert_eq!(verify(&keys, &forged), Err(TokenError::BadSignature));
        }
    }

    #[test]
    fn signature_from_another_token_is_bad_signature() {
        let (_, keys) = ed();
        let (a, _) = issue(&keys);
        let (b, _) = issue(&keys);
        let a_parts: Vec<&str> = a.split('.').collect();
        let b_sig = b.rsplit('.').next().unwrap();
        let spliced = format!("{}.{}.{}", a_parts[0], a_parts[1], b_sig);
        assert_eq!(verify(&keys, &spliced), Err(TokenError::BadSignature));
    }

    #[test]
    fn alg_none_is_rejected() {
        let (key, keys) = ed();
        let payload = b64json(&claims_json());
        let (real, _) = issue(&keys);
        let real_sig = real.rsplit('.').next().unwrap();
        for header in [
            json!({"alg": "none"}),
            json!({"alg": "none", "typ": "at+jwt", "kid": key.kid}),
            json!({"alg": "None", "typ": "at+jwt", "kid": key.kid}),
        ] {
            let h = b64json(&header);
            assert_eq!(
                verify(&keys, &format!("{h}.{payload}.")),
                Err(TokenError::WrongAlgorithm)
            );
            assert_eq!(
                verify(&keys, &format!("{h}.{payload}.{real_sig}")),
                Err(TokenError::WrongAlgorithm)
            );
        }
        // The literal header from the brief.
        assert_eq!(
            verify(&keys, &format!("eyJhbGciOiJub25lIn0.{payload}.")),
            Err(TokenError::WrongAlgorithm)
        );
    }

    #[test]
    fn hs256_signed_with_public_key_is_rejected() {
        let key = generate_ed25519(NOW).unwrap();
        let keys = Keys::eddsa(std::slice::from_ref(&key), &key.kid).unwrap();
        let pair = rcgen::KeyPair::try_from(key.private_der.expose().as_slice()).unwrap();
        let pem = pair.public_key_pem();
        let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": key.kid});
        for secret in [
            key.public_raw.clone(),
            pem.into_bytes(),
            URL_SAFE_NO_PAD.encode(&key.public_raw).into_bytes(),
        ] {
            let token = forge(
                &header,
                &claims_json(),
                &EncodingKey::from_secret(&secret),
                jsonwebtoken::Algorithm::HS256,
            );
            assert_eq!(verify(&keys, &token), Err(TokenError::WrongAlgorithm));
        }
        // And the other way round: an EdDSA token is refused by HS256 keys.
        let hs = Keys::hs256(&hs_secret()).unwrap();
        let (token, _) = issue(&keys);
        assert_eq!(verify(&hs, &token), Err(TokenError::WrongAlgorithm));
    }

    #[test]
    fn unknown_or_hostile_kid_is_unknown_key() {
        let (key, keys) = ed();
        let enc = EncodingKey::from_ed_der(key.private_der.expose());
        for kid in [
            json!("nope"),
            json!("../../etc/passwd"),
            json!("' OR 1=1 --"),
            json!(""),
            json!(7),
        ] {
            let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid});
            let token = forge(
                &header,
                &claims_json(),
                &enc,
                jsonwebtoken::Algorithm::EdDSA,
            );
            assert_eq!(
                verify(&keys, &token),
                Err(TokenError::UnknownKey),
                "kid {kid}"
            );
        }
        let no_kid = forge(
            &json!({"alg": "EdDSA", "typ": "at+jwt"}),
            &claims_json(),
            &enc,
            jsonwebtoken::Algorithm::EdDSA,
        );
        assert_eq!(verify(&keys, &no_kid), Err(TokenError::UnknownKey));
        // Sanity: the same construction with the right kid verifies.
        assert!(verify(&keys, &forge_ed(&key, json!({}), &claims_json())).is_ok());
    }

    #[test]
    fn key_bearing_headers_are_forbidden() {
        let (key, keys) = ed();
        let attacker = generate_ed25519(NOW).unwrap();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(&attacker.public_raw)});
        for extra in [
            json!({"jwk": jwk}),
            json!({"jku": "https://evil.example/jwks.json"}),
            json!({"x5u": "https://evil.example/cert.pem"}),
            json!({"x5c": ["MIIB"]}),
            json!({"crit": ["exp"]}),
            json!({"jwk": null}),
        ] {
            // Signed with the real key, so only the header member can be the reason.
            let token = forge_ed(&key, extra.clone(), &claims_json());
            assert_eq!(
                verify(&keys, &token),
                Err(TokenError::ForbiddenHeader),
                "{extra}"
            );
        }
        // Attacker key announced in the header and used to sign, with our kid.
        let token = forge_ed(
            &StoredKey {
                kid: key.kid.clone(),
                ..attacker
            },
            json!({"jwk": jwk}),
            &claims_json(),
        );
        assert_eq!(verify(&keys, &token), Err(TokenError::ForbiddenHeader));
    }

    #[test]
    fn typ_must_be_at_jwt() {
        let (key, keys) = ed();
        let enc = EncodingKey::from_ed_der(key.private_der.expose());
        for header in [
            json!({"alg": "EdDSA", "kid": key.kid}),
            json!({"alg": "EdDSA", "kid": key.kid, "typ": "JWT"}),
            json!({"alg": "EdDSA", "kid": key.kid, "typ": "id-assertion+jwt"}),
            json!({"alg": "EdDSA", "kid": key.kid, "typ": ["at+jwt"]}),
        ] {
            let token = forge(
                &header,
                &claims_json(),
                &enc,
                jsonwebtoken::Algorithm::EdDSA,
            );
            assert_eq!(
                verify(&keys, &token),
                Err(TokenError::WrongType),
                "{header}"
            );
        }
        assert!(
            verify(
                &keys,
                &forge_ed(&key, json!({"typ": "AT+JWT"}), &claims_json())
            )
            .is_ok()
        );
    }

    #[test]
    fn expiry_uses_injected_clock_and_leeway() {
        let (_, keys) = ed();
        let (token, claims) = issue(&keys);
        let s = settings();
        // exp + leeway is the first rejected second.
        assert!(
            keys.verify_access(&s, &token, claims.exp + s.leeway_secs - 1)
                .is_ok()
        );
        assert_eq!(
            keys.verify_access(&s, &token, claims.exp + s.leeway_secs),
            Err(TokenError::Expired)
        );
        assert_eq!(
            keys.verify_access(&s, &token, claims.exp + 10_000),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn exp_in_past_via_claims() {
        let (key, keys) = ed();
        let mut c = claims_json();
        c["exp"] = json!(NOW - 31);
        assert_eq!(
            verify(&keys, &forge_ed(&key, json!({}), &c)),
            Err(TokenError::Expired)
        );
        c["exp"] = json!(NOW - 29);
        assert!(verify(&keys, &forge_ed(&key, json!({}), &c)).is_ok());
    }

    #[test]
    fn future_nbf_or_iat_is_not_yet_valid() {
        let (key, keys) = ed();
        for field in ["nbf", "iat"] {
            let mut c = claims_json();
            c[field] = json!(NOW + 31);
            assert_eq!(
                verify(&keys, &forge_ed(&key, json!({}), &c)),
                Err(TokenError::NotYetValid),
                "{field}"
            );
            c[field] = json!(NOW + 30);
            assert!(
                verify(&keys, &forge_ed(&key, json!({}), &c)).is_ok(),
                "{field}"
            );
        }
        let (token, _) = issue(&keys);
        assert_eq!(
            keys.verify_access(&settings(), &token, NOW - 31),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn issuer_and_audience_must_match_exactly() {
        let (key, keys) = ed();
        for (field, value, err) in [
            (
                "iss",
                json!("https://evil.example"),
                TokenError::WrongIssuer,
            ),
            ("iss", json!("https://gw.example/"), TokenError::WrongIssuer),
            ("aud", json!("other"), TokenError::WrongAudience),
            ("aud", json!("GATEWAY"), TokenError::WrongAudience),
        ] {
            let mut c = claims_json();
            c[field] = value;
            assert_eq!(verify(&keys, &forge_ed(&key, json!({}), &c)), Err(err));
        }
        // Verified against other settings, our own token is someone else's.
        let (token, _) = issue(&keys);
        let mut s = settings();
        s.audience = "elsewhere".into();
        assert_eq!(
            keys.verify_access(&s, &token, NOW),
            Err(TokenError::WrongAudience)
        );
    }

    #[test]
    fn badly_typed_claims_are_malformed() {
        let (key, keys) = ed();
        let mut cases: Vec<Value> = Vec::new();
        for v in [
            json!("1700000300"),
            json!(1e300),
            json!(-1),
            json!(1_700_000_300.5),
            json!(null),
        ] {
            let mut c = claims_json();
            c["exp"] = v;
            cases.push(c);
        }
        let mut missing = claims_json();
        missing.as_object_mut().unwrap().remove("exp");
        cases.push(missing);
        let mut aud_array = claims_json();
        aud_array["aud"] = json!(["gateway"]);
        cases.push(aud_array);
        cases.push(json!(["not", "an", "object"]));
        for c in cases {
            assert_eq!(
                verify(&keys, &forge_ed(&key, json!({}), &c)),
                Err(TokenError::Malformed),
                "{c}"
            );
        }
        // Duplicate claims are refused by the typed claims.
        let header = b64json(&ed_header(&key.kid));
        let body = br#"{"sub":"u1","email":"a@example.com","roles":[],"sid":"f","sv":1,"iat":1700000000,"nbf":1700000000,"exp":1,"exp":1700000300,"jti":"j","iss":"https://gw.example","aud":"gateway"}"#;
        let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode(body));
        let enc = EncodingKey::from_ed_der(key.private_der.expose());
        let sig =
            jsonwebtoken::crypto::sign(message.as_bytes(), &enc, jsonwebtoken::Algorithm::EdDSA)
                .unwrap();
        assert_eq!(
            verify(&keys, &format!("{message}.{sig}")),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn duplicate_header_members_are_malformed() {
        let (key, keys) = ed();
        let header = format!(
            r#"{{"alg":"HS256","alg":"EdDSA","typ":"at+jwt","kid":"{}"}}"#,
            key.kid
        );
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            b64json(&claims_json())
        );
        let enc = EncodingKey::from_ed_der(key.private_der.expose());
        let sig =
            jsonwebtoken::crypto::sign(message.as_bytes(), &enc, jsonwebtoken::Algorithm::EdDSA)
                .unwrap();
        assert_eq!(
            verify(&keys, &format!("{message}.{sig}")),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn truncated_and_garbage_tokens_are_malformed() {
        let (_, keys) = ed();
        let (token, _) = issue(&keys);
        let dot = token.rfind('.').unwrap();
        let [h, p, s]: [&str; 3] = token.split('.').collect::<Vec<_>>().try_into().unwrap();
        let cases = vec![
            String::new(),
            ".".into(),
            "..".into(),
            "a.b.c".into(),
            "not a token".into(),
            token[..token.len() - 4].to_string(),
            token[..dot].to_string(),
            token[..dot + 1].to_string(),
            token[..token.len() / 2].to_string(),
            format!("{token}.x"),
            format!("{token}="),
            format!("{h}.{p}.{s}{s}"),
            format!("{h}.{p}!.{s}"),
            format!("{h}..{s}"),
            format!("{h}.{}.{s}", "A".repeat(MAX_TOKEN_LEN)),
            format!("{h}=.{p}.{s}"),
            format!("{h}.{p}=.{s}"),
            format!("{h}.{p}.{}", STANDARD.encode([0xfbu8; 64])),
            format!("{}.{p}.{s}", URL_SAFE_NO_PAD.encode("[1,2]")),
            format!("{}.{p}.{s}", URL_SAFE_NO_PAD.encode(r#"{"typ":"at+jwt"}"#)),
        ];
        for bad in cases {
            assert_eq!(verify(&keys, &bad), Err(TokenError::Malformed), "{bad:.80}");
        }
    }

    #[test]
    fn rotation_keeps_old_tokens_valid() {
        let old = generate_ed25519(NOW).unwrap();
        let new = generate_ed25519(NOW + 1).unwrap();
        let before = Keys::eddsa(std::slice::from_ref(&old), &old.kid).unwrap();
        let (old_token, _) = issue(&before);

        let after = Keys::eddsa(&[old.clone(), new.clone()], &new.kid).unwrap();
        assert!(verify(&after, &old_token).is_ok());
        let (new_token, _) = issue(&after);
        assert_eq!(
            jsonwebtoken::decode_header(&new_token).unwrap().kid,
            Some(new.kid.clone())
        );
        assert!(verify(&after, &new_token).is_ok());
        // The old key set knows nothing of the new key.
        assert_eq!(verify(&before, &new_token), Err(TokenError::UnknownKey));
        // Once the old key is dropped, its tokens stop verifying.
        let retired = Keys::eddsa(std::slice::from_ref(&new), &new.kid).unwrap();
        assert_eq!(verify(&retired, &old_token), Err(TokenError::UnknownKey));
    }

    #[test]
    fn jwks_lists_public_keys_only() {
        let old = generate_ed25519(NOW).unwrap();
        let new = generate_ed25519(NOW).unwrap();
        let keys = Keys::eddsa(&[old.clone(), new.clone()], &new.kid).unwrap();
        let jwks = keys.jwks();
        let list = jwks["keys"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        for (jwk, stored) in list.iter().zip([&old, &new]) {
            assert_eq!(
                jwk,
                &json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(&stored.public_raw),
                        "kid": stored.kid, "alg": "EdDSA", "use": "sig"})
            );
            assert!(jwk.get("d").is_none());
            // The JWK really verifies our tokens.
            let parsed: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
            assert!(DecodingKey::from_jwk(&parsed).is_ok());
        }
        let text = jwks.to_string();
        for stored in [&old, &new] {
            assert!(!text.contains(&URL_SAFE_NO_PAD.encode(stored.private_der.expose())));
            // The 32-byte seed sits at the end of ring's PKCS#8 prefix; never published.
            let seed = &stored.private_der.expose()[16..48];
            assert!(!text.contains(&URL_SAFE_NO_PAD.encode(seed)));
        }
    }

    #[test]
    fn debug_never_shows_private_key() {
        let (key, keys) = ed();
        let der = key.private_der.expose();
        let secrets = [
            URL_SAFE_NO_PAD.encode(der),
            STANDARD.encode(der),
            format!("{der:?}"),
        ];
        let hs = Keys::hs256(&hs_secret()).unwrap();
        let hs_text = String::from_utf8(hs_secret().expose().clone()).unwrap();
        for shown in [format!("{key:?}"), format!("{keys:?}"), format!("{hs:?}")] {
            for secret in &secrets {
                assert!(!shown.contains(secret.as_str()), "{shown}");
            }
            assert!(!shown.contains(&hs_text), "{shown}");
        }
        assert!(format!("{key:?}").contains(&key.kid));
        assert!(format!("{keys:?}").contains(&key.kid));
    }

    #[test]
    fn stored_key_serde_round_trip() {
        let key = generate_ed25519(NOW).unwrap();
        let text = serde_json::to_string(&key).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value["private_der"],
            json!(URL_SAFE_NO_PAD.encode(key.private_der.expose()))
        );
        assert_eq!(value["alg"], json!("EdDSA"));
        let back: StoredKey = serde_json::from_str(&text).unwrap();
        assert_eq!(back.private_der, key.private_der);
        assert_eq!(back.public_raw, key.public_raw);
        // The reloaded key signs tokens the original verifies.
        let (token, _) = issue(&Keys::eddsa(&[back], &key.kid).unwrap());
        assert!(
            verify(
                &Keys::eddsa(std::slice::from_ref(&key), &key.kid).unwrap(),
                &token
            )
            .is_ok()
        );
    }

    #[test]
    fn bad_key_sets_are_refused() {
        let a = generate_ed25519(NOW).unwrap();
        let b = generate_ed25519(NOW).unwrap();
        let is_internal = |r: Result<Keys, TokenError>| matches!(r, Err(TokenError::Internal(_)));
        assert!(is_internal(Keys::eddsa(&[], "x")));
        assert!(is_internal(Keys::eddsa(std::slice::from_ref(&a), "other")));
        assert!(is_internal(Keys::eddsa(&[a.clone(), a.clone()], &a.kid)));
        let swapped = StoredKey {
            public_raw: b.public_raw.clone(),
            ..a.clone()
        };
        assert!(is_internal(Keys::eddsa(&[swapped], &a.kid)));
        let short = StoredKey {
            public_raw: vec![1; 16],
            ..a.clone()
        };
        assert!(is_internal(Keys::eddsa(&[short], &a.kid)));
        let garbage = StoredKey {
            private_der: Secret::new(vec![0; 48]),
            ..a.clone()
        };
        assert!(is_internal(Keys::eddsa(&[garbage], &a.kid)));
        let hs = StoredKey {
            alg: Algorithm::HS256,
            ..a.clone()
        };
        assert!(is_internal(Keys::eddsa(&[hs], &a.kid)));
        assert!(Keys::eddsa(&[a.clone(), b], &a.kid).is_ok());
    }

    #[test]
    fn sign_json_cannot_mint_access_tokens() {
        let (key, keys) = ed();
        let token = keys.sign_json("id-assertion+jwt", &claims_json()).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("id-assertion+jwt"));
        assert_eq!(header.kid.as_deref(), Some(key.kid.as_str()));
        // Same claims as a valid access token, but the wrong typ.
        assert_eq!(verify(&keys, &token), Err(TokenError::WrongType));
        assert_eq!(
            keys.sign_json("at+jwt", &claims_json()),
            Err(TokenError::WrongType)
        );
        assert_eq!(
            keys.sign_json("AT+JWT", &claims_json()),
            Err(TokenError::WrongType)
        );
        assert!(matches!(
            keys.sign_json("x", &json!([1])),
            Err(TokenError::Internal(_))
        ));
        // The assertion verifies with the published key.
        let mut v = Validation::new(jsonwebtoken::Algorithm::EdDSA);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        v.validate_aud = false;
        let dk = DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(&key.public_raw)).unwrap();
        assert!(jsonwebtoken::decode::<Value>(&token, &dk, &v).is_ok());
    }
}
