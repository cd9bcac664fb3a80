//! Fills a store with many users and revoked token ids, for the scale benchmark (scenario 4 of
//! `scripts/bench.sh`): `cargo run --release --example fill_store -- PATH USERS JTIS`.
//!
//! Every write is its own transaction (the public `Store` API), so put PATH on a tmpfs
//! (`/dev/shm`) where a commit's fsync costs nothing, and copy the file afterwards if needed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use gateway::store::{Store, User};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, users, jtis] = args.as_slice() else {
        eprintln!("usage: fill_store PATH USERS JTIS");
        std::process::exit(2);
    };
    let users: u64 = users.parse().expect("USERS is a number");
    let jtis: u64 = jtis.parse().expect("JTIS is a number");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let store = Store::open(std::path::Path::new(path)).unwrap();
    let start = Instant::now();
    for i in 0..users {
        let user = User {
            id: format!("{i:08x}-fill-4000-8000-000000000000"),
            email: format!("user{i}@fill.example"),
            name: None,
            // Not a valid hash: these accounts exist only to make the tables big.
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$fill$fill".into(),
            roles: vec!["user".into()],
            disabled: false,
            created_at: now,
            updated_at: now,
            session_version: 0,
            email_verified: false,
        };
        store.create_user(&user).unwrap();
        if i % 100_000 == 0 {
            eprintln!("users: {i} ({:?})", start.elapsed());
        }
    }
    for i in 0..jtis {
        // Revoked for a day: the gateway loads them all at start-up and checks each request.
        store
            .revoke_jti(
                // Real jtis are random UUIDs; these are spread the same way, reproducibly.
                &uuid::Uuid::from_u128(
                    u128::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835),
                )
                .to_string(),
                now + 86_400,
            )
            .unwrap();
        if i % 100_000 == 0 {
            eprintln!("jtis: {i} ({:?})", start.elapsed());
        }
    }
    eprintln!("done: {users} users, {jtis} jtis in {:?}", start.elapsed());
}
