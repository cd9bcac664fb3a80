//! Second factors: an authenticator app (TOTP, RFC 6238) with single-use recovery codes, the
//! login's second step, step-up of a signed-in session, and removal.
//!
//! - **Enrolment.** [`AuthService::totp_setup`] keeps a new secret as *pending* (it is no
//!   factor yet) and hands out its `otpauth://` URI; [`AuthService::totp_confirm`] with a code
//!   from the app makes it the user's factor and returns ten recovery codes, shown once and
//!   kept as SHA-256 hashes ([`crate::auth::mfa::recovery`] says why a fast hash is enough).
//! - **Login.** For a user with a factor, a correct password gives no session but a
//!   [`Challenge`]: an `mfa_token` (256 random bits, stored hashed as a one-time token, five
//!   minutes) for [`AuthService::login_mfa`], which checks a code and only then starts the
//!   session, with `amr: ["pwd", "otp", "mfa"]`. The token is single use and refused once the
//!   account changed after the password step (a password change, a reset, a disable). The
//!   password step counts neither as a success nor as a failure for login regulation: wrong
//!   codes count as failures, so guessing codes is throttled like guessing passwords.
//! - **Codes.** A TOTP code is accepted for its 30 s step and one step either side, and only
//!   for a step newer than the last one used: the step is recorded in the same store
//!   transaction that checks it, so a code cannot be used twice, even on two replicas at once.
//!   A recovery code is removed in the transaction that accepts it.
//! - **Step-up.** [`AuthService::step_up`] lets a session signed in with a password alone
//!   prove a factor: it starts a new session with `mfa` in its `amr` and ends the old one.
//! - **Removal** needs the password and a code ([`AuthService::totp_remove`]), or an admin
//!   (`gateway user reset-mfa`).

use super::sessions::SignIn;
use super::{ACCESS_LEEWAY_SECS, AuthService, Client, Issued, bump, hash_error};
use crate::auth::error::AuthError;
use crate::auth::mfa::{recovery, totp};
use crate::auth::refresh_token;
use crate::auth::token::AccessClaims;
use crate::secret::{Secret, SecretString};
use crate::store::{Factors, OneTimeToken, TokenKind, TotpFactor, User};

/// How long an `mfa_token` lasts.
pub const MFA_TOKEN_TTL_SECS: u64 = 300;
/// How long a pending TOTP secret may be confirmed.
pub const SETUP_TTL_SECS: u64 = 1800;

/// What a login with a correct password leads to.
#[derive(Debug)]
pub enum Login {
    /// A session: the user has no second factor.
    Session(Box<Issued>),
    /// The second step is needed.
    SecondFactor(Challenge),
}

impl Login {
    /// The session, if the login is complete.
    pub fn into_session(self) -> Option<Issued> {
        match self {
            Login::Session(issued) => Some(*issued),
            Login::SecondFactor(_) => None,
        }
    }
}

/// The second step of a login: the token that stands for the password step, and the methods
/// the user can finish with.
#[derive(Debug)]
pub struct Challenge {
    pub mfa_token: SecretString,
    pub methods: Vec<&'static str>,
    pub expires_in: u64,
}

/// A TOTP secret being set up. `Debug` hides the secret and the URI, which carries it.
pub struct TotpSetup {
    /// Base32, for typing into an app by hand.
    pub secret: SecretString,
    /// `otpauth://totp/...`, for the QR code.
    pub uri: SecretString,
}

impl std::fmt::Debug for TotpSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSetup(***)")
    }
}

/// A user's second-factor state, as the account page and `/mfa` show it.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct MfaStatus {
    pub totp: bool,
    pub passkeys: usize,
    pub recovery_codes_left: usize,
}

impl MfaStatus {
    /// The user has a factor to sign in with.
    pub fn any(&self) -> bool {
        self.totp || self.passkeys > 0
    }
}

/// Which kind of code was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Used {
    Totp,
    Recovery { left: usize },
}

impl AuthService {
    /// The login's answer for `user` after a correct password: a session, or a challenge when
    /// the user has a second factor.
    pub(super) async fn after_password(
        &self,
        user: &User,
        client: Client,
    ) -> Result<Login, AuthError> {
        let id = user.id.clone();
        let factors = self.blocking(move |s| Ok(s.factors_of(&id)?)).await?;
        if !factors.any() {
            self.drop_reset_links(&user.id).await;
            let issued = self.start_session(user, client, SignIn::Password).await?;
            return Ok(Login::Session(Box::new(issued)));
        }
        let now = self.inner.clock.unix();
        let token = refresh_token::generate();
        let hash = refresh_token::hash(token.expose());
        let record = OneTimeToken {
            kind: TokenKind::MfaLogin,
            user_id: user.id.clone(),
            email: user.email.clone(),
            created_at: now,
            expires_at: now.saturating_add(MFA_TOKEN_TTL_SECS),
        };
        self.blocking(move |s| Ok(s.insert_one_time(&hash, &record)?))
            .await?;
        tracing::info!(target: "audit", event = "login_password_ok", user_id = %user.id, next = "second_factor");
        Ok(Login::SecondFactor(Challenge {
            mfa_token: token,
            methods: methods(&factors),
            expires_in: MFA_TOKEN_TTL_SECS,
        }))
    }

    /// The account (normalised email) an `mfa_token` stands for while it is usable, for
    /// throttling and regulating the second step on that account.
    pub async fn pending_login(
        &self,
        mfa_token: &SecretString,
    ) -> Result<Option<String>, AuthError> {
        if !refresh_token::well_formed(mfa_token.expose()) {
            return Ok(None);
        }
        let now = self.inner.clock.unix();
        let hash = refresh_token::hash(mfa_token.expose());
        let pending = self
            .blocking(move |s| Ok(s.peek_one_time(&hash, TokenKind::MfaLogin, now)?))
            .await?;
        Ok(pending.map(|p| p.email))
    }

    /// The second step of a login: `code` (an authenticator code or a recovery code) for the
    /// account the `mfa_token` stands for. Single use; the session starts only now.
    #[tracing::instrument(skip_all)]
    pub async fn login_mfa(
        &self,
        mfa_token: &SecretString,
        code: &str,
        client: Client,
    ) -> Result<Issued, AuthError> {
        let user = self.pending_user(mfa_token).await?;
        let now = self.inner.clock.unix();
        let hash = refresh_token::hash(mfa_token.expose());
        let used = match self.check_code(&user.id, code).await? {
            Some(used) => used,
            None => {
                tracing::info!(target: "audit", event = "login_failed", reason = "bad_code", user_id = %user.id);
                return Err(AuthError::InvalidCode);
            }
        };
        // Used up now; a concurrent second use finds nothing.
        let consumed = self
            .blocking(move |s| Ok(s.consume_one_time(&hash, TokenKind::MfaLogin, now)?))
            .await?;
        if consumed.is_none() {
            tracing::info!(target: "audit", event = "login_failed", reason = "mfa_token_used", user_id = %user.id);
            return Err(AuthError::MfaExpired);
        }
        audit_code(&user.id, used, "login");
        bump(&self.inner.counters.logins_ok);
        self.drop_reset_links(&user.id).await;
        self.start_session(&user, client, SignIn::PasswordAndCode)
            .await
    }

    /// The account an `mfa_token` stands for, as it was at the password step: same address,
    /// enabled, and not changed since (a password change or reset bumps `updated_at`).
    /// [`AuthError::MfaExpired`] otherwise.
    pub(super) async fn pending_user(&self, mfa_token: &SecretString) -> Result<User, AuthError> {
        if !refresh_token::well_formed(mfa_token.expose()) {
            return Err(AuthError::MfaExpired);
        }
        let now = self.inner.clock.unix();
        let hash = refresh_token::hash(mfa_token.expose());
        let user = self
            .blocking(move |s| {
                let Some(pending) = s.peek_one_time(&hash, TokenKind::MfaLogin, now)? else {
                    return Ok(None);
                };
                let user = s.user_by_id(&pending.user_id)?;
                Ok(user.filter(|u| {
                    !u.disabled && u.email == pending.email && u.updated_at <= pending.created_at
                }))
            })
            .await?;
        user.ok_or_else(|| {
            tracing::info!(target: "audit", event = "login_failed", reason = "mfa_token");
            AuthError::MfaExpired
        })
    }

    /// Proves a second factor for a signed-in session: a new session whose tokens carry `mfa`
    /// replaces the current one (ended at once).
    #[tracing::instrument(skip_all)]
    pub async fn step_up(
        &self,
        claims: &AccessClaims,
        code: &str,
        client: Client,
    ) -> Result<Issued, AuthError> {
        let user = self.live_user(&claims.sub).await?;
        if !self.status(&user.id).await?.any() {
            return Err(AuthError::MfaState("Set up a second factor first"));
        }
        let used = self.check_code(&user.id, code).await?.ok_or_else(|| {
            tracing::info!(target: "audit", event = "step_up_failed", user_id = %user.id);
            AuthError::WrongCode
        })?;
        audit_code(&user.id, used, "step_up");
        self.replace_session(&user, claims, client, SignIn::PasswordAndCode)
            .await
    }

    /// A new session for `user` signed in `how`, replacing (ending) the one of `claims`.
    pub(super) async fn replace_session(
        &self,
        user: &User,
        claims: &AccessClaims,
        client: Client,
        how: SignIn,
    ) -> Result<Issued, AuthError> {
        // The old session ends first, and only one caller can end it: of two step-ups sent at
        // once from one session, one gets the new session and the other is refused.
        let (id, family, now) = (user.id.clone(), claims.sid.clone(), self.inner.clock.unix());
        let ended = self
            .blocking(move |s| Ok(s.end_session(&id, &family, now)?))
            .await?;
        // Any access token of the old session was issued by now, so expires before this.
        let horizon = now
            .saturating_add(self.inner.settings.access_ttl.as_secs())
            .saturating_add(ACCESS_LEEWAY_SECS);
        self.write_revocations(|r| r.revoke_family(&claims.sid, horizon))?;
        if !ended {
            tracing::info!(target: "audit", event = "step_up_failed", reason = "session_ended", user_id = %user.id);
            return Err(AuthError::NotAuthenticated("revoked"));
        }
        // A session signed in at an identity provider stays federated (its refreshes keep
        // re-checking the user there): the factor adds to the provider's methods.
        let how = match &claims.idp {
            Some(provider) => {
                let mut amr: Vec<String> = claims.amr.clone();
                for m in how.amr() {
                    if m != "pwd" && !amr.contains(&m) {
                        amr.push(m);
                    }
                }
                SignIn::Federated {
                    provider: provider.clone(),
                    amr,
                }
            }
            None => how,
        };
        self.start_session(user, client, how).await
    }

    /// The user's second-factor state.
    pub async fn mfa_status(&self, claims: &AccessClaims) -> Result<MfaStatus, AuthError> {
        self.status(&claims.sub).await
    }

    async fn status(&self, user_id: &str) -> Result<MfaStatus, AuthError> {
        let id = user_id.to_owned();
        let f = self.blocking(move |s| Ok(s.factors_of(&id)?)).await?;
        Ok(MfaStatus {
            totp: f.totp.is_some(),
            passkeys: f.passkeys.len(),
            recovery_codes_left: f.recovery_codes.len(),
        })
    }

    /// Starts setting up an authenticator app: a new pending secret (replacing any earlier
    /// pending one) and its URI, labelled `issuer: email`.
    #[tracing::instrument(skip_all)]
    pub async fn totp_setup(
        &self,
        claims: &AccessClaims,
        issuer: &str,
    ) -> Result<TotpSetup, AuthError> {
        let user = self.live_user(&claims.sub).await?;
        let secret = totp::TotpSecret::generate();
        let pending = TotpFactor {
            secret: secret.as_bytes().to_vec(),
            created_at: self.inner.clock.unix(),
            last_used_step: None,
        };
        let id = user.id.clone();
        let started = self
            .blocking(move |s| {
                let (_, started) = s.update_factors(&id, |f| {
                    if f.totp.is_some() {
                        return false;
                    }
                    f.pending_totp = Some(pending);
                    true
                })?;
                Ok(started)
            })
            .await?;
        if !started {
            return Err(AuthError::MfaState(
                "An authenticator app is already set up; remove it first",
            ));
        }
        tracing::info!(target: "audit", event = "totp_setup_started", user_id = %user.id);
        Ok(TotpSetup {
            secret: Secret::new(secret.base32()),
            uri: Secret::new(totp::otpauth_uri(&secret, issuer, &user.email)),
        })
    }

    /// Finishes setting up the app with a code from it: the pending secret becomes the user's
    /// factor, and ten new recovery codes replace any earlier ones. Returns the codes (shown
    /// once; only their hashes are kept).
    #[tracing::instrument(skip_all)]
    pub async fn totp_confirm(
        &self,
        claims: &AccessClaims,
        code: &str,
    ) -> Result<Vec<SecretString>, AuthError> {
        let user = self.live_user(&claims.sub).await?;
        let now = self.inner.clock.unix();
        let (codes, hashes) = fresh_recovery_codes();
        let (id, code) = (user.id.clone(), code.to_owned());
        let outcome = self
            .blocking(move |s| {
                let (_, outcome) = s.update_factors(&id, |f| {
                    if f.totp.is_some() {
                        return Confirm::AlreadySet;
                    }
                    let Some(pending) = f.pending_totp.take() else {
                        return Confirm::NothingPending;
                    };
                    if now.saturating_sub(pending.created_at) > SETUP_TTL_SECS {
                        return Confirm::NothingPending;
                    }
                    let Some(secret) = totp::TotpSecret::from_bytes(pending.secret.clone()) else {
                        return Confirm::NothingPending;
                    };
                    let Some(step) = totp::verify(&secret, &code, now, None) else {
                        f.pending_totp = Some(pending);
                        return Confirm::WrongCode;
                    };
                    f.totp = Some(TotpFactor {
                        secret: pending.secret,
                        created_at: now,
                        last_used_step: Some(step),
                    });
                    f.recovery_codes = hashes;
                    Confirm::Done
                })?;
                Ok(outcome)
            })
            .await?;
        match outcome {
            Confirm::Done => {
                tracing::info!(target: "audit", event = "totp_enrolled", user_id = %user.id);
                bump(&self.inner.counters.mfa_enrolled);
                Ok(codes
                    .into_iter()
                    .map(|c| Secret::new(c.into_inner()))
                    .collect())
            }
            Confirm::WrongCode => {
                bump(&self.inner.counters.mfa_failed);
                tracing::info!(target: "audit", event = "totp_setup_failed", reason = "bad_code", user_id = %user.id);
                Err(AuthError::WrongCode)
            }
            Confirm::AlreadySet => Err(AuthError::MfaState(
                "An authenticator app is already set up; remove it first",
            )),
            Confirm::NothingPending => Err(AuthError::MfaState(
                "No authenticator app is being set up (or the setup expired); start again",
            )),
        }
    }

    /// Removes the authenticator app and the recovery codes, given the password and a code
    /// (from the app, or a recovery code).
    #[tracing::instrument(skip_all)]
    pub async fn totp_remove(
        &self,
        claims: &AccessClaims,
        password: &SecretString,
        code: &str,
    ) -> Result<(), AuthError> {
        let user = self.live_user(&claims.sub).await?;
        self.check_password(&user, password, "totp_remove_failed")
            .await?;
        if !self.status(&user.id).await?.totp {
            return Err(AuthError::MfaState("No authenticator app is set up"));
        }
        if self.check_code(&user.id, code).await?.is_none() {
            tracing::info!(target: "audit", event = "totp_remove_failed", reason = "bad_code", user_id = %user.id);
            return Err(AuthError::WrongCode);
        }
        let id = user.id.clone();
        self.blocking(move |s| {
            s.update_factors(&id, |f| {
                f.totp = None;
                f.pending_totp = None;
                if !f.any() {
                    // No factor left: the codes that stood in for one go too.
                    f.recovery_codes.clear();
                }
            })?;
            Ok(())
        })
        .await?;
        tracing::info!(target: "audit", event = "totp_removed", user_id = %user.id);
        Ok(())
    }

    /// New recovery codes for a user with a factor, given a code (from the app, or one of the
    /// old recovery codes); the old ones stop working.
    #[tracing::instrument(skip_all)]
    pub async fn new_recovery_codes(
        &self,
        claims: &AccessClaims,
        code: &str,
    ) -> Result<Vec<SecretString>, AuthError> {
        let user = self.live_user(&claims.sub).await?;
        if !self.status(&user.id).await?.any() {
            return Err(AuthError::MfaState("Set up a second factor first"));
        }
        if self.check_code(&user.id, code).await?.is_none() {
            return Err(AuthError::WrongCode);
        }
        let (codes, hashes) = fresh_recovery_codes();
        let id = user.id.clone();
        self.blocking(move |s| {
            s.update_factors(&id, |f| f.recovery_codes = hashes)?;
            Ok(())
        })
        .await?;
        tracing::info!(target: "audit", event = "recovery_codes_renewed", user_id = %user.id);
        Ok(codes
            .into_iter()
            .map(|c| Secret::new(c.into_inner()))
            .collect())
    }

    /// Checks `code` against the user's factors and uses it up: a six-digit code against the
    /// app (its step recorded), anything else as a recovery code (removed). `None`: no match.
    pub(super) async fn check_code(
        &self,
        user_id: &str,
        code: &str,
    ) -> Result<Option<Used>, AuthError> {
        let now = self.inner.clock.unix();
        let (id, code) = (user_id.to_owned(), code.to_owned());
        let used = self
            .blocking(move |s| {
                let (_, used) = s.update_factors(&id, |f| {
                    if let Some(t) = &mut f.totp
                        && let Some(secret) = totp::TotpSecret::from_bytes(t.secret.clone())
                        && let Some(step) = totp::verify(&secret, &code, now, t.last_used_step)
                    {
                        t.last_used_step = Some(step);
                        return Some(Used::Totp);
                    }
                    // Recovery codes only stand in for a factor the user has.
                    if !f.any() {
                        return None;
                    }
                    let index = recovery::matches(&code, &f.recovery_codes)?;
                    f.recovery_codes.remove(index);
                    Some(Used::Recovery {
                        left: f.recovery_codes.len(),
                    })
                })?;
                Ok(used)
            })
            .await?;
        if used.is_none() {
            bump(&self.inner.counters.mfa_failed);
        }
        Ok(used)
    }

    /// Checks the signed-in user's password before a sensitive change; a wrong one is logged
    /// as `event` and refused with [`AuthError::WrongPassword`].
    pub(super) async fn check_password(
        &self,
        user: &User,
        password: &SecretString,
        event: &'static str,
    ) -> Result<(), AuthError> {
        let verification = self
            .inner
            .hasher
            .verify(password, Some(&user.password_hash))
            .await
            .map_err(hash_error)?;
        if !verification.ok {
            tracing::info!(target: "audit", event, reason = "bad_password", user_id = %user.id);
            return Err(AuthError::WrongPassword);
        }
        Ok(())
    }

    /// The user behind a session, if still enabled.
    async fn live_user(&self, user_id: &str) -> Result<User, AuthError> {
        let id = user_id.to_owned();
        self.blocking(move |s| Ok(s.user_by_id(&id)?))
            .await?
            .filter(|u| !u.disabled)
            .ok_or(AuthError::NotAuthenticated("disabled"))
    }
}

/// What [`AuthService::totp_confirm`] found.
enum Confirm {
    Done,
    WrongCode,
    AlreadySet,
    NothingPending,
}

/// The methods a user with these factors can finish a login with.
fn methods(f: &Factors) -> Vec<&'static str> {
    let mut m = Vec::new();
    if f.totp.is_some() {
        m.push("totp");
    }
    if !f.passkeys.is_empty() {
        m.push("webauthn");
    }
    if !f.recovery_codes.is_empty() {
        m.push("recovery_code");
    }
    m
}

fn audit_code(user_id: &str, used: Used, event: &'static str) {
    match used {
        Used::Totp => tracing::info!(target: "audit", event, user_id = %user_id, method = "totp"),
        Used::Recovery { left } => {
            tracing::info!(target: "audit", event, user_id = %user_id, method = "recovery_code", recovery_codes_left = left);
        }
    }
}

/// Ten new recovery codes (to show once) and their hashes (to store).
pub(super) fn fresh_recovery_codes() -> (Vec<SecretString>, Vec<[u8; 32]>) {
    let codes = recovery::generate();
    let hashes = codes
        .iter()
        .filter_map(|c| recovery::normalize(c.expose()))
        .map(|c| recovery::hash(&c))
        .collect();
    let codes = codes
        .into_iter()
        .map(|c| Secret::new(c.into_inner()))
        .collect();
    (codes, hashes)
}
