//! The Config Server's errors and the status codes Spring's server answers them with.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    BadRequest(String),
    #[error("No such label: {0}")]
    UnknownLabel(String),
    #[error("Not Found")]
    NotFound,
    #[error("Cannot parse {file}: {reason}")]
    Malformed { file: String, reason: String },
    #[error("Cannot read {file}: {reason}")]
    Unreadable { file: String, reason: String },
    /// The sources parse but the merged view cannot be written within the bounds of
    /// `limits` (a name nested too deep, a list index too large, placeholders too deep).
    #[error("Cannot render property {property}: {reason}")]
    Unrenderable { property: String, reason: String },
}

impl ConfigError {
    pub fn status(&self) -> StatusCode {
        match self {
            ConfigError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConfigError::UnknownLabel(_) | ConfigError::NotFound => StatusCode::NOT_FOUND,
            ConfigError::Malformed { .. }
            | ConfigError::Unreadable { .. }
            | ConfigError::Unrenderable { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ConfigError {
    fn into_response(self) -> Response {
        if self.status().is_server_error() {
            tracing::warn!(error = %self, "config request failed");
        }
        let body = serde_json::json!({
            "status": self.status().as_u16(),
            "error": self.status().canonical_reason().unwrap_or(""),
            "message": self.to_string(),
        });
        (
            self.status(),
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body.to_string(),
        )
            .into_response()
    }
}
