//! The config file exactly as written: serde structs that mirror `gateway.yaml`.
//!
//! Every struct denies unknown fields, so a misspelt key is an error that names it. Values that
//! need checking (addresses, durations, URLs, paths) are kept as text wrapped in `Spanned` so the
//! second stage (`super::validate`) can say on which line a bad value stands. Nothing outside
//! `config/` sees these types.

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::units::SizeText;

/// A value together with the line it was written on.
pub type Sp<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub version: Sp<u32>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub listen: RawListen,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tls: RawTls,
    #[serde(default, deserialize_with = "null_as_default")]
    pub trusted_proxies: Vec<Sp<String>>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub limits: RawLimits,
    #[serde(default, deserialize_with = "null_as_default")]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub shutdown_grace: Option<Sp<String>>,
    #[serde(default)]
    pub shutdown_delay: Option<Sp<String>>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub health: RawHealth,
    #[serde(default, deserialize_with = "null_as_default")]
    pub log: RawLog,
    #[serde(default, deserialize_with = "null_as_default")]
    pub store: RawStore,
    #[serde(default, deserialize_with = "null_as_default")]
    pub auth: RawAuth,
    #[serde(default, deserialize_with = "null_as_default")]
    pub cors: RawCors,
    #[serde(default, deserialize_with = "null_as_default")]
    pub rate_limits: RawRateLimits,
    #[serde(default, deserialize_with = "null_as_default")]
    pub admin: RawAdmin,
    #[serde(default, deserialize_with = "null_as_default")]
    pub regulation: RawRegulation,
    #[serde(default, deserialize_with = "null_as_default")]
    pub routes: Vec<RawRoute>,
    /// Absent (or `null`): the gateway sends no e-mail.
    #[serde(default)]
    pub email: Option<RawEmail>,
    /// Single sign-on with external identity providers.
    #[serde(default, deserialize_with = "null_as_default")]
    pub sso: RawSso,
}

/// `sso`: sign-in with external OpenID Connect providers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSso {
    /// Where browsers reach the gateway, for the redirect URIs (default: `email.public_url`).
    pub public_url: Option<Sp<String>>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub providers: Vec<RawSsoProvider>,
}

/// One `sso.providers[]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSsoProvider {
    pub id: Sp<String>,
    pub display_name: Option<Sp<String>>,
    /// `oidc` (the default).
    pub kind: Option<Sp<String>>,
    pub issuer: Sp<String>,
    pub client_id: Sp<String>,
    /// Usually `${VAR}`.
    pub client_secret: Option<Sp<String>>,
    pub client_secret_file: Option<Sp<String>>,
    pub scopes: Option<Vec<Sp<String>>>,
    pub email_claim: Option<Sp<String>>,
    pub name_claim: Option<Sp<String>>,
    pub groups_claim: Option<Sp<String>>,
    pub create_users: Option<Sp<bool>>,
    pub allowed_email_domains: Option<Vec<Sp<String>>>,
    pub allowed_groups: Option<Vec<Sp<String>>>,
    /// A group (or claim value) -> the gateway roles it gives.
    pub role_mappings: Option<std::collections::BTreeMap<String, Vec<Sp<String>>>>,
    pub recheck_interval: Option<Sp<String>>,
    pub logout_at_provider: Option<Sp<bool>>,
    pub timeout: Option<Sp<String>>,
    /// Extra parameters of the authorization request (`access_type: offline`, `hd`...).
    pub auth_params: Option<std::collections::BTreeMap<String, Sp<String>>>,
    pub id_token_algorithms: Option<Vec<Sp<String>>>,
}

/// `email`: how account e-mails (verification, password reset) are sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmail {
    pub smtp_url: Sp<String>,
    #[serde(default)]
    pub username: Option<Sp<String>>,
    #[serde(default)]
    pub password: Option<Sp<String>>,
    #[serde(default)]
    pub password_file: Option<Sp<String>>,
    pub from: Sp<String>,
    pub public_url: Sp<String>,
    #[serde(default)]
    pub templates_dir: Option<Sp<String>>,
    #[serde(default)]
    pub queue_size: Option<Sp<usize>>,
    #[serde(default)]
    pub send_timeout: Option<Sp<String>>,
    #[serde(default)]
    pub max_attempts: Option<Sp<u32>>,
    #[serde(default)]
    pub reset_ttl: Option<Sp<String>>,
    #[serde(default)]
    pub verify_ttl: Option<Sp<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    /// `null` turns the listener off.
    #[serde(default = "default_http")]
    pub http: Option<Sp<String>>,
    #[serde(default = "default_https")]
    pub https: Option<Sp<String>>,
    #[serde(default)]
    pub redirect_http_to_https: bool,
    /// Serving threads, each with its own event loop: `auto` (one per core) or a number.
    pub workers: Option<Sp<super::units::CountText>>,
    /// Serve plain HTTP/1.1 requests without a body on the gateway's own fast path.
    #[serde(default = "yes")]
    pub fast_path: bool,
}

fn yes() -> bool {
    true
}

fn default_http() -> Option<Sp<String>> {
    Some(unspanned("127.0.0.1:8080".to_owned()))
}

fn default_https() -> Option<Sp<String>> {
    Some(unspanned("127.0.0.1:8443".to_owned()))
}

impl Default for RawListen {
    fn default() -> Self {
        RawListen {
            http: default_http(),
            https: default_https(),
            redirect_http_to_https: false,
            workers: None,
            fast_path: true,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<Sp<String>>,
    pub key: Option<Sp<String>>,
    pub self_signed: Option<bool>,
    pub hsts_max_age: Option<Sp<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_header_bytes: Option<Sp<SizeText>>,
    pub max_headers: Option<Sp<usize>>,
    pub max_body_bytes: Option<Sp<SizeText>>,
    pub auth_body_bytes: Option<Sp<SizeText>>,
    pub header_read_timeout: Option<Sp<String>>,
    pub idle_timeout: Option<Sp<String>>,
    pub max_connections: Option<Sp<usize>>,
    pub h2_max_concurrent_streams: Option<Sp<u32>>,
    pub body_timeout: Option<Sp<String>>,
    pub max_connections_per_ip: Option<Sp<usize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub connect_timeout: Option<Sp<String>>,
    pub response_timeout: Option<Sp<String>>,
    pub pool_idle_timeout: Option<Sp<String>>,
    pub pool_max_idle_per_host: Option<usize>,
    /// Request headers removed when the peer is not a trusted proxy (default: other
    /// client-address headers and URL-rewrite headers).
    pub strip_request_headers: Option<Vec<Sp<String>>>,
    /// Send bodiless plain-HTTP requests over the gateway's own HTTP/1.1 client (default); false
    /// sends every request over hyper's.
    pub builtin_client: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub live: Option<Sp<String>>,
    pub ready: Option<Sp<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<Sp<String>>,
    pub level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub redb: Option<RawRedb>,
    pub postgres: Option<RawPostgres>,
    /// Encrypts the secrets in the store; usually `${GATEWAY_STORE_ENCRYPTION_KEY}`.
    pub encryption_key: Option<Sp<String>>,
    pub encryption_key_file: Option<Sp<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPostgres {
    /// `postgres://user:password@host:port/db`, or `${VAR}`.
    pub url: Sp<String>,
    pub pool_size: Option<Sp<usize>>,
    pub connect_timeout: Option<Sp<String>>,
    pub query_timeout: Option<Sp<String>>,
    pub stale_after: Option<Sp<String>>,
    pub when_stale: Option<Sp<String>>,
    /// PEM CA certificates for `sslmode=require` (default: the web PKI roots).
    pub ca_file: Option<Sp<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedb {
    pub path: Sp<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub prefix: Option<Sp<String>>,
    /// The default of every required route's `require_verified_email`.
    pub require_verified_email: Option<Sp<bool>>,
    pub signup: Option<Sp<String>>,
    pub default_roles: Option<Vec<Sp<String>>>,
    pub issuer: Option<Sp<String>>,
    pub audience: Option<Sp<String>>,
    pub algorithm: Option<Sp<String>>,
    /// HS256 secret, usually `${GATEWAY_JWT_SECRET}`.
    pub jwt_secret: Option<Sp<String>>,
    /// HS256 secret read from a file (Docker/Kubernetes secrets).
    pub jwt_secret_file: Option<Sp<String>>,
    pub access_ttl: Option<Sp<String>>,
    pub refresh_ttl: Option<Sp<String>>,
    pub refresh_grace: Option<Sp<String>>,
    pub tokens_in_body: Option<bool>,
    pub transparent_refresh: Option<bool>,
    pub show_required_roles: Option<bool>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub password: RawPassword,
    #[serde(default, deserialize_with = "null_as_default")]
    pub identity_headers: RawIdentityHeaders,
    pub identity_prefix: Option<Sp<String>>,
    pub assertion: Option<RawAssertion>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub mfa: RawMfa,
    pub webauthn: Option<RawWebauthn>,
    /// `false`: no password sign-in or sign-up (single sign-on only).
    pub password_login: Option<Sp<bool>>,
}

/// `auth.webauthn`: passkeys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebauthn {
    /// The origin browsers show the sign-in pages at (default: that of `email.public_url`).
    pub origin: Option<Sp<String>>,
    /// The relying party id (default: the origin's host).
    pub rp_id: Option<Sp<String>>,
    /// The name authenticators show (default: `auth.mfa.issuer`).
    pub rp_name: Option<Sp<String>>,
    /// Passkeys also sign in without a password.
    pub passwordless: Option<Sp<bool>>,
    /// `false` turns passkeys off even with `email.public_url`.
    pub enabled: Option<Sp<bool>>,
}

/// `auth.mfa`: second factors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMfa {
    /// The name authenticator apps show next to the account.
    pub issuer: Option<Sp<String>>,
    /// Users with any of these roles must sign in with a second factor everywhere.
    pub required_for_roles: Option<Vec<Sp<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentityHeaders {
    pub user_id: Option<Sp<String>>,
    pub email: Option<Sp<String>>,
    pub name: Option<Sp<String>>,
    pub roles: Option<Sp<String>>,
    pub email_verified: Option<Sp<String>>,
    pub mfa: Option<Sp<String>>,
    pub provider: Option<Sp<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAssertion {
    pub header: Option<Sp<String>>,
    pub ttl: Option<Sp<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `null` turns the admin listener off.
    #[serde(default = "default_admin")]
    pub listen: Option<Sp<String>>,
}

fn default_admin() -> Option<Sp<String>> {
    Some(unspanned("127.0.0.1:9090".to_owned()))
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: default_admin(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimits {
    pub login_per_ip: Option<Sp<String>>,
    pub login_per_account: Option<Sp<String>>,
    pub signup_per_ip: Option<Sp<String>>,
    pub refresh_per_ip: Option<Sp<String>>,
    pub sso_per_ip: Option<Sp<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegulation {
    pub max_retries: Option<Sp<u32>>,
    pub find_time: Option<Sp<String>>,
    pub ban_time: Option<Sp<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    #[serde(default)]
    pub allowed_origins: Vec<Sp<String>>,
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default)]
    pub allowed_headers: Vec<Sp<String>>,
    pub max_age: Option<Sp<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassword {
    pub min_length: Option<Sp<usize>>,
    pub max_bytes: Option<Sp<usize>>,
    pub memory_kib: Option<Sp<u32>>,
    pub iterations: Option<Sp<u32>>,
    pub parallelism: Option<Sp<u32>>,
    pub max_concurrent_hashes: Option<Sp<usize>>,
    pub hashing_cpu_percent: Option<Sp<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<String>,
    pub host: Option<Sp<String>>,
    pub path: Sp<String>,
    pub methods: Option<Vec<Sp<String>>>,
    pub upstream: Sp<String>,
    #[serde(default)]
    pub strip_prefix: bool,
    pub auth: Option<Sp<String>>,
    pub roles: Option<Vec<Sp<String>>>,
    pub on_unauthenticated: Option<Sp<String>>,
    #[serde(default)]
    pub forward_token: bool,
    pub require_verified_email: Option<Sp<bool>>,
    /// `required`: only sessions signed in with a second factor; `optional` (the default).
    pub mfa: Option<Sp<String>>,
    pub owner_bypass_roles: Option<Vec<Sp<String>>>,
    pub assertion_audience: Option<Sp<String>>,
    #[serde(default)]
    pub cors: bool,
    /// Match the path prefix exactly instead of case-insensitively and ignoring trailing dots.
    #[serde(default)]
    pub case_sensitive: bool,
    pub cache: Option<Sp<String>>,
}

/// A default value that was not written in the file (line 0).
pub fn unspanned<T>(value: T) -> Sp<T> {
    Spanned::new(
        value,
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

/// A section written with only comments under it (`tls:` then nothing) is YAML null; read it as
/// the section's defaults rather than an error.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
