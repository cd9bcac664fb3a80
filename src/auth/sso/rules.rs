//! A provider's rules for who may sign in (`allowed_email_domains`, `allowed_groups`), and the
//! roles its `role_mappings` give.

use super::ProviderIdentity;
use crate::config::SsoProvider;

/// Why [`admit`] refused an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No email claim (the gateway's accounts are keyed by email).
    NoEmail,
    /// Not a verified address at one of `allowed_email_domains`.
    Domain,
    /// In none of `allowed_groups`.
    Group,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Refused::NoEmail => "no_email",
            Refused::Domain => "email_domain",
            Refused::Group => "group",
        }
    }

    /// What the user is told.
    pub fn message(self) -> &'static str {
        match self {
            Refused::NoEmail => "The identity provider did not share an email address",
            Refused::Domain => "Your email address is not one this site accepts",
            Refused::Group => {
                "Your account at the identity provider is not in a group allowed here"
            }
        }
    }
}

/// Applies a provider's rules to an identity: the roles its `role_mappings` give, or why it is
/// refused. The email domain rule needs the provider to vouch for the address (an unverified
/// address at an allowed domain proves nothing).
pub fn admit<'a>(p: &'a SsoProvider, who: &ProviderIdentity) -> Result<Vec<&'a str>, Refused> {
    let Some(email) = who.email.as_deref().filter(|e| e.contains('@')) else {
        return Err(Refused::NoEmail);
    };
    if !p.allowed_email_domains.is_empty() {
        let domain = email.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase());
        let allowed = domain
            .as_deref()
            .is_some_and(|d| p.allowed_email_domains.iter().any(|a| a == d));
        if !allowed || !who.email_verified {
            return Err(Refused::Domain);
        }
    }
    if !p.allowed_groups.is_empty() && !who.groups.iter().any(|g| p.allowed_groups.contains(g)) {
        return Err(Refused::Group);
    }
    Ok(p.mapped_roles(&who.groups))
}

/// The roles a user ends up with: those the provider manages are replaced by `mapped`, the
/// rest kept. Sorted as they were, new ones appended.
pub fn apply_roles(p: &SsoProvider, current: &[String], mapped: &[&str]) -> Vec<String> {
    let mut roles: Vec<String> = current
        .iter()
        .filter(|r| !p.manages_role(r) || mapped.contains(&r.as_str()))
        .cloned()
        .collect();
    for m in mapped {
        if !roles.iter().any(|r| r == m) {
            roles.push((*m).to_owned());
        }
    }
    roles
}
