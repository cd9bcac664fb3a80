//! Prometheus metrics, served in the text exposition format on the admin listener (`/metrics`).
//!
//! Per-request counting is lock-free and allocation-free: each route owns its counters
//! ([`RouteStats`], looked up once when the route table is built) and the handler bumps atomics.
//! Everything that already counts itself elsewhere (the hashing pool, the auth service's login and
//! refresh totals, the rate limiter's key count) is read at scrape time by a collector, so no
//! second copy of those numbers is kept. The auth service's collector lives in `auth::metrics`
//! and is registered with [`Metrics::attach`]: this module imports nothing from auth.
//!
//! Families (all prefixed `gateway_`):
//! `requests_total{route,class}`, `upstream_duration_seconds{route}` (histogram),
//! `auth_outcomes_total{outcome}`, `logins_total{result}`, `refreshes_total`,
//! `refresh_reuse_detected_total`, `rate_limited_total{action}`, `hashing_in_flight`,
//! `hashing_completed_total`, `hashing_refused_total`, `open_connections`,
//! `connections_refused_per_ip_total`,
//! `config_reloads_total{result}`, `certificate_expiry_timestamp_seconds`,
//! `rate_limit_tracked_keys`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::ratelimit::Limits;

/// Status classes counted per route.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Counters of one route.
#[derive(Debug)]
pub struct RouteStats {
    name: String,
    by_class: [Counter; 5],
    upstream: Histogram,
}

impl RouteStats {
    fn new(name: &str) -> Self {
        RouteStats {
            name: name.to_owned(),
            by_class: Default::default(),
            // 0.5 ms .. ~16 s
            upstream: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
        }
    }

    /// Counts one answered request.
    pub fn record(&self, status: u16, upstream: Option<Duration>) {
        let class = usize::from((status / 100).clamp(1, 5) - 1);
        if let Some(c) = self.by_class.get(class) {
            c.inc();
        }
        if let Some(d) = upstream {
            self.upstream.observe(d.as_secs_f64());
        }
    }
}

/// Why a request to a protected route was or was not let through.
#[derive(Debug, Clone, Copy)]
pub enum AuthOutcome {
    Ok,
    Missing,
    Expired,
    Invalid,
    Revoked,
    Forbidden,
}

const OUTCOMES: [&str; 6] = [
    "ok",
    "missing",
    "expired",
    "invalid",
    "revoked",
    "forbidden",
];

/// Which rate limit refused a request.
const LIMITED: [&str; 4] = ["login", "signup", "refresh", "sso"];

/// All metrics of one process (shared across config reloads).
#[derive(Debug, Default)]
pub struct Metrics {
    routes: Mutex<HashMap<String, Arc<RouteStats>>>,
    auth: [Counter; 6],
    rate_limited: [Counter; 4],
    open_connections: AtomicI64,
    refused_per_ip: Counter,
    reloads_ok: Counter,
    reloads_failed: Counter,
    cert_expiry: AtomicI64,
    /// What lower layers count themselves and registered here (see [`Metrics::attach`]).
    attached: Mutex<Vec<Arc<dyn Collector>>>,
    /// The rate limits of the configuration serving now (replaced on reload).
    limits: Mutex<Weak<Limits>>,
}

impl Metrics {
    /// A fresh set of metrics.
    pub fn new() -> Arc<Self> {
        Arc::new(Metrics::default())
    }

    /// The counters of a route, created on first use and kept across reloads by name.
    pub fn route(&self, name: &str) -> Arc<RouteStats> {
        let Ok(mut map) = self.routes.lock() else {
            return Arc::new(RouteStats::new(name));
        };
        map.entry(name.to_owned())
            .or_insert_with(|| Arc::new(RouteStats::new(name)))
            .clone()
    }

    /// Registers metrics that a lower layer keeps itself, read at each scrape after this
    /// module's own (the auth service's logins, refreshes and hashing pool: see
    /// `auth::metrics`; the mailer's queue and deliveries: `mail::metrics`). This module knows
    /// nothing of what they are. Each layer registers once, at start.
    pub fn attach(&self, collector: Arc<dyn Collector>) {
        if let Ok(mut attached) = self.attached.lock() {
            attached.push(collector);
        }
    }

    /// Points the key-count gauge at the rate limits now in force.
    pub fn track_limits(&self, limits: &Arc<Limits>) {
        if let Ok(mut l) = self.limits.lock() {
            *l = Arc::downgrade(limits);
        }
    }

    pub fn auth_outcome(&self, o: AuthOutcome) {
        if let Some(c) = self.auth.get(o as usize) {
            c.inc();
        }
    }

    pub fn rate_limited(&self, action: crate::ratelimit::Action) {
        let i = match action {
            crate::ratelimit::Action::Login => 0,
            crate::ratelimit::Action::Signup => 1,
            crate::ratelimit::Action::Refresh => 2,
            crate::ratelimit::Action::Sso => 3,
        };
        if let Some(c) = self.rate_limited.get(i) {
            c.inc();
        }
    }

    pub fn connection_opened(&self) {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection closed at accept by `limits.max_connections_per_ip`.
    pub fn connection_refused_per_ip(&self) {
        self.refused_per_ip.inc();
    }

    pub fn connection_closed(&self) {
        self.open_connections.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn reload(&self, ok: bool) {
        if ok {
            self.reloads_ok.inc();
        } else {
            self.reloads_failed.inc();
        }
    }

    /// The serving certificate's notAfter, unix seconds.
    pub fn set_cert_expiry(&self, unix: i64) {
        self.cert_expiry.store(unix, Ordering::Relaxed);
    }

    /// The text exposition of every metric.
    pub fn render(self: &Arc<Self>) -> String {
        let mut registry = Registry::with_prefix("gateway");
        registry.register_collector(Box::new(Scrape(self.clone())));
        if let Ok(attached) = self.attached.lock() {
            for collector in attached.iter() {
                registry.register_collector(Box::new(Attached(collector.clone())));
            }
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

#[derive(Debug)]
struct Scrape(Arc<Metrics>);

/// A collector registered through [`Metrics::attach`], shared across scrapes.
#[derive(Debug)]
struct Attached(Arc<dyn Collector>);

impl Collector for Attached {
    fn encode(&self, enc: DescriptorEncoder) -> std::fmt::Result {
        self.0.encode(enc)
    }
}

/// Encodes one counter family without labels (for collectors here and in lower layers).
pub(crate) fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> std::fmt::Result {
    ConstCounter::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// Encodes one gauge family without labels (for collectors here and in lower layers).
pub(crate) fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: i64,
) -> std::fmt::Result {
    ConstGauge::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn labelled(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[&str],
    counters: &[Counter],
) -> std::fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, c) in values.iter().zip(counters) {
        let labels = [(label, *value)];
        let labels: &[(&str, &str)] = &labels;
        c.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let m = &self.0;
        let routes: Vec<Arc<RouteStats>> = m
            .routes
            .lock()
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default();
        {
            let mut family = enc.encode_descriptor(
                "requests",
                "Requests answered, by route and status class",
                None,
                MetricType::Counter,
            )?;
            for r in &routes {
                for (class, c) in CLASSES.iter().zip(&r.by_class) {
                    let labels = [("route", r.name.as_str()), ("class", *class)];
                    let labels: &[(&str, &str)] = &labels;
                    c.encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut family = enc.encode_descriptor(
                "upstream_duration_seconds",
                "Time from sending a request upstream to its response headers",
                None,
                MetricType::Histogram,
            )?;
            for r in &routes {
                let labels = [("route", r.name.as_str())];
                let labels: &[(&str, &str)] = &labels;
                r.upstream.encode(family.encode_family(&labels)?)?;
            }
        }
        labelled(
            &mut enc,
            "auth_outcomes",
            "Token checks on protected routes, by outcome",
            "outcome",
            &OUTCOMES,
            &m.auth,
        )?;
        labelled(
            &mut enc,
            "rate_limited",
            "Requests refused by a rate limit or login regulation",
            "action",
            &LIMITED,
            &m.rate_limited,
        )?;
        {
            let mut family = enc.encode_descriptor(
                "config_reloads",
                "Configuration reloads, by result",
                None,
                MetricType::Counter,
            )?;
            for (result, c) in [("ok", &m.reloads_ok), ("failed", &m.reloads_failed)] {
                let labels = [("result", result)];
                let labels: &[(&str, &str)] = &labels;
                c.encode(family.encode_family(&labels)?)?;
            }
        }
        gauge(
            &mut enc,
            "open_connections",
            "Client connections open now",
            m.open_connections.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "connections_refused_per_ip",
            "Connections closed at accept by limits.max_connections_per_ip",
            m.refused_per_ip.get(),
        )?;
        gauge(
            &mut enc,
            "certificate_expiry_timestamp_seconds",
            "When the HTTPS certificate expires (unix time; 0 without HTTPS)",
            m.cert_expiry.load(Ordering::Relaxed),
        )?;
        if let Some(limits) = m.limits.lock().ok().and_then(|l| l.upgrade()) {
            gauge(
                &mut enc,
                "rate_limit_tracked_keys",
                "Keys held by the rate limiters and the login regulator",
                i64::try_from(limits.tracked_keys()).unwrap_or(i64::MAX),
            )?;
        }
        Ok(())
    }
}

/// A process-wide sequence for request ids: a random prefix per process plus a counter, so ids
/// are unique without a syscall per request.
pub fn request_id() -> http::HeaderValue {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = u64::from(*PREFIX.get_or_init(rand::random::<u32>));
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut id = [0u8; 24];
    for (i, digit) in id.iter_mut().enumerate() {
        let nibble = if i < 8 {
            (prefix >> (4 * (7 - i))) & 0xf
        } else {
            (n >> (4 * (23 - i))) & 0xf
        };
        *digit = b"0123456789abcdef"[nibble as usize];
    }
    // Hex digits are always a valid header value.
    http::HeaderValue::from_bytes(&id).unwrap_or_else(|_| http::HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_counters_render() {
        let m = Metrics::new();
        let r = m.route("app");
        r.record(200, Some(Duration::from_millis(3)));
        r.record(404, None);
        r.record(502, None);
        m.auth_outcome(AuthOutcome::Revoked);
        let text = m.render();
        assert!(
            text.contains("gateway_requests_total{route=\"app\",class=\"2xx\"} 1"),
            "{text}"
        );
        assert!(text.contains("gateway_requests_total{route=\"app\",class=\"4xx\"} 1"));
        assert!(text.contains("gateway_upstream_duration_seconds_count{route=\"app\"} 1"));
        assert!(text.contains("gateway_auth_outcomes_total{outcome=\"revoked\"} 1"));
        // The same route name gets the same counters after a reload.
        m.route("app").record(200, None);
        assert!(m.render().contains("class=\"2xx\"} 2"));
    }

    #[test]
    fn request_ids_are_unique() {
        let a = request_id();
        let b = request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
    }
}
