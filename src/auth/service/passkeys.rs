//! Passkeys: adding and removing them, and using one as the second step of a login, for a
//! step-up, or (with `auth.webauthn.passwordless`) to sign in without a password.
//!
//! The ceremonies themselves are [`crate::auth::mfa::passkey`]'s; here is what they touch:
//!
//! - Each started ceremony's nonce is stored as a one-time token ([`TokenKind::Passkey`],
//!   five minutes) and consumed before the answer is checked, so a state and the assertion made
//!   for it are used once, on whichever replica.
//! - A passkey is stored with the user's other factors (one record, changed in one
//!   transaction); a checked assertion updates its counter and last use. The first factor a
//!   user adds, passkey or app, comes with ten recovery codes.
//! - A passkey requires user verification (its PIN or biometric), so it is two factors by
//!   itself: after a password the session's `amr` is `["pwd", "hwk"|"swk", "mfa"]`, signed in
//!   with the passkey alone `["hwk"|"swk", "mfa"]` (`swk` for a synced passkey, `hwk` for one
//!   bound to its device).
//! - Removing one needs the password and a second factor: the session's own (signed in with
//!   one) or a code.

use super::mfa::fresh_recovery_codes;
use super::sessions::SignIn;
use super::{AuthService, Client, Issued, bump};
use crate::auth::error::AuthError;
use crate::auth::mfa::passkey::{self, Asserted, PasskeyError, Purpose, RelyingParty, Started};
use crate::auth::refresh_token;
use crate::auth::token::AccessClaims;
use crate::secret::{Secret, SecretString};
use crate::store::{OneTimeToken, PasskeyRecord, TokenKind, User};

/// The longest passkey name kept, in characters.
const MAX_NAME_CHARS: usize = 64;

/// A passkey as its owner sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PasskeyView {
    pub id: String,
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
    pub last_used_at: Option<String>,
}

impl From<&PasskeyRecord> for PasskeyView {
    fn from(p: &PasskeyRecord) -> Self {
        PasskeyView {
            id: p.id.clone(),
            name: p.name.clone(),
            created_at: super::rfc3339(p.created_at),
            last_used_at: p.last_used_at.map(super::rfc3339),
        }
    }
}

/// What adding a passkey gives back.
#[derive(Debug)]
pub struct AddedPasskey {
    pub passkey: PasskeyView,
    /// New recovery codes when this is the user's first factor.
    pub recovery_codes: Option<Vec<SecretString>>,
}

impl AuthService {
    /// Starts adding a passkey to the signed-in user's account.
    #[tracing::instrument(skip_all)]
    pub async fn passkey_register_start(
        &self,
        rp: &RelyingParty,
        claims: &AccessClaims,
    ) -> Result<Started, AuthError> {
        let user = self.enabled_user(&claims.sub).await?;
        let existing = self.credentials_of(&user.id).await?;
        let now = self.inner.clock.unix();
        let display = user.name.clone().unwrap_or_else(|| user.email.clone());
        let started = rp
            .start_registration(&user.id, &user.email, &display, &existing, now)
            .map_err(internal)?;
        self.remember_nonce(&started.nonce, &user.id, &user.email)
            .await?;
        Ok(started)
    }

    /// Finishes adding a passkey named `name`.
    #[tracing::instrument(skip_all)]
    pub async fn passkey_register_finish(
        &self,
        rp: &RelyingParty,
        claims: &AccessClaims,
        state: &str,
        credential: &serde_json::Value,
        name: Option<&str>,
    ) -> Result<AddedPasskey, AuthError> {
        let user = self.enabled_user(&claims.sub).await?;
        let now = self.inner.clock.unix();
        self.use_nonce(rp, state, Purpose::Register, Some(&user.id), now)
            .await?;
        let registered = rp
            .finish_registration(state, &user.id, credential, now)
            .map_err(|e| refused(&user.id, "passkey_register_failed", e))?;
        let name = clean_name(name);
        let (codes, hashes) = fresh_recovery_codes();
        let record = PasskeyRecord {
            id: registered.credential_id.clone(),
            name,
            created_at: now,
            last_used_at: None,
            credential: registered.credential,
        };
        let view = PasskeyView::from(&record);
        let id = user.id.clone();
        let (added, first) = self
            .blocking(move |s| {
                let (_, outcome) = s.update_factors(&id, |f| {
                    if f.passkeys.iter().any(|p| p.id == record.id) {
                        return (false, false);
                    }
                    let first = !f.any();
                    f.passkeys.push(record);
                    if first {
                        f.recovery_codes = hashes;
                    }
                    (true, first)
                })?;
                Ok(outcome)
            })
            .await?;
        if !added {
            return Err(AuthError::MfaState("This passkey is registered already"));
        }
        tracing::info!(target: "audit", event = "passkey_added", user_id = %user.id, passkey = %view.id);
        bump(&self.inner.counters.mfa_enrolled);
        Ok(AddedPasskey {
            passkey: view,
            recovery_codes: first.then(|| {
                codes
                    .into_iter()
                    .map(|c| Secret::new(c.into_inner()))
                    .collect()
            }),
        })
    }

    /// The signed-in user's passkeys, oldest first.
    pub async fn passkeys(&self, claims: &AccessClaims) -> Result<Vec<PasskeyView>, AuthError> {
        let id = claims.sub.clone();
        let f = self.blocking(move |s| Ok(s.factors_of(&id)?)).await?;
        Ok(f.passkeys.iter().map(PasskeyView::from).collect())
    }

    /// Removes one of the user's passkeys, given the password and a second factor: the
    /// session's own, or `code`. `false` when the user has no such passkey.
    #[tracing::instrument(skip_all)]
    pub async fn passkey_remove(
        &self,
        claims: &AccessClaims,
        passkey_id: &str,
        password: &SecretString,
        code: Option<&str>,
    ) -> Result<bool, AuthError> {
        let user = self.enabled_user(&claims.sub).await?;
        self.check_password(&user, password, "passkey_remove_failed")
            .await?;
        if !claims.mfa() {
            let proved = match code {
                Some(code) => self.check_code(&user.id, code).await?.is_some(),
                None => false,
            };
            if !proved {
                tracing::info!(target: "audit", event = "passkey_remove_failed", reason = "no_second_factor", user_id = %user.id);
                return Err(AuthError::WrongCode);
            }
        }
        let (id, passkey) = (user.id.clone(), passkey_id.to_owned());
        let removed = self
            .blocking(move |s| {
                let (_, removed) = s.update_factors(&id, |f| {
                    let before = f.passkeys.len();
                    f.passkeys.retain(|p| p.id != passkey);
                    if !f.any() {
                        // No factor left: the codes that stood in for one go too.
                        f.recovery_codes.clear();
                    }
                    f.passkeys.len() < before
                })?;
                Ok(removed)
            })
            .await?;
        if removed {
            tracing::info!(target: "audit", event = "passkey_removed", user_id = %user.id, passkey = %passkey_id);
        }
        Ok(removed)
    }

    /// Starts an assertion by one of the signed-in user's passkeys (for a step-up).
    pub async fn passkey_challenge(
        &self,
        rp: &RelyingParty,
        claims: &AccessClaims,
    ) -> Result<Started, AuthError> {
        let user = self.enabled_user(&claims.sub).await?;
        self.challenge_for(rp, &user).await
    }

    /// Starts the second step of a login with a passkey, for the account `mfa_token` stands for.
    pub async fn login_passkey_start(
        &self,
        rp: &RelyingParty,
        mfa_token: &SecretString,
    ) -> Result<Started, AuthError> {
        let user = self.pending_user(mfa_token).await?;
        self.challenge_for(rp, &user).await
    }

    /// Finishes the second step of a login with a passkey's assertion.
    #[tracing::instrument(skip_all)]
    pub async fn login_passkey_finish(
        &self,
        rp: &RelyingParty,
        mfa_token: &SecretString,
        state: &str,
        credential: &serde_json::Value,
        client: Client,
    ) -> Result<Issued, AuthError> {
        let user = self.pending_user(mfa_token).await?;
        let synced = self.check_assertion(rp, &user, state, credential).await?;
        let now = self.inner.clock.unix();
        let hash = refresh_token::hash(mfa_token.expose());
        let consumed = self
            .blocking(move |s| Ok(s.consume_one_time(&hash, TokenKind::MfaLogin, now)?))
            .await?;
        if consumed.is_none() {
            return Err(AuthError::MfaExpired);
        }
        tracing::info!(target: "audit", event = "login", user_id = %user.id, method = "passkey");
        bump(&self.inner.counters.logins_ok);
        self.drop_reset_links(&user.id).await;
        self.start_session(&user, client, SignIn::PasswordAndPasskey { synced })
            .await
    }

    /// A step-up with a passkey: like [`AuthService::step_up`] with a code.
    #[tracing::instrument(skip_all)]
    pub async fn step_up_passkey(
        &self,
        rp: &RelyingParty,
        claims: &AccessClaims,
        state: &str,
        credential: &serde_json::Value,
        client: Client,
    ) -> Result<Issued, AuthError> {
        let user = self.enabled_user(&claims.sub).await?;
        let synced = self.check_assertion(rp, &user, state, credential).await?;
        tracing::info!(target: "audit", event = "step_up", user_id = %user.id, method = "passkey");
        let how = SignIn::PasswordAndPasskey { synced };
        self.replace_session(&user, claims, client, how).await
    }

    /// Starts a passwordless sign-in.
    pub async fn passkey_sign_in_start(&self, rp: &RelyingParty) -> Result<Started, AuthError> {
        let now = self.inner.clock.unix();
        let started = rp.start_sign_in(now).map_err(internal)?;
        self.remember_nonce(&started.nonce, "", "").await?;
        Ok(started)
    }

    /// Finishes a passwordless sign-in: the passkey names the user and proves it is theirs.
    #[tracing::instrument(skip_all)]
    pub async fn passkey_sign_in_finish(
        &self,
        rp: &RelyingParty,
        state: &str,
        credential: &serde_json::Value,
        client: Client,
    ) -> Result<Issued, AuthError> {
        let now = self.inner.clock.unix();
        let (user_id, credential_id) = rp.identify(credential).map_err(|e| {
            tracing::info!(target: "audit", event = "login_failed", reason = "passkey_unknown", error = %e);
            AuthError::PasskeyRefused
        })?;
        self.use_nonce(rp, state, Purpose::SignIn, None, now)
            .await?;
        let id = user_id.clone();
        let found = self
            .blocking(move |s| {
                let user = s.user_by_id(&id)?.filter(|u| !u.disabled);
                let factors = match &user {
                    Some(u) => s.factors_of(&u.id)?,
                    None => Default::default(),
                };
                Ok(user.map(|u| (u, factors)))
            })
            .await?;
        let Some((user, factors)) = found else {
            tracing::info!(target: "audit", event = "login_failed", reason = "passkey_unknown_user");
            return Err(AuthError::PasskeyRefused);
        };
        if !factors.passkeys.iter().any(|p| p.id == credential_id) {
            tracing::info!(target: "audit", event = "login_failed", reason = "passkey_unknown", user_id = %user.id);
            return Err(AuthError::PasskeyRefused);
        }
        let credentials: Vec<_> = factors
            .passkeys
            .iter()
            .map(|p| p.credential.clone())
            .collect();
        let asserted = rp
            .finish_sign_in(state, credential, &credentials, now)
            .map_err(|e| refused(&user.id, "login_failed", e))?;
        let synced = self.record_use(&user.id, &asserted).await?;
        tracing::info!(target: "audit", event = "login", user_id = %user.id, method = "passkey_only");
        bump(&self.inner.counters.logins_ok);
        self.drop_reset_links(&user.id).await;
        self.start_session(&user, client, SignIn::Passkey { synced })
            .await
    }

    /// Starts an assertion by one of `user`'s passkeys, remembering its nonce.
    async fn challenge_for(&self, rp: &RelyingParty, user: &User) -> Result<Started, AuthError> {
        let credentials = self.credentials_of(&user.id).await?;
        if credentials.is_empty() {
            return Err(AuthError::MfaState("No passkey is registered"));
        }
        let now = self.inner.clock.unix();
        let started = rp
            .start_verification(&user.id, &credentials, now)
            .map_err(internal)?;
        self.remember_nonce(&started.nonce, &user.id, &user.email)
            .await?;
        Ok(started)
    }

    /// Checks an assertion for `user` (its nonce used up first); whether the passkey is synced.
    async fn check_assertion(
        &self,
        rp: &RelyingParty,
        user: &User,
        state: &str,
        credential: &serde_json::Value,
    ) -> Result<bool, AuthError> {
        let now = self.inner.clock.unix();
        self.use_nonce(rp, state, Purpose::Verify, Some(&user.id), now)
            .await?;
        let asserted = rp
            .finish_verification(state, &user.id, credential, now)
            .map_err(|e| {
                bump(&self.inner.counters.mfa_failed);
                refused(&user.id, "passkey_failed", e)
            })?;
        self.record_use(&user.id, &asserted).await
    }

    /// Stores a checked assertion's counter and the last use; whether the passkey is synced.
    async fn record_use(&self, user_id: &str, asserted: &Asserted) -> Result<bool, AuthError> {
        let now = self.inner.clock.unix();
        let (id, credential_id) = (user_id.to_owned(), asserted.credential_id.clone());
        let result = asserted.result.clone();
        let known = self
            .blocking(move |s| {
                let (_, known) = s.update_factors(&id, |f| {
                    let Some(p) = f.passkeys.iter_mut().find(|p| p.id == credential_id) else {
                        return false;
                    };
                    if let Some(updated) = passkey::updated_credential(&p.credential, &result) {
                        p.credential = updated;
                    }
                    p.last_used_at = Some(now);
                    true
                })?;
                Ok(known)
            })
            .await?;
        if !known {
            // Removed between the check and now.
            return Err(AuthError::PasskeyRefused);
        }
        Ok(asserted.result.backup_eligible())
    }

    /// Stores a started ceremony's nonce as a one-time token (for the user, when known).
    async fn remember_nonce(
        &self,
        nonce: &str,
        user_id: &str,
        email: &str,
    ) -> Result<(), AuthError> {
        let now = self.inner.clock.unix();
        let hash = refresh_token::hash(nonce);
        let record = OneTimeToken {
            kind: TokenKind::Passkey,
            user_id: user_id.to_owned(),
            email: email.to_owned(),
            created_at: now,
            expires_at: now.saturating_add(passkey::CEREMONY_TTL_SECS),
        };
        self.blocking(move |s| Ok(s.insert_one_time(&hash, &record)?))
            .await
    }

    /// Uses up the nonce of `state`, if it is a state for `purpose` and `user_id`: a state is
    /// answered once.
    async fn use_nonce(
        &self,
        rp: &RelyingParty,
        state: &str,
        purpose: Purpose,
        user_id: Option<&str>,
        now: u64,
    ) -> Result<(), AuthError> {
        let expired = AuthError::MfaState("This passkey request has expired; start again");
        let nonce = rp
            .nonce(state, purpose, user_id, now)
            .map_err(|_| expired)?;
        let hash = refresh_token::hash(&nonce);
        let used = self
            .blocking(move |s| Ok(s.consume_one_time(&hash, TokenKind::Passkey, now)?))
            .await?;
        match used {
            Some(_) => Ok(()),
            None => Err(AuthError::MfaState(
                "This passkey request has expired; start again",
            )),
        }
    }

    /// The stored credentials of a user's passkeys.
    async fn credentials_of(&self, user_id: &str) -> Result<Vec<serde_json::Value>, AuthError> {
        let id = user_id.to_owned();
        let f = self.blocking(move |s| Ok(s.factors_of(&id)?)).await?;
        Ok(f.passkeys.into_iter().map(|p| p.credential).collect())
    }

    async fn enabled_user(&self, user_id: &str) -> Result<User, AuthError> {
        let id = user_id.to_owned();
        self.blocking(move |s| Ok(s.user_by_id(&id)?))
            .await?
            .filter(|u| !u.disabled)
            .ok_or(AuthError::NotAuthenticated("disabled"))
    }
}

/// A passkey name as kept: trimmed, without control characters, at most 64 characters;
/// "Passkey" when empty.
fn clean_name(name: Option<&str>) -> String {
    let name: String = name
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .chars()
        .take(MAX_NAME_CHARS)
        .collect();
    if name.is_empty() {
        "Passkey".to_owned()
    } else {
        name
    }
}

/// A refused ceremony, logged (without the answer) and answered generically.
fn refused(user_id: &str, event: &'static str, e: PasskeyError) -> AuthError {
    match e {
        PasskeyError::State => AuthError::MfaState("This passkey request has expired; start again"),
        PasskeyError::Internal(cause) => AuthError::Internal(cause),
        other => {
            tracing::info!(target: "audit", event, user_id = %user_id, error = %other);
            AuthError::PasskeyRefused
        }
    }
}

fn internal(e: PasskeyError) -> AuthError {
    match e {
        PasskeyError::State => AuthError::MfaState("No passkey is registered"),
        other => AuthError::Internal(other.to_string()),
    }
}
