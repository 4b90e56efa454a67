//! Every way a Eureka request can fail, and the status code Netflix's server (or the spec,
//! where Ferry is stricter) answers it with. Reasons are short plain text; clients only
//! look at the status. A 404 has no body at all, as Netflix's has none.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use ferry_core::model::Instance;
use ferry_core::registry::RegistryError;

use super::negotiate::Format;

#[derive(Debug, thiserror::Error)]
pub enum EurekaError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("request bodies must be application/json, application/xml or text/xml")]
    UnsupportedMediaType,
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// A replicated heartbeat carried older data: the peer gets the stored record.
    #[error("the registry holds newer data for this instance")]
    PeerIsStale {
        stored: Box<Instance>,
        format: Format,
    },
    /// The store a write needs did not take it; the body names the store and the client
    /// is told when to try again (Eureka clients retry at their next heartbeat anyway).
    #[error("{0}; the write was not made, retry later")]
    Unavailable(#[source] ferry_core::store::StoreError),
}

impl From<ferry_http::request_body::BodyError> for EurekaError {
    fn from(error: ferry_http::request_body::BodyError) -> EurekaError {
        use ferry_http::request_body::BodyError;
        match error {
            BodyError::TooLarge { limit, .. } => EurekaError::PayloadTooLarge { limit },
            BodyError::Timeout => EurekaError::BodyTimeout,
            BodyError::Unreadable | BodyError::BadGzip(_) => {
                EurekaError::BadRequest(error.to_string())
            }
        }
    }
}

impl EurekaError {
    pub fn from_registry(error: RegistryError, format: Format) -> EurekaError {
        match error {
            RegistryError::NotRegistered { app, id } => {
                EurekaError::NotFound(format!("instance {id} of {app} is not registered"))
            }
            RegistryError::ClientIsNewer { app, id } => EurekaError::NotFound(format!(
                "instance {id} of {app}: the client holds newer data; register again"
            )),
            RegistryError::PeerIsStale { stored } => EurekaError::PeerIsStale { stored, format },
            RegistryError::Store(error) => EurekaError::Unavailable(error),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            EurekaError::NotFound(_) => StatusCode::NOT_FOUND,
            EurekaError::BadRequest(_) => StatusCode::BAD_REQUEST,
            EurekaError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            EurekaError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            EurekaError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            EurekaError::PeerIsStale { .. } => StatusCode::CONFLICT,
            EurekaError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for EurekaError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let EurekaError::PeerIsStale { stored, format } = &self {
            let last_renewal = stored.lease.last_renewal;
            let body = match format {
                Format::Json => super::json::instance_document(stored, last_renewal),
                Format::Xml => super::xml::instance_document(stored, last_renewal),
            };
            return (
                status,
                [(header::CONTENT_TYPE, format.content_type())],
                body,
            )
                .into_response();
        }
        if let EurekaError::NotFound(reason) = &self {
            // Netflix's server answers every 404 with no body, and the Java clients read a
            // 404's body as the entity they asked for: Jersey 1's heartbeat (eureka-client
            // 1.10) and Spring Cloud 2021's RestTemplate transport fail to decode a text
            // body as an InstanceInfo, and then never re-register after a restart.
            tracing::debug!(%reason, "eureka 404");
            return status.into_response();
        }
        if let EurekaError::Unavailable(source) = &self {
            tracing::warn!(error = %source, "eureka write refused: store unavailable");
        }
        let mut response = (status, self.to_string()).into_response();
        if matches!(self, EurekaError::Unavailable(_)) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(ferry_core::store::RETRY_AFTER.as_secs()),
            );
        }
        if matches!(
            self,
            EurekaError::PayloadTooLarge { .. } | EurekaError::BodyTimeout
        ) {
            // The rest of the body was not read, so this connection cannot carry another
            // request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
