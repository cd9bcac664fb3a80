//! The mailer's metrics, read at scrape time from its counters: `mail_queued`,
//! `mail_sent_total`, `mail_failed_attempts_total`, `mail_dropped_total{reason}` (`gave_up`,
//! `queue_full`). Registered with [`Metrics::attach`], so the metrics module needs nothing from
//! mail.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;

use super::{Counters, Mailer};
use crate::metrics::{Metrics, counter, gauge};

impl Mailer {
    /// Registers the mailer's metrics with the process's metrics.
    pub fn register_metrics(&self, metrics: &Metrics) {
        metrics.attach(Arc::new(MailMetrics(self.inner.counters.clone())));
    }
}

#[derive(Debug)]
struct MailMetrics(Arc<Counters>);

impl Collector for MailMetrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let s = self.0.snapshot();
        gauge(
            &mut enc,
            "mail_queued",
            "E-mails accepted and not yet delivered or given up",
            i64::try_from(s.queued).unwrap_or(i64::MAX),
        )?;
        counter(
            &mut enc,
            "mail_sent",
            "E-mails the SMTP server accepted",
            s.sent,
        )?;
        counter(
            &mut enc,
            "mail_failed_attempts",
            "E-mail delivery attempts that failed (each retry counts)",
            s.failed_attempts,
        )?;
        let mut family = enc.encode_descriptor(
            "mail_dropped",
            "E-mails not delivered: given up after retries, or refused because the queue was full",
            None,
            MetricType::Counter,
        )?;
        for (reason, v) in [("gave_up", s.gave_up), ("queue_full", s.queue_full)] {
            let labels = [("reason", reason)];
            let labels: &[(&str, &str)] = &labels;
            ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
