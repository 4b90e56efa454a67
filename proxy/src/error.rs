//! Errors the proxy answers itself, mapped in one place: a timeout is 504, no usable
//! endpoint 503, a connection failure 502. The reason goes in `x-ferry-error`, so a caller
//! can tell the proxy's answer from the service's.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::ResponseBody;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{service} has no endpoints")]
    NoEndpoints { service: String },
    #[error("every endpoint of {service} is ejected")]
    AllEjected { service: String },
    #[error("{service} did not answer within {timeout_ms} ms")]
    Timeout { service: String, timeout_ms: u128 },
    #[error("cannot reach {service} at {endpoint}: {reason}")]
    Unreachable {
        service: String,
        endpoint: String,
        reason: String,
    },
    #[error("the request body could not be read: {0}")]
    BadRequestBody(String),
}

impl ProxyError {
    pub(crate) fn status_and_reason(&self) -> (StatusCode, &'static str) {
        match self {
            ProxyError::NoEndpoints { .. } => (StatusCode::SERVICE_UNAVAILABLE, "no-endpoints"),
            ProxyError::AllEjected { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "all-endpoints-ejected")
            }
            ProxyError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            ProxyError::Unreachable { .. } => (StatusCode::BAD_GATEWAY, "connection-failed"),
            ProxyError::BadRequestBody(_) => (StatusCode::BAD_REQUEST, "bad-request-body"),
        }
    }

    pub fn into_response(self) -> Response<ResponseBody> {
        let (status, reason) = self.status_and_reason();
        let body = Full::new(Bytes::from(format!("{self}\n")))
            .map_err(|never| match never {})
            .boxed_unsync();
        let mut response = Response::new(body);
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert("x-ferry-error", HeaderValue::from_static(reason));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
        response
    }
}

/// The answer to a request whose handling panicked.
pub fn internal_error() -> Response<ResponseBody> {
    let body = Full::new(Bytes::from_static(b"internal proxy error\n"))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
        .headers_mut()
        .insert("x-ferry-error", HeaderValue::from_static("internal"));
    response
}
