//! Time-based one-time passwords (RFC 6238) as authenticator apps know them.
//!
//! Only the parameters every app supports: HMAC-SHA-1, 6 digits, 30-second steps. Apps that are
//! given SHA-256 or 8 digits in the URI are known to ignore them silently and show codes that
//! never verify, so offering a choice would only produce lock-outs.
//!
//! [`totp_rs`] computes the HOTP value; this module adds what a sign-in needs around it:
//! - a secret type ([`TotpSecret`]) whose `Debug` hides it, drawn from the OS,
//! - the enrolment data an app reads ([`otpauth_uri`], [`qr_svg`], [`TotpSecret::base32`]),
//! - [`verify`], which tolerates one step of clock skew either way but never accepts a step at
//!   or before the last one used: RFC 6238 section 5.2 requires that a code work only once,
//!   and refusing older steps too means a code seen over a shoulder cannot be used after the
//!   user signed in with a newer one. The caller stores the step [`verify`] returns.
//!
//! Everything is a pure function of its inputs, the time included, so tests need no clock.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rand::TryRngCore;
use subtle::ConstantTimeEq;

use crate::secret::Secret;

/// Digits in a code.
pub const DIGITS: usize = 6;
/// Seconds per time step.
pub const STEP_SECS: u64 = 30;
/// Length of a new secret: the 160 bits RFC 4226 section 4 recommends (and the HMAC-SHA-1
/// block it is keyed into).
pub const SECRET_BYTES: usize = 20;
/// RFC 4226 section 4: a shared secret MUST be at least 128 bits.
const MIN_SECRET_BYTES: usize = 16;

/// The shared secret of one enrolled authenticator. `Debug` prints `TotpSecret(***)`.
#[derive(Clone, Debug)]
pub struct TotpSecret(Secret<Vec<u8>>);

impl TotpSecret {
    /// A new random secret of [`SECRET_BYTES`] from the operating system's generator.
    pub fn generate() -> TotpSecret {
        let mut bytes = vec![0u8; SECRET_BYTES];
        if let Err(e) = rand::rngs::OsRng.try_fill_bytes(&mut bytes) {
            // Not expected on any supported platform; the thread generator is a CSPRNG seeded
            // from the same source, so enrolment still gets an unpredictable secret.
            tracing::warn!(error = %e, "OS random generator failed; using the thread generator");
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        }
        TotpSecret(Secret::new(bytes))
    }

    /// A stored secret; `None` when shorter than the 128 bits RFC 4226 requires.
    pub fn from_bytes(bytes: Vec<u8>) -> Option<TotpSecret> {
        (bytes.len() >= MIN_SECRET_BYTES).then(|| TotpSecret(Secret::new(bytes)))
    }

    /// The raw secret, for the store.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.expose()
    }

    /// RFC 4648 base32, upper case, without padding: the form apps accept when the secret is
    /// typed in by hand.
    pub fn base32(&self) -> String {
        totp_rs::Secret::from(self.as_bytes()).to_base32()
    }
}

/// What stays literal in a URI component: RFC 3986's unreserved characters. Everything else,
/// `:` `&` `=` `?` `#` `/` `%` `+` and space included, is percent-encoded, so neither an issuer
/// nor an account name can end the label or start a new parameter.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The `otpauth://` URI an authenticator app reads from the QR code (the "Key Uri Format" that
/// Google Authenticator defined and the other apps follow).
///
/// The issuer appears twice, as the label prefix and as the `issuer` parameter, because older
/// apps read only the one and newer ones prefer the other.
pub fn otpauth_uri(secret: &TotpSecret, issuer: &str, account: &str) -> String {
    let issuer = utf8_percent_encode(issuer, COMPONENT);
    let account = utf8_percent_encode(account, COMPONENT);
    format!(
        "otpauth://totp/{issuer}:{account}?secret={}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        secret.base32()
    )
}

/// The HOTP generator for a secret. `build_noncompliant` skips checks that hold by
/// construction here (6 digits, a non-zero step, a secret of at least 128 bits from
/// [`TotpSecret::from_bytes`]); a unit test runs the checked `build` on the same parameters.
fn totp(secret: &TotpSecret) -> totp_rs::Totp {
    builder(secret).build_noncompliant()
}

fn builder(secret: &TotpSecret) -> totp_rs::Builder {
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(DIGITS as u8)
        .with_step_duration(STEP_SECS)
        .with_skew(0)
        .with_secret(secret.as_bytes())
}

/// The code of time step `step`, as its `DIGITS` ASCII digits; `None` only for a step whose
/// start does not fit in a `u64` of seconds.
fn code_of_step(totp: &totp_rs::Totp, step: u64) -> Option<[u8; DIGITS]> {
    let start = step.checked_mul(STEP_SECS)?;
    let text = totp.generate(start).to_string();
    text.as_bytes().try_into().ok()
}

/// The code an app shows at `unix` seconds since the epoch.
pub fn code_at(secret: &TotpSecret, unix: u64) -> String {
    let code = code_of_step(&totp(secret), unix / STEP_SECS).unwrap_or_default();
    String::from_utf8_lossy(&code).into_owned()
}

/// A code as typed: surrounding whitespace trimmed, and one space between digits allowed (apps
/// show `123 456`); otherwise exactly [`DIGITS`] ASCII digits (not other Unicode digits).
fn parse_code(input: &str) -> Option<[u8; DIGITS]> {
    let input = input.trim();
    let mut code = [0u8; DIGITS];
    let mut len = 0;
    let mut spaces = 0;
    for b in input.bytes() {
        match b {
            b'0'..=b'9' => {
                *code.get_mut(len)? = b;
                len += 1;
            }
            // `trim` removed the outer ones, so a space here sits between two digits.
            b' ' if spaces == 0 => spaces += 1,
            _ => return None,
        }
    }
    (len == DIGITS).then_some(code)
}

/// Checks `code` at time `unix` and returns the step it belongs to, which the caller stores and
/// passes as `last_used_step` next time.
///
/// Accepts the code of the current step and of one step either side (clocks drift, and a code
/// typed at the end of its 30 seconds arrives in the next step), but never of a step at or
/// before `last_used_step`: a code works once, and not after a newer one. When the code matches
/// two steps (a one-in-a-million coincidence), the newest wins so the stored step moves forward.
///
/// Each candidate is compared in constant time. The caller still limits attempts: a 6-digit
/// code with three steps in the window is guessed with probability 3 in 10^6 per try.
pub fn verify(
    secret: &TotpSecret,
    code: &str,
    unix: u64,
    last_used_step: Option<u64>,
) -> Option<u64> {
    let given = parse_code(code)?;
    let totp = totp(secret);
    let now = unix / STEP_SECS;
    let mut matched = None;
    // Oldest first, so a later (newer) match overwrites an earlier one.
    for step in [now.checked_sub(1), Some(now), now.checked_add(1)]
        .into_iter()
        .flatten()
    {
        let Some(expected) = code_of_step(&totp, step) else {
            continue;
        };
        let equal = bool::from(given.ct_eq(&expected));
        let fresh = last_used_step.is_none_or(|last| step > last);
        if equal && fresh {
            matched = Some(step);
        }
    }
    matched
}

/// The enrolment QR code of `uri` as a standalone SVG document: error correction M, at least
/// 200x200 pixels, and no references outside itself (only the SVG namespace URI), so a page
/// can inline it under a strict Content-Security-Policy.
///
/// Returns an empty string if the data cannot be encoded, which does not happen for an
/// `otpauth` URI of reasonable length (a version 40 code holds over 2000 bytes at level M).
pub fn qr_svg(uri: &str) -> String {
    match qrcode::QrCode::with_error_correction_level(uri.as_bytes(), qrcode::EcLevel::M) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .build(),
        Err(e) => {
            tracing::warn!(error = %e, len = uri.len(), "could not encode a QR code");
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// The secret of RFC 6238 appendix B for SHA-1: the ASCII string "12345678901234567890".
    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(b"12345678901234567890".to_vec()).unwrap()
    }

    /// RFC 6238 appendix B, SHA-1 rows: time and the 8-digit TOTP.
    const RFC6238_SHA1: [(u64, &str); 6] = [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ];

    #[test]
    fn rfc6238_appendix_b_sha1_vectors() {
        let secret = rfc_secret();
        for (time, eight) in RFC6238_SHA1 {
            // Both are the same truncated value mod 10^digits, so the 6-digit code is the
            // 8-digit one's last six digits.
            assert_eq!(code_at(&secret, time), eight[2..], "time {time}");
        }
    }

    #[test]
    fn rfc_vectors_verify_at_their_time() {
        let secret = rfc_secret();
        for (time, eight) in RFC6238_SHA1 {
            assert_eq!(
                verify(&secret, &eight[2..], time, None),
                Some(time / STEP_SECS)
            );
        }
    }

    #[test]
    fn checked_build_accepts_the_parameters() {
        assert!(builder(&rfc_secret()).build().is_ok());
        assert!(builder(&TotpSecret::generate()).build().is_ok());
    }

    #[test]
    fn one_step_of_skew_each_way_and_no_more() {
        let secret = rfc_secret();
        let now = 1_234_567_890;
        let step = now / STEP_SECS;
        let at = |offset: i64| code_at(&secret, now.checked_add_signed(offset * 30).unwrap());
        assert_eq!(verify(&secret, &at(0), now, None), Some(step));
        assert_eq!(verify(&secret, &at(-1), now, None), Some(step - 1));
        assert_eq!(verify(&secret, &at(1), now, None), Some(step + 1));
        assert_eq!(verify(&secret, &at(-2), now, None), None);
        assert_eq!(verify(&secret, &at(2), now, None), None);
    }

    #[test]
    fn step_zero_has_no_previous_step() {
        let secret = rfc_secret();
        assert_eq!(verify(&secret, &code_at(&secret, 0), 10, None), Some(0));
        assert_eq!(verify(&secret, &code_at(&secret, 30), 10, None), Some(1));
    }

    #[test]
    fn the_far_future_does_not_overflow() {
        let secret = rfc_secret();
        let code = code_at(&secret, u64::MAX);
        assert_eq!(code.len(), DIGITS);
        // The step after the last one has no start time in a u64; it is skipped, not a panic.
        assert_eq!(
            verify(&secret, &code, u64::MAX, None),
            Some(u64::MAX / STEP_SECS)
        );
    }

    #[test]
    fn a_code_is_not_accepted_twice() {
        let secret = rfc_secret();
        let now = 1_111_111_111;
        let code = code_at(&secret, now);
        let step = verify(&secret, &code, now, None).unwrap();
        assert_eq!(verify(&secret, &code, now, Some(step)), None);
        // Still refused a few seconds later, within the same window.
        assert_eq!(verify(&secret, &code, now + 15, Some(step)), None);
    }

    #[test]
    fn an_older_code_is_refused_after_a_newer_one() {
        let secret = rfc_secret();
        let now = 1_111_111_111;
        let step = now / STEP_SECS;
        let newer = code_at(&secret, now + 30);
        assert_eq!(verify(&secret, &newer, now, None), Some(step + 1));
        let current = code_at(&secret, now);
        let older = code_at(&secret, now - 30);
        assert_eq!(verify(&secret, &current, now, Some(step + 1)), None);
        assert_eq!(verify(&secret, &older, now, Some(step + 1)), None);
        // But a step after the last used one is still fine.
        assert_eq!(verify(&secret, &current, now, Some(step - 1)), Some(step));
    }

    #[test]
    fn the_newest_matching_step_wins() {
        // With the RFC secret, steps 910737 and 910738 both have the code 911617 (found by
        // searching with an independent HMAC-SHA-1 implementation).
        let secret = rfc_secret();
        let (older, newer) = (910_737, 910_738);
        assert_eq!(code_at(&secret, older * STEP_SECS), "911617");
        assert_eq!(code_at(&secret, newer * STEP_SECS), "911617");
        // Both steps are in the window at either time; the later one is returned, so the
        // stored step moves as far forward as the code allows.
        assert_eq!(
            verify(&secret, "911617", older * STEP_SECS, None),
            Some(newer)
        );
        assert_eq!(
            verify(&secret, "911617", newer * STEP_SECS, None),
            Some(newer)
        );
        // After the newer step was used, the older one is not accepted in its place.
        assert_eq!(
            verify(&secret, "911617", older * STEP_SECS, Some(newer)),
            None
        );
    }

    #[test]
    fn spaces_around_and_one_inside_are_accepted() {
        let secret = rfc_secret();
        let now = 1_234_567_890; // code 005924
        let step = Some(now / STEP_SECS);
        assert_eq!(verify(&secret, "005924", now, None), step);
        assert_eq!(verify(&secret, "005 924", now, None), step);
        assert_eq!(verify(&secret, "  005924\n", now, None), step);
        assert_eq!(verify(&secret, "\t005 924 ", now, None), step);
        assert_eq!(verify(&secret, "005  924", now, None), None);
        assert_eq!(verify(&secret, "00 59 24", now, None), None);
        assert_eq!(verify(&secret, "005-924", now, None), None);
    }

    #[test]
    fn malformed_codes_are_refused() {
        let secret = rfc_secret();
        let now = 1_234_567_890;
        for code in [
            "",
            " ",
            "12345",
            "1234567",
            "12a456",
            "١٢٣٤٥٦",       // Arabic-Indic digits
            "００５９２４", // full-width digits of the right code
            "+05924",
            "0059240",
            "0x5924",
        ] {
            assert_eq!(verify(&secret, code, now, None), None, "{code:?}");
        }
    }

    #[test]
    fn a_wrong_secret_does_not_verify() {
        let other = TotpSecret::from_bytes(b"12345678901234567891".to_vec()).unwrap();
        assert_eq!(verify(&other, "005924", 1_234_567_890, None), None);
    }

    #[test]
    fn secrets_shorter_than_128_bits_are_refused() {
        assert!(TotpSecret::from_bytes(vec![7; 15]).is_none());
        assert!(TotpSecret::from_bytes(Vec::new()).is_none());
        assert_eq!(
            TotpSecret::from_bytes(vec![7; 16]).unwrap().as_bytes(),
            [7; 16]
        );
    }

    #[test]
    fn generated_secrets_are_20_random_bytes() {
        let a = TotpSecret::generate();
        let b = TotpSecret::generate();
        assert_eq!(a.as_bytes().len(), SECRET_BYTES);
        assert_ne!(a.as_bytes(), b.as_bytes());
    }

    #[test]
    fn debug_hides_the_secret() {
        let s = rfc_secret();
        assert_eq!(format!("{s:?}"), "TotpSecret(***)");
    }

    #[test]
    fn base32_is_rfc4648_upper_case_without_padding() {
        assert_eq!(rfc_secret().base32(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        // RFC 4648 section 10, "foobar" (whose padded form is "MZXW6YTBOI======"), and a
        // 16-byte secret whose encoding would need padding.
        let foobar = TotpSecret::from_bytes(b"foobarfoobarfoob".to_vec()).unwrap();
        assert_eq!(foobar.base32(), "MZXW6YTBOJTG633CMFZGM33PMI");
    }

    #[test]
    fn otpauth_uri_escapes_issuer_and_account() {
        let uri = otpauth_uri(&rfc_secret(), "Acme & Co", "a:b@example.com");
        assert_eq!(
            uri,
            "otpauth://totp/Acme%20%26%20Co:a%3Ab%40example.com\
             ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Acme%20%26%20Co\
             &algorithm=SHA1&digits=6&period=30"
        );
        // Exactly one label separator and the five parameters, whatever the names held.
        let (label, query) = uri
            .strip_prefix("otpauth://totp/")
            .unwrap()
            .split_once('?')
            .unwrap();
        assert_eq!(label.matches(':').count(), 1);
        assert_eq!(query.split('&').count(), 5);
    }

    #[test]
    fn otpauth_uri_escapes_query_and_fragment_characters() {
        let uri = otpauth_uri(&rfc_secret(), "x?y#z=1/%+", "ü");
        assert!(
            uri.starts_with("otpauth://totp/x%3Fy%23z%3D1%2F%25%2B:%C3%BC?secret="),
            "{uri}"
        );
        assert_eq!(uri.matches('?').count(), 1);
        assert!(!uri.contains('#'));
    }

    #[test]
    fn qr_svg_is_a_self_contained_svg() {
        let uri = otpauth_uri(&rfc_secret(), "Acme & Co", "a:b@example.com");
        let svg = qr_svg(&uri);
        assert!(
            svg.starts_with("<?xml") || svg.starts_with("<svg"),
            "{svg:.60}"
        );
        assert!(svg.trim_end().ends_with("</svg>"));
        let without_ns = svg.replace("http://www.w3.org/2000/svg", "");
        assert!(!without_ns.contains("http"), "external reference in {svg}");
        assert!(!svg.contains("href"));
        assert!(!svg.contains("<script"));
        // The declared size is at least the 200x200 asked for.
        let width: u32 = svg
            .split("width=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap()
            .parse()
            .unwrap();
        assert!(width >= 200, "width {width}");
    }
}
