//! gateway: an authenticating reverse proxy.
pub mod clock;
pub mod secret;
