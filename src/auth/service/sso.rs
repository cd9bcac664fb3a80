//! Single sign-on in the service: turning an identity a provider vouched for into a gateway
//! account and session, and re-checking federated sessions at their refreshes.
//!
//! - **Which account.** An identity already linked (provider + `sub`) signs in to its account.
//!   Otherwise an account with the same email is linked only when both sides verified the
//!   address: the provider says `email_verified` and the gateway account proved it. Anything
//!   else is refused ([`AuthError::SsoLinkRefused`]): linking on an unverified address would let
//!   whoever controls that record at the provider take the account over. With no account, one
//!   is made when sign-up is open or the provider has `create_users`; it has no password (it
//!   can set one from its session) and its address counts as verified when the provider says so.
//!   A signed-in user may also link a provider explicitly from the account page, whatever the
//!   addresses.
//! - **Roles.** The roles a provider's `role_mappings` name are the provider's to give: at each
//!   sign-in and re-check they are set from the user's groups there, other roles untouched.
//!   Losing a role bumps the user's session version, so tokens carrying it die at once.
//! - **Re-checks.** A federated session's refresh asks the provider again once
//!   `recheck_interval` has passed since the last check (with the provider's refresh token,
//!   kept encrypted at rest), and ends the session when the provider revoked the grant, the
//!   rules now refuse the user, the identity was unlinked, or the provider left the config.
//!   A provider that cannot be reached is given one more interval before its sessions end.

use std::sync::Arc;

use super::sessions::SignIn;
use super::{AuthService, Client, Issued, bump, clean_name};
use crate::auth::email::normalize_email;
use crate::auth::error::AuthError;
use crate::auth::sso::{self, ProviderIdentity, Recheck, Sso};
use crate::config::SsoProvider;
use crate::secret::SecretString;
use crate::store::{LinkedIdentity, RefreshRecord, StoreError, User};

/// What a callback led to.
#[derive(Debug)]
pub enum SsoSignIn {
    /// A session (sign-in, or an account made just now).
    Session(Box<Issued>),
    /// The provider was linked to the signed-in user's account (the session goes on).
    Linked,
}

/// A provider linked to the user, as the account page shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IdentityView {
    pub provider: String,
    pub display_name: String,
    pub email: Option<String>,
    pub linked_at: u64,
    pub last_login_at: u64,
}

/// How a callback's identity met the store.
enum Resolved {
    /// A known identity, or an account linked or made just now.
    User {
        user: User,
        how: &'static str,
    },
    Linked,
}

impl AuthService {
    /// Sets the providers federated sessions are re-checked with (start-up and reload).
    pub fn set_sso(&self, sso: Option<Arc<Sso>>) {
        self.inner.sso.store(sso);
    }

    /// The configured providers, if any.
    pub fn sso(&self) -> Option<Arc<Sso>> {
        self.inner.sso.load_full()
    }

    /// Signs in with (or, with `link_user`, links) an identity `provider` vouched for.
    #[tracing::instrument(skip_all, fields(provider = %provider.id))]
    pub async fn sso_sign_in(
        &self,
        provider: &SsoProvider,
        who: ProviderIdentity,
        link_user: Option<String>,
        client: Client,
    ) -> Result<SsoSignIn, AuthError> {
        let mapped: Vec<String> = match sso::admit(provider, &who) {
            Ok(roles) => roles.into_iter().map(str::to_owned).collect(),
            Err(why) => {
                tracing::info!(target: "audit", event = "sso_refused", provider = %provider.id, reason = why.label());
                self.count_sso_outcome(&provider.id, why.label());
                return Err(AuthError::SsoRefused(why.message()));
            }
        };
        let email = who
            .email
            .as_deref()
            .and_then(normalize_email)
            .ok_or(AuthError::SsoRefused(sso::Refused::NoEmail.message()))?;
        let now = self.inner.clock.unix();
        let record = LinkedIdentity {
            provider: provider.id.clone(),
            subject: who.subject.clone(),
            user_id: String::new(),
            email: Some(email.clone()),
            linked_at: now,
            last_login_at: now,
            checked_at: now,
            groups: who.groups.clone(),
            refresh_token: who.refresh_token.as_ref().map(|t| t.expose().clone()),
        };
        let settings = &self.inner.settings;
        let may_create = settings.signup_open || provider.create_users;
        let new_user = User {
            id: uuid::Uuid::new_v4().to_string(),
            email: email.clone(),
            name: who.name.as_deref().and_then(clean_name),
            password_hash: String::new(),
            roles: sso::apply_roles(
                provider,
                &settings.default_roles,
                &mapped.iter().map(String::as_str).collect::<Vec<_>>(),
            ),
            disabled: false,
            created_at: now,
            updated_at: now,
            session_version: 0,
            email_verified: who.email_verified,
        };
        let verified_at_provider = who.email_verified;
        let resolved = self
            .blocking(move |s| {
                resolve(
                    s,
                    record,
                    link_user,
                    new_user,
                    verified_at_provider,
                    may_create,
                    now,
                )
            })
            .await;
        let (user, how) = match resolved {
            Ok(Resolved::User { user, how }) => (user, how),
            Ok(Resolved::Linked) => {
                tracing::info!(target: "audit", event = "sso_linked", provider = %provider.id, how = "account_page");
                self.count_sso_outcome(&provider.id, "linked");
                return Ok(SsoSignIn::Linked);
            }
            Err(e) => {
                let reason = match &e {
                    AuthError::SsoLinkRefused => "unverified_email_match",
                    AuthError::SignupClosed => "signup_closed",
                    AuthError::SsoRefused(_) => "already_linked",
                    _ => "error",
                };
                tracing::info!(target: "audit", event = "sso_refused", provider = %provider.id, reason);
                self.count_sso_outcome(&provider.id, reason);
                return Err(e);
            }
        };
        if user.disabled {
            tracing::info!(target: "audit", event = "sso_refused", provider = %provider.id, reason = "disabled", user_id = %user.id);
            self.count_sso_outcome(&provider.id, "disabled");
            return Err(AuthError::InvalidCredentials);
        }
        let user = self
            .apply_provider(provider, user, &mapped, &email, verified_at_provider)
            .await?;
        tracing::info!(target: "audit", event = "sso_login", provider = %provider.id, user_id = %user.id, how);
        self.count_sso_outcome(&provider.id, "ok");
        bump(&self.inner.counters.logins_ok);
        let how = SignIn::Federated {
            provider: provider.id.clone(),
            amr: who.amr,
        };
        let issued = self.start_session(&user, client, how).await?;
        Ok(SsoSignIn::Session(Box::new(issued)))
    }

    /// Sets the roles the provider manages, and marks the address verified when the provider
    /// vouches for this very address. Returns the user as stored.
    async fn apply_provider(
        &self,
        provider: &SsoProvider,
        user: User,
        mapped: &[String],
        email: &str,
        verified_at_provider: bool,
    ) -> Result<User, AuthError> {
        let mapped_refs: Vec<&str> = mapped.iter().map(String::as_str).collect();
        let roles = sso::apply_roles(provider, &user.roles, &mapped_refs);
        let verify = verified_at_provider && !user.email_verified && user.email == email;
        if roles == user.roles && !verify {
            return Ok(user);
        }
        let lost = user.roles.iter().any(|r| !roles.contains(r));
        let (id, p, mapped, now) = (
            user.id.clone(),
            provider.clone(),
            mapped.to_vec(),
            self.inner.clock.unix(),
        );
        let email = email.to_owned();
        let updated = self
            .blocking(move |s| {
                Ok(s.modify_user(&id, |u| {
                    let refs: Vec<&str> = mapped.iter().map(String::as_str).collect();
                    u.roles = sso::apply_roles(&p, &u.roles, &refs);
                    if verified_at_provider && u.email == email {
                        u.email_verified = true;
                    }
                    if lost {
                        u.session_version = u.session_version.saturating_add(1);
                    }
                    u.updated_at = now;
                    Ok(())
                })?)
            })
            .await?;
        if lost {
            self.publish_flags(&updated)?;
        }
        tracing::info!(target: "audit", event = "sso_roles", provider = %provider.id, user_id = %updated.id, roles = ?updated.roles);
        Ok(updated)
    }

    /// Whether the user has a password (an account made by single sign-on has none until it
    /// sets one).
    pub async fn has_password(&self, user_id: &str) -> Result<bool, AuthError> {
        let id = user_id.to_owned();
        let user = self.blocking(move |s| Ok(s.user_by_id(&id)?)).await?;
        Ok(user.is_some_and(|u| !u.password_hash.is_empty()))
    }

    /// The providers linked to the signed-in user.
    pub async fn identities(&self, user_id: &str) -> Result<Vec<IdentityView>, AuthError> {
        let id = user_id.to_owned();
        let linked = self.blocking(move |s| Ok(s.identities_of(&id)?)).await?;
        let sso = self.sso();
        Ok(linked
            .into_iter()
            .map(|l| IdentityView {
                display_name: sso
                    .as_ref()
                    .and_then(|s| s.provider(&l.provider))
                    .map_or_else(|| l.provider.clone(), |p| p.settings.display_name.clone()),
                provider: l.provider,
                email: l.email,
                linked_at: l.linked_at,
                last_login_at: l.last_login_at,
            })
            .collect())
    }

    /// Unlinks a provider from the signed-in user's account. Refused when it is the only way
    /// the account can sign in (no password, no other provider): the user would be locked out.
    /// The user's sessions from that provider end at their next refresh.
    pub async fn unlink_identity(&self, user_id: &str, provider: &str) -> Result<bool, AuthError> {
        let (id, p) = (user_id.to_owned(), provider.to_owned());
        let removed = self
            .blocking(move |s| {
                let user = s
                    .user_by_id(&id)?
                    .filter(|u| !u.disabled)
                    .ok_or(AuthError::NotAuthenticated("disabled"))?;
                let linked = s.identities_of(&id)?;
                if !linked.iter().any(|l| l.provider == p) {
                    return Ok(false);
                }
                if user.password_hash.is_empty() && linked.len() == 1 {
                    return Err(AuthError::MfaState(
                        "Set a password first: this provider is the only way to sign in to this account",
                    ));
                }
                Ok(s.unlink_identity(&id, &p)?)
            })
            .await?;
        if removed {
            tracing::info!(target: "audit", event = "sso_unlinked", provider, user_id);
        }
        Ok(removed)
    }

    /// The re-check of a federated session at its refresh (see the module docs): the user as
    /// the tokens should now say, or [`AuthError::InvalidRefresh`] with the session ended.
    pub(super) async fn recheck_federated(
        &self,
        user: User,
        record: &RefreshRecord,
        provider_id: &str,
        now: u64,
    ) -> Result<User, AuthError> {
        let found = self
            .sso()
            .and_then(|sso| Some((sso.provider(provider_id)?.clone(), sso)));
        let Some((provider, sso)) = found else {
            return self
                .end_federated(record, provider_id, "provider_removed", now)
                .await;
        };
        let interval = provider.settings.recheck_interval.as_secs();
        let current = self.linked(&user.id, provider_id).await?;
        let Some(identity) = current else {
            return self
                .end_federated(record, provider_id, "unlinked", now)
                .await;
        };
        if now < identity.checked_at.saturating_add(interval) {
            return Ok(user);
        }
        let lock = provider.recheck_lock(&identity.subject);
        let _one_at_a_time = lock.lock().await;
        // Another refresh may have checked while this one waited.
        let Some(identity) = self.linked(&user.id, provider_id).await? else {
            return self
                .end_federated(record, provider_id, "unlinked", now)
                .await;
        };
        if now < identity.checked_at.saturating_add(interval) {
            return Ok(user);
        }
        let Some(refresh) = identity.refresh_token.clone().map(SecretString::new) else {
            return self
                .end_federated(record, provider_id, "no_provider_refresh_token", now)
                .await;
        };
        match sso.recheck(&provider, &identity.subject, &refresh).await {
            Ok(Recheck::Current(who)) => {
                let (p, sub) = (provider_id.to_owned(), identity.subject.clone());
                let (groups, email, token) = (
                    who.groups.clone(),
                    who.email.clone(),
                    who.refresh_token.as_ref().map(|t| t.expose().clone()),
                );
                self.blocking(move |s| {
                    Ok(s.update_identity(&p, &sub, |l| {
                        l.checked_at = now;
                        l.groups = groups;
                        if email.is_some() {
                            l.email = email;
                        }
                        if token.is_some() {
                            l.refresh_token = token;
                        }
                        Ok(())
                    })?)
                })
                .await?;
                let mapped: Vec<String> = match sso::admit(&provider.settings, &who) {
                    Ok(roles) => roles.into_iter().map(str::to_owned).collect(),
                    Err(why) => {
                        self.count_sso_outcome(provider_id, why.label());
                        return self
                            .end_federated(record, provider_id, why.label(), now)
                            .await;
                    }
                };
                self.count_sso_outcome(provider_id, "recheck_ok");
                let email = user.email.clone();
                self.apply_provider(&provider.settings, user, &mapped, &email, false)
                    .await
            }
            Ok(Recheck::Revoked) => {
                // On another replica at the same moment, a re-check may have spent the same
                // (rotating) refresh token: then the identity has a newer one and a fresh check.
                if let Some(now_stored) = self.linked(&user.id, provider_id).await?
                    && now_stored.refresh_token != identity.refresh_token
                    && now < now_stored.checked_at.saturating_add(interval)
                {
                    return Ok(user);
                }
                self.count_sso_outcome(provider_id, "recheck_revoked");
                self.end_federated(record, provider_id, "revoked_at_provider", now)
                    .await
            }
            Err(e) => {
                self.count_sso_outcome(provider_id, e.label());
                if now
                    < identity
                        .checked_at
                        .saturating_add(interval.saturating_mul(2))
                {
                    tracing::warn!(provider = provider_id, error = %e, detail = e.detail(), "sso: re-check failed; the session goes on for now");
                    Ok(user)
                } else {
                    tracing::warn!(provider = provider_id, error = %e, detail = e.detail(), "sso: re-check failed for too long; ending the session");
                    self.end_federated(record, provider_id, e.label(), now)
                        .await
                }
            }
        }
    }

    async fn linked(
        &self,
        user_id: &str,
        provider: &str,
    ) -> Result<Option<LinkedIdentity>, AuthError> {
        let (id, p) = (user_id.to_owned(), provider.to_owned());
        let all = self.blocking(move |s| Ok(s.identities_of(&id)?)).await?;
        Ok(all.into_iter().find(|l| l.provider == p))
    }

    /// Ends a federated session whose re-check failed.
    async fn end_federated<T>(
        &self,
        record: &RefreshRecord,
        provider: &str,
        reason: &str,
        now: u64,
    ) -> Result<T, AuthError> {
        let family = record.family.clone();
        self.blocking(move |s| Ok(s.revoke_family(&family, now)?))
            .await?;
        self.write_revocations(|r| r.revoke_family(&record.family, record.family_expires_at))?;
        tracing::info!(target: "audit", event = "sso_session_ended", provider, reason, user_id = %record.user_id, family = %record.family);
        Err(AuthError::InvalidRefresh)
    }

    /// Counts a single sign-on outcome for the metrics.
    pub fn count_sso_outcome(&self, provider: &str, outcome: &str) {
        if let Ok(mut map) = self.inner.counters.sso.lock() {
            *map.entry((provider.to_owned(), outcome.to_owned()))
                .or_insert(0) += 1;
        }
    }
}

/// Finds or makes the account of a callback's identity, in the store (see the module docs).
fn resolve(
    s: &crate::store::Store,
    mut record: LinkedIdentity,
    link_user: Option<String>,
    new_user: User,
    verified_at_provider: bool,
    may_create: bool,
    now: u64,
) -> Result<Resolved, AuthError> {
    let (p, sub) = (record.provider.clone(), record.subject.clone());
    if let Some(existing) = s.identity(&p, &sub)? {
        if link_user.as_ref().is_some_and(|u| *u != existing.user_id) {
            return Err(AuthError::SsoRefused(
                "This identity is already linked to another account",
            ));
        }
        let (email, groups, token) = (
            record.email.clone(),
            record.groups.clone(),
            record.refresh_token.clone(),
        );
        s.update_identity(&p, &sub, |l| {
            l.email = email;
            l.groups = groups;
            l.last_login_at = now;
            l.checked_at = now;
            if token.is_some() {
                l.refresh_token = token;
            }
            Ok(())
        })?;
        let user = s
            .user_by_id(&existing.user_id)?
            .ok_or(AuthError::InvalidCredentials)?;
        if link_user.is_some() {
            return Ok(Resolved::Linked);
        }
        return Ok(Resolved::User {
            user,
            how: "linked_identity",
        });
    }
    if let Some(user_id) = link_user {
        record.user_id = user_id;
        return match s.link_identity(&record) {
            Ok(()) => Ok(Resolved::Linked),
            Err(StoreError::IdentityTaken) => Err(AuthError::SsoRefused(
                "Your account is already linked to another identity at this provider; unlink it first",
            )),
            Err(e) => Err(e.into()),
        };
    }
    let email = record.email.clone().unwrap_or_default();
    if let Some(user) = s.user_by_email(&email)? {
        if !(verified_at_provider && user.email_verified) {
            return Err(AuthError::SsoLinkRefused);
        }
        record.user_id = user.id.clone();
        return match s.link_identity(&record) {
            Ok(()) => Ok(Resolved::User {
                user,
                how: "linked_by_verified_email",
            }),
            Err(StoreError::IdentityTaken) => Err(AuthError::SsoLinkRefused),
            Err(e) => Err(e.into()),
        };
    }
    if !may_create {
        return Err(AuthError::SignupClosed);
    }
    s.create_user(&new_user)?;
    record.user_id = new_user.id.clone();
    if let Err(e) = s.link_identity(&record) {
        // Another sign-in linked this identity meanwhile: leave no orphan account behind.
        let _ = s.delete_user(&new_user.id, now);
        return Err(e.into());
    }
    Ok(Resolved::User {
        user: new_user,
        how: "created",
    })
}
