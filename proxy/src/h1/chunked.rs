//! Finds where a chunked body ends (RFC 9112 §7.1) without decoding it: the proxy relays
//! chunked bodies byte for byte and only needs to know which bytes belong to the message.
//! The scanner is incremental, so a body may arrive split anywhere.

/// Longest chunk-size line (extensions included) and trailer section accepted.
const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Size { digits: u8, value: u64 },
    Extension { value: u64 },
    SizeLf { value: u64 },
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    FinalLf,
    Done,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed chunked body")]
pub struct Malformed;

#[derive(Debug)]
pub struct ChunkedScanner {
    state: State,
    line: usize,
    trailers: usize,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        ChunkedScanner {
            state: State::Size {
                digits: 0,
                value: 0,
            },
            line: 0,
            trailers: 0,
        }
    }
}

impl ChunkedScanner {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes bytes of the body from `data`; returns how many belong to it. Fewer than
    /// `data.len()` only once the body is complete.
    pub fn scan(&mut self, data: &[u8]) -> Result<usize, Malformed> {
        let mut at = 0;
        while at < data.len() {
            if let State::Data(remaining) = self.state {
                let take = remaining.min((data.len() - at) as u64);
                at += take as usize;
                self.state = if take == remaining {
                    State::DataCr
                } else {
                    State::Data(remaining - take)
                };
                continue;
            }
            let byte = data[at];
            at += 1;
            self.state = match self.state {
                State::Size { digits, value } => match byte {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' if digits < 16 => State::Size {
                        digits: digits + 1,
                        value: value << 4 | u64::from(hex_value(byte)),
                    },
                    b';' | b' ' | b'\t' if digits > 0 => {
                        self.line = 0;
                        State::Extension { value }
                    }
                    b'\r' if digits > 0 => State::SizeLf { value },
                    _ => return Err(Malformed),
                },
                State::Extension { value } => {
                    self.line += 1;
                    if self.line > MAX_LINE {
                        return Err(Malformed);
                    }
                    if byte == b'\r' {
                        State::SizeLf { value }
                    } else {
                        State::Extension { value }
                    }
                }
                State::SizeLf { value } if byte == b'\n' => {
                    if value == 0 {
                        State::TrailerStart
                    } else {
                        State::Data(value)
                    }
                }
                State::DataCr if byte == b'\r' => State::DataLf,
                State::DataLf if byte == b'\n' => State::Size {
                    digits: 0,
                    value: 0,
                },
                State::TrailerStart if byte == b'\r' => State::FinalLf,
                State::TrailerStart | State::Trailer => {
                    self.trailers += 1;
                    if self.trailers > MAX_TRAILERS {
                        return Err(Malformed);
                    }
                    if byte == b'\r' {
                        State::TrailerLf
                    } else {
                        State::Trailer
                    }
                }
                State::TrailerLf if byte == b'\n' => State::TrailerStart,
                State::FinalLf if byte == b'\n' => {
                    self.state = State::Done;
                    return Ok(at);
                }
                State::Done => return Ok(at - 1),
                _ => return Err(Malformed),
            };
        }
        Ok(at)
    }
}

fn hex_value(byte: u8) -> u8 {
    match byte {
        b'0'..=b'9' => byte - b'0',
        b'a'..=b'f' => byte - b'a' + 10,
        _ => byte - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] =
        b"5\r\nhello\r\n1A;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\n";

    #[test]
    fn finds_the_end_of_a_body_split_anywhere() {
        let mut input = BODY.to_vec();
        input.extend_from_slice(b"GET /next");
        for split in 0..BODY.len() {
            let mut scanner = ChunkedScanner::default();
            let first = scanner.scan(&input[..split]).unwrap();
            assert_eq!(first, split);
            assert!(!scanner.is_done());
            let rest = scanner.scan(&input[split..]).unwrap();
            assert_eq!(first + rest, BODY.len(), "split at {split}");
            assert!(scanner.is_done());
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let mut scanner = ChunkedScanner::default();
        for byte in BODY {
            assert_eq!(scanner.scan(std::slice::from_ref(byte)).unwrap(), 1);
        }
        assert!(scanner.is_done());
        assert_eq!(scanner.scan(b"more").unwrap(), 0);
    }

    /// A valid chunked body from chunk sizes, optional extensions and trailer lines.
    fn body(chunks: &[(usize, bool)], trailers: &[String]) -> Vec<u8> {
        let mut body = Vec::new();
        for (size, extension) in chunks {
            body.extend_from_slice(format!("{size:X}").as_bytes());
            if *extension {
                body.extend_from_slice(b";name=\"v\"");
            }
            body.extend_from_slice(b"\r\n");
            body.extend(std::iter::repeat_n(b'x', *size));
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n");
        for trailer in trailers {
            body.extend_from_slice(format!("X-{trailer}: 1\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body
    }

    proptest::proptest! {
        #[test]
        fn any_valid_body_ends_where_it_ends_however_it_is_split(
            chunks in proptest::collection::vec((1usize..300, proptest::bool::ANY), 0..6),
            trailers in proptest::collection::vec("[a-z]{1,8}", 0..3),
            cuts in proptest::collection::vec(0usize..2000, 0..6),
        ) {
            let whole = body(&chunks, &trailers);
            let mut input = whole.clone();
            input.extend_from_slice(b"GET /next HTTP/1.1\r\n");
            let mut cuts: Vec<usize> = cuts.into_iter().map(|cut| cut % input.len()).collect();
            cuts.push(input.len());
            cuts.sort_unstable();
            let mut scanner = ChunkedScanner::default();
            let (mut previous, mut consumed) = (0, 0);
            for cut in cuts {
                consumed += scanner.scan(&input[previous..cut]).unwrap();
                previous = cut;
            }
            proptest::prop_assert!(scanner.is_done());
            proptest::prop_assert_eq!(consumed, whole.len());
        }

        #[test]
        fn arbitrary_bytes_never_panic_or_overrun(input in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut scanner = ChunkedScanner::default();
            if let Ok(taken) = scanner.scan(&input) {
                proptest::prop_assert!(taken <= input.len());
                proptest::prop_assert!(taken == input.len() || scanner.is_done());
            }
        }
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXX",
            b"5\nhello",
            b"11111111111111111\r\n",
            b"0\r\n\rX",
        ] {
            assert_eq!(
                ChunkedScanner::default().scan(bad),
                Err(Malformed),
                "{bad:?}"
            );
        }
        let mut long = b"1;".to_vec();
        long.resize(MAX_LINE + 10, b'x');
        assert_eq!(ChunkedScanner::default().scan(&long), Err(Malformed));
    }
}
