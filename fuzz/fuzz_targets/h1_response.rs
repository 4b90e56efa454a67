//! A response head (the first byte says whether it answers a HEAD request and whether the
//! caller asked to close): the parser never panics, and the head it writes for the caller
//! parses again as a final head of its own length with the same status and framing (or,
//! with `connection: close` added to a head read at the header bound, is one header over).
#![no_main]

use libfuzzer_sys::fuzz_target;

use ferry_proxy::h1::codec::{parse_response, ResponseVerdict, MAX_HEADERS};

const MAX_HEAD: usize = 8192;

fuzz_target!(|input: &[u8]| {
    let Some((&flags, input)) = input.split_first() else {
        return;
    };
    let (head_request, close) = (flags & 1 != 0, flags & 2 != 0);
    let mut out = Vec::new();
    match parse_response(input, MAX_HEAD, head_request, close, &mut out) {
        ResponseVerdict::Interim(length) => assert!(length <= input.len()),
        ResponseVerdict::Final(head) => {
            assert!(head.length <= input.len() && head.length <= MAX_HEAD);
            // The caller's head may carry one header more than was read (`connection:
            // close`); past MAX_HEADERS the parser (sized for upstream heads) refuses it.
            let headers = out.windows(2).filter(|pair| pair == b"\r\n").count() - 2;
            assert!(headers <= MAX_HEADERS + 1, "{headers} headers written");
            if headers > MAX_HEADERS {
                return;
            }
            let mut again = Vec::new();
            let verdict = parse_response(&out, out.len() + 1, head_request, false, &mut again);
            let ResponseVerdict::Final(second) = verdict else {
                ferry_fuzz::not_reparsed(&out, &verdict)
            };
            assert_eq!(second.length, out.len(), "trailing bytes after the head");
            assert_eq!((second.status, second.framing), (head.status, head.framing));
        }
        ResponseVerdict::Partial | ResponseVerdict::Invalid => {}
    }
});
