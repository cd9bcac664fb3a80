//! Second stage of config loading: raw YAML values -> checked [`Config`].
//!
//! Each check reports the key path and the line it found the value on, and says what would be
//! accepted instead.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;

use super::overrides::{Merged, Origin};
use super::raw::{RawConfig, RawRoute, RawStore, Sp};
use super::units::{self, IpNet};
use super::*;
use crate::secret::{Secret, SecretString};

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

    let listen = validate_listen(&cx, &raw)?;
    let tls = validate_tls(&cx, &raw)?;

    let mut trusted_proxies = Vec::new();
    for (i, p) in raw.trusted_proxies.iter().enumerate() {
        let net: IpNet = p
            .value
            .parse()
            .map_err(|m: String| cx.err(p, &format!("trusted_proxies[{i}]"), m))?;
        trusted_proxies.push(net);
    }

    let l = &raw.limits;
    let limits = Limits {
        max_header_bytes: usize::try_from(cx.size(
            &l.max_header_bytes,
            "limits.max_header_bytes",
            64 * 1024,
            (8 * 1024, 1024 * 1024),
        )?)
        .unwrap_or(64 * 1024),
        max_headers: cx.number(&l.max_headers, "limits.max_headers", 100, (8, 10_000))?,
        max_body_bytes: cx.size(
            &l.max_body_bytes,
            "limits.max_body_bytes",
            64 * 1024 * 1024,
            (0, u64::MAX),
        )?,
        auth_body_bytes: usize::try_from(cx.size(
            &l.auth_body_bytes,
            "limits.auth_body_bytes",
            16 * 1024,
            (1024, 1024 * 1024),
        )?)
        .unwrap_or(16 * 1024),
        header_read_timeout: cx.duration(
            &l.header_read_timeout,
            "limits.header_read_timeout",
            Duration::from_secs(10),
            (Duration::from_millis(100), Duration::from_secs(300)),
        )?,
        idle_timeout: cx.duration(
            &l.idle_timeout,
            "limits.idle_timeout",
            Duration::from_secs(60),
            (Duration::from_secs(1), Duration::from_secs(3600)),
        )?,
        max_connections: cx.number(
            &l.max_connections,
            "limits.max_connections",
            10_000,
            (1, 1_000_000),
        )?,
        h2_max_concurrent_streams: cx.number(
            &l.h2_max_concurrent_streams,
            "limits.h2_max_concurrent_streams",
            128,
            (1, 10_000),
        )?,
        body_timeout: cx.duration(
            &l.body_timeout,
            "limits.body_timeout",
            Duration::from_secs(30),
            (Duration::from_millis(100), Duration::from_secs(3600)),
        )?,
        max_connections_per_ip: cx.number(
            &l.max_connections_per_ip,
            "limits.max_connections_per_ip",
            256,
            (1, 1_000_000),
        )?,
    };

    let u = &raw.upstream;
    let upstream = UpstreamSettings {
        connect_timeout: cx.duration(
            &u.connect_timeout,
            "upstream.connect_timeout",
            Duration::from_secs(5),
            (Duration::from_millis(10), Duration::from_secs(300)),
        )?,
        response_timeout: cx.duration(
            &u.response_timeout,
            "upstream.response_timeout",
            Duration::from_secs(60),
            (Duration::from_millis(10), Duration::from_secs(86_400)),
        )?,
        pool_idle_timeout: cx.duration(
            &u.pool_idle_timeout,
            "upstream.pool_idle_timeout",
            Duration::from_secs(90),
            (Duration::from_secs(1), Duration::from_secs(3600)),
        )?,
        pool_max_idle_per_host: u.pool_max_idle_per_host.unwrap_or(256),
        strip_request_headers: strip_request_headers(&cx, &u.strip_request_headers)?,
        builtin_client: u.builtin_client.unwrap_or(true),
    };

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

    let store = validate_store(&cx, &raw.store)?;
    let store_encryption_key = validate_store_key(&cx, &raw.store)?;

    let auth = validate_auth(&cx, &raw)?;
    let cors = validate_cors(&cx, &raw)?;
    let rate_limits = validate_rate_limits(&cx, &raw)?;

    let mut routes = Vec::with_capacity(raw.routes.len());
    for (i, r) in raw.routes.iter().enumerate() {
        routes.push(validate_route(&cx, i, r)?);
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
        env_overrides,
    })
}

fn validate_rate_limits(cx: &Ctx, raw: &RawConfig) -> Result<RateLimitSettings, ConfigError> {
    let r = &raw.rate_limits;
    let rate = |v: &Option<Sp<String>>, key: &str, default: Rate| match v {
        None => Ok(Some(default)),
        Some(v) => units::parse_rate(&v.value)
            .map(|o| o.map(|(count, per)| Rate { count, per }))
            .map_err(|m| cx.err(v, key, m)),
    };
    let per_min = |count| Rate {
        count,
        per: Duration::from_secs(60),
    };
    let g = &raw.regulation;
    Ok(RateLimitSettings {
        login_per_ip: rate(&r.login_per_ip, "rate_limits.login_per_ip", per_min(20))?,
        login_per_account: rate(
            &r.login_per_account,
            "rate_limits.login_per_account",
            per_min(10),
        )?,
        signup_per_ip: rate(&r.signup_per_ip, "rate_limits.signup_per_ip", per_min(10))?,
        refresh_per_ip: rate(
            &r.refresh_per_ip,
            "rate_limits.refresh_per_ip",
            per_min(120),
        )?,
        max_retries: cx.number(&g.max_retries, "regulation.max_retries", 5, (0, 1000))?,
        find_time: cx.duration(
            &g.find_time,
            "regulation.find_time",
            Duration::from_secs(120),
            (Duration::from_secs(1), Duration::from_secs(86_400)),
        )?,
        ban_time: cx.duration(
            &g.ban_time,
            "regulation.ban_time",
            Duration::from_secs(300),
            (Duration::from_secs(1), Duration::from_secs(86_400)),
        )?,
    })
}

fn validate_cors(cx: &Ctx, raw: &RawConfig) -> Result<CorsSettings, ConfigError> {
    let c = &raw.cors;
    let mut allowed_origins = Vec::new();
    for (i, o) in c.allowed_origins.iter().enumerate() {
        let key = format!("cors.allowed_origins[{i}]");
        let v = o.value.trim_end_matches('/');
        if v == "*" {
            if c.allow_credentials {
                return Err(cx.err(
                    o,
                    &key,
                    "\"*\" cannot be combined with allow_credentials: true; list the origins",
                ));
            }
            allowed_origins.push("*".to_owned());
            continue;
        }
        let uri: http::Uri = v
            .parse()
            .map_err(|_| cx.err(o, &key, format!("invalid origin {:?}", o.value)))?;
        let ok = matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.authority().is_some()
            && uri
                .path_and_query()
                .is_none_or(|pq| pq.as_str() == "/" || pq.as_str().is_empty());
        if !ok {
            return Err(cx.err(
                o,
                &key,
                format!(
                    "invalid origin {:?}; write it like https://app.example.com",
                    o.value
                ),
            ));
        }
        allowed_origins.push(v.to_ascii_lowercase());
    }
    let mut allowed_headers = Vec::new();
    for (i, h) in c.allowed_headers.iter().enumerate() {
        let name = header_name(cx, h, &format!("cors.allowed_headers[{i}]"))?;
        allowed_headers.push(name.as_str().to_owned());
    }
    Ok(CorsSettings {
        allowed_origins,
        allow_credentials: c.allow_credentials,
        allowed_headers,
        max_age: cx.duration(
            &c.max_age,
            "cors.max_age",
            Duration::from_secs(600),
            (Duration::ZERO, Duration::from_secs(86_400)),
        )?,
    })
}

/// Headers `upstream.strip_request_headers` removes unless set: other client-address headers
/// (upstreams take the client's address from them) and URL-rewrite headers (some frameworks
/// route on them, past the path the gateway authorised).
pub const STRIP_REQUEST_HEADERS: [&str; 5] = [
    "true-client-ip",
    "x-client-ip",
    "cf-connecting-ip",
    "x-original-url",
    "x-rewrite-url",
];

/// `upstream.strip_request_headers`: valid header names, as lowercase `-` spellings. Headers
/// the gateway already owns (the forwarding headers, `X-Real-IP`, `X-Request-Id`) or that frame
/// the message cannot be listed.
fn strip_request_headers(
    cx: &Ctx,
    list: &Option<Vec<Sp<String>>>,
) -> Result<Vec<String>, ConfigError> {
    let Some(list) = list else {
        return Ok(STRIP_REQUEST_HEADERS.map(str::to_owned).to_vec());
    };
    let owned = [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "forwarded",
        "x-request-id",
        "x-real-ip",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
    ];
    let mut out = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let key = format!("upstream.strip_request_headers[{i}]");
        let name = http::HeaderName::from_bytes(v.value.trim().as_bytes())
            .map_err(|_| cx.err(v, &key, format!("invalid header name {:?}", v.value)))?;
        let name = name.as_str().replace('_', "-");
        if owned.contains(&name.as_str()) {
            return Err(cx.err(
                v,
                &key,
                format!("{name} is set or checked by the gateway itself and cannot be listed here"),
            ));
        }
        out.push(name);
    }
    Ok(out)
}

/// A header name the gateway sets: valid, and not one that describes the connection.
fn header_name(cx: &Ctx, v: &Sp<String>, key: &str) -> Result<http::HeaderName, ConfigError> {
    let name = http::HeaderName::from_bytes(v.value.trim().as_bytes())
        .map_err(|_| cx.err(v, key, format!("invalid header name {:?}", v.value)))?;
    let reserved = [
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "authorization",
        "cookie",
    ];
    if reserved.contains(&name.as_str()) || name.as_str().starts_with("proxy-") {
        return Err(cx.err(v, key, format!("{:?} cannot be used here", v.value)));
    }
    Ok(name)
}

fn validate_listen(cx: &Ctx, raw: &RawConfig) -> Result<Listen, ConfigError> {
    let addr = |v: &Option<Sp<String>>, key: &str| -> Result<Option<SocketAddr>, ConfigError> {
        match v {
            None => Ok(None),
            Some(s) => s.value.parse::<SocketAddr>().map(Some).map_err(|_| {
                cx.err(
                    s,
                    key,
                    format!(
                        "invalid address {:?}; write it like 127.0.0.1:8080 or [::]:8443",
                        s.value
                    ),
                )
            }),
        }
    };
    let http = addr(&raw.listen.http, "listen.http")?;
    let https = addr(&raw.listen.https, "listen.https")?;
    let admin = addr(&raw.admin.listen, "admin.listen")?;
    if http.is_none() && https.is_none() {
        return Err(cx.err(
            &raw.version,
            "listen",
            "no listener: set listen.http, listen.https or both",
        ));
    }
    if raw.listen.redirect_http_to_https && (https.is_none() || http.is_none()) {
        return Err(cx.err(
            &raw.version,
            "listen.redirect_http_to_https",
            "needs both listen.http and listen.https",
        ));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = match &raw.listen.workers {
        None => cores,
        Some(w) => match &w.value {
            units::CountText::Text(t) if t == "auto" => cores,
            units::CountText::Count(n) if (1..=256).contains(n) => {
                usize::try_from(*n).unwrap_or(cores)
            }
            other => {
                return Err(cx.err(
                    w,
                    "listen.workers",
                    format!(
                        "{} is not a worker count (use auto, or 1 to 256)",
                        match other {
                            units::CountText::Count(n) => n.to_string(),
                            units::CountText::Text(t) => format!("{t:?}"),
                        }
                    ),
                ));
            }
        },
    };
    Ok(Listen {
        http,
        https,
        admin,
        redirect_http_to_https: raw.listen.redirect_http_to_https,
        workers,
        fast_path: raw.listen.fast_path,
    })
}

fn validate_tls(cx: &Ctx, raw: &RawConfig) -> Result<TlsSettings, ConfigError> {
    let t = &raw.tls;
    let explicit = t.cert.is_some() || t.key.is_some();
    if t.cert.is_some() != t.key.is_some() {
        let at = t.cert.as_ref().or(t.key.as_ref());
        if let Some(at) = at {
            return Err(cx.err(at, "tls", "set both tls.cert and tls.key, or neither"));
        }
    }
    let self_signed = t.self_signed.unwrap_or(!explicit);
    let default_hsts = if self_signed {
        // HSTS on a self-signed localhost certificate would pin every localhost port to HTTPS in
        // the developer's browser; only send it for real certificates unless asked.
        None
    } else {
        Some(Duration::from_secs(365 * 86_400))
    };
    let hsts_max_age = match &t.hsts_max_age {
        None => default_hsts,
        Some(v) => {
            let d =
                units::parse_duration(&v.value).map_err(|m| cx.err(v, "tls.hsts_max_age", m))?;
            (!d.is_zero()).then_some(d)
        }
    };
    Ok(TlsSettings {
        cert: cx.path(t.cert.as_ref().map_or("certs/localhost.pem", |c| &c.value)),
        key: cx.path(
            t.key
                .as_ref()
                .map_or("certs/localhost-key.pem", |k| &k.value),
        ),
        self_signed,
        hsts_max_age,
    })
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

/// `store.encryption_key` / `store.encryption_key_file`: the key material that encrypts the
/// store's secrets, at least [`MIN_ENCRYPTION_KEY_BYTES`] bytes.
fn validate_store_key(cx: &Ctx, raw: &RawStore) -> Result<Option<Secret<Vec<u8>>>, ConfigError> {
    let Some((at, bytes)) = secret_bytes(
        cx,
        (&raw.encryption_key, "store.encryption_key"),
        (&raw.encryption_key_file, "store.encryption_key_file"),
    )?
    else {
        return Ok(None);
    };
    let min = MIN_ENCRYPTION_KEY_BYTES;
    if bytes.len() < min {
        return Err(cx.err(
            at,
            "store.encryption_key",
            format!(
                "the key is {} bytes; use at least {min} random bytes (e.g. `openssl rand \
                 -base64 48`)",
                bytes.len()
            ),
        ));
    }
    Ok(Some(Secret::new(bytes)))
}

fn validate_store(cx: &Ctx, raw: &RawStore) -> Result<StoreSettings, ConfigError> {
    match (&raw.redb, &raw.postgres) {
        (Some(_), Some(pg)) => Err(cx.err(
            &pg.url,
            "store",
            "choose one store: redb or postgres, not both",
        )),
        (Some(r), None) => Ok(StoreSettings::Redb {
            path: cx.path(&r.path.value),
        }),
        (None, None) => Ok(StoreSettings::Redb {
            path: cx.path("data/gateway.redb"),
        }),
        (None, Some(pg)) => {
            let url = cx.secret(&pg.url, "store.postgres.url")?;
            if !is_postgres_url(&url) {
                return Err(cx.err(
                    &pg.url,
                    "store.postgres.url",
                    "must start with postgres:// (like postgres://user:password@host:5432/db)",
                ));
            }
            if let Err(e) = url.parse::<tokio_postgres::Config>() {
                // The parser's message can quote the URL, password included: say only what kind
                // of problem it is.
                let kind = if e.to_string().contains("unknown") {
                    "unknown connection option"
                } else {
                    "not a valid connection URL"
                };
                return Err(cx.err(&pg.url, "store.postgres.url", kind));
            }
            let when_stale = match pg.when_stale.as_ref().map(|v| v.value.as_str()) {
                None | Some("refuse") => WhenStale::Refuse,
                Some("accept") => WhenStale::Accept,
                Some(other) => {
                    return Err(cx.err(
                        pg.when_stale.as_ref().unwrap_or(&pg.url),
                        "store.postgres.when_stale",
                        format!("unknown value {other:?} (use refuse or accept)"),
                    ));
                }
            };
            let secs = Duration::from_secs;
            Ok(StoreSettings::Postgres(PostgresSettings {
                url: SecretString::new(url),
                pool_size: cx.number(&pg.pool_size, "store.postgres.pool_size", 16, (1, 1000))?,
                connect_timeout: cx.duration(
                    &pg.connect_timeout,
                    "store.postgres.connect_timeout",
                    secs(5),
                    (Duration::from_millis(100), secs(120)),
                )?,
                query_timeout: cx.duration(
                    &pg.query_timeout,
                    "store.postgres.query_timeout",
                    secs(5),
                    (Duration::from_millis(100), secs(300)),
                )?,
                stale_after: cx.duration(
                    &pg.stale_after,
                    "store.postgres.stale_after",
                    secs(30),
                    (secs(2), secs(86_400)),
                )?,
                when_stale,
                ca_file: pg.ca_file.as_ref().map(|f| cx.path(&f.value)),
            }))
        }
    }
}

fn validate_auth(cx: &Ctx, raw: &RawConfig) -> Result<AuthSettings, ConfigError> {
    let a = &raw.auth;
    let prefix = endpoint_path(cx, &a.prefix, "auth.prefix", "/api/auth")?;
    let signup = match &a.signup {
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
    };
    let default_roles = match &a.default_roles {
        None => vec!["user".to_owned()],
        Some(list) => {
            let mut out = Vec::new();
            for (i, r) in list.iter().enumerate() {
                out.push(role_name(cx, r, &format!("auth.default_roles[{i}]"))?);
            }
            out
        }
    };
    let text = |v: &Option<Sp<String>>, key: &str, default: &str| -> Result<String, ConfigError> {
        match v {
            None => Ok(default.to_owned()),
            Some(s) if s.value.trim().is_empty() || s.value.chars().any(char::is_control) => {
                Err(cx.err(
                    s,
                    key,
                    "must be a non-empty string without control characters",
                ))
            }
            Some(s) => Ok(s.value.clone()),
        }
    };
    let issuer = text(&a.issuer, "auth.issuer", "gateway")?;
    let audience = text(&a.audience, "auth.audience", "gateway")?;
    let algorithm = match &a.algorithm {
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
    };

    let jwt_secret = secret_bytes(
        cx,
        (&a.jwt_secret, "auth.jwt_secret"),
        (&a.jwt_secret_file, "auth.jwt_secret_file"),
    )?;
    let jwt_secret = match (algorithm, jwt_secret) {
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
    };

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

    let p = &a.password;
    // Half the cores by default: a login flood then leaves the other half to proxied traffic.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let hashing_default = (cores / 2).max(1);
    let parallelism = cx.number(&p.parallelism, "auth.password.parallelism", 1, (1, 16))?;
    let password = PasswordSettings {
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
    };

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
    let assertion = match &a.assertion {
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
    };

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
        password,
        identity,
        assertion,
    })
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

fn validate_route(cx: &Ctx, i: usize, r: &RawRoute) -> Result<RouteSpec, ConfigError> {
    let key = |k: &str| format!("routes[{i}].{k}");

    let host = match &r.host {
        None => None,
        Some(h) => Some(host_pattern(&h.value).ok_or_else(|| {
            cx.err(
                h,
                &key("host"),
                format!(
                    "invalid host {:?} (write app.example.com or *.example.com, no port or scheme)",
                    h.value
                ),
            )
        })?),
    };

    let trimmed = r.path.value.trim_end_matches('/');
    let path = if trimmed.is_empty() && r.path.value.starts_with('/') {
        "/".to_owned()
    } else if is_clean_path(trimmed) && placeholders_ok(trimmed) {
        trimmed.to_owned()
    } else {
        return Err(cx.err(
            &r.path,
            &key("path"),
            format!(
                "invalid path prefix {:?} (must start with /, contain no '..', '//', '%', '?' or spaces, and at most one {{sub}} segment)",
                r.path.value
            ),
        ));
    };

    let methods = match &r.methods {
        None => None,
        Some(list) => {
            let mut out = Vec::new();
            for (j, m) in list.iter().enumerate() {
                let upper = m.value.to_ascii_uppercase();
                let method = Method::from_bytes(upper.as_bytes())
                    .ok()
                    .filter(|_| upper.bytes().all(|b| b.is_ascii_uppercase()))
                    .ok_or_else(|| {
                        cx.err(
                            m,
                            &format!("routes[{i}].methods[{j}]"),
                            format!("invalid method {:?}", m.value),
                        )
                    })?;
                out.push(method);
            }
            if out.is_empty() {
                return Err(cx.err_at(
                    r.path.referenced.line(),
                    &key("methods"),
                    "an empty list matches nothing; leave methods out to match all",
                ));
            }
            Some(out)
        }
    };

    let upstream =
        upstream_target(&r.upstream.value).map_err(|m| cx.err(&r.upstream, &key("upstream"), m))?;

    let roles = match &r.roles {
        None => Vec::new(),
        Some(list) => {
            let mut out = Vec::new();
            for (j, role) in list.iter().enumerate() {
                out.push(role_name(cx, role, &format!("routes[{i}].roles[{j}]"))?);
            }
            out
        }
    };
    let policy = match r.auth.as_ref().map(|a| (a, a.value.as_str())) {
        // Fail closed: a route that does not say is protected.
        None | Some((_, "required")) => AuthPolicy::Required { roles },
        Some((a, "public")) => {
            if !roles.is_empty() {
                return Err(cx.err(
                    a,
                    &key("roles"),
                    "roles need auth: required (a public route admits everyone)",
                ));
            }
            AuthPolicy::Public
        }
        Some((a, other)) => {
            return Err(cx.err(
                a,
                &key("auth"),
                format!("unknown policy {other:?} (use public or required)"),
            ));
        }
    };

    let on_unauthenticated = match &r.on_unauthenticated {
        None => OnUnauthenticated::Auto,
        Some(v) => match v.value.as_str() {
            "auto" => OnUnauthenticated::Auto,
            "redirect" => OnUnauthenticated::Redirect,
            "deny" => OnUnauthenticated::Deny,
            other => {
                return Err(cx.err(
                    v,
                    &key("on_unauthenticated"),
                    format!("unknown value {other:?} (use auto, redirect or deny)"),
                ));
            }
        },
    };
    let public = policy == AuthPolicy::Public;
    if public && path.contains("{sub}") {
        return Err(cx.err(
            &r.path,
            &key("path"),
            "a {sub} segment needs auth: required (it compares the segment with the caller's id)",
        ));
    }
    let mut owner_bypass_roles = Vec::new();
    if let Some(list) = &r.owner_bypass_roles {
        for (j, role) in list.iter().enumerate() {
            let k = format!("routes[{i}].owner_bypass_roles[{j}]");
            if !path.contains("{sub}") {
                return Err(cx.err(role, &k, "only meaningful on a path with a {sub} segment"));
            }
            owner_bypass_roles.push(role_name(cx, role, &k)?);
        }
    }
    let assertion_audience = match &r.assertion_audience {
        None => None,
        Some(v) if v.value.trim().is_empty() || v.value.chars().any(char::is_control) => {
            return Err(cx.err(v, &key("assertion_audience"), "must be a non-empty string"));
        }
        Some(v) => Some(v.value.clone()),
    };

    let cache = match &r.cache {
        None => CachePolicy::NoStore,
        Some(v) => match v.value.as_str() {
            "no-store" => CachePolicy::NoStore,
            "private" => CachePolicy::Private,
            "pass" => CachePolicy::Pass,
            other => {
                return Err(cx.err(
                    v,
                    &key("cache"),
                    format!("unknown value {other:?} (use no-store, private or pass)"),
                ));
            }
        },
    };

    Ok(RouteSpec {
        name: r.name.clone().unwrap_or_else(|| path.clone()),
        host,
        path,
        methods,
        upstream,
        strip_prefix: r.strip_prefix,
        policy,
        on_unauthenticated,
        forward_token: r.forward_token,
        owner_bypass_roles,
        assertion_audience,
        cors: r.cors,
        case_sensitive: r.case_sensitive,
        cache,
    })
}

/// `{sub}` may stand as a whole segment, at most once; no other braces.
fn placeholders_ok(path: &str) -> bool {
    let mut owners = 0;
    for seg in path.split('/') {
        if seg == "{sub}" {
            owners += 1;
        } else if seg.contains('{') || seg.contains('}') {
            return false;
        }
    }
    owners <= 1
}

/// `app.example.com` or `*.example.com`, lowercased; `None` if malformed.
fn host_pattern(text: &str) -> Option<HostPattern> {
    let lower = text.trim().to_ascii_lowercase();
    let (wild, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let valid_label = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
        return None;
    }
    Some(if wild {
        HostPattern::Wildcard(format!(".{name}"))
    } else {
        HostPattern::Exact(name.to_owned())
    })
}

/// `builtin:whoami` or an `http(s)://host[:port][/base]` URL.
fn upstream_target(text: &str) -> Result<UpstreamTarget, String> {
    if let Some(name) = text.strip_prefix("builtin:") {
        return match name {
            "whoami" => Ok(UpstreamTarget::Whoami),
            other => Err(format!("unknown builtin {other:?} (available: whoami)")),
        };
    }
    let uri: http::Uri = text
        .parse()
        .map_err(|_| format!("invalid URL {text:?}; write it like http://127.0.0.1:3000"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => http::uri::Scheme::HTTP,
        Some("https") => http::uri::Scheme::HTTPS,
        Some(other) => return Err(format!("unsupported scheme {other:?} (use http or https)")),
        None => {
            return Err(format!(
                "{text:?} has no scheme; write it like http://127.0.0.1:3000"
            ));
        }
    };
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("{text:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err("credentials in upstream URLs are not supported".into());
    }
    if uri.query().is_some() {
        return Err("an upstream URL cannot have a query string".into());
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    if !base_path.is_empty() && !is_clean_path(&base_path) {
        return Err(format!("invalid path in upstream URL {text:?}"));
    }
    Ok(UpstreamTarget::Http {
        scheme,
        authority,
        base_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<Config, ConfigError> {
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
    fn bad_scheme_names_key_and_line() {
        let e = load("version: 1\nroutes:\n  - path: /a\n    upstream: builtin:whoami\n  - path: /b\n    upstream: http://x\n  - path: /c\n    upstream: ftp://files\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "test.yaml:8: routes[2].upstream: unsupported scheme \"ftp\" (use http or https)"
        );
    }

    #[test]
    fn routes_are_parsed() {
        let c = load(
            "version: 1\nroutes:\n  - path: /admin/\n    host: '*.Example.com'\n    methods: [get, POST]\n    upstream: https://10.0.0.1:8443/base/\n    auth: required\n    roles: [admin]\n  - path: /\n    upstream: builtin:whoami\n    auth: public\n",
        )
        .unwrap();
        let r = &c.routes[0];
        assert_eq!(r.path, "/admin");
        assert_eq!(r.host, Some(HostPattern::Wildcard(".example.com".into())));
        assert_eq!(r.methods, Some(vec![Method::GET, Method::POST]));
        assert_eq!(r.upstream.to_string(), "https://10.0.0.1:8443/base");
        assert_eq!(
            r.policy,
            AuthPolicy::Required {
                roles: vec!["admin".into()]
            }
        );
        assert_eq!(c.routes[1].path, "/");
        assert_eq!(c.routes[1].policy, AuthPolicy::Public);
    }

    #[test]
    fn strip_request_headers_default_and_checks() {
        let c = load("version: 1\n").unwrap();
        assert_eq!(
            c.upstream.strip_request_headers,
            STRIP_REQUEST_HEADERS.map(str::to_owned)
        );
        let c = load("version: 1\nupstream:\n  strip_request_headers: [X_Custom_IP, []]\n");
        assert!(c.is_err());
        let c = load("version: 1\nupstream:\n  strip_request_headers: [X_Custom_IP]\n").unwrap();
        assert_eq!(c.upstream.strip_request_headers, ["x-custom-ip"]);
        let c = load("version: 1\nupstream:\n  strip_request_headers: []\n").unwrap();
        assert!(c.upstream.strip_request_headers.is_empty());
        let e = load("version: 1\nupstream:\n  strip_request_headers: [X-Real-IP]\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "test.yaml:3: upstream.strip_request_headers[0]: x-real-ip is set or checked by the gateway itself and cannot be listed here"
        );
        let e = load("version: 1\nupstream:\n  strip_request_headers: ['bad name']\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid header name"), "{e}");
    }

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
    fn routes_fail_closed_by_default() {
        let c = load("version: 1\nroutes:\n  - path: /\n    upstream: builtin:whoami\n").unwrap();
        assert_eq!(c.routes[0].policy, AuthPolicy::Required { roles: vec![] });
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

    #[test]
    fn secrets_come_from_the_environment_and_never_show() {
        let c = load("version: 1\nauth:\n  algorithm: HS256\n  jwt_secret: ${JWT}\n").unwrap();
        let secret = c.auth.jwt_secret.as_ref().unwrap();
        assert_eq!(secret.expose().len(), 40);
        assert!(!format!("{c:?}").contains(&"x".repeat(40)));
    }

    #[test]
    fn a_postgres_store_is_parsed_with_defaults_and_its_url_stays_hidden() {
        let c = load(
            "version: 1\nstore:\n  postgres:\n    url: postgres://gw:s3cret-pw@db:5432/app\n    stale_after: 10s\n    when_stale: accept\n    ca_file: ca.pem\n",
        )
        .unwrap();
        let StoreSettings::Postgres(pg) = &c.store else {
            panic!("expected postgres, got {:?}", c.store)
        };
        assert_eq!(pg.pool_size, 16);
        assert_eq!(pg.connect_timeout, Duration::from_secs(5));
        assert_eq!(pg.stale_after, Duration::from_secs(10));
        assert_eq!(pg.when_stale, WhenStale::Accept);
        assert_eq!(pg.ca_file.as_deref(), Some(Path::new("/base/ca.pem")));
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "the password leaked into Debug"
        );
        assert_eq!(c.store.describe(), "PostgreSQL database app on db:5432");
    }

    #[test]
    fn postgres_store_mistakes_are_named_without_quoting_the_url() {
        for (yaml, key, says) in [
            (
                "store:\n  redb: {path: a.redb}\n  postgres: {url: 'postgres://h/db'}\n",
                "store",
                "not both",
            ),
            (
                "store:\n  postgres: {url: 'mysql://u:s3cret@h/db'}\n",
                "store.postgres.url",
                "must start with postgres://",
            ),
            (
                "store:\n  postgres: {url: 'postgres://u:s3cret@h/db?bogus_option=1'}\n",
                "store.postgres.url",
                "connection",
            ),
            (
                "store:\n  postgres: {url: 'postgres://h/db', when_stale: maybe}\n",
                "store.postgres.when_stale",
                "refuse or accept",
            ),
            (
                "store:\n  postgres: {url: 'postgres://h/db', stale_after: 1s}\n",
                "store.postgres.stale_after",
                "out of range",
            ),
            (
                "store:\n  postgres: {url: 'postgres://h/db', pool_size: 0}\n",
                "store.postgres.pool_size",
                "out of range",
            ),
            (
                "store:\n  postgres: {url: '${NOPE}'}\n",
                "store.postgres.url",
                "NOPE is not set",
            ),
        ] {
            let e = load(&format!("version: 1\n{yaml}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains(says), "{yaml}: {e}");
            assert!(
                e.contains("yaml:3:") || e.contains("yaml:4:"),
                "{yaml}: {e}"
            );
            assert!(!e.contains("s3cret"), "{yaml}: the URL leaked: {e}");
        }
    }
}
