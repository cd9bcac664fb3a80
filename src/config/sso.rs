//! The checked `sso` section: single sign-on providers (see [`crate::auth::sso`]).

use std::time::Duration;

use crate::secret::Secret;

/// Whether a host is this machine: `localhost` names and loopback addresses.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `sso`: single sign-on with external OpenID Connect providers (see [`crate::auth::sso`]).
#[derive(Debug, Clone, Default)]
pub struct SsoSettings {
    /// Where browsers reach the gateway (`scheme://host[:port]`), for the redirect URIs
    /// (`sso.public_url`, default the origin of `email.public_url`). Never a request's Host.
    pub public_url: String,
    pub providers: Vec<SsoProvider>,
}

/// One `sso.providers[]` entry, checked.
#[derive(Debug, Clone)]
pub struct SsoProvider {
    /// In URLs (`{prefix}/sso/{id}/start`) and in the store's linked identities.
    pub id: String,
    /// The button's "Sign in with {display_name}".
    pub display_name: String,
    /// The OpenID issuer; discovery at `{issuer}/.well-known/openid-configuration`. https, or
    /// http on a loopback address (tests, a provider on the same machine).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret<String>,
    /// Requested scopes, `openid` first.
    pub scopes: Vec<String>,
    pub email_claim: String,
    pub name_claim: String,
    /// The claim listing the user's groups (`None`: groups are not used).
    pub groups_claim: Option<String>,
    /// The first sign-in creates an account even when `auth.signup` is closed.
    pub create_users: bool,
    /// Lowercase domains the email must be at (empty: any).
    pub allowed_email_domains: Vec<String>,
    /// Groups of which the user must be in one (empty: any).
    pub allowed_groups: Vec<String>,
    /// Group (or claim value) -> the gateway roles it gives. The roles named here are managed
    /// by the provider: given while mapped, taken away when no longer.
    pub role_mappings: Vec<(String, Vec<String>)>,
    /// How often a session's refresh asks the provider again (with its refresh token).
    pub recheck_interval: Duration,
    /// Sign-out also ends the session at the provider (`end_session_endpoint`).
    pub logout_at_provider: bool,
    /// Longest wait for one request to the provider.
    pub timeout: Duration,
    /// Extra authorization request parameters.
    pub auth_params: Vec<(String, String)>,
    /// Accepted ID token signature algorithms (JOSE names).
    pub id_token_algorithms: Vec<String>,
}

impl SsoProvider {
    /// The roles `groups` give under `role_mappings`, sorted, without repeats.
    pub fn mapped_roles<'a>(&'a self, groups: &[String]) -> Vec<&'a str> {
        let mut roles: Vec<&str> = self
            .role_mappings
            .iter()
            .filter(|(group, _)| groups.iter().any(|g| g == group))
            .flat_map(|(_, roles)| roles.iter().map(String::as_str))
            .collect();
        roles.sort_unstable();
        roles.dedup();
        roles
    }

    /// Whether `role_mappings` names `role` (the provider manages it).
    pub fn manages_role(&self, role: &str) -> bool {
        self.role_mappings
            .iter()
            .any(|(_, roles)| roles.iter().any(|r| r == role))
    }
}
