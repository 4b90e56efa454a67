//! A request head: the parser never panics, a forwarded head took no more than the input,
//! and the head it writes upstream parses again as a forwarded head of its own length with
//! the same framing, method facts and target.
#![no_main]

use libfuzzer_sys::fuzz_target;

use ferry_proxy::h1::codec::{parse_request, RequestVerdict};

const MAX_HEAD: usize = 8192;

fuzz_target!(|input: &[u8]| {
    let mut out = Vec::new();
    let RequestVerdict::Forward(head) = parse_request(input, MAX_HEAD, &mut out) else {
        return;
    };
    assert!(head.length <= input.len() && head.length <= MAX_HEAD);
    let mut again = Vec::new();
    let verdict = parse_request(&out, out.len() + 1, &mut again);
    let RequestVerdict::Forward(second) = verdict else {
        ferry_fuzz::not_reparsed(&out, &verdict)
    };
    assert_eq!(second.length, out.len(), "trailing bytes after the head");
    assert_eq!(
        (second.framing, second.idempotent, second.head_method),
        (head.framing, head.idempotent, head.head_method)
    );
    let line = |head: &[u8]| head.split(|byte| *byte == b'\n').next().map(<[u8]>::to_vec);
    assert_eq!(line(&again), line(&out), "the request line changed");
});
