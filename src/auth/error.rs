//! The auth layer's errors, and how the HTTP layer answers them.
//!
//! [`AuthError`] is what the service and its store-side helpers return; the mapping to
//! [`HttpError`] (status and client-facing wording) lives here, beside the error it maps, so
//! [`crate::error`] needs nothing from auth. [`OpenError`] is why the auth core could not start.

use super::password::PolicyError;
use crate::error::HttpError;
use crate::store::StoreError;

/// Why an operation failed. `Display` of the client-facing variants is worded for end users;
/// `NotAuthenticated`'s reason and `Internal`'s text are for logs only.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown email, wrong password or disabled user: deliberately indistinguishable.
    #[error("Incorrect email or password")]
    InvalidCredentials,
    #[error("Email already registered")]
    EmailTaken,
    /// The current password given to change it is wrong (the user is signed in: no secret
    /// to keep about whether the account exists).
    #[error("Current password is incorrect")]
    WrongPassword,
    /// A reset or verification link that is unknown, used, expired, or for an address the
    /// account no longer has.
    #[error("This link is invalid or has expired")]
    InvalidLink,
    #[error("Invalid email address")]
    InvalidEmail,
    #[error("{0}")]
    WeakPassword(PolicyError),
    #[error("Sign-up is closed")]
    SignupClosed,
    /// A wrong second-factor code at sign-in (counts as a failed login).
    #[error("Invalid code")]
    InvalidCode,
    /// A wrong second-factor code from a signed-in user (step-up, enrolment, removal; counts
    /// as a failed login too).
    #[error("Invalid code")]
    WrongCode,
    /// The `mfa_token` of a sign-in is unknown, used, expired, or the account changed since.
    #[error("This sign-in has expired; please sign in again")]
    MfaExpired,
    /// A passkey's answer did not check out (or names no passkey of this site).
    #[error("The passkey was not accepted")]
    PasskeyRefused,
    /// The second-factor state does not allow the request (already set up, nothing pending,
    /// no factor to check).
    #[error("{0}")]
    MfaState(&'static str),
    /// Unknown, expired or revoked refresh token, or reuse detected (the family is now revoked).
    #[error("Session expired; please sign in again")]
    InvalidRefresh,
    /// The access token was refused: "invalid", "expired", "revoked" or "disabled".
    #[error("Not authenticated ({0})")]
    NotAuthenticated(&'static str),
    /// Password hashing is saturated; answer 503 with `Retry-After`.
    #[error("Server busy, try again shortly")]
    Busy,
    /// The store cannot be reached (or this server has lost track of revocations for longer
    /// than allowed); answer 503 with `Retry-After`. The reason is for logs.
    #[error("Service temporarily unavailable ({0})")]
    Unavailable(String),
    /// The identity provider vouched for someone its rules here do not let in (domain,
    /// group), or gave no email; the message says which.
    #[error("{0}")]
    SsoRefused(&'static str),
    /// The provider's address belongs to an account here, but one side has not verified it:
    /// linking would hand the account to whoever controls the provider's record.
    #[error(
        "An account with this email address already exists. Sign in with it, then link the provider on your account page"
    )]
    SsoLinkRefused,
    /// A password-only action on a deployment with `auth.password_login: false`.
    #[error("Password sign-in is turned off; sign in with your organisation's identity provider")]
    PasswordLoginOff,
    /// Store or key failures; log it, show a generic message.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::EmailTaken => AuthError::EmailTaken,
            StoreError::Unavailable(why) => AuthError::Unavailable(why),
            other => AuthError::Internal(other.to_string()),
        }
    }
}

impl From<AuthError> for HttpError {
    fn from(e: AuthError) -> Self {
        HttpError::from(&e)
    }
}

impl From<&AuthError> for HttpError {
    fn from(e: &AuthError) -> Self {
        use AuthError as A;
        match e {
            A::InvalidCredentials => HttpError::Unauthorized("Incorrect email or password"),
            A::InvalidRefresh => HttpError::Unauthorized("Invalid or expired refresh token"),
            A::NotAuthenticated(_) => HttpError::Unauthorized("Not authenticated"),
            A::EmailTaken => HttpError::Conflict("Email already registered".into()),
            // Not 401: the session is fine, and a 401 would send a client off to refresh it.
            A::WrongPassword => HttpError::Forbidden("Current password is incorrect"),
            // 404: the link names a token that does not exist (any more).
            A::InvalidLink => HttpError::NoSuch("This link is invalid or has expired"),
            A::InvalidEmail => HttpError::Unprocessable("Invalid email address".into()),
            A::WeakPassword(p) => HttpError::Unprocessable(p.to_string()),
            A::SignupClosed => HttpError::Forbidden("Sign-up is closed"),
            A::InvalidCode => HttpError::Unauthorized("Invalid code"),
            // Not 401, like WrongPassword: the session itself is fine.
            A::WrongCode => HttpError::Forbidden("Invalid code"),
            A::MfaExpired => {
                HttpError::Unauthorized("This sign-in has expired; please sign in again")
            }
            A::MfaState(why) => HttpError::Conflict((*why).to_owned()),
            A::PasskeyRefused => HttpError::Forbidden("The passkey was not accepted"),
            A::SsoRefused(why) => HttpError::Forbidden(why),
            A::SsoLinkRefused => HttpError::Conflict(e.to_string()),
            A::PasswordLoginOff => HttpError::Forbidden(
                "Password sign-in is turned off; sign in with your organisation's identity provider",
            ),
            A::Busy => HttpError::Unavailable("Server busy, try again shortly"),
            A::Unavailable(_) => HttpError::Unavailable("Service temporarily unavailable"),
            A::Internal(cause) => HttpError::Internal(cause.clone()),
        }
    }
}

/// Why the auth core (store, keys, service) could not be opened at start-up.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot start the auth service: {0}")]
    Service(#[from] AuthError),
    #[error("cannot start sending e-mail: {0}")]
    Mail(#[from] crate::mail::MailError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{StatusCode, header};

    #[test]
    fn busy_has_retry_after() {
        let e = HttpError::from(AuthError::Busy);
        let r = e.response(false);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }
}
