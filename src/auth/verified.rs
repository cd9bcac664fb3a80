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
//! An entry holds the token string itself, and a lookup matches only the same string, byte for
//! byte: no other string can hit a cached entry. The table is found by a 64-bit foldhash of the
//! token, seeded at random per process (the bucket, and the shard from its top bits); earlier
//! the key was the token's SHA-256, which cost more than any other single step of a proxied
//! request (`perf record` on the plain GET row: 2.5 % of the gateway's CPU, 1,400 cycles for a
//! 570-byte token even with the CPU's SHA instructions, where a foldhash of it is about a tenth
//! of that; BENCHMARKS.md). What that costs is memory: a cached token's bytes (about 600 with
//! the default claims) instead of 32, so at the default 100,000 entries about 60 MB more at the
//! worst, that is with 100,000 distinct tokens live within an access token's lifetime. The
//! process now holds each live access token until it expires or is evicted (before, only while
//! its request was served), so a core dump of the process would show them; nothing here is
//! logged or printed (no `Debug` for entries).
//!
//! Flooding the table does not work: only tokens that passed verification are inserted, and a
//! lookup of a string that is not there inserts nothing. The byte comparison is not constant
//! time, and need not be: it runs only against an entry whose secret-seeded 64-bit hash the
//! string matches, which a client cannot aim at.
//!
//! The table is split into shards, each behind a `std::sync::RwLock`, so that
//! inserts for new tokens do not stall readers of others. When a shard is full, expired entries
//! are dropped first; if that frees nothing, an arbitrary eighth of the shard goes.
//!
//! [`AuthService::authenticate`]: super::service::AuthService::authenticate

use std::hash::BuildHasher;
use std::sync::{Arc, RwLock};

use hashbrown::HashTable;

use super::token::AccessClaims;

/// Default number of entries kept (about 100 MB at the worst, with tokens and claims of a few
/// hundred bytes each).
pub const DEFAULT_CAPACITY: usize = 100_000;
/// Number of independent shards; a power of two.
const SHARDS: usize = 16;

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

/// One verified token.
struct Entry {
    hash: u64,
    token: Box<str>,
    claims: Arc<AccessClaims>,
}

impl Entry {
    /// Whether this entry is the token's (the whole string, not only its hash).
    fn is(&self, hash: u64, token: &str) -> bool {
        self.hash == hash && *self.token == *token
    }
}

type Shard = RwLock<HashTable<Entry>>;

/// The cache. Shared by reference from the auth service.
pub struct VerifiedCache {
    shards: Box<[Shard]>,
    per_shard: usize,
    leeway_secs: u64,
    hasher: foldhash::quality::RandomState,
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
            shards: (0..SHARDS).map(|_| RwLock::new(HashTable::new())).collect(),
            per_shard,
            leeway_secs,
            hasher: foldhash::quality::RandomState::default(),
        }
    }

    /// The token's hash and its shard (from the hash's top bits; the table uses the low ones).
    fn locate(&self, token: &str) -> (u64, &Shard) {
        let hash = self.hasher.hash_one(token);
        (hash, &self.shards[(hash >> 60) as usize % SHARDS])
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
    pub fn get(&self, token: &str, now: u64) -> Lookup {
        let (hash, shard) = self.locate(token);
        let same = |e: &Entry| e.is(hash, token);
        let found = match shard.read() {
            Ok(table) => table.find(hash, same).map(|e| e.claims.clone()),
            Err(_) => return Lookup::Miss,
        };
        match found {
            None => Lookup::Miss,
            Some(claims) if !self.expired(&claims, now) => Lookup::Hit(claims),
            Some(_) => {
                if let Ok(mut table) = shard.write()
                    && let Ok(entry) = table.find_entry(hash, same)
                {
                    entry.remove();
                }
                Lookup::Expired
            }
        }
    }

    /// Stores freshly verified claims, making room first if the shard is full.
    pub fn insert(&self, token: &str, claims: Arc<AccessClaims>, now: u64) {
        let (hash, shard) = self.locate(token);
        let Ok(mut table) = shard.write() else {
            return;
        };
        let same = |e: &Entry| e.is(hash, token);
        if let Some(entry) = table.find_mut(hash, same) {
            entry.claims = claims;
            return;
        }
        if table.len() >= self.per_shard {
            table.retain(|e| !self.expired(&e.claims, now));
            if table.len() >= self.per_shard {
                let mut drop_count = (self.per_shard / 8).max(1);
                table.retain(|_| {
                    let keep = drop_count == 0;
                    drop_count = drop_count.saturating_sub(1);
                    keep
                });
            }
        }
        let entry = Entry {
            hash,
            token: token.into(),
            claims,
        };
        table.insert_unique(hash, entry, |e| e.hash);
    }

    /// Forgets a token (after a revocation check refused it).
    pub fn remove(&self, token: &str) {
        let (hash, shard) = self.locate(token);
        if let Ok(mut table) = shard.write()
            && let Ok(entry) = table.find_entry(hash, |e| e.is(hash, token))
        {
            entry.remove();
        }
    }

    /// Drops every entry expired at `now`.
    pub fn prune(&self, now: u64) {
        for shard in self.shards.iter() {
            if let Ok(mut map) = shard.write() {
                map.retain(|e| !self.expired(&e.claims, now));
            }
        }
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().map_or(0, |t| t.len()))
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
        assert!(matches!(c.get("t", 10), Lookup::Miss));
        c.insert("t", claims("j", 100), 10);
        assert!(matches!(c.get("t", 104), Lookup::Hit(_)));
        assert!(matches!(c.get("t", 105), Lookup::Expired));
        // The expired entry is gone.
        assert!(matches!(c.get("t", 10), Lookup::Miss));
        assert!(c.is_empty());
    }

    #[test]
    fn stays_bounded() {
        let cap = 1000;
        let c = VerifiedCache::new(cap, 0);
        for i in 0..20 * cap {
            c.insert(&format!("token-{i}"), claims("j", u64::MAX), 0);
            assert!(c.len() <= cap.div_ceil(SHARDS) * SHARDS);
        }
        assert!(c.len() > cap / 2, "eviction should not empty the cache");
    }

    #[test]
    fn full_shard_drops_expired_entries_first() {
        let c = VerifiedCache::new(SHARDS, 0); // one entry per shard
        c.insert("old", claims("j", 5), 0);
        // Another token in the same shard, inserted after `old` expired.
        let shard = |t: &str| std::ptr::from_ref(c.locate(t).1);
        let same_shard = (0..)
            .map(|i| format!("new-{i}"))
            .find(|t| shard(t) == shard("old"))
            .unwrap();
        c.insert(&same_shard, claims("k", 100), 10);
        assert!(matches!(c.get(&same_shard, 10), Lookup::Hit(_)));
        assert!(matches!(c.get("old", 0), Lookup::Miss));
    }

    #[test]
    fn prune_drops_expired() {
        let c = VerifiedCache::new(100, 0);
        c.insert("a", claims("a", 10), 0);
        c.insert("b", claims("b", 20), 0);
        c.prune(15);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn only_the_same_string_hits() {
        let c = VerifiedCache::new(100, 0);
        c.insert("header.payload.signature", claims("j", 100), 0);
        assert!(matches!(
            c.get("header.payload.signature", 0),
            Lookup::Hit(_)
        ));
        for other in [
            "header.payload.signaturE",
            "header.payload.signatur",
            "header.payload.signature ",
            "Header.payload.signature",
            "",
        ] {
            assert!(matches!(c.get(other, 0), Lookup::Miss), "{other:?} hit");
        }
        c.remove("header.payload.signaturE");
        assert_eq!(c.len(), 1, "removing another string removed the entry");
        c.remove("header.payload.signature");
        assert!(c.is_empty());
    }

    #[test]
    fn a_second_insert_replaces_the_claims() {
        let c = VerifiedCache::new(100, 0);
        c.insert("t", claims("first", 100), 0);
        c.insert("t", claims("second", 100), 0);
        assert_eq!(c.len(), 1);
        let Lookup::Hit(got) = c.get("t", 0) else {
            panic!("miss")
        };
        assert_eq!(got.jti, "second");
    }
}
