//! Trace headers: B3 (what Spring Cloud Sleuth sends) and W3C `traceparent` (Micrometer
//! Tracing). The proxy continues an incoming trace with a span of its own, or starts one,
//! and writes both formats so either kind of app downstream joins the same trace.

use http::{HeaderMap, HeaderValue};
use rand::Rng;

/// The incoming trace headers a span is derived from.
#[derive(Debug, Default)]
pub struct Incoming<'a> {
    values: [Option<&'a str>; 6],
}

/// Every header the proxy rewrites, in `Incoming` slot order; `b3` (the single-header
/// form) is replaced by the four multi-header fields.
const NAMES: [&str; 6] = [
    "traceparent",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
    "x-b3-parentspanid",
    "b3",
];
const TRACEPARENT: usize = 0;
const B3_TRACE: usize = 1;
const B3_SPAN: usize = 2;
const B3_SAMPLED: usize = 3;

impl<'a> Incoming<'a> {
    /// The slot of a trace header, or None for any other header.
    pub fn slot(name: &str) -> Option<usize> {
        NAMES
            .iter()
            .position(|known| known.eq_ignore_ascii_case(name))
    }

    pub fn set(&mut self, slot: usize, value: &'a str) {
        self.values[slot] = Some(value);
    }

    fn from_headers(headers: &'a HeaderMap) -> Incoming<'a> {
        let mut incoming = Incoming::default();
        for (slot, name) in NAMES.iter().enumerate() {
            incoming.values[slot] = headers.get(*name).and_then(|value| value.to_str().ok());
        }
        incoming
    }
}

/// The proxy's span: the caller's trace continued, or a new one.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    trace_id: [u8; 32],
    span_id: [u8; 16],
    parent: Option<[u8; 16]>,
    sampled: bool,
}

impl Span {
    pub fn continue_or_start(incoming: &Incoming<'_>) -> Span {
        let mut trace_id = None;
        let mut parent = None;
        let mut sampled = None;
        if let Some(traceparent) = incoming.values[TRACEPARENT] {
            let mut parts = traceparent.trim().split('-');
            let fields = (
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
            );
            if let (Some(_), Some(trace), Some(span), Some(flags), None) = fields {
                if is_hex(trace, &[32]) && is_hex(span, &[16]) {
                    trace_id = Some(lower_hex::<32>(trace));
                    parent = Some(lower_hex::<16>(span));
                    sampled = Some(flags.ends_with('1'));
                }
            }
        }
        if trace_id.is_none() {
            if let Some(b3_trace) = incoming.values[B3_TRACE].filter(|id| is_hex(id, &[16, 32])) {
                trace_id = Some(lower_hex::<32>(b3_trace));
                parent = incoming.values[B3_SPAN]
                    .filter(|id| is_hex(id, &[16]))
                    .map(lower_hex::<16>);
                sampled = incoming.values[B3_SAMPLED].map(|flag| flag == "1" || flag == "true");
            }
        }
        let (new_trace, span_id) = random_ids();
        Span {
            trace_id: trace_id.unwrap_or(new_trace),
            span_id,
            parent,
            sampled: sampled.unwrap_or(true),
        }
    }

    /// The headers to send, as (name, value) pairs.
    fn fields(&self, mut field: impl FnMut(&'static str, &[u8])) {
        field("x-b3-traceid", &self.trace_id);
        field("x-b3-spanid", &self.span_id);
        if let Some(parent) = &self.parent {
            field("x-b3-parentspanid", parent);
        }
        field("x-b3-sampled", if self.sampled { b"1" } else { b"0" });
        let mut traceparent = [0u8; 55];
        traceparent[..3].copy_from_slice(b"00-");
        traceparent[3..35].copy_from_slice(&self.trace_id);
        traceparent[35] = b'-';
        traceparent[36..52].copy_from_slice(&self.span_id);
        traceparent[52..].copy_from_slice(if self.sampled { b"-01" } else { b"-00" });
        field("traceparent", &traceparent);
    }

    /// Appends the span's headers to an HTTP/1 head being written.
    pub fn write_http1(&self, out: &mut Vec<u8>) {
        self.fields(|name, value| {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        });
    }
}

/// Continues or starts the trace in `headers`, replacing the incoming trace headers.
pub fn propagate(headers: &mut HeaderMap) {
    let span = Span::continue_or_start(&Incoming::from_headers(headers));
    for name in NAMES {
        headers.remove(name);
    }
    span.fields(|name, value| {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(name, value);
        }
    });
}

fn is_hex(text: &str, lengths: &[usize]) -> bool {
    lengths.contains(&text.len()) && text.bytes().all(|c| c.is_ascii_hexdigit())
}

/// Lower-case hex digits, left-padded with zeros to N (a 64-bit B3 trace id becomes 128).
fn lower_hex<const N: usize>(text: &str) -> [u8; N] {
    let mut id = [b'0'; N];
    let text = text.as_bytes();
    let start = N.saturating_sub(text.len());
    for (slot, digit) in id[start..].iter_mut().zip(text) {
        *slot = digit.to_ascii_lowercase();
    }
    id
}

/// A fresh trace id and span id. They need to be unique, not unpredictable: a small fast
/// generator per thread.
fn random_ids() -> ([u8; 32], [u8; 16]) {
    thread_local! {
        static RANDOM: std::cell::RefCell<rand::rngs::SmallRng> =
            std::cell::RefCell::new(rand::SeedableRng::from_entropy());
    }
    RANDOM.with(|random| {
        let mut random = random.borrow_mut();
        (
            hex(random.gen::<u128>()),
            hex(u128::from(random.gen::<u64>())),
        )
    })
}

fn hex<const N: usize>(mut value: u128) -> [u8; N] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'0'; N];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
        headers.get(name).unwrap().to_str().unwrap()
    }

    #[test]
    fn starts_a_trace_when_there_is_none() {
        let mut headers = HeaderMap::new();
        propagate(&mut headers);
        let trace = get(&headers, "x-b3-traceid").to_owned();
        assert_eq!(trace.len(), 32);
        assert!(get(&headers, "traceparent").starts_with(&format!("00-{trace}-")));
        assert!(headers.get("x-b3-parentspanid").is_none());
    }

    #[test]
    fn continues_a_b3_trace_with_a_new_span_and_writes_traceparent() {
        let mut headers = HeaderMap::new();
        headers.insert("x-b3-traceid", HeaderValue::from_static("463ac35c9f6413ad"));
        headers.insert("x-b3-spanid", HeaderValue::from_static("a2fb4a1d1a96d312"));
        headers.insert("x-b3-sampled", HeaderValue::from_static("1"));
        propagate(&mut headers);
        assert_eq!(
            get(&headers, "x-b3-traceid"),
            "0000000000000000463ac35c9f6413ad"
        );
        assert_eq!(get(&headers, "x-b3-parentspanid"), "a2fb4a1d1a96d312");
        assert_ne!(get(&headers, "x-b3-spanid"), "a2fb4a1d1a96d312");
        assert!(get(&headers, "traceparent").starts_with("00-0000000000000000463ac35c9f6413ad-"));
    }

    #[test]
    fn continues_a_w3c_trace() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        );
        propagate(&mut headers);
        let traceparent = get(&headers, "traceparent");
        assert!(traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(
            traceparent.ends_with("-00"),
            "the sampling decision is kept"
        );
        assert_eq!(get(&headers, "x-b3-parentspanid"), "00f067aa0ba902b7");
    }
}
