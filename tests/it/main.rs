//! Integration tests: one binary, real sockets on 127.0.0.1, a real redb file, real TLS.
//!
//! `util` has the builders: a mock upstream that records what it received, a gateway started
//! in-process on port 0 with a temp directory, and small clients; `raw` is the raw-HTTP kit
//! (exact bytes both ways, a scriptable raw upstream).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod raw;
mod util;

mod account;
mod attack;
mod auth;
mod binary;
mod cache;
mod cli;
mod client;
mod client_reference;
mod config;
mod deploy;
mod direct_review;
mod enforce;
mod enumeration;
mod forbidden;
mod forward_auth;
mod h1;
mod layers;
mod limits;
mod logs;
mod mail;
mod mfa;
mod openapi;
mod ops;
mod pg;
mod proxy;
mod recovery;
mod replicas;
mod rolling;
mod secrets_at_rest;
mod server;
mod smtp;
mod sso;
mod stale_cookies;
mod store;
mod store_factors;
mod store_identities;
mod store_lifecycle;
mod tls;
mod tty;
mod verification;
mod wire;
