//! Password reset by e-mail: the tokens behind the links, and setting a new password with one.
//!
//! A reset token is 256 random bits, kept only as its SHA-256 with the user, the address it was
//! sent to and its expiry (`email.reset_ttl`, default 30 minutes). Asking again replaces the
//! earlier ones, and a successful login or password change invalidates them. Using one (single
//! use: the store consumes it atomically) sets the password (the policy applies), marks the
//! address verified (the user proved they read its mail), ends every session of the user and
//! drops their other reset tokens. A token is refused when the account's address is no longer
//! the one it was sent to, or the account is disabled.

use std::time::Duration;

use super::{AuthService, hash_error};
use crate::auth::email::normalize_email;
use crate::auth::error::AuthError;
use crate::auth::refresh_token;
use crate::secret::SecretString;
use crate::store::{OneTimeToken, StoreError, TokenKind, User};

/// A reset link to send: to whom, and the token (never logged).
pub struct ResetLink {
    pub email: String,
    pub token: SecretString,
}

impl AuthService {
    /// For `forgot-password`: a fresh reset token for the account of `email` when it exists, is
    /// enabled and has a password (earlier ones are dropped), else `None`. The caller answers the same either
    /// way.
    pub async fn start_reset(
        &self,
        email: &str,
        ttl: Duration,
    ) -> Result<Option<ResetLink>, AuthError> {
        let Some(email) = normalize_email(email) else {
            return Ok(None);
        };
        let now = self.inner.clock.unix();
        let token = refresh_token::generate();
        let hash = refresh_token::hash(token.expose());
        let lookup = email.clone();
        let user = self
            .blocking(move |s| {
                // An account without a password (single sign-on only) has none to reset: it
                // signs in at its provider, and sets a password on its account page.
                let Some(user) = s
                    .user_by_email(&lookup)?
                    .filter(|u| !u.disabled && !u.password_hash.is_empty())
                else {
                    return Ok(None);
                };
                s.delete_one_time_for(&user.id, TokenKind::ResetPassword)?;
                s.insert_one_time(
                    &hash,
                    &OneTimeToken {
                        kind: TokenKind::ResetPassword,
                        user_id: user.id.clone(),
                        email: user.email.clone(),
                        created_at: now,
                        expires_at: now.saturating_add(ttl.as_secs()),
                    },
                )?;
                Ok(Some(user))
            })
            .await?;
        let Some(user) = user else {
            tracing::info!(target: "audit", event = "reset_requested", known = false);
            return Ok(None);
        };
        tracing::info!(target: "audit", event = "reset_requested", known = true, user_id = %user.id);
        Ok(Some(ResetLink {
            email: user.email,
            token,
        }))
    }

    /// The address a reset token is for, when it can still be used (the reset page shows it).
    pub async fn reset_target(&self, token: &SecretString) -> Result<Option<String>, AuthError> {
        Ok(self
            .live_link(token, TokenKind::ResetPassword)
            .await?
            .map(|(_, user)| user.email))
    }

    /// Sets a new password with a reset token; see the module docs.
    #[tracing::instrument(skip_all)]
    pub async fn reset_password(
        &self,
        token: &SecretString,
        new: &SecretString,
    ) -> Result<(), AuthError> {
        let Some((hash, user)) = self.live_link(token, TokenKind::ResetPassword).await? else {
            return Err(AuthError::InvalidLink);
        };
        self.inner
            .settings
            .policy
            .check(new.expose(), &user.email)
            .map_err(AuthError::WeakPassword)?;
        let new_hash = self.inner.hasher.hash(new).await.map_err(hash_error)?;
        let now = self.inner.clock.unix();
        let updated = self
            .blocking(move |s| {
                // Single use: of two requests with the same link, one gets here.
                let Some(rec) = s.consume_one_time(&hash, TokenKind::ResetPassword, now)? else {
                    return Ok(None);
                };
                let wanted = new_hash.clone();
                let stored = s.modify_user(&rec.user_id, |u| {
                    if u.email == rec.email && !u.disabled {
                        u.password_hash = new_hash;
                        u.email_verified = true;
                        u.session_version = u.session_version.saturating_add(1);
                        u.updated_at = now;
                    }
                    Ok(())
                });
                match stored {
                    Ok(u) if u.password_hash == wanted => {}
                    Ok(_) | Err(StoreError::NotFound) => return Ok(None),
                    Err(e) => return Err(e.into()),
                }
                s.delete_one_time_for(&rec.user_id, TokenKind::ResetPassword)?;
                Ok(s.end_all_sessions(&rec.user_id, now)?)
            })
            .await?
            .ok_or(AuthError::InvalidLink)?;
        self.publish_flags(&updated)?;
        tracing::info!(target: "audit", event = "password_reset", user_id = %updated.id, session_version = updated.session_version);
        Ok(())
    }

    /// A link token's hash and user, when the token is live, its user enabled and still at the
    /// address it was sent to.
    pub(super) async fn live_link(
        &self,
        token: &SecretString,
        kind: TokenKind,
    ) -> Result<Option<([u8; 32], User)>, AuthError> {
        if !refresh_token::well_formed(token.expose()) {
            return Ok(None);
        }
        let hash = refresh_token::hash(token.expose());
        let now = self.inner.clock.unix();
        self.blocking(move |s| {
            let Some(rec) = s.peek_one_time(&hash, kind, now)? else {
                return Ok(None);
            };
            Ok(s.user_by_id(&rec.user_id)?
                .filter(|u| !u.disabled && u.email == rec.email)
                .map(|u| (hash, u)))
        })
        .await
    }

    /// A successful login or password change makes earlier reset links useless.
    pub(super) async fn drop_reset_links(&self, user_id: &str) {
        let id = user_id.to_owned();
        let dropped = self
            .blocking(move |s| Ok(s.delete_one_time_for(&id, TokenKind::ResetPassword)?))
            .await;
        if let Err(e) = dropped {
            // The login succeeds anyway; the link still expires on its own.
            tracing::warn!(user_id = %user_id, error = %e, "dropping reset links failed");
        }
    }
}
