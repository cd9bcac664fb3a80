//! Second stage of config loading: raw YAML values -> checked [`Config`].
//!
//! Each check reports the key path and the line it found the value on, and says what would be
//! accepted instead. This module holds the entry point ([`validate`], which checks the sections
//! in a fixed order, so the first error reported does not depend on how the code is split), the
//! error context [`Ctx`] and the helpers several sections share; each section has its own file.

mod auth;
mod cors;
mod email;
mod limits;
mod listen;
mod rate_limits;
mod routes;
mod sso;
mod store;
mod upstream;

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::overrides::{Merged, Origin};
use super::raw::{RawConfig, Sp};
use super::units::{self, IpNet};
use super::{Config, ConfigError, Health, LogFormat, LogSettings};

/// Error context: the file name, so each message can say where.
struct Ctx<'a> {
    file: &'a str,
    base_dir: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// With environment overrides, the text read was merged: where each of its lines came from.
    merged: Option<&'a Merged>,
}

impl Ctx<'_> {
    fn err<T>(&self, at: &Sp<T>, key: &str, message: impl Into<String>) -> ConfigError {
        self.err_at(at.referenced.line(), key, message)
    }

    /// An error about the value on `line` of the text read: the file's line, or the variable
    /// it came from.
    fn err_at(&self, line: u64, key: &str, message: impl Into<String>) -> ConfigError {
        let origin = match self.merged {
            None => Origin::File(line),
            Some(_) if line == 0 => Origin::File(0),
            Some(m) => m.origin(line),
        };
        match origin {
            Origin::File(line) => ConfigError::Invalid {
                file: self.file.to_owned(),
                line,
                key: key.to_owned(),
                message: message.into(),
            },
            Origin::Env(var) => ConfigError::FromEnv {
                var,
                key: key.to_owned(),
                message: message.into(),
            },
        }
    }

    fn path(&self, text: &str) -> PathBuf {
        let p = PathBuf::from(text);
        if p.is_absolute() {
            p
        } else {
            self.base_dir.join(p)
        }
    }

    fn duration(
        &self,
        value: &Option<Sp<String>>,
        key: &str,
        default: Duration,
        range: (Duration, Duration),
    ) -> Result<Duration, ConfigError> {
        let Some(v) = value else { return Ok(default) };
        let d = units::parse_duration(&v.value).map_err(|m| self.err(v, key, m))?;
        if d < range.0 || d > range.1 {
            return Err(self.err(
                v,
                key,
                format!(
                    "{} is out of range ({} to {})",
                    v.value,
                    humantime::format_duration(range.0),
                    humantime::format_duration(range.1)
                ),
            ));
        }
        Ok(d)
    }

    fn size(
        &self,
        value: &Option<Sp<units::SizeText>>,
        key: &str,
        default: u64,
        range: (u64, u64),
    ) -> Result<u64, ConfigError> {
        let Some(v) = value else { return Ok(default) };
        let n = v.value.bytes().map_err(|m| self.err(v, key, m))?;
        if n < range.0 || n > range.1 {
            return Err(self.err(
                v,
                key,
                format!("{n} bytes is out of range ({} to {})", range.0, range.1),
            ));
        }
        Ok(n)
    }

    fn number<T: Copy + PartialOrd + std::fmt::Display>(
        &self,
        value: &Option<Sp<T>>,
        key: &str,
        default: T,
        range: (T, T),
    ) -> Result<T, ConfigError> {
        let Some(v) = value else { return Ok(default) };
        if v.value < range.0 || v.value > range.1 {
            return Err(self.err(
                v,
                key,
                format!("{} is out of range ({} to {})", v.value, range.0, range.1),
            ));
        }
        Ok(v.value)
    }

    /// A secret value: `${NAME}` reads the environment variable NAME; anything else is taken
    /// literally. The value itself never appears in an error.
    fn secret(&self, v: &Sp<String>, key: &str) -> Result<String, ConfigError> {
        let text = v.value.trim();
        if let Some(name) = text.strip_prefix("${").and_then(|t| t.strip_suffix('}')) {
            return match (self.env)(name) {
                Some(value) if !value.is_empty() => Ok(value),
                _ => Err(self.err(
                    v,
                    key,
                    format!("environment variable {name} is not set or empty"),
                )),
            };
        }
        Ok(v.value.clone())
    }
}

pub(super) fn validate(
    raw: RawConfig,
    file: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    merged: Option<&Merged>,
    env_overrides: Vec<String>,
) -> Result<Config, ConfigError> {
    let cx = Ctx {
        file,
        base_dir,
        env,
        merged,
    };
    if raw.version.value != 1 {
        return Err(cx.err(
            &raw.version,
            "version",
            format!(
                "unsupported version {} (this gateway reads version 1)",
                raw.version.value
            ),
        ));
    }

    let listen = listen::validate_listen(&cx, &raw)?;
    let tls = listen::validate_tls(&cx, &raw)?;

    let mut trusted_proxies = Vec::new();
    for (i, p) in raw.trusted_proxies.iter().enumerate() {
        let net: IpNet = p
            .value
            .parse()
            .map_err(|m: String| cx.err(p, &format!("trusted_proxies[{i}]"), m))?;
        trusted_proxies.push(net);
    }

    let limits = limits::validate_limits(&cx, &raw.limits)?;
    let upstream = upstream::validate_upstream(&cx, &raw.upstream)?;

    let shutdown_grace = cx.duration(
        &raw.shutdown_grace,
        "shutdown_grace",
        Duration::from_secs(10),
        (Duration::ZERO, Duration::from_secs(3600)),
    )?;

    // Long enough for a load balancer to see /readyz fail (a few health-check intervals); ten
    // minutes and more would be a mistake, not a policy.
    let shutdown_delay = cx.duration(
        &raw.shutdown_delay,
        "shutdown_delay",
        Duration::ZERO,
        (Duration::ZERO, Duration::from_secs(600)),
    )?;

    let health = Health {
        live: endpoint_path(&cx, &raw.health.live, "health.live", "/healthz")?,
        ready: endpoint_path(&cx, &raw.health.ready, "health.ready", "/readyz")?,
    };

    let log = LogSettings {
        format: match raw.log.format.as_ref() {
            None => LogFormat::Human,
            Some(f) => match f.value.as_str() {
                "human" => LogFormat::Human,
                "json" => LogFormat::Json,
                other => {
                    return Err(cx.err(
                        f,
                        "log.format",
                        format!("unknown format {other:?} (use human or json)"),
                    ));
                }
            },
        },
        level: match &raw.log.level {
            None => "info".to_owned(),
            Some(level) => {
                // A typo here would silently drop log lines (audit events among them).
                let plain_level = ["off", "error", "warn", "info", "debug", "trace"]
                    .contains(&level.trim().to_ascii_lowercase().as_str());
                // A bare word that is not a level parses as a target name: almost surely a typo.
                let bare = !level.contains(['=', ',', '[']);
                if (bare && !plain_level)
                    || tracing_subscriber::EnvFilter::builder()
                        .parse(level)
                        .is_err()
                {
                    return Err(ConfigError::Invalid {
                        file: cx.file.to_owned(),
                        line: raw.log.format.as_ref().map_or(0, |f| f.referenced.line()),
                        key: "log.level".to_owned(),
                        message: format!(
                            "invalid level or filter {level:?} (use error, warn, info, debug, trace, or a filter like info,audit=warn)"
                        ),
                    });
                }
                level.clone()
            }
        },
    };

    let store = store::validate_store(&cx, &raw.store)?;
    let store_encryption_key = store::validate_store_key(&cx, &raw.store)?;

    let auth = auth::validate_auth(&cx, &raw)?;
    let cors = cors::validate_cors(&cx, &raw)?;
    let rate_limits = rate_limits::validate_rate_limits(&cx, &raw)?;

    let mut routes = Vec::with_capacity(raw.routes.len());
    for (i, r) in raw.routes.iter().enumerate() {
        routes.push(routes::validate_route(
            &cx,
            i,
            r,
            auth.require_verified_email,
            &auth.mfa.required_for_roles,
        )?);
    }
    let email = match &raw.email {
        Some(e) => Some(email::validate_email(&cx, e)?),
        None => None,
    };
    let mut auth = auth;
    auth.webauthn = auth::webauthn(
        &cx,
        &raw.auth,
        email.as_ref().map(|e| e.public_url.as_str()),
        &auth.mfa.issuer,
    )?;
    let sso = sso::validate_sso(&cx, &raw, email.as_ref().map(|e| e.public_url.as_str()))?;
    if email.is_none() {
        // Without mail nobody could verify an address: such a route would let no one in.
        let unverifiable = "needs the email section: without it no address can be verified";
        if let Some(v) = raw.auth.require_verified_email.as_ref().filter(|v| v.value) {
            return Err(cx.err(v, "auth.require_verified_email", unverifiable));
        }
        for (i, r) in raw.routes.iter().enumerate() {
            if let Some(v) = r.require_verified_email.as_ref().filter(|v| v.value) {
                return Err(cx.err(
                    v,
                    &format!("routes[{i}].require_verified_email"),
                    unverifiable,
                ));
            }
        }
    }

    Ok(Config {
        base_dir: base_dir.to_owned(),
        listen,
        tls,
        trusted_proxies,
        limits,
        upstream,
        shutdown_grace,
        shutdown_delay,
        health,
        log,
        store,
        store_encryption_key,
        auth,
        cors,
        rate_limits,
        routes,
        email,
        sso,
        env_overrides,
    })
}

/// A header name the gateway sets: valid, and not one that describes the connection.
fn header_name(cx: &Ctx, v: &Sp<String>, key: &str) -> Result<http::HeaderName, ConfigError> {
    let name = http::HeaderName::from_bytes(v.value.trim().as_bytes())
        .map_err(|_| cx.err(v, key, format!("invalid header name {:?}", v.value)))?;
    // The hop-by-hop names (and Proxy-*) come from the codec, so config and the wire agree.
    let owned = ["host", "content-length", "authorization", "cookie"];
    if crate::http1::connection::is_hop_by_hop_name(&name) || owned.contains(&name.as_str()) {
        return Err(cx.err(v, key, format!("{:?} cannot be used here", v.value)));
    }
    Ok(name)
}

fn endpoint_path(
    cx: &Ctx,
    v: &Option<Sp<String>>,
    key: &str,
    default: &str,
) -> Result<String, ConfigError> {
    let Some(v) = v else {
        return Ok(default.to_owned());
    };
    let p = v.value.trim_end_matches('/');
    if !v.value.starts_with('/') || p.is_empty() || !is_clean_path(p) {
        return Err(cx.err(
            v,
            key,
            format!(
                "invalid path {:?} (must start with / and contain no '..', '//', '%' or spaces)",
                v.value
            ),
        ));
    }
    Ok(p.to_owned())
}

/// A path written in the config: plain segments only, so it matches exactly what the normaliser
/// produces for requests.
fn is_clean_path(p: &str) -> bool {
    p.starts_with('/')
        && !p.contains("//")
        && !p.split('/').any(|s| s == "." || s == "..")
        && p.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'%' && b != b'?' && b != b'#' && b != b'\\')
}

/// A secret's bytes and the config value that named it (for messages).
type SecretSource<'a> = (&'a Sp<String>, Vec<u8>);

/// A secret given inline (`key: ${VAR}`) or as a file (`key_file: path`), at most one of the
/// two: its bytes, with the value that named it (for messages). A file must be private (see
/// [`crate::private_file`]); a trailing newline from `echo secret > file` is not part of it.
fn secret_bytes<'a>(
    cx: &Ctx,
    inline: (&'a Option<Sp<String>>, &str),
    file: (&'a Option<Sp<String>>, &str),
) -> Result<Option<SecretSource<'a>>, ConfigError> {
    match (inline.0, file.0) {
        (Some(s), Some(_)) => Err(cx.err(
            s,
            inline.1,
            format!("set {} or {}, not both", inline.1, file.1),
        )),
        (Some(s), None) => Ok(Some((s, cx.secret(s, inline.1)?.into_bytes()))),
        (None, Some(f)) => {
            let path = cx.path(&cx.secret(f, file.1)?);
            crate::private_file::check(&path, "key file", crate::private_file::Rule::KeyFile)
                .map_err(|e| cx.err(f, file.1, e.to_string()))?;
            let bytes = std::fs::read(&path)
                .map_err(|e| cx.err(f, file.1, format!("cannot read {}: {e}", path.display())))?;
            Ok(Some((f, bytes.trim_ascii_end().to_vec())))
        }
        (None, None) => Ok(None),
    }
}

/// Whether `name` is an acceptable role name: 1 to 64 letters, digits, `-`, `_`, `.` or `:`.
/// The admin CLI checks roles with this too, so the config and the store agree.
pub fn is_role_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

fn role_name(cx: &Ctx, r: &Sp<String>, key: &str) -> Result<String, ConfigError> {
    if !is_role_name(&r.value) {
        return Err(cx.err(
            r,
            key,
            format!(
                "invalid role {:?} (letters, digits, - _ . : only, at most 64)",
                r.value
            ),
        ));
    }
    Ok(r.value.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads `yaml` as `test.yaml` in `/base`, with `JWT` set to 40 bytes.
    pub(super) fn load(yaml: &str) -> Result<Config, ConfigError> {
        crate::config::from_str(yaml, "test.yaml", Path::new("/base"), &|name| {
            (name == "JWT").then(|| "x".repeat(40))
        })
    }

    #[test]
    fn minimal_config_has_defaults() {
        let c = load("version: 1\n").unwrap();
        assert_eq!(c.listen.http, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(c.listen.https, Some("127.0.0.1:8443".parse().unwrap()));
        assert_eq!(c.auth.prefix, "/api/auth");
        assert_eq!(c.auth.access_ttl, Duration::from_secs(900));
        assert!(c.tls.self_signed);
        assert_eq!(c.tls.cert, PathBuf::from("/base/certs/localhost.pem"));
        assert!(c.routes.is_empty());
    }

    #[test]
    fn unknown_key_is_named_with_its_path_and_line() {
        let e = load("version: 1\nroutes:\n  - path: /a\n    upstream: builtin:whoami\n  - path: /b\n    upstreem: x\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("routes[1].upstreem"), "{e}");
        assert!(e.contains("line 6"), "{e}");
    }

    #[test]
    fn connection_headers_cannot_be_set_by_config() {
        for name in [
            "Connection",
            "keep-alive",
            "TE",
            "Transfer-Encoding",
            "Proxy-Foo",
            "cookie",
        ] {
            let yaml = format!(
                "version: 1\ncors:\n  allowed_origins: [\"https://a.example\"]\n  allowed_headers: [\"{name}\"]\n"
            );
            let e = load(&yaml).unwrap_err().to_string();
            assert!(
                e.contains("cors.allowed_headers[0]") && e.contains("cannot be used here"),
                "{name}: {e}"
            );
        }
        assert!(load("version: 1\ncors:\n  allowed_origins: [\"https://a.example\"]\n  allowed_headers: [\"x-trace\"]\n").is_ok());
    }

    #[test]
    fn bad_values_are_rejected() {
        for (yaml, key) in [
            ("version: 2\n", "version"),
            ("version: 1\nlisten:\n  http: localhost\n", "listen.http"),
            (
                "version: 1\nlisten:\n  http: null\n  https: null\n",
                "listen",
            ),
            ("version: 1\nauth:\n  access_ttl: 2d\n", "auth.access_ttl"),
            (
                "version: 1\nauth:\n  refresh_ttl: 31d\n",
                "auth.refresh_ttl",
            ),
            (
                "version: 1\nauth:\n  refresh_grace: 11s\n",
                "auth.refresh_grace",
            ),
            ("version: 1\nauth:\n  algorithm: none\n", "auth.algorithm"),
            ("version: 1\nauth:\n  algorithm: HS256\n", "auth.jwt_secret"),
            (
                "version: 1\nauth:\n  algorithm: HS256\n  jwt_secret: short\n",
                "auth.jwt_secret",
            ),
            (
                "version: 1\nauth:\n  algorithm: HS256\n  jwt_secret: ${MISSING}\n",
                "auth.jwt_secret",
            ),
            (
                "version: 1\nroutes:\n  - path: admin\n    upstream: builtin:whoami\n",
                "routes[0].path",
            ),
            (
                "version: 1\nroutes:\n  - path: /a/../b\n    upstream: builtin:whoami\n",
                "routes[0].path",
            ),
            (
                "version: 1\nroutes:\n  - path: /a\n    upstream: builtin:nope\n",
                "routes[0].upstream",
            ),
            (
                "version: 1\nroutes:\n  - path: /a\n    upstream: 127.0.0.1:3000\n",
                "routes[0].upstream",
            ),
            (
                "version: 1\nroutes:\n  - path: /a\n    upstream: builtin:whoami\n    auth: maybe\n",
                "routes[0].auth",
            ),
            (
                "version: 1\nroutes:\n  - path: /a\n    upstream: builtin:whoami\n    auth: public\n    roles: [x]\n",
                "routes[0].roles",
            ),
            (
                "version: 1\nroutes:\n  - path: /a\n    upstream: builtin:whoami\n    host: 'a b'\n",
                "routes[0].host",
            ),
            (
                "version: 1\nroutes:\n  - path: /a\n    upstream: builtin:whoami\n    methods: ['GET\\r\\n']\n",
                "routes[0].methods[0]",
            ),
            (
                "version: 1\ntrusted_proxies: [10.0.0.0/99]\n",
                "trusted_proxies[0]",
            ),
            (
                "version: 1\nlimits:\n  max_body_bytes: 10 parsecs\n",
                "limits.max_body_bytes",
            ),
        ] {
            let e = load(yaml).expect_err(yaml).to_string();
            assert!(e.contains(&format!(": {key}: ")), "{yaml:?} gave {e}");
        }
    }
}
