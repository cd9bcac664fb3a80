//! gateway: an authenticating reverse proxy for unmodified web apps.
//!
//! One binary and one YAML file. The gateway terminates TLS, serves its own auth API, checks an
//! access token on every request to a protected route and tells the upstream who the user is.
//!
//! # How a request flows
//! [`server`] accepts a connection (TLS via [`tls`]). Bodiless HTTP/1.1 requests are parsed and
//! answered by [`fast_path`]; anything else (bodies, upgrades, HTTP/2, malformed heads) is handed to
//! hyper for the rest of the connection. Either way each request goes to [`handler`], which
//! answers health checks, normalises the path ([`proxy::path`]), matches a route
//! ([`proxy::route`]), enforces the route's auth policy, sets the forwarding headers
//! ([`handler::policy`]) and forwards through [`proxy`], which drops hop-by-hop headers
//! ([`proxy::headers`]) and streams bodies; requests to plain-HTTP upstreams
//! without a body or with a small one use its own HTTP/1.1 client ([`proxy::http1_client`]). The commonest proxied
//! request (a GET with a bearer token, or to a public route) takes the fast path's planned
//! forward ([`handler::planned`]), which applies the same rules ([`handler::policy`]) to the raw
//! head without building a header map; a bodiless HTTP/2 request takes it too, from hyper's
//! request, before the general pipeline. Every error a client sees is
//! shaped in one place, [`error`].
//!
//! # Modules
//! - [`config`]: `gateway.yaml` in two stages (raw serde structs, then the checked [`config::Config`]),
//!   with `GATEWAY_<PATH>` environment overrides applied in between.
//! - [`server`]: listeners, connection loop, graceful shutdown; [`run`] is the entry point.
//! - [`fast_path`]: the HTTP/1.1 fast path for bodiless requests (`listen.fast_path`).
//! - `http1`: the HTTP/1.1 codec (heads, `Connection` and hop-by-hop headers, framing, chunked
//!   coding) that the fast path, the upstream client and the header rewrite share.
//! - [`handler`]: the per-request pipeline, the request policy both serving paths share
//!   ([`handler::policy`]), forward-auth, and the fast path's planned forward.
//! - [`proxy`]: routing, header rewriting, forwarding, upgrades, the built-in whoami upstream.
//! - [`auth`]: accounts, passwords, tokens and sessions ([`auth::service`], no HTTP), and their
//!   HTTP surface ([`auth::http`]: the auth API, admission to protected routes, hosted pages).
//! - [`mail`]: account e-mails (verification, password reset): templates, links under
//!   `email.public_url`, and a bounded queue delivered over SMTP in the background.
//! - [`metrics`]: Prometheus metrics and request ids.
//! - [`ratelimit`]: per-IP and per-account rate limits and login regulation.
//! - [`store`]: the embedded redb database (users, refresh tokens, revocations, keys).
//! - [`tls`]: certificates and rustls settings.
//! - [`error`]: errors -> HTTP responses. [`body`]: the body type.
//! - [`secret`]: wrappers that keep secrets out of logs. `private_file`: secret files are
//!   created private and refused when other users can read them. [`clock`]: injectable time.
//! - [`cli`]: the command line (`serve`, `check`, `healthcheck`, and `user ...` to administer accounts).

pub mod auth;
pub mod body;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod fast_path;
pub mod handler;
pub(crate) mod http1;
pub mod idle;
pub mod mail;
pub mod metrics;
pub(crate) mod private_file;
pub mod proxy;
pub mod ratelimit;
pub mod secret;
pub mod server;
pub mod store;
pub mod tls;

pub use server::{Listeners, run};
