//! The fast path's request-head parser (`src/fast_path.rs`) on arbitrary bytes: never a panic, and a
//! head it takes is one whose framing cannot be ambiguous (no body, one Content-Length of 0 at
//! most, no Transfer-Encoding, Expect or Upgrade), that ends where its empty line ends, and
//! that parses the same whatever follows it.
//!
//! The first byte picks `limits.max_headers`; the rest is what the client sent.

#![no_main]

use gateway::fast_path::fuzz::{Parse, parse_request_head};
use libfuzzer_sys::fuzz_target;

const MAX_HEADERS: [usize; 4] = [100, 8, 128, 1000];

fn is(name: &[u8], want: &str) -> bool {
    name.eq_ignore_ascii_case(want.as_bytes())
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let max_headers = MAX_HEADERS[usize::from(sel) % MAX_HEADERS.len()];
    let Parse::Complete(head) = parse_request_head(bytes, max_headers, 64 * 1024) else {
        return;
    };
    assert!(head.len > 0 && head.len <= bytes.len());
    assert_eq!(
        bytes[head.len - 1],
        b'\n',
        "the head ends at its empty line"
    );
    assert!(head.target.starts_with('/'), "{:?}", head.target);
    assert!(head.headers.len() <= max_headers.min(128));
    let mut lengths = 0;
    let mut close = false;
    for (name, value) in &head.headers {
        assert!(!name.is_empty());
        assert!(
            !value.iter().any(|&b| b == b'\r' || b == b'\n'),
            "{value:?}"
        );
        assert!(!is(name, "transfer-encoding") && !is(name, "expect") && !is(name, "upgrade"));
        if is(name, "content-length") {
            lengths += 1;
            // Digits only: the body is exactly this long.
            assert!(value.iter().all(u8::is_ascii_digit), "{value:?}");
            let text = std::str::from_utf8(value).unwrap();
            assert_eq!(text.parse::<u64>().ok(), Some(head.body_len));
            assert!(head.body_len <= gateway::fast_path::MAX_BODY);
        }
        if is(name, "connection") {
            close |= value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    assert!(lengths <= 1);
    if lengths == 0 {
        assert_eq!(head.body_len, 0);
    }
    assert_eq!(head.close, close);

    // The head alone, or with anything after it, parses the same.
    for tail in [&b""[..], b"\r\n", b"GET / HTTP/1.1\r\n\r\n", b"\x00garbage"] {
        let mut again = bytes[..head.len].to_vec();
        again.extend_from_slice(tail);
        match parse_request_head(&again, max_headers, 64 * 1024) {
            Parse::Complete(h) => {
                assert_eq!(h.len, head.len);
                assert_eq!(h.method, head.method);
                assert_eq!(h.target, head.target);
                assert_eq!(h.headers, head.headers);
            }
            other => panic!("the same head now gives {other:?}"),
        }
    }
});
