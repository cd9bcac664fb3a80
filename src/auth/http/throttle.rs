//! Rate limits and login regulation in front of the endpoints and forms that hash passwords or
//! rotate tokens, and the pacing of "hashing is saturated" answers.

use std::net::IpAddr;
use std::time::Instant;

use super::api::AuthApi;
use crate::auth::email::normalize_email;
use crate::auth::error::AuthError;
use crate::error::HttpError;
use crate::ratelimit::{Action, IpKey};

/// How long a refusal for saturated password hashing (503) is held before it is sent.
const BUSY_PACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Holds a "hashing is saturated" answer back for [`BUSY_PACE`]. A flood of logins beyond the
/// hashing capacity would otherwise get instant 503s and loop on them at the speed of the
/// network, taking the CPU from proxied traffic; held, each flooding connection costs one cheap
/// request a second. A real user gets the same 503, a second later.
pub(super) async fn pace<T>(result: &Result<T, AuthError>) {
    if matches!(result, Err(AuthError::Busy)) {
        tokio::time::sleep(BUSY_PACE).await;
    }
}

impl AuthApi {
    /// Refuses a request over its rate limit (or a login for a regulated account) before any
    /// work is done for it.
    pub(super) async fn throttle(
        &self,
        action: Action,
        ip: IpAddr,
        email: Option<&str>,
    ) -> Result<(), HttpError> {
        let account = email.and_then(normalize_email);
        let mut verdict = self
            .rate_limits()
            .check(action, ip, account.as_deref(), Instant::now());
        if verdict.is_ok()
            && action == Action::Login
            && self.rate_limits().regulation_is_shared()
            && let Some(account) = account
            && !self.rate_limits().rules().off()
        {
            let rules = self.rate_limits().rules();
            let now = self.service().clock().unix();
            let record = self.service().shared_regulation(account).await?;
            if let Some(record) = record {
                verdict = rules.check(&record, IpKey::from(ip), now);
            }
        }
        verdict.map_err(|t| {
            self.metrics().rate_limited(action);
            tracing::warn!(
                target: "audit",
                event = "rate_limited",
                action = ?action,
                by = t.by,
                client_ip = %ip,
            );
            HttpError::TooManyRequests {
                retry_after: t.retry_after,
            }
        })
    }

    /// Feeds a login's outcome to the regulator (in memory, or in the shared store).
    pub(super) async fn record_login<T>(
        &self,
        email: &str,
        ip: IpAddr,
        result: &Result<T, AuthError>,
    ) {
        let Some(account) = normalize_email(email) else {
            return;
        };
        let failed = match result {
            Ok(_) => false,
            Err(
                AuthError::InvalidCredentials
                | AuthError::WrongPassword
                | AuthError::InvalidCode
                | AuthError::WrongCode
                | AuthError::PasskeyRefused,
            ) => true,
            Err(_) => return,
        };
        if !self.rate_limits().regulation_is_shared() {
            if failed {
                self.rate_limits().login_failed(&account, Instant::now());
            } else {
                self.rate_limits()
                    .login_succeeded(&account, ip, Instant::now());
            }
            return;
        }
        let rules = self.rate_limits().rules();
        if failed && rules.off() {
            return;
        }
        let ip = IpKey::from(ip);
        let now = self.service().clock().unix();
        let updated = self
            .service()
            .update_shared_regulation(account, move |rec| {
                if failed {
                    rules.failed(rec, now);
                } else {
                    rules.succeeded(rec, ip, now);
                }
            })
            .await;
        if let Err(e) = updated {
            tracing::warn!(error = %e, "recording the login outcome for regulation failed");
        }
    }
}
