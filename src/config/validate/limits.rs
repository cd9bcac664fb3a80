//! `limits`: sizes, counts and timeouts that bound what one client or connection can take.

use std::time::Duration;

use super::Ctx;
use crate::config::ConfigError;
use crate::config::Limits;
use crate::config::raw::RawLimits;

pub(super) fn validate_limits(cx: &Ctx, l: &RawLimits) -> Result<Limits, ConfigError> {
    Ok(Limits {
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
    })
}
