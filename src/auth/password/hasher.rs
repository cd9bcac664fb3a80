//! argon2id hashing and verification on a small set of dedicated threads.
//!
//! Every hash runs on one of `max_concurrent` threads owned by the [`Hasher`], never on an async
//! worker, and at most `max_concurrent` run at once. Dedicated threads rather than tokio's
//! blocking pool bound memory: the allocator keeps each thread's argon2 block (19 MiB by
//! default) for reuse, and under a login flood the blocking pool grows to hundreds of threads
//! (store reads run there), so hashes wandering across them kept gigabytes. Callers beyond the
//! limit queue; callers beyond that queue, and when the queue is full or a slot
//! does not come in time they get [`HashError::Busy`] at once rather than piling up. Unknown
//! users are verified against a dummy hash with the same cost, so a login for an email that does
//! not exist takes as long as one that does.
//!
//! A login flood is bounded by admission, not by the scheduler: hashing may use at most
//! `cpu_percent` of the machine's CPU time on average ([`Budget`], a token bucket of CPU time,
//! charged with each hash's measured thread CPU time), so a flood cannot take more than that
//! from proxied traffic, while a real user's login still gets its share of a busy machine and
//! finishes in normal time. (The hashing threads used to run in `SCHED_IDLE`, which protected
//! proxied traffic but starved logins whenever anything else on the host was busy:
//! BENCHMARKS.md has the figures.) The threads run at a mildly lowered priority (nice 5), so
//! serving threads preempt them, without being starved by ordinary CPU-bound neighbours.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::secret::SecretString;

/// argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes over memory.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for Argon2Params {
    /// The OWASP Password Storage Cheat Sheet's first argon2id option: 19 MiB, 2 passes, 1 lane.
    fn default() -> Self {
        Argon2Params {
            m_cost_kib: 19_456,
            t_cost: 2,
            p_cost: 1,
        }
    }
}

/// How much hashing may run at once and how long callers may queue for it.
#[derive(Clone, Debug)]
pub struct HasherConfig {
    pub params: Argon2Params,
    /// Hashes running at once; each holds `m_cost_kib` of memory and a CPU for its duration.
    pub max_concurrent: usize,
    /// Callers allowed to queue for a slot; one more gets [`HashError::Busy`] immediately.
    pub max_waiting: usize,
    /// How long a queued caller waits for a slot before getting [`HashError::Busy`].
    pub wait_timeout: Duration,
    /// The share of all CPUs' time that hashing may use on average, in percent (1-100).
    pub cpu_percent: u32,
}

impl Default for HasherConfig {
    /// One hash per CPU, and a queue of four per CPU: with the default parameters a hash takes
    /// tens of milliseconds, so a full queue adds well under a second; past that, refusing
    /// quickly is kinder than timing out.
    fn default() -> Self {
        let cpus = std::thread::available_parallelism()
            .map(std::num::NonZero::get)
            .unwrap_or(1);
        HasherConfig {
            params: Argon2Params::default(),
            max_concurrent: cpus,
            max_waiting: 4 * cpus,
            wait_timeout: Duration::from_secs(2),
            cpu_percent: crate::config::DEFAULT_HASHING_CPU_PERCENT,
        }
    }
}

/// The outcome of [`Hasher::verify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verification {
    /// The password matches the stored hash.
    pub ok: bool,
    /// The password matched but the stored hash uses other parameters (or not argon2id v19):
    /// store a fresh [`Hasher::hash`] of the password.
    pub needs_rehash: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing is saturated")]
    Busy,
    #[error("invalid password hashing parameters: {0}")]
    InvalidParams(String),
    #[error("password hashing failed: {0}")]
    Internal(String),
}

/// argon2id hashing and verification with bounded concurrency. Cheap to clone.
#[derive(Clone)]
pub struct Hasher {
    inner: Arc<Inner>,
}

/// One hash or verification, with the permit it holds and the answer channel.
type Job = Box<dyn FnOnce() + Send>;

struct Inner {
    params: Argon2Params,
    argon2_params: argon2::Params,
    /// A hash of a random password with the configured parameters, verified against when the
    /// user is unknown so that the answer takes the same time.
    dummy_phc: String,
    permits: Arc<Semaphore>,
    /// Work for the hashing threads; they exit when this (the last `Hasher` clone) is dropped.
    jobs: std::sync::mpsc::Sender<Job>,
    max_concurrent: usize,
    max_waiting: usize,
    waiting: AtomicUsize,
    wait_timeout: Duration,
    /// Hashing CPU time still allowed; see [`Budget`].
    budget: Budget,
    /// Hashes and verifications run so far (for metrics, and for tests that prove a refused
    /// request cost no hash).
    completed: std::sync::atomic::AtomicU64,
    /// Requests refused because the pool was saturated.
    refused: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher")
            .field("params", &self.inner.params)
            .finish_non_exhaustive()
    }
}

impl Hasher {
    /// Checks the parameters and computes the dummy hash. This runs one hash on the calling
    /// thread, so call it at start-up (or from `spawn_blocking` on reload).
    pub fn new(cfg: HasherConfig) -> Result<Hasher, HashError> {
        let p = cfg.params;
        let argon2_params = argon2::Params::new(p.m_cost_kib, p.t_cost, p.p_cost, None)
            .map_err(|e| HashError::InvalidParams(e.to_string()))?;
        if !(1..=100).contains(&cfg.cpu_percent) {
            return Err(HashError::InvalidParams(
                "cpu_percent must be between 1 and 100".to_owned(),
            ));
        }
        if cfg.max_concurrent == 0 {
            return Err(HashError::InvalidParams(
                "max_concurrent must be at least 1".to_owned(),
            ));
        }
        let dummy_phc = dummy_phc(&p)?;
        let jobs = spawn_threads(cfg.max_concurrent)?;
        Ok(Hasher {
            inner: Arc::new(Inner {
                params: p,
                argon2_params,
                dummy_phc,
                permits: Arc::new(Semaphore::new(cfg.max_concurrent)),
                jobs,
                max_concurrent: cfg.max_concurrent,
                max_waiting: cfg.max_waiting,
                waiting: AtomicUsize::new(0),
                completed: std::sync::atomic::AtomicU64::new(0),
                refused: std::sync::atomic::AtomicU64::new(0),
                wait_timeout: cfg.wait_timeout,
                budget: Budget::new(cfg.cpu_percent, cpus(), Instant::now()),
            }),
        })
    }

    /// Hashes `password` with argon2id v19, the configured parameters and a random 16-byte salt,
    /// giving a PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`).
    #[tracing::instrument(skip_all)]
    pub async fn hash(&self, password: &SecretString) -> Result<String, HashError> {
        let password = password.clone();
        let argon2_params = self.inner.argon2_params.clone();
        self.run(move || {
            argon2id(&argon2_params)
                .hash_password(password.expose().as_bytes())
                .map(|phc| phc.to_string())
                .map_err(|e| HashError::Internal(e.to_string()))
        })
        .await?
    }

    /// Verifies `password` against a stored PHC string, or against the dummy hash when there is
    /// none (unknown user), which always answers `ok: false` after the same amount of work.
    ///
    /// A stored string that does not parse, names another algorithm or has invalid parameters
    /// is a mismatch, not an error: the caller answers "wrong email or password" either way.
    #[tracing::instrument(skip_all)]
    pub async fn verify(
        &self,
        password: &SecretString,
        phc: Option<&str>,
    ) -> Result<Verification, HashError> {
        let parsed = match phc {
            // No password (an account made by single sign-on): nothing can match.
            Some("") => None,
            Some(s) => match PasswordHash::new(s) {
                Ok(hash) => Some(hash),
                Err(_) => {
                    tracing::warn!("stored password hash is not a valid PHC string");
                    None
                }
            },
            None => None,
        };
        let password = password.clone();
        let inner = Arc::clone(&self.inner);
        self.run(move || {
            let argon2 = argon2id(&inner.argon2_params);
            let pw = password.expose().as_bytes();
            let Some(stored) = parsed else {
                // Same work as a real verify; the result is irrelevant.
                let _ = argon2.verify_password(pw, inner.dummy_phc.as_str());
                return Verification {
                    ok: false,
                    needs_rehash: false,
                };
            };
            // `verify_password` uses the algorithm, version and parameters of the stored hash.
            let ok = argon2.verify_password(pw, &stored).is_ok();
            Verification {
                ok,
                needs_rehash: ok && !matches_config(&stored, &inner.params),
            }
        })
        .await
    }

    /// Hashes running right now (for metrics).
    pub fn in_flight(&self) -> usize {
        self.inner
            .max_concurrent
            .saturating_sub(self.inner.permits.available_permits())
    }

    /// Hashes and verifications run to completion since start.
    pub fn completed(&self) -> u64 {
        self.inner.completed.load(Ordering::Relaxed)
    }

    /// Requests answered `Busy` since start.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// The configured parameters.
    pub fn params(&self) -> Argon2Params {
        self.inner.params
    }

    /// Runs `work` on a hashing thread once a permit is free. The permit moves into the job, so
    /// if the caller is cancelled the slot stays taken until the work really ends.
    async fn run<T, F>(&self, work: F) -> Result<T, HashError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (permit, reserved) = self.acquire().await.inspect_err(|e| {
            if matches!(e, HashError::Busy) {
                self.inner.refused.fetch_add(1, Ordering::Relaxed);
            }
        })?;
        let inner = Arc::clone(&self.inner);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let started = CpuClock::start();
            let out = work();
            inner.budget.settle(reserved, started.elapsed_ns());
            drop(permit);
            inner.completed.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(out);
        });
        self.inner
            .jobs
            .send(job)
            .map_err(|_| HashError::Internal("hashing threads are gone".to_owned()))?;
        rx.await
            .map_err(|_| HashError::Internal("hashing task ended without an answer".to_owned()))
    }

    /// Waits until the CPU budget admits one more hash (reserving its estimated cost), then for
    /// a free thread; all within `wait_timeout`, else [`HashError::Busy`].
    async fn acquire(&self) -> Result<(OwnedSemaphorePermit, u64), HashError> {
        let inner = &self.inner;
        let deadline = Instant::now() + inner.wait_timeout;
        let mut waiting: Option<WaitingGuard<'_>> = None;
        let reserved = loop {
            let now = Instant::now();
            match inner.budget.admit(now) {
                Ok(reserved) => break reserved,
                Err(_) if now >= deadline => return Err(HashError::Busy),
                Err(wait) => {
                    if waiting.is_none() {
                        waiting = Some(WaitingGuard::enter(&inner.waiting, inner.max_waiting)?);
                    }
                    tokio::time::sleep(wait.min(deadline - now)).await;
                }
            }
        };
        // From here a refusal gives the reservation back.
        let refund = |e: HashError| {
            inner.budget.settle(reserved, 0);
            e
        };
        match Arc::clone(&inner.permits).try_acquire_owned() {
            Ok(permit) => return Ok((permit, reserved)),
            Err(TryAcquireError::Closed) => {
                return Err(refund(HashError::Internal("semaphore closed".to_owned())));
            }
            Err(TryAcquireError::NoPermits) => {}
        }
        if waiting.is_none() {
            waiting =
                Some(WaitingGuard::enter(&inner.waiting, inner.max_waiting).map_err(&refund)?);
        }
        let acquire = Arc::clone(&inner.permits).acquire_owned();
        let left = deadline.saturating_duration_since(Instant::now());
        let permit = match tokio::time::timeout(left, acquire).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => {
                return Err(refund(HashError::Internal("semaphore closed".to_owned())));
            }
            Err(_elapsed) => return Err(refund(HashError::Busy)),
        };
        drop(waiting);
        Ok((permit, reserved))
    }
}

/// A token bucket of hashing CPU time, in nanoseconds. It fills at `percent` of all CPUs' time
/// (with `cpus` CPUs, `percent / 100 * cpus` CPU-seconds per second) up to half a second of
/// every CPU's time, so a burst of real logins after a quiet period goes through at once.
///
/// Admission reserves the estimated cost of one hash (a moving average of the measured ones);
/// when the hash ends, the reservation is settled against its measured thread CPU time. The
/// bucket may go below zero by what is running; nothing is admitted until it is positive again,
/// so over any longer period hashing uses at most the budget (plus one burst).
struct Budget {
    /// Nanoseconds of CPU time added per second of wall time.
    rate: f64,
    /// The most that can accumulate.
    capacity: f64,
    state: std::sync::Mutex<BudgetState>,
}

struct BudgetState {
    tokens: f64,
    last: Instant,
    /// Estimated CPU time of one hash, nanoseconds (0 until one has run).
    estimate: f64,
}

impl Budget {
    fn new(percent: u32, cpus: usize, now: Instant) -> Budget {
        let all = cpus.max(1) as f64 * 1e9;
        let capacity = all / 2.0;
        Budget {
            rate: all * f64::from(percent.clamp(1, 100)) / 100.0,
            capacity,
            state: std::sync::Mutex::new(BudgetState {
                tokens: capacity,
                last: now,
                estimate: 0.0,
            }),
        }
    }

    /// Admits one hash and returns the nanoseconds reserved for it, or how long to wait until
    /// the bucket is positive again.
    fn admit(&self, now: Instant) -> Result<u64, Duration> {
        let Ok(mut st) = self.state.lock() else {
            // A poisoned lock means a panic while holding it; fail open on the budget only
            // (concurrency is still bounded by the semaphore).
            return Ok(0);
        };
        let elapsed = now.saturating_duration_since(st.last).as_secs_f64();
        st.tokens = (st.tokens + elapsed * self.rate).min(self.capacity);
        st.last = now;
        if st.tokens <= 0.0 {
            let secs = (-st.tokens / self.rate).max(0.001);
            return Err(Duration::from_secs_f64(secs));
        }
        let reserve = st.estimate;
        st.tokens -= reserve;
        Ok(reserve as u64)
    }

    /// Settles a hash that reserved `reserved` ns and used `actual` ns of CPU time (0 when it
    /// did not run).
    fn settle(&self, reserved: u64, actual: u64) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        st.tokens = (st.tokens + reserved as f64 - actual as f64).min(self.capacity);
        if actual > 0 {
            st.estimate = if st.estimate == 0.0 {
                actual as f64
            } else {
                0.8 * st.estimate + 0.2 * actual as f64
            };
        }
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(std::num::NonZero::get)
        .unwrap_or(1)
}

/// The calling thread's CPU time (Linux), or wall time elsewhere.
struct CpuClock {
    #[cfg(target_os = "linux")]
    start_ns: Option<u64>,
    wall: Instant,
}

impl CpuClock {
    fn start() -> CpuClock {
        CpuClock {
            #[cfg(target_os = "linux")]
            start_ns: thread_cpu_ns(),
            wall: Instant::now(),
        }
    }

    fn elapsed_ns(&self) -> u64 {
        #[cfg(target_os = "linux")]
        if let (Some(a), Some(b)) = (self.start_ns, thread_cpu_ns()) {
            // At least 1 ns: a hash that ran was charged something.
            return b.saturating_sub(a).max(1);
        }
        u64::try_from(self.wall.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

#[cfg(target_os = "linux")]
fn thread_cpu_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; the clock id is a constant.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0;
    if !ok {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u64::try_from(ts.tv_nsec).ok()?;
    Some(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// A PHC string with the configured parameters, a random salt and a random 32-byte "hash" that
/// no password produces. Verifying against it costs exactly what verifying a real hash costs
/// (argon2 must run to compare), which is all it is for; building it costs nothing, where
/// hashing a random password at start-up took a core for up to 200 ms.
fn dummy_phc(p: &Argon2Params) -> Result<String, HashError> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let salt: [u8; 16] = rand::random();
    let hash: [u8; 32] = rand::random();
    let phc = format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        p.m_cost_kib,
        p.t_cost,
        p.p_cost,
        b64.encode(salt),
        b64.encode(hash)
    );
    PasswordHash::new(&phc)
        .map_err(|e| HashError::Internal(format!("dummy hash does not parse: {e}")))?;
    Ok(phc)
}

/// Starts `count` hashing threads sharing one job queue (the semaphore keeps it short).
fn spawn_threads(count: usize) -> Result<std::sync::mpsc::Sender<Job>, HashError> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let rx = Arc::new(std::sync::Mutex::new(rx));
    for i in 0..count {
        let rx = Arc::clone(&rx);
        std::thread::Builder::new()
            .name(format!("argon2-{i}"))
            .spawn(move || {
                lower_priority();
                loop {
                    // The lock is released before the job runs: the others keep taking work.
                    let next = match rx.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = next else { return };
                    // A panicking job loses its answer (the caller sees an error), not the thread.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            })
            .map_err(|e| HashError::Internal(format!("cannot start a hashing thread: {e}")))?;
    }
    Ok(tx)
}

/// Lowers the calling (hashing) thread's priority a little (nice 5): serving threads preempt
/// it, yet a CPU-bound neighbour on the host does not starve it the way `SCHED_IDLE` did. On
/// Linux, `setpriority(PRIO_PROCESS, 0, ..)` applies to the calling thread alone. On failure
/// hashing simply competes as an equal (the budget still bounds it).
#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: setpriority only changes the calling thread's nice value.
    let failed = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, HASHING_NICE) } != 0;
    if failed {
        tracing::debug!("could not lower the hashing thread's priority");
    }
}

/// The nice value of the hashing threads.
#[cfg(target_os = "linux")]
const HASHING_NICE: libc::c_int = 5;

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

fn argon2id(params: &argon2::Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

/// Whether a stored hash is argon2id v19 with exactly the configured costs.
fn matches_config(stored: &PasswordHash, params: &Argon2Params) -> bool {
    if stored.algorithm.as_str() != "argon2id" || stored.version != Some(Version::V0x13.into()) {
        return false;
    }
    match argon2::Params::try_from(stored) {
        Ok(p) => {
            p.m_cost() == params.m_cost_kib
                && p.t_cost() == params.t_cost
                && p.p_cost() == params.p_cost
        }
        Err(_) => false,
    }
}

/// Counts a caller queued for a permit; the count goes down when it is dropped, including when
/// the caller's future is cancelled while waiting.
struct WaitingGuard<'a>(&'a AtomicUsize);

impl<'a> WaitingGuard<'a> {
    fn enter(counter: &'a AtomicUsize, max_waiting: usize) -> Result<Self, HashError> {
        let before = counter.fetch_add(1, Ordering::AcqRel);
        let guard = WaitingGuard(counter);
        if before >= max_waiting {
            return Err(HashError::Busy);
        }
        Ok(guard)
    }
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pw(s: &str) -> SecretString {
        SecretString::new(s.to_owned())
    }

    const FAST: Argon2Params = Argon2Params {
        m_cost_kib: 1024,
        t_cost: 1,
        p_cost: 1,
    };

    fn hasher(params: Argon2Params) -> Hasher {
        Hasher::new(HasherConfig {
            params,
            ..HasherConfig::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let h = hasher(FAST);
        let phc = h.hash(&pw("open sesame")).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{phc}");
        let v = h.verify(&pw("open sesame"), Some(&phc)).await.unwrap();
        assert_eq!(
            v,
            Verification {
                ok: true,
                needs_rehash: false
            }
        );
    }

    #[tokio::test]
    async fn default_params_hash_and_verify() {
        let h = hasher(Argon2Params::default());
        let phc = h.hash(&pw("open sesame")).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(h.verify(&pw("open sesame"), Some(&phc)).await.unwrap().ok);
    }

    #[tokio::test]
    async fn wrong_password_fails() {
        let h = hasher(FAST);
        let phc = h.hash(&pw("open sesame")).await.unwrap();
        let v = h.verify(&pw("open sesame!"), Some(&phc)).await.unwrap();
        assert!(!v.ok);
        assert!(!v.needs_rehash);
    }

    #[tokio::test]
    async fn unknown_user_fails() {
        let h = hasher(FAST);
        // Even the empty password, and the dummy is really a hash with our params.
        assert!(
            h.inner
                .dummy_phc
                .starts_with("$argon2id$v=19$m=1024,t=1,p=1$")
        );
        for p in ["", "open sesame"] {
            let v = h.verify(&pw(p), None).await.unwrap();
            assert!(!v.ok);
        }
    }

    #[tokio::test]
    async fn salts_differ() {
        let h = hasher(FAST);
        let a = h.hash(&pw("open sesame")).await.unwrap();
        let b = h.hash(&pw("open sesame")).await.unwrap();
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn needs_rehash_when_params_change() {
        let old = hasher(FAST);
        let phc = old.hash(&pw("open sesame")).await.unwrap();
        let new = hasher(Argon2Params {
            m_cost_kib: 2048,
            ..FAST
        });
        let v = new.verify(&pw("open sesame"), Some(&phc)).await.unwrap();
        assert_eq!(
            v,
            Verification {
                ok: true,
                needs_rehash: true
            }
        );
        // A wrong password never asks for a rehash.
        let v = new.verify(&pw("nope"), Some(&phc)).await.unwrap();
        assert!(!v.needs_rehash);
    }

    #[tokio::test]
    async fn needs_rehash_for_other_argon2_variants() {
        // argon2i of "open sesame", same costs as FAST.
        let salt = b"0123456789abcdef";
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            argon2::Params::new(1024, 1, 1, None).unwrap(),
        );
        let phc = argon2i
            .hash_password_with_salt(b"open sesame", salt)
            .unwrap()
            .to_string();
        assert!(phc.starts_with("$argon2i$"));
        let v = hasher(FAST)
            .verify(&pw("open sesame"), Some(&phc))
            .await
            .unwrap();
        assert_eq!(
            v,
            Verification {
                ok: true,
                needs_rehash: true
            }
        );
    }

    #[tokio::test]
    async fn malformed_phc_fails_without_error() {
        let h = hasher(FAST);
        let good = h.hash(&pw("open sesame")).await.unwrap();
        let truncated = &good[..good.len() - 10];
        for bad in [
            "",
            "not a hash",
            "$argon2id$v=19$m=1024,t=1,p=1$",
            truncated,
            "$2b$12$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234",
            "$argon2id$v=19$m=1,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$AAAAAAAAAAAAAAAAAAAAAA",
            "$scrypt$ln=4,r=8,p=1$MDEyMzQ1Njc4OWFiY2RlZg$AAAAAAAAAAAAAAAAAAAAAA",
        ] {
            let v = h.verify(&pw("open sesame"), Some(bad)).await.unwrap();
            assert!(!v.ok, "{bad}");
        }
    }

    #[test]
    fn the_budget_admits_a_burst_then_paces_to_its_rate() {
        let t0 = Instant::now();
        // 10% of one CPU: 100 ms of CPU time per second; the bucket holds 500 ms.
        let b = Budget::new(10, 1, t0);
        let hash = 100_000_000; // 100 ms of CPU each
        let mut admitted = 0;
        while let Ok(r) = b.admit(t0) {
            b.settle(r, hash);
            admitted += 1;
            assert!(admitted < 100, "the burst is bounded");
        }
        assert_eq!(admitted, 5, "half a second of CPU time: five 100 ms hashes");
        // Overdrawn: the wait is what the rate needs to bring the bucket back above zero.
        let wait = b.admit(t0).unwrap_err();
        assert!(wait <= Duration::from_millis(1), "{wait:?}");
        b.settle(0, hash); // one more ran (admitted elsewhere): 100 ms in debt
        let wait = b.admit(t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_millis(1000),
            "{wait:?}"
        );
        // Over ten seconds at the rate, about ten more hashes get in.
        let mut later = 0;
        for ms in (0..10_000).step_by(10) {
            let now = t0 + Duration::from_millis(1000 + ms);
            if let Ok(r) = b.admit(now) {
                b.settle(r, hash);
                later += 1;
            }
        }
        assert!((9..=11).contains(&later), "{later}");
    }

    #[test]
    fn a_refused_reservation_is_given_back() {
        let t0 = Instant::now();
        let b = Budget::new(10, 1, t0);
        let r = b.admit(t0).unwrap();
        b.settle(r, 400_000_000); // the estimate is now 400 ms
        let r = b.admit(t0).unwrap();
        assert_eq!(r, 400_000_000);
        assert!(b.admit(t0).is_err(), "0 left after reserving 400 ms more");
        b.settle(r, 0); // that hash never ran
        assert!(b.admit(t0).is_ok(), "the reservation came back");
    }

    #[tokio::test]
    async fn hashing_beyond_the_budget_waits_then_is_refused() {
        let h = Hasher::new(HasherConfig {
            params: FAST,
            max_concurrent: 1,
            max_waiting: 8,
            wait_timeout: Duration::from_millis(300),
            cpu_percent: 1,
        })
        .unwrap();
        // Drain the bucket as if a flood had just spent it.
        {
            let mut st = h.inner.budget.state.lock().unwrap();
            st.tokens = -h.inner.budget.rate * 10.0; // ten seconds in debt
        }
        let before = h.completed();
        let r = h.verify(&pw("x"), None).await;
        assert!(matches!(r, Err(HashError::Busy)), "{r:?}");
        assert_eq!(h.completed(), before, "a refused login cost no hash");
        assert_eq!(h.refused(), 1);
    }

    #[test]
    fn invalid_params_are_rejected() {
        let bad = HasherConfig {
            params: Argon2Params {
                m_cost_kib: 4,
                t_cost: 1,
                p_cost: 1,
            },
            ..HasherConfig::default()
        };
        assert!(matches!(Hasher::new(bad), Err(HashError::InvalidParams(_))));
        let zero = HasherConfig {
            params: FAST,
            max_concurrent: 0,
            ..HasherConfig::default()
        };
        assert!(matches!(
            Hasher::new(zero),
            Err(HashError::InvalidParams(_))
        ));
        let no_budget = HasherConfig {
            params: FAST,
            cpu_percent: 0,
            ..HasherConfig::default()
        };
        assert!(matches!(
            Hasher::new(no_budget),
            Err(HashError::InvalidParams(_))
        ));
    }

    #[test]
    fn debug_shows_params_only() {
        let s = format!("{:?}", hasher(FAST));
        assert!(s.contains("m_cost_kib: 1024"), "{s}");
        assert!(!s.contains("argon2id$"), "{s}");
    }

    /// A hasher with one slot and slow parameters, so a hash holds the slot for a good while
    /// (hundreds of milliseconds).
    fn one_slot(max_waiting: usize, wait_timeout: Duration) -> Hasher {
        Hasher::new(HasherConfig {
            params: Argon2Params {
                m_cost_kib: 64 * 1024,
                t_cost: 8,
                p_cost: 1,
            },
            max_concurrent: 1,
            max_waiting,
            wait_timeout,
            cpu_percent: 100,
        })
        .unwrap()
    }

    async fn wait_until_in_flight(h: &Hasher) {
        while h.in_flight() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn saturated_with_no_queue_is_busy_at_once() {
        let other = one_slot(0, Duration::from_secs(60));
        let h = other.clone();
        let running = tokio::spawn(async move { h.hash(&pw("slow")).await });
        wait_until_in_flight(&other).await;
        assert_eq!(other.in_flight(), 1);
        let second = other.hash(&pw("second")).await;
        assert!(matches!(second, Err(HashError::Busy)), "{second:?}");
        let verify = other.verify(&pw("second"), None).await;
        assert!(matches!(verify, Err(HashError::Busy)), "{verify:?}");
        assert!(running.await.unwrap().is_ok());
        assert_eq!(other.in_flight(), 0);
        assert_eq!(other.inner.waiting.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn queued_caller_times_out_as_busy() {
        let other = one_slot(4, Duration::from_millis(5));
        let h = other.clone();
        let running = tokio::spawn(async move { h.hash(&pw("slow")).await });
        wait_until_in_flight(&other).await;
        let second = other.hash(&pw("second")).await;
        assert!(matches!(second, Err(HashError::Busy)), "{second:?}");
        assert_eq!(other.inner.waiting.load(Ordering::SeqCst), 0);
        assert!(running.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn cancelled_waiter_leaves_the_queue() {
        let other = one_slot(1, Duration::from_secs(60));
        let h = other.clone();
        let running = tokio::spawn(async move { h.hash(&pw("slow")).await });
        wait_until_in_flight(&other).await;
        let waiter = other.clone();
        let queued = tokio::spawn(async move { waiter.hash(&pw("queued")).await });
        while other.inner.waiting.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The queue (of one) is full now.
        assert!(matches!(
            other.hash(&pw("third")).await,
            Err(HashError::Busy)
        ));
        queued.abort();
        assert!(queued.await.unwrap_err().is_cancelled());
        assert_eq!(other.inner.waiting.load(Ordering::SeqCst), 0);
        assert!(running.await.unwrap().is_ok());
    }
}
