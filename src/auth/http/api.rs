//! [`AuthApi`]: what the auth HTTP surface holds for one configuration, and the session cookies
//! it sets and clears.
//!
//! The fields are private to this module. The endpoint, admission, identity, throttle and page
//! modules each add the methods of their concern in their own `impl AuthApi` block, working
//! through the accessors here, so what a request may touch is visible in one place.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};

use super::cookies::{self, Csrf, SetCookie};
use super::endpoints::JWKS_PATH;
use super::identity::Identity;
use crate::auth::service::{AuthService, Issued};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::ratelimit::Limits;

/// The auth endpoints and the token check shared with the proxy.
pub struct AuthApi {
    service: AuthService,
    csrf: Csrf,
    prefix: String,
    tokens_in_body: bool,
    transparent_refresh: bool,
    /// The 403 page names the roles a route needs (`auth.show_required_roles`).
    show_required_roles: bool,
    body_limit: usize,
    /// The identity headers and assertion the upstream is told.
    identity: Identity,
    limits: Arc<Limits>,
    metrics: Arc<Metrics>,
    /// Account e-mails; `None` without `email:` (the e-mail features answer 404).
    mailer: Option<crate::mail::Mailer>,
    /// How long reset and verification links work.
    link_ttls: Option<(std::time::Duration, std::time::Duration)>,
    /// Bounds the reset requests being worked on after their answer.
    background: Arc<tokio::sync::Semaphore>,
    /// The name authenticator apps show (`auth.mfa.issuer`).
    mfa_issuer: String,
    /// Roles that need a second factor (`auth.mfa.required_for_roles`).
    mfa_roles: Vec<String>,
    /// Passkeys; `None` when `auth.webauthn` is off (their endpoints answer 404).
    passkeys: Option<Arc<crate::auth::mfa::passkey::RelyingParty>>,
    /// Single sign-on providers; `None` without `sso.providers` (their endpoints answer 404).
    sso: Option<Arc<crate::auth::sso::Sso>>,
    /// Email and password sign-in and sign-up (`auth.password_login`).
    password_login: bool,
    /// Where browsers reach the gateway (`sso.public_url`), for redirects back from a provider.
    public_url: String,
}

impl AuthApi {
    /// Wraps the service. `csrf_key` signs CSRF tokens (at least 32 bytes).
    pub(crate) fn new(
        service: AuthService,
        csrf_key: Vec<u8>,
        config: &Config,
        metrics: Arc<Metrics>,
        mailer: Option<crate::mail::Mailer>,
    ) -> Self {
        AuthApi {
            mailer,
            link_ttls: config.email.as_ref().map(|e| (e.reset_ttl, e.verify_ttl)),
            background: super::recovery::background_permits(),
            mfa_issuer: config.auth.mfa.issuer.clone(),
            mfa_roles: config.auth.mfa.required_for_roles.clone(),
            passkeys: config.auth.webauthn.as_ref().and_then(|w| {
                match crate::auth::mfa::passkey::RelyingParty::new(w, &csrf_key) {
                    Ok(rp) => Some(Arc::new(rp)),
                    Err(e) => {
                        tracing::error!(error = %e, "passkeys are off: the WebAuthn settings were refused");
                        None
                    }
                }
            }),
            sso: {
                let sso = match crate::auth::sso::Sso::new(&config.sso, &config.auth.prefix, &csrf_key) {
                    Ok(sso) => sso.map(Arc::new),
                    Err(e) => {
                        tracing::error!(error = %e, detail = e.detail(), "single sign-on is off: the providers could not be set up");
                        None
                    }
                };
                service.set_sso(sso.clone());
                sso
            },
            password_login: config.auth.password_login,
            public_url: config.sso.public_url.clone(),
            csrf: Csrf::new(csrf_key),
            prefix: config.auth.prefix.clone(),
            tokens_in_body: config.auth.tokens_in_body,
            transparent_refresh: config.auth.transparent_refresh,
            show_required_roles: config.auth.show_required_roles,
            body_limit: config.limits.auth_body_bytes,
            identity: Identity::new(&config.auth.identity, config.auth.assertion.as_ref()),
            limits: Arc::new({
                let limits = Limits::new(&config.rate_limits);
                // Replicas on a shared store count failed logins together, in the store.
                if service.store().is_shared() {
                    limits.share_regulation()
                } else {
                    limits
                }
            }),
            metrics,
            service,
        }
    }

    /// The rate limits and login regulation (the server housekeeps them periodically).
    pub(crate) fn limits(&self) -> Arc<Limits> {
        self.limits.clone()
    }

    /// The single sign-on providers, if any.
    pub(super) fn sso(&self) -> Option<Arc<crate::auth::sso::Sso>> {
        self.sso.clone()
    }

    /// Where browsers reach the gateway, for single sign-on redirects (`sso.public_url`).
    pub(super) fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Whether email and password sign-in is on (`auth.password_login`).
    pub(super) fn password_login(&self) -> bool {
        self.password_login
    }

    /// The path prefix of the API (`/api/auth`).
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether expired cookie sessions are refreshed inside the request.
    pub(super) fn transparent_refresh(&self) -> bool {
        self.transparent_refresh
    }

    /// The service behind the API.
    pub(crate) fn service(&self) -> &AuthService {
        &self.service
    }

    /// Whether a normalised path belongs to the auth API.
    pub(crate) fn owns(&self, path: &str) -> bool {
        path == JWKS_PATH
            || path
                .strip_prefix(self.prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// The signer and checker of CSRF tokens.
    pub(super) fn csrf(&self) -> &Csrf {
        &self.csrf
    }

    /// Whether token answers carry the tokens in their JSON body (`auth.tokens_in_body`).
    pub(super) fn tokens_in_body(&self) -> bool {
        self.tokens_in_body
    }

    /// Whether the 403 page may name the roles a route needs (`auth.show_required_roles`).
    pub(super) fn show_required_roles(&self) -> bool {
        self.show_required_roles
    }

    /// The account mailer, when `email:` is configured.
    pub(super) fn mfa_issuer(&self) -> &str {
        &self.mfa_issuer
    }

    pub(super) fn mfa_roles(&self) -> &[String] {
        &self.mfa_roles
    }

    /// The relying party, or 404 when passkeys are off.
    pub(super) fn passkeys(
        &self,
    ) -> Result<&crate::auth::mfa::passkey::RelyingParty, crate::error::HttpError> {
        self.passkeys
            .as_deref()
            .ok_or(crate::error::HttpError::NotFound)
    }

    /// Whether passkeys are on.
    pub(super) fn has_passkeys(&self) -> bool {
        self.passkeys.is_some()
    }

    /// Whether passkeys also sign in without a password.
    pub(super) fn passwordless(&self) -> bool {
        self.passkeys
            .as_ref()
            .is_some_and(|rp| rp.settings().passwordless)
    }

    pub(super) fn mailer(&self) -> Option<&crate::mail::Mailer> {
        self.mailer.as_ref()
    }

    /// How long a reset link works (`email.reset_ttl`).
    pub(super) fn verify_ttl(&self) -> std::time::Duration {
        self.link_ttls
            .map_or(std::time::Duration::from_secs(24 * 3600), |(_, verify)| {
                verify
            })
    }

    pub(super) fn reset_ttl(&self) -> std::time::Duration {
        self.link_ttls
            .map_or(std::time::Duration::from_secs(30 * 60), |(reset, _)| reset)
    }

    pub(super) fn background(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.background
    }

    /// The largest request body the auth API reads (`limits.auth_body_bytes`).
    pub(super) fn body_limit(&self) -> usize {
        self.body_limit
    }

    /// The identity headers and assertion settings.
    pub(super) fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The rate limits and login regulation, borrowed.
    pub(super) fn rate_limits(&self) -> &Limits {
        &self.limits
    }

    /// The process's metrics.
    pub(super) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The `Set-Cookie` values that start (or continue) a browser session.
    pub(super) fn session_cookies(&self, issued: &Issued, tls: bool) -> Vec<HeaderValue> {
        let names = cookies::names(tls, self.transparent_refresh());
        let now = self.service.clock().unix();
        let refresh_age = issued.refresh_expires_at.saturating_sub(now);
        let csrf = self.csrf.issue(&issued.claims.sid);
        // The refresh cookie goes to every path when the gateway refreshes sessions in-request
        // (it never reaches upstreams: the gateway strips its own cookies); otherwise only to
        // the auth API.
        let refresh_path = if self.transparent_refresh {
            "/"
        } else {
            self.prefix.as_str()
        };
        let set = [
            SetCookie {
                name: names.access,
                value: issued.access_token.expose(),
                path: "/",
                max_age: Some(issued.expires_in),
                http_only: true,
                secure: tls,
            },
            SetCookie {
                name: names.refresh,
                value: issued.refresh_token.expose(),
                path: refresh_path,
                max_age: Some(refresh_age),
                http_only: true,
                secure: tls,
            },
            SetCookie {
                name: names.csrf,
                value: &csrf,
                path: "/",
                max_age: Some(refresh_age),
                http_only: false,
                secure: tls,
            },
        ];
        set.iter()
            .filter_map(|c| HeaderValue::from_str(&c.header()).ok())
            .collect()
    }

    /// Appends the `Set-Cookie` headers that delete the session cookies (both refresh-cookie
    /// paths, so a change of `transparent_refresh` leaves nothing behind).
    pub(super) fn clear_cookies(&self, headers: &mut HeaderMap, tls: bool) {
        let names = cookies::names(tls, self.transparent_refresh());
        let other = cookies::names(tls, !self.transparent_refresh());
        let gone = |name, path, http_only| SetCookie {
            name,
            value: "",
            path,
            max_age: Some(0),
            http_only,
            secure: tls,
        };
        append_cookies(
            headers,
            &[
                gone(names.access, "/", true),
                gone(names.refresh, "/", true),
                gone(other.refresh, self.prefix.as_str(), true),
                gone(names.csrf, "/", false),
            ],
        );
    }
}

fn append_cookies(headers: &mut HeaderMap, cookies: &[SetCookie<'_>]) {
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(&c.header()) {
            headers.append(header::SET_COOKIE, v);
        }
    }
}
