//! A chunked body (the first two bytes choose where to split it): the scanner never
//! panics, stops short of its input only once the body is complete, and gives the same
//! verdict (malformed, or this many bytes and done or not) whether the body arrives whole
//! or in two reads split anywhere.
#![no_main]

use libfuzzer_sys::fuzz_target;

use ferry_proxy::h1::chunked::{ChunkedScanner, Malformed};

/// Scans `reads` in order as the relay would: stops at the first error or once the body
/// is complete. The bytes the body took, and whether it is complete.
fn scan(reads: &[&[u8]]) -> Result<(usize, bool), Malformed> {
    let mut scanner = ChunkedScanner::default();
    let mut taken = 0;
    for read in reads {
        let used = scanner.scan(read)?;
        assert!(used <= read.len());
        taken += used;
        if used < read.len() {
            assert!(scanner.is_done(), "bytes left over before the body ended");
        }
        if scanner.is_done() {
            break;
        }
    }
    Ok((taken, scanner.is_done()))
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 2 {
        return;
    }
    let (split, body) = input.split_at(2);
    let at = usize::from(u16::from_le_bytes([split[0], split[1]])) % (body.len() + 1);
    let whole = scan(&[body]);
    let (first, second) = body.split_at(at);
    assert_eq!(whole, scan(&[first, second]), "split at {at}");
});
