//! Access-token verification for an EdDSA and an HS256 key set: never a panic, and nothing is
//! accepted that the fuzzer could not have signed.
//!
//! The first byte picks a mode:
//! - 0: the rest, as a string, is the token;
//! - 1: one part (header, payload or signature) of a valid token is replaced by the rest;
//! - 2: the rest is `header JSON 0xFF payload bytes`, base64url-encoded and correctly signed
//!   with both keys, so the checks after the signature (header members, claim types, time,
//!   issuer, audience) see arbitrary input; a `KID` in the header becomes the key set's kid;
//! - 3: the rest is `typ 0xFF claims JSON`, signed with `Keys::sign_json` (which refuses to mint
//!   access tokens), then verified as an access token: that must always fail.

#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use gateway::auth::token::{self, AccessClaims, Keys, Subject, TokenSettings};
use gateway::secret::Secret;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const NOW: u64 = 1_700_000_000;
const HS_SECRET: &[u8] = b"fuzzing-secret-fuzzing-secret-0123456789";

struct Fixture {
    settings: TokenSettings,
    sets: Vec<KeySet>,
}

struct KeySet {
    keys: Keys,
    /// Signs `header.payload` like the key set would.
    sign: Box<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>,
    valid: String,
    claims: AccessClaims,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let settings = TokenSettings {
        issuer: "https://gateway.test".to_owned(),
        audience: "gateway".to_owned(),
        access_ttl: Duration::from_secs(900),
        leeway_secs: 30,
    };
    let roles = vec!["user".to_owned()];
    let subject = Subject {
        user_id: "u-1",
        email: "a@example.com",
        name: Some("A"),
        roles: &roles,
        session_id: "s-1",
        session_version: 0,
    };

    let mut stored = token::generate_ed25519(NOW).expect("ed25519 key");
    stored.kid = "fuzz-ed".to_owned();
    let ed = Keys::eddsa(std::slice::from_ref(&stored), &stored.kid).expect("eddsa keys");
    let ed_signing = jsonwebtoken::EncodingKey::from_ed_der(stored.private_der.expose());
    let hs = Keys::hs256(&Secret::new(HS_SECRET.to_vec())).expect("hs256 keys");

    let mut sets = Vec::new();
    for (keys, sign) in [
        (
            ed,
            Box::new(move |msg: &[u8]| {
                let sig =
                    jsonwebtoken::crypto::sign(msg, &ed_signing, jsonwebtoken::Algorithm::EdDSA)
                        .expect("sign");
                B64.decode(sig).expect("signature is base64url")
            }) as Box<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>,
        ),
        (
            hs,
            Box::new(|msg: &[u8]| {
                let mut mac = Hmac::<Sha256>::new_from_slice(HS_SECRET).expect("hmac key");
                mac.update(msg);
                mac.finalize().into_bytes().to_vec()
            }),
        ),
    ] {
        let (valid, claims) = keys.issue_access(&settings, &subject, NOW).expect("issue");
        assert_eq!(
            keys.verify_access(&settings, &valid, NOW + 10),
            Ok(claims.clone())
        );
        sets.push(KeySet {
            keys,
            sign,
            valid,
            claims,
        });
    }
    Fixture { settings, sets }
});

fuzz_target!(|data: &[u8]| {
    let fx = &*FIXTURE;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let now = NOW + 10;
    for set in &fx.sets {
        match mode % 4 {
            0 => {
                let token = String::from_utf8_lossy(rest);
                if let Ok(claims) = set.keys.verify_access(&fx.settings, &token, now) {
                    // Only a token the key set issued can pass.
                    assert_eq!(
                        claims, set.claims,
                        "accepted a token nobody signed: {token:?}"
                    );
                }
            }
            1 => {
                let part = usize::from(mode / 4) % 3;
                let mut parts: Vec<String> = set.valid.split('.').map(str::to_owned).collect();
                parts[part] = String::from_utf8_lossy(rest).into_owned();
                let token = parts.join(".");
                if let Ok(claims) = set.keys.verify_access(&fx.settings, &token, now) {
                    let valid: Vec<&str> = set.valid.split('.').collect();
                    let got: Vec<&str> = token.split('.').collect();
                    assert_eq!(
                        (got.first(), got.get(1)),
                        (valid.first(), valid.get(1)),
                        "a changed header or payload kept its signature: {token:?}"
                    );
                    assert_eq!(claims, set.claims);
                }
            }
            2 => {
                let (header, payload) = split(rest);
                let header = String::from_utf8_lossy(header).replace("KID", set.keys.current_kid());
                let header = header.as_bytes();
                let signing_input = format!("{}.{}", B64.encode(header), B64.encode(payload));
                let sig = (set.sign)(signing_input.as_bytes());
                let token = format!("{signing_input}.{}", B64.encode(sig));
                if let Ok(claims) = set.keys.verify_access(&fx.settings, &token, now) {
                    let h: serde_json::Value =
                        serde_json::from_slice(header).expect("an accepted header is JSON");
                    assert_eq!(h["alg"], set.keys.algorithm().as_str());
                    assert!(
                        h["typ"]
                            .as_str()
                            .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt"))
                    );
                    for forbidden in ["jwk", "jku", "x5u", "x5c", "crit"] {
                        assert!(h.get(forbidden).is_none(), "{forbidden} accepted");
                    }
                    assert_eq!(claims.iss, fx.settings.issuer);
                    assert_eq!(claims.aud, fx.settings.audience);
                    assert!(now < claims.exp.saturating_add(fx.settings.leeway_secs));
                    assert!(claims.nbf <= now + fx.settings.leeway_secs);
                    assert!(claims.iat <= now + fx.settings.leeway_secs);
                }
            }
            _ => {
                let (typ, claims) = split(rest);
                let typ = String::from_utf8_lossy(typ);
                let Ok(claims) = serde_json::from_slice::<serde_json::Value>(claims) else {
                    continue;
                };
                if let Ok(token) = set.keys.sign_json(&typ, &claims) {
                    let verdict = set.keys.verify_access(&fx.settings, &token, now);
                    assert!(
                        verdict.is_err(),
                        "sign_json minted an access token: typ {typ:?}"
                    );
                }
            }
        }
    }
});

/// Splits at the first 0xFF byte (never part of UTF-8 text).
fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0xFF) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}
