//! `auth`: the endpoints' prefix, sign-up, token signing and lifetimes, password hashing, the
//! identity headers sent upstream and signed assertions.
//!
//! [`validate_auth`] checks the subsections in the order the file lists them, each in its own
//! function below.

use std::time::Duration;

use super::{Ctx, endpoint_path, header_name, role_name, secret_bytes};
use crate::config::raw::{RawAuth, RawConfig, RawPassword, Sp};
use crate::config::{
    AssertionSettings, AuthSettings, ConfigError, DEFAULT_HASHING_CPU_PERCENT, IdentityHeaders,
    MfaSettings, PasswordSettings, Signup, TokenAlgorithm, WebauthnSettings,
};
use crate::secret::Secret;

pub(super) fn validate_auth(cx: &Ctx, raw: &RawConfig) -> Result<AuthSettings, ConfigError> {
    let a = &raw.auth;
    let prefix = endpoint_path(cx, &a.prefix, "auth.prefix", "/api/auth")?;
    let signup = signup(cx, a)?;
    let default_roles = default_roles(cx, a)?;
    let issuer = text(cx, &a.issuer, "auth.issuer", "gateway")?;
    let audience = text(cx, &a.audience, "auth.audience", "gateway")?;
    let algorithm = algorithm(cx, a)?;
    let jwt_secret = jwt_secret(cx, a, algorithm)?;

    let access_ttl = cx.duration(
        &a.access_ttl,
        "auth.access_ttl",
        Duration::from_secs(15 * 60),
        (Duration::from_secs(60), Duration::from_secs(24 * 3600)),
    )?;
    let refresh_ttl = cx.duration(
        &a.refresh_ttl,
        "auth.refresh_ttl",
        Duration::from_secs(7 * 86_400),
        (Duration::from_secs(3600), Duration::from_secs(30 * 86_400)),
    )?;
    let refresh_grace = cx.duration(
        &a.refresh_grace,
        "auth.refresh_grace",
        Duration::from_secs(5),
        (Duration::ZERO, Duration::from_secs(10)),
    )?;

    let password = password(cx, &a.password)?;
    let identity = identity_headers(cx, a)?;
    let assertion = assertion(cx, a, algorithm)?;
    let mfa = mfa(cx, a)?;

    Ok(AuthSettings {
        prefix,
        signup,
        default_roles,
        issuer,
        audience,
        algorithm,
        jwt_secret,
        access_ttl,
        refresh_ttl,
        refresh_grace,
        tokens_in_body: a.tokens_in_body.unwrap_or(true),
        transparent_refresh: a.transparent_refresh.unwrap_or(true),
        show_required_roles: a.show_required_roles.unwrap_or(false),
        require_verified_email: a.require_verified_email.as_ref().is_some_and(|v| v.value),
        password,
        identity,
        assertion,
        mfa,
        // Filled in by `webauthn` once the email section (its default origin) is read.
        webauthn: None,
        password_login: a.password_login.as_ref().is_none_or(|v| v.value),
    })
}

/// `auth.webauthn`, with `public_url` (`email.public_url`) as the default origin.
pub(super) fn webauthn(
    cx: &Ctx,
    raw: &RawAuth,
    public_url: Option<&str>,
    issuer: &str,
) -> Result<Option<WebauthnSettings>, ConfigError> {
    let w = raw.webauthn.as_ref();
    if w.and_then(|w| w.enabled.as_ref()).is_some_and(|e| !e.value) {
        return Ok(None);
    }
    let origin = match w.and_then(|w| w.origin.as_ref()) {
        Some(v) => {
            let origin = web_origin(&v.value).ok_or_else(|| {
                cx.err(
                    v,
                    "auth.webauthn.origin",
                    "must be scheme://host[:port] with https (http only for localhost)",
                )
            })?;
            if origin.len() != v.value.trim().trim_end_matches('/').len() {
                return Err(cx.err(v, "auth.webauthn.origin", "an origin has no path"));
            }
            origin
        }
        None => match public_url.and_then(web_origin) {
            Some(origin) => origin,
            None => return Ok(None),
        },
    };
    let host = origin_host(&origin);
    let rp_id = match w.and_then(|w| w.rp_id.as_ref()) {
        None => host.to_owned(),
        Some(v) => {
            let id = v.value.trim().to_ascii_lowercase();
            let suffix = host == id || host.ends_with(&format!(".{id}"));
            if id.is_empty() || !suffix || id.parse::<std::net::IpAddr>().is_ok() {
                return Err(cx.err(
                    v,
                    "auth.webauthn.rp_id",
                    format!("must be the origin's host {host:?} or a domain it is under"),
                ));
            }
            id
        }
    };
    if rp_id.parse::<std::net::IpAddr>().is_ok() || rp_id.starts_with('[') {
        // Browsers refuse passkeys on an IP address: an explicit origin is an error; one taken
        // from email.public_url leaves passkeys off.
        return match w.and_then(|w| w.origin.as_ref()) {
            Some(v) => Err(cx.err(
                v,
                "auth.webauthn.origin",
                "browsers refuse passkeys on an IP address; use a host name",
            )),
            None => Ok(None),
        };
    }
    let rp_name = match w.and_then(|w| w.rp_name.as_ref()) {
        None => issuer.to_owned(),
        Some(_) => text(
            cx,
            &w.and_then(|w| w.rp_name.clone()),
            "auth.webauthn.rp_name",
            issuer,
        )?,
    };
    Ok(Some(WebauthnSettings {
        origin,
        rp_id,
        rp_name,
        passwordless: w
            .and_then(|w| w.passwordless.as_ref())
            .is_some_and(|p| p.value),
    }))
}

/// The origin (`scheme://host[:port]`, lowercase) of a URL: https, or http on localhost.
fn web_origin(url: &str) -> Option<String> {
    let uri: http::Uri = url.trim().parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let authority = uri.authority()?;
    let host = authority.host().to_ascii_lowercase();
    let local = host == "localhost" || host.ends_with(".localhost");
    if !(scheme == "https" || scheme == "http" && local) || authority.as_str().contains('@') {
        return None;
    }
    Some(match authority.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}

/// The host of an origin from [`web_origin`].
fn origin_host(origin: &str) -> &str {
    let rest = origin.split_once("://").map_or(origin, |(_, r)| r);
    match rest.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => rest,
    }
}

/// `auth.mfa`: the issuer name authenticator apps show, and the roles that need a second
/// factor.
fn mfa(cx: &Ctx, a: &RawAuth) -> Result<MfaSettings, ConfigError> {
    let issuer = text(cx, &a.mfa.issuer, "auth.mfa.issuer", "Gateway")?;
    if issuer.contains(':')
        && let Some(v) = &a.mfa.issuer
    {
        return Err(cx.err(
            v,
            "auth.mfa.issuer",
            "must not contain ':' (authenticator apps split the label on it)",
        ));
    }
    let mut required_for_roles = Vec::new();
    for (i, r) in a.mfa.required_for_roles.iter().flatten().enumerate() {
        required_for_roles.push(role_name(
            cx,
            r,
            &format!("auth.mfa.required_for_roles[{i}]"),
        )?);
    }
    Ok(MfaSettings {
        issuer,
        required_for_roles,
    })
}

/// `auth.signup`: open (the default) or closed.
fn signup(cx: &Ctx, a: &RawAuth) -> Result<Signup, ConfigError> {
    Ok(match &a.signup {
        None => Signup::Open,
        Some(s) => match s.value.as_str() {
            "open" => Signup::Open,
            "closed" => Signup::Closed,
            other => {
                return Err(cx.err(
                    s,
                    "auth.signup",
                    format!("unknown value {other:?} (use open or closed)"),
                ));
            }
        },
    })
}

/// `auth.default_roles`: the roles a new account gets.
fn default_roles(cx: &Ctx, a: &RawAuth) -> Result<Vec<String>, ConfigError> {
    Ok(match &a.default_roles {
        None => vec!["user".to_owned()],
        Some(list) => {
            let mut out = Vec::new();
            for (i, r) in list.iter().enumerate() {
                out.push(role_name(cx, r, &format!("auth.default_roles[{i}]"))?);
            }
            out
        }
    })
}

/// A name written into tokens (`auth.issuer`, `auth.audience`).
fn text(cx: &Ctx, v: &Option<Sp<String>>, key: &str, default: &str) -> Result<String, ConfigError> {
    match v {
        None => Ok(default.to_owned()),
        Some(s) if s.value.trim().is_empty() || s.value.chars().any(char::is_control) => Err(cx
            .err(
                s,
                key,
                "must be a non-empty string without control characters",
            )),
        Some(s) => Ok(s.value.clone()),
    }
}

/// `auth.algorithm`: EdDSA (the default) or HS256.
fn algorithm(cx: &Ctx, a: &RawAuth) -> Result<TokenAlgorithm, ConfigError> {
    Ok(match &a.algorithm {
        None => TokenAlgorithm::EdDSA,
        Some(s) => match s.value.as_str() {
            "EdDSA" => TokenAlgorithm::EdDSA,
            "HS256" => TokenAlgorithm::HS256,
            other => {
                return Err(cx.err(
                    s,
                    "auth.algorithm",
                    format!("unsupported algorithm {other:?} (use EdDSA or HS256)"),
                ));
            }
        },
    })
}

/// `auth.jwt_secret` / `auth.jwt_secret_file`: required with HS256, refused with EdDSA.
fn jwt_secret(
    cx: &Ctx,
    a: &RawAuth,
    algorithm: TokenAlgorithm,
) -> Result<Option<Secret<Vec<u8>>>, ConfigError> {
    let jwt_secret = secret_bytes(
        cx,
        (&a.jwt_secret, "auth.jwt_secret"),
        (&a.jwt_secret_file, "auth.jwt_secret_file"),
    )?;
    Ok(match (algorithm, jwt_secret) {
        (TokenAlgorithm::HS256, None) => {
            let line = a.algorithm.as_ref().map_or(0, |s| s.referenced.line());
            return Err(cx.err_at(
                line,
                "auth.jwt_secret",
                "HS256 needs a secret of at least 32 bytes: jwt_secret: ${GATEWAY_JWT_SECRET} or jwt_secret_file",
            ));
        }
        (TokenAlgorithm::HS256, Some((at, bytes))) if bytes.len() < 32 => {
            return Err(cx.err(
                at,
                "auth.jwt_secret",
                format!(
                    "the secret is {} bytes; HS256 needs at least 32",
                    bytes.len()
                ),
            ));
        }
        (TokenAlgorithm::EdDSA, Some((at, _))) => {
            return Err(cx.err(
                at,
                "auth.jwt_secret",
                "only used with algorithm: HS256 (EdDSA keys are generated and kept in the store)",
            ));
        }
        (_, s) => s.map(|(_, bytes)| Secret::new(bytes)),
    })
}

/// `auth.password`: the password rules and the Argon2id cost, and how much CPU hashing may take.
fn password(cx: &Ctx, p: &RawPassword) -> Result<PasswordSettings, ConfigError> {
    // Half the cores by default: a login flood then leaves the other half to proxied traffic.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let hashing_default = (cores / 2).max(1);
    let parallelism = cx.number(&p.parallelism, "auth.password.parallelism", 1, (1, 16))?;
    Ok(PasswordSettings {
        min_length: cx.number(&p.min_length, "auth.password.min_length", 8, (8, 64))?,
        max_bytes: cx.number(&p.max_bytes, "auth.password.max_bytes", 256, (64, 4096))?,
        memory_kib: cx.number(
            &p.memory_kib,
            "auth.password.memory_kib",
            19_456,
            (8 * parallelism, 4 * 1024 * 1024),
        )?,
        iterations: cx.number(&p.iterations, "auth.password.iterations", 2, (1, 100))?,
        parallelism,
        max_concurrent_hashes: cx.number(
            &p.max_concurrent_hashes,
            "auth.password.max_concurrent_hashes",
            hashing_default,
            (1, 1024),
        )?,
        hashing_cpu_percent: cx.number(
            &p.hashing_cpu_percent,
            "auth.password.hashing_cpu_percent",
            DEFAULT_HASHING_CPU_PERCENT,
            (1, 100),
        )?,
    })
}

/// `auth.identity_prefix` and `auth.identity_headers`: the headers that carry the caller's
/// identity to the upstream, each with a name of its own.
fn identity_headers(cx: &Ctx, a: &RawAuth) -> Result<IdentityHeaders, ConfigError> {
    let prefix_raw = match &a.identity_prefix {
        None => "x-auth-".to_owned(),
        Some(p) => {
            let lower = p.value.trim().to_ascii_lowercase();
            if lower.len() < 3
                || !lower
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(cx.err(
                    p,
                    "auth.identity_prefix",
                    "must be a header-name prefix of at least 3 characters, like X-Auth-",
                ));
            }
            lower.replace('_', "-")
        }
    };
    let ih = &a.identity_headers;
    let pick = |v: &Option<Sp<String>>, key: &str, default: &str| match v {
        None => Ok(http::HeaderName::from_bytes(default.as_bytes())
            .unwrap_or(http::HeaderName::from_static("x-auth-user-id"))),
        Some(v) => header_name(cx, v, key),
    };
    let identity = IdentityHeaders {
        user_id: pick(
            &ih.user_id,
            "auth.identity_headers.user_id",
            "x-auth-user-id",
        )?,
        email: pick(&ih.email, "auth.identity_headers.email", "x-auth-email")?,
        name: pick(&ih.name, "auth.identity_headers.name", "x-auth-name")?,
        roles: pick(&ih.roles, "auth.identity_headers.roles", "x-auth-roles")?,
        email_verified: pick(
            &ih.email_verified,
            "auth.identity_headers.email_verified",
            "x-auth-email-verified",
        )?,
        mfa: pick(&ih.mfa, "auth.identity_headers.mfa", "x-auth-mfa")?,
        provider: pick(
            &ih.provider,
            "auth.identity_headers.provider",
            "x-auth-provider",
        )?,
        prefix: prefix_raw,
    };
    // Two values under one name would reach the upstream as one (or as two lines, depending on
    // the path): refuse the ambiguity. `_` and `-` count as the same, as upstreams often read
    // them alike.
    let spelled = |n: &http::HeaderName| n.as_str().replace('_', "-");
    let names = [
        (
            &identity.user_id,
            &ih.user_id,
            "auth.identity_headers.user_id",
        ),
        (&identity.email, &ih.email, "auth.identity_headers.email"),
        (&identity.name, &ih.name, "auth.identity_headers.name"),
        (&identity.roles, &ih.roles, "auth.identity_headers.roles"),
        (
            &identity.email_verified,
            &ih.email_verified,
            "auth.identity_headers.email_verified",
        ),
        (&identity.mfa, &ih.mfa, "auth.identity_headers.mfa"),
        (
            &identity.provider,
            &ih.provider,
            "auth.identity_headers.provider",
        ),
    ];
    for (i, (name, raw, key)) in names.iter().enumerate() {
        if let Some((other, _, other_key)) = names[..i]
            .iter()
            .find(|(n, _, _)| spelled(n) == spelled(name))
        {
            let line = raw.as_ref().map_or(0, |v| v.referenced.line());
            return Err(ConfigError::Invalid {
                file: cx.file.to_owned(),
                line,
                key: (*key).to_owned(),
                message: format!(
                    "{other} is already the header of {other_key}; each identity header needs its own name"
                ),
            });
        }
    }
    Ok(identity)
}

/// `auth.assertion`: signed identity assertions for upstreams; EdDSA only.
fn assertion(
    cx: &Ctx,
    a: &RawAuth,
    algorithm: TokenAlgorithm,
) -> Result<Option<AssertionSettings>, ConfigError> {
    Ok(match &a.assertion {
        None => None,
        Some(r) if algorithm == TokenAlgorithm::HS256 => {
            // With HS256 an upstream could only check assertions with the secret that also
            // signs access tokens, and could then mint them.
            let line = r
                .header
                .as_ref()
                .or(r.ttl.as_ref())
                .map_or(0, |v| v.referenced.line());
            return Err(ConfigError::Invalid {
                file: cx.file.to_owned(),
                line,
                key: "auth.assertion".to_owned(),
                message: "needs algorithm: EdDSA (upstreams verify assertions with the public JWKS; with HS256 they would need the token secret)".to_owned(),
            });
        }
        Some(r) => Some(AssertionSettings {
            header: match &r.header {
                None => http::HeaderName::from_static("x-auth-assertion"),
                Some(h) => header_name(cx, h, "auth.assertion.header")?,
            },
            ttl: cx.duration(
                &r.ttl,
                "auth.assertion.ttl",
                Duration::from_secs(60),
                (Duration::from_secs(5), Duration::from_secs(3600)),
            )?,
        }),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::validate::tests::load;

    #[test]
    fn identity_headers_need_distinct_names() {
        let e = load(
            "version: 1\nauth:\n  identity_headers:\n    user_id: X-User\n    email: x_user\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "test.yaml:5: auth.identity_headers.email: x-user is already the header of auth.identity_headers.user_id; each identity header needs its own name"
        );
        let c = load(
            "version: 1\nauth:\n  identity_headers:\n    user_id: X-User\n    email: X-Mail\n",
        )
        .unwrap();
        assert_eq!(c.auth.identity.email.as_str(), "x-mail");
    }

    #[test]
    fn secrets_come_from_the_environment_and_never_show() {
        let c = load("version: 1\nauth:\n  algorithm: HS256\n  jwt_secret: ${JWT}\n").unwrap();
        let secret = c.auth.jwt_secret.as_ref().unwrap();
        assert_eq!(secret.expose().len(), 40);
        assert!(!format!("{c:?}").contains(&"x".repeat(40)));
    }
}
