//! Single sign-on with external OpenID Connect providers (`sso.providers`).
//!
//! The flow is the Authorization Code flow with PKCE (S256), `state` and `nonce`, over
//! `openidconnect` (a maintained, widely used implementation of the checks), whose HTTP goes over
//! the gateway's own client ([`fetch`]):
//!
//! 1. `start` builds the provider's authorization URL and seals the flow (state, nonce, PKCE
//!    verifier, `next`) into a short-lived cookie ([`state`]).
//! 2. `finish`, at the callback, checks the returned `state` against the cookie, exchanges the
//!    code (with the verifier), and verifies the ID token: signature with the provider's keys,
//!    the algorithm against the allow-list, `iss`, `aud` (and `azp` when there are several
//!    audiences), `exp`, `iat` (not in the future, not stale) and `nonce`. The provider's
//!    access token is dropped there; clients only ever get the gateway's own tokens.
//! 3. [`admit`] applies the provider's rules (verified email at an allowed domain, an allowed
//!    group) and its `role_mappings`.
//!
//! Discovery documents and key sets are fetched on first use and kept for an hour (a stale copy
//! is used when the provider cannot be reached; with no copy yet, a failed fetch is the answer
//! for ten seconds, so sign-ins during an outage do not each wait out the timeout); a token signed with a key id the cached set
//! does not have makes one fresh fetch of the set (at most every ten seconds), so a provider's
//! key rotation is followed at once. Nothing here runs on the proxied path: only the sign-in
//! endpoints and refreshes of federated sessions talk to providers.
//!
//! A session started here is re-checked at its refreshes, at most every `recheck_interval`,
//! with the provider's refresh token ([`Sso::recheck`]), so someone removed from a group at the
//! provider loses access within an interval (plus one access-token lifetime).

pub mod fetch;
mod rules;
pub mod state;

pub use rules::{Refused, admit, apply_roles};

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthType, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    JsonWebKeySet, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RefreshToken, RequestTokenError, Scope, SignatureVerificationError, TokenResponse as _,
};
use serde_json::Value;

use self::fetch::Fetcher;
use self::state::{FLOW_TTL_SECS, Flow, FlowSealer};
use crate::config::{SsoProvider, SsoSettings};
use crate::secret::SecretString;

/// How long a discovery document (and its key set) is used before it is fetched again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// After a failed discovery, how long a stale copy is used before the provider is asked again
/// (so that sign-ins during an outage do not each wait for the provider's timeout).
const DISCOVERY_RETRY: Duration = Duration::from_secs(60);
/// After a failed discovery with no earlier copy to fall back on, how long sign-ins get that
/// failure at once before the provider is asked again: with the provider down since start-up,
/// sign-ins would otherwise queue behind one another (discovery is one at a time), each waiting
/// out the provider's `timeout`.
const DISCOVERY_FAILED_RETRY: Duration = Duration::from_secs(10);
/// The least time between two fetches of a key set for an unknown key id.
const JWKS_REFETCH_MIN: Duration = Duration::from_secs(10);
/// How far in the future an ID token's `iat` may be (clock skew), and how old it may be.
const IAT_FUTURE_SECS: i64 = 60;
const IAT_MAX_AGE_SECS: i64 = 600;
/// The RFC 8176 methods a provider's `amr` may add to a session's (others are dropped).
const KNOWN_AMR: [&str; 20] = [
    "face", "fpt", "geo", "hwk", "iris", "kba", "mca", "mfa", "otp", "pin", "pwd", "rba", "retina",
    "sc", "sms", "swk", "tel", "user", "vbm", "wia",
];

/// Why a sign-in at a provider did not give an identity. Messages are for the user's error page
/// and the log: nothing secret (no code, token or claim values beyond the provider's id).
#[derive(Debug, Clone, thiserror::Error)]
pub enum SsoError {
    /// The callback does not belong to a sign-in this browser started here (no cookie, another
    /// tab's, expired, or a `state` that does not match).
    #[error("this sign-in was not started here, took too long, or was already used")]
    BadState,
    /// The provider sent the user back with an error (`error=access_denied`...).
    #[error("the provider did not sign you in ({0})")]
    Denied(String),
    #[error("the identity provider cannot be reached right now; please try again later")]
    Unreachable(String),
    /// The provider answered, but not as OpenID Connect says (bad discovery, no ID token...).
    #[error("the identity provider's answer was not usable")]
    BadProvider(String),
    /// The ID token failed a check (signature, audience, nonce, expiry...).
    #[error("the identity provider's token was refused")]
    BadToken(String),
    #[error("internal error")]
    Internal(String),
}

impl SsoError {
    /// A short label for metrics and audit lines.
    pub fn label(&self) -> &'static str {
        match self {
            SsoError::BadState => "bad_state",
            SsoError::Denied(_) => "denied_at_provider",
            SsoError::Unreachable(_) => "provider_unreachable",
            SsoError::BadProvider(_) => "provider_error",
            SsoError::BadToken(_) => "bad_id_token",
            SsoError::Internal(_) => "internal",
        }
    }

    /// Detail for the log (never shown to the user).
    pub fn detail(&self) -> &str {
        match self {
            SsoError::Denied(d)
            | SsoError::Unreachable(d)
            | SsoError::BadProvider(d)
            | SsoError::BadToken(d)
            | SsoError::Internal(d) => d,
            _ => "",
        }
    }
}

/// Who the provider says signed in: the checked ID token's claims the gateway uses.
#[derive(Clone)]
pub struct ProviderIdentity {
    pub provider: String,
    pub subject: String,
    /// The configured email claim, as sent.
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub groups: Vec<String>,
    /// The provider's `amr`, RFC 8176 values only.
    pub amr: Vec<String>,
    /// The provider's refresh token, when it issued one (kept, encrypted at rest, for re-checks).
    pub refresh_token: Option<SecretString>,
}

impl std::fmt::Debug for ProviderIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderIdentity")
            .field("provider", &self.provider)
            .field("subject", &self.subject)
            .field("email", &self.email)
            .field("email_verified", &self.email_verified)
            .field("groups", &self.groups)
            .field("amr", &self.amr)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The outcome of asking a provider again about a session's user.
#[derive(Debug)]
pub enum Recheck {
    /// The provider still knows them: their current claims (and perhaps a new refresh token).
    Current(ProviderIdentity),
    /// The provider refused the refresh token: the grant was revoked or the user removed.
    Revoked,
}

/// A discovery document with its key set, and what the gateway reads of it beyond the crate.
#[derive(Clone)]
struct Discovered {
    metadata: CoreProviderMetadata,
    end_session: Option<String>,
    userinfo: Option<String>,
    /// `client_secret_post` only (no `client_secret_basic`).
    post_only: bool,
    fetched: Instant,
    /// The last fetch of the key set for an unknown key id (not counting discovery's own).
    jwks_refetched: Option<Instant>,
}

/// What is known of a provider's discovery document.
#[derive(Default)]
struct Cache {
    found: Option<Discovered>,
    /// The last failed discovery while there was no copy: when, and why.
    failed: Option<(Instant, SsoError)>,
}

/// One configured provider and what is cached about it.
pub struct Provider {
    pub settings: SsoProvider,
    redirect_uri: String,
    fetcher: Fetcher,
    cache: tokio::sync::Mutex<Cache>,
    /// Serialises re-checks of one identity (by a hash of its subject into these), so two
    /// refreshes of one session at once do not both spend a rotating refresh token.
    recheck_locks: Vec<Arc<tokio::sync::Mutex<()>>>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("id", &self.settings.id)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

/// The configured providers, and the sealing of sign-in flows.
#[derive(Debug)]
pub struct Sso {
    providers: Vec<Arc<Provider>>,
    sealer: FlowSealer,
}

/// Where a started sign-in sends the browser, and the flow cookie's value.
#[derive(Debug)]
pub struct Started {
    pub authorize_url: String,
    pub cookie: SecretString,
    /// The marker that makes the flow single use (see [`Sso::marker`]).
    pub marker: String,
}

impl Sso {
    /// The providers of `settings`, with redirect URIs under `prefix`. `None` without providers.
    /// `secret` is the CSRF key (the flow cookie's sealing key is derived from it).
    pub fn new(
        settings: &SsoSettings,
        prefix: &str,
        secret: &[u8],
    ) -> Result<Option<Sso>, SsoError> {
        if settings.providers.is_empty() {
            return Ok(None);
        }
        let sealer =
            FlowSealer::new(secret).ok_or_else(|| SsoError::Internal("flow key".into()))?;
        let mut providers = Vec::new();
        for p in &settings.providers {
            let fetcher = Fetcher::new(p.timeout).map_err(|e| SsoError::Internal(e.to_string()))?;
            providers.push(Arc::new(Provider {
                redirect_uri: format!("{}{}/sso/{}/callback", settings.public_url, prefix, p.id),
                settings: p.clone(),
                fetcher,
                cache: tokio::sync::Mutex::new(Cache::default()),
                recheck_locks: (0..RECHECK_LOCKS)
                    .map(|_| Arc::new(tokio::sync::Mutex::new(())))
                    .collect(),
            }));
        }
        Ok(Some(Sso { providers, sealer }))
    }

    /// The providers, in config order.
    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    /// The provider with this id.
    pub fn provider(&self, id: &str) -> Option<&Arc<Provider>> {
        self.providers.iter().find(|p| p.settings.id == id)
    }

    /// Opens a flow cookie.
    pub fn open_flow(&self, cookie: &str, now: u64) -> Option<Flow> {
        self.sealer.open(cookie, now)
    }

    /// The single-use marker of a flow: a hash of its nonce (stored as a one-time token at
    /// `start`, consumed at the callback, so a callback is accepted once even when its URL and
    /// cookie are replayed).
    pub fn marker(flow: &Flow) -> String {
        flow.nonce.clone()
    }

    /// Starts a sign-in at `provider`: the URL to send the browser to, and the flow cookie.
    pub async fn start(
        &self,
        provider: &Provider,
        next: &str,
        link_user: Option<String>,
        now: u64,
    ) -> Result<Started, SsoError> {
        let found = provider.discovered().await?;
        let client = provider.client(&found)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in provider.settings.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        for (name, value) in &provider.settings.auth_params {
            request = request.add_extra_param(name.clone(), value.clone());
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        let flow = Flow {
            provider: provider.settings.id.clone(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
            next: next.to_owned(),
            link_user,
            expires: now.saturating_add(FLOW_TTL_SECS),
        };
        let cookie = self
            .sealer
            .seal(&flow)
            .ok_or_else(|| SsoError::Internal("seal flow".into()))?;
        Ok(Started {
            authorize_url: url.to_string(),
            cookie: SecretString::new(cookie),
            marker: Sso::marker(&flow),
        })
    }

    /// Finishes a sign-in: exchanges `code` (the flow's state was checked by the caller) and
    /// verifies the ID token.
    pub async fn finish(
        &self,
        provider: &Provider,
        flow: &Flow,
        code: &str,
    ) -> Result<ProviderIdentity, SsoError> {
        let found = provider.discovered().await?;
        let client = provider.client(&found)?;
        let request = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| SsoError::BadProvider(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(flow.verifier.clone()));
        let answer = request
            .request_async(&provider.fetcher)
            .await
            .map_err(token_error)?;
        let id_token = answer
            .id_token()
            .ok_or_else(|| SsoError::BadProvider("the token answer has no id_token".into()))?
            .clone();
        let nonce = Nonce::new(flow.nonce.clone());
        let payload = provider
            .verify(found, &id_token, |n: Option<&Nonce>| match n {
                Some(n) if n.secret().as_bytes() == nonce.secret().as_bytes() => Ok(()),
                Some(_) => Err("nonce does not match".to_owned()),
                None => Err("nonce missing".to_owned()),
            })
            .await?;
        let refresh = answer
            .refresh_token()
            .map(|t| SecretString::new(t.secret().clone()));
        provider.identity(&payload, refresh)
    }

    /// Asks the provider about `subject` again with its refresh token (see the module docs).
    pub async fn recheck(
        &self,
        provider: &Provider,
        subject: &str,
        refresh_token: &SecretString,
    ) -> Result<Recheck, SsoError> {
        let found = provider.discovered().await?;
        let client = provider.client(&found)?;
        let token = RefreshToken::new(refresh_token.expose().clone());
        let request = client
            .exchange_refresh_token(&token)
            .map_err(|e| SsoError::BadProvider(e.to_string()))?;
        let answer = match request.request_async(&provider.fetcher).await {
            Ok(a) => a,
            Err(RequestTokenError::ServerResponse(e))
                if matches!(
                    e.error(),
                    openidconnect::core::CoreErrorResponseType::InvalidGrant
                ) =>
            {
                return Ok(Recheck::Revoked);
            }
            Err(e) => return Err(token_error(e)),
        };
        let refresh = Some(SecretString::new(
            answer
                .refresh_token()
                .map_or_else(|| refresh_token.expose().clone(), |t| t.secret().clone()),
        ));
        let payload = match answer.id_token() {
            // A refreshed ID token carries no nonce, or the first one (OpenID Core 12.2).
            Some(id_token) => {
                provider
                    .verify(found, &id_token.clone(), |_: Option<&Nonce>| Ok(()))
                    .await?
            }
            None => {
                provider
                    .userinfo(&found, answer.access_token().secret())
                    .await?
            }
        };
        let who = provider.identity(&payload, refresh)?;
        if who.subject != subject {
            return Err(SsoError::BadToken(
                "the provider answered for another subject".into(),
            ));
        }
        Ok(Recheck::Current(who))
    }

    /// Where to send the browser to end its session at the provider too, when configured and
    /// the provider has an `end_session_endpoint`; it comes back to `back`.
    pub async fn logout_url(&self, provider: &Provider, back: &str) -> Option<String> {
        if !provider.settings.logout_at_provider {
            return None;
        }
        let found = provider.discovered().await.ok()?;
        let end = found.end_session?;
        let mut url = openidconnect::url::Url::parse(&end).ok()?;
        url.query_pairs_mut()
            .append_pair("client_id", &provider.settings.client_id)
            .append_pair("post_logout_redirect_uri", back);
        Some(url.to_string())
    }
}

/// How many locks the re-checks of one provider's identities are spread over.
const RECHECK_LOCKS: usize = 64;

impl Provider {
    /// The lock of `subject`'s re-checks.
    pub fn recheck_lock(&self, subject: &str) -> Arc<tokio::sync::Mutex<()>> {
        // FNV-1a: stable and cheap; the spread only has to be even, not secret.
        let mut fnv: u64 = 0xcbf2_9ce4_8422_2325;
        for b in subject.bytes() {
            fnv = (fnv ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let i = usize::try_from(fnv % RECHECK_LOCKS as u64).unwrap_or(0);
        match self.recheck_locks.get(i) {
            Some(lock) => lock.clone(),
            None => Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The redirect URI registered at the provider.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// The discovery document and key set: cached, fetched when missing or older than
    /// [`DISCOVERY_TTL`]; a stale copy is used while the provider cannot be reached, and
    /// without one a failure is the answer for [`DISCOVERY_FAILED_RETRY`].
    async fn discovered(&self) -> Result<Discovered, SsoError> {
        let mut cache = self.cache.lock().await;
        if let Some(found) = cache.found.as_ref()
            && found.fetched.elapsed() < DISCOVERY_TTL
        {
            return Ok(found.clone());
        }
        if let Some((at, e)) = &cache.failed
            && at.elapsed() < DISCOVERY_FAILED_RETRY
        {
            return Err(e.clone());
        }
        match self.discover().await {
            Ok(found) => {
                *cache = Cache {
                    found: Some(found.clone()),
                    failed: None,
                };
                Ok(found)
            }
            Err(e) => match cache.found.as_mut() {
                Some(stale) => {
                    tracing::warn!(provider = %self.settings.id, error = %e, detail = e.detail(), "sso: discovery failed; using the cached document");
                    // Counted as fetched a little before the TTL runs out again.
                    if let Some(at) = Instant::now().checked_sub(DISCOVERY_TTL - DISCOVERY_RETRY) {
                        stale.fetched = at;
                    }
                    Ok(stale.clone())
                }
                None => {
                    cache.failed = Some((Instant::now(), e.clone()));
                    Err(e)
                }
            },
        }
    }

    async fn discover(&self) -> Result<Discovered, SsoError> {
        let issuer = &self.settings.issuer;
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let body = self.get_json(&url, None).await?;
        let metadata: CoreProviderMetadata = serde_json::from_value(body.clone())
            .map_err(|e| SsoError::BadProvider(format!("discovery document: {e}")))?;
        if metadata.issuer().as_str() != issuer.as_str() {
            return Err(SsoError::BadProvider(format!(
                "the discovery document names issuer {:?}, not the configured {issuer:?}",
                metadata.issuer().as_str()
            )));
        }
        let jwks = JsonWebKeySet::fetch_async(metadata.jwks_uri(), &self.fetcher)
            .await
            .map_err(|e| discovery_error("key set", e))?;
        let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
        let methods: Vec<&str> = body
            .get("token_endpoint_auth_methods_supported")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let post_only =
            methods.contains(&"client_secret_post") && !methods.contains(&"client_secret_basic");
        let now = Instant::now();
        Ok(Discovered {
            metadata: metadata.set_jwks(jwks),
            end_session: text("end_session_endpoint"),
            userinfo: text("userinfo_endpoint"),
            post_only,
            fetched: now,
            jwks_refetched: None,
        })
    }

    /// A fresh key set, after a token named a key id the cached one lacks; `None` when one was
    /// fetched too recently (or the fetch failed).
    async fn refetch_keys(&self) -> Option<Discovered> {
        let mut cache = self.cache.lock().await;
        let found = cache.found.as_mut()?;
        if found
            .jwks_refetched
            .is_some_and(|at| at.elapsed() < JWKS_REFETCH_MIN)
        {
            return None;
        }
        found.jwks_refetched = Some(Instant::now());
        match JsonWebKeySet::fetch_async(found.metadata.jwks_uri(), &self.fetcher).await {
            Ok(jwks) => {
                found.metadata = found.metadata.clone().set_jwks(jwks);
                tracing::info!(provider = %self.settings.id, "sso: fetched the provider's keys again (a token named a new key)");
                Some(found.clone())
            }
            Err(e) => {
                tracing::warn!(provider = %self.settings.id, error = %e, "sso: cannot fetch the provider's keys");
                None
            }
        }
    }

    fn client(
        &self,
        found: &Discovered,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        SsoError,
    > {
        let redirect = RedirectUrl::new(self.redirect_uri.clone())
            .map_err(|e| SsoError::Internal(format!("redirect uri: {e}")))?;
        let client = CoreClient::from_provider_metadata(
            found.metadata.clone(),
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(
                self.settings.client_secret.expose().clone(),
            )),
        )
        .set_redirect_uri(redirect);
        Ok(if found.post_only {
            client.set_auth_type(AuthType::RequestBody)
        } else {
            client
        })
    }

    /// Verifies an ID token (see the module docs) and returns its payload. An unknown key id
    /// makes one fresh fetch of the key set and a second try.
    async fn verify(
        &self,
        found: Discovered,
        id_token: &openidconnect::core::CoreIdToken,
        nonce: impl Fn(Option<&Nonce>) -> Result<(), String> + Clone,
    ) -> Result<Value, SsoError> {
        let algorithms = self.algorithms();
        let check = |found: &Discovered| -> Result<(), ClaimsVerificationError> {
            let client = self
                .client(found)
                .map_err(|e| ClaimsVerificationError::Other(e.to_string()))?;
            let verifier = client
                .id_token_verifier()
                .set_allowed_algs(algorithms.clone())
                .set_issue_time_verifier_fn(|iat| {
                    let age = time_now() - iat.timestamp();
                    if age < -IAT_FUTURE_SECS {
                        Err("issued in the future".to_owned())
                    } else if age > IAT_MAX_AGE_SECS {
                        Err("issued too long ago".to_owned())
                    } else {
                        Ok(())
                    }
                });
            id_token.claims(&verifier, nonce.clone()).map(|_| ())
        };
        match check(&found) {
            Ok(()) => {}
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                let fresh = self.refetch_keys().await.ok_or_else(|| {
                    SsoError::BadToken("signed with a key the provider does not publish".into())
                })?;
                check(&fresh).map_err(|e| SsoError::BadToken(e.to_string()))?;
            }
            Err(e) => return Err(SsoError::BadToken(e.to_string())),
        }
        // Checked: read the claims the gateway needs from the same bytes.
        let text = id_token.to_string();
        let payload = text
            .split('.')
            .nth(1)
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .ok()
            })
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .filter(Value::is_object)
            .ok_or_else(|| SsoError::BadToken("unreadable payload".into()))?;
        Ok(payload)
    }

    /// The claims of the userinfo endpoint (when a refresh gives no ID token).
    async fn userinfo(&self, found: &Discovered, access_token: &str) -> Result<Value, SsoError> {
        let url = found
            .userinfo
            .as_deref()
            .ok_or_else(|| SsoError::BadProvider("no ID token and no userinfo endpoint".into()))?;
        self.get_json(url, Some(access_token)).await
    }

    async fn get_json(&self, url: &str, bearer: Option<&str>) -> Result<Value, SsoError> {
        let mut req = http::Request::get(url).header(http::header::ACCEPT, "application/json");
        if let Some(token) = bearer {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req
            .body(Vec::new())
            .map_err(|e| SsoError::BadProvider(format!("{url}: {e}")))?;
        let resp = self
            .fetcher
            .send(req)
            .await
            .map_err(|e| SsoError::Unreachable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(SsoError::BadProvider(format!(
                "{url} answered {}",
                resp.status()
            )));
        }
        serde_json::from_slice(resp.body())
            .map_err(|e| SsoError::BadProvider(format!("{url}: not JSON: {e}")))
    }

    fn algorithms(&self) -> Vec<CoreJwsSigningAlgorithm> {
        self.settings
            .id_token_algorithms
            .iter()
            .filter_map(|a| serde_json::from_value(Value::String(a.clone())).ok())
            .collect()
    }

    /// The identity in a checked payload (or userinfo answer), by the configured claims.
    fn identity(
        &self,
        claims: &Value,
        refresh_token: Option<SecretString>,
    ) -> Result<ProviderIdentity, SsoError> {
        let s = &self.settings;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| SsoError::BadToken("no subject".into()))?
            .to_owned();
        let text = |k: &str| {
            claims
                .get(k)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let email_verified = match claims.get("email_verified") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(t)) => t.eq_ignore_ascii_case("true"),
            _ => false,
        };
        let groups = match s.groups_claim.as_deref().and_then(|k| claims.get(k)) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|g| match g {
                    Value::String(t) => Some(t.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect(),
            Some(Value::String(t)) => vec![t.clone()],
            _ => Vec::new(),
        };
        let amr = match claims.get("amr") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .filter(|m| KNOWN_AMR.contains(m))
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        Ok(ProviderIdentity {
            provider: s.id.clone(),
            subject,
            email: text(&s.email_claim),
            email_verified,
            name: text(&s.name_claim),
            groups,
            amr,
            refresh_token,
        })
    }
}

/// Unix seconds now, for the `iat` check (the crate checks `exp` against the system clock too).
fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn discovery_error<E: std::error::Error>(
    what: &str,
    e: openidconnect::DiscoveryError<E>,
) -> SsoError {
    match e {
        openidconnect::DiscoveryError::Request(inner) => {
            SsoError::Unreachable(format!("{what}: {inner}"))
        }
        other => SsoError::BadProvider(format!("{what}: {other}")),
    }
}

fn token_error<RE, T>(e: RequestTokenError<RE, T>) -> SsoError
where
    RE: std::error::Error + 'static,
    T: openidconnect::ErrorResponse + 'static,
{
    match e {
        RequestTokenError::ServerResponse(r) => SsoError::Denied(format!("token endpoint: {r}")),
        RequestTokenError::Request(inner) => {
            SsoError::Unreachable(format!("token endpoint: {inner}"))
        }
        RequestTokenError::Parse(inner, _) => {
            SsoError::BadProvider(format!("token endpoint answer: {inner}"))
        }
        RequestTokenError::Other(t) => SsoError::BadProvider(format!("token endpoint: {t}")),
    }
}

#[cfg(test)]
mod tests;
