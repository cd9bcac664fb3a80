//! Form and query-string helpers for the hosted pages and redirects: decoding
//! `application/x-www-form-urlencoded`, percent-encoding a `next` path, and making sure `next`
//! stays on this origin.

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

/// Percent-encodes everything but unreserved characters and `/`.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `application/x-www-form-urlencoded` (also query strings): `+` is a space, `%XX` a
/// byte; malformed escapes are kept literally; invalid UTF-8 is replaced.
pub fn form_decode(text: &str) -> Vec<(String, String)> {
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
}
