//! Consul's errors: a short plain-text reason with the status code the real agent uses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use ferry_core::kv::KvError;
use ferry_core::registry::{AgentError, RegistryError};
use ferry_core::store::StoreError;
use ferry_http::request_body::BodyError;

#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    #[error("{0}")]
    BadRequest(String),
    #[error("Permission denied")]
    PermissionDenied,
    /// A write on a listener other hosts reach, with no token configured to check.
    #[error("Permission denied: this agent's API is not on loopback and no --consul-token is set, so it takes no writes")]
    WritesNeedToken,
    /// A token the ACL system does not know (Consul resolves it, finds nothing, and
    /// refuses the request whatever it asks).
    #[error("ACL not found")]
    UnknownToken,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("Request body did not arrive in time")]
    BodyTimeout,
    #[error("{0}")]
    Internal(String),
    /// The store a write needs did not take it (etcd out of reach or without quorum); the
    /// body names the store and the client is told when to try again.
    #[error("{0}; the write was not made, retry later")]
    Unavailable(#[source] StoreError),
}

impl ConsulError {
    pub fn status(&self) -> StatusCode {
        match self {
            ConsulError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsulError::PermissionDenied
            | ConsulError::WritesNeedToken
            | ConsulError::UnknownToken => StatusCode::FORBIDDEN,
            ConsulError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsulError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ConsulError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ConsulError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ConsulError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ConsulError {
    fn into_response(self) -> Response {
        if let ConsulError::Unavailable(source) = &self {
            tracing::warn!(error = %source, "consul write refused: store unavailable");
        }
        let mut response = (self.status(), self.to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if matches!(self, ConsulError::Unavailable(_)) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(ferry_core::store::RETRY_AFTER.as_secs()),
            );
        }
        if matches!(self, ConsulError::TooLarge(_) | ConsulError::BodyTimeout) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<AgentError> for ConsulError {
    fn from(error: AgentError) -> ConsulError {
        match error {
            AgentError::UnknownService(_) | AgentError::UnknownCheck(_) => {
                ConsulError::NotFound(error.to_string())
            }
            AgentError::NotTtl(_) => ConsulError::Internal(error.to_string()),
            AgentError::Registry(error) => error.into(),
        }
    }
}

impl From<RegistryError> for ConsulError {
    fn from(error: RegistryError) -> ConsulError {
        match error {
            RegistryError::Store(error) => ConsulError::Unavailable(error),
            other => ConsulError::NotFound(other.to_string()),
        }
    }
}

impl From<KvError> for ConsulError {
    fn from(error: KvError) -> ConsulError {
        match error {
            KvError::UnknownSession(_) => ConsulError::Internal(error.to_string()),
            KvError::Store(error) => ConsulError::Unavailable(error),
        }
    }
}

impl From<StoreError> for ConsulError {
    fn from(error: StoreError) -> ConsulError {
        ConsulError::Unavailable(error)
    }
}

impl From<BodyError> for ConsulError {
    fn from(error: BodyError) -> ConsulError {
        match error {
            BodyError::TooLarge { limit, size } => ConsulError::TooLarge(match size {
                Some(size) => {
                    format!("Request body({size} bytes) too large, max size: {limit} bytes")
                }
                None => format!("Request body too large, max size: {limit} bytes"),
            }),
            BodyError::Timeout => ConsulError::BodyTimeout,
            BodyError::Unreadable | BodyError::BadGzip(_) => {
                ConsulError::BadRequest(error.to_string())
            }
        }
    }
}
