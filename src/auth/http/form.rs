//! Form and query-string helpers for the hosted pages and redirects: decoding
//! `application/x-www-form-urlencoded`, percent-encoding a `next` path, making sure `next`
//! stays on this origin, and carrying it from one page's links to the next.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// `next` as given if it is a same-origin path, else `/`: it must start with exactly one `/`,
/// hold no backslash, no encoded slash or backslash, and no control characters.
pub fn safe_next(next: &str) -> &str {
    let lower = next.to_ascii_lowercase();
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !lower.contains("%2f")
        && !lower.contains("%5c")
        && !next.chars().any(char::is_control)
        && next.len() <= 2048;
    if ok { next } else { "/" }
}

/// The `next` of a form or query string, kept only if [`safe_next`] says so (else `/`).
pub fn next_of(pairs: &[(String, String)]) -> String {
    form_value(pairs, "next").map_or_else(|| "/".to_owned(), |n| safe_next(&n).to_owned())
}

/// `target` (a path, perhaps with a query) with `next` added as a query parameter, after
/// [`safe_next`] and percent-encoded; unchanged when `next` is `/`, where every page goes by
/// default.
pub fn with_next(target: &str, next: &str) -> String {
    let next = safe_next(next);
    if next == "/" {
        return target.to_owned();
    }
    let sep = if target.contains('?') { '&' } else { '?' };
    format!("{target}{sep}next={}", percent_encode(next))
}

/// What [`percent_encode`] leaves as it is: ASCII letters and digits, `-`, `.`, `_`, `~` and `/`.
const KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Percent-encodes everything but unreserved characters and `/` (upper-case hex digits).
pub fn percent_encode(text: &str) -> String {
    utf8_percent_encode(text, KEEP).to_string()
}

/// Decodes `application/x-www-form-urlencoded` (also query strings): `+` is a space, `%XX` a
/// byte; malformed escapes are kept literally; invalid UTF-8 is replaced; empty pairs are
/// skipped and a name without `=` has an empty value.
pub fn form_decode(text: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The first value of `name` in a form or query string.
pub fn form_value(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_only_a_same_origin_path() {
        for good in ["/", "/dashboard", "/a/b?x=1&y=2", "/a#frag"] {
            assert_eq!(safe_next(good), good);
        }
        for bad in [
            "//evil.test",
            "/\\evil.test",
            "https:evil.test",
            "https://evil.test",
            "/%2F%2Fevil.test",
            "/%2f%2fevil.test",
            "/%5Cevil.test",
            "/a\r\nLocation: https://evil.test",
            "evil.test",
            "",
            "javascript:alert(1)",
        ] {
            assert_eq!(safe_next(bad), "/", "{bad:?}");
        }
    }

    #[test]
    fn next_is_carried_only_when_safe_and_not_the_default() {
        assert_eq!(with_next("/p", "/"), "/p");
        assert_eq!(with_next("/p", "//evil.test"), "/p");
        assert_eq!(with_next("/p", "/a b?c=1&d"), "/p?next=/a%20b%3Fc%3D1%26d");
        assert_eq!(with_next("/p?done=x", "/a"), "/p?done=x&next=/a");
        let f = form_decode("next=%2F%2Fevil.test");
        assert_eq!(next_of(&f), "/");
        assert_eq!(next_of(&form_decode("next=/app%3Fx%3D1")), "/app?x=1");
        assert_eq!(next_of(&[]), "/");
    }

    #[test]
    fn form_decoding() {
        let f = form_decode("email=a%40b.c&password=p+w%21&next=%2Fx%3Fy%3D1&flag&bad=%zz");
        assert_eq!(form_value(&f, "email").as_deref(), Some("a@b.c"));
        assert_eq!(form_value(&f, "password").as_deref(), Some("p w!"));
        assert_eq!(form_value(&f, "next").as_deref(), Some("/x?y=1"));
        assert_eq!(form_value(&f, "flag").as_deref(), Some(""));
        assert_eq!(form_value(&f, "bad").as_deref(), Some("%zz"));
        assert_eq!(form_value(&f, "missing"), None);
        assert_eq!(form_decode("a=%4"), vec![("a".into(), "%4".into())]);
    }

    #[test]
    fn encoding_round_trips() {
        let next = "/a b/c?d=e&f=ü";
        let enc = percent_encode(next);
        assert!(!enc.contains(' ') && !enc.contains('&') && !enc.contains('?'));
        let back = form_decode(&format!("next={enc}"));
        assert_eq!(form_value(&back, "next").as_deref(), Some(next));
    }

    #[test]
    fn form_decoding_edge_cases() {
        // `+` is a space, but an encoded `+` is a plus.
        assert_eq!(
            form_decode("a+b=c+d&e=%2B"),
            vec![("a b".into(), "c d".into()), ("e".into(), "+".into())]
        );
        // Bad escapes stay as they are, at the end too; a good one after a bad one decodes.
        assert_eq!(
            form_decode("a=%&b=%g1&c=%1&d=100%&e=%%41"),
            vec![
                ("a".into(), "%".into()),
                ("b".into(), "%g1".into()),
                ("c".into(), "%1".into()),
                ("d".into(), "100%".into()),
                ("e".into(), "%A".into()),
            ]
        );
        // Escapes that are not UTF-8 become U+FFFD; escaped UTF-8 decodes.
        assert_eq!(
            form_decode("a=%FF&b=%C3%BC"),
            vec![("a".into(), "\u{FFFD}".into()), ("b".into(), "ü".into())]
        );
        // Empty pairs are skipped; `=` splits once; a bare `=` is an empty name.
        assert_eq!(
            form_decode("&&a=1=2&&=x&"),
            vec![("a".into(), "1=2".into()), ("".into(), "x".into())]
        );
        // Duplicates are all kept, in order; `form_value` takes the first.
        let f = form_decode("next=/a&next=/b");
        assert_eq!(f.len(), 2);
        assert_eq!(form_value(&f, "next").as_deref(), Some("/a"));
        assert!(form_decode("").is_empty());
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved_and_slash() {
        assert_eq!(percent_encode("/a-b.c_d~e/F9"), "/a-b.c_d~e/F9");
        assert_eq!(
            percent_encode("/a b?c=d&e+f#g%ü"),
            "/a%20b%3Fc%3Dd%26e%2Bf%23g%25%C3%BC"
        );
        assert_eq!(percent_encode("\0\r\n"), "%00%0D%0A");
    }

    /// The hand-written decoder the crate replaced, kept as the reference it is checked
    /// against.
    fn reference_decode(text: &str) -> Vec<(String, String)> {
        fn decode(s: &str) -> String {
            let bytes = s.as_bytes();
            let mut out = Vec::with_capacity(bytes.len());
            let mut i = 0;
            while i < bytes.len() {
                match bytes[i] {
                    b'+' => out.push(b' '),
                    b'%' => {
                        let hex = |c: u8| (c as char).to_digit(16);
                        match (
                            bytes.get(i + 1).copied().and_then(hex),
                            bytes.get(i + 2).copied().and_then(hex),
                        ) {
                            (Some(h), Some(l)) => {
                                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                                i += 2;
                            }
                            _ => out.push(b'%'),
                        }
                    }
                    b => out.push(b),
                }
                i += 1;
            }
            String::from_utf8_lossy(&out).into_owned()
        }
        text.split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(k), decode(v))
            })
            .collect()
    }

    /// Same answers as the hand-written decoder on many strings made of the characters that
    /// matter (a fixed-seed generator, so a failure reproduces).
    #[test]
    fn form_decoding_matches_the_decoder_it_replaced() {
        let alphabet: Vec<char> = "%+&=aF09gz/ü\u{0}".chars().collect();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = usize::try_from(seed % 12).unwrap_or(0);
            let mut x = seed;
            let text: String = (0..len)
                .map(|_| {
                    x = x.rotate_left(5).wrapping_mul(0x2545_f491_4f6c_dd1d);
                    alphabet[usize::try_from(x >> 59).unwrap_or(0) % alphabet.len()]
                })
                .collect();
            assert_eq!(form_decode(&text), reference_decode(&text), "{text:?}");
        }
    }
}
