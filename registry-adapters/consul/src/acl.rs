//! Consul's ACLs as an agent with `acl.default_policy = "deny"` applies them, with one
//! token (`--consul-token`) that may do everything and an anonymous token that may do
//! nothing.
//!
//! A request without a token is the anonymous token's, not a refused one: Consul filters
//! what it may not see out of list reads (the catalog, health, agent service and check
//! lists, KV listings, sessions: an empty answer with the real index, so blocking reads
//! still block) and answers 403 only where a single named thing is read (a KV key, one
//! agent service, the agent's own description) or anything is written. Spring Cloud
//! Consul sends several reads without its token (the health indicator's service list,
//! `getAllInstances`, the actuator's consul endpoint); a 403 there turns the app's own
//! health DOWN, an empty list does not. A token that is not the configured one is
//! unknown to the ACL system: 403 "ACL not found" for everything, as Consul answers.
//!
//! Consul sends `X-Consul-Results-Filtered-By-ACLs: true` only to a caller that presented
//! a token (`maskResultsFilteredByACLs`: an anonymous caller must not learn that hidden
//! things exist), and the one token here sees everything, so Ferry never sends it.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::error::ConsulError;

/// What the caller of one request may see, decided by the guard and read by handlers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The configured token was presented, or no token is configured (ACLs off).
    Full,
    /// No token: list reads come back empty, named reads and writes get 403.
    Anonymous,
}

impl Access {
    /// Whether list reads show this caller what they hold (else they are empty).
    pub fn sees_all(self) -> bool {
        self == Access::Full
    }

    /// For a read of one named thing: 403 for the anonymous caller.
    pub fn may_read_one(self) -> Result<(), ConsulError> {
        match self {
            Access::Full => Ok(()),
            Access::Anonymous => Err(ConsulError::PermissionDenied),
        }
    }
}

/// The outcome of checking a request's token against the configured one.
pub(crate) fn access(
    expected: Option<&str>,
    presented: Option<&str>,
) -> Result<Access, ConsulError> {
    match (expected, presented.filter(|token| !token.is_empty())) {
        (None, _) => Ok(Access::Full),
        (Some(_), None) => Ok(Access::Anonymous),
        (Some(expected), Some(presented)) if presented == expected => Ok(Access::Full),
        (Some(_), Some(_)) => Err(ConsulError::UnknownToken),
    }
}

/// Endpoints Consul serves without resolving any token.
pub(crate) fn is_public(path: &str) -> bool {
    path.starts_with("/v1/status/") || path == "/v1/catalog/datacenters"
}

impl<S: Send + Sync> FromRequestParts<S> for Access {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Access, Infallible> {
        // The guard stores it on every request; a router without the guard has ACLs off.
        Ok(parts
            .extensions
            .get::<Access>()
            .copied()
            .unwrap_or(Access::Full))
    }
}
