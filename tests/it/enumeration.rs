//! No user enumeration by timing (ASVS 6.3.8): a login for an unknown email takes as long as a
//! login with a wrong password for a known one, and the two answers look the same.
//!
//! The gateway uses the default (OWASP) argon2id cost here, so the password hash dominates both
//! latencies; argon2 is optimised even in test builds (see `Cargo.toml`). Rate limits and login
//! regulation are off so that neither path is cut short. The two kinds of login are measured
//! alternately in the same run and compared by their medians, so load from other processes on
//! the machine affects both alike; this compares two distributions, it is not an absolute
//! timing. A gateway that skipped the hash for unknown emails answers them in well under a
//! tenth of the time and fails every round.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::*;

const KNOWN: &str = "known@example.com";
const UNKNOWN: &str = "unknown@example.com";
const PASSWORD: &str = "correct horse battery staple";
const WRONG: &str = "not the password at all";
/// Samples of each kind per round.
const SAMPLES: usize = 40;
/// Largest accepted difference of the medians, relative to the smaller one.
const TOLERANCE: f64 = 0.10;
/// Rounds before giving up: a round spoilt by a burst of load elsewhere is measured again.
const ROUNDS: usize = 5;

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    let mid = samples.len() / 2;
    if samples.len().is_multiple_of(2) {
        (samples[mid - 1] + samples[mid]) / 2
    } else {
        samples[mid]
    }
}

async fn timed_login(gw: &Gateway, email: &str) -> (Duration, Resp) {
    let url = gw.url("/api/auth/login");
    let body = json!({"email": email, "password": WRONG});
    let start = Instant::now();
    let resp = post_json(&url, &body, &[]).await;
    (start.elapsed(), resp)
}

fn header_names(r: &Resp) -> BTreeSet<String> {
    r.headers.keys().map(|k| k.as_str().to_owned()).collect()
}

#[tokio::test]
async fn unknown_email_takes_as_long_as_a_wrong_password() {
    // No `password:` settings: the default argon2id cost, as in production.
    let gw = Gateway::start(
        "rate_limits: {login_per_ip: 'off', login_per_account: 'off'}\n\
         regulation: {max_retries: 0}\n\
         routes:\n  - {path: /, upstream: 'builtin:whoami', auth: public}\n",
    )
    .await;
    signup(&gw, KNOWN, PASSWORD).await;

    // Warm-up: connection set-up, first-use allocations, caches.
    for _ in 0..3 {
        timed_login(&gw, KNOWN).await;
        timed_login(&gw, UNKNOWN).await;
    }

    let mut report = Vec::new();
    for round in 1..=ROUNDS {
        let mut known = Vec::with_capacity(SAMPLES);
        let mut unknown = Vec::with_capacity(SAMPLES);
        for i in 0..SAMPLES {
            // Alternate which goes first, so neither always runs right after the other.
            let (k, u) = if i.is_multiple_of(2) {
                let k = timed_login(&gw, KNOWN).await;
                (k, timed_login(&gw, UNKNOWN).await)
            } else {
                let u = timed_login(&gw, UNKNOWN).await;
                (timed_login(&gw, KNOWN).await, u)
            };
            let ((kt, kr), (ut, ur)) = (k, u);
            assert_eq!(kr.status, 401, "{}", kr.text());
            assert_eq!(kr.status, ur.status);
            assert_eq!(kr.body, ur.body, "the bodies differ");
            assert_eq!(header_names(&kr), header_names(&ur), "the headers differ");
            assert_eq!(kr.header("www-authenticate"), ur.header("www-authenticate"));
            known.push(kt);
            unknown.push(ut);
        }
        let (mk, mu) = (median(&mut known), median(&mut unknown));
        let diff = (mk.as_secs_f64() - mu.as_secs_f64()).abs() / mk.min(mu).as_secs_f64();
        let line = format!(
            "round {round}: median known+wrong password {mk:?}, unknown email {mu:?}, difference {:.1}% \
             (known p10..p90 {:?}..{:?}, unknown p10..p90 {:?}..{:?})",
            diff * 100.0,
            known[SAMPLES / 10],
            known[SAMPLES * 9 / 10],
            unknown[SAMPLES / 10],
            unknown[SAMPLES * 9 / 10],
        );
        eprintln!("{line}");
        report.push(line);
        if diff <= TOLERANCE {
            return;
        }
    }
    panic!(
        "login latency reveals whether an account exists (more than {:.0}% apart in every round):\n{}",
        TOLERANCE * 100.0,
        report.join("\n")
    );
}

async fn timed_forgot(gw: &Gateway, email: &str) -> (Duration, Resp) {
    let url = gw.url("/api/auth/forgot-password");
    let body = json!({ "email": email });
    let start = Instant::now();
    let resp = post_json(&url, &body, &[]).await;
    (start.elapsed(), resp)
}

/// `forgot-password` answers an address with an account as it answers one without, in the same
/// time: the lookup, the link and the mail happen after the answer. A gateway that looked the
/// account up (or wrote the token, or queued the mail) before answering differs by a store
/// round trip at least. More samples than for login: these answers take well under a
/// millisecond, so a single scheduling hiccup weighs more.
#[tokio::test]
async fn forgot_password_takes_as_long_for_an_unknown_address() {
    const FORGOT_SAMPLES: usize = 200;
    // Mail goes to a port nothing listens on: queued and given up on in the background.
    let gw = Gateway::start(
        "rate_limits: {login_per_ip: 'off', login_per_account: 'off'}\n\
         regulation: {max_retries: 0}\n\
         email: {smtp_url: 'smtp://127.0.0.1:9', from: 'a@example.com', public_url: 'https://x.example', max_attempts: 1}\n\
         routes:\n  - {path: /, upstream: 'builtin:whoami', auth: public}\n",
    )
    .await;
    signup(&gw, KNOWN, PASSWORD).await;
    for _ in 0..10 {
        timed_forgot(&gw, KNOWN).await;
        timed_forgot(&gw, UNKNOWN).await;
    }
    let mut report = Vec::new();
    for round in 1..=ROUNDS {
        let mut known = Vec::with_capacity(FORGOT_SAMPLES);
        let mut unknown = Vec::with_capacity(FORGOT_SAMPLES);
        for i in 0..FORGOT_SAMPLES {
            let (k, u) = if i.is_multiple_of(2) {
                let k = timed_forgot(&gw, KNOWN).await;
                (k, timed_forgot(&gw, UNKNOWN).await)
            } else {
                let u = timed_forgot(&gw, UNKNOWN).await;
                (timed_forgot(&gw, KNOWN).await, u)
            };
            let ((kt, kr), (ut, ur)) = (k, u);
            assert_eq!(kr.status, 202, "{}", kr.text());
            assert_eq!(kr.status, ur.status);
            assert_eq!(kr.body, ur.body, "the bodies differ");
            assert_eq!(header_names(&kr), header_names(&ur), "the headers differ");
            known.push(kt);
            unknown.push(ut);
        }
        let (mk, mu) = (median(&mut known), median(&mut unknown));
        let diff = (mk.as_secs_f64() - mu.as_secs_f64()).abs() / mk.min(mu).as_secs_f64();
        let line = format!(
            "round {round}: median known {mk:?}, unknown {mu:?}, difference {:.1}%",
            diff * 100.0
        );
        eprintln!("{line}");
        report.push(line);
        if diff <= TOLERANCE {
            return;
        }
    }
    panic!(
        "forgot-password latency reveals whether an account exists (more than {:.0}% apart in every round):\n{}",
        TOLERANCE * 100.0,
        report.join("\n")
    );
}
