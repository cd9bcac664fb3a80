//! `sso`: the external OpenID Connect providers users may sign in with, and
//! `auth.password_login`, which turns the gateway's own passwords off for SSO-only deployments.

use std::time::Duration;

use super::{Ctx, role_name, secret_bytes};
use crate::config::raw::{RawConfig, RawSsoProvider, Sp};
use crate::config::{ConfigError, SsoProvider, SsoSettings, is_loopback_host};
use crate::secret::Secret;

/// The ID token algorithms accepted unless a provider lists its own: the asymmetric ones OpenID
/// providers sign with. `none` and the HMAC family (keyed with the client secret) are never
/// accepted.
pub const DEFAULT_ID_TOKEN_ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// `sso`, with `email_public_url` as the default public URL.
pub(super) fn validate_sso(
    cx: &Ctx,
    raw: &RawConfig,
    email_public_url: Option<&str>,
) -> Result<SsoSettings, ConfigError> {
    let sso = &raw.sso;
    let mut providers: Vec<SsoProvider> = Vec::with_capacity(sso.providers.len());
    for (i, p) in sso.providers.iter().enumerate() {
        let provider = provider(cx, i, p)?;
        if providers.iter().any(|q| q.id == provider.id) {
            return Err(cx.err(
                &p.id,
                &format!("sso.providers[{i}].id"),
                format!("{:?} is used twice", provider.id),
            ));
        }
        providers.push(provider);
    }
    let public_url = match &sso.public_url {
        Some(v) => origin(&v.value).ok_or_else(|| {
            cx.err(
                v,
                "sso.public_url",
                "must be scheme://host[:port] with https (http only for localhost or a loopback address)",
            )
        })?,
        None => email_public_url.and_then(origin).unwrap_or_default(),
    };
    if public_url.is_empty()
        && let Some(first) = sso.providers.first()
    {
        return Err(cx.err(
            &first.id,
            "sso.public_url",
            "single sign-on needs the address browsers reach the gateway at, for the redirect URIs: set sso.public_url (or email.public_url)",
        ));
    }
    if let Some(v) = raw.auth.password_login.as_ref().filter(|v| !v.value)
        && providers.is_empty()
    {
        return Err(cx.err(
            v,
            "auth.password_login",
            "turning passwords off needs at least one provider in sso.providers, or nobody could sign in",
        ));
    }
    Ok(SsoSettings {
        public_url,
        providers,
    })
}

fn provider(cx: &Ctx, i: usize, p: &RawSsoProvider) -> Result<SsoProvider, ConfigError> {
    let key = |k: &str| format!("sso.providers[{i}].{k}");
    let id = p.id.value.trim().to_owned();
    let id_ok = (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !id_ok {
        return Err(cx.err(
            &p.id,
            &key("id"),
            "must be 1 to 32 of a-z, 0-9, - and _ (it is part of the redirect URI)",
        ));
    }
    if let Some(k) = &p.kind
        && k.value != "oidc"
    {
        return Err(cx.err(
            k,
            &key("kind"),
            format!("unknown kind {:?} (use oidc)", k.value),
        ));
    }
    let display_name = match &p.display_name {
        None => id.clone(),
        Some(v) if v.value.trim().is_empty() || v.value.chars().any(char::is_control) => {
            return Err(cx.err(v, &key("display_name"), "must be non-empty text"));
        }
        Some(v) => v.value.trim().to_owned(),
    };
    let issuer = p.issuer.value.trim().to_owned();
    if !issuer_ok(&issuer) {
        return Err(cx.err(
            &p.issuer,
            &key("issuer"),
            "must be an https URL without query or fragment (http only on a loopback address)",
        ));
    }
    let client_id = p.client_id.value.trim().to_owned();
    if client_id.is_empty() || client_id.chars().any(char::is_control) {
        return Err(cx.err(&p.client_id, &key("client_id"), "must be non-empty text"));
    }
    let secret_key = key("client_secret");
    let secret_file_key = key("client_secret_file");
    let client_secret = match secret_bytes(
        cx,
        (&p.client_secret, &secret_key),
        (&p.client_secret_file, &secret_file_key),
    )? {
        Some((at, bytes)) => {
            let text = String::from_utf8(bytes)
                .map_err(|_| cx.err(at, &secret_key, "the secret is not UTF-8 text"))?;
            if text.is_empty() {
                return Err(cx.err(at, &secret_key, "the secret is empty"));
            }
            Secret::new(text)
        }
        None => {
            return Err(cx.err(
                &p.client_id,
                &secret_key,
                "a confidential client needs its secret: client_secret: ${VAR} or client_secret_file",
            ));
        }
    };
    let scopes = match &p.scopes {
        None => vec!["openid".into(), "email".into(), "profile".into()],
        Some(list) => {
            let mut scopes = vec!["openid".to_owned()];
            for (j, s) in list.iter().enumerate() {
                let v = s.value.trim();
                if v.is_empty()
                    || !v
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
                {
                    return Err(cx.err(s, &key(&format!("scopes[{j}]")), "invalid scope"));
                }
                if !scopes.iter().any(|x| x == v) {
                    scopes.push(v.to_owned());
                }
            }
            scopes
        }
    };
    let claim = |v: &Option<Sp<String>>, k: &str, default: &str| -> Result<String, ConfigError> {
        match v {
            None => Ok(default.to_owned()),
            Some(s) if s.value.trim().is_empty() || s.value.chars().any(char::is_control) => {
                Err(cx.err(s, &key(k), "must be a claim name"))
            }
            Some(s) => Ok(s.value.trim().to_owned()),
        }
    };
    let email_claim = claim(&p.email_claim, "email_claim", "email")?;
    let name_claim = claim(&p.name_claim, "name_claim", "name")?;
    let mut allowed_email_domains = Vec::new();
    for (j, d) in p.allowed_email_domains.iter().flatten().enumerate() {
        let domain = d.value.trim().trim_start_matches('@').to_ascii_lowercase();
        let ok = !domain.is_empty()
            && domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok {
            return Err(cx.err(
                d,
                &key(&format!("allowed_email_domains[{j}]")),
                "must be a domain name such as example.com",
            ));
        }
        allowed_email_domains.push(domain);
    }
    let mut allowed_groups = Vec::new();
    for (j, g) in p.allowed_groups.iter().flatten().enumerate() {
        if g.value.is_empty() {
            return Err(cx.err(g, &key(&format!("allowed_groups[{j}]")), "empty group"));
        }
        allowed_groups.push(g.value.clone());
    }
    let mut role_mappings = Vec::new();
    for (group, roles) in p.role_mappings.iter().flatten() {
        let mut out = Vec::new();
        for (j, r) in roles.iter().enumerate() {
            out.push(role_name(
                cx,
                r,
                &key(&format!("role_mappings.{group}[{j}]")),
            )?);
        }
        role_mappings.push((group.clone(), out));
    }
    let uses_groups = !allowed_groups.is_empty() || !role_mappings.is_empty();
    let groups_claim = match &p.groups_claim {
        None if uses_groups => Some("groups".to_owned()),
        None => None,
        Some(_) => Some(claim(&p.groups_claim, "groups_claim", "groups")?),
    };
    let recheck_interval = cx.duration(
        &p.recheck_interval,
        &key("recheck_interval"),
        Duration::from_secs(15 * 60),
        (Duration::from_secs(60), Duration::from_secs(24 * 3600)),
    )?;
    let timeout = cx.duration(
        &p.timeout,
        &key("timeout"),
        Duration::from_secs(10),
        (Duration::from_secs(1), Duration::from_secs(60)),
    )?;
    let mut auth_params = Vec::new();
    for (name, value) in p.auth_params.iter().flatten() {
        const OURS: [&str; 9] = [
            "response_type",
            "client_id",
            "redirect_uri",
            "scope",
            "state",
            "nonce",
            "code_challenge",
            "code_challenge_method",
            "response_mode",
        ];
        if OURS.contains(&name.as_str()) {
            return Err(cx.err(
                value,
                &key(&format!("auth_params.{name}")),
                "the gateway sets this parameter itself",
            ));
        }
        auth_params.push((name.clone(), value.value.clone()));
    }
    let id_token_algorithms = match &p.id_token_algorithms {
        None => DEFAULT_ID_TOKEN_ALGORITHMS.map(str::to_owned).to_vec(),
        Some(list) => {
            let mut out = Vec::new();
            for (j, a) in list.iter().enumerate() {
                if !DEFAULT_ID_TOKEN_ALGORITHMS.contains(&a.value.as_str()) {
                    return Err(cx.err(
                        a,
                        &key(&format!("id_token_algorithms[{j}]")),
                        format!(
                            "unsupported algorithm {:?} (use {})",
                            a.value,
                            DEFAULT_ID_TOKEN_ALGORITHMS.join(", ")
                        ),
                    ));
                }
                out.push(a.value.clone());
            }
            if out.is_empty() {
                return Err(cx.err_at(
                    p.id.referenced.line(),
                    &key("id_token_algorithms"),
                    "lists no algorithm",
                ));
            }
            out
        }
    };
    Ok(SsoProvider {
        id,
        display_name,
        issuer,
        client_id,
        client_secret,
        scopes,
        email_claim,
        name_claim,
        groups_claim,
        create_users: p.create_users.as_ref().is_some_and(|v| v.value),
        allowed_email_domains,
        allowed_groups,
        role_mappings,
        recheck_interval,
        logout_at_provider: p.logout_at_provider.as_ref().is_some_and(|v| v.value),
        timeout,
        auth_params,
        id_token_algorithms,
    })
}

/// An issuer URL: https, or http on this machine; no query, fragment or user info.
fn issuer_ok(issuer: &str) -> bool {
    let Ok(uri) = issuer.parse::<http::Uri>() else {
        return false;
    };
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return false;
    };
    let scheme_ok = scheme == "https" || scheme == "http" && is_loopback_host(authority.host());
    scheme_ok && uri.query().is_none() && !issuer.contains('#') && !authority.as_str().contains('@')
}

/// The origin of a URL (`scheme://host[:port]`, lowercase): https, or http on this machine.
fn origin(url: &str) -> Option<String> {
    let uri: http::Uri = url.trim().parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let authority = uri.authority()?;
    let host = authority.host().to_ascii_lowercase();
    if !(scheme == "https" || scheme == "http" && is_loopback_host(&host))
        || authority.as_str().contains('@')
    {
        return None;
    }
    Some(match authority.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::load;

    const BASE: &str = "version: 1\nemail:\n  smtp_url: smtp://127.0.0.1:2525\n  from: a@example.com\n  public_url: https://login.example.com\n";

    fn with(providers: &str) -> String {
        format!("{BASE}sso:\n  providers:\n{providers}")
    }

    #[test]
    fn a_provider_gets_its_defaults() {
        let c = load(&with(
            "    - id: corp\n      issuer: https://idp.example.com\n      client_id: gw\n      client_secret: s3cret\n",
        ))
        .expect("valid");
        assert_eq!(c.sso.public_url, "https://login.example.com");
        let p = &c.sso.providers[0];
        assert_eq!(p.display_name, "corp");
        assert_eq!(p.scopes, ["openid", "email", "profile"]);
        assert_eq!(p.groups_claim, None);
        assert_eq!(p.recheck_interval.as_secs(), 900);
        assert!(
            !p.id_token_algorithms
                .iter()
                .any(|a| a == "none" || a.starts_with("HS"))
        );
        assert!(c.auth.password_login);
        assert_eq!(format!("{:?}", p.client_secret), "***");
    }

    #[test]
    fn mistakes_name_their_key() {
        let cases = [
            (
                "    - id: Corp!\n      issuer: https://i\n      client_id: gw\n      client_secret: s\n",
                "sso.providers[0].id",
            ),
            (
                "    - id: c\n      issuer: http://idp.example.com\n      client_id: gw\n      client_secret: s\n",
                "sso.providers[0].issuer",
            ),
            (
                "    - id: c\n      issuer: https://i\n      client_id: gw\n",
                "sso.providers[0].client_secret",
            ),
            (
                "    - id: c\n      issuer: https://i\n      client_id: gw\n      client_secret: s\n      id_token_algorithms: [none]\n",
                "sso.providers[0].id_token_algorithms[0]",
            ),
            (
                "    - id: c\n      issuer: https://i\n      client_id: gw\n      client_secret: s\n      id_token_algorithms: [HS256]\n",
                "sso.providers[0].id_token_algorithms[0]",
            ),
            (
                "    - id: c\n      issuer: https://i\n      client_id: gw\n      client_secret: s\n      role_mappings:\n        admins: [\"bad role\"]\n",
                "sso.providers[0].role_mappings.admins[0]",
            ),
            (
                "    - id: c\n      issuer: https://i\n      client_id: gw\n      client_secret: s\n      auth_params:\n        state: x\n",
                "sso.providers[0].auth_params.state",
            ),
            (
                "    - id: c\n      issuer: https://i\n      client_id: gw\n      client_secret: s\n    - id: c\n      issuer: https://j\n      client_id: gw\n      client_secret: s\n",
                "sso.providers[1].id",
            ),
        ];
        for (yaml, key) in cases {
            let err = load(&with(yaml)).expect_err(key).to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn groups_default_to_the_groups_claim_when_used() {
        let c = load(&with(
            "    - id: c\n      issuer: http://127.0.0.1:9000\n      client_id: gw\n      client_secret: s\n      allowed_groups: [eng]\n      role_mappings:\n        admins: [admin, ops]\n",
        ))
        .expect("valid");
        let p = &c.sso.providers[0];
        assert_eq!(p.groups_claim.as_deref(), Some("groups"));
        assert_eq!(
            p.mapped_roles(&["admins".into(), "x".into()]),
            ["admin", "ops"]
        );
        assert!(p.manages_role("ops"));
        assert!(!p.manages_role("user"));
    }

    #[test]
    fn sso_needs_a_public_url_and_password_off_needs_a_provider() {
        let err = load("version: 1\nsso:\n  providers:\n    - id: c\n      issuer: https://i\n      client_id: gw\n      client_secret: s\n")
            .expect_err("no public url")
            .to_string();
        assert!(err.contains("sso.public_url"), "{err}");
        let err = load("version: 1\nauth:\n  password_login: false\n")
            .expect_err("nobody could sign in")
            .to_string();
        assert!(err.contains("auth.password_login"), "{err}");
        let c = load("version: 1\nauth:\n  password_login: false\nsso:\n  public_url: http://127.0.0.1:8080\n  providers:\n    - id: c\n      issuer: https://i\n      client_id: gw\n      client_secret: s\n")
            .expect("valid");
        assert!(!c.auth.password_login);
        assert_eq!(c.sso.public_url, "http://127.0.0.1:8080");
    }
}
