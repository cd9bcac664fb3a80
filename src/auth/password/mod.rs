//! Passwords: the policy a new password must meet, and argon2id hashing on a bounded pool.
//!
//! Sign-up and password change call [`Policy::check`] and then [`Hasher::hash`]; login calls
//! [`Hasher::verify`] (with `None` when the email is unknown, so the timing does not tell) and
//! stores a fresh hash when [`Verification::needs_rehash`] says the parameters changed.
//! [`HashError::Busy`] means hashing is saturated and should become a 429/503 with `Retry-After`.

mod hasher;
mod policy;

pub use hasher::{Argon2Params, HashError, Hasher, HasherConfig, Verification};
pub use policy::{MIN_MAX_BYTES, Policy, PolicyError, is_common};
