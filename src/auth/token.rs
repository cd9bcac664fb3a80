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
//!
//! How keys are kept at rest (and made, and checked at start-up) is in `stored`.

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

mod stored;
use stored::check_pair;
pub use stored::{StoredKey, generate_ed25519};

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
    /// Whether the user had proved at issue that they read mail at `email` (the OIDC claim
    /// name). A token without it (issued before the claim existed) counts as unverified.
    #[serde(default)]
    pub email_verified: bool,
    /// How the session was signed in (RFC 8176): `["pwd"]` for a password, `["pwd", "otp",
    /// "mfa"]` with an authenticator code... A token without it (issued before the claim
    /// existed) counts as a password sign-in.
    #[serde(default)]
    pub amr: Vec<String>,
    /// The identity provider the session signed in at (`sso.providers[].id`); absent for the
    /// gateway's own sign-ins. Upstreams are told it (`X-Auth-Provider`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp: Option<String>,
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

impl AccessClaims {
    /// Whether the session was signed in with a second factor (`mfa` in `amr`).
    pub fn mfa(&self) -> bool {
        self.amr.iter().any(|m| m == "mfa")
    }
}

/// A once-filled slot for the identity header values of some claims: user id, e-mail, name,
/// roles, verified, second factor (`None` for a value that cannot be a header value). It takes no part in comparisons
/// and holds nothing secret.
#[derive(Clone, Default)]
pub struct IdentityValues(std::sync::OnceLock<[Option<http::HeaderValue>; IDENTITY_HEADERS]>);

/// How many identity headers a token's claims make.
pub const IDENTITY_HEADERS: usize = 7;

impl IdentityValues {
    /// The values, made by `make` the first time.
    pub fn get_or_init(
        &self,
        make: impl FnOnce() -> [Option<http::HeaderValue>; IDENTITY_HEADERS],
    ) -> &[Option<http::HeaderValue>; IDENTITY_HEADERS] {
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
    /// The address is verified.
    pub email_verified: bool,
    /// How the session was signed in (RFC 8176 values).
    pub amr: &'a [String],
    /// The identity provider of a federated session.
    pub provider: Option<&'a str>,
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
            email_verified: subject.email_verified,
            amr: subject.amr.to_vec(),
            idp: subject.provider.map(str::to_owned),
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
