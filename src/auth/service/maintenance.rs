//! What keeps the service's memory in step with the store: the background task that polls the
//! change feed (revocations, key rotations by other processes) and sweeps expired rows, and the
//! staleness rule that makes the service refuse tokens when it has lost track of the feed.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{ACCESS_LEEWAY_SECS, AuthService};
use crate::auth::error::AuthError;
use crate::auth::{keystore, revocation, token};

/// How often [`AuthService::spawn_maintenance`] polls the change feed.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often [`AuthService::spawn_maintenance`] sweeps expired rows.
const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);
/// How long after start-up the first sweep runs: serving comes first. (A sweep of a store with
/// two million old change-feed entries ran alongside start-up and delayed the first request.)
const FIRST_SWEEP_AFTER: Duration = Duration::from_secs(30);

impl AuthService {
    /// Starts the background task that polls the change feed every second and sweeps expired
    /// rows every hour (the first time 30 s after start). It stops when `shutdown` becomes `true` or its
    /// sender is dropped.
    pub fn spawn_maintenance(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let service = self.clone();
        let hint = self.inner.store.change_hint();
        tokio::spawn(async move {
            let woken = || async {
                match &hint {
                    Some(h) => h.notified().await,
                    None => std::future::pending().await,
                }
            };
            let mut poll = tokio::time::interval(POLL_INTERVAL);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut sweep = tokio::time::interval_at(
                tokio::time::Instant::now() + FIRST_SWEEP_AFTER,
                SWEEP_INTERVAL,
            );
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                if *shutdown.borrow() {
                    break;
                }
                tokio::select! {
                    changed = shutdown.changed() => {
                        if changed.is_err() {
                            break;
                        }
                    }
                    _ = poll.tick() => service.poll_and_track().await,
                    () = woken() => service.poll_and_track().await,
                    _ = sweep.tick() => {
                        if let Err(e) = service.sweep().await {
                            tracing::warn!(error = %e, "store sweep failed");
                        }
                    }
                }
            }
            tracing::debug!("auth maintenance stopped");
        });
    }

    /// Polls the change feed and keeps track of staleness: logs when the service becomes
    /// stale (it may miss revocations) and when it recovers.
    async fn poll_and_track(&self) {
        let result = self.poll_changes().await;
        let now = self.inner.clock.unix();
        if let Err(e) = &result {
            tracing::warn!(error = %e, "polling store changes failed");
        }
        let stale = self.is_stale_at(now);
        if self.inner.stale.swap(stale, Ordering::Relaxed) != stale {
            if stale {
                let refusing = self.inner.settings.refuse_when_stale;
                tracing::error!(
                    since_secs = now.saturating_sub(self.inner.last_sync.load(Ordering::Relaxed)),
                    refusing_tokens = refusing,
                    "store unreachable for longer than store.postgres.stale_after: revocations may be missed{}",
                    if refusing {
                        "; refusing tokens until it is back"
                    } else {
                        "; still accepting tokens (when_stale: accept)"
                    }
                );
            } else {
                tracing::info!("store reachable again; revocations are current");
            }
        }
    }

    /// Whether the service has gone longer than `stale_after` without reading the change feed.
    pub fn is_stale(&self) -> bool {
        self.is_stale_at(self.inner.clock.unix())
    }

    fn is_stale_at(&self, now: u64) -> bool {
        self.inner.settings.stale_after.is_some_and(|limit| {
            now.saturating_sub(self.inner.last_sync.load(Ordering::Relaxed)) > limit.as_secs()
        })
    }

    /// Whether tokens are refused because the service is stale and configured to fail closed.
    pub fn refuses_tokens(&self) -> bool {
        self.refuses_tokens_at(self.inner.clock.unix())
    }

    pub(super) fn refuses_tokens_at(&self, now: u64) -> bool {
        self.inner.settings.refuse_when_stale && self.is_stale_at(now)
    }

    /// How many seconds since the change feed was last read.
    pub fn seconds_since_sync(&self) -> u64 {
        let now = self.inner.clock.unix();
        now.saturating_sub(self.inner.last_sync.load(Ordering::Relaxed))
    }

    /// Applies changes other processes made to the store since the last poll; returns how many
    /// feed entries were applied.
    pub async fn poll_changes(&self) -> Result<usize, AuthError> {
        let _guard = self.inner.poll_lock.lock().await;
        let since = self.read_seq()?;
        let now = self.inner.clock.unix();
        let pending = self
            .blocking(move |s| Ok(revocation::fetch(s, since, now)?))
            .await?;
        let (count, rotated) = match &pending {
            revocation::Pending::Updates { updates, .. } => (updates.len(), false),
            // Keys were announced, or a full reload may have skipped their announcement.
            revocation::Pending::Reload(_) => (0, true),
        };
        if rotated {
            self.reload_keys().await?;
        }
        self.write_revocations(|r| r.apply(pending))?;
        self.inner.last_sync.fetch_max(now, Ordering::Relaxed);
        Ok(count)
    }

    /// Re-reads the EdDSA key set from the store (after a rotation by `gateway keys rotate`).
    pub async fn reload_keys(&self) -> Result<(), AuthError> {
        if self.inner.settings.algorithm != token::Algorithm::EdDSA {
            return Ok(());
        }
        let now = self.inner.clock.unix();
        let keys = self
            .blocking(move |s| keystore::load_eddsa_keys(s, now))
            .await?;
        tracing::info!(kid = keys.current_kid(), "signing keys reloaded");
        self.inner.keys.store(std::sync::Arc::new(keys));
        Ok(())
    }

    /// Deletes expired rows from the store and expired entries from memory.
    pub async fn sweep(&self) -> Result<(), AuthError> {
        let now = self.inner.clock.unix();
        self.blocking(move |s| Ok(s.sweep(now)?)).await?;
        self.inner.verified.prune(now);
        // A token is accepted up to the leeway past its `exp`; keep its revocation that long.
        self.write_revocations(|r| r.prune(now.saturating_sub(ACCESS_LEEWAY_SECS)))
    }

    fn read_seq(&self) -> Result<u64, AuthError> {
        self.inner
            .revocations
            .read()
            .map(|r| r.seq())
            .map_err(|_| AuthError::Internal("revocation state lock poisoned".into()))
    }
}
