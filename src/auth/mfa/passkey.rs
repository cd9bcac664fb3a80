//! Passkeys (WebAuthn): the relying party for one configuration, over `webauthn-rs`.
//!
//! The library checks the ceremonies (challenge, origin, RP id hash, signature, user
//! verification, counter); this module adds what a gateway with several replicas needs:
//!
//! - **Ceremony state travels with the client, sealed.** Between `start` and `finish` the
//!   library's state (the challenge and what it expects) must be kept; rather than pinning the
//!   browser to one replica, it is sealed (XChaCha20-Poly1305, key derived from the CSRF key
//!   every replica shares) into an opaque `state` string bound to its purpose, its user and a
//!   five-minute expiry. Each state also carries a random nonce that the service stores as a
//!   one-time token and consumes at `finish`, so a state (and the assertion made for it) is
//!   accepted once.
//! - **The origin and RP id come from the configuration** (`auth.webauthn`, or the origin of
//!   `email.public_url`), never from a request's Host header.
//! - **Registration asks for a discoverable credential** (`residentKey: preferred`), so that a
//!   passkey registered as a second factor can also sign in without a password when
//!   `auth.webauthn.passwordless` is on; user verification is required throughout, which makes
//!   a passkey two factors by itself (the device, and its PIN or biometric).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use webauthn_rs::prelude::{
    AuthenticationResult, DiscoverableAuthentication, DiscoverableKey, Passkey,
    PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    Url, Uuid, Webauthn, WebauthnBuilder,
};

use crate::config::WebauthnSettings;
use crate::store::SealKey;

/// How long a ceremony may take, from `start` to `finish`.
pub const CEREMONY_TTL_SECS: u64 = 300;

/// Why a ceremony failed. Messages are for logs; clients get a generic refusal.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    /// The state is not one this gateway sealed, is for another purpose or user, or expired.
    #[error("unusable ceremony state")]
    State,
    /// The browser's answer does not check out (signature, challenge, origin, UV...).
    #[error("the passkey was refused: {0}")]
    Refused(String),
    /// The answer is not the JSON WebAuthn defines.
    #[error("malformed credential: {0}")]
    Malformed(String),
    #[error("passkey setup failed: {0}")]
    Internal(String),
}

/// What a ceremony is for; part of the sealed state, so a state cannot be used for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// Adding a passkey to a signed-in account.
    Register,
    /// The second step of a login, or a step-up: the user is known.
    Verify,
    /// Signing in without a password: the user is whoever the passkey says.
    SignIn,
}

/// A started ceremony: the options for `navigator.credentials`, the sealed state, and the
/// nonce the service records to make the state single use.
pub struct Started {
    /// `{"publicKey": ...}` as the browser API takes it (binary fields base64url).
    pub options: Value,
    pub state: String,
    pub nonce: String,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Started(***)")
    }
}

/// A checked assertion: which credential, and what the service stores back.
#[derive(Debug)]
pub struct Asserted {
    /// The credential id, base64url (as [`crate::store::PasskeyRecord::id`]).
    pub credential_id: String,
    pub result: AuthenticationResult,
    /// The state's nonce, to consume.
    pub nonce: String,
}

/// A newly registered credential, ready to store.
#[derive(Debug)]
pub struct Registered {
    pub credential_id: String,
    pub credential: Value,
    pub nonce: String,
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    purpose: Purpose,
    /// The user the ceremony is for (`None`: sign-in, the passkey names the user).
    user: Option<String>,
    expires: u64,
    nonce: String,
    /// The library's state, serialised.
    inner: Value,
}

/// The relying party of one configuration.
pub struct RelyingParty {
    webauthn: Webauthn,
    key: SealKey,
    settings: WebauthnSettings,
}

impl std::fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelyingParty")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RelyingParty {
    /// Builds the relying party; `secret` (the CSRF key, at least 32 bytes) keys the sealed
    /// ceremony states.
    pub fn new(settings: &WebauthnSettings, secret: &[u8]) -> Result<RelyingParty, PasskeyError> {
        let origin = Url::parse(&settings.origin)
            .map_err(|e| PasskeyError::Internal(format!("origin: {e}")))?;
        let webauthn = WebauthnBuilder::new(&settings.rp_id, &origin)
            .map_err(|e| PasskeyError::Internal(e.to_string()))?
            .rp_name(&settings.rp_name)
            .build()
            .map_err(|e| PasskeyError::Internal(e.to_string()))?;
        // A key of its own: HMAC of the shared secret with this purpose's label.
        let material = {
            use hmac::Mac as _;
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret)
                .map_err(|e| PasskeyError::Internal(e.to_string()))?;
            mac.update(b"gateway webauthn ceremony state v1");
            mac.finalize().into_bytes().to_vec()
        };
        let key = SealKey::derive(&material)
            .ok_or_else(|| PasskeyError::Internal("state key too short".into()))?;
        Ok(RelyingParty {
            webauthn,
            key,
            settings: settings.clone(),
        })
    }

    pub fn settings(&self) -> &WebauthnSettings {
        &self.settings
    }

    /// Starts adding a passkey for `user_id` (a UUID), excluding the ones it has.
    pub fn start_registration(
        &self,
        user_id: &str,
        email: &str,
        display_name: &str,
        existing: &[Value],
        now: u64,
    ) -> Result<Started, PasskeyError> {
        let uuid = Uuid::parse_str(user_id).map_err(|_| PasskeyError::State)?;
        let exclude: Vec<_> = existing
            .iter()
            .filter_map(|c| serde_json::from_value::<Passkey>(c.clone()).ok())
            .map(|p| p.cred_id().clone())
            .collect();
        let (ccr, state) = self
            .webauthn
            .start_passkey_registration(uuid, email, display_name, Some(exclude))
            .map_err(|e| PasskeyError::Internal(e.to_string()))?;
        let mut options = to_value(&ccr)?;
        // Discoverable where the authenticator can, so the passkey can sign in on its own.
        if let Some(sel) = options
            .pointer_mut("/publicKey/authenticatorSelection")
            .and_then(Value::as_object_mut)
        {
            sel.insert("residentKey".into(), Value::from("preferred"));
        }
        self.seal(
            Purpose::Register,
            Some(user_id),
            to_value(&state)?,
            options,
            now,
        )
    }

    /// Finishes adding a passkey: the credential to store.
    pub fn finish_registration(
        &self,
        state: &str,
        user_id: &str,
        credential: &Value,
        now: u64,
    ) -> Result<Registered, PasskeyError> {
        let (inner, nonce) = self.open(state, Purpose::Register, Some(user_id), now)?;
        let state: PasskeyRegistration =
            serde_json::from_value(inner).map_err(|_| PasskeyError::State)?;
        let reg: RegisterPublicKeyCredential = serde_json::from_value(credential.clone())
            .map_err(|e| PasskeyError::Malformed(e.to_string()))?;
        let passkey = self
            .webauthn
            .finish_passkey_registration(&reg, &state)
            .map_err(|e| PasskeyError::Refused(e.to_string()))?;
        Ok(Registered {
            credential_id: URL_SAFE_NO_PAD.encode(passkey.cred_id().as_ref()),
            credential: to_value(&passkey)?,
            nonce,
        })
    }

    /// Starts an assertion by one of `user_id`'s passkeys (second step, step-up).
    pub fn start_verification(
        &self,
        user_id: &str,
        credentials: &[Value],
        now: u64,
    ) -> Result<Started, PasskeyError> {
        let passkeys = passkeys(credentials);
        if passkeys.is_empty() {
            return Err(PasskeyError::State);
        }
        let (rcr, state) = self
            .webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(|e| PasskeyError::Internal(e.to_string()))?;
        self.seal(
            Purpose::Verify,
            Some(user_id),
            to_value(&state)?,
            to_value(&rcr)?,
            now,
        )
    }

    /// Checks an assertion for a [`RelyingParty::start_verification`] state.
    pub fn finish_verification(
        &self,
        state: &str,
        user_id: &str,
        credential: &Value,
        now: u64,
    ) -> Result<Asserted, PasskeyError> {
        let (inner, nonce) = self.open(state, Purpose::Verify, Some(user_id), now)?;
        let state: PasskeyAuthentication =
            serde_json::from_value(inner).map_err(|_| PasskeyError::State)?;
        let response = public_key_credential(credential)?;
        let result = self
            .webauthn
            .finish_passkey_authentication(&response, &state)
            .map_err(|e| PasskeyError::Refused(e.to_string()))?;
        Ok(Asserted {
            credential_id: URL_SAFE_NO_PAD.encode(result.cred_id().as_ref()),
            result,
            nonce,
        })
    }

    /// Starts a passwordless sign-in: any discoverable passkey of this site.
    pub fn start_sign_in(&self, now: u64) -> Result<Started, PasskeyError> {
        let (mut rcr, state) = self
            .webauthn
            .start_discoverable_authentication()
            .map_err(|e| PasskeyError::Internal(e.to_string()))?;
        // A button starts it, not the autofill of a username field.
        rcr.mediation = None;
        self.seal(
            Purpose::SignIn,
            None,
            to_value(&state)?,
            to_value(&rcr)?,
            now,
        )
    }

    /// The user (id) and credential id a passwordless answer claims, before it is checked.
    pub fn identify(&self, credential: &Value) -> Result<(String, String), PasskeyError> {
        let response = public_key_credential(credential)?;
        let (user, cred_id) = self
            .webauthn
            .identify_discoverable_authentication(&response)
            .map_err(|e| PasskeyError::Refused(e.to_string()))?;
        Ok((user.to_string(), URL_SAFE_NO_PAD.encode(cred_id)))
    }

    /// Checks a passwordless answer against the claimed user's passkeys.
    pub fn finish_sign_in(
        &self,
        state: &str,
        credential: &Value,
        credentials: &[Value],
        now: u64,
    ) -> Result<Asserted, PasskeyError> {
        let (inner, nonce) = self.open(state, Purpose::SignIn, None, now)?;
        let state: DiscoverableAuthentication =
            serde_json::from_value(inner).map_err(|_| PasskeyError::State)?;
        let response = public_key_credential(credential)?;
        let keys: Vec<DiscoverableKey> = passkeys(credentials).iter().map(Into::into).collect();
        let result = self
            .webauthn
            .finish_discoverable_authentication(&response, state, &keys)
            .map_err(|e| PasskeyError::Refused(e.to_string()))?;
        Ok(Asserted {
            credential_id: URL_SAFE_NO_PAD.encode(result.cred_id().as_ref()),
            result,
            nonce,
        })
    }

    /// The nonce of a state for `purpose` and `user`, to consume before the answer is checked.
    pub fn nonce(
        &self,
        state: &str,
        purpose: Purpose,
        user: Option<&str>,
        now: u64,
    ) -> Result<String, PasskeyError> {
        self.open(state, purpose, user, now).map(|(_, nonce)| nonce)
    }

    fn seal(
        &self,
        purpose: Purpose,
        user: Option<&str>,
        inner: Value,
        options: Value,
        now: u64,
    ) -> Result<Started, PasskeyError> {
        let nonce = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let sealed = Sealed {
            purpose,
            user: user.map(str::to_owned),
            expires: now.saturating_add(CEREMONY_TTL_SECS),
            nonce: nonce.clone(),
            inner,
        };
        let plain =
            serde_json::to_vec(&sealed).map_err(|e| PasskeyError::Internal(e.to_string()))?;
        let bytes = self
            .key
            .seal(STATE_NAME, &plain)
            .map_err(|e| PasskeyError::Internal(e.to_string()))?;
        Ok(Started {
            options,
            state: URL_SAFE_NO_PAD.encode(bytes),
            nonce,
        })
    }

    fn unseal(&self, state: &str) -> Result<Sealed, PasskeyError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(state.trim())
            .map_err(|_| PasskeyError::State)?;
        let plain = self
            .key
            .open(STATE_NAME, &bytes)
            .map_err(|_| PasskeyError::State)?;
        serde_json::from_slice(&plain).map_err(|_| PasskeyError::State)
    }

    /// The library state and nonce of a sealed state, if it is for `purpose` and `user` and
    /// has not expired.
    fn open(
        &self,
        state: &str,
        purpose: Purpose,
        user: Option<&str>,
        now: u64,
    ) -> Result<(Value, String), PasskeyError> {
        let sealed = self.unseal(state)?;
        if sealed.purpose != purpose || sealed.user.as_deref() != user || now >= sealed.expires {
            return Err(PasskeyError::State);
        }
        Ok((sealed.inner, sealed.nonce))
    }
}

/// The associated data of sealed states: nothing else sealed with this key can pass for one.
const STATE_NAME: &str = "webauthn ceremony";

/// The stored credentials the library can use (a record it cannot read is skipped).
fn passkeys(credentials: &[Value]) -> Vec<Passkey> {
    credentials
        .iter()
        .filter_map(|c| serde_json::from_value(c.clone()).ok())
        .collect()
}

fn public_key_credential(v: &Value) -> Result<PublicKeyCredential, PasskeyError> {
    serde_json::from_value(v.clone()).map_err(|e| PasskeyError::Malformed(e.to_string()))
}

fn to_value<T: Serialize>(v: &T) -> Result<Value, PasskeyError> {
    serde_json::to_value(v).map_err(|e| PasskeyError::Internal(e.to_string()))
}

/// Applies a checked assertion to the stored credential (counter, backup state); `None` if
/// nothing changed.
pub fn updated_credential(stored: &Value, result: &AuthenticationResult) -> Option<Value> {
    let mut passkey: Passkey = serde_json::from_value(stored.clone()).ok()?;
    match passkey.update_credential(result) {
        Some(true) => serde_json::to_value(&passkey).ok(),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn rp() -> RelyingParty {
        RelyingParty::new(
            &WebauthnSettings {
                origin: "https://login.example.com".into(),
                rp_id: "example.com".into(),
                rp_name: "Example".into(),
                passwordless: true,
            },
            &[7u8; 32],
        )
        .unwrap()
    }

    const USER: &str = "8d6f1f52-8a47-4c0e-9a53-0c2b8f7f1d11";

    #[test]
    fn registration_options_ask_for_a_discoverable_verified_credential() {
        let started = rp()
            .start_registration(USER, "a@example.com", "A", &[], 100)
            .unwrap();
        let pk = &started.options["publicKey"];
        assert_eq!(pk["rp"]["id"], "example.com");
        assert_eq!(pk["authenticatorSelection"]["residentKey"], "preferred");
        assert_eq!(pk["authenticatorSelection"]["userVerification"], "required");
    }

    #[test]
    fn a_state_is_bound_to_its_purpose_user_key_and_time() {
        let rp = rp();
        let started = rp
            .start_registration(USER, "a@example.com", "A", &[], 100)
            .unwrap();
        let s = &started.state;
        assert!(rp.open(s, Purpose::Register, Some(USER), 100).is_ok());
        assert_eq!(
            rp.nonce(s, Purpose::Register, Some(USER), 100).unwrap(),
            started.nonce
        );
        for (purpose, user, now) in [
            (Purpose::Verify, Some(USER), 100),
            (Purpose::Register, Some("another-user"), 100),
            (Purpose::Register, None, 100),
            (Purpose::Register, Some(USER), 100 + CEREMONY_TTL_SECS),
        ] {
            assert!(
                matches!(rp.open(s, purpose, user, now), Err(PasskeyError::State)),
                "{purpose:?} {user:?} {now}"
            );
        }
        // Another key (another deployment) cannot open it; a flipped byte neither.
        let other = RelyingParty::new(rp.settings(), &[8u8; 32]).unwrap();
        assert!(other.open(s, Purpose::Register, Some(USER), 100).is_err());
        let mut bytes = URL_SAFE_NO_PAD.decode(s).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = URL_SAFE_NO_PAD.encode(bytes);
        assert!(
            rp.open(&tampered, Purpose::Register, Some(USER), 100)
                .is_err()
        );
        assert!(
            rp.open("not a state", Purpose::Register, Some(USER), 100)
                .is_err()
        );
    }

    #[test]
    fn malformed_answers_are_refused_not_panicked_on() {
        let rp = rp();
        let started = rp
            .start_registration(USER, "a@example.com", "A", &[], 100)
            .unwrap();
        for bad in [
            Value::Null,
            serde_json::json!({"id": 1}),
            serde_json::json!("x"),
        ] {
            assert!(
                rp.finish_registration(&started.state, USER, &bad, 100)
                    .is_err()
            );
            assert!(rp.identify(&bad).is_err());
        }
        assert!(matches!(
            rp.start_verification(USER, &[], 100),
            Err(PasskeyError::State)
        ));
    }
}
