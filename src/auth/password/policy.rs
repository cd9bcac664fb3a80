//! The policy a new password must meet (NIST SP 800-63B, OWASP ASVS 6.2).
//!
//! A minimum length in characters, a maximum in bytes (it bounds the work one request can ask
//! of the hasher), a check against the 30,000 most common passwords built into the binary, and
//! no composition rules. [`PolicyError`]'s `Display` is worded for end users.

use std::collections::HashSet;
use std::sync::LazyLock;

/// The smallest `max_bytes` a configuration may set: NIST SP 800-63B requires accepting
/// passwords of at least 64 characters. Config validation should reject anything lower.
pub const MIN_MAX_BYTES: usize = 64;

/// What a new password must satisfy.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Minimum length in Unicode code points (not bytes), so `"pässwörd"` is 8.
    pub min_chars: usize,
    /// Maximum length in bytes of UTF-8. Must be at least [`MIN_MAX_BYTES`].
    pub max_bytes: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            min_chars: 8,
            max_bytes: 256,
        }
    }
}

/// Why a password was refused. `Display` is shown to the user as is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("Password must be at least {min} characters")]
    TooShort { min: usize },
    #[error("Password must be at most {max_bytes} bytes")]
    TooLong { max_bytes: usize },
    #[error("This password is too common; choose a less guessable one")]
    Common,
    #[error("Password must not be the same as the email address")]
    SameAsEmail,
}

impl Policy {
    /// Checks a new password for the account `email`.
    ///
    /// The password is taken exactly as given: no trimming, no truncation, no composition rules.
    /// It is refused if it equals, ignoring case, the whole email address or its local part
    /// (the part before the last `@`). A local part shorter than `min_chars` can never match a
    /// password that passed the length check, so in effect only long local parts are refused.
    pub fn check(&self, password: &str, email: &str) -> Result<(), PolicyError> {
        if password.chars().count() < self.min_chars {
            return Err(PolicyError::TooShort {
                min: self.min_chars,
            });
        }
        if password.len() > self.max_bytes {
            return Err(PolicyError::TooLong {
                max_bytes: self.max_bytes,
            });
        }
        if is_common(password) {
            return Err(PolicyError::Common);
        }
        if same_as_email(password, email) {
            return Err(PolicyError::SameAsEmail);
        }
        Ok(())
    }
}

fn same_as_email(password: &str, email: &str) -> bool {
    let email = email.trim();
    if email.is_empty() {
        return false;
    }
    let password = password.to_lowercase();
    if password == email.to_lowercase() {
        return true;
    }
    match email.rsplit_once('@') {
        Some((local, _)) if !local.is_empty() => password == local.to_lowercase(),
        _ => false,
    }
}

/// The list, one lowercase password per line in rank order; lines starting with `#` are comments.
const COMMON_PASSWORDS_TXT: &str = include_str!("common-passwords.txt");

/// Built on first use; every later lookup is one hash.
static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    COMMON_PASSWORDS_TXT
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
});

/// Whether `password` is on the built-in list of common passwords, ignoring case.
pub fn is_common(password: &str) -> bool {
    COMMON_PASSWORDS.contains(password.to_lowercase().as_str())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn too_short_is_rejected() {
        let err = Policy::default().check("abcdxy7", "a@example.com");
        assert_eq!(err, Err(PolicyError::TooShort { min: 8 }));
        assert_eq!(
            err.unwrap_err().to_string(),
            "Password must be at least 8 characters"
        );
    }

    #[test]
    fn exactly_min_length_is_accepted() {
        assert_eq!(Policy::default().check("zq8vLw2x", "a@example.com"), Ok(()));
    }

    #[test]
    fn long_passwords_are_accepted() {
        let long = "correct horse battery staple ".repeat(3); // 87 chars
        assert!(long.chars().count() >= 64);
        assert_eq!(Policy::default().check(&long, "a@example.com"), Ok(()));
        let at_max = "x".repeat(255) + "y";
        assert_eq!(Policy::default().check(&at_max, "a@example.com"), Ok(()));
    }

    #[test]
    fn over_max_bytes_is_rejected() {
        let long = "x".repeat(256) + "y";
        let err = Policy::default().check(&long, "a@example.com");
        assert_eq!(err, Err(PolicyError::TooLong { max_bytes: 256 }));
        assert_eq!(
            err.unwrap_err().to_string(),
            "Password must be at most 256 bytes"
        );
        // Multi-byte: 100 chars but 300 bytes.
        assert_eq!(
            Policy::default().check(&"€".repeat(100), "a@example.com"),
            Err(PolicyError::TooLong { max_bytes: 256 })
        );
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        // 7 characters, 14 bytes: still too short.
        assert_eq!(
            Policy::default().check("äöüßéèà", "a@example.com"),
            Err(PolicyError::TooShort { min: 8 })
        );
        // 8 characters: long enough.
        assert_eq!(Policy::default().check("äöüßéèàñ", "a@example.com"), Ok(()));
    }

    #[test]
    fn common_passwords_are_rejected_ignoring_case() {
        let policy = Policy::default();
        for p in ["password", "12345678", "Password", "PASSWORD", "iloveyou"] {
            assert_eq!(
                policy.check(p, "a@example.com"),
                Err(PolicyError::Common),
                "{p}"
            );
        }
        assert!(is_common("Qwerty"));
        assert!(!is_common("zq8vLw2x"));
        assert_eq!(
            PolicyError::Common.to_string(),
            "This password is too common; choose a less guessable one"
        );
    }

    #[test]
    fn same_as_email_is_rejected_ignoring_case() {
        let policy = Policy::default();
        assert_eq!(
            policy.check("Zebulon.K@Example.com", "zebulon.k@example.com"),
            Err(PolicyError::SameAsEmail)
        );
        assert_eq!(
            policy.check("ZEBULON.KRANZ", "zebulon.kranz@example.com"),
            Err(PolicyError::SameAsEmail)
        );
        assert_eq!(policy.check("zebulon.k!", "zebulon.k@example.com"), Ok(()));
        assert_eq!(
            PolicyError::SameAsEmail.to_string(),
            "Password must not be the same as the email address"
        );
    }

    #[test]
    fn list_is_large_and_skips_comments() {
        assert!(
            COMMON_PASSWORDS.len() >= 10_000,
            "{}",
            COMMON_PASSWORDS.len()
        );
        assert!(!COMMON_PASSWORDS.iter().any(|p| p.starts_with('#')));
        assert!(COMMON_PASSWORDS.iter().all(|p| *p == p.to_lowercase()));
    }
}
