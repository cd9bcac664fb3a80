//! Unit tests of [`super`]: issuing, verifying and the structural checks on hostile tokens.

use super::*;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

const NOW: u64 = 1_700_000_000;

fn settings() -> TokenSettings {
    TokenSettings {
        issuer: "https://gw.example".into(),
        audience: "gateway".into(),
        access_ttl: Duration::from_secs(300),
        leeway_secs: 30,
    }
}

fn roles() -> Vec<String> {
    vec!["admin".into(), "dev".into()]
}

fn issue(keys: &Keys) -> (String, AccessClaims) {
    let roles = roles();
    let subject = Subject {
        user_id: "u1",
        email: "a@example.com",
        name: Some("Ada"),
        roles: &roles,
        email_verified: true,
        amr: &[],
        provider: None,
        session_id: "fam1",
        session_version: 3,
    };
    keys.issue_access(&settings(), &subject, NOW).unwrap()
}

fn ed() -> (StoredKey, Keys) {
    let key = generate_ed25519(NOW).unwrap();
    let keys = Keys::eddsa(std::slice::from_ref(&key), &key.kid).unwrap();
    (key, keys)
}

fn hs_secret() -> Secret<Vec<u8>> {
    Secret::new(b"0123456789abcdef0123456789abcdef-hs".to_vec())
}

/// Valid access-token claims that tests then break one at a time.
fn claims_json() -> Value {
    json!({
        "sub": "u1", "email": "a@example.com", "roles": ["admin"], "sid": "fam1", "sv": 1,
        "iat": NOW, "nbf": NOW, "exp": NOW + 300, "jti": "j1",
        "iss": "https://gw.example", "aud": "gateway",
    })
}

fn b64json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// A hand-built token: header and claims exactly as given, signed with `key` under `alg`.
fn forge(
    header: &Value,
    claims: &Value,
    key: &EncodingKey,
    alg: jsonwebtoken::Algorithm,
) -> String {
    let message = format!("{}.{}", b64json(header), b64json(claims));
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
    format!("{message}.{sig}")
}

fn ed_header(kid: &str) -> Value {
    json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid})
}

/// Signs `claims` with the stored key under a correct header plus `extra` header members.
fn forge_ed(key: &StoredKey, extra: Value, claims: &Value) -> String {
    let mut header = ed_header(&key.kid);
    for (k, v) in extra.as_object().unwrap() {
        header[k] = v.clone();
    }
    let enc = EncodingKey::from_ed_der(key.private_der.expose());
    forge(&header, claims, &enc, jsonwebtoken::Algorithm::EdDSA)
}

fn verify(keys: &Keys, token: &str) -> Result<AccessClaims, TokenError> {
    keys.verify_access(&settings(), token, NOW)
}

#[test]
fn eddsa_round_trip() {
    let (key, keys) = ed();
    let (token, claims) = issue(&keys);
    assert_eq!(verify(&keys, &token).unwrap(), claims);
    assert_eq!((claims.iat, claims.nbf, claims.exp), (NOW, NOW, NOW + 300));
    assert_eq!(claims.name.as_deref(), Some("Ada"));
    assert_eq!(
        uuid::Uuid::parse_str(&claims.jti)
            .unwrap()
            .get_version_num(),
        4
    );
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.kid.as_deref(), Some(key.kid.as_str()));
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(keys.algorithm(), Algorithm::EdDSA);
    // A second token gets a fresh jti.
    assert_ne!(issue(&keys).1.jti, claims.jti);
}

#[test]
fn generated_kids_are_url_safe_and_distinct() {
    let a = generate_ed25519(NOW).unwrap();
    let b = generate_ed25519(NOW).unwrap();
    assert_eq!(a.kid.len(), 16);
    assert!(
        a.kid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
    assert_ne!(a.kid, b.kid);
    assert_eq!(a.public_raw.len(), 32);
}

#[test]
fn hs256_round_trip_and_kid() {
    let keys = Keys::hs256(&hs_secret()).unwrap();
    let (token, claims) = issue(&keys);
    assert_eq!(verify(&keys, &token).unwrap(), claims);
    let digest = Sha256::digest(hs_secret().expose());
    let kid: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(keys.current_kid(), kid);
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().kid.as_deref(),
        Some(kid.as_str())
    );
    assert_eq!(keys.jwks(), json!({"keys": []}));
    // Another secret: other kid, so the old token names an unknown key.
    let other = Keys::hs256(&Secret::new(vec![7u8; 32])).unwrap();
    assert_ne!(other.current_kid(), keys.current_kid());
    assert_eq!(verify(&other, &token), Err(TokenError::UnknownKey));
}

#[test]
fn hs256_rejects_short_secret() {
    assert_eq!(
        Keys::hs256(&Secret::new(vec![1u8; 31])).unwrap_err(),
        TokenError::WeakSecret
    );
    assert!(Keys::hs256(&Secret::new(vec![1u8; 32])).is_ok());
}

#[test]
fn tampered_payload_is_bad_signature() {
    for keys in [ed().1, Keys::hs256(&hs_secret()).unwrap()] {
        let (token, mut claims) = issue(&keys);
        claims.roles.push("superuser".into());
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64json(&serde_json::to_value(&claims).unwrap()),
            parts[2]
        );
        assert_eq!(verify(&keys, &forged), Err(TokenError::BadSignature));
    }
}

#[test]
fn signature_from_another_token_is_bad_signature() {
    let (_, keys) = ed();
    let (a, _) = issue(&keys);
    let (b, _) = issue(&keys);
    let a_parts: Vec<&str> = a.split('.').collect();
    let b_sig = b.rsplit('.').next().unwrap();
    let spliced = format!("{}.{}.{}", a_parts[0], a_parts[1], b_sig);
    assert_eq!(verify(&keys, &spliced), Err(TokenError::BadSignature));
}

#[test]
fn alg_none_is_rejected() {
    let (key, keys) = ed();
    let payload = b64json(&claims_json());
    let (real, _) = issue(&keys);
    let real_sig = real.rsplit('.').next().unwrap();
    for header in [
        json!({"alg": "none"}),
        json!({"alg": "none", "typ": "at+jwt", "kid": key.kid}),
        json!({"alg": "None", "typ": "at+jwt", "kid": key.kid}),
    ] {
        let h = b64json(&header);
        assert_eq!(
            verify(&keys, &format!("{h}.{payload}.")),
            Err(TokenError::WrongAlgorithm)
        );
        assert_eq!(
            verify(&keys, &format!("{h}.{payload}.{real_sig}")),
            Err(TokenError::WrongAlgorithm)
        );
    }
    // The literal header from the brief.
    assert_eq!(
        verify(&keys, &format!("eyJhbGciOiJub25lIn0.{payload}.")),
        Err(TokenError::WrongAlgorithm)
    );
}

#[test]
fn hs256_signed_with_public_key_is_rejected() {
    let key = generate_ed25519(NOW).unwrap();
    let keys = Keys::eddsa(std::slice::from_ref(&key), &key.kid).unwrap();
    let pair = rcgen::KeyPair::try_from(key.private_der.expose().as_slice()).unwrap();
    let pem = pair.public_key_pem();
    let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": key.kid});
    for secret in [
        key.public_raw.clone(),
        pem.into_bytes(),
        URL_SAFE_NO_PAD.encode(&key.public_raw).into_bytes(),
    ] {
        let token = forge(
            &header,
            &claims_json(),
            &EncodingKey::from_secret(&secret),
            jsonwebtoken::Algorithm::HS256,
        );
        assert_eq!(verify(&keys, &token), Err(TokenError::WrongAlgorithm));
    }
    // And the other way round: an EdDSA token is refused by HS256 keys.
    let hs = Keys::hs256(&hs_secret()).unwrap();
    let (token, _) = issue(&keys);
    assert_eq!(verify(&hs, &token), Err(TokenError::WrongAlgorithm));
}

#[test]
fn unknown_or_hostile_kid_is_unknown_key() {
    let (key, keys) = ed();
    let enc = EncodingKey::from_ed_der(key.private_der.expose());
    for kid in [
        json!("nope"),
        json!("../../etc/passwd"),
        json!("' OR 1=1 --"),
        json!(""),
        json!(7),
    ] {
        let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid});
        let token = forge(
            &header,
            &claims_json(),
            &enc,
            jsonwebtoken::Algorithm::EdDSA,
        );
        assert_eq!(
            verify(&keys, &token),
            Err(TokenError::UnknownKey),
            "kid {kid}"
        );
    }
    let no_kid = forge(
        &json!({"alg": "EdDSA", "typ": "at+jwt"}),
        &claims_json(),
        &enc,
        jsonwebtoken::Algorithm::EdDSA,
    );
    assert_eq!(verify(&keys, &no_kid), Err(TokenError::UnknownKey));
    // Sanity: the same construction with the right kid verifies.
    assert!(verify(&keys, &forge_ed(&key, json!({}), &claims_json())).is_ok());
}

#[test]
fn key_bearing_headers_are_forbidden() {
    let (key, keys) = ed();
    let attacker = generate_ed25519(NOW).unwrap();
    let jwk =
        json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(&attacker.public_raw)});
    for extra in [
        json!({"jwk": jwk}),
        json!({"jku": "https://evil.example/jwks.json"}),
        json!({"x5u": "https://evil.example/cert.pem"}),
        json!({"x5c": ["MIIB"]}),
        json!({"crit": ["exp"]}),
        json!({"jwk": null}),
    ] {
        // Signed with the real key, so only the header member can be the reason.
        let token = forge_ed(&key, extra.clone(), &claims_json());
        assert_eq!(
            verify(&keys, &token),
            Err(TokenError::ForbiddenHeader),
            "{extra}"
        );
    }
    // Attacker key announced in the header and used to sign, with our kid.
    let token = forge_ed(
        &StoredKey {
            kid: key.kid.clone(),
            ..attacker
        },
        json!({"jwk": jwk}),
        &claims_json(),
    );
    assert_eq!(verify(&keys, &token), Err(TokenError::ForbiddenHeader));
}

#[test]
fn typ_must_be_at_jwt() {
    let (key, keys) = ed();
    let enc = EncodingKey::from_ed_der(key.private_der.expose());
    for header in [
        json!({"alg": "EdDSA", "kid": key.kid}),
        json!({"alg": "EdDSA", "kid": key.kid, "typ": "JWT"}),
        json!({"alg": "EdDSA", "kid": key.kid, "typ": "id-assertion+jwt"}),
        json!({"alg": "EdDSA", "kid": key.kid, "typ": ["at+jwt"]}),
    ] {
        let token = forge(
            &header,
            &claims_json(),
            &enc,
            jsonwebtoken::Algorithm::EdDSA,
        );
        assert_eq!(
            verify(&keys, &token),
            Err(TokenError::WrongType),
            "{header}"
        );
    }
    assert!(
        verify(
            &keys,
            &forge_ed(&key, json!({"typ": "AT+JWT"}), &claims_json())
        )
        .is_ok()
    );
}

#[test]
fn expiry_uses_injected_clock_and_leeway() {
    let (_, keys) = ed();
    let (token, claims) = issue(&keys);
    let s = settings();
    // exp + leeway is the first rejected second.
    assert!(
        keys.verify_access(&s, &token, claims.exp + s.leeway_secs - 1)
            .is_ok()
    );
    assert_eq!(
        keys.verify_access(&s, &token, claims.exp + s.leeway_secs),
        Err(TokenError::Expired)
    );
    assert_eq!(
        keys.verify_access(&s, &token, claims.exp + 10_000),
        Err(TokenError::Expired)
    );
}

#[test]
fn exp_in_past_via_claims() {
    let (key, keys) = ed();
    let mut c = claims_json();
    c["exp"] = json!(NOW - 31);
    assert_eq!(
        verify(&keys, &forge_ed(&key, json!({}), &c)),
        Err(TokenError::Expired)
    );
    c["exp"] = json!(NOW - 29);
    assert!(verify(&keys, &forge_ed(&key, json!({}), &c)).is_ok());
}

#[test]
fn future_nbf_or_iat_is_not_yet_valid() {
    let (key, keys) = ed();
    for field in ["nbf", "iat"] {
        let mut c = claims_json();
        c[field] = json!(NOW + 31);
        assert_eq!(
            verify(&keys, &forge_ed(&key, json!({}), &c)),
            Err(TokenError::NotYetValid),
            "{field}"
        );
        c[field] = json!(NOW + 30);
        assert!(
            verify(&keys, &forge_ed(&key, json!({}), &c)).is_ok(),
            "{field}"
        );
    }
    let (token, _) = issue(&keys);
    assert_eq!(
        keys.verify_access(&settings(), &token, NOW - 31),
        Err(TokenError::NotYetValid)
    );
}

#[test]
fn issuer_and_audience_must_match_exactly() {
    let (key, keys) = ed();
    for (field, value, err) in [
        (
            "iss",
            json!("https://evil.example"),
            TokenError::WrongIssuer,
        ),
        ("iss", json!("https://gw.example/"), TokenError::WrongIssuer),
        ("aud", json!("other"), TokenError::WrongAudience),
        ("aud", json!("GATEWAY"), TokenError::WrongAudience),
    ] {
        let mut c = claims_json();
        c[field] = value;
        assert_eq!(verify(&keys, &forge_ed(&key, json!({}), &c)), Err(err));
    }
    // Verified against other settings, our own token is someone else's.
    let (token, _) = issue(&keys);
    let mut s = settings();
    s.audience = "elsewhere".into();
    assert_eq!(
        keys.verify_access(&s, &token, NOW),
        Err(TokenError::WrongAudience)
    );
}

#[test]
fn badly_typed_claims_are_malformed() {
    let (key, keys) = ed();
    let mut cases: Vec<Value> = Vec::new();
    for v in [
        json!("1700000300"),
        json!(1e300),
        json!(-1),
        json!(1_700_000_300.5),
        json!(null),
    ] {
        let mut c = claims_json();
        c["exp"] = v;
        cases.push(c);
    }
    let mut missing = claims_json();
    missing.as_object_mut().unwrap().remove("exp");
    cases.push(missing);
    let mut aud_array = claims_json();
    aud_array["aud"] = json!(["gateway"]);
    cases.push(aud_array);
    cases.push(json!(["not", "an", "object"]));
    for c in cases {
        assert_eq!(
            verify(&keys, &forge_ed(&key, json!({}), &c)),
            Err(TokenError::Malformed),
            "{c}"
        );
    }
    // Duplicate claims are refused by the typed claims.
    let header = b64json(&ed_header(&key.kid));
    let body = br#"{"sub":"u1","email":"a@example.com","roles":[],"sid":"f","sv":1,"iat":1700000000,"nbf":1700000000,"exp":1,"exp":1700000300,"jti":"j","iss":"https://gw.example","aud":"gateway"}"#;
    let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode(body));
    let enc = EncodingKey::from_ed_der(key.private_der.expose());
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &enc, jsonwebtoken::Algorithm::EdDSA)
        .unwrap();
    assert_eq!(
        verify(&keys, &format!("{message}.{sig}")),
        Err(TokenError::Malformed)
    );
}

#[test]
fn duplicate_header_members_are_malformed() {
    let (key, keys) = ed();
    let header = format!(
        r#"{{"alg":"HS256","alg":"EdDSA","typ":"at+jwt","kid":"{}"}}"#,
        key.kid
    );
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        b64json(&claims_json())
    );
    let enc = EncodingKey::from_ed_der(key.private_der.expose());
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &enc, jsonwebtoken::Algorithm::EdDSA)
        .unwrap();
    assert_eq!(
        verify(&keys, &format!("{message}.{sig}")),
        Err(TokenError::Malformed)
    );
}

#[test]
fn truncated_and_garbage_tokens_are_malformed() {
    let (_, keys) = ed();
    let (token, _) = issue(&keys);
    let dot = token.rfind('.').unwrap();
    let [h, p, s]: [&str; 3] = token.split('.').collect::<Vec<_>>().try_into().unwrap();
    let cases = vec![
        String::new(),
        ".".into(),
        "..".into(),
        "a.b.c".into(),
        "not a token".into(),
        token[..token.len() - 4].to_string(),
        token[..dot].to_string(),
        token[..dot + 1].to_string(),
        token[..token.len() / 2].to_string(),
        format!("{token}.x"),
        format!("{token}="),
        format!("{h}.{p}.{s}{s}"),
        format!("{h}.{p}!.{s}"),
        format!("{h}..{s}"),
        format!("{h}.{}.{s}", "A".repeat(MAX_TOKEN_LEN)),
        format!("{h}=.{p}.{s}"),
        format!("{h}.{p}=.{s}"),
        format!("{h}.{p}.{}", STANDARD.encode([0xfbu8; 64])),
        format!("{}.{p}.{s}", URL_SAFE_NO_PAD.encode("[1,2]")),
        format!("{}.{p}.{s}", URL_SAFE_NO_PAD.encode(r#"{"typ":"at+jwt"}"#)),
    ];
    for bad in cases {
        assert_eq!(verify(&keys, &bad), Err(TokenError::Malformed), "{bad:.80}");
    }
}

#[test]
fn rotation_keeps_old_tokens_valid() {
    let old = generate_ed25519(NOW).unwrap();
    let new = generate_ed25519(NOW + 1).unwrap();
    let before = Keys::eddsa(std::slice::from_ref(&old), &old.kid).unwrap();
    let (old_token, _) = issue(&before);

    let after = Keys::eddsa(&[old.clone(), new.clone()], &new.kid).unwrap();
    assert!(verify(&after, &old_token).is_ok());
    let (new_token, _) = issue(&after);
    assert_eq!(
        jsonwebtoken::decode_header(&new_token).unwrap().kid,
        Some(new.kid.clone())
    );
    assert!(verify(&after, &new_token).is_ok());
    // The old key set knows nothing of the new key.
    assert_eq!(verify(&before, &new_token), Err(TokenError::UnknownKey));
    // Once the old key is dropped, its tokens stop verifying.
    let retired = Keys::eddsa(std::slice::from_ref(&new), &new.kid).unwrap();
    assert_eq!(verify(&retired, &old_token), Err(TokenError::UnknownKey));
}

#[test]
fn jwks_lists_public_keys_only() {
    let old = generate_ed25519(NOW).unwrap();
    let new = generate_ed25519(NOW).unwrap();
    let keys = Keys::eddsa(&[old.clone(), new.clone()], &new.kid).unwrap();
    let jwks = keys.jwks();
    let list = jwks["keys"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    for (jwk, stored) in list.iter().zip([&old, &new]) {
        assert_eq!(
            jwk,
            &json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(&stored.public_raw),
                    "kid": stored.kid, "alg": "EdDSA", "use": "sig"})
        );
        assert!(jwk.get("d").is_none());
        // The JWK really verifies our tokens.
        let parsed: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
        assert!(DecodingKey::from_jwk(&parsed).is_ok());
    }
    let text = jwks.to_string();
    for stored in [&old, &new] {
        assert!(!text.contains(&URL_SAFE_NO_PAD.encode(stored.private_der.expose())));
        // The 32-byte seed sits at the end of ring's PKCS#8 prefix; never published.
        let seed = &stored.private_der.expose()[16..48];
        assert!(!text.contains(&URL_SAFE_NO_PAD.encode(seed)));
    }
}

#[test]
fn debug_never_shows_private_key() {
    let (key, keys) = ed();
    let der = key.private_der.expose();
    let secrets = [
        URL_SAFE_NO_PAD.encode(der),
        STANDARD.encode(der),
        format!("{der:?}"),
    ];
    let hs = Keys::hs256(&hs_secret()).unwrap();
    let hs_text = String::from_utf8(hs_secret().expose().clone()).unwrap();
    for shown in [format!("{key:?}"), format!("{keys:?}"), format!("{hs:?}")] {
        for secret in &secrets {
            assert!(!shown.contains(secret.as_str()), "{shown}");
        }
        assert!(!shown.contains(&hs_text), "{shown}");
    }
    assert!(format!("{key:?}").contains(&key.kid));
    assert!(format!("{keys:?}").contains(&key.kid));
}

#[test]
fn stored_key_serde_round_trip() {
    let key = generate_ed25519(NOW).unwrap();
    let text = serde_json::to_string(&key).unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        value["private_der"],
        json!(URL_SAFE_NO_PAD.encode(key.private_der.expose()))
    );
    assert_eq!(value["alg"], json!("EdDSA"));
    let back: StoredKey = serde_json::from_str(&text).unwrap();
    assert_eq!(back.private_der, key.private_der);
    assert_eq!(back.public_raw, key.public_raw);
    // The reloaded key signs tokens the original verifies.
    let (token, _) = issue(&Keys::eddsa(&[back], &key.kid).unwrap());
    assert!(
        verify(
            &Keys::eddsa(std::slice::from_ref(&key), &key.kid).unwrap(),
            &token
        )
        .is_ok()
    );
}

#[test]
fn bad_key_sets_are_refused() {
    let a = generate_ed25519(NOW).unwrap();
    let b = generate_ed25519(NOW).unwrap();
    let is_internal = |r: Result<Keys, TokenError>| matches!(r, Err(TokenError::Internal(_)));
    assert!(is_internal(Keys::eddsa(&[], "x")));
    assert!(is_internal(Keys::eddsa(std::slice::from_ref(&a), "other")));
    assert!(is_internal(Keys::eddsa(&[a.clone(), a.clone()], &a.kid)));
    let swapped = StoredKey {
        public_raw: b.public_raw.clone(),
        ..a.clone()
    };
    assert!(is_internal(Keys::eddsa(&[swapped], &a.kid)));
    let short = StoredKey {
        public_raw: vec![1; 16],
        ..a.clone()
    };
    assert!(is_internal(Keys::eddsa(&[short], &a.kid)));
    let garbage = StoredKey {
        private_der: Secret::new(vec![0; 48]),
        ..a.clone()
    };
    assert!(is_internal(Keys::eddsa(&[garbage], &a.kid)));
    let hs = StoredKey {
        alg: Algorithm::HS256,
        ..a.clone()
    };
    assert!(is_internal(Keys::eddsa(&[hs], &a.kid)));
    assert!(Keys::eddsa(&[a.clone(), b], &a.kid).is_ok());
}

#[test]
fn sign_json_cannot_mint_access_tokens() {
    let (key, keys) = ed();
    let token = keys.sign_json("id-assertion+jwt", &claims_json()).unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("id-assertion+jwt"));
    assert_eq!(header.kid.as_deref(), Some(key.kid.as_str()));
    // Same claims as a valid access token, but the wrong typ.
    assert_eq!(verify(&keys, &token), Err(TokenError::WrongType));
    assert_eq!(
        keys.sign_json("at+jwt", &claims_json()),
        Err(TokenError::WrongType)
    );
    assert_eq!(
        keys.sign_json("AT+JWT", &claims_json()),
        Err(TokenError::WrongType)
    );
    assert!(matches!(
        keys.sign_json("x", &json!([1])),
        Err(TokenError::Internal(_))
    ));
    // The assertion verifies with the published key.
    let mut v = Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_aud = false;
    let dk = DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(&key.public_raw)).unwrap();
    assert!(jsonwebtoken::decode::<Value>(&token, &dk, &v).is_ok());
}
