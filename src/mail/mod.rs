//! Account e-mail (verification, password reset) over SMTP, off the request path.
//!
//! [`Mailer::start`] takes the checked `email` settings and spawns one background task. A
//! request handler renders a [`Template`] ([`Mailer::render`]), builds the link it carries
//! ([`Mailer::link`]: always under `email.public_url`, never a request's `Host`) and calls
//! [`Mailer::send`], which only puts the message on a bounded queue and returns at once: a
//! slow or failing SMTP server never holds up a request, and a full queue is an error
//! ([`MailError::QueueFull`]) the caller can answer however it likes.
//!
//! The background task ([`deliver`]) sends with lettre over `smtp://` (STARTTLS when offered,
//! or required with credentials) or `smtps://`, a few messages at a time. Each attempt has
//! `email.send_timeout`; a failed one is retried after 1 s, 2 s, 4 s... (at most a minute) up to
//! `email.max_attempts`, and a permanent refusal (5xx) is not retried. Failures are logged with
//! the recipient's domain only, never the address's local part, the link or the body.
//!
//! What it counts ([`MailStats`]) is exported as Prometheus metrics ([`Mailer::register_metrics`],
//! `metrics` here) so the metrics module imports nothing from mail. The `/readyz` answer does not
//! depend on mail: an SMTP outage must not take the proxy out of its load balancer.
//!
//! The public surface (for the binary and the integration tests): [`Mailer`], [`Outgoing`],
//! [`MailStats`], [`MailError`], and the template types.

mod deliver;
mod metrics;
mod template;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use lettre::message::Mailbox;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::sync::{mpsc, watch};

use crate::config::EmailSettings;
pub use template::{Rendered, Template, Templates, Vars, expires_in_words};

/// Errors of the mail layer. None of them carries a link or a body.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The queue holds `email.queue_size` messages already; this one was not taken.
    #[error("the mail queue is full ({0} messages waiting)")]
    QueueFull(usize),
    /// The mailer has shut down.
    #[error("the mailer has stopped")]
    Closed,
    /// The recipient is not a valid address.
    #[error("invalid recipient address")]
    Address,
    /// lettre refused to build the message.
    #[error("cannot build the message: {0}")]
    Build(String),
    /// The SMTP transport could not be set up (TLS settings).
    #[error("cannot set up the SMTP transport: {0}")]
    Transport(String),
    /// [`Mailer::start`] was called outside a tokio runtime.
    #[error("the mailer needs a tokio runtime to run in")]
    NoRuntime,
}

/// A message to send: who to, and what ([`Mailer::render`]).
#[derive(Clone)]
pub struct Outgoing {
    to: Mailbox,
    rendered: Rendered,
}

impl Outgoing {
    /// A message to `to` (`ann@example.com` or `Ann <ann@example.com>`).
    pub fn new(to: &str, rendered: Rendered) -> Result<Outgoing, MailError> {
        let to = Mailbox::from_str(to.trim()).map_err(|_| MailError::Address)?;
        Ok(Outgoing { to, rendered })
    }
}

impl fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outgoing")
            .field("to_domain", &self.to.email.domain())
            .field("rendered", &self.rendered)
            .finish()
    }
}

/// A snapshot of what the mailer has counted since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailStats {
    /// Accepted by [`Mailer::send`] and neither delivered nor given up yet.
    pub queued: u64,
    /// Delivered (the SMTP server accepted them).
    pub sent: u64,
    /// Delivery attempts that failed (each retry counts).
    pub failed_attempts: u64,
    /// Messages given up after their last attempt, a permanent refusal, or at shutdown.
    pub gave_up: u64,
    /// Messages refused by [`Mailer::send`] because the queue was full.
    pub queue_full: u64,
}

#[derive(Debug, Default)]
struct Counters {
    queued: AtomicU64,
    sent: AtomicU64,
    failed_attempts: AtomicU64,
    gave_up: AtomicU64,
    queue_full: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> MailStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MailStats {
            queued: load(&self.queued),
            sent: load(&self.sent),
            failed_attempts: load(&self.failed_attempts),
            gave_up: load(&self.gave_up),
            queue_full: load(&self.queue_full),
        }
    }

    /// A queued message is done with (sent or given up).
    fn dequeued(&self) {
        let _ = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

/// The handle request handlers send mail through; cheap to clone.
#[derive(Clone)]
pub struct Mailer {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<lettre::Message>,
    counters: Arc<Counters>,
    /// What a reload may change; the delivery task reads it for each message it takes.
    current: Arc<ArcSwap<Settings>>,
    /// The queue's capacity, fixed at start.
    queue_size: usize,
}

/// The settings in force, swapped whole by [`Mailer::reconfigure`].
struct Settings {
    templates: Templates,
    from: Mailbox,
    public_url: String,
    transport: deliver::Transport,
    policy: deliver::Policy,
}

impl Settings {
    /// Everything built from `settings` that can fail, so a refused reload changes nothing.
    fn build(settings: &EmailSettings) -> Result<Settings, MailError> {
        let app = settings.from.name.as_deref().unwrap_or("Gateway");
        Ok(Settings {
            templates: Templates::new(app, &settings.templates),
            from: settings.from.clone(),
            public_url: settings.public_url.clone(),
            transport: deliver::transport(settings)?,
            policy: deliver::Policy {
                max_attempts: settings.max_attempts.max(1),
                send_timeout: settings.send_timeout,
            },
        })
    }
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.inner.current.load();
        f.debug_struct("Mailer")
            .field("from", &current.from)
            .field("public_url", &current.public_url)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Settings for [`Mailer::reconfigure`], built and checked ahead of the swap.
pub struct Prepared(Settings);

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("from", &self.0.from)
            .finish_non_exhaustive()
    }
}

/// Characters of a token that are escaped in a link: all but `A-Z a-z 0-9 - . _ ~`.
const TOKEN: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl Mailer {
    /// Starts the delivery task on the current tokio runtime. It stops taking messages when
    /// `shutdown` turns true (a dropped sender is not a shutdown) or every handle is dropped;
    /// messages still queued then are counted as given up.
    pub fn start(
        settings: &EmailSettings,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Mailer, MailError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| MailError::NoRuntime)?;
        let current = Arc::new(ArcSwap::from_pointee(Settings::build(settings)?));
        let (tx, rx) = mpsc::channel(settings.queue_size.max(1));
        let counters = Arc::new(Counters::default());
        runtime.spawn(deliver::run(
            rx,
            current.clone(),
            counters.clone(),
            shutdown,
        ));
        tracing::info!(server = %settings.smtp, "mail: sending account e-mails");
        Ok(Mailer {
            inner: Arc::new(Inner {
                tx,
                counters,
                current,
                queue_size: settings.queue_size,
            }),
        })
    }

    /// Checks and builds new settings (for a reload) without applying them.
    pub fn prepare(settings: &EmailSettings) -> Result<Prepared, MailError> {
        Settings::build(settings).map(Prepared)
    }

    /// Applies settings from [`Mailer::prepare`]: the server, credentials, sender, links,
    /// templates and retry policy of every message sent from now on, queued ones included. The
    /// queue's size stays what it was at start.
    pub fn reconfigure(&self, prepared: Prepared) {
        self.inner.current.store(Arc::new(prepared.0));
    }

    /// The queue size fixed at start (a reload cannot change it).
    pub fn queue_size(&self) -> usize {
        self.inner.queue_size
    }

    /// Queues `msg` for delivery and returns at once; it never waits for the SMTP server.
    pub fn send(&self, msg: Outgoing) -> Result<(), MailError> {
        let message = lettre::Message::builder()
            .from(self.inner.current.load().from.clone())
            .to(msg.to)
            .subject(msg.rendered.subject)
            .multipart(lettre::message::MultiPart::alternative_plain_html(
                msg.rendered.text,
                msg.rendered.html,
            ))
            .map_err(|e| MailError::Build(e.to_string()))?;
        let counters = &self.inner.counters;
        // Counted before it is on the queue, so the task never takes one off that is not there.
        counters.queued.fetch_add(1, Ordering::Relaxed);
        match self.inner.tx.try_send(message) {
            Ok(()) => Ok(()),
            Err(e) => {
                counters.dequeued();
                match e {
                    mpsc::error::TrySendError::Full(_) => {
                        counters.queue_full.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            queue_size = self.inner.queue_size,
                            "mail: queue full, message dropped"
                        );
                        Err(MailError::QueueFull(self.inner.queue_size))
                    }
                    mpsc::error::TrySendError::Closed(_) => Err(MailError::Closed),
                }
            }
        }
    }

    /// Fills in `template` with the templates in force (built-in or `email.templates_dir`).
    pub fn render(&self, template: Template, vars: &Vars<'_>) -> Rendered {
        self.inner.current.load().templates.render(template, vars)
    }

    /// `{public_url}{path}?token={token, percent-encoded}` (`&token=` when `path` has a query).
    pub fn link(&self, path: &str, token: &str) -> String {
        let slash = if path.starts_with('/') { "" } else { "/" };
        let sep = if path.contains('?') { '&' } else { '?' };
        format!(
            "{}{slash}{path}{sep}token={}",
            self.inner.current.load().public_url,
            utf8_percent_encode(token, TOKEN)
        )
    }

    /// Queues `template` to `to`, with the link to `path` carrying `token`, good for `ttl`.
    pub fn send_link(
        &self,
        template: Template,
        to: &str,
        path: &str,
        token: &str,
        ttl: std::time::Duration,
    ) -> Result<(), MailError> {
        let link = self.link(path, token);
        let vars = Vars {
            link: &link,
            email: to,
            expires_in: &expires_in_words(ttl),
        };
        self.send(Outgoing::new(to, self.render(template, &vars))?)
    }

    /// What has been counted so far.
    pub fn stats(&self) -> MailStats {
        self.inner.counters.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EmailSettings {
        let yaml = "version: 1\nemail:\n  smtp_url: smtp://127.0.0.1:9\n  from: Acme <no-reply@acme.example>\n  public_url: https://login.acme.example/base/\n  queue_size: 2\n";
        crate::config::from_str(yaml, "t.yaml", std::path::Path::new("/"), &|_| None)
            .unwrap()
            .email
            .unwrap()
    }

    #[test]
    fn start_needs_a_runtime() {
        let (_tx, rx) = watch::channel(false);
        assert!(matches!(
            Mailer::start(&settings(), rx),
            Err(MailError::NoRuntime)
        ));
    }

    #[tokio::test]
    async fn links_are_under_the_public_url_with_the_token_encoded() {
        let (_tx, rx) = watch::channel(false);
        let m = Mailer::start(&settings(), rx).unwrap();
        assert_eq!(
            m.link("/verify", "a+b/c=d~e"),
            "https://login.acme.example/base/verify?token=a%2Bb%2Fc%3Dd~e"
        );
        assert_eq!(
            m.link("reset?x=1", "t"),
            "https://login.acme.example/base/reset?x=1&token=t"
        );
        let vars = Vars {
            link: "l",
            email: "e",
            expires_in: "1 hour",
        };
        assert!(
            m.render(Template::VerifyEmail, &vars)
                .subject
                .contains("Acme")
        );
        assert!(matches!(
            Outgoing::new("not an address", m.render(Template::VerifyEmail, &vars)),
            Err(MailError::Address)
        ));
    }
}
