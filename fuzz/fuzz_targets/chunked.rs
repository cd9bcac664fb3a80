//! Chunked bodies both ways: what the fast path writes to clients (`src/fast_path.rs`) and what the
//! upstream client decodes (`src/proxy/http1_client.rs`).
//!
//! - Any body the fast path writes, chunked or with a length, reads back as the same bytes with
//!   the gateway's own decoder and with hyper's client, and ends exactly where it was written.
//! - Any bytes the gateway's decoder takes as a complete chunked body, hyper's decoder takes as
//!   the same data; a body the gateway finds incomplete is one hyper cannot complete either.
//!   (The gateway may refuse more than hyper: that fails closed.)

#![no_main]

#[path = "common/hyper_side.rs"]
mod hyper_side;

use gateway::fast_path::fuzz::write;
use gateway::proxy::http1_client::fuzz::{decode_chunked, read_answer};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    chunks: Vec<&'a [u8]>,
    sized: bool,
    raw: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    written_bodies_read_back(&input);
    decoders_agree(input.raw);
});

fn written_bodies_read_back(input: &Input<'_>) {
    let want: Vec<u8> = input.chunks.concat();
    let out = write(200, &[], &input.chunks, input.sized, false).expect("a response");
    let ours = read_answer(&out, false).expect("the gateway reads what it wrote");
    assert_eq!(ours.body, want);
    assert!(
        ours.reusable,
        "the response did not end where it was written"
    );
    let theirs = hyper_side::response(&out, false).expect("hyper reads what the gateway wrote");
    assert_eq!(theirs.status, 200);
    assert_eq!(theirs.body, want);
    // A chunked body alone decodes to the same bytes and ends at its last byte.
    if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
        let body = &out[end + 4..];
        let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
        if head.contains("transfer-encoding: chunked") {
            let (data, complete, left) = decode_chunked(body).expect("a chunked body");
            assert_eq!(data, want);
            assert!(complete);
            assert_eq!(left, 0);
        }
    }
}

fn decoders_agree(raw: &[u8]) {
    let Ok((data, complete, _)) = decode_chunked(raw) else {
        return;
    };
    let mut response = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    response.extend_from_slice(raw);
    let theirs = hyper_side::response(&response, false);
    if complete {
        let theirs =
            theirs.unwrap_or_else(|e| panic!("hyper refused a body the gateway took: {e}"));
        assert_eq!(theirs.body, data);
    } else {
        assert!(
            theirs.is_err(),
            "hyper completed a body the gateway found incomplete"
        );
    }
}
