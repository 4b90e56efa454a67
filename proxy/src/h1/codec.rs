//! HTTP/1.1 heads and body framing for the forwarding path: parse a head with httparse,
//! decide how its body is delimited (RFC 9112 §6), and write the head the other side gets:
//! hop-by-hop headers removed, trace headers continued, everything else byte for byte.
//!
//! Bodies are relayed verbatim, never re-encoded, so a head keeps its own framing headers;
//! only what describes one connection (`Connection`, `Keep-Alive`, the headers `Connection`
//! names) stays behind. Anything this path does not handle itself — HTTP/1.0, upgrades,
//! `Expect`, CONNECT, absolute-form targets, the HTTP/2 preface — is handed to hyper.

use std::mem::MaybeUninit;

use crate::hop_by_hop::HOP_BY_HOP;
use crate::trace;

/// More headers than this is answered 431, as an oversized head is; so is a request whose
/// forwarded head would have more, counting the trace headers it gets.
pub const MAX_HEADERS: usize = 96;
/// Connection-specific header names a `Connection` header may list; more goes to hyper.
const MAX_NAMED: usize = 8;
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The most trace headers a forwarded head gets (`trace::Span::write_http1`: a continued
/// trace has a parent span id).
const TRACE_FIELDS: usize = 5;

/// How a message's body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Only for responses: the body runs until the connection closes.
    UntilClose,
}

/// A request head ready to forward; its rewritten form is in the output buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of input the head took.
    pub length: usize,
    pub framing: Framing,
    /// Safe to send twice (RFC 9110 §9.2.2), so a 5xx may be retried.
    pub idempotent: bool,
    pub head_method: bool,
    /// The caller asked to close the connection after this exchange.
    pub close: bool,
}

/// The proxy's own answer to a request it will not forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: &'static str,
    pub text: &'static str,
}

#[derive(Debug, PartialEq, Eq)]
pub enum RequestVerdict {
    /// The head is not complete yet.
    Partial,
    /// Something for hyper's general path.
    HandOver,
    Reject(Rejection),
    Forward(RequestHead),
}

const BAD_REQUEST: Rejection = Rejection {
    status: 400,
    reason: "bad-request",
    text: "malformed HTTP request\n",
};
const TOO_LARGE: Rejection = Rejection {
    status: 431,
    reason: "headers-too-large",
    text: "request headers too large\n",
};

/// Parses the request head at the start of `input` and, when it is to be forwarded, writes
/// its upstream form to `out` (cleared first).
pub fn parse_request(input: &[u8], max_head: usize, out: &mut Vec<u8>) -> RequestVerdict {
    let prefix = input.len().min(H2_PREFACE.len());
    if input[..prefix] == H2_PREFACE[..prefix] {
        return if prefix == H2_PREFACE.len() {
            RequestVerdict::HandOver
        } else {
            RequestVerdict::Partial
        };
    }
    // Uninitialized: zeroing 96 headers costs more than parsing a typical head.
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let length = match request.parse_with_uninit_headers(input, &mut headers) {
        Ok(httparse::Status::Complete(length)) if length <= max_head => length,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return RequestVerdict::Reject(TOO_LARGE)
        }
        Ok(httparse::Status::Partial) if input.len() > max_head => {
            return RequestVerdict::Reject(TOO_LARGE)
        }
        Ok(httparse::Status::Partial) => return RequestVerdict::Partial,
        Err(_) => return RequestVerdict::Reject(BAD_REQUEST),
    };
    let (Some(method), Some(path), Some(1)) = (request.method, request.path, request.version)
    else {
        return RequestVerdict::HandOver;
    };
    if method == "CONNECT" || !path.starts_with('/') {
        return RequestVerdict::HandOver;
    }
    let headers = &*request.headers;
    let facts = match Facts::gather(headers) {
        Ok(facts) => facts,
        Err(Gather::HandOver) => return RequestVerdict::HandOver,
        Err(Gather::Invalid) => return RequestVerdict::Reject(BAD_REQUEST),
    };
    if facts.upgrade || facts.expect {
        return RequestVerdict::HandOver;
    }
    let framing = match (facts.chunked, facts.transfer_encoding, facts.content_length) {
        (_, true, Some(_)) => return RequestVerdict::Reject(BAD_REQUEST),
        (true, true, None) => Framing::Chunked,
        (false, true, None) => return RequestVerdict::Reject(BAD_REQUEST),
        (_, false, Some(0)) | (_, false, None) => Framing::Empty,
        (_, false, Some(length)) => Framing::Length(length),
    };

    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut forwarded = 0;
    let mut incoming = trace::Incoming::default();
    for header in headers {
        let name = header.name;
        if let Some(slot) = trace::Incoming::slot(name) {
            if let Ok(value) = std::str::from_utf8(header.value) {
                incoming.set(slot, value);
            }
            continue;
        }
        if facts.is_hop_by_hop(name) {
            continue;
        }
        write_header(out, name.as_bytes(), header.value);
        forwarded += 1;
    }
    // With the trace headers added, a head read within the bound could leave past it, and
    // the next hop that reads with the same bound (another Ferry listener, which adds a
    // parent span id) would refuse it: such a head is refused here.
    if forwarded + TRACE_FIELDS > MAX_HEADERS {
        return RequestVerdict::Reject(TOO_LARGE);
    }
    trace::Span::continue_or_start(&incoming).write_http1(out);
    out.extend_from_slice(b"\r\n");
    RequestVerdict::Forward(RequestHead {
        length,
        framing,
        idempotent: crate::retry::is_idempotent(method),
        head_method: method == "HEAD",
        close: facts.close,
    })
}

/// A response head as read from an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub length: usize,
    pub status: u16,
    pub framing: Framing,
    /// The endpoint keeps the connection open for another request.
    pub reusable: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ResponseVerdict {
    Partial,
    /// An informational (1xx) head of this many bytes, passed on as it is.
    Interim(usize),
    Invalid,
    /// The final head; its caller-side form is in the output buffer.
    Final(ResponseHead),
}

/// Parses the response head at the start of `input`; a final head is rewritten into `out`
/// (cleared first). `close` adds `Connection: close` for a caller that asked for it.
pub fn parse_response(
    input: &[u8],
    max_head: usize,
    head_request: bool,
    close: bool,
    out: &mut Vec<u8>,
) -> ResponseVerdict {
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        input,
        &mut headers,
    );
    let length = match parsed {
        Ok(httparse::Status::Complete(length)) if length <= max_head => length,
        Ok(httparse::Status::Partial) if input.len() <= max_head => {
            return ResponseVerdict::Partial
        }
        _ => return ResponseVerdict::Invalid,
    };
    let (Some(version), Some(status)) = (response.version, response.code) else {
        return ResponseVerdict::Invalid;
    };
    if status == 101 {
        // Nothing on this path asked for an upgrade.
        return ResponseVerdict::Invalid;
    }
    if status < 200 {
        return ResponseVerdict::Interim(length);
    }
    let headers = &*response.headers;
    let Ok(facts) = Facts::gather(headers) else {
        return ResponseVerdict::Invalid;
    };
    let framing = if head_request || status == 204 || status == 304 {
        Framing::Empty
    } else if facts.transfer_encoding {
        if facts.chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match facts.content_length {
            Some(0) => Framing::Empty,
            Some(length) => Framing::Length(length),
            None => Framing::UntilClose,
        }
    };
    let reusable = version == 1 && !facts.close && framing != Framing::UntilClose;

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    let code = [
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ];
    out.extend_from_slice(&code);
    out.push(b' ');
    out.extend_from_slice(response.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for header in headers {
        let name = header.name;
        if facts.is_hop_by_hop(name)
            || (facts.transfer_encoding && name.eq_ignore_ascii_case("content-length"))
        {
            continue;
        }
        write_header(out, name.as_bytes(), header.value);
    }
    if close || framing == Framing::UntilClose {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    ResponseVerdict::Final(ResponseHead {
        length,
        status,
        framing,
        reusable,
    })
}

fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// What a head's headers say about the connection and the body.
#[derive(Default)]
struct Facts<'h> {
    content_length: Option<u64>,
    transfer_encoding: bool,
    /// `chunked` is the final transfer coding.
    chunked: bool,
    close: bool,
    upgrade: bool,
    expect: bool,
    named: [&'h str; MAX_NAMED],
    named_count: usize,
}

enum Gather {
    HandOver,
    Invalid,
}

impl<'h> Facts<'h> {
    fn gather(headers: &'h [httparse::Header<'h>]) -> Result<Facts<'h>, Gather> {
        let mut facts = Facts::default();
        for header in headers {
            let name = header.name;
            if name.eq_ignore_ascii_case("content-length") {
                let length = parse_length(header.value).ok_or(Gather::Invalid)?;
                // Repeated lengths must agree (RFC 9112 §6.3), or the message is ambiguous.
                if facts.content_length.is_some_and(|seen| seen != length) {
                    return Err(Gather::Invalid);
                }
                facts.content_length = Some(length);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                let value = std::str::from_utf8(header.value).map_err(|_| Gather::Invalid)?;
                facts.transfer_encoding = true;
                // The last coding of the last header decides.
                facts.chunked = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"));
            } else if name.eq_ignore_ascii_case("connection") {
                let value = std::str::from_utf8(header.value).map_err(|_| Gather::Invalid)?;
                for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    if token.eq_ignore_ascii_case("close") {
                        facts.close = true;
                    } else if token.eq_ignore_ascii_case("upgrade") {
                        facts.upgrade = true;
                    } else if !token.eq_ignore_ascii_case("keep-alive") {
                        if facts.named_count == MAX_NAMED {
                            return Err(Gather::HandOver);
                        }
                        facts.named[facts.named_count] = token;
                        facts.named_count += 1;
                    }
                }
            } else if name.eq_ignore_ascii_case("upgrade") {
                facts.upgrade = true;
            } else if name.eq_ignore_ascii_case("expect") {
                facts.expect = true;
            }
        }
        Ok(facts)
    }

    /// Headers that describe one connection: the shared list and those `Connection`
    /// names. `Transfer-Encoding` is kept because the body is relayed as it came.
    fn is_hop_by_hop(&self, name: &str) -> bool {
        HOP_BY_HOP
            .iter()
            .chain(&self.named[..self.named_count])
            .any(|hop| hop.eq_ignore_ascii_case(name))
    }
}

fn parse_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0u64, |total, digit| total * 10 + u64::from(digit - b'0')),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(input: &[u8]) -> (RequestHead, String) {
        let mut out = Vec::new();
        match parse_request(input, 8192, &mut out) {
            RequestVerdict::Forward(head) => (head, String::from_utf8(out).unwrap()),
            other => panic!("expected a forwardable head, got {other:?}"),
        }
    }

    fn verdict(input: &[u8]) -> RequestVerdict {
        parse_request(input, 8192, &mut Vec::new())
    }

    #[test]
    fn a_get_is_forwarded_with_trace_headers_and_without_hop_by_hop_ones() {
        let input = b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nAccept: */*\r\n\r\nNEXT";
        let (head, text) = forward(input);
        assert_eq!(head.length, input.len() - 4);
        assert_eq!(head.framing, Framing::Empty);
        assert!(head.idempotent && !head.close && !head.head_method);
        assert!(text.starts_with("GET /a?b=c HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n"));
        assert!(!text.to_ascii_lowercase().contains("x-hop"));
        assert!(!text.to_ascii_lowercase().contains("keep-alive"));
        assert!(text.contains("x-b3-traceid: ") && text.contains("traceparent: 00-"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn incoming_trace_headers_are_replaced_by_a_child_span() {
        let (_, text) = forward(
            b"GET / HTTP/1.1\r\nX-B3-TraceId: 463ac35c9f6413ad\r\nX-B3-SpanId: a2fb4a1d1a96d312\r\nX-B3-Sampled: 1\r\n\r\n",
        );
        assert!(text.contains("x-b3-traceid: 0000000000000000463ac35c9f6413ad\r\n"));
        assert!(text.contains("x-b3-parentspanid: a2fb4a1d1a96d312\r\n"));
        assert_eq!(text.matches("x-b3-spanid").count(), 1);
        assert!(!text.contains("X-B3-SpanId: a2fb4a1d1a96d312"));
    }

    #[test]
    fn body_framing_follows_rfc_9112() {
        assert_eq!(
            forward(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
                .0
                .framing,
            Framing::Length(5)
        );
        let (head, text) = forward(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(head.framing, Framing::Chunked);
        assert!(!head.idempotent);
        assert!(text.contains("Transfer-Encoding: chunked\r\n"));
        for ambiguous in [
            &b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        ] {
            assert_eq!(verdict(ambiguous), RequestVerdict::Reject(BAD_REQUEST));
        }
    }

    #[test]
    fn what_hyper_handles_better_is_handed_over() {
        for input in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            b"GET /chat HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            b"CONNECT x:443 HTTP/1.1\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\n\r\n",
            H2_PREFACE,
        ] {
            assert_eq!(verdict(input), RequestVerdict::HandOver, "{input:?}");
        }
        assert_eq!(verdict(b"PRI * HTTP/2"), RequestVerdict::Partial);
    }

    #[test]
    fn bad_and_oversized_heads_are_rejected() {
        assert_eq!(
            verdict(b"NOT HTTP AT ALL\r\n\r\n"),
            RequestVerdict::Reject(BAD_REQUEST)
        );
        assert_eq!(verdict(b"GET / HTTP/1.1\r\nHo"), RequestVerdict::Partial);
        let mut huge = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        huge.resize(9000, b'a');
        assert_eq!(verdict(&huge), RequestVerdict::Reject(TOO_LARGE));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(verdict(&many), RequestVerdict::Reject(TOO_LARGE));
    }

    #[test]
    fn a_forwarded_head_stays_within_the_header_bound() {
        // The h1_request fuzz target's property (a forwarded head parses again) failed on
        // this: 96 headers were forwarded as 100 with the trace headers added, a head this
        // parser (the next Ferry hop) refuses.
        let head = |count: usize| {
            let mut head = b"GET / HTTP/1.1\r\n".to_vec();
            for i in 0..count {
                head.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
            }
            head.extend_from_slice(b"\r\n");
            head
        };
        // Forwarded with four trace headers, then by the next hop with five.
        let (_, text) = forward(&head(MAX_HEADERS - 5));
        assert_eq!(text.matches("\r\n").count() - 2, MAX_HEADERS - 1);
        assert!(matches!(
            verdict(&text.into_bytes()),
            RequestVerdict::Forward(_)
        ));
        assert_eq!(
            verdict(&head(MAX_HEADERS - 4)),
            RequestVerdict::Reject(TOO_LARGE)
        );
    }

    fn response(input: &[u8], head: bool, close: bool) -> (ResponseHead, String) {
        let mut out = Vec::new();
        match parse_response(input, 8192, head, close, &mut out) {
            ResponseVerdict::Final(parsed) => (parsed, String::from_utf8(out).unwrap()),
            other => panic!("expected a final head, got {other:?}"),
        }
    }

    #[test]
    fn responses_are_framed_and_rewritten() {
        let (head, text) = response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n",
            false,
            false,
        );
        assert_eq!(head.framing, Framing::Length(3));
        assert!(head.reusable);
        assert_eq!(text, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n");

        let (head, _) = response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true, false);
        assert_eq!(head.framing, Framing::Empty, "a HEAD answer has no body");

        let (head, text) = response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            false,
            true,
        );
        assert_eq!(head.framing, Framing::Chunked);
        assert!(!text.contains("Content-Length"));
        assert!(text.ends_with("connection: close\r\n\r\n"));

        let (head, text) = response(b"HTTP/1.0 200 OK\r\n\r\n", false, false);
        assert_eq!(head.framing, Framing::UntilClose);
        assert!(!head.reusable);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.contains("connection: close"));

        let (head, _) = response(
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
            false,
        );
        assert_eq!((head.status, head.reusable), (503, false));
    }

    /// Heads the mutation test starts from: requests and responses with each framing.
    const MUTATION_SEEDS: [&[u8]; 6] = [
        b"GET /orders?id=7 HTTP/1.1\r\nHost: orders\r\nAccept: */*\r\nConnection: keep-alive, x-trace\r\nx-trace: 1\r\n\r\n",
        b"POST /pay HTTP/1.1\r\nHost: billing\r\nContent-Length: 5\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\nhello",
        b"PUT /blob HTTP/1.1\r\nHost: store\r\nTransfer-Encoding: gzip, chunked\r\nX-B3-TraceId: 80f198ee56343ba864fe8b2a57d3eff7\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\n\r\nok",
        b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nServer: x\r\n\r\n",
    ];

    proptest::proptest! {
        /// Valid heads with a few bytes replaced, inserted or removed reach deep into the
        /// parsers (random bytes alone almost never get past the request line): whatever
        /// the verdict, nothing panics, and whatever is forwarded is a valid head again.
        #[test]
        fn mutated_heads_never_panic_and_what_is_forwarded_reparses(
            seed in 0..MUTATION_SEEDS.len(),
            edits in proptest::collection::vec((0..400usize, 0..3u8, proptest::num::u8::ANY), 1..6),
        ) {
            let mut input = MUTATION_SEEDS[seed].to_vec();
            for (at, kind, byte) in edits {
                let at = at % (input.len() + 1);
                match kind {
                    0 if at < input.len() => input[at] = byte,
                    1 => input.insert(at, byte),
                    _ if at < input.len() => { input.remove(at); }
                    _ => input.push(byte),
                }
            }
            let mut out = Vec::new();
            if let RequestVerdict::Forward(head) = parse_request(&input, 4096, &mut out) {
                proptest::prop_assert!(head.length <= input.len());
                let mut parsed = [httparse::EMPTY_HEADER; 128];
                let mut request = httparse::Request::new(&mut parsed);
                proptest::prop_assert_eq!(request.parse(&out), Ok(httparse::Status::Complete(out.len())));
            }
            if let ResponseVerdict::Final(head) = parse_response(&input, 4096, false, false, &mut out) {
                proptest::prop_assert!(head.length <= input.len());
                let mut parsed = [httparse::EMPTY_HEADER; 128];
                let mut response = httparse::Response::new(&mut parsed);
                proptest::prop_assert_eq!(response.parse(&out), Ok(httparse::Status::Complete(out.len())));
            }
        }

        #[test]
        fn a_forwarded_head_is_valid_http_without_hop_by_hop_headers(
            method in "(GET|POST|PUT|DELETE|PATCH|OPTIONS)",
            path in "/[a-z0-9/?=&]{0,20}",
            headers in proptest::collection::vec(
                ("(x-[a-z]{1,6}|accept|keep-alive|proxy-connection|connection|traceparent|b3)", "[ -~&&[^,]]{0,12}"),
                0..8,
            ),
        ) {
            let mut input = format!("{method} {path} HTTP/1.1\r\nHost: example\r\n");
            for (name, value) in &headers {
                input.push_str(&format!("{name}: {value}\r\n"));
            }
            input.push_str("\r\n");
            let mut out = Vec::new();
            let head = match parse_request(input.as_bytes(), 8192, &mut out) {
                RequestVerdict::Forward(head) => head,
                RequestVerdict::HandOver => {
                    // Only an upgrade, or more names in `Connection` than this path keeps
                    // track of, goes to hyper; every other valid head is forwarded here.
                    let tokens: Vec<String> = headers
                        .iter()
                        .filter(|(name, _)| name == "connection")
                        .map(|(_, value)| value.trim().to_ascii_lowercase())
                        .filter(|token| !token.is_empty())
                        .collect();
                    let upgrade = tokens.iter().any(|token| token == "upgrade");
                    let named = tokens.iter().filter(|token| *token != "close" && *token != "keep-alive").count();
                    proptest::prop_assert!(upgrade || named > MAX_NAMED, "{:?} handed over", input);
                    return Ok(());
                }
                other => {
                    proptest::prop_assert!(false, "a valid head got {:?}: {:?}", other, input);
                    unreachable!()
                }
            };
            proptest::prop_assert_eq!(head.length, input.len());
            let mut parsed = [httparse::EMPTY_HEADER; 64];
            let mut request = httparse::Request::new(&mut parsed);
            proptest::prop_assert_eq!(request.parse(&out), Ok(httparse::Status::Complete(out.len())));
            proptest::prop_assert_eq!(request.method, Some(method.as_str()));
            proptest::prop_assert_eq!(request.path, Some(path.as_str()));
            let named: Vec<String> = headers
                .iter()
                .filter(|(name, _)| name == "connection")
                .flat_map(|(_, value)| value.split(',').map(|token| token.trim().to_ascii_lowercase()).collect::<Vec<_>>())
                .collect();
            let sent: Vec<(String, String)> = request
                .headers
                .iter()
                .map(|header| (header.name.to_ascii_lowercase(), String::from_utf8_lossy(header.value).into_owned()))
                .collect();
            for (name, _) in &sent {
                proptest::prop_assert!(!["connection", "keep-alive", "proxy-connection", "b3"].contains(&name.as_str()), "{} forwarded", name);
                proptest::prop_assert!(!named.contains(name), "{} is named by Connection", name);
            }
            proptest::prop_assert_eq!(sent.iter().filter(|(name, _)| name == "traceparent").count(), 1);
            let kept: Vec<&(String, String)> = sent.iter().filter(|(name, _)| name.starts_with("x-") && !name.starts_with("x-b3-")).collect();
            let expected: Vec<(String, String)> = headers
                .iter()
                .filter(|(name, _)| name.starts_with("x-") && !named.contains(name))
                .map(|(name, value)| (name.clone(), value.trim().to_owned()))
                .collect();
            proptest::prop_assert_eq!(kept.len(), expected.len());
            for ((name, value), (want_name, want_value)) in kept.into_iter().zip(&expected) {
                proptest::prop_assert_eq!(name, want_name);
                proptest::prop_assert_eq!(value.trim(), want_value);
            }
        }
    }

    #[test]
    fn interim_and_broken_responses() {
        let mut out = Vec::new();
        let hints = b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n";
        assert_eq!(
            parse_response(hints, 8192, false, false, &mut out),
            ResponseVerdict::Interim(hints.len())
        );
        assert_eq!(
            parse_response(
                b"HTTP/1.1 101 Switching\r\n\r\n",
                8192,
                false,
                false,
                &mut out
            ),
            ResponseVerdict::Invalid
        );
        assert_eq!(
            parse_response(b"garbage\r\n\r\n", 8192, false, false, &mut out),
            ResponseVerdict::Invalid
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n", 8192, false, false, &mut out),
            ResponseVerdict::Partial
        );
    }
}
