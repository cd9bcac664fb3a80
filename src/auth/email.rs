//! Email address normalisation: the one canonical form under which accounts are stored and
//! looked up.
//!
//! Sign-up, login and the admin CLI all pass addresses through [`normalize_email`] before they
//! reach the store, whose email index is an exact-match key. The accepted syntax is deliberately
//! narrower than RFC 5321/5322: ASCII only, a dot-atom local part (no quoted strings, no
//! comments), and a DNS host name as the domain (no address literals). Internationalised domains
//! must be entered in their punycode (`xn--`) form.
//!
//! The whole address is lowercased, local part included. RFC 5321 allows a case-sensitive local
//! part, but practically no mail system uses one, and lowercasing means `Ada@x.org` and
//! `ada@x.org` cannot become two accounts. Nothing else is rewritten (no dot or `+tag` removal,
//! which is provider-specific).

/// Longest address accepted (RFC 5321 §4.5.3.1.3: a path is at most 256 octets including the
/// angle brackets).
pub const MAX_EMAIL_LEN: usize = 254;
const MAX_LOCAL_LEN: usize = 64;
const MAX_DOMAIN_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// The canonical form of `email`, or `None` if it is not an address we accept.
///
/// Surrounding whitespace is trimmed; then the address must have exactly one `@`, a local part of
/// 1 to 64 characters made of letters, digits, `.` (not first, last or doubled) and
/// ``!#$%&'*+-/=?^_`{|}~``, and a domain of at most 253 characters with at least two labels,
/// each 1 to 63 characters of letters, digits and `-` (not first or last). No spaces, control or
/// non-ASCII characters; at most 254 characters in all. The result is lowercased throughout.
pub fn normalize_email(email: &str) -> Option<String> {
    let email = email.trim();
    if email.is_empty() || email.len() > MAX_EMAIL_LEN || !email.is_ascii() {
        return None;
    }
    let (local, domain) = email.split_once('@')?;
    if !valid_local(local) || !valid_domain(domain) {
        return None;
    }
    Some(email.to_ascii_lowercase())
}

fn valid_local(local: &str) -> bool {
    const SPECIALS: &[u8] = b"!#$%&'*+-/=?^_`{|}~";
    if local.is_empty() || local.len() > MAX_LOCAL_LEN {
        return false;
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return false;
    }
    local
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || SPECIALS.contains(&b))
}

fn valid_domain(domain: &str) -> bool {
    if domain.len() > MAX_DOMAIN_LEN || !domain.contains('.') {
        return false;
    }
    domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= MAX_LABEL_LEN
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_lowercases() {
        assert_eq!(
            normalize_email("  Ada.Lovelace+tag@Example.ORG \n").as_deref(),
            Some("ada.lovelace+tag@example.org")
        );
        assert_eq!(normalize_email("a@b.co").as_deref(), Some("a@b.co"));
        assert_eq!(
            normalize_email("o'brien@xn--bcher-kva.example").as_deref(),
            Some("o'brien@xn--bcher-kva.example")
        );
        assert_eq!(
            normalize_email("x@sub-domain.example.com").as_deref(),
            Some("x@sub-domain.example.com")
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "   ",
            "ada",
            "@example.org",
            "ada@",
            "ada@@example.org",
            "ada@b@example.org",
            "ada@localhost",
            "ada@example..org",
            "ada@example.org.",
            "ada@.example.org",
            "ada@-example.org",
            "ada@example-.org",
            "ada@exa_mple.org",
            "ada lovelace@example.org",
            "ada@exam ple.org",
            "ada\r\n@example.org",
            "ada\t@example.org",
            "ada\0@example.org",
            ".ada@example.org",
            "ada.@example.org",
            "a..da@example.org",
            "\"ada\"@example.org",
            "ada(comment)@example.org",
            "<ada@example.org>",
            "ada@[127.0.0.1]",
            "adä@example.org",
            "ada@bücher.example",
        ] {
            assert_eq!(normalize_email(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn length_limits() {
        let local64 = "a".repeat(64);
        assert!(normalize_email(&format!("{local64}@example.org")).is_some());
        assert!(normalize_email(&format!("a{local64}@example.org")).is_none());

        let label63 = "b".repeat(63);
        assert!(normalize_email(&format!("a@{label63}.org")).is_some());
        assert!(normalize_email(&format!("a@b{label63}.org")).is_none());

        // 254 characters in all is the limit: 64 + 1 + 189.
        let domain189 = format!("{}.{}.{}", "c".repeat(63), "d".repeat(63), "e".repeat(61));
        assert_eq!(domain189.len(), 189);
        let longest = format!("{local64}@{domain189}");
        assert_eq!(longest.len(), 254);
        assert!(normalize_email(&longest).is_some());
        assert!(normalize_email(&format!("{local64}@f{domain189}")).is_none());
    }
}
