//! The request policy, written once for both ways the gateway holds a request head: hyper's
//! [`HeaderMap`] on the general path, and the raw head ([`RawHead`]) on the planned path of
//! the HTTP/1.1 fast path ([`super::planned`]).
//!
//! Both are read through [`HeaderView`], a small read-only view (names as the client spelled
//! them, values as bytes), and every rule below is a plain function of it:
//!
//! - [`admission`]: what a request brings before any route is looked at (its Host, its
//!   Authorization and bearer token, whether it carries cookies), and [`access`]: whether a
//!   verified caller may use a route (roles, owner);
//! - [`wants_html`]: whether error answers are HTML pages or JSON;
//! - [`request_id`]: the trusted proxy's id or a new one;
//! - [`ForwardingPlan`]: which client headers stay behind (the gateway's own in every spelling,
//!   the `strip_request_headers` list from untrusted peers, the bearer token) and which the
//!   gateway sets, with their values (`X-Forwarded-For/-Proto/-Host`, `X-Real-IP`). The general
//!   path applies it to the map ([`ForwardingPlan::apply`]); the planned path writes the same
//!   decisions out as bytes, borrowing from the head, without a map;
//! - [`finish`]: the response epilogue (HSTS, the request id, the route's counters, the
//!   access-log line).
//!
//! What is not here: hop-by-hop headers and `Connection` (HTTP/1.1 framing, [`crate::proxy`]),
//! the identity headers' names and values (the auth API: [`crate::auth::http::AuthApi`] strips
//! and sets them; the rules here take its predicate), and the gateway's cookies (the one
//! forwarded `Cookie` value is [`crate::auth::http::cookies::forwarded`]'s, which
//! `strip_credentials` and the planned path both use).

use std::fmt::Display;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response};

use super::Conn;
use crate::auth::token::AccessClaims;
use crate::body::Body;
use crate::http1::RawHead;
use crate::metrics::RouteStats;
use crate::proxy::headers::{REAL_IP, is_gateway_set, is_listed, peer_value};
use crate::proxy::route::Route;

/// The request id header: kept from trusted proxies, else generated; sent upstream and back.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
const XFH: HeaderName = HeaderName::from_static("x-forwarded-host");

/// A read-only view of a request's headers: names as the client spelled them (a [`HeaderMap`]
/// has lowercased them), values as bytes, in the order they came.
pub trait HeaderView {
    /// Every header line, in order.
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])>;

    /// The values of the header `name` (lowercase), matched case-insensitively, in order.
    fn get_all<'a>(&'a self, name: &'static str) -> impl Iterator<Item = &'a [u8]> {
        self.each()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The first value of the header `name` (lowercase), as [`HeaderMap::get`] gives it.
    fn first(&self, name: &'static str) -> Option<&[u8]> {
        self.get_all(name).next()
    }
}

impl HeaderView for HeaderMap {
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
    }

    fn get_all<'a>(&'a self, name: &'static str) -> impl Iterator<Item = &'a [u8]> {
        HeaderMap::get_all(self, name)
            .into_iter()
            .map(HeaderValue::as_bytes)
    }
}

impl HeaderView for RawHead {
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers()
    }
}

pub use crate::http1::text;

/// What a request brings before any route is looked at.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Admission<'a> {
    /// The last Host value (the only one unless [`Admission::several_hosts`]).
    pub host: Option<&'a [u8]>,
    /// Several Host headers: the upstream might believe another one than routing did (400).
    pub several_hosts: bool,
    /// The last Authorization value (the only one unless
    /// [`Admission::several_authorizations`]).
    pub authorization: Option<&'a [u8]>,
    /// Several Authorization headers: which would the upstream believe? Refused (400).
    pub several_authorizations: bool,
    /// A `Cookie` header came: a cookie session may need a refresh, and the gateway's own
    /// cookies must be stripped before forwarding.
    pub cookie: bool,
}

impl<'a> Admission<'a> {
    /// The bearer token of the Authorization header, as [`crate::auth::http::bearer`] reads it.
    pub fn bearer(&self) -> Option<&'a str> {
        if self.several_authorizations {
            return None;
        }
        crate::auth::http::bearer_value(text(self.authorization?)?)
    }
}

/// One pass over the headers for what [`Admission`] records.
pub fn admission<V: HeaderView + ?Sized>(headers: &V) -> Admission<'_> {
    let mut a = Admission::default();
    for (name, value) in headers.each() {
        let is = |want: &[u8]| name.eq_ignore_ascii_case(want);
        if is(b"host") {
            a.several_hosts |= a.host.is_some();
            a.host = Some(value);
        } else if is(b"authorization") {
            a.several_authorizations |= a.authorization.is_some();
            a.authorization = Some(value);
        } else if is(b"cookie") {
            a.cookie = true;
        }
    }
    a
}

/// Whether a verified caller may use a matched route that requires authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Granted,
    /// The route has `require_verified_email` and the token says the address is not verified
    /// (403, offering a new verification mail). Checked first: it is the one the user can fix.
    Unverified,
    /// The route's `roles` are not met (403, naming those roles).
    LacksRole,
    /// The path names another user in its `{sub}` position, and none of the route's
    /// `owner_bypass_roles` is held (403, naming those roles).
    NotOwner,
    /// The route needs a second factor (`mfa: required`, or the user holds one of
    /// `auth.mfa.required_for_roles`) and the session was signed in without one (403; a browser
    /// is sent to the second-factor page). Checked last: it is the one a step-up fixes.
    NeedsMfa,
}

/// [`Access`] for `claims` on `route` (with `roles`, its required roles), where `owner` is the
/// path's `{sub}` value.
pub fn access(
    route: &Route,
    roles: &[String],
    owner: Option<&str>,
    claims: &AccessClaims,
) -> Access {
    if route.spec.require_verified_email && !claims.email_verified {
        return Access::Unverified;
    }
    let has_any = |wanted: &[String]| wanted.iter().any(|r| claims.roles.contains(r));
    if !roles.is_empty() && !has_any(roles) {
        return Access::LacksRole;
    }
    let not_owner = owner.is_some_and(|owner| {
        !route.owned_by(owner, &claims.sub) && !has_any(&route.spec.owner_bypass_roles)
    });
    if not_owner {
        return Access::NotOwner;
    }
    let needs_mfa = route.spec.require_mfa || has_any(&route.spec.mfa_for_roles);
    if needs_mfa && !claims.mfa() {
        return Access::NeedsMfa;
    }
    Access::Granted
}

/// Whether this looks like a browser navigation that should get HTML rather than JSON: a GET or
/// HEAD that accepts `text/html` and is not marked as a script request.
pub fn wants_html<V: HeaderView + ?Sized>(method: &Method, headers: &V) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return false;
    }
    if headers
        .first("x-requested-with")
        .is_some_and(|v| v.eq_ignore_ascii_case(b"XMLHttpRequest"))
    {
        return false;
    }
    if let Some(mode) = headers.first("sec-fetch-mode")
        && mode != b"navigate"
    {
        return false;
    }
    headers
        .get_all("accept")
        .filter_map(text)
        .any(|v| v.contains("text/html"))
}

/// A request id a trusted proxy may hand on: 1 to 128 letters, digits and `-_.:`.
pub fn sane_request_id(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
}

/// The request's id: the first one a trusted proxy sent (if it is sane), else a new one.
pub fn request_id<V: HeaderView + ?Sized>(trusted: bool, headers: &V) -> HeaderValue {
    if trusted
        && let Some(v) = headers.first("x-request-id")
        && sane_request_id(v)
        && let Ok(v) = HeaderValue::from_bytes(v)
    {
        return v;
    }
    crate::metrics::request_id()
}

/// The client's address: the socket peer, or, when the peer is a trusted proxy, the right-most
/// hop of its `X-Forwarded-For` values (those read as [`text`], in the order they came) that is
/// not itself trusted; garbage in the chain stops the belief at that point. A client cannot
/// choose its own address (its rate-limit bucket, its `X-Real-IP`) by sending `X-Forwarded-For`
/// directly.
pub fn client_ip<V: HeaderView + ?Sized>(
    peer: IpAddr,
    trusted: impl Fn(IpAddr) -> bool,
    headers: &V,
) -> IpAddr {
    if !trusted(peer) {
        return peer;
    }
    // Read left to right: each hop either is trusted (the answer so far stands), names the
    // client (it becomes the answer), or is garbage (back to the peer). That is the right-most
    // untrusted hop without collecting the chain.
    let hops = headers
        .get_all("x-forwarded-for")
        .filter_map(text)
        .flat_map(|v| v.split(','));
    let mut client = peer;
    for hop in hops {
        client = match hop.trim().parse::<IpAddr>() {
            Ok(ip) if trusted(ip) => client,
            Ok(ip) => ip,
            Err(_) => peer,
        };
    }
    client
}

/// Whether an Authorization value is a bearer credential: the values the gateway removes
/// before forwarding unless the route has `forward_token`.
pub fn is_bearer_credential(value: &[u8]) -> bool {
    value
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"bearer "))
}

/// What happens to a request's forwarding headers on the way upstream (see the module docs):
/// decided once from the connection and the request, then applied to a map or written out as
/// bytes. Identity headers are the auth API's; this plan covers the rest.
#[derive(Debug)]
pub struct ForwardingPlan<'a> {
    /// The socket peer.
    pub peer: IpAddr,
    /// The peer is a trusted proxy: its `X-Forwarded-*`, `Forwarded` and request id are
    /// believed, and `strip_request_headers` is not applied.
    pub trusted: bool,
    /// The client's address ([`client_ip`]), for `X-Real-IP`.
    pub client: IpAddr,
    /// The request came over TLS (ours, or a trusted proxy's): `X-Forwarded-Proto`.
    pub proto: &'static str,
    /// The Host as sent (with port), or the HTTP/2 authority, for `X-Forwarded-Host`.
    pub host: Option<&'a [u8]>,
    /// A trusted proxy sent `X-Forwarded-Proto` / `-Host`: they pass as they are.
    pub told_proto: bool,
    pub told_host: bool,
    /// The bearer token stays (the route's `forward_token`).
    pub keep_bearer: bool,
    /// `upstream.strip_request_headers`.
    pub strip: &'a [String],
}

impl<'a> ForwardingPlan<'a> {
    /// The plan for a request with `headers` from `peer` (`trusted` as configured).
    pub fn new<V: HeaderView + ?Sized>(
        headers: &V,
        peer: IpAddr,
        trusted: &dyn Fn(IpAddr) -> bool,
        tls: bool,
        host: Option<&'a [u8]>,
        keep_bearer: bool,
        strip: &'a [String],
    ) -> ForwardingPlan<'a> {
        let is_trusted = trusted(peer);
        ForwardingPlan {
            peer,
            trusted: is_trusted,
            client: client_ip(peer, trusted, headers),
            proto: if tls { "https" } else { "http" },
            host,
            told_proto: is_trusted && headers.first("x-forwarded-proto").is_some(),
            told_host: is_trusted && headers.first("x-forwarded-host").is_some(),
            keep_bearer,
            strip,
        }
    }

    /// Whether the client's header `name` (as spelled) stays behind because the gateway sets
    /// its own or does not believe it: every spelling of `X-Forwarded-*`, `Forwarded`,
    /// `X-Request-Id` and `X-Real-IP`, except the exact `X-Forwarded-Proto`, `-Host` and
    /// `Forwarded` of a trusted proxy; and from an untrusted peer, `strip_request_headers`.
    /// A trusted proxy's `X-Forwarded-For` goes too: its values start the gateway's chain.
    pub fn replaces(&self, name: &[u8]) -> bool {
        if is_gateway_set(name) {
            let believed = self.trusted
                && (name.eq_ignore_ascii_case(b"x-forwarded-proto")
                    || name.eq_ignore_ascii_case(b"x-forwarded-host")
                    || name.eq_ignore_ascii_case(b"forwarded"));
            return !believed;
        }
        !self.trusted && is_listed(name, self.strip)
    }

    /// Whether this Authorization value stays behind: a bearer token, unless the route
    /// forwards it.
    pub fn drops_credential(&self, name: &[u8], value: &[u8]) -> bool {
        !self.keep_bearer
            && name.eq_ignore_ascii_case(b"authorization")
            && is_bearer_credential(value)
    }

    /// Whether a client header stays behind ([`ForwardingPlan::replaces`] or
    /// [`ForwardingPlan::drops_credential`]).
    pub fn drops(&self, name: &[u8], value: &[u8]) -> bool {
        self.replaces(name) || self.drops_credential(name, value)
    }

    /// The start of the `X-Forwarded-For` chain: a trusted proxy's values (as [`text`]), in
    /// order; the peer comes after them.
    pub fn chain<'v, V: HeaderView + ?Sized>(
        &self,
        headers: &'v V,
    ) -> impl Iterator<Item = &'v [u8]> + use<'v, V> {
        // `take(0)` never reads the headers: nothing to scan for an untrusted peer.
        let hops = if self.trusted { usize::MAX } else { 0 };
        headers
            .get_all("x-forwarded-for")
            .take(hops)
            .filter(|v| text(v).is_some())
    }

    /// The `X-Forwarded-Proto` the gateway sets (`None`: a trusted proxy's passes).
    pub fn set_proto(&self) -> Option<&'static str> {
        (!self.told_proto).then_some(self.proto)
    }

    /// The `X-Forwarded-Host` the gateway sets (`None`: a trusted proxy's passes, or there is no
    /// host).
    pub fn set_host(&self) -> Option<&'a [u8]> {
        self.host.filter(|_| !self.told_host)
    }

    /// Applies the plan to a header map (the general path). The request id is already set
    /// ([`request_id`]); the identity headers are the gate's.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if self.drops_any_bearer(headers) {
            let others: Vec<HeaderValue> = headers
                .get_all(header::AUTHORIZATION)
                .iter()
                .filter(|v| !is_bearer_credential(v.as_bytes()))
                .cloned()
                .collect();
            headers.remove(header::AUTHORIZATION);
            for v in others {
                headers.append(header::AUTHORIZATION, v);
            }
        }
        // Set below (replacing every client copy) or passed: only the others are removed here.
        let set_here = |name: &HeaderName| {
            *name == REAL_IP || *name == XFF || *name == REQUEST_ID || *name == XFP || *name == XFH
        };
        let gone = |name: &HeaderName| !set_here(name) && self.replaces(name.as_str().as_bytes());
        if headers.keys().any(gone) {
            let names: Vec<HeaderName> = headers.keys().filter(|k| gone(k)).cloned().collect();
            for name in names {
                headers.remove(name);
            }
        }
        headers.insert(REAL_IP, peer_value(self.client));
        let chain = if self.trusted {
            let prior: Vec<&str> = headers
                .get_all(&XFF)
                .iter()
                .filter_map(|v| text(v.as_bytes()))
                .collect();
            (!prior.is_empty()).then(|| format!("{}, {}", prior.join(", "), self.peer))
        } else {
            None
        };
        match chain.map(|c| HeaderValue::from_str(&c)) {
            Some(Ok(v)) => {
                headers.insert(XFF, v);
            }
            Some(Err(_)) => {
                headers.remove(XFF);
            }
            None => {
                headers.insert(XFF, peer_value(self.peer));
            }
        }
        if let Some(proto) = self.set_proto() {
            headers.insert(XFP, HeaderValue::from_static(proto));
        }
        if !self.told_host {
            match self.host.map(HeaderValue::from_bytes) {
                Some(Ok(v)) => {
                    headers.insert(XFH, v);
                }
                _ => {
                    headers.remove(XFH);
                }
            }
        }
    }

    fn drops_any_bearer(&self, headers: &HeaderMap) -> bool {
        !self.keep_bearer
            && headers
                .get_all(header::AUTHORIZATION)
                .iter()
                .any(|v| is_bearer_credential(v.as_bytes()))
    }
}

/// What the response epilogue needs to know about a served request.
pub struct Served<'a> {
    pub conn: Conn,
    pub method: &'a Method,
    /// The normalised path (or the raw one when it was refused before normalising).
    pub path: &'a str,
    /// The route (or `auth`, `verify`, `-`) and upstream (or `-`) for the access log.
    pub route: &'a dyn Display,
    pub upstream: &'a dyn Display,
    pub user: Option<&'a AccessClaims>,
    pub request_id: &'a HeaderValue,
    pub start: Instant,
    pub stats: &'a RouteStats,
    pub upstream_time: Option<Duration>,
}

/// The response epilogue, the same on both paths: `Strict-Transport-Security` over TLS (when
/// configured), the request id, the route's counters, and one access-log line (never a token,
/// cookie or query string).
pub fn finish(resp: &mut Response<Body>, hsts: Option<&HeaderValue>, s: Served<'_>) {
    if s.conn.tls
        && let Some(v) = hsts
    {
        resp.headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, v.clone());
    }
    resp.headers_mut().insert(REQUEST_ID, s.request_id.clone());
    let status = resp.status().as_u16();
    s.stats.record(status, s.upstream_time);
    tracing::info!(
        target: "access",
        peer = %s.conn.peer.ip(),
        method = %s.method,
        path = %s.path,
        status,
        latency_us = s.start.elapsed().as_micros() as u64,
        route = %s.route,
        upstream = %s.upstream,
        user = s.user.map_or("-", |c| c.sub.as_str()),
        request_id = s.request_id.to_str().unwrap_or("-"),
    );
}

#[cfg(test)]
mod tests;
