//! The HTTP surface of auth: what the gateway answers itself and what it checks on every request
//! to a protected route. The service underneath ([`super::service`]) knows no HTTP.
//!
//! - `api`: [`AuthApi`], what one configuration's auth HTTP surface holds (fields private
//!   there), and the session cookies it sets and clears.
//! - `endpoints`: the JSON endpoints under `auth.prefix` and the JWKS, and [`ENDPOINTS`], the
//!   table of what is routed.
//! - `admission`: the token check on protected routes (with transparent refresh), the CSRF
//!   rule, the login redirect, and removing the gateway's own credentials before forwarding.
//! - `identity`: the identity headers and signed assertion the upstream is told.
//! - `throttle`: rate limits and login regulation in front of password and token work.
//! - `pages`: the hosted sign-in, sign-up and sign-out pages, and the 403 page's offer.
//! - `mfa`: second factors: the login's second step, enrolment, step-up, the hosted page.
//! - `passkeys`: WebAuthn registration, assertion and passwordless sign-in.
//! - [`form`]: form decoding, percent-encoding and same-origin `next` paths.
//! - [`cookies`]: session cookies and signed double-submit CSRF tokens.
//! - `browser_client`: the browser client module for single-page apps (`client.js`,
//!   `client.d.ts`); not to be confused with the upstream HTTP client in [`crate::proxy`].

// `pub` where the fuzz targets reach in (cookie parsing, CSRF, forms); the rest is reached through
// the re-exports below.
mod account;
mod account_page;
pub(crate) mod admission;
pub(crate) mod api;
pub(crate) mod browser_client;
pub mod cookies;
pub(crate) mod endpoints;
pub mod form;
pub(crate) mod identity;
mod mfa;
mod pages;
mod passkeys;
mod recovery;
mod sso;
pub(crate) mod throttle;
mod verification;

pub use admission::{
    Admitted, Denied, Session, TokenVerdict, Unauthenticated, bearer, bearer_value, is_safe,
    strip_credentials,
};
pub use api::AuthApi;
pub use endpoints::{ENDPOINTS, JWKS_PATH};
pub use pages::Refusal;
