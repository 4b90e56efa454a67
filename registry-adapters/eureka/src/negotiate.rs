//! Content negotiation (Eureka spec §2): JSON only when `Accept` mentions json, XML
//! otherwise, because py-eureka-client sends `*/*` and parses XML; gzip for the registry
//! documents when `Accept-Encoding` allows it.

use axum::http::{header, HeaderMap, HeaderValue};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    Json,
    Xml,
}

impl Format {
    pub fn from_accept(headers: &HeaderMap) -> Format {
        let json = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|accept| accept.to_ascii_lowercase().contains("json"));
        if json {
            Format::Json
        } else {
            Format::Xml
        }
    }

    pub fn content_type(self) -> HeaderValue {
        match self {
            Format::Json => HeaderValue::from_static("application/json"),
            Format::Xml => HeaderValue::from_static("application/xml"),
        }
    }
}

/// The format of a request body from its `Content-Type`; `None` for anything else.
pub fn body_format(headers: &HeaderMap) -> Option<Format> {
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let media_type = content_type.split(';').next()?.trim().to_ascii_lowercase();
    match media_type.as_str() {
        "application/json" => Some(Format::Json),
        "application/xml" | "text/xml" => Some(Format::Xml),
        _ => None,
    }
}

pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|encodings| {
            encodings.split(',').any(|encoding| {
                let mut parts = encoding.split(';');
                let name = parts.next().unwrap_or("").trim();
                let refused = parts.any(|param| param.trim().replace(' ', "") == "q=0");
                name.eq_ignore_ascii_case("gzip") && !refused
            })
        })
}
