//! Single-use recovery codes: the way back in when the authenticator is lost.
//!
//! The user is shown [`COUNT`] codes once, at enrolment, and is meant to print or store them
//! offline. The store keeps only their [`hash`]es; [`matches`] finds which one a typed code is,
//! and the caller deletes that hash so the code works once.
//!
//! A code is 10 characters from a 31-character alphabet of lower-case letters and digits
//! without `0`/`o`, `1`/`l`/`i`, which people confuse when they copy from paper. Codes are
//! shown as `xxxxx-xxxxx` and read back leniently: case, spaces and dashes do not matter.
//!
//! # Why SHA-256 and not argon2
//!
//! Passwords are hashed slowly because people choose guessable ones. These codes are not
//! chosen: each is uniformly random with 31^10 ≈ 2^49.5 possibilities, so even with a fast
//! hash, finding one from a leaked hash is a search of about 2^48 SHA-256 computations per
//! code, too costly to be worth it against one account's fallback factor. Online guessing,
//! the practical attack, is bounded by the login rate limits, not by the hash. A fast hash
//! also lets [`matches`] try all of a user's codes without costing a login ten argon2 runs.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::Secret;

/// Codes issued at enrolment.
pub const COUNT: usize = 10;

/// Characters in a code, without the dash.
const LEN: usize = 10;

/// Lower-case letters and digits without the ones easily mistaken for each other:
/// `0`/`o`, and `1`/`l`/`i`.
const ALPHABET: &[u8; 31] = b"23456789abcdefghjkmnpqrstuvwxyz";

/// [`COUNT`] new codes, distinct, each shown as `xxxxx-xxxxx`.
pub fn generate() -> Vec<Secret<String>> {
    use rand::Rng;
    let mut rng = rand::rng();
    let mut codes: Vec<Secret<String>> = Vec::with_capacity(COUNT);
    while codes.len() < COUNT {
        let mut code = String::with_capacity(LEN + 1);
        for i in 0..LEN {
            if i == LEN / 2 {
                code.push('-');
            }
            // `random_range` is unbiased, so every character carries log2(31) bits.
            let c = ALPHABET
                .get(rng.random_range(0..ALPHABET.len()))
                .copied()
                .unwrap_or(b'2');
            code.push(char::from(c));
        }
        // A repeat is astronomically unlikely, but two equal codes would share one hash.
        if !codes.iter().any(|c| c.expose() == &code) {
            codes.push(Secret::new(code));
        }
    }
    codes
}

/// The canonical form of a typed code: lower case, without spaces (any whitespace) and dashes.
/// `None` for anything else outside the alphabet, or a length other than 10. Look-alikes
/// (`0` for `o`, `l` for `1`) are refused rather than mapped, since neither is in the alphabet.
pub fn normalize(input: &str) -> Option<String> {
    let mut out = String::with_capacity(LEN);
    for c in input.chars() {
        if c == '-' || c.is_whitespace() {
            continue;
        }
        // ASCII-only lower-casing: a non-ASCII letter stays non-ASCII and is refused below,
        // rather than turning into something in the alphabet (as 'K', the Kelvin sign, would).
        let c = c.to_ascii_lowercase();
        if out.len() == LEN || !c.is_ascii() || !ALPHABET.contains(&(c as u8)) {
            return None;
        }
        out.push(c);
    }
    (out.len() == LEN).then_some(out)
}

/// SHA-256 of a normalized code: what the store keeps (see the module docs for why a fast hash
/// is enough here).
pub fn hash(normalized: &str) -> [u8; 32] {
    Sha256::digest(normalized.as_bytes()).into()
}

/// The index in `stored` of the hash that `input` matches, if any. Each comparison runs in
/// constant time and every stored hash is compared, so the time taken does not tell which
/// one (or whether one) matched.
pub fn matches(input: &str, stored: &[[u8; 32]]) -> Option<usize> {
    let given = hash(&normalize(input)?);
    let mut found = None;
    for (i, h) in stored.iter().enumerate() {
        if bool::from(given.ct_eq(h)) && found.is_none() {
            found = Some(i);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn alphabet_has_no_look_alikes_and_enough_bits() {
        for c in b"01oli" {
            assert!(!ALPHABET.contains(c), "{}", char::from(*c));
        }
        let mut sorted = ALPHABET.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ALPHABET.len(), "duplicate character");
        assert!(
            ALPHABET
                .iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        // 31^10 ≈ 2^49.5: the figure the module docs rely on.
        let bits = LEN as f64 * (ALPHABET.len() as f64).log2();
        assert!(bits > 49.5, "{bits}");
    }

    #[test]
    fn generates_ten_distinct_codes_of_the_shown_shape() {
        let codes = generate();
        assert_eq!(codes.len(), COUNT);
        let mut seen = std::collections::HashSet::new();
        for code in &codes {
            let s = code.expose();
            let (a, b) = s.split_once('-').unwrap();
            assert_eq!((a.len(), b.len()), (5, 5), "{s}");
            assert!(
                s.bytes()
                    .filter(|&c| c != b'-')
                    .all(|c| ALPHABET.contains(&c))
            );
            // What is shown is what is accepted back.
            assert_eq!(normalize(s).unwrap(), s.replace('-', ""));
            assert!(seen.insert(s.clone()), "repeated code {s}");
        }
        assert_eq!(format!("{:?}", codes[0]), "***");
    }

    #[test]
    fn normalize_ignores_case_spaces_and_dashes() {
        for input in [
            "abcde-fghjk",
            "ABCDE-FGHJK",
            "abcdefghjk",
            "ABCDEFGHJK",
            "AbCdE fGhJk",
            " abcde - fghjk ",
            "a-b-c-d-e-f-g-h-j-k",
            "abcde\tfghjk\n",
            "--abcdefghjk--",
        ] {
            assert_eq!(normalize(input).as_deref(), Some("abcdefghjk"), "{input:?}");
        }
    }

    #[test]
    fn normalize_refuses_wrong_length_or_alphabet() {
        for input in [
            "",
            "-----",
            "abcde-fghj",   // 9
            "abcde-fghjkm", // 11
            "abcde-fghjkmnpqrstuvwxyz",
            "abcde-fghj0",        // zero
            "abcde-fghjo",        // letter o
            "abcde-fghj1",        // one
            "abcde-fghjl",        // letter l
            "abcde-fghji",        // letter i
            "abcde_fghjk",        // underscore is not a separator
            "abcde-fghj\u{212A}", // Kelvin sign, which Unicode lower-cases to 'k'
            "abcde-fghjé",
            "ａｂｃｄｅ-ｆｇｈｊｋ", // full-width
        ] {
            assert_eq!(normalize(input), None, "{input:?}");
        }
    }

    #[test]
    fn hash_is_sha256_of_the_normalized_code() {
        // FIPS 180-2 test vector: SHA-256("abc").
        assert_eq!(
            hash("abc"),
            [
                0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae,
                0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61,
                0xf2, 0x00, 0x15, 0xad,
            ]
        );
    }

    #[test]
    fn matches_finds_the_right_code_and_nothing_for_a_near_miss() {
        let codes = generate();
        let stored: Vec<[u8; 32]> = codes
            .iter()
            .map(|c| hash(&normalize(c.expose()).unwrap()))
            .collect();
        for (i, code) in codes.iter().enumerate() {
            assert_eq!(matches(code.expose(), &stored), Some(i));
            assert_eq!(matches(&code.expose().to_uppercase(), &stored), Some(i));
            assert_eq!(matches(&code.expose().replace('-', " "), &stored), Some(i));
        }
        // One character changed (to another one in the alphabet), one dropped, one added.
        let code = normalize(codes[3].expose()).unwrap();
        let first = code.as_bytes()[0];
        let swapped = if first == b'z' { 'y' } else { 'z' };
        let near = format!("{swapped}{}", &code[1..]);
        assert_eq!(matches(&near, &stored), None);
        assert_eq!(matches(&code[1..], &stored), None);
        assert_eq!(matches(&format!("{code}a"), &stored), None);
        assert_eq!(matches("", &stored), None);
        assert_eq!(matches(codes[0].expose(), &[]), None);
    }

    #[test]
    fn matches_known_code_against_a_fixed_hash() {
        let stored = [hash("abcdefghjk"), hash("23456789mn")];
        assert_eq!(matches("23456-789MN", &stored), Some(1));
        assert_eq!(matches("ABCDE-FGHJK", &stored), Some(0));
        assert_eq!(matches("ABCDE-FGHJM", &stored), None);
    }
}
