//! Wrapper types for secrets: passwords, signing keys, token strings.
//!
//! Their `Debug` and `Display` print `***`, so a secret that ends up in a log line or an error
//! message by accident shows nothing. Read the value with [`Secret::expose`], on purpose.

use std::fmt;

/// A secret value of any type; `Debug`/`Display` never show it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

/// The most common kind of secret: a string (a password, a token, an HMAC key in text form).
pub type SecretString = Secret<String>;

impl<T> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The secret value itself. Every caller of this is a place where the secret is used.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Secret(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = SecretString::new("hunter2".to_owned());
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(s.expose(), "hunter2");
    }
}
