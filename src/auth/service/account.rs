//! A signed-in user's own account: changing the password, and seeing and ending their own
//! sessions (refresh-token families).
//!
//! Changing the password ends every session of the user, the one asking included, and starts
//! a new one for the asker (the answer carries its tokens): the session version is bumped in
//! the same store transaction that replaces the hash, so no access token issued before the
//! change survives it, and every refresh family is revoked. Ending one session revokes that
//! family (refused for a family that is not the user's) the way logout does, so it takes
//! effect on every replica within the existing bound.

use serde::Serialize;

use super::{ACCESS_LEEWAY_SECS, AuthService, Issued, hash_error};
use crate::auth::error::AuthError;
use crate::auth::token::AccessClaims;
use crate::secret::SecretString;
use crate::store::StoreError;

/// One live session of a user, as the user sees it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SessionView {
    /// The session id (the refresh family): what `DELETE sessions/{id}` takes.
    pub id: String,
    /// RFC 3339, whole seconds, UTC.
    pub created_at: String,
    /// RFC 3339: when its refresh token was last used (its start, if never).
    pub last_used_at: String,
    /// RFC 3339: when it ends at the latest.
    pub expires_at: String,
    /// The `User-Agent` it was started with.
    pub user_agent: Option<String>,
    /// The client address it was started from.
    pub ip: Option<String>,
    /// The session of the request that asked.
    pub current: bool,
}

impl AuthService {
    /// Replaces the password of the signed-in user after checking the current one, ends every
    /// session of theirs and starts a new one (see the module docs).
    #[tracing::instrument(skip_all)]
    pub async fn change_password(
        &self,
        claims: &AccessClaims,
        current: &SecretString,
        new: &SecretString,
        client: super::Client,
    ) -> Result<Issued, AuthError> {
        let id = claims.sub.clone();
        let user = self
            .blocking(move |s| Ok(s.user_by_id(&id)?))
            .await?
            .filter(|u| !u.disabled)
            .ok_or(AuthError::NotAuthenticated("disabled"))?;
        // An account made by single sign-on has no password: its session alone may set one.
        if !user.password_hash.is_empty() {
            self.check_password(&user, current, "change_password_failed")
                .await?;
        }
        self.inner
            .settings
            .policy
            .check(new.expose(), &user.email)
            .map_err(AuthError::WeakPassword)?;
        let new_hash = self.inner.hasher.hash(new).await.map_err(hash_error)?;
        let now = self.inner.clock.unix();
        let (id, old_hash) = (user.id.clone(), user.password_hash.clone());
        let updated = self
            .blocking(move |s| {
                let wanted = new_hash.clone();
                let stored = s.modify_user(&id, |u| {
                    // Changed meanwhile (a reset, the admin CLI): the check above was against a
                    // password that is no longer the user's, so nothing is written.
                    if u.password_hash == old_hash && !u.disabled {
                        u.password_hash = new_hash;
                        u.session_version = u.session_version.saturating_add(1);
                        u.updated_at = now;
                    }
                    Ok(())
                });
                match stored {
                    Ok(u) if u.password_hash == wanted => {}
                    Ok(_) | Err(StoreError::NotFound) => {
                        return Err(AuthError::NotAuthenticated("password changed meanwhile"));
                    }
                    Err(e) => return Err(e.into()),
                }
                // Every refresh family of the user (and the version once more, harmlessly).
                Ok(s.end_all_sessions(&id, now)?)
            })
            .await?
            .ok_or(AuthError::NotAuthenticated("disabled"))?;
        self.publish_flags(&updated)?;
        self.drop_reset_links(&updated.id).await;
        tracing::info!(target: "audit", event = "change_password", user_id = %updated.id, session_version = updated.session_version);
        // The new session was signed in as the one that changed the password was.
        let how = if claims.amr.is_empty() {
            super::SignIn::Password
        } else {
            super::SignIn::Like {
                amr: claims.amr.clone(),
                provider: claims.idp.clone(),
            }
        };
        self.start_session(&updated, client, how).await
    }

    /// The live sessions of the signed-in user, newest first; `current` marks the asker's.
    pub async fn sessions(&self, claims: &AccessClaims) -> Result<Vec<SessionView>, AuthError> {
        let now = self.inner.clock.unix();
        let id = claims.sub.clone();
        let sessions = self.blocking(move |s| Ok(s.sessions_of(&id, now)?)).await?;
        Ok(sessions
            .into_iter()
            .map(|s| SessionView {
                current: s.family == claims.sid,
                id: s.family,
                created_at: super::rfc3339(s.created_at),
                last_used_at: super::rfc3339(s.last_used_at),
                expires_at: super::rfc3339(s.expires_at),
                user_agent: s.user_agent,
                ip: s.ip,
            })
            .collect())
    }

    /// Ends one session of the signed-in user. `false` when the user has no such live session
    /// (another user's id included: nothing changes).
    #[tracing::instrument(skip_all)]
    pub async fn end_session(
        &self,
        claims: &AccessClaims,
        family: &str,
    ) -> Result<bool, AuthError> {
        let now = self.inner.clock.unix();
        let (id, fam) = (claims.sub.clone(), family.to_owned());
        let ended = self
            .blocking(move |s| Ok(s.end_session(&id, &fam, now)?))
            .await?;
        if !ended {
            return Ok(false);
        }
        // Any access token of the family was issued by now, so expires before this.
        let horizon = now
            .saturating_add(self.inner.settings.access_ttl.as_secs())
            .saturating_add(ACCESS_LEEWAY_SECS);
        self.write_revocations(|r| r.revoke_family(family, horizon))?;
        tracing::info!(target: "audit", event = "end_session", user_id = %claims.sub, family = %family, current = family == claims.sid);
        Ok(true)
    }
}
