//! Multi-factor sign-in: the second factor's arithmetic, without storage or HTTP.
//!
//! A password alone falls to reuse and phishing of the password; a second factor the user holds
//! (an authenticator app) means a leaked password is not enough. Two parts:
//! - [`totp`]: RFC 6238 codes from an authenticator app, with the enrolment data the app reads
//!   (`otpauth://` URI, QR code, base32 secret) and a verifier that refuses replays.
//! - [`recovery`]: single-use codes, shown once at enrolment, for when the device is lost.
//! - [`passkey`]: WebAuthn ceremonies over `webauthn-rs`, with their state sealed so any
//!   replica can finish what another started.
//!
//! Everything here is a pure function of its arguments (the current time included), so the
//! rules are unit-tested against published vectors and the store and endpoints built on top
//! cannot bend them. What callers must add, because it needs state:
//! - store the TOTP secret with the other secrets (encrypted at rest when the store is), the
//!   step [`totp::verify`] returns as the next call's `last_used_step`, and only the
//!   [`recovery::hash`] of each recovery code, deleting a hash once [`recovery::matches`] used it;
//! - limit attempts per account: a 6-digit code is guessable without a rate limit;
//! - update `last_used_step` atomically with accepting the code, or two concurrent requests
//!   could both spend the same code.
//!
//! `totp` and `recovery` import only [`crate::secret`]; `passkey` also the settings it is built
//! from ([`crate::config`]) and the AEAD of [`crate::store::seal`].

pub mod passkey;
pub mod recovery;
pub mod totp;
