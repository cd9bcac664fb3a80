//! A bounded cache of access tokens whose signature and claims have already been verified.
//!
//! Verifying an Ed25519 signature costs tens of microseconds; a client sends the same access
//! token on every request for its lifetime. [`AuthService::authenticate`] therefore looks the
//! token up here first and runs the cryptographic check only on a miss.
//!
//! What the cache does *not* skip: the caller re-checks expiry against the clock on every hit
//! and always runs the revocation checks (deny-listed jti, revoked family, disabled user, session
//! version) against the in-memory state, so a revocation takes effect on the very next request,
//! cached or not. Only successful verifications are stored, so a forged token is never served
//! from here.
//!
//! Keys are the SHA-256 of the whole token string: collision-resistant, so no other string can
//! hit a cached entry, and a fixed 32 bytes however long the token is (memory stays bounded by
//! the entry count). The map is split into shards, each behind a `std::sync::RwLock`, so that
//! inserts for new tokens do not stall readers of others. When a shard is full, expired entries
//! are dropped first; if that frees nothing, an arbitrary eighth of the shard goes.
//!
//! [`AuthService::authenticate`]: super::service::AuthService::authenticate

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};

use super::token::AccessClaims;

/// Default number of entries kept (about 40 MB at the worst, with claims of a few hundred bytes).
pub const DEFAULT_CAPACITY: usize = 100_000;
/// Number of independent shards; a power of two.
const SHARDS: usize = 16;

/// The cache key: SHA-256 of the token string.
pub type TokenKey = [u8; 32];

/// Computes the cache key of a token.
pub fn key(token: &str) -> TokenKey {
    Sha256::digest(token.as_bytes()).into()
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// Verified earlier and not expired at `now`.
    Hit(Arc<AccessClaims>),
    /// Verified earlier but expired at `now`; the entry has been dropped.
    Expired,
    /// Not in the cache.
    Miss,
}

type Shard = RwLock<HashMap<TokenKey, Arc<AccessClaims>>>;

/// The cache. Shared by reference from the auth service.
pub struct VerifiedCache {
    shards: Box<[Shard]>,
    per_shard: usize,
    leeway_secs: u64,
}

impl std::fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedCache")
            .field("len", &self.len())
            .field("capacity", &(self.per_shard * SHARDS))
            .finish()
    }
}

impl VerifiedCache {
    /// A cache holding at most about `capacity` tokens (rounded up to a multiple of the shard
    /// count). A token counts as expired from `exp + leeway_secs`, as in verification.
    pub fn new(capacity: usize, leeway_secs: u64) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        VerifiedCache {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            per_shard,
            leeway_secs,
        }
    }

    fn shard(&self, key: &TokenKey) -> &Shard {
        // The key is a uniform hash; its first byte picks the shard.
        &self.shards[usize::from(key[0]) % SHARDS]
    }

    fn expired(&self, claims: &AccessClaims, now: u64) -> bool {
        // The same rule as verification: refused on or after `exp + leeway`, and a clock that
        // stepped back before `nbf`/`iat` refuses too.
        let horizon = now.saturating_add(self.leeway_secs);
        now >= claims.exp.saturating_add(self.leeway_secs)
            || claims.nbf > horizon
            || claims.iat > horizon
    }

    /// Looks a token up at time `now`. A poisoned lock reads as a miss (the caller verifies).
    pub fn get(&self, key: &TokenKey, now: u64) -> Lookup {
        let shard = self.shard(key);
        let found = match shard.read() {
            Ok(map) => map.get(key).cloned(),
            Err(_) => return Lookup::Miss,
        };
        match found {
            None => Lookup::Miss,
            Some(claims) if !self.expired(&claims, now) => Lookup::Hit(claims),
            Some(_) => {
                if let Ok(mut map) = shard.write() {
                    map.remove(key);
                }
                Lookup::Expired
            }
        }
    }

    /// Stores freshly verified claims, making room first if the shard is full.
    pub fn insert(&self, key: TokenKey, claims: Arc<AccessClaims>, now: u64) {
        let Ok(mut map) = self.shard(&key).write() else {
            return;
        };
        if map.len() >= self.per_shard && !map.contains_key(&key) {
            map.retain(|_, c| !self.expired(c, now));
            if map.len() >= self.per_shard {
                let drop_count = (self.per_shard / 8).max(1);
                let victims: Vec<TokenKey> = map.keys().take(drop_count).copied().collect();
                for k in victims {
                    map.remove(&k);
                }
            }
        }
        map.insert(key, claims);
    }

    /// Forgets a token (after a revocation check refused it).
    pub fn remove(&self, key: &TokenKey) {
        if let Ok(mut map) = self.shard(key).write() {
            map.remove(key);
        }
    }

    /// Drops every entry expired at `now`.
    pub fn prune(&self, now: u64) {
        for shard in self.shards.iter() {
            if let Ok(mut map) = shard.write() {
                map.retain(|_, c| !self.expired(c, now));
            }
        }
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().map_or(0, |m| m.len()))
            .sum()
    }

    /// Whether the cache is empty.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn claims(jti: &str, exp: u64) -> Arc<AccessClaims> {
        Arc::new(AccessClaims {
            sub: "u".into(),
            email: "a@example.org".into(),
            name: None,
            roles: vec![],
            email_verified: false,
            amr: Vec::new(),
            idp: None,
            sid: "f".into(),
            sv: 0,
            iat: 0,
            nbf: 0,
            exp,
            jti: jti.into(),
            iss: "i".into(),
            aud: "a".into(),
            identity: Default::default(),
        })
    }

    #[test]
    fn hit_then_expired_at_exp_plus_leeway() {
        let c = VerifiedCache::new(100, 5);
        let k = key("t");
        assert!(matches!(c.get(&k, 10), Lookup::Miss));
        c.insert(k, claims("j", 100), 10);
        assert!(matches!(c.get(&k, 104), Lookup::Hit(_)));
        assert!(matches!(c.get(&k, 105), Lookup::Expired));
        // The expired entry is gone.
        assert!(matches!(c.get(&k, 10), Lookup::Miss));
        assert!(c.is_empty());
    }

    #[test]
    fn stays_bounded() {
        let cap = 1000;
        let c = VerifiedCache::new(cap, 0);
        for i in 0..20 * cap {
            c.insert(key(&format!("token-{i}")), claims("j", u64::MAX), 0);
            assert!(c.len() <= cap.div_ceil(SHARDS) * SHARDS);
        }
        assert!(c.len() > cap / 2, "eviction should not empty the cache");
    }

    #[test]
    fn full_shard_drops_expired_entries_first() {
        let c = VerifiedCache::new(SHARDS, 0); // one entry per shard
        let old = key("old");
        c.insert(old, claims("j", 5), 0);
        // Another key in the same shard, inserted after `old` expired.
        let same_shard = (0..)
            .map(|i| key(&format!("new-{i}")))
            .find(|k| k[0] as usize % SHARDS == old[0] as usize % SHARDS)
            .unwrap();
        c.insert(same_shard, claims("k", 100), 10);
        assert!(matches!(c.get(&same_shard, 10), Lookup::Hit(_)));
        assert!(matches!(c.get(&old, 0), Lookup::Miss));
    }

    #[test]
    fn prune_drops_expired() {
        let c = VerifiedCache::new(100, 0);
        c.insert(key("a"), claims("a", 10), 0);
        c.insert(key("b"), claims("b", 20), 0);
        c.prune(15);
        assert_eq!(c.len(), 1);
    }
}
