//! Configuration: `gateway.yaml` parsed in two stages.
//!
//! 1. [`raw`] mirrors the file with serde (`deny_unknown_fields`, every value kept with its line).
//! 2. [`validate`] turns that into the checked [`Config`]: socket addresses, durations, parsed
//!    upstream URLs, loaded secrets and route specs. Every error names the key path and the line,
//!    e.g. `gateway.yaml:12: routes[2].upstream: unsupported scheme "ftp" (use http or https)`.
//!
//! Between the two, [`overrides`] applies `GATEWAY_<PATH>` environment variables (e.g.
//! `GATEWAY_AUTH__ACCESS_TTL=5m`); an error in such a value names the variable instead of a line.
//!
//! `gateway serve` and `gateway check` run exactly the same [`load`].

mod overrides;
mod raw;
mod sso;
pub mod units;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;

use crate::secret::Secret;
pub use units::IpNet;
pub use validate::is_role_name;

/// A configuration problem, with where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The YAML is malformed or has a key or value of the wrong kind.
    #[error("{file}: {key}: {message}")]
    Syntax {
        file: String,
        key: String,
        message: String,
    },
    /// A value is well-formed YAML but not acceptable.
    #[error("{file}:{line}: {key}: {message}")]
    Invalid {
        file: String,
        line: u64,
        key: String,
        message: String,
    },
    /// An environment override is malformed, names no key, or has an unacceptable value.
    #[error("{key}: {message} (from {var})")]
    FromEnv {
        var: String,
        key: String,
        message: String,
    },
}

/// The checked configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where `relative paths` in the file are resolved from (the file's directory).
    pub base_dir: PathBuf,
    pub listen: Listen,
    pub tls: TlsSettings,
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    pub limits: Limits,
    pub upstream: UpstreamSettings,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// How long, after a shutdown signal, `/readyz` already answers 503 while the listeners keep
    /// serving, so load balancers stop sending traffic before the drain (`shutdown_grace`).
    pub shutdown_delay: Duration,
    pub health: Health,
    pub log: LogSettings,
    pub store: StoreSettings,
    /// Key material that encrypts the store's secrets at rest (`store.encryption_key`), at
    /// least 32 bytes; `None` keeps them in the clear, protected by the file's mode.
    pub store_encryption_key: Option<Secret<Vec<u8>>>,
    pub auth: AuthSettings,
    pub cors: CorsSettings,
    pub rate_limits: RateLimitSettings,
    /// Routes in file order; the first match wins.
    pub routes: Vec<RouteSpec>,
    /// How account e-mails are sent (`email`); `None`: no e-mail, so no address verification
    /// and no password reset by e-mail.
    pub email: Option<EmailSettings>,
    /// Single sign-on providers (`sso`); empty: none.
    pub sso: SsoSettings,
    /// Names of the `GATEWAY_...` variables that overrode values of the file, sorted.
    pub env_overrides: Vec<String>,
}

/// Listening addresses.
#[derive(Debug, Clone)]
pub struct Listen {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    /// The admin listener (`/metrics`); keep it on a private address.
    pub admin: Option<SocketAddr>,
    /// Answer plain-HTTP requests with a redirect to the HTTPS listener.
    pub redirect_http_to_https: bool,
    /// Serving threads, each running its own event loop and upstream connection pool.
    pub workers: usize,
    /// HTTP/1.1 requests without a body or with a small one are served by [`crate::fast_path`]
    /// (and the commonest proxied ones by the handler's planned forward) rather than hyper. On by default; off is a way out if the
    /// fast path ever misbehaves, and how tests compare the two.
    pub fast_path: bool,
}

/// Certificate settings for the HTTPS listener.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Generate a self-signed `localhost` certificate when the files are missing.
    pub self_signed: bool,
    /// `Strict-Transport-Security` max-age on TLS responses; `None` sends no header.
    pub hsts_max_age: Option<Duration>,
}

/// Protocol limits.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// Largest request body forwarded upstream (413 beyond).
    pub max_body_bytes: u64,
    /// Largest body accepted by the gateway's own auth endpoints.
    pub auth_body_bytes: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub h2_max_concurrent_streams: u32,
    /// The longest wait for the next bytes of a request body (nginx's `client_body_timeout`):
    /// 408 beyond, see [`crate::body::ClientBody`].
    pub body_timeout: Duration,
    /// Concurrent connections one client address (IPv6 by /64) may hold; trusted proxies are
    /// exempt. Over it a new connection is closed at once.
    pub max_connections_per_ip: usize,
}

/// How the gateway talks to upstreams.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    /// Time allowed for an upstream to send its response headers.
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// Request headers removed (in any spelling: lowercase, `-` separated here) when the peer
    /// is not a trusted proxy.
    pub strip_request_headers: Vec<String>,
    /// Requests to plain-HTTP upstreams without a body, or with a small one of known length, go
    /// over the gateway's own HTTP/1.1 client (`proxy::http1_client`); false sends every request over hyper's client, an escape hatch and
    /// the reference the tests compare the built-in client with.
    pub builtin_client: bool,
}

/// Paths of the health endpoints the gateway answers itself.
#[derive(Debug, Clone)]
pub struct Health {
    pub live: String,
    pub ready: String,
}

/// Log output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// Default filter when `RUST_LOG` is not set.
    pub level: String,
}

/// Where users and sessions are kept.
#[derive(Debug, Clone)]
pub enum StoreSettings {
    Redb { path: PathBuf },
    Postgres(PostgresSettings),
}

impl StoreSettings {
    /// Names the store for messages, without the password: `redb file data/gateway.redb`,
    /// `PostgreSQL database app on db:5432`.
    pub fn describe(&self) -> String {
        match self {
            StoreSettings::Redb { path } => format!("redb file {}", path.display()),
            StoreSettings::Postgres(pg) => describe_postgres(pg.url.expose()),
        }
    }
}

pub use sso::{SsoProvider, SsoSettings, is_loopback_host};

/// Whether `location` is a PostgreSQL connection URL (`postgres://` or `postgresql://`).
pub fn is_postgres_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// Names a PostgreSQL URL's database and host, never its password.
pub fn describe_postgres(url: &str) -> String {
    let Ok(config) = url.parse::<tokio_postgres::Config>() else {
        return "PostgreSQL (unparsable URL)".to_owned();
    };
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("PostgreSQL database {db} on {host}:{port}")
}

/// A shared PostgreSQL store (`store.postgres`).
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// The connection URL; it usually holds a password.
    pub url: crate::secret::SecretString,
    /// Connections per server.
    pub pool_size: usize,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
    /// How long one store operation may take before it fails with 503.
    pub query_timeout: Duration,
    /// How long a server may go without reading the change feed before it stops vouching for
    /// tokens (it could miss a revocation).
    pub stale_after: Duration,
    /// What a stale server does with tokens.
    pub when_stale: WhenStale,
    /// CA certificates (PEM) that sign the server's certificate when the URL says
    /// `sslmode=require`; `None`: the web PKI roots.
    pub ca_file: Option<PathBuf>,
}

impl PostgresSettings {
    /// The defaults for a URL given on the command line.
    pub fn with_url(url: String) -> PostgresSettings {
        PostgresSettings {
            url: crate::secret::SecretString::new(url),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(5),
            stale_after: Duration::from_secs(30),
            when_stale: WhenStale::Refuse,
            ca_file: None,
        }
    }
}

/// What a server does with access tokens when it has lost the shared store for longer than
/// `stale_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenStale {
    /// Fail closed: authenticated requests get 503 until the store is back.
    Refuse,
    /// Keep accepting tokens that verify; a revocation made meanwhile is not seen.
    Accept,
}

/// Whether new accounts can be created through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signup {
    Open,
    Closed,
}

/// The algorithm access tokens are signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAlgorithm {
    EdDSA,
    HS256,
}

/// The gateway's own auth API and its tokens.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Path prefix of the auth API, e.g. `/api/auth`.
    pub prefix: String,
    pub signup: Signup,
    pub default_roles: Vec<String>,
    pub issuer: String,
    pub audience: String,
    pub algorithm: TokenAlgorithm,
    /// HS256 only.
    pub jwt_secret: Option<Secret<Vec<u8>>>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub refresh_grace: Duration,
    pub tokens_in_body: bool,
    /// Refresh an expired cookie session inside the request that found it expired.
    pub transparent_refresh: bool,
    /// The 403 page of a route names the roles that would be let in.
    pub show_required_roles: bool,
    /// Required routes let in only users who have verified their address, unless a route says
    /// otherwise.
    pub require_verified_email: bool,
    pub password: PasswordSettings,
    pub identity: IdentityHeaders,
    /// Send upstreams a signed JWT naming the user.
    pub assertion: Option<AssertionSettings>,
    pub mfa: MfaSettings,
    /// Passkeys; `None` when off (no `auth.webauthn.origin` and no `email.public_url`, or
    /// `enabled: false`).
    pub webauthn: Option<WebauthnSettings>,
    /// Email and password sign-in and sign-up (`auth.password_login`, default on); off, users
    /// sign in with a provider of `sso` (or a passkey).
    pub password_login: bool,
}

/// `auth.webauthn`: where passkeys are used. Never taken from a request's Host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebauthnSettings {
    /// `scheme://host[:port]`, no path.
    pub origin: String,
    /// The relying party id: the origin's host or a registrable suffix of it.
    pub rp_id: String,
    pub rp_name: String,
    /// Passkeys sign in on their own (the sign-in page offers "Sign in with a passkey").
    pub passwordless: bool,
}

/// `auth.mfa`: second factors.
#[derive(Debug, Clone)]
pub struct MfaSettings {
    /// The name authenticator apps show next to the account (the `otpauth://` issuer).
    pub issuer: String,
    /// Users with any of these roles are let into required routes only with a second factor
    /// (and are sent to set one up).
    pub required_for_roles: Vec<String>,
}

/// The headers that tell an upstream who the user is.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub user_id: http::HeaderName,
    pub email: http::HeaderName,
    pub name: http::HeaderName,
    pub roles: http::HeaderName,
    /// `true` or `false`: the user has verified their address.
    pub email_verified: http::HeaderName,
    /// `true` or `false`: the session was signed in with a second factor.
    pub mfa: http::HeaderName,
    /// The identity provider (`sso.providers[].id`) of a session signed in at one; not sent
    /// for the gateway's own sign-ins.
    pub provider: http::HeaderName,
    /// Lowercase reserved prefix (e.g. `x-auth-`): every client header under it is removed.
    pub prefix: String,
}

/// The signed identity assertion sent to upstreams.
#[derive(Debug, Clone)]
pub struct AssertionSettings {
    pub header: http::HeaderName,
    pub ttl: Duration,
}

/// A rate: `count` requests per `per`, with bursts of up to `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

/// Rate limits on the auth endpoints and login regulation (see [`crate::ratelimit`]).
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    pub login_per_ip: Option<Rate>,
    pub login_per_account: Option<Rate>,
    pub signup_per_ip: Option<Rate>,
    pub refresh_per_ip: Option<Rate>,
    /// Single sign-on starts (each sends the browser to the provider and keeps a one-time
    /// token): a limit of their own, since a whole office may sign in from one address.
    pub sso_per_ip: Option<Rate>,
    /// Consecutive failed logins for one account before it is banned (0 turns it off).
    pub max_retries: u32,
    /// Failures further apart than this do not add up.
    pub find_time: Duration,
    pub ban_time: Duration,
}

/// Cross-origin requests allowed to routes with `cors: true` and to the auth API.
#[derive(Debug, Clone, Default)]
pub struct CorsSettings {
    /// Exact origins (`https://app.example.com`); `*` allows any origin without credentials.
    pub allowed_origins: Vec<String>,
    pub allow_credentials: bool,
    /// Request headers allowed besides the CORS-safelisted ones.
    pub allowed_headers: Vec<String>,
    pub max_age: Duration,
}

/// What an unauthenticated request to a protected route gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnauthenticated {
    /// Browser navigations are redirected to the login page, everything else gets 401.
    Auto,
    Redirect,
    Deny,
}

/// The headers the gateway sets for the upstream besides identity: any client copy, in any
/// spelling, is removed (the `-` spellings are replaced by the gateway's own values; see
/// [`crate::proxy::headers`]). Kept here, below both the proxy and the config checks, so that
/// `upstream.strip_request_headers` refuses exactly these.
pub const GATEWAY_SET: [&str; 6] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-request-id",
    "x-real-ip",
];

/// The least key material `store.encryption_key` accepts, in bytes.
pub const MIN_ENCRYPTION_KEY_BYTES: usize = 32;

/// The default of `auth.password.hashing_cpu_percent`: a login flood costs proxied traffic
/// about this share of the machine, and logins beyond it wait or are refused.
pub const DEFAULT_HASHING_CPU_PERCENT: u32 = 15;

/// Password rules and hashing cost.
#[derive(Debug, Clone)]
pub struct PasswordSettings {
    pub min_length: usize,
    pub max_bytes: usize,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub max_concurrent_hashes: usize,
    /// The share of all CPUs' time password hashing may use on average, in percent.
    pub hashing_cpu_percent: u32,
}

/// One route, validated.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// For logs and metrics: the `name` key, else the path.
    pub name: String,
    pub host: Option<HostPattern>,
    /// Normalised path prefix, `/` or `/segment/...` without a trailing slash.
    pub path: String,
    /// `None` matches every method.
    pub methods: Option<Vec<Method>>,
    pub upstream: UpstreamTarget,
    /// Remove `path` from the front of the forwarded path.
    pub strip_prefix: bool,
    pub policy: AuthPolicy,
    pub on_unauthenticated: OnUnauthenticated,
    /// Pass the gateway's bearer token / access cookie to the upstream (for apps that want it).
    pub forward_token: bool,
    /// Only users who have verified their address are let in (a required route).
    pub require_verified_email: bool,
    /// Only sessions signed in with a second factor are let in (`mfa: required`).
    pub require_mfa: bool,
    /// Users with any of these roles are let in only with a second factor
    /// (`auth.mfa.required_for_roles`, on every route that requires authentication).
    pub mfa_for_roles: Vec<String>,
    /// With a `{sub}` segment: roles that may access other users' paths.
    pub owner_bypass_roles: Vec<String>,
    /// `aud` of the identity assertion for this route (default: the route name).
    pub assertion_audience: Option<String>,
    /// Cross-origin requests per the `cors` section are allowed.
    pub cors: bool,
    /// The path prefix (and a `{sub}` segment) compares exactly; by default it compares
    /// case-insensitively and ignores trailing dots of a segment.
    pub case_sensitive: bool,
    /// What authenticated answers without a `Cache-Control` of their own get.
    pub cache: CachePolicy,
}

/// How the gateway keeps caches from storing an authenticated answer (see
/// [`crate::proxy::cache`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePolicy {
    /// `Cache-Control: private, no-store`: no cache keeps it, not even the browser's (so Back
    /// after sign-out does not show it).
    NoStore,
    /// `Cache-Control: private`: the browser may keep it, shared caches may not.
    Private,
    /// Leave the upstream's caching headers as they are.
    Pass,
}

/// A route's host condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `app.example.com`, compared case-insensitively, without port.
    Exact(String),
    /// `*.example.com`: any host ending in `.example.com` (one or more labels before it).
    Wildcard(String),
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*{s}"),
        }
    }
}

/// Where a route's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTarget {
    /// The built-in echo app that shows what an upstream receives.
    Whoami,
    /// An HTTP(S) server.
    Http {
        scheme: http::uri::Scheme,
        authority: http::uri::Authority,
        /// Path prefix added in front of the forwarded path (`""` for none).
        base_path: String,
    },
}

impl std::fmt::Display for UpstreamTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamTarget::Whoami => f.write_str("builtin:whoami"),
            UpstreamTarget::Http {
                scheme,
                authority,
                base_path,
            } => write!(f, "{scheme}://{authority}{base_path}"),
        }
    }
}

/// Who may use a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthPolicy {
    /// Anyone; no token needed.
    Public,
    /// A valid access token, and when `roles` is not empty, at least one of them.
    Required { roles: Vec<String> },
}

/// The account e-mails, by the file-name stem under which `email.templates_dir` may override
/// each (`verify-email.subject.txt`, `verify-email.txt`, `verify-email.html`). Kept here, below
/// both the config checks and [`crate::mail`], so a misspelt file name is a config error.
pub const EMAIL_TEMPLATES: [&str; 2] = ["verify-email", "reset-password"];

/// The parts of one e-mail template, by file-name suffix.
pub const EMAIL_TEMPLATE_PARTS: [&str; 3] = ["subject.txt", "txt", "html"];

/// How account e-mails are sent (`email`): see [`crate::mail`].
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// The SMTP server (`email.smtp_url`).
    pub smtp: SmtpServer,
    pub username: Option<String>,
    pub password: Option<Secret<String>>,
    /// The `From` of every message; its display name is the `{{app}}` of the templates.
    pub from: lettre::message::Mailbox,
    /// The external base URL links point under, without a trailing slash
    /// (`https://login.example.com`). Links never use a request's `Host`.
    pub public_url: String,
    /// Template overrides read from `email.templates_dir` at load time: file name (e.g.
    /// `verify-email.html`) -> text. A file that is not there keeps the built-in one.
    pub templates: std::collections::BTreeMap<String, String>,
    /// Messages waiting to be sent at most; beyond, sending fails at once.
    pub queue_size: usize,
    /// How long one delivery attempt may take.
    pub send_timeout: Duration,
    /// Delivery attempts per message (with exponential backoff between them).
    pub max_attempts: u32,
    /// How long a password-reset link works (`email.reset_ttl`, default 30 minutes).
    pub reset_ttl: Duration,
    /// How long an address-verification link works (`email.verify_ttl`, default 24 hours).
    pub verify_ttl: Duration,
}

impl EmailSettings {
    /// For `gateway check` and logs, without credentials:
    /// `smtps://mail.example.com:465, from Gateway <no-reply@example.com>, links under https://...`.
    pub fn describe(&self) -> String {
        format!(
            "{}, from {}, links under {}",
            self.smtp, self.from, self.public_url
        )
    }
}

/// An SMTP server and how the connection to it is secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpServer {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
}

impl std::fmt::Display for SmtpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (scheme, note) = match self.tls {
            SmtpTls::Opportunistic => ("smtp", " (STARTTLS when offered)"),
            SmtpTls::StartTls => ("smtp", " (STARTTLS required)"),
            SmtpTls::Implicit => ("smtps", ""),
        };
        // An IPv6 literal keeps its brackets, as it was written.
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}{note}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}{note}", self.host, self.port)
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// `smtp://` without credentials: plain, upgraded with STARTTLS when the server offers it.
    /// A server (or someone in between) that offers no STARTTLS gets the message in the clear.
    Opportunistic,
    /// `smtp://` with a username or password: STARTTLS or nothing, so credentials never travel
    /// in the clear. (To a loopback relay with credentials and no STARTTLS, `Opportunistic`.)
    StartTls,
    /// `smtps://`: TLS from the first byte.
    Implicit,
}

/// Reads and checks a config file, with `GATEWAY_...` overrides from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        match value.into_string() {
            Ok(value) => vars.push((name.to_owned(), value)),
            // Only an override must be readable; other variables are none of our business.
            Err(_) if name.starts_with(overrides::PREFIX) => {
                return Err(ConfigError::FromEnv {
                    var: name.to_owned(),
                    key: "(value)".to_owned(),
                    message: "not valid UTF-8".to_owned(),
                });
            }
            Err(_) => {}
        }
    }
    from_str_with_env(&text, &path.display().to_string(), &base_dir, &vars)
}

/// Checks config text without environment overrides. `file` names it in errors; `env` looks up
/// `${VAR}` references (tests pass their own).
pub fn from_str(
    text: &str,
    file: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let raw = parse(text, file, None)?;
    validate::validate(raw, file, base_dir, env, None, Vec::new())
}

/// Checks config text in an environment: `vars` are all its variables (tests pass their own).
/// The `GATEWAY_<PATH>` overrides among them replace values of the file (see the rule in
/// `overrides`), and `${VAR}` references are looked up in them.
pub fn from_str_with_env(
    text: &str,
    file: &str,
    base_dir: &Path,
    vars: &[(String, String)],
) -> Result<Config, ConfigError> {
    let env = |name: &str| vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let selected = overrides::select(vars);
    if selected.is_empty() {
        return from_str(text, file, base_dir, &env);
    }
    let merged = match overrides::merge(text, &selected) {
        // A syntax error in the file itself, with the file's line.
        Err(e) => {
            return Err(ConfigError::Syntax {
                file: file.to_owned(),
                key: "(top level)".to_owned(),
                // No source snippet: it quotes lines of the file, which may hold a secret.
                message: e.without_snippet().to_string(),
            });
        }
        Ok(Err(e)) => {
            return Err(ConfigError::FromEnv {
                var: e.var,
                key: e.key,
                message: e.message,
            });
        }
        Ok(Ok(m)) => m,
    };
    let raw = parse(&merged.text, file, Some(&merged))?;
    let names = selected.into_iter().map(|o| o.var).collect();
    validate::validate(raw, file, base_dir, &env, Some(&merged), names)
}

/// The first stage: YAML text into the raw structs. With `merged`, the text is the file with
/// overrides applied and error lines are mapped back to where each value came from.
fn parse(
    text: &str,
    file: &str,
    merged: Option<&overrides::Merged>,
) -> Result<raw::RawConfig, ConfigError> {
    let mut key = String::new();
    let parsed = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize::<_, raw::RawConfig>(de).map_err(|e| {
            key = e.path().to_string();
            e.into_inner()
        })
    });
    parsed.map_err(|e| {
        // A value kept with its line is a `Spanned` struct whose field is `value`; that is not
        // part of the key the user wrote.
        let key = key.strip_suffix(".value").unwrap_or(&key);
        let key = if key.is_empty() || key == "." {
            "(top level)".to_owned()
        } else {
            key.to_owned()
        };
        let Some(merged) = merged else {
            return ConfigError::Syntax {
                file: file.to_owned(),
                key,
                // No source snippet: it quotes lines of the file, which may hold a secret.
                message: e.without_snippet().to_string(),
            };
        };
        let line = e.location().map_or(0, |l| l.line());
        match merged.origin(line) {
            overrides::Origin::Env(var) => ConfigError::FromEnv {
                var,
                key,
                message: overrides::without_location(&e),
            },
            overrides::Origin::File(0) => ConfigError::Syntax {
                file: file.to_owned(),
                key,
                message: overrides::without_location(&e),
            },
            overrides::Origin::File(line) => ConfigError::Syntax {
                file: file.to_owned(),
                key,
                message: format!("{} at line {line}", overrides::without_location(&e)),
            },
        }
    })
}

/// Logs which differences between the running configuration `was` and a reloaded `now` take
/// effect only at the next restart (a reload applies everything else).
pub fn warn_restart_needed(was: &Config, now: &Config) {
    if now.listen.http != was.listen.http
        || now.listen.https != was.listen.https
        || now.listen.admin != was.listen.admin
        || now.listen.workers != was.listen.workers
    {
        tracing::warn!(
            "listener addresses or workers changed; they take effect at the next restart"
        );
    }
    if now.store.describe() != was.store.describe() {
        tracing::warn!(
            was = %was.store.describe(),
            now = %now.store.describe(),
            "store changed; the new store takes effect at the next restart"
        );
    }
    let (wl, nl) = (&was.limits, &now.limits);
    if nl.max_header_bytes != wl.max_header_bytes
        || nl.max_headers != wl.max_headers
        || nl.h2_max_concurrent_streams != wl.h2_max_concurrent_streams
        || nl.max_connections != wl.max_connections
    {
        tracing::warn!(
            "limits.max_header_bytes, max_headers, h2_max_concurrent_streams and \
             max_connections take effect at the next restart"
        );
    }
}
