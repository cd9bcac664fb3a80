//! The authentication service: sign-up, login, refresh-token rotation, logout and the
//! per-request access-token check. No HTTP here; the endpoints call this API.
//!
//! [`AuthService`] is built once at start-up ([`AuthService::open`]) from the checked settings, the
//! store and the clock, and shared by cloning (an `Arc` inside).
//!
//! - **Keys.** EdDSA keys live in the store's meta table under `signing_keys` (JSON
//!   `{current, keys}`); the first start generates one and saves it with `put_meta_if_absent`, so
//!   processes starting together agree. HS256 uses the configured secret. The key used to derive
//!   refresh-token successors (see `super::refresh_token`) is kept the same way under
//!   `refresh_key`.
//! - **Sessions.** A login or sign-up starts a refresh *family* (random UUID) whose absolute
//!   expiry is `now + refresh_ttl`; every refresh rotates the token into its derived successor
//!   and never extends that expiry. Access tokens carry the family id (`sid`) and the user's
//!   session version (`sv`), and never outlive their family.
//! - **Concurrent refresh.** Presenting an already rotated token within `refresh_grace` of its
//!   rotation returns its successor again (following the chain a few steps), so two tabs
//!   refreshing at once both succeed and end up with the same token. Later, it is reuse: the
//!   whole family is revoked and an `audit` warning logged.
//! - **Hot path.** [`AuthService::authenticate`] checks the signature and times (or finds the
//!   token in the bounded `VerifiedCache` of earlier verifications, re-checking its expiry),
//!   then, always, the in-memory [`Revocations`] (deny-listed jtis, revoked families, disabled users, session
//!   versions). That state is written through by every local change and follows other processes
//!   (the admin CLI) through the store's change feed, polled by [`AuthService::spawn_maintenance`].
//!
//! This file builds the service and holds sign-up, login and the per-request check; `sessions`
//! holds refresh, logout and issuing tokens; `maintenance` the change-feed poll, the sweep and
//! the staleness rule. All three are `impl AuthService` blocks over the private state defined
//! here, split so that each reads top to bottom.
//!
//! Store calls are blocking and run on tokio's blocking pool; password hashing runs on the
//! hasher's bounded slice of it. Audit events go to the `audit` tracing target and never contain
//! a password, a token or a hash.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use super::error::AuthError;
use super::keystore;
use super::password::{self, HashError, Hasher};
use super::revocation::Revocations;
use super::token::{self, AccessClaims, Keys, TokenError, TokenSettings};
use super::verified::{self, Lookup, VerifiedCache};
use crate::clock::Clock;
use crate::secret::{Secret, SecretString};
use crate::store::{Regulation, Store, User, UserFlags};

use super::email::normalize_email;

/// Clock skew tolerated when checking an access token's `exp`, `nbf` and `iat`. Issuer and
/// verifier share this machine's clock, so this only absorbs small steps of that clock (an NTP
/// correction right after issue would otherwise make a fresh token "not yet valid"). It also
/// means a token is accepted up to this long after its `exp`.
pub const ACCESS_LEEWAY_SECS: u64 = 5;

/// Longest display name kept, in characters.
const MAX_NAME_CHARS: usize = 128;

/// What the service needs from the configuration, already checked.
#[derive(Clone, Debug)]
pub struct ServiceSettings {
    /// `iss` of access tokens.
    pub issuer: String,
    /// `aud` of access tokens.
    pub audience: String,
    /// Lifetime of an access token (capped by its family's expiry).
    pub access_ttl: Duration,
    /// Absolute lifetime of a refresh family, from login; rotation does not extend it.
    pub refresh_ttl: Duration,
    /// How long after a rotation the old refresh token still yields the same successor.
    pub refresh_grace: Duration,
    /// Signing algorithm of access tokens.
    pub algorithm: token::Algorithm,
    /// The HS256 secret; required when `algorithm` is HS256, ignored otherwise.
    pub hs256_secret: Option<Secret<Vec<u8>>>,
    /// Roles given to users who sign up.
    pub default_roles: Vec<String>,
    /// Whether anyone may sign up.
    pub signup_open: bool,
    /// Rules for new passwords.
    pub policy: password::Policy,
    /// Password hashing parameters and concurrency.
    pub hasher: password::HasherConfig,
    /// For a store shared over the network: how long the service may go without reading the
    /// change feed before it stops vouching for tokens (`None`: a local file, never stale).
    pub stale_after: Option<Duration>,
    /// Whether a stale service refuses tokens (fail closed) or keeps accepting them.
    pub refuse_when_stale: bool,
}

/// The user as shown to the user (and to the HTTP layer): no hash, no flags.
#[derive(Debug, Clone, Serialize)]
pub struct PublicUser {
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    pub roles: Vec<String>,
    /// The user has proved they read mail at `email` (a verification or reset link).
    pub email_verified: bool,
    /// RFC 3339, whole seconds, UTC.
    pub created_at: String,
}

impl From<&User> for PublicUser {
    fn from(u: &User) -> Self {
        PublicUser {
            id: u.id.clone(),
            email: u.email.clone(),
            name: u.name.clone(),
            roles: u.roles.clone(),
            email_verified: u.email_verified,
            created_at: rfc3339(u.created_at),
        }
    }
}

/// Who starts a session, as the user will see it in their sessions list: the `User-Agent`
/// and the client address. Stored with the session, never logged.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub user_agent: Option<String>,
    pub ip: Option<std::net::IpAddr>,
}

/// Tokens handed out by sign-up, login and refresh.
#[derive(Debug)]
pub struct Issued {
    pub access_token: SecretString,
    pub claims: AccessClaims,
    pub refresh_token: SecretString,
    /// Seconds until the access token expires: the access TTL, or less when the family expires
    /// sooner.
    pub expires_in: u64,
    /// When the refresh family (the session) ends, unix seconds.
    pub refresh_expires_at: u64,
    pub user: PublicUser,
}

impl AuthService {
    /// Tells the in-memory revocation state a user's current flags (session version, disabled),
    /// after a change that ends their sessions.
    fn publish_flags(&self, user: &User) -> Result<(), AuthError> {
        self.write_revocations(|r| {
            r.set_flags(
                &user.id,
                Some(UserFlags {
                    disabled: user.disabled,
                    session_version: user.session_version,
                }),
            );
        })
    }
}

/// Seconds since the Unix epoch as RFC 3339, whole seconds, UTC.
fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

fn hash_error(e: HashError) -> AuthError {
    match e {
        HashError::Busy => AuthError::Busy,
        other => AuthError::Internal(other.to_string()),
    }
}

fn token_error(e: TokenError) -> AuthError {
    AuthError::Internal(e.to_string())
}

/// The authentication service. Cheap to clone.
#[derive(Clone)]
pub struct AuthService {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ServiceSettings,
    token_settings: TokenSettings,
    store: Store,
    clock: Clock,
    /// Swapped when another process rotates the keys (seen on the change feed).
    keys: arc_swap::ArcSwap<Keys>,
    hasher: Hasher,
    refresh_key: Secret<Vec<u8>>,
    revocations: RwLock<Revocations>,
    /// Access tokens whose signature and claims verified; see [`super::verified`].
    verified: VerifiedCache,
    /// Serialises polls so that two never apply the same feed range at once.
    poll_lock: tokio::sync::Mutex<()>,
    /// Unix seconds of the last successful read of the change feed.
    last_sync: AtomicU64,
    /// Whether the service is stale (set by the maintenance task; logged on each change).
    stale: AtomicBool,
    counters: Counters,
    /// The single sign-on providers (set by the HTTP layer at start-up and reload), for the
    /// re-checks of federated sessions at their refreshes.
    sso: arc_swap::ArcSwapOption<super::sso::Sso>,
}

/// Running totals of auth events, read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct Counters {
    pub logins_ok: std::sync::atomic::AtomicU64,
    pub logins_failed: std::sync::atomic::AtomicU64,
    pub refreshes: std::sync::atomic::AtomicU64,
    pub reuse_detected: std::sync::atomic::AtomicU64,
    /// Authenticator apps set up.
    pub mfa_enrolled: std::sync::atomic::AtomicU64,
    /// Second-factor codes refused (at login, step-up, setup and removal).
    pub mfa_failed: std::sync::atomic::AtomicU64,
    /// Single sign-on outcomes by (provider, outcome): `ok`, `created`... and refusals.
    pub sso: std::sync::Mutex<std::collections::BTreeMap<(String, String), u64>>,
}

fn bump(c: &std::sync::atomic::AtomicU64) {
    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

impl std::fmt::Debug for AuthService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService")
            .field("keys", &self.inner.keys)
            .finish_non_exhaustive()
    }
}

impl AuthService {
    /// Builds the service: checks the hasher parameters, loads or creates the signing and
    /// refresh keys, and loads the revocation state from the store.
    pub async fn open(
        settings: ServiceSettings,
        store: Store,
        clock: Clock,
    ) -> Result<AuthService, AuthError> {
        let now = clock.unix();
        let hasher_config = settings.hasher.clone();
        // Computing the dummy hash is real argon2 work: keep it off the async workers.
        let hasher = tokio::task::spawn_blocking(move || Hasher::new(hasher_config))
            .await
            .map_err(|e| AuthError::Internal(format!("hasher set-up task failed: {e}")))?
            .map_err(hash_error)?;
        let keys = match settings.algorithm {
            token::Algorithm::HS256 => {
                let secret = settings.hs256_secret.as_ref().ok_or_else(|| {
                    AuthError::Internal("HS256 is configured without a secret".into())
                })?;
                Keys::hs256(secret).map_err(token_error)?
            }
            token::Algorithm::EdDSA => {
                run_blocking(&store, move |s| keystore::load_eddsa_keys(s, now)).await?
            }
        };
        let refresh_key = run_blocking(&store, keystore::load_refresh_key).await?;
        let revocations = run_blocking(&store, move |s| Ok(Revocations::load(s, now)?)).await?;
        let token_settings = TokenSettings {
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            access_ttl: settings.access_ttl,
            leeway_secs: ACCESS_LEEWAY_SECS,
        };
        tracing::info!(
            alg = keys.algorithm().as_str(),
            kid = keys.current_kid(),
            "auth service ready"
        );
        Ok(AuthService {
            inner: Arc::new(Inner {
                settings,
                token_settings,
                store,
                clock,
                keys: arc_swap::ArcSwap::from_pointee(keys),
                hasher,
                refresh_key,
                revocations: RwLock::new(revocations),
                verified: VerifiedCache::new(verified::DEFAULT_CAPACITY, ACCESS_LEEWAY_SECS),
                poll_lock: tokio::sync::Mutex::new(()),
                last_sync: AtomicU64::new(now),
                stale: AtomicBool::new(false),
                counters: Counters::default(),
                sso: arc_swap::ArcSwapOption::empty(),
            }),
        })
    }

    pub fn settings(&self) -> &ServiceSettings {
        &self.inner.settings
    }

    /// Running totals of logins, refreshes and reuse detections.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// The password hasher (its pool counters feed the metrics).
    pub fn hasher(&self) -> &Hasher {
        &self.inner.hasher
    }

    /// The clock the service reads time from.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The store this service writes to.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Creates an account and starts a session for it.
    ///
    /// Checks, in order: sign-up open, email syntax, password policy, email not yet registered
    /// (a cheap read before the expensive hash; the answer says "taken" anyway, so hashing first
    /// would hide nothing), then hashes and creates the user, which catches a concurrent sign-up
    /// with the same email. The display name is trimmed, stripped of control characters and cut
    /// to 128 characters; an empty one is `None`.
    #[tracing::instrument(skip_all)]
    pub async fn signup(
        &self,
        email: &str,
        password: &SecretString,
        name: Option<&str>,
    ) -> Result<Issued, AuthError> {
        self.signup_from(email, password, name, Client::default())
            .await
    }

    /// [`AuthService::signup`] from a known client, whose user agent and address the new
    /// session records (the user sees them in their sessions list).
    pub async fn signup_from(
        &self,
        email: &str,
        password: &SecretString,
        name: Option<&str>,
        client: Client,
    ) -> Result<Issued, AuthError> {
        let settings = &self.inner.settings;
        if !settings.signup_open {
            return Err(AuthError::SignupClosed);
        }
        let email = normalize_email(email).ok_or(AuthError::InvalidEmail)?;
        settings
            .policy
            .check(password.expose(), &email)
            .map_err(AuthError::WeakPassword)?;
        let lookup = email.clone();
        if self
            .blocking(move |s| Ok(s.user_by_email(&lookup)?))
            .await?
            .is_some()
        {
            return Err(AuthError::EmailTaken);
        }
        let password_hash = self.inner.hasher.hash(password).await.map_err(hash_error)?;
        let now = self.inner.clock.unix();
        let user = User {
            id: uuid::Uuid::new_v4().to_string(),
            email,
            name: name.and_then(clean_name),
            password_hash,
            roles: settings.default_roles.clone(),
            disabled: false,
            created_at: now,
            updated_at: now,
            session_version: 0,
            email_verified: false,
        };
        let record = user.clone();
        self.blocking(move |s| Ok(s.create_user(&record)?)).await?;
        tracing::info!(target: "audit", event = "signup", user_id = %user.id);
        self.start_session(&user, client, SignIn::Password).await
    }

    /// Checks email and password and starts a session.
    ///
    /// The password is always verified, against a dummy hash when the email is unknown, so the
    /// response time does not reveal whether an account exists; a disabled user is refused only
    /// after verifying. A correct password stored with outdated parameters is re-hashed.
    #[tracing::instrument(skip_all)]
    pub async fn login(&self, email: &str, password: &SecretString) -> Result<Login, AuthError> {
        self.login_from(email, password, Client::default()).await
    }

    /// [`AuthService::login`] from a known client (see [`AuthService::signup_from`]).
    #[tracing::instrument(skip_all)]
    pub async fn login_from(
        &self,
        email: &str,
        password: &SecretString,
        client: Client,
    ) -> Result<Login, AuthError> {
        let Some(email) = normalize_email(email) else {
            // Such an address can never have been registered; nothing to hide.
            tracing::info!(target: "audit", event = "login_failed", reason = "invalid_email");
            bump(&self.inner.counters.logins_failed);
            return Err(AuthError::InvalidCredentials);
        };
        let lookup = email.clone();
        let user = self
            .blocking(move |s| Ok(s.user_by_email(&lookup)?))
            .await?;
        let verification = self
            .inner
            .hasher
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await
            .map_err(hash_error)?;
        let Some(user) = user else {
            tracing::info!(target: "audit", event = "login_failed", reason = "unknown_email", %email);
            bump(&self.inner.counters.logins_failed);
            return Err(AuthError::InvalidCredentials);
        };
        if !verification.ok {
            tracing::info!(target: "audit", event = "login_failed", reason = "bad_password", user_id = %user.id);
            bump(&self.inner.counters.logins_failed);
            return Err(AuthError::InvalidCredentials);
        }
        if user.disabled {
            tracing::info!(target: "audit", event = "login_failed", reason = "disabled", user_id = %user.id);
            bump(&self.inner.counters.logins_failed);
            return Err(AuthError::InvalidCredentials);
        }
        let mut user = user;
        if verification.needs_rehash {
            // Best effort: the login succeeds even if the upgrade does not.
            match self.rehash(&user, password).await {
                // The session checks the hash it started on against the stored one.
                Ok(Some(rehashed)) => user = rehashed,
                Ok(None) => {}
                Err(e) => tracing::warn!(user_id = %user.id, error = %e, "password rehash failed"),
            }
        }
        let login = self.after_password(&user, client).await?;
        if matches!(login, Login::Session(_)) {
            tracing::info!(target: "audit", event = "login", user_id = %user.id);
            bump(&self.inner.counters.logins_ok);
        }
        Ok(login)
    }

    /// The current record of a user. A deleted or disabled user gives
    /// `NotAuthenticated("disabled")`: their tokens are dead too.
    pub async fn user(&self, user_id: &str) -> Result<PublicUser, AuthError> {
        let id = user_id.to_owned();
        match self.blocking(move |s| Ok(s.user_by_id(&id)?)).await? {
            Some(user) if !user.disabled => Ok(PublicUser::from(&user)),
            _ => Err(AuthError::NotAuthenticated("disabled")),
        }
    }

    /// Checks an access token: signature, issuer, audience and times (with
    /// [`ACCESS_LEEWAY_SECS`]), then the in-memory revocation state. Hot path: memory only, no
    /// disk, no await.
    ///
    /// A token verified before is found in the `VerifiedCache` (its expiry re-checked against
    /// the clock); the revocation checks run on every call, cached or not, and a token they
    /// refuse is dropped from the cache.
    pub fn authenticate(&self, token: &str) -> Result<Arc<AccessClaims>, AuthError> {
        let now = self.inner.clock.unix();
        if self.refuses_tokens_at(now) {
            return Err(AuthError::Unavailable(
                "revocations are out of date: the store is unreachable".into(),
            ));
        }
        let claims = match self.inner.verified.get(token, now) {
            Lookup::Hit(claims) => claims,
            Lookup::Expired => return Err(AuthError::NotAuthenticated("expired")),
            Lookup::Miss => {
                let claims = self
                    .inner
                    .keys
                    .load()
                    .verify_access(&self.inner.token_settings, token, now)
                    .map_err(|e| match e {
                        TokenError::Expired => AuthError::NotAuthenticated("expired"),
                        other => {
                            tracing::debug!(error = %other, "access token refused");
                            AuthError::NotAuthenticated("invalid")
                        }
                    })?;
                let claims = Arc::new(claims);
                self.inner.verified.insert(token, claims.clone(), now);
                claims
            }
        };
        let refused = self
            .inner
            .revocations
            .read()
            .map_err(|_| AuthError::Internal("revocation state lock poisoned".into()))?
            .check(&claims);
        if let Err(reason) = refused {
            self.inner.verified.remove(token);
            return Err(AuthError::NotAuthenticated(reason));
        }
        Ok(claims)
    }

    /// How many verified tokens are cached (for tests and diagnostics).
    pub fn verified_cache_len(&self) -> usize {
        self.inner.verified.len()
    }

    /// The public keys (empty for HS256).
    pub fn jwks(&self) -> serde_json::Value {
        self.inner.keys.load().jwks()
    }

    /// The signing keys, for identity assertions.
    pub fn keys(&self) -> Keys {
        Keys::clone(&self.inner.keys.load())
    }

    /// The shared failed-login regulation record of an account (normalised email).
    pub async fn shared_regulation(
        &self,
        account: String,
    ) -> Result<Option<Regulation>, AuthError> {
        self.blocking(move |s| Ok(s.regulation(&account)?)).await
    }

    /// Updates an account's shared regulation record atomically (see
    /// [`crate::ratelimit::Rules`]).
    pub async fn update_shared_regulation(
        &self,
        account: String,
        change: impl FnOnce(&mut Regulation) + Send + 'static,
    ) -> Result<(), AuthError> {
        let now = self.inner.clock.unix();
        self.blocking(move |s| Ok(s.update_regulation(&account, now, change).map(|_| ())?))
            .await
    }

    fn write_revocations<T>(&self, f: impl FnOnce(&mut Revocations) -> T) -> Result<T, AuthError> {
        let mut guard = self
            .inner
            .revocations
            .write()
            .map_err(|_| AuthError::Internal("revocation state lock poisoned".into()))?;
        Ok(f(&mut guard))
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, AuthError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, AuthError> + Send + 'static,
    {
        run_blocking(&self.inner.store, f).await
    }

    /// Stores a fresh hash of `password` for `user`, unless their hash changed meanwhile.
    /// Returns the user as stored with the new hash, or `None` if nothing was written.
    async fn rehash(
        &self,
        user: &User,
        password: &SecretString,
    ) -> Result<Option<User>, AuthError> {
        let new_hash = self.inner.hasher.hash(password).await.map_err(hash_error)?;
        let now = self.inner.clock.unix();
        let id = user.id.clone();
        let old_hash = user.password_hash.clone();
        // One transaction: only the hash changes, and only if nobody changed it meanwhile, so
        // a concurrent `gateway user disable` or role change is never overwritten.
        self.blocking(move |s| {
            let wanted = new_hash.clone();
            match s.modify_user(&id, |current| {
                if current.password_hash == old_hash {
                    current.password_hash = new_hash;
                    current.updated_at = now;
                }
                Ok(())
            }) {
                Ok(stored) => Ok((stored.password_hash == wanted).then_some(stored)),
                Err(crate::store::StoreError::NotFound) => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }
}

async fn run_blocking<T, F>(store: &Store, f: F) -> Result<T, AuthError>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, AuthError> + Send + 'static,
{
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| AuthError::Internal(format!("store task failed: {e}")))?
}

/// Trims a display name, drops control characters and caps its length; empty means none.
pub(crate) fn clean_name(name: &str) -> Option<String> {
    let cleaned: String = name
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME_CHARS)
        .collect();
    let cleaned = cleaned.trim();
    (!cleaned.is_empty()).then(|| cleaned.to_owned())
}

mod account;
mod maintenance;
mod mfa;
mod passkeys;
mod recovery;
mod verification;

pub use account::SessionView;
pub use mfa::{Challenge, Login, MfaStatus, TotpSetup};
pub use passkeys::{AddedPasskey, PasskeyView};
pub use recovery::ResetLink;
pub use sessions::SignIn;
pub use sso::{IdentityView, SsoSignIn};
mod sessions;
mod sso;
#[cfg(test)]
mod tests;
