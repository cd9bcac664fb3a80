//! A real SMTP server for the mail tests: `tests/smtp/sink.py` (Python's aiosmtpd) on a port of
//! its choosing, storing each message it accepts, parsed, in a temporary directory.
//!
//! Like the PostgreSQL and nginx helpers, a test skips (with a note on stderr) when python3 or
//! aiosmtpd is missing, unless `GATEWAY_REQUIRE_SMTP` is set (CI), which turns that into a
//! failure. `python3 -m pip install aiosmtpd` installs it.

// Not every test uses every helper.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A message the sink accepted, parsed by Python's `email` package.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Message {
    /// The SMTP envelope: `MAIL FROM` and `RCPT TO`.
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The headers.
    pub from: String,
    pub to: String,
    pub subject: String,
    /// The top-level content type (`multipart/alternative`).
    pub content_type: String,
    /// The `text/plain` part, decoded (CRLF line ends as sent).
    pub text: Option<String>,
    /// The `text/html` part, decoded.
    pub html: Option<String>,
}

/// A running sink; killed when dropped.
pub struct SmtpSink {
    child: Child,
    dir: tempfile::TempDir,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    /// The next message [`SmtpSink::wait_for_message`] returns.
    next: AtomicUsize,
}

impl SmtpSink {
    /// A sink that accepts every message, or `None` (after a skip note) without aiosmtpd.
    pub fn start() -> Option<SmtpSink> {
        SmtpSink::start_failing(0)
    }

    /// A sink that answers the first `fail` messages with `451` (try again later).
    pub fn start_failing(fail: u32) -> Option<SmtpSink> {
        if !available() {
            assert!(
                std::env::var_os("GATEWAY_REQUIRE_SMTP").is_none(),
                "an SMTP sink is required (GATEWAY_REQUIRE_SMTP is set) but python3 with \
                 aiosmtpd is not available"
            );
            eprintln!(
                "skipping: python3 with aiosmtpd is not available (python3 -m pip install aiosmtpd)"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp/sink.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(dir.path())
            .arg("--fail")
            .arg(fail.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tests/smtp/sink.py");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("the sink's stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("read the sink's port");
        let port = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the SMTP sink printed {line:?}, not its port")
        });
        Some(SmtpSink {
            child,
            dir,
            port,
            next: AtomicUsize::new(0),
        })
    }

    /// `smtp://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The next message the sink accepts (in order), waiting up to `timeout` for it.
    pub async fn wait_for_message(&self, timeout: Duration) -> Message {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.path().join(format!("{n}.json"));
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                return serde_json::from_str(&text).expect("the sink's JSON");
            }
            assert!(
                Instant::now() < deadline,
                "no message #{n} reached the SMTP sink within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How many messages the sink has accepted so far.
    pub fn received(&self) -> usize {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".json"))
            })
            .count()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether python3 can import aiosmtpd (checked once per process).
fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The `token` of the first link in a mail's text that starts with `prefix` (a link up to
/// `token=`); panics when there is none.
pub fn link_token(text: &str, prefix: &str) -> String {
    let start = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no link {prefix}... in {text}"));
    let link = text[start..]
        .split(|c: char| c.is_whitespace() || c == '"' || c == '<')
        .next()
        .unwrap();
    link.split("token=").nth(1).unwrap().to_owned()
}
