//! The records every store backend keeps, and the errors and change-feed entries they share.
//!
//! The types are backend-neutral: the redb backend stores them as JSON values, the PostgreSQL
//! backend as columns. Times are unix seconds.

use serde::{Deserialize, Serialize};

/// How many changes `sweep` keeps. Retention is by count, not age: the newest change is never
/// deleted, so sequence numbers never restart, and a running server polls every second, far
/// more often than 100 000 changes accumulate. A server that was down reloads everything at
/// start-up and does not need old changes.
pub const CHANGE_RETENTION: u64 = 100_000;

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a user with this email already exists")]
    EmailTaken,
    #[error("a user with this id already exists")]
    IdTaken,
    #[error("not found")]
    NotFound,
    /// [`crate::store::Store::link_identity`]: the provider's account is linked already (to
    /// this user or another), or the user already has an identity at this provider.
    #[error("this identity is already linked, or the user has one at this provider")]
    IdentityTaken,
    /// `import` found users or keys: a gateway has used this store already.
    #[error(
        "the target store is in use (it has users or signing keys); a migration only fills a \
         store no gateway has started on"
    )]
    NotEmpty,
    #[error(
        "database schema version {found} is newer than this gateway supports ({supported}); upgrade the gateway"
    )]
    SchemaTooNew { found: u32, supported: u32 },
    #[error("corrupt database: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Io(String),
    /// The database cannot be reached (or did not answer in time). Callers answer 503: the
    /// request may succeed later, and nothing was written.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The store file can be read or written by other users of the machine.
    #[error("{0}")]
    Permissions(String),
    /// A secret in the store is encrypted and cannot be opened with the configured
    /// `store.encryption_key` (none configured, or another key).
    #[error("{0}")]
    Sealed(String),
}

/// One entry of the change feed: what another process (or this one) changed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Change {
    /// The user's record or flags changed; re-read [`Store::flags_of`].
    User { id: String },
    /// The user was deleted; their flag row now says disabled.
    UserDeleted { id: String },
    /// An access token id was deny-listed until `exp`.
    Jti { jti: String, exp: u64 },
    /// A refresh family was revoked until `exp`.
    Family { family: String, exp: u64 },
    /// The signing keys changed (rotation); re-read them from the meta table.
    Keys,
}

/// What [`Store::sweep`] deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// Refresh records whose family expired.
    pub refresh_tokens: usize,
    /// Expired families dropped from the family and user indexes.
    pub families: usize,
    /// Revoked-family rows past their expiry.
    pub revoked_families: usize,
    /// Deny-listed jtis past their expiry.
    pub jtis: usize,
    /// Change feed entries beyond [`CHANGE_RETENTION`].
    pub changes: usize,
    /// One-time tokens past their expiry.
    pub one_time_tokens: usize,
    /// Session records of families that expired or were revoked.
    pub sessions: usize,
}

/// A user account.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct User {
    pub id: String,
    /// Normalised by the caller; unique.
    pub email: String,
    pub name: Option<String>,
    pub password_hash: String,
    pub roles: Vec<String>,
    pub disabled: bool,
    pub created_at: u64,
    pub updated_at: u64,
    /// Access tokens carrying a lower version are revoked.
    pub session_version: u64,
    /// Whether the user proved they read mail at `email`. Records written before this field
    /// existed read as false.
    #[serde(default)]
    pub email_verified: bool,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("name", &self.name)
            .field("password_hash", &"***")
            .field("roles", &self.roles)
            .field("disabled", &self.disabled)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("session_version", &self.session_version)
            .field("email_verified", &self.email_verified)
            .finish()
    }
}

/// What the hot path needs about a user, kept small so a million users load fast:
/// only users that are disabled or have `session_version > 0` have a row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserFlags {
    pub disabled: bool,
    pub session_version: u64,
}

impl UserFlags {
    pub(crate) fn of(user: &User) -> UserFlags {
        UserFlags {
            disabled: user.disabled,
            session_version: user.session_version,
        }
    }
}

/// SHA-256 of the opaque refresh token; the caller hashes.
pub type TokenHash = [u8; 32];

/// One refresh token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RefreshRecord {
    pub family: String,
    pub user_id: String,
    pub issued_at: u64,
    pub family_expires_at: u64,
    pub state: RefreshState,
    /// How the session was signed in (RFC 8176 values: `pwd`, `otp`, `mfa`...), fixed when
    /// the family starts and copied by every rotation, so refreshed access tokens carry it.
    /// Empty in records from before schema 3: a password sign-in.
    #[serde(default)]
    pub amr: Vec<String>,
    /// The identity provider (`sso.providers[].id`) the session signed in at, fixed like `amr`;
    /// `None` for the gateway's own sign-ins. Its refreshes re-check the user at the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum RefreshState {
    Active,
    Rotated { at: u64 },
    Revoked { at: u64 },
}

/// Outcome of [`Store::rotate_refresh`].
#[derive(Clone, Debug, PartialEq)]
pub enum Rotation {
    /// The old token was active; here it is as it was before rotation.
    Rotated(RefreshRecord),
    /// The old token had already been rotated at `at` (possible theft); nothing written.
    AlreadyRotated { at: u64, record: RefreshRecord },
    /// Unknown, revoked, or its family expired.
    Invalid,
}

/// A slice of the access-token deny list by the jti's text, compared byte by byte: `from`
/// included, `below` excluded, `None` unbounded. The start-up load reads slices on several
/// cores at once (see [`crate::store::Store::for_each_revoked_jti`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JtiRange<'a> {
    pub from: Option<&'a str>,
    pub below: Option<&'a str>,
}

impl JtiRange<'_> {
    /// Whether `jti` falls in the slice.
    pub fn contains(&self, jti: &str) -> bool {
        self.from.is_none_or(|from| jti >= from) && self.below.is_none_or(|below| jti < below)
    }
}

/// What a one-time token is for; a token of one kind is never accepted as the other.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TokenKind {
    VerifyEmail,
    ResetPassword,
    /// The `mfa_token` between a login's password step and its second factor.
    MfaLogin,
    /// A WebAuthn ceremony in progress (its state travels sealed with the client; this makes it
    /// single use).
    Passkey,
    /// A sign-in at an identity provider in progress (its state travels sealed in a cookie;
    /// this makes its callback single use).
    SsoLogin,
}

impl TokenKind {
    /// The name stored by the PostgreSQL backend.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TokenKind::VerifyEmail => "verify_email",
            TokenKind::ResetPassword => "reset_password",
            TokenKind::MfaLogin => "mfa_login",
            TokenKind::Passkey => "passkey",
            TokenKind::SsoLogin => "sso_login",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<TokenKind> {
        match name {
            "verify_email" => Some(TokenKind::VerifyEmail),
            "reset_password" => Some(TokenKind::ResetPassword),
            "mfa_login" => Some(TokenKind::MfaLogin),
            "passkey" => Some(TokenKind::Passkey),
            "sso_login" => Some(TokenKind::SsoLogin),
            _ => None,
        }
    }
}

/// A single-use token mailed to a user (email verification, password reset), stored under the
/// SHA-256 of the token ([`TokenHash`]); the token itself is never stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OneTimeToken {
    pub kind: TokenKind,
    pub user_id: String,
    /// The address the token was sent to: verifying it proves this address, not whatever
    /// address the user has by the time the link is followed.
    pub email: String,
    pub created_at: u64,
    /// The token is accepted while `now < expires_at`.
    pub expires_at: u64,
}

/// The longest user agent a [`SessionInfo`] keeps, in characters.
pub const USER_AGENT_MAX_CHARS: usize = 256;

/// What a user sees about one of their sessions (one refresh family): written when the family
/// starts, touched by each rotation, ended when the family is revoked.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionInfo {
    /// The refresh family, which is also the access tokens' `sid`.
    pub family: String,
    pub user_id: String,
    pub created_at: u64,
    /// The last refresh (rotation) of the family; `created_at` until the first.
    pub last_used_at: u64,
    /// When the family expires (its `family_expires_at`).
    pub expires_at: u64,
    /// As sent at login; the store keeps at most [`USER_AGENT_MAX_CHARS`] characters.
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// When the family was revoked (logout, "log out everywhere", reuse detection, ...);
    /// `None` while the session lasts.
    #[serde(default)]
    pub ended_at: Option<u64>,
}

impl SessionInfo {
    /// Not ended and not expired at `now`.
    pub fn is_live(&self, now: u64) -> bool {
        self.ended_at.is_none() && now < self.expires_at
    }

    /// The record as stored: the user agent cut to [`USER_AGENT_MAX_CHARS`] characters.
    pub(crate) fn bounded(&self) -> SessionInfo {
        let mut info = self.clone();
        if let Some(ua) = &mut info.user_agent
            && let Some((cut, _)) = ua.char_indices().nth(USER_AGENT_MAX_CHARS)
        {
            ua.truncate(cut);
        }
        info
    }
}

/// The order [`crate::store::Store::sessions_of`] lists sessions in: newest first, ties (the
/// same second) by family, so both backends agree.
pub(crate) fn newest_first(sessions: &mut [SessionInfo]) {
    sessions.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| a.family.cmp(&b.family))
    });
}

/// A user's second factors, kept as one record per user and changed only whole, in one
/// transaction ([`crate::store::Store::update_factors`]): a TOTP code's step and a recovery
/// code are used up atomically, so two replicas cannot both accept the same one. The stored
/// value is encrypted with `store.encryption_key` when one is configured. `Debug` hides the
/// secrets.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Factors {
    /// The confirmed authenticator app, if any.
    #[serde(default)]
    pub totp: Option<TotpFactor>,
    /// A secret handed out by TOTP setup and not yet confirmed with a code. Replaced by the
    /// next setup; never a factor by itself.
    #[serde(default)]
    pub pending_totp: Option<TotpFactor>,
    /// SHA-256 hashes of the recovery codes not used yet.
    #[serde(default)]
    pub recovery_codes: Vec<[u8; 32]>,
    /// Registered passkeys (WebAuthn credentials).
    #[serde(default)]
    pub passkeys: Vec<PasskeyRecord>,
}

/// One registered passkey: what the user sees (name, dates) and the credential as the WebAuthn
/// library keeps it (public key, counter...; no secret, but sealed with the rest).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasskeyRecord {
    /// The credential id, base64url: how the user names it to remove it.
    pub id: String,
    pub name: String,
    pub created_at: u64,
    #[serde(default)]
    pub last_used_at: Option<u64>,
    /// The library's credential record (`webauthn_rs::prelude::Passkey`), as JSON.
    pub credential: serde_json::Value,
}

impl Factors {
    /// Whether the user has a second factor to sign in with (recovery codes alone are a way
    /// back in, not a factor: they exist only alongside one).
    pub fn any(&self) -> bool {
        self.totp.is_some() || !self.passkeys.is_empty()
    }

    /// Nothing worth storing: no factor, nothing pending, no codes.
    pub fn is_empty(&self) -> bool {
        self.totp.is_none()
            && self.pending_totp.is_none()
            && self.recovery_codes.is_empty()
            && self.passkeys.is_empty()
    }
}

/// What a backend does with a stored value after a read-modify-write looked at it.
#[derive(Debug)]
pub enum RawWrite {
    /// Leave it (nothing changed; no write).
    Keep,
    Put(Vec<u8>),
    Delete,
}

impl std::fmt::Debug for Factors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Factors")
            .field("totp", &self.totp)
            .field("pending_totp", &self.pending_totp)
            .field("recovery_codes", &self.recovery_codes.len())
            .field("passkeys", &self.passkeys.len())
            .finish()
    }
}

/// An RFC 6238 authenticator: its shared secret, when it was set up, and the newest time step
/// a code was accepted for (codes of that step or older are refused: no replay).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpFactor {
    pub secret: Vec<u8>,
    pub created_at: u64,
    #[serde(default)]
    pub last_used_step: Option<u64>,
}

impl std::fmt::Debug for TotpFactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpFactor")
            .field("secret", &"***")
            .field("created_at", &self.created_at)
            .field("last_used_step", &self.last_used_step)
            .finish()
    }
}

/// Everything [`crate::store::Store::export`] reads and [`crate::store::Store::import`]
/// writes: what `gateway migrate` carries from one store to another. Expired sessions and
/// revocations are left behind; the change feed is not copied (the target starts its own).
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub users: Vec<User>,
    /// Every flag row, including those of deleted users (they keep old tokens dead).
    pub flags: Vec<(String, UserFlags)>,
    /// Refresh tokens of unexpired families, by hash.
    pub refresh: Vec<(TokenHash, RefreshRecord)>,
    pub revoked_jtis: Vec<(String, u64)>,
    pub revoked_families: Vec<(String, u64)>,
    /// Unexpired one-time tokens, by hash.
    pub one_time: Vec<(TokenHash, OneTimeToken)>,
    /// Session records of unexpired families (ended ones included, like their tokens).
    pub sessions: Vec<SessionInfo>,
    /// Signing keys, the refresh-token key, the CSRF key: without them every token dies.
    pub meta: Vec<(String, Vec<u8>)>,
    /// Each user's second factors, as stored (encrypted when the source has a key: the target
    /// needs the same `store.encryption_key`).
    pub factors: Vec<(String, Vec<u8>)>,
    /// Linked single sign-on identities, as stored (encrypted like the factors).
    pub identities: Vec<StoredIdentity>,
}

/// An account at an external identity provider (`sso.providers[].id`) linked to a gateway
/// user: the provider's `sub` names the same person every time, so a later sign-in there
/// finds the user. A user has at most one identity per provider. The stored record is
/// encrypted with `store.encryption_key` when one is configured; `Debug` hides the refresh
/// token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedIdentity {
    /// The provider's id in config.
    pub provider: String,
    /// The provider's stable `sub`.
    pub subject: String,
    pub user_id: String,
    /// As the provider last gave it (not necessarily verified, nor the user's own email).
    pub email: Option<String>,
    pub linked_at: u64,
    pub last_login_at: u64,
    /// When the provider's claims were last checked (sign-in, or re-evaluation at a refresh).
    pub checked_at: u64,
    /// Groups seen at the last check.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The provider's refresh token, if it issued one. Secret.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for LinkedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkedIdentity")
            .field("provider", &self.provider)
            .field("subject", &self.subject)
            .field("user_id", &self.user_id)
            .field("email", &self.email)
            .field("linked_at", &self.linked_at)
            .field("last_login_at", &self.last_login_at)
            .field("checked_at", &self.checked_at)
            .field("groups", &self.groups)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A [`LinkedIdentity`] as a backend keeps it: the keys it is found by in the clear, the record
/// as the [`crate::store::Store`] layer encoded (and perhaps encrypted) it. `Debug` shows the
/// value's length only: in the clear it holds the refresh token.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredIdentity {
    pub provider: String,
    pub subject: String,
    pub user_id: String,
    pub value: Vec<u8>,
}

impl std::fmt::Debug for StoredIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredIdentity")
            .field("provider", &self.provider)
            .field("subject", &self.subject)
            .field("user_id", &self.user_id)
            .field("value", &format_args!("<{} bytes>", self.value.len()))
            .finish()
    }
}

/// Failed-login regulation of one account, as shared by every replica on the store (see
/// [`crate::ratelimit`]). Times are unix seconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Regulation {
    /// Consecutive failures counted since `first_failure`.
    pub failures: u32,
    pub first_failure: Option<u64>,
    pub banned_until: Option<u64>,
    /// Client networks (IP keys) the account recently logged in from; they are not banned.
    pub familiar: Vec<String>,
    /// When the entry last changed, for expiry.
    pub touched: u64,
}
