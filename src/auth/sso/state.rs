//! The state of one sign-in at a provider, between `start` and `callback`, kept by the browser.
//!
//! The `state` parameter, the `nonce`, the PKCE verifier and the page to return to are sealed
//! (XChaCha20-Poly1305 under a key derived from the CSRF key every replica shares) into a
//! short-lived, `HttpOnly`, `SameSite=Lax` cookie, so any replica can finish a sign-in another
//! started and nothing about it lives on the server but a single-use marker (see
//! [`super::Sso::start`]). The callback compares the `state` the provider sent back with the
//! sealed one in constant time: a callback the browser did not start (login CSRF) is refused.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

use crate::store::SealKey;

/// How long a sign-in at a provider may take, from `start` to `callback`.
pub const FLOW_TTL_SECS: u64 = 600;

/// The cookie name over TLS (`__Host-`: only this origin, `Path=/`, `Secure`) and over plain HTTP.
pub fn cookie_name(tls: bool) -> &'static str {
    if tls { "__Host-gw_sso" } else { "gw_sso" }
}

/// What the browser carries between `start` and `callback`. `Debug` hides the secrets.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Flow {
    /// The provider's id.
    pub provider: String,
    /// The `state` parameter sent to the provider.
    pub state: String,
    /// The `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE code verifier.
    pub verifier: String,
    /// Where to go afterwards (a same-origin path, checked at `start`).
    pub next: String,
    /// Set when a signed-in user links this provider to their account from the account page.
    #[serde(default)]
    pub link_user: Option<String>,
    /// Unix seconds after which the flow is refused.
    pub expires: u64,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow")
            .field("provider", &self.provider)
            .field("next", &self.next)
            .field("link_user", &self.link_user)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// The associated data of sealed flows: nothing else sealed with the key passes for one.
const FLOW_NAME: &str = "sso flow";

/// Seals and opens [`Flow`]s.
#[derive(Debug, Clone)]
pub struct FlowSealer {
    key: SealKey,
}

impl FlowSealer {
    /// `secret`: the CSRF key (at least 32 bytes); the sealing key is derived from it for this
    /// purpose alone.
    pub fn new(secret: &[u8]) -> Option<FlowSealer> {
        use hmac::Mac as _;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).ok()?;
        mac.update(b"gateway sso flow state v1");
        let material = mac.finalize().into_bytes();
        Some(FlowSealer {
            key: SealKey::derive(&material)?,
        })
    }

    /// The cookie value for `flow`.
    pub fn seal(&self, flow: &Flow) -> Option<String> {
        let plain = serde_json::to_vec(flow).ok()?;
        let sealed = self.key.seal(FLOW_NAME, &plain).ok()?;
        Some(B64.encode(sealed))
    }

    /// The flow a cookie value holds, if this gateway sealed it and it has not expired at `now`.
    pub fn open(&self, cookie: &str, now: u64) -> Option<Flow> {
        let bytes = B64.decode(cookie.trim()).ok()?;
        let plain = self.key.open(FLOW_NAME, &bytes).ok()?;
        let flow: Flow = serde_json::from_slice(&plain).ok()?;
        (now < flow.expires).then_some(flow)
    }
}

/// Whether the `state` a provider sent back is the sealed one (constant time).
pub fn state_matches(flow: &Flow, returned: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    flow.state.len() == returned.len()
        && bool::from(flow.state.as_bytes().ct_eq(returned.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> Flow {
        Flow {
            provider: "corp".into(),
            state: "st".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            next: "/app".into(),
            link_user: None,
            expires: 1_000,
        }
    }

    #[test]
    fn a_flow_opens_only_with_its_key_unaltered_and_in_time() {
        let sealer = FlowSealer::new(&[7; 32]).expect("key");
        let cookie = sealer.seal(&flow()).expect("seal");
        assert_eq!(sealer.open(&cookie, 999), Some(flow()));
        assert_eq!(sealer.open(&cookie, 1_000), None, "expired");
        let other = FlowSealer::new(&[8; 32]).expect("key");
        assert_eq!(other.open(&cookie, 999), None, "another gateway's key");
        let mut bytes = B64.decode(&cookie).expect("b64");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(sealer.open(&B64.encode(bytes), 999), None, "altered");
        assert_eq!(sealer.open("not base64 !", 999), None);
        assert!(!format!("{:?}", flow()).contains("\"v\""));
    }

    #[test]
    fn state_must_match_exactly() {
        let f = flow();
        assert!(state_matches(&f, "st"));
        assert!(!state_matches(&f, "sT"));
        assert!(!state_matches(&f, "st2"));
        assert!(!state_matches(&f, ""));
    }
}
