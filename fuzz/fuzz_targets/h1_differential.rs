//! Differential: the gateway's own HTTP/1.1 parsing against hyper's, on the same bytes.
//!
//! - Requests: every head the fast path takes (`src/fast_path.rs`; the rest goes to hyper anyway) must
//!   be one hyper's server reads too, as the same method, target and header fields, with a body
//!   of the same length, and the next request must start where the fast path says this one
//!   ended (after its body). A head the fast path serves but hyper would refuse, or reads
//!   differently, is a finding.
//! - Responses: when the upstream client (`src/proxy/http1_client.rs`) accepts an answer, hyper's
//!   client must read the same status, the same header fields (after the same hop-by-hop
//!   removal, framing headers aside) and the same body. The gateway refusing what hyper accepts
//!   is allowed (it fails closed: 502).
//!
//! The first byte picks the direction (low bit) and, for responses, whether the request was a
//! HEAD; the rest is the bytes on the wire.

#![no_main]

#[path = "common/hyper_side.rs"]
mod hyper_side;

use gateway::fast_path::fuzz::{Parse, parse_request_head};
use gateway::proxy::http1_client::fuzz::read_answer;
use libfuzzer_sys::fuzz_target;

const MAX_HEADERS: usize = 100;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    if sel & 1 == 0 {
        requests(bytes);
    } else {
        response(bytes, sel & 2 == 2);
    }
});

fn requests(bytes: &[u8]) {
    // The heads the fast path serves one after another on a connection.
    let mut ours = Vec::new();
    let mut rest = bytes;
    while let Parse::Complete(head) = parse_request_head(rest, MAX_HEADERS, 64 * 1024) {
        // The fast path waits for the whole body; a request cut short is not served.
        let Some(next) = usize::try_from(head.body_len)
            .ok()
            .and_then(|b| head.len.checked_add(b))
            .filter(|&n| n <= rest.len())
        else {
            break;
        };
        rest = &rest[next..];
        let close = head.close;
        ours.push(head);
        if close {
            break;
        }
    }
    if ours.is_empty() {
        return;
    }
    let (theirs, _) = hyper_side::requests(bytes, MAX_HEADERS);
    for (i, head) in ours.iter().enumerate() {
        let Some(t) = theirs.get(i) else {
            panic!(
                "the fast path served request {i} ({head:?}); hyper refused it or read fewer: {theirs:?}"
            );
        };
        assert_eq!(head.method, t.method, "request {i}");
        assert_eq!(head.target, t.target, "request {i}");
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = head
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .collect();
        fields.sort();
        assert_eq!(fields, t.headers, "request {i}: header fields differ");
        assert_eq!(t.body_len as u64, head.body_len, "request {i}: hyper read another body");
    }
}

fn strip(mut h: http::HeaderMap) -> Vec<(String, Vec<u8>)> {
    gateway::proxy::headers::remove_hop_by_hop(&mut h);
    h.remove(http::header::CONTENT_LENGTH);
    h.remove(http::header::TRANSFER_ENCODING);
    let mut v: Vec<(String, Vec<u8>)> = h
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    v.sort();
    v
}

fn response(bytes: &[u8], head: bool) {
    let Ok(ours) = read_answer(bytes, head) else {
        return;
    };
    let theirs = match hyper_side::response(bytes, head) {
        Ok(t) => t,
        Err(e) => panic!("the gateway accepted an answer hyper refuses ({e}): {ours:?}"),
    };
    assert_eq!(ours.status, theirs.status);
    assert_eq!(
        strip(ours.headers),
        strip(theirs.headers),
        "header fields differ"
    );
    assert_eq!(ours.body, theirs.body, "bodies differ");
}
