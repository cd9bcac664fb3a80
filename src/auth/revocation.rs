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

use crate::auth::token::AccessClaims;
use crate::store::{Change, Store, StoreError, UserFlags};

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
    jtis: HashMap<String, u64>,
    /// Revoked refresh families and until when tokens of them can exist.
    families: HashMap<String, u64>,
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
        let seq = store.last_change()?;
        Ok(Revocations {
            seq,
            flags: store.user_flags()?.into_iter().collect(),
            jtis: store.revoked_jtis(now)?.into_iter().collect(),
            families: store.revoked_families(now)?.into_iter().collect(),
        })
    }

    /// The feed position.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Why `claims` (already verified cryptographically and in time) must be refused, if at all.
    pub fn check(&self, claims: &AccessClaims) -> Result<(), &'static str> {
        if self.jtis.contains_key(&claims.jti) || self.families.contains_key(&claims.sid) {
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
        let e = self.jtis.entry(jti.to_owned()).or_insert(exp);
        *e = (*e).max(exp);
    }

    /// Revokes a family until `exp` (never shortening an existing entry).
    pub fn revoke_family(&mut self, family: &str, exp: u64) {
        let e = self.families.entry(family.to_owned()).or_insert(exp);
        *e = (*e).max(exp);
    }

    /// Drops deny-list entries that expired at or before `cutoff`: a token that expired then is
    /// refused on its `exp` alone.
    pub fn prune(&mut self, cutoff: u64) {
        self.jtis.retain(|_, exp| *exp > cutoff);
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
                for (jti, exp) in old.jtis {
                    self.revoke_jti(&jti, exp);
                }
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
pub fn fetch(store: &Store, since: u64, now: u64) -> Result<Pending, StoreError> {
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
            sid: sid.into(),
            sv,
            iat: 0,
            nbf: 0,
            exp: 100,
            jti: jti.into(),
            iss: "i".into(),
            aud: "a".into(),
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
        assert_eq!(r.jtis["j"], 50);
        r.prune(49);
        assert!(r.jtis.contains_key("j"));
        r.prune(50);
        assert!(!r.jtis.contains_key("j"));
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
        assert!(r.jtis.contains_key("local"));
        assert!(r.families.contains_key("f"));
        assert_eq!(r.flags["u"].session_version, 4);
    }
}
