//! Rate limits and login regulation for the auth endpoints.
//!
//! Two defences, checked in this order and always before any password is hashed:
//!
//! 1. **Rate limits** (governor, GCRA): per client IP on login, signup and refresh (IPv6
//!    addresses grouped by /64, since one host usually owns the whole /64), and per account
//!    (normalised email) on login and signup (separate buckets, same rate). Refresh has no
//!    per-account limit: a refresh token is a 256-bit secret, so there is nothing to guess per
//!    account. Over the limit: 429 with `Retry-After`.
//! 2. **Regulation** (Authelia's `max_retries`/`find_time`/`ban_time`): after `max_retries`
//!    consecutive failed logins for one account within `find_time`, further attempts for that
//!    account are refused for `ban_time`, whichever IP they come from. The answer is the same
//!    429 whether or not the account exists (unknown emails are regulated the same way).
//!
//! Lock-out abuse (ASVS 6.1.1): an attacker who knows an email can keep that account in its ban
//! window. Three things limit the damage: the ban is short and does not grow; sessions the user
//! already has keep working (only password logins are regulated); and an IP the account has
//! recently logged in from successfully is exempt from the ban (its attempts still count
//! against the per-IP and per-account rate limits), so users at their usual place keep access.
//!
//! **Several replicas** (a PostgreSQL store): rate limits stay per replica (each replica's
//! buckets are its own, so behind N replicas a client gets up to N times the per-IP rate), but
//! regulation is shared: the caller applies [`Rules`] to the account's record in the store
//! under a row lock, so failures spread over replicas add up in one count.
//!
//! Memory stays bounded under a flood of distinct keys: [`Limits::housekeep`] (called every
//! few seconds by the server) drops limiter entries that are back to full capacity and
//! regulation entries that have expired, and gives the memory back.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::config::{Rate, RateLimitSettings};
use crate::store::Regulation;

/// A keyed limiter on a given clock.
type Keyed<K, C> = RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The key for a client address: IPv4 as is, IPv6 by its /64 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpKey {
    V4(u32),
    V6Net(u64),
}

impl From<IpAddr> for IpKey {
    fn from(ip: IpAddr) -> Self {
        match crate::config::units::canonical(ip) {
            IpAddr::V4(v4) => IpKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => IpKey::V6Net((u128::from(v6) >> 64) as u64),
        }
    }
}

impl IpKey {
    /// The key as text (`192.0.2.1`, `2001:db8:0:1::/64`), as the shared store keeps it.
    pub fn text(&self) -> String {
        match *self {
            IpKey::V4(v4) => std::net::Ipv4Addr::from(v4).to_string(),
            IpKey::V6Net(net) => {
                format!("{}/64", std::net::Ipv6Addr::from(u128::from(net) << 64))
            }
        }
    }
}

/// Which endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Login,
    Signup,
    Refresh,
    /// A single sign-on start (`rate_limits.sso_per_ip`).
    Sso,
}

/// Why a request was refused, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: Duration,
    /// `ip`, `account` or `regulation`, for the audit log.
    pub by: &'static str,
}

/// All auth rate limits and the login regulator.
pub struct Limits<C: Clock + Clone = DefaultClock> {
    login_ip: Option<Keyed<IpKey, C>>,
    login_account: Option<Keyed<String, C>>,
    signup_ip: Option<Keyed<IpKey, C>>,
    sso_ip: Option<Keyed<IpKey, C>>,
    refresh_ip: Option<Keyed<IpKey, C>>,
    regulator: Regulator,
    /// Whether regulation lives in a store shared by several servers (then the caller applies
    /// [`Limits::rules`] there, and the in-memory regulator stays empty).
    shared_regulation: bool,
    clock: C,
}

fn quota(rate: &Rate) -> Option<Quota> {
    let burst = NonZeroU32::new(rate.count)?;
    Quota::with_period(rate.per / rate.count).map(|q| q.allow_burst(burst))
}

impl<C: Clock + Clone> std::fmt::Debug for Limits<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("tracked_keys", &self.tracked_keys())
            .finish_non_exhaustive()
    }
}

impl Limits<DefaultClock> {
    /// Limits on the real clock.
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self::with_clock(settings, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limits<C> {
    /// Limits on a given clock (tests use governor's fake clock).
    pub fn with_clock(s: &RateLimitSettings, clock: C) -> Self {
        fn keyed<K: Hash + Eq + Clone, C: Clock + Clone>(
            r: &Option<Rate>,
            clock: &C,
        ) -> Option<Keyed<K, C>> {
            r.as_ref()
                .and_then(quota)
                .map(|q| RateLimiter::dashmap_with_clock(q, clock.clone()))
        }
        Limits {
            login_ip: keyed(&s.login_per_ip, &clock),
            login_account: keyed(&s.login_per_account, &clock),
            signup_ip: keyed(&s.signup_per_ip, &clock),
            sso_ip: keyed(&s.sso_per_ip, &clock),
            refresh_ip: keyed(&s.refresh_per_ip, &clock),
            regulator: Regulator::new(Rules::new(s.max_retries, s.find_time, s.ban_time)),
            shared_regulation: false,
            clock,
        }
    }

    fn wait<K: Hash + Eq + Clone>(
        &self,
        limiter: &Option<Keyed<K, C>>,
        key: &K,
        by: &'static str,
    ) -> Result<(), Throttled> {
        let Some(l) = limiter else { return Ok(()) };
        l.check_key(key).map_err(|not_until| Throttled {
            retry_after: not_until.wait_time_from(self.clock.now()),
            by,
        })
    }

    /// Checks a request before any work is done for it. `account` is the normalised email for
    /// logins (`None` when it does not parse: such a login fails without hashing anyway).
    pub fn check(
        &self,
        action: Action,
        ip: IpAddr,
        account: Option<&str>,
        now: Instant,
    ) -> Result<(), Throttled> {
        let key = IpKey::from(ip);
        match action {
            Action::Signup => {
                self.wait(&self.signup_ip, &key, "ip")?;
                // Repeated sign-ups for one address (each answer says whether it is taken) are
                // limited like logins, in a bucket of their own.
                if let Some(account) = account {
                    self.wait(&self.login_account, &format!("signup:{account}"), "account")?;
                }
                Ok(())
            }
            Action::Refresh => self.wait(&self.refresh_ip, &key, "ip"),
            Action::Sso => self.wait(&self.sso_ip, &key, "ip"),
            Action::Login => {
                self.wait(&self.login_ip, &key, "ip")?;
                if let Some(account) = account {
                    if !self.shared_regulation {
                        self.regulator.check(account, key, now)?;
                    }
                    self.wait(&self.login_account, &account.to_owned(), "account")?;
                }
                Ok(())
            }
        }
    }

    /// Keeps login regulation out of this process: the caller applies [`Limits::rules`] to
    /// records in a store that every replica shares.
    pub fn share_regulation(mut self) -> Self {
        self.shared_regulation = true;
        self
    }

    /// Whether regulation is kept in a shared store (see [`Limits::share_regulation`]).
    pub fn regulation_is_shared(&self) -> bool {
        self.shared_regulation
    }

    /// The regulation rules, for records kept elsewhere.
    pub fn rules(&self) -> Rules {
        self.regulator.rules
    }

    /// Records a failed login (wrong password or unknown account alike).
    pub fn login_failed(&self, account: &str, now: Instant) {
        if !self.shared_regulation {
            self.regulator.failed(account, now);
        }
    }

    /// Records a successful login: the failure count resets and the IP becomes familiar.
    pub fn login_succeeded(&self, account: &str, ip: IpAddr, now: Instant) {
        if !self.shared_regulation {
            self.regulator.succeeded(account, IpKey::from(ip), now);
        }
    }

    /// The limiters keyed by client address.
    fn ip_limiters(&self) -> [&Option<Keyed<IpKey, C>>; 4] {
        [
            &self.login_ip,
            &self.signup_ip,
            &self.refresh_ip,
            &self.sso_ip,
        ]
    }

    /// Drops state that no longer limits anything and returns the memory.
    pub fn housekeep(&self, now: Instant) {
        for l in self.ip_limiters().into_iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.login_account {
            l.retain_recent();
            l.shrink_to_fit();
        }
        self.regulator.housekeep(now);
    }

    /// How many keys the limiters and the regulator hold (for tests and metrics).
    pub fn tracked_keys(&self) -> usize {
        self.ip_limiters()
            .into_iter()
            .flatten()
            .map(|l| l.len())
            .sum::<usize>()
            + self.login_account.as_ref().map_or(0, |l| l.len())
            + self.regulator.len()
    }
}

/// How many familiar IPs are remembered per account.
const FAMILIAR_IPS: usize = 4;

/// How long an account's familiar IPs are remembered after its last activity.
const KEEP_FAMILIAR_SECS: u64 = 86_400;

/// The regulation rules (Authelia's `max_retries`/`find_time`/`ban_time`), applied to a
/// [`Regulation`] record wherever it is kept: in this process's memory (one server), or in the
/// shared store, where every replica counts into the same record.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    max_retries: u32,
    find_time: u64,
    ban_time: u64,
}

impl Rules {
    fn new(max_retries: u32, find_time: Duration, ban_time: Duration) -> Rules {
        Rules {
            max_retries,
            find_time: find_time.as_secs(),
            ban_time: ban_time.as_secs(),
        }
    }

    /// Whether regulation is switched off (`max_retries: 0`).
    pub fn off(&self) -> bool {
        self.max_retries == 0
    }

    /// Refuses a login for a banned account, unless it comes from a familiar network.
    pub fn check(&self, rec: &Regulation, ip: IpKey, now: u64) -> Result<(), Throttled> {
        if self.off() {
            return Ok(());
        }
        match rec.banned_until {
            Some(until) if until > now && !rec.familiar.contains(&ip.text()) => Err(Throttled {
                retry_after: Duration::from_secs(until - now),
                by: "regulation",
            }),
            _ => Ok(()),
        }
    }

    /// Counts a failed login; the ban starts at the `max_retries`th failure in the window.
    pub fn failed(&self, rec: &mut Regulation, now: u64) {
        if self.off() {
            return;
        }
        let window_over = rec
            .first_failure
            .is_none_or(|first| now.saturating_sub(first) > self.find_time);
        let ban_over = rec.banned_until.is_some_and(|until| until <= now);
        if window_over || ban_over {
            rec.failures = 0;
            rec.first_failure = Some(now);
            rec.banned_until = None;
        }
        rec.failures = rec.failures.saturating_add(1);
        rec.touched = now;
        if rec.failures >= self.max_retries {
            rec.banned_until = Some(now + self.ban_time);
        }
    }

    /// A successful login: the count resets and the network becomes familiar.
    pub fn succeeded(&self, rec: &mut Regulation, ip: IpKey, now: u64) {
        rec.failures = 0;
        rec.first_failure = None;
        rec.banned_until = None;
        rec.touched = now;
        let ip = ip.text();
        if !rec.familiar.contains(&ip) {
            if rec.familiar.len() >= FAMILIAR_IPS {
                rec.familiar.remove(0);
            }
            rec.familiar.push(ip);
        }
    }

    /// Whether a record still matters: a ban, a failure in the window, or familiar networks
    /// seen within a day.
    fn worth_keeping(&self, rec: &Regulation, now: u64) -> bool {
        let banned = rec.banned_until.is_some_and(|u| u > now);
        let recent_failure = rec
            .first_failure
            .is_some_and(|f| now.saturating_sub(f) <= self.find_time);
        let familiar =
            !rec.familiar.is_empty() && now.saturating_sub(rec.touched) <= KEEP_FAMILIAR_SECS;
        banned || recent_failure || familiar
    }
}

/// Regulation kept in this process (one server on a redb file). Time is whole seconds since
/// the regulator was made.
struct Regulator {
    rules: Rules,
    base: Instant,
    accounts: Mutex<HashMap<String, Regulation>>,
}

impl Regulator {
    fn new(rules: Rules) -> Self {
        Regulator {
            rules,
            base: Instant::now(),
            accounts: Mutex::new(HashMap::new()),
        }
    }

    fn secs(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.base).as_secs()
    }

    fn check(&self, account: &str, ip: IpKey, now: Instant) -> Result<(), Throttled> {
        if self.rules.off() {
            return Ok(());
        }
        // A poisoned lock means a panic while holding it: refuse rather than skip the check.
        let Ok(map) = self.accounts.lock() else {
            return Err(Throttled {
                retry_after: Duration::from_secs(self.rules.ban_time),
                by: "regulation",
            });
        };
        match map.get(account) {
            Some(rec) => self.rules.check(rec, ip, self.secs(now)),
            None => Ok(()),
        }
    }

    fn failed(&self, account: &str, now: Instant) {
        if self.rules.off() {
            return;
        }
        if let Ok(mut map) = self.accounts.lock() {
            let rec = map.entry(account.to_owned()).or_default();
            self.rules.failed(rec, self.secs(now));
        }
    }

    fn succeeded(&self, account: &str, ip: IpKey, now: Instant) {
        if let Ok(mut map) = self.accounts.lock() {
            let rec = map.entry(account.to_owned()).or_default();
            self.rules.succeeded(rec, ip, self.secs(now));
        }
    }

    /// Forgets records that no longer matter and gives the memory back.
    fn housekeep(&self, now: Instant) {
        let now = self.secs(now);
        if let Ok(mut map) = self.accounts.lock() {
            map.retain(|_, rec| self.rules.worth_keeping(rec, now));
            map.shrink_to_fit();
        }
    }

    fn len(&self) -> usize {
        self.accounts.lock().map_or(0, |m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn settings() -> RateLimitSettings {
        RateLimitSettings {
            login_per_ip: Some(Rate {
                count: 3,
                per: Duration::from_secs(60),
            }),
            login_per_account: Some(Rate {
                count: 100,
                per: Duration::from_secs(60),
            }),
            signup_per_ip: Some(Rate {
                count: 2,
                per: Duration::from_secs(60),
            }),
            refresh_per_ip: None,
            sso_per_ip: None,
            max_retries: 3,
            find_time: Duration::from_secs(120),
            ban_time: Duration::from_secs(300),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_ip_limit_refuses_and_says_when() {
        let clock = FakeRelativeClock::default();
        let l = Limits::with_clock(&settings(), clock.clone());
        let now = Instant::now();
        for _ in 0..3 {
            l.check(Action::Login, ip("10.0.0.1"), None, now).unwrap();
        }
        let t = l
            .check(Action::Login, ip("10.0.0.1"), None, now)
            .unwrap_err();
        assert_eq!(t.by, "ip");
        assert_eq!(t.retry_after, Duration::from_secs(20));
        // Another IP has its own bucket.
        l.check(Action::Login, ip("10.0.0.2"), None, now).unwrap();
        clock.advance(Duration::from_secs(20));
        l.check(Action::Login, ip("10.0.0.1"), None, now).unwrap();
    }

    #[test]
    fn ipv6_is_grouped_by_64() {
        let l = Limits::with_clock(&settings(), FakeRelativeClock::default());
        let now = Instant::now();
        for i in 0..3 {
            l.check(Action::Login, ip(&format!("2001:db8::{i}")), None, now)
                .unwrap();
        }
        assert!(
            l.check(Action::Login, ip("2001:db8::ffff:1"), None, now)
                .is_err()
        );
        l.check(Action::Login, ip("2001:db8:0:1::1"), None, now)
            .unwrap();
    }

    #[test]
    fn regulation_bans_an_account_from_every_ip_for_a_while() {
        let mut s = settings();
        s.login_per_ip = None;
        let l = Limits::with_clock(&s, FakeRelativeClock::default());
        let t0 = Instant::now();
        for n in 0..3 {
            l.check(
                Action::Login,
                ip(&format!("10.0.0.{n}")),
                Some("a@x.test"),
                t0,
            )
            .unwrap();
            l.login_failed("a@x.test", t0);
        }
        let t = l
            .check(Action::Login, ip("192.0.2.9"), Some("a@x.test"), t0)
            .unwrap_err();
        assert_eq!(t.by, "regulation");
        assert_eq!(t.retry_after, Duration::from_secs(300));
        // Other accounts are unaffected; the ban ends.
        l.check(Action::Login, ip("192.0.2.9"), Some("b@x.test"), t0)
            .unwrap();
        l.check(
            Action::Login,
            ip("192.0.2.9"),
            Some("a@x.test"),
            t0 + Duration::from_secs(301),
        )
        .unwrap();
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let mut s = settings();
        s.login_per_ip = None;
        let l = Limits::with_clock(&s, FakeRelativeClock::default());
        let t0 = Instant::now();
        l.login_failed("a@x.test", t0);
        l.login_failed("a@x.test", t0 + Duration::from_secs(1));
        l.login_failed("a@x.test", t0 + Duration::from_secs(200));
        l.check(
            Action::Login,
            ip("10.0.0.1"),
            Some("a@x.test"),
            t0 + Duration::from_secs(201),
        )
        .unwrap();
    }

    #[test]
    fn a_familiar_ip_is_not_locked_out() {
        let mut s = settings();
        s.login_per_ip = None;
        let l = Limits::with_clock(&s, FakeRelativeClock::default());
        let t0 = Instant::now();
        l.login_succeeded("a@x.test", ip("198.51.100.7"), t0);
        for _ in 0..3 {
            l.login_failed("a@x.test", t0);
        }
        assert!(
            l.check(Action::Login, ip("203.0.113.1"), Some("a@x.test"), t0)
                .is_err()
        );
        l.check(Action::Login, ip("198.51.100.7"), Some("a@x.test"), t0)
            .unwrap();
    }

    #[test]
    fn success_resets_the_count() {
        let mut s = settings();
        s.login_per_ip = None;
        let l = Limits::with_clock(&s, FakeRelativeClock::default());
        let t0 = Instant::now();
        l.login_failed("a@x.test", t0);
        l.login_failed("a@x.test", t0);
        l.login_succeeded("a@x.test", ip("10.0.0.1"), t0);
        l.login_failed("a@x.test", t0);
        l.login_failed("a@x.test", t0);
        l.check(Action::Login, ip("10.9.9.9"), Some("a@x.test"), t0)
            .unwrap();
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_keys() {
        let clock = FakeRelativeClock::default();
        let l = Limits::with_clock(&settings(), clock.clone());
        let t0 = Instant::now();
        for i in 0..50_000u32 {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0A00_0000 + i));
            let account = format!("user{i}@x.test");
            let _ = l.check(Action::Login, addr, Some(&account), t0);
            l.login_failed(&account, t0);
        }
        assert!(l.tracked_keys() >= 150_000, "{}", l.tracked_keys());
        // Once the buckets have refilled and the failure window has passed, housekeeping
        // forgets every key.
        clock.advance(Duration::from_secs(3600));
        l.housekeep(t0 + Duration::from_secs(3600));
        assert_eq!(l.tracked_keys(), 0);
    }

    #[test]
    fn signup_is_limited_per_account_too() {
        let mut s = settings();
        s.signup_per_ip = None;
        s.login_per_account = Some(Rate {
            count: 2,
            per: Duration::from_secs(60),
        });
        let l = Limits::with_clock(&s, FakeRelativeClock::default());
        let now = Instant::now();
        for n in 0..2 {
            l.check(
                Action::Signup,
                ip(&format!("10.0.0.{n}")),
                Some("a@x.test"),
                now,
            )
            .unwrap();
        }
        let t = l
            .check(Action::Signup, ip("10.0.0.9"), Some("a@x.test"), now)
            .unwrap_err();
        assert_eq!(t.by, "account");
        // Logins for that account have their own bucket.
        l.check(Action::Login, ip("10.0.0.9"), Some("a@x.test"), now)
            .unwrap();
    }

    #[test]
    fn signup_has_its_own_limit() {
        let l = Limits::with_clock(&settings(), FakeRelativeClock::default());
        let now = Instant::now();
        l.check(Action::Signup, ip("10.0.0.1"), None, now).unwrap();
        l.check(Action::Signup, ip("10.0.0.1"), None, now).unwrap();
        assert!(l.check(Action::Signup, ip("10.0.0.1"), None, now).is_err());
        // Refresh is unlimited in these settings.
        for _ in 0..100 {
            l.check(Action::Refresh, ip("10.0.0.1"), None, now).unwrap();
        }
    }

    #[test]
    fn sso_starts_have_their_own_limit() {
        let mut s = settings();
        s.sso_per_ip = Some(Rate {
            count: 3,
            per: Duration::from_secs(60),
        });
        let l = Limits::with_clock(&s, FakeRelativeClock::default());
        let now = Instant::now();
        // The sign-up bucket being empty does not stop single sign-on, nor the other way round.
        l.check(Action::Signup, ip("10.0.0.1"), None, now).unwrap();
        l.check(Action::Signup, ip("10.0.0.1"), None, now).unwrap();
        assert!(l.check(Action::Signup, ip("10.0.0.1"), None, now).is_err());
        for _ in 0..3 {
            l.check(Action::Sso, ip("10.0.0.1"), None, now).unwrap();
        }
        let t = l.check(Action::Sso, ip("10.0.0.1"), None, now).unwrap_err();
        assert_eq!(t.by, "ip");
        l.check(Action::Sso, ip("10.0.0.2"), None, now).unwrap();
    }
}
