//! Request-path normalisation: the one path that is routed, authorised and forwarded.
//!
//! A proxy that routes on one spelling of a path and forwards another is a bypass waiting to
//! happen (`/public/../admin`, `/%61dmin`, `//admin`). So the path is normalised once, before
//! routing, and exactly that string is used for every decision and sent upstream:
//!
//! - percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, other escapes
//!   keep their meaning and get uppercase hex;
//! - empty segments collapse (`//a///b` -> `/a/b`);
//! - `.` and `..` segments are resolved (RFC 3986 section 5.2.4);
//! - anything that cannot be normalised safely is refused: an encoded `/` or `\` (`%2F`, `%5C`),
//!   a raw `\`, NUL or other control characters, malformed escapes, a `..` that would climb
//!   above the root, and `;` path parameters (`/admin;x=1`), which some servers (Tomcat, Spring)
//!   strip before routing, so the upstream would see `/admin` where the gateway saw another
//!   route. An encoded `%3B` stays encoded and is harmless.

/// Why a path was refused (answered with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with /")]
    NotAbsolute,
    #[error("malformed percent-escape in path")]
    BadEscape,
    #[error("encoded slash or backslash in path")]
    EncodedSeparator,
    #[error("control character or backslash in path")]
    ForbiddenCharacter,
    #[error("path climbs above the root")]
    AboveRoot,
    #[error("path parameters (;) are not accepted")]
    PathParameter,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Normalises the path part of a request target (no query). Returns the normalised path; it
/// keeps a trailing slash if the original had one.
pub fn normalize(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if bytes.contains(&b';') {
        return Err(PathError::PathParameter);
    }
    // Fast path: nothing to decode, no dot segments, no empty segments.
    if !bytes
        .iter()
        .any(|&b| b == b'%' || b == b'\\' || b < 0x21 || b == 0x7f)
        && !path.contains("//")
        && !path.contains("/.")
    {
        return Ok(path.to_owned());
    }

    // Decode unreserved escapes, reject separators and control characters.
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadEscape);
            };
            let v = h * 16 + l;
            if v == b'/' || v == b'\\' {
                return Err(PathError::EncodedSeparator);
            }
            if v < 0x20 || v == 0x7f {
                return Err(PathError::ForbiddenCharacter);
            }
            if is_unreserved(v) {
                decoded.push(v);
            } else {
                decoded.push(b'%');
                decoded.extend_from_slice(format!("{v:02X}").as_bytes());
            }
            i += 3;
        } else {
            if b == b'\\' || b < 0x21 || b == 0x7f {
                return Err(PathError::ForbiddenCharacter);
            }
            decoded.push(b);
            i += 1;
        }
    }
    // Only ASCII went in, so this cannot fail; fall back to an error rather than panic.
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::ForbiddenCharacter)?;

    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s => out.push(s),
        }
    }
    let mut result = String::with_capacity(decoded.len());
    for seg in &out {
        result.push('/');
        result.push_str(seg);
    }
    if result.is_empty() || trailing {
        result.push('/');
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths_pass_unchanged() {
        for p in ["/", "/a", "/a/b/", "/api/v1/users/42", "/a.b/c~d"] {
            assert_eq!(normalize(p).as_deref(), Ok(p));
        }
    }

    #[test]
    fn dot_and_empty_segments_are_resolved() {
        assert_eq!(normalize("//admin").as_deref(), Ok("/admin"));
        assert_eq!(normalize("/x/../admin").as_deref(), Ok("/admin"));
        assert_eq!(normalize("/a/./b").as_deref(), Ok("/a/b"));
        assert_eq!(normalize("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(normalize("/a//b///c").as_deref(), Ok("/a/b/c"));
        assert_eq!(normalize("/public/../admin/x").as_deref(), Ok("/admin/x"));
    }

    #[test]
    fn unreserved_escapes_are_decoded() {
        assert_eq!(normalize("/%61dmin").as_deref(), Ok("/admin"));
        assert_eq!(normalize("/%2e%2e/admin"), Err(PathError::AboveRoot));
        assert_eq!(normalize("/x/%2e%2e/admin").as_deref(), Ok("/admin"));
        assert_eq!(normalize("/a%7eb").as_deref(), Ok("/a~b"));
        // Reserved characters stay encoded, with uppercase hex.
        assert_eq!(normalize("/a%3fb").as_deref(), Ok("/a%3Fb"));
        assert_eq!(normalize("/a%20b").as_deref(), Ok("/a%20b"));
    }

    #[test]
    fn unsafe_paths_are_refused() {
        assert_eq!(normalize("/admin%2F"), Err(PathError::EncodedSeparator));
        assert_eq!(
            normalize("/admin%2f..%2f"),
            Err(PathError::EncodedSeparator)
        );
        assert_eq!(normalize("/a%5Cb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a\\b"), Err(PathError::ForbiddenCharacter));
        assert_eq!(normalize("/a%00"), Err(PathError::ForbiddenCharacter));
        assert_eq!(normalize("/a%0d%0a"), Err(PathError::ForbiddenCharacter));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%4"), Err(PathError::BadEscape));
        assert_eq!(normalize("/.."), Err(PathError::AboveRoot));
        assert_eq!(normalize("/a/../../b"), Err(PathError::AboveRoot));
        assert_eq!(normalize("admin"), Err(PathError::NotAbsolute));
        assert_eq!(normalize("/admin;x=1"), Err(PathError::PathParameter));
        assert_eq!(normalize("/a/..;/admin"), Err(PathError::PathParameter));
        assert_eq!(normalize("/a%3bb").as_deref(), Ok("/a%3Bb"));
        assert_eq!(normalize(""), Err(PathError::NotAbsolute));
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for p in ["/a/./b/../c//d/", "/%61/%2e/x", "/a%3fb/..", "/x/y/.."] {
            let once = normalize(p).unwrap();
            assert_eq!(normalize(&once).unwrap(), once, "{p}");
        }
    }
}
