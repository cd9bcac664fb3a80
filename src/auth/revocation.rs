//! The in-memory copy of everything that can kill a valid access token: per-user flags
//! (disabled, session version), deny-listed jtis and revoked refresh families.
//!
//! [`crate::auth::service::AuthService::authenticate`] consults it on every request without
//! touching the disk. It is loaded from the store at start-up, written through by every local
//! change, and kept current with other processes' writes by applying the store's change feed
//! (see [`Pending`]). Merges only ever make things stricter where the store's data is monotonic:
//! a session version never goes down and a revocation's expiry never shrinks, so a stale read
//! applied after a fresh one cannot revive a token.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

use crate::auth::token::AccessClaims;
use crate::store::{Change, JtiRange, Store, StoreError, UserFlags};

/// How many change-feed entries one store read returns.
const CHANGE_PAGE: usize = 1000;

/// The revocation state and the change-feed position it reflects.
#[derive(Debug, Default)]
pub struct Revocations {
    /// The sequence number of the newest change applied.
    seq: u64,
    /// Users that are disabled or have a session version above 0.
    flags: HashMap<String, UserFlags>,
    /// Deny-listed jtis and their token expiry.
    jtis: JtiSet,
    /// Revoked refresh families and until when tokens of them can exist.
    families: HashMap<String, u64>,
}

/// Deny-listed jtis with their expiry. The gateway's jtis are UUIDs: they are kept as 128-bit
/// numbers, which makes loading a million of them at start-up several times faster than as
/// strings (no allocation each, no SipHash). Any other jti (a token minted elsewhere with the
/// shared HS256 secret, say) is kept as text.
#[derive(Debug, Default)]
struct JtiSet {
    /// Split by the top bits of the UUID, so a load builds the shards on every core at once.
    uuids: Box<[UuidMap; JTI_SHARDS]>,
    other: HashMap<String, u64>,
}

/// foldhash's quality variant, seeded per map: a few nanoseconds per 128-bit key. An earlier
/// hasher that only folded the key's two halves (on the idea that v4 UUIDs are random) sent
/// sequential or time-ordered UUIDs, which a foreign HS256 issuer may well mint, all to one
/// bucket: a million of them never finished loading. foldhash's fast variant spread them
/// unevenly for some seeds (1,240 to 3,800 buckets used by 4,096 ordered keys; uniform is
/// about 2,590), the quality variant's last multiply evens that out.
type UuidMap = HashMap<u128, u64, foldhash::quality::RandomState>;

/// Shards of [`JtiSet`]; a power of two.
const JTI_SHARDS: usize = 16;

fn shard(id: u128) -> usize {
    // The top bits of a v4 UUID are random.
    (id >> 124) as usize % JTI_SHARDS
}

impl JtiSet {
    /// Reads the deny list on every core at once: each thread reads its own slice of the jtis
    /// (split by their first hex digit, which is also the shard) into flat vectors while the
    /// store's pages stream by, then builds the maps of its shards. Inserting into a
    /// million-entry map during the read was three times slower (each insert a cache miss
    /// competing with the store's pages). A million revocations: 175 ms on one thread (150 of
    /// them reading), 108 ms on two.
    fn load(store: &Store, now: u64) -> Result<JtiSet, StoreError> {
        JtiSet::load_on(store, now, store.deny_list_readers())
    }

    /// [`JtiSet::load`] with `readers` threads (at most one per shard).
    fn load_on(store: &Store, now: u64, readers: usize) -> Result<JtiSet, StoreError> {
        let count = usize::try_from(store.revoked_jti_count()?).unwrap_or(0);
        let readers = readers.clamp(1, JTI_SHARDS);
        let results: Vec<Result<JtiSet, StoreError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..readers)
                .map(|i| {
                    let range = JtiRange {
                        from: (i > 0).then(|| slice_bound(i, readers)),
                        below: (i + 1 < readers).then(|| slice_bound(i + 1, readers)),
                    };
                    let capacity = count / readers + 16;
                    scope.spawn(move || JtiSet::read_slice(store, now, range, capacity))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(StoreError::Io("a deny-list reader thread panicked".into()))
                    })
                })
                .collect()
        });
        let mut set = JtiSet::default();
        for slice in results {
            // Normally each shard comes whole from one slice; an uppercase UUID is the
            // exception (its shard is by value, its slice by text).
            set.merge(slice?);
        }
        Ok(set)
    }

    /// One reader thread of [`JtiSet::load`]: reads the jtis in `range`, then builds maps.
    fn read_slice(
        store: &Store,
        now: u64,
        range: JtiRange<'_>,
        capacity: usize,
    ) -> Result<JtiSet, StoreError> {
        let mut ids: Vec<(u128, u64)> = Vec::with_capacity(capacity);
        let mut other = HashMap::new();
        store.for_each_revoked_jti(now, range, &mut |jti, exp| match uuid_bits(jti) {
            Some(id) => ids.push((id, exp)),
            None => keep_later(&mut other, jti.to_owned(), exp),
        })?;
        let mut sizes = [0usize; JTI_SHARDS];
        for (id, _) in &ids {
            sizes[shard(*id)] += 1;
        }
        let mut uuids: [UuidMap; JTI_SHARDS] = std::array::from_fn(|s| {
            UuidMap::with_capacity_and_hasher(sizes[s], Default::default())
        });
        for (id, exp) in ids {
            keep_later(&mut uuids[shard(id)], id, exp);
        }
        Ok(JtiSet {
            uuids: Box::new(uuids),
            other,
        })
    }

    fn len(&self) -> usize {
        self.uuids.iter().map(HashMap::len).sum::<usize>() + self.other.len()
    }

    fn get(&self, jti: &str) -> Option<u64> {
        match uuid_bits(jti) {
            Some(id) => self.uuids[shard(id)].get(&id).copied(),
            None => self.other.get(jti).copied(),
        }
    }

    fn contains(&self, jti: &str) -> bool {
        self.get(jti).is_some()
    }

    /// Adds a jti, never shortening an existing entry.
    fn revoke(&mut self, jti: &str, exp: u64) {
        match uuid_bits(jti) {
            Some(id) => keep_later(&mut self.uuids[shard(id)], id, exp),
            None => keep_later(&mut self.other, jti.to_owned(), exp),
        }
    }

    fn prune(&mut self, cutoff: u64) {
        for map in self.uuids.iter_mut() {
            map.retain(|_, exp| *exp > cutoff);
        }
        self.other.retain(|_, exp| *exp > cutoff);
    }

    /// Adds `old`'s entries, keeping the later expiry of a jti in both. Per shard, the smaller
    /// map is poured into the larger: the start-up load merges slices that mostly hold disjoint
    /// shards, which then move whole.
    fn merge(&mut self, old: JtiSet) {
        let shards: [UuidMap; JTI_SHARDS] = *old.uuids;
        for (mine, theirs) in self.uuids.iter_mut().zip(shards) {
            let smaller = if mine.len() < theirs.len() {
                std::mem::replace(mine, theirs)
            } else {
                theirs
            };
            for (id, exp) in smaller {
                keep_later(mine, id, exp);
            }
        }
        for (jti, exp) in old.other {
            keep_later(&mut self.other, jti, exp);
        }
    }
}

/// The first jti (in byte order) of slice `i` of `n`: a lowercase hex digit, so the slices
/// split the gateway's UUIDs evenly and each holds whole shards. Any other jti still falls in
/// exactly one slice.
fn slice_bound(i: usize, n: usize) -> &'static str {
    const DIGITS: [&str; JTI_SHARDS] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "a", "b", "c", "d", "e", "f",
    ];
    DIGITS[(i * JTI_SHARDS / n.max(1)).min(JTI_SHARDS - 1)]
}

/// Inserts a revocation's expiry, keeping the later one if the key is there already: a
/// revocation is never shortened (and the same UUID may be stored in upper and lower case).
fn keep_later<K: Hash + Eq, S: BuildHasher>(map: &mut HashMap<K, u64, S>, jti: K, exp: u64) {
    let e = map.entry(jti).or_insert(exp);
    *e = (*e).max(exp);
}

/// The 128 bits of a UUID in its canonical form (`8-4-4-4-12` hex digits, as the gateway writes
/// jtis); `None` for anything else, which is then kept as text. Hand-rolled because a failed
/// `Uuid::try_parse` builds a detailed error, costly when a million foreign jtis load.
fn uuid_bits(jti: &str) -> Option<u128> {
    let bytes = jti.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    let mut bits: u128 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if b != b'-' {
                return None;
            }
            continue;
        }
        let nibble = char::from(b).to_digit(16)?;
        bits = (bits << 4) | u128::from(nibble);
    }
    Some(bits)
}

/// What a poll read from the store, to be applied under the write lock.
#[derive(Debug)]
pub enum Pending {
    /// Changes after the current position, with what they point at re-read.
    Updates { last: u64, updates: Vec<Update> },
    /// A full reload: the feed no longer reaches back to our position (we fell behind its
    /// retention), or it announced new keys ([`Change::Keys`]), which an import (`gateway
    /// migrate`) writes together with revocations it does not announce one by one. The service
    /// re-reads the keys too.
    Reload(Revocations),
}

/// One change, ready to apply.
#[derive(Debug)]
pub enum Update {
    /// The user's flag row as read after the change (`None`: enabled, version 0).
    Flags(String, Option<UserFlags>),
    Deleted(String),
    Jti(String, u64),
    Family(String, u64),
}

impl Revocations {
    /// Loads the whole state. The feed position is read first, so a change committed during
    /// the load is applied again by the next poll (harmless) rather than missed.
    pub fn load(store: &Store, now: u64) -> Result<Revocations, StoreError> {
        let started = std::time::Instant::now();
        let seq = store.last_change()?;
        let loaded = Revocations {
            seq,
            flags: store.user_flags()?.into_iter().collect(),
            jtis: JtiSet::load(store, now)?,
            families: store.revoked_families(now)?.into_iter().collect(),
        };
        tracing::debug!(
            users = loaded.flags.len(),
            jtis = loaded.jtis.len(),
            families = loaded.families.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "revocation state loaded"
        );
        Ok(loaded)
    }

    /// The feed position.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Why `claims` (already verified cryptographically and in time) must be refused, if at all.
    pub fn check(&self, claims: &AccessClaims) -> Result<(), &'static str> {
        if self.jtis.contains(&claims.jti) || self.families.contains_key(&claims.sid) {
            return Err("revoked");
        }
        if let Some(flags) = self.flags.get(&claims.sub) {
            if flags.disabled {
                return Err("disabled");
            }
            if claims.sv < flags.session_version {
                return Err("revoked");
            }
        }
        Ok(())
    }

    /// Records a user's flags. The session version kept is the higher of old and new.
    pub fn set_flags(&mut self, id: &str, flags: Option<UserFlags>) {
        let mut flags = flags.unwrap_or_default();
        if let Some(old) = self.flags.get(id) {
            flags.session_version = flags.session_version.max(old.session_version);
        }
        if flags == UserFlags::default() {
            self.flags.remove(id);
        } else {
            self.flags.insert(id.to_owned(), flags);
        }
    }

    /// Marks a deleted user: disabled for good.
    pub fn mark_deleted(&mut self, id: &str) {
        self.flags.entry(id.to_owned()).or_default().disabled = true;
    }

    /// Deny-lists a jti until `exp` (never shortening an existing entry).
    pub fn revoke_jti(&mut self, jti: &str, exp: u64) {
        self.jtis.revoke(jti, exp);
    }

    /// Revokes a family until `exp` (never shortening an existing entry).
    pub fn revoke_family(&mut self, family: &str, exp: u64) {
        keep_later(&mut self.families, family.to_owned(), exp);
    }

    /// Drops deny-list entries that expired at or before `cutoff`: a token that expired then is
    /// refused on its `exp` alone.
    pub fn prune(&mut self, cutoff: u64) {
        self.jtis.prune(cutoff);
        self.families.retain(|_, exp| *exp > cutoff);
    }

    /// Applies what a poll read.
    pub fn apply(&mut self, pending: Pending) {
        match pending {
            Pending::Updates { last, updates } => {
                for update in updates {
                    match update {
                        Update::Flags(id, flags) => self.set_flags(&id, flags),
                        Update::Deleted(id) => self.mark_deleted(&id),
                        Update::Jti(jti, exp) => self.revoke_jti(&jti, exp),
                        Update::Family(family, exp) => self.revoke_family(&family, exp),
                    }
                }
                self.seq = self.seq.max(last);
            }
            Pending::Reload(fresh) => {
                // Keep anything written through locally meanwhile; the merges are monotonic.
                let old = std::mem::replace(self, fresh);
                self.jtis.merge(old.jtis);
                for (family, exp) in old.families {
                    self.revoke_family(&family, exp);
                }
                for (id, flags) in old.flags {
                    if let Some(new) = self.flags.get_mut(&id) {
                        new.session_version = new.session_version.max(flags.session_version);
                    } else if flags.session_version > 0 {
                        self.flags.insert(
                            id,
                            UserFlags {
                                disabled: false,
                                session_version: flags.session_version,
                            },
                        );
                    }
                }
                self.seq = self.seq.max(old.seq);
            }
        }
    }
}

/// Reads every change after `since` from the store, re-reading the flag row of each changed
/// user. Blocking; run it on the blocking pool.
pub(crate) fn fetch(store: &Store, since: u64, now: u64) -> Result<Pending, StoreError> {
    let mut updates = Vec::new();
    let mut last = since;
    loop {
        let page = store.changes_since(last, CHANGE_PAGE)?;
        if let Some((first, _)) = page.first()
            && *first != last.saturating_add(1)
        {
            // Sequence numbers are contiguous; a hole means the entries we need were swept.
            tracing::warn!(since, first, "change feed skipped ahead; reloading");
            return Ok(Pending::Reload(Revocations::load(store, now)?));
        }
        let full = page.len() == CHANGE_PAGE;
        for (seq, change) in page {
            last = seq;
            updates.push(match change {
                Change::User { id } => {
                    let flags = store.flags_of(&id)?;
                    Update::Flags(id, flags)
                }
                Change::UserDeleted { id } => Update::Deleted(id),
                Change::Jti { jti, exp } => Update::Jti(jti, exp),
                Change::Family { family, exp } => Update::Family(family, exp),
                // A key rotation, or an import that also wrote revocations without a change
                // each: read everything again (rare, and cheap enough).
                Change::Keys => return Ok(Pending::Reload(Revocations::load(store, now)?)),
            });
        }
        if !full {
            return Ok(Pending::Updates { last, updates });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn claims(sub: &str, sid: &str, jti: &str, sv: u64) -> AccessClaims {
        AccessClaims {
            sub: sub.into(),
            email: "a@example.org".into(),
            name: None,
            roles: vec![],
            email_verified: false,
            amr: Vec::new(),
            idp: None,
            sid: sid.into(),
            sv,
            iat: 0,
            nbf: 0,
            exp: 100,
            jti: jti.into(),
            iss: "i".into(),
            aud: "a".into(),
            identity: Default::default(),
        }
    }

    #[test]
    fn check_reasons() {
        let mut r = Revocations::default();
        assert_eq!(r.check(&claims("u", "f", "j", 0)), Ok(()));
        r.revoke_jti("j", 100);
        assert_eq!(r.check(&claims("u", "f", "j", 0)), Err("revoked"));
        r.revoke_family("f", 100);
        assert_eq!(r.check(&claims("u", "f", "k", 0)), Err("revoked"));
        r.set_flags(
            "u",
            Some(UserFlags {
                disabled: false,
                session_version: 2,
            }),
        );
        assert_eq!(r.check(&claims("u", "g", "k", 1)), Err("revoked"));
        assert_eq!(r.check(&claims("u", "g", "k", 2)), Ok(()));
        r.mark_deleted("u");
        assert_eq!(r.check(&claims("u", "g", "k", 2)), Err("disabled"));
    }

    #[test]
    fn merges_never_loosen() {
        let mut r = Revocations::default();
        r.set_flags(
            "u",
            Some(UserFlags {
                disabled: false,
                session_version: 3,
            }),
        );
        // A stale read with a lower version does not lower it.
        r.set_flags(
            "u",
            Some(UserFlags {
                disabled: false,
                session_version: 1,
            }),
        );
        assert_eq!(r.flags["u"].session_version, 3);
        r.set_flags("u", None);
        assert_eq!(r.flags["u"].session_version, 3);
        r.revoke_jti("j", 50);
        r.revoke_jti("j", 10);
        assert_eq!(r.jtis.get("j"), Some(50));
        r.prune(49);
        assert!(r.jtis.contains("j"));
        r.prune(50);
        assert!(!r.jtis.contains("j"));
    }

    #[test]
    fn enabling_again_clears_disabled() {
        let mut r = Revocations::default();
        r.set_flags(
            "u",
            Some(UserFlags {
                disabled: true,
                session_version: 0,
            }),
        );
        assert_eq!(r.check(&claims("u", "f", "j", 0)), Err("disabled"));
        r.set_flags("u", None);
        assert_eq!(r.check(&claims("u", "f", "j", 0)), Ok(()));
        assert!(r.flags.is_empty());
    }

    #[test]
    fn reload_keeps_local_entries() {
        let mut r = Revocations::default();
        r.revoke_jti("local", 100);
        r.set_flags(
            "u",
            Some(UserFlags {
                disabled: false,
                session_version: 4,
            }),
        );
        let mut fresh = Revocations {
            seq: 10,
            ..Revocations::default()
        };
        fresh.revoke_family("f", 100);
        r.apply(Pending::Reload(fresh));
        assert_eq!(r.seq(), 10);
        assert!(r.jtis.contains("local"));
        assert!(r.families.contains_key("f"));
        assert_eq!(r.flags["u"].session_version, 4);
    }

    #[test]
    fn uuid_and_other_jtis_are_both_kept() {
        let mut r = Revocations::default();
        let id = uuid::Uuid::new_v4();
        r.revoke_jti(&id.to_string(), 100);
        r.revoke_jti("not-a-uuid", 100);
        assert_eq!(
            r.check(&claims("u", "f", &id.to_string(), 0)),
            Err("revoked")
        );
        // Upper case is the same UUID; another spelling is just another string.
        assert_eq!(
            r.check(&claims("u", "f", &id.to_string().to_uppercase(), 0)),
            Err("revoked")
        );
        assert_eq!(uuid_bits(&id.to_string()), Some(id.as_u128()));
        assert_eq!(uuid_bits(&id.simple().to_string()), None);
        assert_eq!(uuid_bits("0000000a-fill-4000-8000-jti000000000"), None);
        assert_eq!(r.check(&claims("u", "f", "not-a-uuid", 0)), Err("revoked"));
        assert_eq!(
            r.check(&claims("u", "f", &uuid::Uuid::new_v4().to_string(), 0)),
            Ok(())
        );
        assert_eq!(r.check(&claims("u", "f", "not-a-uuid-either", 0)), Ok(()));
        r.revoke_jti(&id.to_string(), 50);
        assert_eq!(r.jtis.get(&id.to_string()), Some(100), "never shortened");
        let mut fresh = Revocations::default();
        fresh.revoke_jti(&id.to_string(), 200);
        r.apply(Pending::Reload(fresh));
        assert_eq!(r.jtis.get(&id.to_string()), Some(200));
        assert!(r.jtis.contains("not-a-uuid"));
        r.prune(150);
        assert!(r.jtis.contains(&id.to_string()));
        assert!(!r.jtis.contains("not-a-uuid"));
    }

    #[test]
    fn slices_split_the_hex_digits_in_order() {
        for n in 1..=JTI_SHARDS {
            let bounds: Vec<&str> = (1..n).map(|i| slice_bound(i, n)).collect();
            assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{n}: {bounds:?}");
        }
        assert_eq!(slice_bound(1, 2), "8");
        assert_eq!(slice_bound(15, 16), "f");
    }

    /// The parallel load from a real store file gives the same set whatever the number of
    /// reader threads: every live jti once, the later expiry where one UUID is stored in two
    /// spellings, nothing expired.
    #[test]
    fn a_load_on_any_number_of_threads_reads_the_same_set() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("g.redb")).unwrap();
        let mut expected: HashMap<String, u64> = HashMap::new();
        for i in 0..600u64 {
            let id = uuid::Uuid::new_v4().to_string();
            store.revoke_jti(&id, 1_000 + i).unwrap();
            expected.insert(id, 1_000 + i);
        }
        // Every shard, however the random ids fell.
        for digit in "0123456789abcdef".chars() {
            let id = format!("{digit}0000000-0000-4000-8000-000000000000");
            store.revoke_jti(&id, 5_000).unwrap();
            expected.insert(id, 5_000);
        }
        // One UUID in two spellings, in one slice or two depending on the reader count: the
        // later expiry wins either way.
        let id = "b1000000-0000-4000-8000-00000000000c";
        store.revoke_jti(id, 2_000).unwrap();
        store.revoke_jti(&id.to_uppercase(), 9_000).unwrap();
        expected.insert(id.into(), 9_000);
        let low = "31000000-0000-4000-8000-00000000000c";
        store.revoke_jti(low, 9_000).unwrap();
        store.revoke_jti(&low.to_uppercase(), 2_000).unwrap();
        expected.insert(low.into(), 9_000);
        for other in ["not-a-uuid", "8", "", "\u{e9}", "Zz"] {
            store.revoke_jti(other, 3_000).unwrap();
            expected.insert(other.into(), 3_000);
        }
        store.revoke_jti("expired", 10).unwrap();
        store
            .revoke_jti("c0000000-0000-4000-8000-0000000000ee", 10)
            .unwrap();
        for readers in [1, 2, 3, 5, 16, 64] {
            let set = JtiSet::load_on(&store, 100, readers).unwrap();
            assert_eq!(set.len(), expected.len(), "{readers} readers");
            for (jti, exp) in &expected {
                assert_eq!(set.get(jti), Some(*exp), "{readers} readers: {jti:?}");
            }
            assert_eq!(set.get("expired"), None);
            assert_eq!(set.get("c0000000-0000-4000-8000-0000000000ee"), None);
        }
    }

    /// Jtis that are UUIDs but not random ones (sequential, time-ordered) still spread over a
    /// map's buckets: the bucket index comes from the hash's low bits.
    #[test]
    fn ordered_uuids_do_not_share_buckets() {
        use std::hash::BuildHasher;
        let state = foldhash::quality::RandomState::default();
        let patterns: [fn(u128) -> u128; 3] = [
            |i| (i << 96) | 0x4000_8000_0000_0000_0000, // "{i:08x}-0000-4000-8000-000000000000"
            |i| (i << 80) | 0x7000_8000_0000_0000_0000, // UUIDv7: milliseconds first
            |i| i | 0x4000_8000_0000_0000_0000,         // counting in the last digits
        ];
        for pattern in patterns {
            let buckets: std::collections::HashSet<u64> = (0..4096u128)
                .map(|i| state.hash_one(pattern(i)) & 0xfff)
                .collect();
            // 4096 keys in 4096 buckets: about 2590 distinct if the hash is uniform.
            assert!(buckets.len() > 2300, "{} buckets of 4096", buckets.len());
        }
    }
}
