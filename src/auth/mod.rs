//! Accounts, passwords and tokens, and the HTTP surface that serves them.
//!
//! Layers inside, lowest first (a module imports only from those above it in this list):
//! - `error`: [`AuthError`], its HTTP answer, and [`OpenError`] for start-up.
//! - `email`: the canonical form of email addresses.
//! - [`password`]: the policy for new passwords and argon2id hashing on a bounded pool.
//! - [`token`]: signing keys, access-token JWTs and the JWKS.
//! - `refresh_token`: opaque refresh tokens and their derived successors.
//! - [`revocation`]: the in-memory state that can kill a valid access token.
//! - `verified`: the bounded cache of access tokens whose signature already verified.
//! - [`mfa`]: the second factor's pure functions (TOTP codes and enrolment, recovery codes);
//!   no store, no HTTP.
//! - `rotation`: the store side of a refresh (rotation, grace window, reuse detection).
//! - [`keystore`]: signing, refresh and CSRF keys kept in the store's meta table.
//! - [`service`]: sign-up, login, refresh, logout and per-request authentication, tying the
//!   above to the store. No HTTP.
//! - `metrics`: the service's own Prometheus families, registered with [`crate::metrics`].
//! - [`http`]: the auth API, admission to protected routes, identity headers, hosted pages,
//!   cookies and CSRF, the browser client module.
//!
//! This module ties them together for the server: [`open`] the core (store, keys, service)
//! once, and build the [`http::AuthApi`] of each configuration with [`api`].

// `pub` where the binary's benches, fuzz targets or integration tests reach in; the rest is
// internal to the crate.
pub(crate) mod email;
pub(crate) mod error;
pub mod http;
pub mod keystore;
pub(crate) mod metrics;
pub mod mfa;
pub mod password;
pub(crate) mod refresh_token;
pub mod revocation;
mod rotation;
pub mod service;
pub mod sso;
pub mod token;
pub(crate) mod verified;

use crate::clock::Clock;
use crate::config::{Config, Signup, StoreSettings, TokenAlgorithm, WhenStale};
use crate::store::Store;

pub use error::{AuthError, OpenError};

/// The settings the service runs with, derived from the checked config.
pub fn service_settings(config: &Config) -> service::ServiceSettings {
    let a = &config.auth;
    let p = &a.password;
    service::ServiceSettings {
        issuer: a.issuer.clone(),
        audience: a.audience.clone(),
        access_ttl: a.access_ttl,
        refresh_ttl: a.refresh_ttl,
        refresh_grace: a.refresh_grace,
        algorithm: match a.algorithm {
            TokenAlgorithm::EdDSA => token::Algorithm::EdDSA,
            TokenAlgorithm::HS256 => token::Algorithm::HS256,
        },
        hs256_secret: a.jwt_secret.clone(),
        default_roles: a.default_roles.clone(),
        signup_open: a.signup == Signup::Open,
        policy: password::Policy {
            min_chars: p.min_length,
            max_bytes: p.max_bytes,
        },
        hasher: password::HasherConfig {
            params: password::Argon2Params {
                m_cost_kib: p.memory_kib,
                t_cost: p.iterations,
                p_cost: p.parallelism,
            },
            max_concurrent: p.max_concurrent_hashes,
            cpu_percent: p.hashing_cpu_percent,
            ..password::HasherConfig::default()
        },
        stale_after: match &config.store {
            StoreSettings::Redb { .. } => None,
            StoreSettings::Postgres(pg) => Some(pg.stale_after),
        },
        refuse_when_stale: match &config.store {
            StoreSettings::Redb { .. } => true,
            StoreSettings::Postgres(pg) => pg.when_stale == WhenStale::Refuse,
        },
    }
}

/// Opens the store named in the config (blocking work off the async threads).
pub async fn open_store(config: &Config) -> Result<Store, OpenError> {
    let settings = config.store.clone();
    let key = config.store_encryption_key.clone();
    tokio::task::spawn_blocking(move || {
        Store::connect(&settings).and_then(|s| s.with_encryption(key.as_ref()))
    })
    .await
    .map_err(|e| OpenError::Service(AuthError::Internal(e.to_string())))?
    .map_err(OpenError::Store)
}

/// What outlives a configuration reload: the store, the auth service with its in-memory
/// revocation state, and the CSRF key.
#[derive(Debug, Clone)]
pub struct Core {
    pub service: service::AuthService,
    pub csrf_key: crate::secret::Secret<Vec<u8>>,
    /// Account e-mails (verification, password reset), when `email:` is configured. Started
    /// with the service, stopped with it; a reload keeps it and swaps its settings
    /// ([`crate::mail::Mailer::reconfigure`]).
    pub mailer: Option<crate::mail::Mailer>,
}

impl Core {
    /// For a reload: the new e-mail settings, built and checked but not applied (the caller
    /// applies them with [`crate::mail::Mailer::reconfigure`] once everything else is built).
    /// Adding `email:` or changing its queue size needs a restart (logged); removing it turns
    /// its endpoints off with the new configuration.
    pub fn prepare_mail(
        &self,
        email: Option<&crate::config::EmailSettings>,
    ) -> Result<Option<(&crate::mail::Mailer, crate::mail::Prepared)>, crate::mail::MailError> {
        match (&self.mailer, email) {
            (Some(mailer), Some(email)) => {
                if email.queue_size != mailer.queue_size() {
                    tracing::warn!("email.queue_size takes effect at the next restart");
                }
                Ok(Some((mailer, crate::mail::Mailer::prepare(email)?)))
            }
            (None, Some(_)) => {
                tracing::warn!(
                    "email was added; account e-mails start at the next restart (until then \
                     their endpoints stay off)"
                );
                Ok(None)
            }
            (Some(_), None) => {
                tracing::warn!("email was removed; its endpoints are off from now on");
                Ok(None)
            }
            (None, None) => Ok(None),
        }
    }
}

/// Opens the store, starts the auth service and its background maintenance (stopped when
/// `stop` turns true).
pub async fn open(
    config: &Config,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Core, OpenError> {
    let store = open_store(config).await?;
    let csrf_key = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || -> Result<_, OpenError> {
            // Before anything reads a key: a wrong or missing encryption key stops start-up
            // here with the store's own message, and secrets still in the clear get encrypted.
            let sealed = store
                .seal_secrets(&keystore::SECRET_META)
                .map_err(OpenError::Store)?;
            if sealed > 0 {
                tracing::info!(
                    count = sealed,
                    key_id = store.encryption_key_id().unwrap_or_default(),
                    "encrypted the store's secrets with store.encryption_key"
                );
            }
            Ok(keystore::load_csrf_key(&store)?)
        })
        .await
        .map_err(|e| OpenError::Service(AuthError::Internal(e.to_string())))??
    };
    let settings = service_settings(config);
    let service = service::AuthService::open(settings, store, Clock::system()).await?;
    service.spawn_maintenance(stop.clone());
    let mailer = match &config.email {
        Some(email) => Some(crate::mail::Mailer::start(email, stop)?),
        None => None,
    };
    Ok(Core {
        service,
        csrf_key,
        mailer,
    })
}

/// The HTTP side of auth for one configuration: endpoints, token checks, rate limits.
pub fn api(
    core: &Core,
    config: &Config,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> self::http::AuthApi {
    let api = self::http::AuthApi::new(
        core.service.clone(),
        core.csrf_key.expose().clone(),
        config,
        metrics.clone(),
        // A reload that removed `email:` turns its endpoints off at once.
        config.email.as_ref().and(core.mailer.clone()),
    );
    let limits = api.limits();
    metrics.track_limits(&limits);
    spawn_limit_housekeeping(std::sync::Arc::downgrade(&limits));
    api
}

/// Every few seconds, forget rate-limit state that no longer limits anything, so a flood of
/// distinct keys cannot grow memory without bound. Ends when the limits are dropped (after a
/// reload replaced them, or at shutdown).
fn spawn_limit_housekeeping(limits: std::sync::Weak<crate::ratelimit::Limits>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
        loop {
            tick.tick().await;
            let Some(limits) = limits.upgrade() else {
                return;
            };
            limits.housekeep(std::time::Instant::now());
        }
    });
}
