//! What can go wrong between Ferry and a legacy Eureka cluster, named after what happened.
//! `Unreachable` is the only error that makes the source count as down (stale copies, a
//! grace period when it comes back); the others are one refused exchange or document.

use ferry_eureka::decode::DecodeError;

#[derive(Debug, thiserror::Error)]
pub enum EurekaSyncError {
    /// Every server URL failed (connection refused, timeout, or a 5xx): the cluster is down
    /// as far as Ferry can tell.
    #[error("no legacy Eureka server answered; last: {last}")]
    Unreachable { last: String },
    /// A server answered, but not what the operation expects (a 400 to a registration...).
    #[error("{server} answered {status} to {operation}")]
    Refused {
        operation: &'static str,
        server: String,
        status: u16,
    },
    /// A document that is not JSON, or not an `applications`/`instance` document.
    #[error("malformed {what} from {server}: {reason}")]
    Malformed {
        what: &'static str,
        server: String,
        reason: String,
    },
    /// One instance of a document that does not decode (skipped, the rest is used).
    #[error("instance refused in {what} from {server}: {source}")]
    BadInstance {
        what: &'static str,
        server: String,
        #[source]
        source: DecodeError,
    },
}

impl EurekaSyncError {
    /// Whether the cluster itself could not be reached (as opposed to one bad answer).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, EurekaSyncError::Unreachable { .. })
    }
}
