//! Time as the rest of the gateway sees it.
//!
//! Everything that expires (access tokens, refresh tokens, revocations, rate-limit windows) asks a
//! [`Clock`] for the time instead of calling `SystemTime::now()`, so tests move time forward
//! without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time, shared behind an `Arc`.
#[derive(Clone)]
pub struct Clock {
    /// Seconds added to the system time; only tests change it.
    offset: Arc<AtomicI64>,
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock(offset={}s)", self.offset.load(Ordering::Relaxed))
    }
}

impl Clock {
    /// The real clock.
    pub fn system() -> Self {
        Clock {
            offset: Arc::new(AtomicI64::new(0)),
        }
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        let offset = self.offset.load(Ordering::Relaxed);
        let now = SystemTime::now();
        if offset >= 0 {
            now + Duration::from_secs(offset.unsigned_abs())
        } else {
            now - Duration::from_secs(offset.unsigned_abs())
        }
    }

    /// The current time in whole seconds since the Unix epoch (what JWT claims use).
    pub fn unix(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    /// Moves this clock (and every clone of it) forward. For tests.
    pub fn advance(&self, by: Duration) {
        let secs = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        self.offset.fetch_add(secs, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_moves_every_clone() {
        let clock = Clock::system();
        let other = clock.clone();
        let before = other.unix();
        clock.advance(Duration::from_secs(3600));
        assert!(other.unix() >= before + 3600);
    }
}
