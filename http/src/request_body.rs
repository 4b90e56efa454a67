//! Reads a request body within the size limit and the read deadline, and undoes
//! `Content-Encoding: gzip` with the same limit on the inflated size. Shared by every
//! protocol view; each maps `BodyError` to its own status codes.
//!
//! An oversized body is answered without being buffered, but it is drained (up to a bound)
//! first: closing a socket with unread input makes the kernel send a reset, and the client
//! would see a dropped connection instead of the 413.

use std::io::Read;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use http_body_util::BodyExt;

/// How much of an oversized body is read and thrown away before answering.
const DRAIN_LIMIT: usize = 64 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// `size` is the declared or counted size when known.
    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: usize, size: Option<u64> },
    #[error("the request body did not arrive in time")]
    Timeout,
    #[error("the request body could not be read")]
    Unreadable,
    #[error("the gzip request body is invalid: {0}")]
    BadGzip(String),
}

pub async fn read(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        drain(body).await;
        return Err(BodyError::TooLarge {
            limit,
            size: declared,
        });
    }
    let mut body = body;
    let mut collected = Vec::new();
    let reading = async {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Err(BodyError::Unreadable);
            };
            if let Ok(data) = frame.into_data() {
                if collected.len() + data.len() > limit {
                    return Err(BodyError::TooLarge {
                        limit,
                        size: Some((collected.len() + data.len()) as u64),
                    });
                }
                collected.extend_from_slice(&data);
            }
        }
        Ok(())
    };
    match tokio::time::timeout(deadline, reading).await {
        Err(_) => return Err(BodyError::Timeout),
        Ok(Err(error @ BodyError::TooLarge { .. })) => {
            drain(body).await;
            return Err(error);
        }
        Ok(Err(error)) => return Err(error),
        Ok(Ok(())) => {}
    }
    if !body_is_gzip(headers) {
        return Ok(Bytes::from(collected));
    }
    let mut inflated = Vec::new();
    let mut decoder = flate2::read::GzDecoder::new(collected.as_slice()).take(limit as u64 + 1);
    decoder
        .read_to_end(&mut inflated)
        .map_err(|error| BodyError::BadGzip(error.to_string()))?;
    if inflated.len() > limit {
        return Err(BodyError::TooLarge { limit, size: None });
    }
    Ok(Bytes::from(inflated))
}

fn body_is_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_ENCODING)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|encoding| encoding.trim().eq_ignore_ascii_case("gzip"))
}

async fn drain(mut body: Body) {
    let mut drained = 0usize;
    let draining = async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                drained += data.len();
                if drained > DRAIN_LIMIT {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, draining).await;
}
