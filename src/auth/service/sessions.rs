//! Sessions after they start: refresh-token rotation (with the grace window and reuse
//! detection), logout of one session or of all a user's sessions, and issuing the tokens of a
//! session. See the [`super`] module docs for the rules.

use std::time::Duration;

use super::{ACCESS_LEEWAY_SECS, AuthService, Issued, PublicUser, bump, token_error};
use crate::auth::error::AuthError;
use crate::auth::refresh_token;
use crate::auth::rotation::{self, RefreshOutcome};
use crate::auth::token::{AccessClaims, Subject, TokenSettings};
use crate::secret::{Secret, SecretString};
use crate::store::{RefreshRecord, RefreshState, SessionInfo, User};

impl AuthService {
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
                // A session from an identity provider is asked about there again, now and then.
                let user = match record.provider.clone() {
                    Some(provider) => {
                        self.recheck_federated(user, &record, &provider, now)
                            .await?
                    }
                    None => user,
                };
                self.issue(&user, &record, token, now)
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
            self.publish_flags(&user)?;
            tracing::info!(target: "audit", event = "logout_all", user_id = %user.id, session_version = user.session_version);
        }
        Ok(())
    }

    /// Starts a refresh family for `user` signed in `how`, records it as a session the user can see (with the
    /// client's user agent and address when the caller has them) and issues both tokens.
    pub(super) async fn start_session(
        &self,
        user: &User,
        client: super::Client,
        how: SignIn,
    ) -> Result<Issued, AuthError> {
        let now = self.inner.clock.unix();
        let token = refresh_token::generate();
        let provider = how.provider();
        let record = RefreshRecord {
            family: uuid::Uuid::new_v4().to_string(),
            user_id: user.id.clone(),
            issued_at: now,
            family_expires_at: now.saturating_add(self.inner.settings.refresh_ttl.as_secs()),
            state: RefreshState::Active,
            amr: how.amr(),
            provider,
        };
        let hash = refresh_token::hash(token.expose());
        let stored = record.clone();
        let session = SessionInfo {
            family: record.family.clone(),
            user_id: user.id.clone(),
            created_at: now,
            last_used_at: now,
            expires_at: record.family_expires_at,
            user_agent: client.user_agent,
            ip: client.ip.map(|ip| ip.to_string()),
            ended_at: None,
        };
        // The tokens first: a session record without them would be listed but unusable.
        let (id, verified_hash) = (user.id.clone(), user.password_hash.clone());
        let family = record.family.clone();
        let still_valid = self
            .blocking(move |s| {
                s.insert_refresh(&hash, &stored)?;
                s.start_session(&session)?;
                // The password was checked (or set) against `user` as read earlier. A change,
                // reset or disable that landed meanwhile has ended the user's sessions, but
                // perhaps before this one existed: read the user again now that it does, and
                // end it if it was started on a password that is no longer theirs. (A change
                // after this read ends it the ordinary way.)
                let current = s.user_by_id(&id)?;
                let valid = current
                    .as_ref()
                    .is_some_and(|u| !u.disabled && u.password_hash == verified_hash);
                if !valid {
                    s.revoke_family(&family, now)?;
                }
                Ok(valid)
            })
            .await?;
        if !still_valid {
            tracing::info!(target: "audit", event = "login_failed", reason = "changed_meanwhile", user_id = %user.id);
            return Err(AuthError::InvalidCredentials);
        }
        self.issue(user, &record, token, now)
    }

    /// Issues an access token for `user` in `family`, expiring no later than the family.
    fn issue(
        &self,
        user: &User,
        record: &RefreshRecord,
        refresh: SecretString,
        now: u64,
    ) -> Result<Issued, AuthError> {
        let (family, family_expires_at) = (record.family.as_str(), record.family_expires_at);
        // Records from before `amr` was kept are password sessions.
        let password = [String::from("pwd")];
        let amr = if record.amr.is_empty() {
            &password[..]
        } else {
            &record.amr[..]
        };
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
            email_verified: user.email_verified,
            amr,
            provider: record.provider.as_deref(),
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

/// How a session was signed in; fixed for the session's life (its `amr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignIn {
    /// Email and password (or a password just set).
    Password,
    /// Password, then an authenticator code or a recovery code.
    PasswordAndCode,
    /// Password, then a passkey (synced across devices, or bound to one).
    PasswordAndPasskey { synced: bool },
    /// A passkey alone (it verified its user: two factors by itself).
    Passkey { synced: bool },
    /// As another session was (a password change keeps how the session that did it signed in).
    Like {
        amr: Vec<String>,
        provider: Option<String>,
    },
    /// At an identity provider (`sso.providers[].id`), which reported `amr` (RFC 8176 values).
    Federated { provider: String, amr: Vec<String> },
}

impl SignIn {
    /// The RFC 8176 `amr` values.
    pub fn amr(self) -> Vec<String> {
        match self {
            SignIn::Password => vec!["pwd".into()],
            SignIn::PasswordAndCode => vec!["pwd".into(), "otp".into(), "mfa".into()],
            SignIn::PasswordAndPasskey { synced } => {
                vec!["pwd".into(), key(synced), "mfa".into()]
            }
            SignIn::Passkey { synced } => vec![key(synced), "mfa".into()],
            SignIn::Like { amr, .. } => amr,
            SignIn::Federated { amr, .. } => {
                let mut out = vec!["fed".to_owned()];
                out.extend(amr.into_iter().filter(|m| m != "fed"));
                out.dedup();
                out
            }
        }
    }

    /// The identity provider of a federated sign-in.
    fn provider(&self) -> Option<String> {
        match self {
            SignIn::Federated { provider, .. } => Some(provider.clone()),
            SignIn::Like { provider, .. } => provider.clone(),
            _ => None,
        }
    }
}

/// RFC 8176: `swk` for a key that can leave its device (a synced passkey), `hwk` for one that
/// cannot.
fn key(synced: bool) -> String {
    if synced { "swk" } else { "hwk" }.to_owned()
}
