//! Account e-mail through a real SMTP server (`smtp::SmtpSink`, aiosmtpd): what arrives, retries
//! after transient refusals, and that a dead server or a full queue never blocks `send`.

use std::path::Path;
use std::time::{Duration, Instant};

use gateway::config::EmailSettings;
use gateway::mail::{MailError, MailStats, Mailer, Outgoing, Template, Vars};
use tokio::sync::watch;

use crate::smtp::SmtpSink;

fn settings(smtp_url: &str, extra: &str) -> EmailSettings {
    let yaml = format!(
        "version: 1\nemail:\n  smtp_url: {smtp_url}\n  from: Acme <no-reply@acme.example>\n  public_url: https://login.acme.example/\n  send_timeout: 5s\n{extra}"
    );
    gateway::config::from_str(&yaml, "test.yaml", Path::new("/"), &|_| None)
        .unwrap()
        .email
        .unwrap()
}

/// An address nothing listens on: a port that was just free.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("smtp://127.0.0.1:{port}")
}

fn verify_mail(mailer: &Mailer, to: &str, token: &str) -> Outgoing {
    let link = mailer.link("/verify", token);
    let rendered = mailer.render(
        Template::VerifyEmail,
        &Vars {
            link: &link,
            email: to,
            expires_in: "24 hours",
        },
    );
    Outgoing::new(to, rendered).unwrap()
}

/// Waits until `done` holds for the mailer's counters.
async fn stats_until(mailer: &Mailer, done: impl Fn(&MailStats) -> bool) -> MailStats {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = mailer.stats();
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "stats stuck at {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_message_arrives_with_both_parts_and_the_link() {
    let Some(sink) = SmtpSink::start() else {
        return;
    };
    let (_stop, stop_rx) = watch::channel(false);
    let mailer = Mailer::start(&settings(&sink.url(), ""), stop_rx).unwrap();
    let metrics = gateway::metrics::Metrics::new();
    mailer.register_metrics(&metrics);

    mailer
        .send(verify_mail(&mailer, "ann@example.com", "tok+en/1="))
        .unwrap();
    let m = sink.wait_for_message(Duration::from_secs(10)).await;
    assert_eq!(m.mail_from, "no-reply@acme.example");
    assert_eq!(m.rcpt_to, ["ann@example.com"]);
    assert!(
        m.from.contains("Acme") && m.from.contains("<no-reply@acme.example>"),
        "{m:?}"
    );
    assert_eq!(m.to, "ann@example.com");
    assert_eq!(m.subject, "Confirm your e-mail address for Acme");
    assert_eq!(m.content_type, "multipart/alternative");
    let link = "https://login.acme.example/verify?token=tok%2Ben%2F1%3D";
    let text = m.text.expect("a text/plain part");
    assert!(text.contains(link), "{text}");
    assert!(
        text.contains("24 hours") && text.contains("ann@example.com"),
        "{text}"
    );
    let html = m.html.expect("a text/html part");
    assert!(html.contains(&format!("href=\"{link}\"")), "{html}");

    let s = stats_until(&mailer, |s| s.sent == 1).await;
    assert_eq!((s.queued, s.failed_attempts, s.gave_up), (0, 0, 0));
    let text = metrics.render();
    assert!(text.contains("gateway_mail_sent_total 1"), "{text}");
    assert!(text.contains("gateway_mail_queued 0"), "{text}");
    assert!(
        text.contains("gateway_mail_dropped_total{reason=\"queue_full\"} 0"),
        "{text}"
    );
}

#[tokio::test]
async fn transient_refusals_are_retried_until_delivered() {
    let Some(sink) = SmtpSink::start_failing(2) else {
        return;
    };
    let (_stop, stop_rx) = watch::channel(false);
    let mailer = Mailer::start(&settings(&sink.url(), "  max_attempts: 4\n"), stop_rx).unwrap();
    mailer
        .send(verify_mail(&mailer, "bob@example.org", "t"))
        .unwrap();
    // After 1 s and 2 s of backoff.
    let m = sink.wait_for_message(Duration::from_secs(20)).await;
    assert_eq!(m.rcpt_to, ["bob@example.org"]);
    let s = stats_until(&mailer, |s| s.sent == 1).await;
    assert_eq!((s.failed_attempts, s.gave_up, s.queued), (2, 0, 0));
    assert_eq!(sink.received(), 1);
}

#[tokio::test]
async fn a_dead_server_does_not_block_send_and_failures_are_counted() {
    let (_stop, stop_rx) = watch::channel(false);
    let mailer = Mailer::start(&settings(&dead_url(), "  max_attempts: 2\n"), stop_rx).unwrap();
    let started = Instant::now();
    mailer
        .send(verify_mail(&mailer, "carol@example.net", "t"))
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "send waited {:?}",
        started.elapsed()
    );
    let s = stats_until(&mailer, |s| s.gave_up == 1).await;
    assert_eq!((s.sent, s.failed_attempts, s.queued), (0, 2, 0));
}

#[tokio::test]
async fn a_full_queue_refuses_at_once() {
    let (_stop, stop_rx) = watch::channel(false);
    let mailer = Mailer::start(&settings(&dead_url(), "  queue_size: 1\n"), stop_rx).unwrap();
    // No await in between: the delivery task cannot take the first one off the queue yet.
    mailer
        .send(verify_mail(&mailer, "d@example.com", "1"))
        .unwrap();
    let started = Instant::now();
    let e = mailer
        .send(verify_mail(&mailer, "e@example.com", "2"))
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(100));
    assert!(matches!(e, MailError::QueueFull(1)), "{e}");
    let s = mailer.stats();
    assert_eq!((s.queue_full, s.queued), (1, 1));
}

#[tokio::test]
async fn shutdown_stops_taking_messages() {
    let (stop, stop_rx) = watch::channel(false);
    let mailer = Mailer::start(&settings(&dead_url(), "  queue_size: 3\n"), stop_rx).unwrap();
    stop.send(true).unwrap();
    stats_until(&mailer, |_| true).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match mailer.send(verify_mail(&mailer, "f@example.com", "1")) {
            Err(MailError::Closed) => break,
            _ => {
                assert!(
                    Instant::now() < deadline,
                    "still taking messages after shutdown"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
