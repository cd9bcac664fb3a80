//! The store side of a refresh: rotate the presented token into its derived successor, or,
//! within the grace window, find the successor that was already handed out, or detect reuse and
//! revoke the family; then make sure the user may still have a session.
//!
//! Runs on the blocking pool, inside one `spawn_blocking` of
//! [`super::service::AuthService::refresh`]; the service turns the [`RefreshOutcome`] into tokens,
//! in-memory revocations and audit events.

use super::error::AuthError;
use super::refresh_token;
use crate::secret::{Secret, SecretString};
use crate::store::{RefreshRecord, RefreshState, Rotation, Store, User};

/// How many rotations within the grace window a late concurrent refresh may follow.
const GRACE_CHAIN_STEPS: usize = 4;

/// What the store side of a refresh decided.
pub(super) enum RefreshOutcome {
    /// Here is the active token to hand out (new, or the same successor again within grace).
    Issue {
        token: SecretString,
        record: RefreshRecord,
        user: User,
        grace: bool,
    },
    /// Unknown, expired, or already revoked.
    Invalid,
    /// A rotated token came back after the grace window; the family has been revoked.
    Reuse(RefreshRecord),
    /// The user is gone or disabled; the family has been revoked.
    UserGone(RefreshRecord),
}

/// The store side of a refresh: rotate, or within grace find the active successor, or detect
/// reuse; then make sure the user may still have a session.
pub(super) fn rotate(
    store: &Store,
    key: &Secret<Vec<u8>>,
    presented: &SecretString,
    now: u64,
    grace: u64,
) -> Result<RefreshOutcome, AuthError> {
    let successor = |token: &SecretString| {
        refresh_token::successor(key, token.expose())
            .ok_or_else(|| AuthError::Internal("refresh key unusable".into()))
    };
    let next = successor(presented)?;
    let old_hash = refresh_token::hash(presented.expose());
    let new_hash = refresh_token::hash(next.expose());
    let (token, record, in_grace) = match store.rotate_refresh(&old_hash, &new_hash, now)? {
        Rotation::Invalid => return Ok(RefreshOutcome::Invalid),
        Rotation::Rotated(old) => {
            let record = RefreshRecord {
                issued_at: now,
                state: RefreshState::Active,
                ..old
            };
            (next, record, false)
        }
        Rotation::AlreadyRotated { at, record } => {
            if !within_grace(now, at, grace) {
                store.revoke_family(&record.family, now)?;
                return Ok(RefreshOutcome::Reuse(record));
            }
            match follow_chain(store, next, now, grace, &successor)? {
                Chain::Active(token, active) => (token, active, true),
                Chain::Dead => return Ok(RefreshOutcome::Invalid),
                Chain::Reuse => {
                    store.revoke_family(&record.family, now)?;
                    return Ok(RefreshOutcome::Reuse(record));
                }
            }
        }
    };
    match store.user_by_id(&record.user_id)? {
        Some(user) if !user.disabled => Ok(RefreshOutcome::Issue {
            token,
            record,
            user,
            grace: in_grace,
        }),
        _ => {
            store.revoke_family(&record.family, now)?;
            Ok(RefreshOutcome::UserGone(record))
        }
    }
}

/// Whether a token rotated at `at` may still be presented at `now`. Whole seconds, inclusive of
/// the last second; a grace of 0 turns the window off (compared naively, it would still let a
/// token be replayed within the second of its rotation).
fn within_grace(now: u64, at: u64, grace: u64) -> bool {
    grace > 0 && now.saturating_sub(at) <= grace
}

enum Chain {
    /// The newest token of the chain, still active.
    Active(SecretString, RefreshRecord),
    /// Missing, revoked or expired: the session is over, no reuse to punish.
    Dead,
    /// Rotated outside the grace window, or rotated too many times within it.
    Reuse,
}

/// From `token` (the successor of a token rotated within grace), follows successors that were
/// themselves rotated within grace until an active one.
fn follow_chain(
    store: &Store,
    mut token: SecretString,
    now: u64,
    grace: u64,
    successor: &dyn Fn(&SecretString) -> Result<SecretString, AuthError>,
) -> Result<Chain, AuthError> {
    for _ in 0..GRACE_CHAIN_STEPS {
        let Some(record) = store.get_refresh(&refresh_token::hash(token.expose()))? else {
            return Ok(Chain::Dead);
        };
        if now >= record.family_expires_at {
            return Ok(Chain::Dead);
        }
        match record.state {
            RefreshState::Active => return Ok(Chain::Active(token, record)),
            RefreshState::Revoked { .. } => return Ok(Chain::Dead),
            RefreshState::Rotated { at } if within_grace(now, at, grace) => {
                token = successor(&token)?;
            }
            RefreshState::Rotated { .. } => return Ok(Chain::Reuse),
        }
    }
    Ok(Chain::Reuse)
}
