//! `rate_limits` and `regulation`: request rates per client and account, and the ban on repeated
//! login failures.

use std::time::Duration;

use super::Ctx;
use crate::config::raw::{RawConfig, Sp};
use crate::config::units;
use crate::config::{ConfigError, Rate, RateLimitSettings};

pub(super) fn validate_rate_limits(
    cx: &Ctx,
    raw: &RawConfig,
) -> Result<RateLimitSettings, ConfigError> {
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
        sso_per_ip: rate(&r.sso_per_ip, "rate_limits.sso_per_ip", per_min(60))?,
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
