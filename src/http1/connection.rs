//! `Connection` tokens and the hop-by-hop headers (RFC 9110 section 7.6.1).
//!
//! One list and one token reader, with a view for each representation: names and values as
//! bytes (the raw heads of the fast path and the upstream client) and [`HeaderName`]s (the
//! header maps of the general path). Values are split as bytes, so a value with obs-text in it
//! still lists its names the same way in both (found by the h1_differential fuzz target).

use http::header::{self, HeaderMap, HeaderName};

/// The headers that describe one connection, not the message (lowercase). Besides these, every
/// `Proxy-*` header and every header `Connection` names is hop-by-hop.
pub(crate) const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "keep-alive",
];

/// [`HOP_BY_HOP`] as header names, for removing them from a header map.
static HOP_BY_HOP_NAMES: [HeaderName; 6] = [
    HeaderName::from_static(HOP_BY_HOP[0]),
    HeaderName::from_static(HOP_BY_HOP[1]),
    HeaderName::from_static(HOP_BY_HOP[2]),
    HeaderName::from_static(HOP_BY_HOP[3]),
    HeaderName::from_static(HOP_BY_HOP[4]),
    HeaderName::from_static(HOP_BY_HOP[5]),
];

/// The prefix of the `Proxy-*` headers (lowercase).
const PROXY_PREFIX: &[u8] = b"proxy-";

/// Whether a header name, in any case, is hop-by-hop by name: one of [`HOP_BY_HOP`] or a
/// `Proxy-*` header (not counting those `Connection` lists).
pub(crate) fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
        || is_proxy_header(name)
}

/// [`is_hop_by_hop`] for a header map's (lowercase) name.
pub(crate) fn is_hop_by_hop_name(name: &HeaderName) -> bool {
    // Map names are lowercase already: exact comparisons do.
    let name = name.as_str();
    HOP_BY_HOP.contains(&name) || name.starts_with("proxy-")
}

/// Whether a header name, in any case, is a `Proxy-*` header.
pub(crate) fn is_proxy_header(name: &[u8]) -> bool {
    name.get(..PROXY_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(PROXY_PREFIX))
}

/// The elements of one list value (`Connection`, `Transfer-Encoding`; RFC 9110 section 5.6.1):
/// split at commas, trimmed, empty ones left out.
pub(crate) fn tokens(value: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// What one `Connection` token asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token<'a> {
    /// `close`: the connection ends after this message.
    Close,
    /// `keep-alive`: the HTTP/1.0 default reversed; names nothing.
    KeepAlive,
    /// `upgrade`: the `Upgrade` header asks to switch protocols.
    Upgrade,
    /// Any other token names a header that is hop-by-hop for this message.
    Names(&'a [u8]),
}

/// [`tokens`], each read as what it asks for.
pub(crate) fn connection_tokens(value: &[u8]) -> impl Iterator<Item = Token<'_>> {
    tokens(value).map(|t| {
        if t.eq_ignore_ascii_case(b"close") {
            Token::Close
        } else if t.eq_ignore_ascii_case(b"keep-alive") {
            Token::KeepAlive
        } else if t.eq_ignore_ascii_case(b"upgrade") {
            Token::Upgrade
        } else {
            Token::Names(t)
        }
    })
}

/// Removes the hop-by-hop headers from a header map: [`HOP_BY_HOP`], `Proxy-*`, and those
/// listed in `Connection` unless `keep` says otherwise.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap, keep: impl Fn(&HeaderName) -> bool) {
    // The usual message has none: one pass over the names settles that.
    if !headers.keys().any(is_hop_by_hop_name) {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| tokens(v.as_bytes()))
        .filter_map(|name| HeaderName::from_bytes(name).ok())
        .collect();
    for name in listed {
        if !keep(&name) {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP_NAMES {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_proxy_header(k.as_str().as_bytes()))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}

/// Whether a header map's `Connection` asks for an upgrade. Only values that are visible ASCII
/// count (`HeaderValue::to_str`), as hyper reads them.
pub(crate) fn asks_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter(|v| v.to_str().is_ok())
        .flat_map(|v| connection_tokens(v.as_bytes()))
        .any(|t| t == Token::Upgrade)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_names_in_any_case() {
        for name in [
            &b"connection"[..],
            b"Keep-Alive",
            b"TE",
            b"trailer",
            b"Transfer-Encoding",
            b"UPGRADE",
            b"proxy-authorization",
            b"Proxy-Connection",
        ] {
            assert!(is_hop_by_hop(name), "{name:?}");
        }
        for name in [&b"x-proxy-a"[..], b"proxy", b"tes", b"host", b""] {
            assert!(!is_hop_by_hop(name), "{name:?}");
        }
    }

    #[test]
    fn hop_by_hop_names_match_their_list() {
        for (name, text) in HOP_BY_HOP_NAMES.iter().zip(HOP_BY_HOP) {
            assert_eq!(name.as_str(), text);
            assert!(is_hop_by_hop_name(name));
        }
        assert!(is_hop_by_hop_name(&HeaderName::from_static("proxy-x")));
        assert!(!is_hop_by_hop_name(&header::HOST));
    }

    #[test]
    fn tokens_are_trimmed_and_classified() {
        let read: Vec<_> = connection_tokens(b" Close,,keep-ALIVE , Upgrade,\tX-Hop ,").collect();
        assert_eq!(
            read,
            [
                Token::Close,
                Token::KeepAlive,
                Token::Upgrade,
                Token::Names(b"X-Hop")
            ]
        );
        assert_eq!(tokens(b"kee\xe4-alive, a").count(), 2);
    }
}
