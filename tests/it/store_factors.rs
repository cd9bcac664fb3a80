//! The store contract for second factors, on both backends: one record per user, changed in
//! one transaction (a TOTP step or a recovery code is used exactly once across handles and
//! replicas), encrypted with the store key, gone with the user, carried by export/import.

use std::sync::{Arc, Barrier};

use gateway::store::{Factors, StoreError, TotpFactor};

use crate::store::{on_each_backend, user};

fn totp(secret: u8) -> TotpFactor {
    TotpFactor {
        secret: vec![secret; 20],
        created_at: 100,
        last_used_step: None,
    }
}

#[test]
fn factors_change_in_one_transaction_and_go_with_the_user() {
    on_each_backend(|b| {
        let s = &b.store;
        s.create_user(&user("u1", "ada@x.test")).unwrap();
        assert_eq!(s.factors_of("u1").unwrap(), Factors::default());
        assert!(matches!(
            s.update_factors("nobody", |f| f.totp = Some(totp(1))),
            Err(StoreError::NotFound)
        ));

        let (stored, ()) = s
            .update_factors("u1", |f| {
                f.totp = Some(totp(1));
                f.recovery_codes = vec![[1; 32], [2; 32]];
            })
            .unwrap();
        assert_eq!(s.factors_of("u1").unwrap(), stored, "{}", b.name);
        assert!(stored.any());

        // Six threads on two handles use the same TOTP step and the same recovery code at once:
        // exactly one of each succeeds.
        let other = (b.reopen)();
        let threads = 6;
        let barrier = Arc::new(Barrier::new(threads));
        let outcomes: Vec<(bool, bool)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|i| {
                    let store = if i % 2 == 0 { s.clone() } else { other.clone() };
                    let barrier = barrier.clone();
                    scope.spawn(move || {
                        barrier.wait();
                        let (_, step_ok) = store
                            .update_factors("u1", |f| match &mut f.totp {
                                Some(t) if t.last_used_step.is_none_or(|last| last < 7) => {
                                    t.last_used_step = Some(7);
                                    true
                                }
                                _ => false,
                            })
                            .unwrap();
                        let (_, code_ok) = store
                            .update_factors("u1", |f| {
                                let before = f.recovery_codes.len();
                                f.recovery_codes.retain(|c| c != &[2; 32]);
                                f.recovery_codes.len() < before
                            })
                            .unwrap();
                        (step_ok, code_ok)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let steps = outcomes.iter().filter(|o| o.0).count();
        let codes = outcomes.iter().filter(|o| o.1).count();
        assert_eq!((steps, codes), (1, 1), "{}: {outcomes:?}", b.name);
        let now = s.factors_of("u1").unwrap();
        assert_eq!(now.totp.as_ref().unwrap().last_used_step, Some(7));
        assert_eq!(now.recovery_codes, vec![[1; 32]]);

        // Emptied, the record goes; and deleting the user deletes their factors.
        s.update_factors("u1", |f| *f = Factors::default()).unwrap();
        assert!(s.export(0).unwrap().factors.is_empty(), "{}", b.name);
        s.update_factors("u1", |f| f.totp = Some(totp(3))).unwrap();
        s.delete_user("u1", 200).unwrap();
        assert!(s.export(0).unwrap().factors.is_empty(), "{}", b.name);
        s.create_user(&user("u1", "ada@x.test")).unwrap();
        assert_eq!(
            s.factors_of("u1").unwrap(),
            Factors::default(),
            "{}: a new user with the old id starts without factors",
            b.name
        );
    });
}

#[test]
fn factors_are_encrypted_with_the_store_key() {
    let material = |c: u8| gateway::secret::Secret::new(vec![c; 40]);
    on_each_backend(|b| {
        b.store.create_user(&user("u1", "ada@x.test")).unwrap();
        b.store.create_user(&user("u2", "bob@x.test")).unwrap();
        // One written in the clear before a key was configured.
        b.store
            .update_factors("u2", |f| f.totp = Some(totp(0x5A)))
            .unwrap();
        let sealed = b.store.clone().with_encryption(Some(&material(1))).unwrap();
        sealed
            .update_factors("u1", |f| f.totp = Some(totp(0xA5)))
            .unwrap();
        let raw = |store: &gateway::store::Store, id: &str| {
            let snap = store.export(0).unwrap();
            snap.factors
                .into_iter()
                .find(|(u, _)| u == id)
                .map(|(_, v)| v)
                .unwrap()
        };
        let u1 = raw(&b.store, "u1");
        assert!(gateway::store::seal::is_sealed(&u1), "{}", b.name);
        assert!(!u1.windows(20).any(|w| w == [0xA5; 20]), "{}", b.name);
        match (b.reopen)().factors_of("u1") {
            Err(StoreError::Sealed(_)) => {}
            r => panic!("{}: read without the key: {r:?}", b.name),
        }
        assert_eq!(
            sealed.factors_of("u1").unwrap().totp.unwrap().secret,
            vec![0xA5; 20]
        );

        // Start-up with the key seals what was in the clear; `keys decrypt` opens it all again.
        assert!(!gateway::store::seal::is_sealed(&raw(&b.store, "u2")));
        assert!(sealed.seal_secrets(&[]).unwrap() >= 1, "{}", b.name);
        assert!(gateway::store::seal::is_sealed(&raw(&b.store, "u2")));
        assert!(sealed.reseal_secrets(&[], None).unwrap() >= 2, "{}", b.name);
        let plain = (b.reopen)();
        assert_eq!(
            plain.factors_of("u2").unwrap().totp.unwrap().secret,
            vec![0x5A; 20]
        );
        assert_eq!(
            plain.factors_of("u1").unwrap().totp.unwrap().secret,
            vec![0xA5; 20]
        );

        // A sealed value is bound to its user: moved to another, it does not open.
        let moved = sealed.clone();
        moved
            .update_factors("u1", |f| f.totp = Some(totp(0x11)))
            .unwrap();
        let mut snap = moved.export(0).unwrap();
        let u1 = snap
            .factors
            .iter()
            .find(|(u, _)| u == "u1")
            .unwrap()
            .1
            .clone();
        snap.factors = vec![("u2".into(), u1)];
        let target = crate::store::redb();
        let target = target
            .store
            .clone()
            .with_encryption(Some(&material(1)))
            .unwrap();
        snap.meta.clear();
        target.import(&snap).unwrap();
        assert!(target.factors_of("u2").is_err(), "{}", b.name);
    });
}
