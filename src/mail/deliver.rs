//! The delivery task: takes messages off the queue and sends them over SMTP, a few at a time,
//! each with its own retries, so one message that keeps failing does not hold up the others.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::{Semaphore, mpsc, watch};

use super::{Counters, MailError};
use crate::config::{EmailSettings, SmtpTls};

/// Messages being delivered at once: enough to keep a queue moving while one retries, few
/// enough not to look like a flood to the relay.
const CONCURRENT: usize = 4;
/// The first wait before a retry; each further one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

pub(super) type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// How hard to try.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    pub max_attempts: u32,
    pub send_timeout: Duration,
}

/// The lettre transport for the configured server.
pub(super) fn transport(s: &EmailSettings) -> Result<Transport, MailError> {
    let host = s.smtp.host.clone();
    let params =
        || TlsParameters::new(host.clone()).map_err(|e| MailError::Transport(e.to_string()));
    let tls = match s.smtp.tls {
        SmtpTls::Opportunistic => Tls::Opportunistic(params()?),
        SmtpTls::StartTls => Tls::Required(params()?),
        SmtpTls::Implicit => Tls::Wrapper(params()?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
        .port(s.smtp.port)
        .tls(tls)
        // lettre's own limit on each network step; the whole attempt has send_timeout too.
        .timeout(Some(s.send_timeout));
    if s.username.is_some() || s.password.is_some() {
        builder = builder.credentials(Credentials::new(
            s.username.clone().unwrap_or_default(),
            s.password
                .as_ref()
                .map(|p| p.expose().clone())
                .unwrap_or_default(),
        ));
    }
    Ok(builder.build())
}

/// Resolves when `shutdown` turns true; never, if its sender is dropped without that.
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    if shutdown.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Takes messages off the queue until shutdown or until every [`super::Mailer`] is dropped.
pub(super) async fn run(
    mut rx: mpsc::Receiver<Message>,
    current: Arc<ArcSwap<super::Settings>>,
    counters: Arc<Counters>,
    shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(CONCURRENT));
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    loop {
        // A slot first, so a message stays on the (bounded) queue until it can be worked on.
        let slot = tokio::select! {
            _ = &mut stop => break,
            slot = slots.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let message = tokio::select! {
            _ = &mut stop => break,
            m = rx.recv() => m,
        };
        let Some(message) = message else { return };
        // The settings in force when the message is taken (a reload may have changed them).
        let (transport, policy) = {
            let now = current.load();
            (now.transport.clone(), now.policy)
        };
        let counters = counters.clone();
        tokio::spawn(async move {
            deliver(&message, policy, &counters, |m| {
                let transport = transport.clone();
                let m = m.clone();
                async move {
                    transport
                        .send(m)
                        .await
                        .map(|_| ())
                        .map_err(|e| (e.to_string(), e.is_permanent()))
                }
            })
            .await;
            drop(slot);
        });
    }
    rx.close();
    let mut left = 0u64;
    while rx.try_recv().is_ok() {
        left += 1;
        counters.dequeued();
    }
    if left > 0 {
        counters.gave_up.fetch_add(left, Ordering::Relaxed);
        tracing::warn!(
            messages = left,
            "mail: shutting down, queued messages not sent"
        );
    }
}

/// One message, with retries: counts the outcome and logs failures by recipient domain.
/// `send` makes one attempt; its error is the message and whether the refusal is permanent.
async fn deliver<F, Fut>(message: &Message, policy: Policy, counters: &Counters, send: F)
where
    F: Fn(&Message) -> Fut,
    Fut: Future<Output = Result<(), (String, bool)>>,
{
    let domain = recipient_domain(message);
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=policy.max_attempts {
        let (error, permanent) =
            match tokio::time::timeout(policy.send_timeout, send(message)).await {
                Ok(Ok(())) => {
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    counters.dequeued();
                    tracing::debug!(%domain, attempt, "mail: delivered");
                    return;
                }
                Ok(Err(e)) => e,
                Err(_) => ("timed out".to_owned(), false),
            };
        counters.failed_attempts.fetch_add(1, Ordering::Relaxed);
        let last = permanent || attempt == policy.max_attempts;
        tracing::warn!(
            %domain,
            attempt,
            max_attempts = policy.max_attempts,
            permanent,
            %error,
            "mail: delivery attempt failed{}",
            if last { ", giving up" } else { "" }
        );
        if last {
            break;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    counters.gave_up.fetch_add(1, Ordering::Relaxed);
    counters.dequeued();
}

/// The domain of the message's first recipient, for logs (never the whole address).
fn recipient_domain(message: &Message) -> String {
    message
        .envelope()
        .to()
        .first()
        .map_or_else(|| "(none)".to_owned(), |a| a.domain().to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    fn message() -> Message {
        Message::builder()
            .from("a@from.example".parse().unwrap())
            .to("someone@to.example".parse().unwrap())
            .subject("s")
            .body("b".to_owned())
            .unwrap()
    }

    async fn run_with(failures: u32, permanent: bool, max_attempts: u32) -> (Counters, u32) {
        let counters = Counters::default();
        counters.queued.store(1, Ordering::Relaxed);
        let calls = AtomicU32::new(0);
        let policy = Policy {
            max_attempts,
            send_timeout: Duration::from_secs(5),
        };
        deliver(&message(), policy, &counters, |_| {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            async move {
                if n < failures {
                    Err(("451 try later".to_owned(), permanent))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        (counters, calls.load(Ordering::Relaxed))
    }

    #[tokio::test(start_paused = true)]
    async fn retries_with_backoff_until_delivered() {
        let started = tokio::time::Instant::now();
        let (c, calls) = run_with(3, false, 5).await;
        assert_eq!(calls, 4);
        let s = c.snapshot();
        assert_eq!(
            (s.sent, s.failed_attempts, s.gave_up, s.queued),
            (1, 3, 0, 0)
        );
        // 1 s + 2 s + 4 s of backoff.
        assert_eq!(started.elapsed().as_secs(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts_or_a_permanent_refusal() {
        let (c, calls) = run_with(10, false, 3).await;
        assert_eq!(calls, 3);
        let s = c.snapshot();
        assert_eq!(
            (s.sent, s.failed_attempts, s.gave_up, s.queued),
            (0, 3, 1, 0)
        );
        let (c, calls) = run_with(10, true, 3).await;
        assert_eq!(calls, 1);
        assert_eq!(c.snapshot().gave_up, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_attempt_times_out_and_is_retried() {
        let counters = Counters::default();
        let calls = AtomicU32::new(0);
        let policy = Policy {
            max_attempts: 2,
            send_timeout: Duration::from_secs(5),
        };
        deliver(&message(), policy, &counters, |_| {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            async move {
                if n == 0 {
                    std::future::pending::<()>().await;
                }
                Ok(())
            }
        })
        .await;
        let s = counters.snapshot();
        assert_eq!((s.sent, s.failed_attempts), (1, 1));
        assert_eq!(recipient_domain(&message()), "to.example");
    }
}
