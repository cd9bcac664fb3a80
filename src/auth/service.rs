//! The authentication service: sign-up, login, refresh-token rotation, logout and the
//! per-request access-token check. No HTTP here; the endpoints call this API.
//!
//! [`AuthService`] is built once at start-up ([`AuthService::open`]) from the checked settings, the
//! store and the clock, and shared by cloning (an `Arc` inside).
//!
//! - **Keys.** EdDSA keys live in the store's meta table under `signing_keys` (JSON
//!   `{current, keys}`); the first start generates one and saves it with `put_meta_if_absent`, so
//!   processes starting together agree. HS256 uses the configured secret. The key used to derive
//!   refresh-token successors (see [`super::refresh_token`]) is kept the same way under
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
//!   token in the bounded [`VerifiedCache`] of earlier verifications, re-checking its expiry),
//!   then, always, the in-memory [`Revocations`] (deny-listed jtis, revoked families, disabled users, session
//!   versions). That state is written through by every local change and follows other processes
//!   (the admin CLI) through the store's change feed, polled by [`AuthService::spawn_maintenance`].
//!
//! Store calls are blocking and run on tokio's blocking pool; password hashing runs on the
//! hasher's bounded slice of it. Audit events go to the `audit` tracing target and never contain
//! a password, a token or a hash.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use super::error::AuthError;
use super::password::{self, HashError, Hasher};
use super::revocation::{self, Revocations};
use super::rotation::{self, RefreshOutcome};
use super::token::{self, AccessClaims, Keys, Subject, TokenError, TokenSettings};
use super::verified::{self, Lookup, VerifiedCache};
use super::{keystore, refresh_token};
use crate::clock::Clock;
use crate::secret::{Secret, SecretString};
use crate::store::{RefreshRecord, RefreshState, Regulation, Store, User, UserFlags};

pub use super::email::normalize_email;

/// Clock skew tolerated when checking an access token's `exp`, `nbf` and `iat`. Issuer and
/// verifier share this machine's clock, so this only absorbs small steps of that clock (an NTP
/// correction right after issue would otherwise make a fresh token "not yet valid"). It also
/// means a token is accepted up to this long after its `exp`.
pub const ACCESS_LEEWAY_SECS: u64 = 5;

/// Longest display name kept, in characters.
const MAX_NAME_CHARS: usize = 128;
/// How often [`AuthService::spawn_maintenance`] polls the change feed.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often [`AuthService::spawn_maintenance`] sweeps expired rows.
const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);
/// How long after start-up the first sweep runs: serving comes first. (A sweep of a store with
/// two million old change-feed entries ran alongside start-up and delayed the first request.)
const FIRST_SWEEP_AFTER: Duration = Duration::from_secs(30);

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
            created_at: humantime::format_rfc3339_seconds(
                UNIX_EPOCH + Duration::from_secs(u.created_at),
            )
            .to_string(),
        }
    }
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
}

/// Running totals of auth events, read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct Counters {
    pub logins_ok: std::sync::atomic::AtomicU64,
    pub logins_failed: std::sync::atomic::AtomicU64,
    pub refreshes: std::sync::atomic::AtomicU64,
    pub reuse_detected: std::sync::atomic::AtomicU64,
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
        };
        let record = user.clone();
        self.blocking(move |s| Ok(s.create_user(&record)?)).await?;
        tracing::info!(target: "audit", event = "signup", user_id = %user.id);
        self.start_session(&user).await
    }

    /// Checks email and password and starts a session.
    ///
    /// The password is always verified, against a dummy hash when the email is unknown, so the
    /// response time does not reveal whether an account exists; a disabled user is refused only
    /// after verifying. A correct password stored with outdated parameters is re-hashed.
    #[tracing::instrument(skip_all)]
    pub async fn login(&self, email: &str, password: &SecretString) -> Result<Issued, AuthError> {
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
        if verification.needs_rehash {
            // Best effort: the login succeeds even if the upgrade does not.
            if let Err(e) = self.rehash(&user, password).await {
                tracing::warn!(user_id = %user.id, error = %e, "password rehash failed");
            }
        }
        tracing::info!(target: "audit", event = "login", user_id = %user.id);
        bump(&self.inner.counters.logins_ok);
        self.start_session(&user).await
    }

    /// Rotates a refresh token and issues a new access token; see the module docs for the
    /// grace window and reuse detection.
    #[tracing::instrument(skip_all)]
    pub async fn refresh(&self, refresh_token: &SecretString) -> Result<Issued, AuthError> {
        let presented = refresh_token.expose();
        if !refresh_token::well_formed(presented) {
            return Err(AuthError::InvalidRefresh);
        }
        let now = self.inner.clock.unix();
        let grace = self.inner.settings.refresh_grace.as_secs();
        let key = self.inner.refresh_key.clone();
        let presented = refresh_token.clone();
        let outcome = self
            .blocking(move |s| rotation::rotate(s, &key, &presented, now, grace))
            .await?;
        match outcome {
            RefreshOutcome::Issue {
                token,
                record,
                user,
                grace,
            } => {
                tracing::info!(target: "audit", event = "refresh", user_id = %user.id, family = %record.family, grace);
                bump(&self.inner.counters.refreshes);
                self.issue(&user, &record.family, record.family_expires_at, token, now)
            }
            RefreshOutcome::Invalid => Err(AuthError::InvalidRefresh),
            RefreshOutcome::Reuse(record) => {
                self.write_revocations(|r| {
                    r.revoke_family(&record.family, record.family_expires_at)
                })?;
                tracing::warn!(target: "audit", event = "refresh_reuse", user_id = %record.user_id, family = %record.family);
                bump(&self.inner.counters.reuse_detected);
                Err(AuthError::InvalidRefresh)
            }
            RefreshOutcome::UserGone(record) => {
                self.write_revocations(|r| {
                    r.revoke_family(&record.family, record.family_expires_at)
                })?;
                tracing::info!(target: "audit", event = "refresh_refused", reason = "user_disabled", user_id = %record.user_id, family = %record.family);
                Err(AuthError::InvalidRefresh)
            }
        }
    }

    /// Ends a session, effective at once: the access token's family (`sid`) is revoked and its
    /// `jti` deny-listed until it expires; a refresh token, if given, has its family revoked too.
    /// Unknown or already revoked tokens are not an error.
    #[tracing::instrument(skip_all)]
    pub async fn logout(
        &self,
        claims: Option<&AccessClaims>,
        refresh_token: Option<&SecretString>,
    ) -> Result<(), AuthError> {
        let now = self.inner.clock.unix();
        let access = claims.map(|c| (c.sid.clone(), c.jti.clone(), c.exp));
        let refresh_hash = refresh_token
            .map(|t| t.expose().as_str())
            .filter(|t| refresh_token::well_formed(t))
            .map(refresh_token::hash);
        let access_for_store = access.clone();
        let refresh_record = self
            .blocking(move |s| {
                if let Some((sid, jti, exp)) = &access_for_store {
                    s.revoke_jti(jti, *exp)?;
                    s.revoke_family(sid, now)?;
                }
                let Some(hash) = refresh_hash else {
                    return Ok(None);
                };
                let record = s.get_refresh(&hash)?;
                if let Some(record) = &record {
                    s.revoke_family(&record.family, now)?;
                }
                Ok(record)
            })
            .await?;
        // Any access token of the claims' family was issued by now, so expires before this.
        let family_horizon = now
            .saturating_add(self.inner.settings.access_ttl.as_secs())
            .saturating_add(ACCESS_LEEWAY_SECS);
        self.write_revocations(|r| {
            if let Some((sid, jti, exp)) = &access {
                r.revoke_jti(jti, *exp);
                r.revoke_family(sid, family_horizon);
            }
            if let Some(record) = &refresh_record {
                r.revoke_family(&record.family, record.family_expires_at);
            }
        })?;
        tracing::info!(
            target: "audit",
            event = "logout",
            user_id = claims.map(|c| c.sub.as_str()).or(refresh_record.as_ref().map(|r| r.user_id.as_str())),
            family = claims.map(|c| c.sid.as_str()).or(refresh_record.as_ref().map(|r| r.family.as_str())),
        );
        Ok(())
    }

    /// Ends every session of a user: bumps their session version (killing every access token
    /// issued so far) and revokes all their refresh families. An unknown user is not an error.
    #[tracing::instrument(skip_all)]
    pub async fn logout_all(&self, user_id: &str) -> Result<(), AuthError> {
        let now = self.inner.clock.unix();
        let id = user_id.to_owned();
        let updated = self
            .blocking(move |s| Ok(s.end_all_sessions(&id, now)?))
            .await?;
        if let Some(user) = updated {
            self.write_revocations(|r| {
                r.set_flags(
                    &user.id,
                    Some(UserFlags {
                        disabled: user.disabled,
                        session_version: user.session_version,
                    }),
                );
            })?;
            tracing::info!(target: "audit", event = "logout_all", user_id = %user.id, session_version = user.session_version);
        }
        Ok(())
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
    /// A token verified before is found in the [`VerifiedCache`] (its expiry re-checked against
    /// the clock); the revocation checks run on every call, cached or not, and a token they
    /// refuse is dropped from the cache.
    pub fn authenticate(&self, token: &str) -> Result<Arc<AccessClaims>, AuthError> {
        let now = self.inner.clock.unix();
        if self.refuses_tokens_at(now) {
            return Err(AuthError::Unavailable(
                "revocations are out of date: the store is unreachable".into(),
            ));
        }
        let key = verified::key(token);
        let claims = match self.inner.verified.get(&key, now) {
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
                self.inner.verified.insert(key, claims.clone(), now);
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
            self.inner.verified.remove(&key);
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

    /// Starts the background task that polls the change feed every second and sweeps expired
    /// rows every hour (the first time 30 s after start). It stops when `shutdown` becomes `true` or its
    /// sender is dropped.
    pub fn spawn_maintenance(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let service = self.clone();
        let hint = self.inner.store.change_hint();
        tokio::spawn(async move {
            let woken = || async {
                match &hint {
                    Some(h) => h.notified().await,
                    None => std::future::pending().await,
                }
            };
            let mut poll = tokio::time::interval(POLL_INTERVAL);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut sweep = tokio::time::interval_at(
                tokio::time::Instant::now() + FIRST_SWEEP_AFTER,
                SWEEP_INTERVAL,
            );
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                if *shutdown.borrow() {
                    break;
                }
                tokio::select! {
                    changed = shutdown.changed() => {
                        if changed.is_err() {
                            break;
                        }
                    }
                    _ = poll.tick() => service.poll_and_track().await,
                    () = woken() => service.poll_and_track().await,
                    _ = sweep.tick() => {
                        if let Err(e) = service.sweep().await {
                            tracing::warn!(error = %e, "store sweep failed");
                        }
                    }
                }
            }
            tracing::debug!("auth maintenance stopped");
        });
    }

    /// Polls the change feed and keeps track of staleness: logs when the service becomes
    /// stale (it may miss revocations) and when it recovers.
    async fn poll_and_track(&self) {
        let result = self.poll_changes().await;
        let now = self.inner.clock.unix();
        if let Err(e) = &result {
            tracing::warn!(error = %e, "polling store changes failed");
        }
        let stale = self.is_stale_at(now);
        if self.inner.stale.swap(stale, Ordering::Relaxed) != stale {
            if stale {
                let refusing = self.inner.settings.refuse_when_stale;
                tracing::error!(
                    since_secs = now.saturating_sub(self.inner.last_sync.load(Ordering::Relaxed)),
                    refusing_tokens = refusing,
                    "store unreachable for longer than store.postgres.stale_after: revocations may be missed{}",
                    if refusing {
                        "; refusing tokens until it is back"
                    } else {
                        "; still accepting tokens (when_stale: accept)"
                    }
                );
            } else {
                tracing::info!("store reachable again; revocations are current");
            }
        }
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

    /// Whether the service has gone longer than `stale_after` without reading the change feed.
    pub fn is_stale(&self) -> bool {
        self.is_stale_at(self.inner.clock.unix())
    }

    fn is_stale_at(&self, now: u64) -> bool {
        self.inner.settings.stale_after.is_some_and(|limit| {
            now.saturating_sub(self.inner.last_sync.load(Ordering::Relaxed)) > limit.as_secs()
        })
    }

    /// Whether tokens are refused because the service is stale and configured to fail closed.
    pub fn refuses_tokens(&self) -> bool {
        self.refuses_tokens_at(self.inner.clock.unix())
    }

    fn refuses_tokens_at(&self, now: u64) -> bool {
        self.inner.settings.refuse_when_stale && self.is_stale_at(now)
    }

    /// How many seconds since the change feed was last read.
    pub fn seconds_since_sync(&self) -> u64 {
        let now = self.inner.clock.unix();
        now.saturating_sub(self.inner.last_sync.load(Ordering::Relaxed))
    }

    /// Applies changes other processes made to the store since the last poll; returns how many
    /// feed entries were applied.
    pub async fn poll_changes(&self) -> Result<usize, AuthError> {
        let _guard = self.inner.poll_lock.lock().await;
        let since = self.read_seq()?;
        let now = self.inner.clock.unix();
        let pending = self
            .blocking(move |s| Ok(revocation::fetch(s, since, now)?))
            .await?;
        let (count, rotated) = match &pending {
            revocation::Pending::Updates { updates, .. } => (updates.len(), false),
            // Keys were announced, or a full reload may have skipped their announcement.
            revocation::Pending::Reload(_) => (0, true),
        };
        if rotated {
            self.reload_keys().await?;
        }
        self.write_revocations(|r| r.apply(pending))?;
        self.inner.last_sync.fetch_max(now, Ordering::Relaxed);
        Ok(count)
    }

    /// Re-reads the EdDSA key set from the store (after a rotation by `gateway keys rotate`).
    pub async fn reload_keys(&self) -> Result<(), AuthError> {
        if self.inner.settings.algorithm != token::Algorithm::EdDSA {
            return Ok(());
        }
        let now = self.inner.clock.unix();
        let keys = self
            .blocking(move |s| keystore::load_eddsa_keys(s, now))
            .await?;
        tracing::info!(kid = keys.current_kid(), "signing keys reloaded");
        self.inner.keys.store(std::sync::Arc::new(keys));
        Ok(())
    }

    /// Deletes expired rows from the store and expired entries from memory.
    pub async fn sweep(&self) -> Result<(), AuthError> {
        let now = self.inner.clock.unix();
        self.blocking(move |s| Ok(s.sweep(now)?)).await?;
        self.inner.verified.prune(now);
        // A token is accepted up to the leeway past its `exp`; keep its revocation that long.
        self.write_revocations(|r| r.prune(now.saturating_sub(ACCESS_LEEWAY_SECS)))
    }

    fn read_seq(&self) -> Result<u64, AuthError> {
        self.inner
            .revocations
            .read()
            .map(|r| r.seq())
            .map_err(|_| AuthError::Internal("revocation state lock poisoned".into()))
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
    async fn rehash(&self, user: &User, password: &SecretString) -> Result<(), AuthError> {
        let new_hash = self.inner.hasher.hash(password).await.map_err(hash_error)?;
        let now = self.inner.clock.unix();
        let id = user.id.clone();
        let old_hash = user.password_hash.clone();
        // One transaction: only the hash changes, and only if nobody changed it meanwhile, so
        // a concurrent `gateway user disable` or role change is never overwritten.
        self.blocking(move |s| {
            match s.modify_user(&id, |current| {
                if current.password_hash == old_hash {
                    current.password_hash = new_hash;
                    current.updated_at = now;
                }
                Ok(())
            }) {
                Ok(_) | Err(crate::store::StoreError::NotFound) => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// Starts a refresh family for `user` and issues both tokens.
    async fn start_session(&self, user: &User) -> Result<Issued, AuthError> {
        let now = self.inner.clock.unix();
        let token = refresh_token::generate();
        let record = RefreshRecord {
            family: uuid::Uuid::new_v4().to_string(),
            user_id: user.id.clone(),
            issued_at: now,
            family_expires_at: now.saturating_add(self.inner.settings.refresh_ttl.as_secs()),
            state: RefreshState::Active,
        };
        let hash = refresh_token::hash(token.expose());
        let stored = record.clone();
        self.blocking(move |s| Ok(s.insert_refresh(&hash, &stored)?))
            .await?;
        self.issue(user, &record.family, record.family_expires_at, token, now)
    }

    /// Issues an access token for `user` in `family`, expiring no later than the family.
    fn issue(
        &self,
        user: &User,
        family: &str,
        family_expires_at: u64,
        refresh: SecretString,
        now: u64,
    ) -> Result<Issued, AuthError> {
        let ttl = self
            .inner
            .settings
            .access_ttl
            .as_secs()
            .min(family_expires_at.saturating_sub(now));
        if ttl == 0 {
            return Err(AuthError::InvalidRefresh);
        }
        let settings = TokenSettings {
            access_ttl: Duration::from_secs(ttl),
            ..self.inner.token_settings.clone()
        };
        let subject = Subject {
            user_id: &user.id,
            email: &user.email,
            name: user.name.as_deref(),
            roles: &user.roles,
            session_id: family,
            session_version: user.session_version,
        };
        let (access, claims) = self
            .inner
            .keys
            .load()
            .issue_access(&settings, &subject, now)
            .map_err(token_error)?;
        Ok(Issued {
            access_token: Secret::new(access),
            claims,
            refresh_token: refresh,
            expires_in: ttl,
            refresh_expires_at: family_expires_at,
            user: PublicUser::from(user),
        })
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

#[cfg(test)]
mod tests;
