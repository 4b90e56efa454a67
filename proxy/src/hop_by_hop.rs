//! The headers that describe one connection rather than the message (RFC 9110 §7.6.1), so
//! neither path forwards them: one list for both, and the one way the paths differ spelled
//! out where it applies (`strip` here for the general path, `h1::codec` for its own).

use http::header::{self, HeaderMap, HeaderName};

/// Never forwarded by either path, nor any header a `Connection` header names. `te` is not
/// among them: gRPC needs `te: trailers` end to end.
pub const HOP_BY_HOP: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "proxy-authenticate",
];

/// The general path's cut: `HOP_BY_HOP`, the headers `Connection` names, and
/// `Transfer-Encoding` too, because hyper frames each body anew for the connection it goes
/// out on. (The HTTP/1.1 path relays bodies in the framing they came in, so it keeps it.)
pub fn strip(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
}
