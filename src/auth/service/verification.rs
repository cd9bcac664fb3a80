//! Address verification by e-mail: the tokens behind the links, and marking an address
//! verified with one.
//!
//! A verification token is 256 random bits, kept only as its SHA-256 with the user, the address
//! it was sent to and its expiry (`email.verify_ttl`, default 24 hours). Asking again replaces
//! the earlier ones. Using one (single use: the store consumes it atomically) marks the address
//! verified when the account still has that address; tokens issued from then on carry
//! `email_verified: true` (a refresh gives one at once).

use std::time::Duration;

use super::AuthService;
use crate::auth::error::AuthError;
use crate::auth::refresh_token;
use crate::secret::SecretString;
use crate::store::{OneTimeToken, TokenKind};

/// A verification link to send: to whom, and the token (never logged).
pub struct VerifyLink {
    pub email: String,
    pub token: SecretString,
}

impl AuthService {
    /// A fresh verification token for the user (earlier ones are dropped); `None` when the user
    /// is unknown, disabled or already verified.
    pub async fn start_verification(
        &self,
        user_id: &str,
        ttl: Duration,
    ) -> Result<Option<VerifyLink>, AuthError> {
        let now = self.inner.clock.unix();
        let token = refresh_token::generate();
        let hash = refresh_token::hash(token.expose());
        let id = user_id.to_owned();
        let email = self
            .blocking(move |s| {
                let Some(user) = s
                    .user_by_id(&id)?
                    .filter(|u| !u.disabled && !u.email_verified)
                else {
                    return Ok(None);
                };
                s.delete_one_time_for(&user.id, TokenKind::VerifyEmail)?;
                s.insert_one_time(
                    &hash,
                    &OneTimeToken {
                        kind: TokenKind::VerifyEmail,
                        user_id: user.id.clone(),
                        email: user.email.clone(),
                        created_at: now,
                        expires_at: now.saturating_add(ttl.as_secs()),
                    },
                )?;
                Ok(Some(user.email))
            })
            .await?;
        Ok(email.map(|email| {
            tracing::info!(target: "audit", event = "verification_requested", user_id = %user_id);
            VerifyLink { email, token }
        }))
    }

    /// The address a verification token is for, when it can still be used (the page shows it).
    pub async fn verify_target(&self, token: &SecretString) -> Result<Option<String>, AuthError> {
        Ok(self
            .live_link(token, TokenKind::VerifyEmail)
            .await?
            .map(|(_, user)| user.email))
    }

    /// Marks the address a verification token was sent to as verified; the address, or
    /// [`AuthError::InvalidLink`].
    #[tracing::instrument(skip_all)]
    pub async fn verify_email(&self, token: &SecretString) -> Result<String, AuthError> {
        if !refresh_token::well_formed(token.expose()) {
            return Err(AuthError::InvalidLink);
        }
        let hash = refresh_token::hash(token.expose());
        let now = self.inner.clock.unix();
        let verified = self
            .blocking(move |s| {
                // Single use: of two requests with the same link, one gets here.
                let Some(rec) = s.consume_one_time(&hash, TokenKind::VerifyEmail, now)? else {
                    return Ok(None);
                };
                let Some(user) = s
                    .user_by_id(&rec.user_id)?
                    .filter(|u| !u.disabled && u.email == rec.email)
                else {
                    return Ok(None);
                };
                if !user.email_verified {
                    s.modify_user(&user.id, |u| {
                        if u.email == rec.email {
                            u.email_verified = true;
                            u.updated_at = now;
                        }
                        Ok(())
                    })?;
                }
                s.delete_one_time_for(&user.id, TokenKind::VerifyEmail)?;
                Ok(Some((user.id, user.email)))
            })
            .await?;
        let (id, email) = verified.ok_or(AuthError::InvalidLink)?;
        tracing::info!(target: "audit", event = "email_verified", user_id = %id);
        Ok(email)
    }
}
