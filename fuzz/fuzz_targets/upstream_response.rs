//! The upstream client's response reading (`src/proxy/http1_client.rs`) on arbitrary bytes: the head
//! parser, the framing decision (RFC 9112 section 6.3) and the body decoder. Never a panic;
//! what it passes on carries no hop-by-hop header; a body framed by Content-Length is exactly
//! that long; a connection is reusable only after an HTTP/1.1 answer that ended exactly at its
//! framing.
//!
//! The first byte's low bit says whether the request was a HEAD; the rest is what the upstream
//! sent before closing.

#![no_main]

use gateway::proxy::http1_client::fuzz::read_answer;
use libfuzzer_sys::fuzz_target;

const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let head = sel & 1 == 1;
    let Ok(answer) = read_answer(bytes, head) else {
        return;
    };
    assert!((200..1000).contains(&answer.status), "{}", answer.status);
    for name in answer.headers.keys() {
        assert!(!HOP_BY_HOP.contains(&name.as_str()), "{name} passed on");
        assert!(!name.as_str().starts_with("proxy-"), "{name} passed on");
    }
    let bodiless = head || answer.status == 204 || answer.status == 304;
    if bodiless {
        assert!(answer.body.is_empty());
    } else if let Some(n) = answer.headers.get("content-length") {
        let n: usize = n.to_str().unwrap().parse().unwrap();
        assert_eq!(answer.body.len(), n);
    }
    // Reading the same bytes again gives the same answer (no hidden state).
    let again = read_answer(bytes, head).expect("the same bytes");
    assert_eq!(again.body, answer.body);
    assert_eq!(again.reusable, answer.reusable);
});
