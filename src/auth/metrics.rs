//! The auth service's own metrics, read at scrape time from the counters it keeps anyway:
//! `logins_total{result}`, `refreshes_total`, `refresh_reuse_detected_total`,
//! `mfa_enrolled_total`, `mfa_code_failures_total`, `sso_events_total{provider,outcome}`,
//! `store_sync_age_seconds`, `hashing_in_flight`, `hashing_completed_total`,
//! `hashing_refused_total`. Auth registers them with [`Metrics::attach`], so the metrics module
//! needs nothing from auth.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;

use super::Core;
use super::service::AuthService;
use crate::metrics::{Metrics, counter, gauge};

impl Core {
    /// Registers the auth service's metrics with the process's metrics.
    pub fn register_metrics(&self, metrics: &Metrics) {
        metrics.attach(Arc::new(ServiceMetrics(self.service.clone())));
        if let Some(mailer) = &self.mailer {
            mailer.register_metrics(metrics);
        }
    }
}

/// Reads the service's counters, the change feed's age and the hashing pool at each scrape.
#[derive(Debug)]
struct ServiceMetrics(AuthService);

impl Collector for ServiceMetrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let service = &self.0;
        let c = service.counters();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        {
            let mut family = enc.encode_descriptor(
                "logins",
                "Completed logins (password, and second factor where the user has one), by result",
                None,
                MetricType::Counter,
            )?;
            for (result, v) in [
                ("ok", load(&c.logins_ok)),
                ("failed", load(&c.logins_failed)),
            ] {
                let labels = [("result", result)];
                let labels: &[(&str, &str)] = &labels;
                ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
            }
        }
        counter(
            &mut enc,
            "refreshes",
            "Refresh token rotations",
            load(&c.refreshes),
        )?;
        counter(
            &mut enc,
            "refresh_reuse_detected",
            "Rotated refresh tokens presented again (the session was ended)",
            load(&c.reuse_detected),
        )?;
        counter(
            &mut enc,
            "mfa_enrolled",
            "Authenticator apps set up",
            load(&c.mfa_enrolled),
        )?;
        counter(
            &mut enc,
            "mfa_code_failures",
            "Second-factor codes refused (sign-in, step-up, setup, removal)",
            load(&c.mfa_failed),
        )?;
        {
            let events: Vec<((String, String), u64)> = c
                .sso
                .lock()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
                .unwrap_or_default();
            let mut family = enc.encode_descriptor(
                "sso_events",
                "Single sign-on outcomes by provider: ok, linked, re-checks (recheck_ok, recheck_revoked) and refusals (group, email_domain, bad_state, bad_id_token, provider_unreachable...)",
                None,
                MetricType::Counter,
            )?;
            for ((provider, outcome), v) in &events {
                let labels = [
                    ("provider", provider.as_str()),
                    ("outcome", outcome.as_str()),
                ];
                let labels: &[(&str, &str)] = &labels;
                ConstCounter::new(*v).encode(family.encode_family(&labels)?)?;
            }
        }
        gauge(
            &mut enc,
            "store_sync_age_seconds",
            "Seconds since the change feed (revocations) was last read from the store",
            i64::try_from(service.seconds_since_sync()).unwrap_or(i64::MAX),
        )?;
        let h = service.hasher();
        gauge(
            &mut enc,
            "hashing_in_flight",
            "Password hashes running now",
            i64::try_from(h.in_flight()).unwrap_or(i64::MAX),
        )?;
        counter(
            &mut enc,
            "hashing_completed",
            "Password hashes and verifications run",
            h.completed(),
        )?;
        counter(
            &mut enc,
            "hashing_refused",
            "Requests answered 503 because the hashing pool was saturated",
            h.refused(),
        )?;
        Ok(())
    }
}
