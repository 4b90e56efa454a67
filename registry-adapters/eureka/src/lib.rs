//! The Eureka server view: the REST API of Netflix Eureka (as embedded by Spring Cloud
//! Netflix) over the one registry, in JSON and XML, under `/eureka/` and `/eureka/v2/`.
//!
//! Layout: `routes` (handlers), `decode` (documents -> model, both formats), `json` and
//! `xml` (model -> documents), `stream` (a large JSON registry document read instance by
//! instance), `spelling` (Eureka's names for statuses, actions and
//! data-centre kinds, and the optional instance fields both encoders write), `hashcode`,
//! `negotiate` (formats and gzip), `cache` (rendered registry documents), `fetches` (counts
//! of full and delta fetches, for the binary's metrics), `error` (status codes).
#![forbid(unsafe_code)]

mod cache;
pub mod decode;
mod error;
mod fetches;
pub mod hashcode;
pub mod json;
mod negotiate;
mod routes;
pub mod spelling;
pub mod stream;
pub mod xml;

use std::time::Duration;

pub use error::EurekaError;
pub use fetches::FetchCounts;
pub use negotiate::Format;
pub use routes::{register_body, routes};

/// Limits and cache sizing of the Eureka view.
#[derive(Clone, Debug)]
pub struct EurekaSettings {
    /// Request bodies above this size get 413 (the spec's default: 1 MiB).
    pub max_body_bytes: usize,
    /// A request body must arrive within this time, or the answer is 408.
    pub body_timeout: Duration,
    /// Upper bound on the bytes of rendered documents kept.
    pub cache_max_bytes: u64,
    /// How long a rendered document may be served while no change happens; bounds how far
    /// its lease timestamps lag behind heartbeats.
    pub cache_time_to_live: Duration,
}

impl Default for EurekaSettings {
    fn default() -> Self {
        EurekaSettings {
            max_body_bytes: 1 << 20,
            body_timeout: Duration::from_secs(10),
            cache_max_bytes: 48 << 20,
            cache_time_to_live: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests;
