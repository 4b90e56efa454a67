//! The Spring Cloud Config Server view: Environment JSON and the rendered `.yml`,
//! `.properties` and `.json` views, from a folder or git repository and from the KV store.
//!
//! Layout: `routes` (path shapes and handlers), `repository` (folder and git backends),
//! `environment` (which files, in which order; KV contexts), `yaml` and `properties`
//! (file formats), `render` (merged views), `error` (status codes).
#![forbid(unsafe_code)]

mod environment;
mod error;
pub mod limits;
pub mod properties;
pub mod render;
mod repository;
mod routes;
pub mod yaml;

use std::sync::Arc;

pub use environment::{Environment, PropertySource};
pub use error::ConfigError;
pub use repository::Repository;
pub use routes::routes;

use ferry_core::kv::KvStore;

/// What the Config Server serves from.
#[derive(Clone, Debug, Default)]
pub struct ConfigSources {
    /// The repository (`--config-repo`), if any.
    pub repository: Option<Arc<Repository>>,
    /// The KV store, read in Spring Cloud Consul Config's layout, if any.
    pub kv: Option<Arc<KvStore>>,
}

/// Builds the Environment for one request; shared by every endpoint.
pub fn environment(
    sources: &ConfigSources,
    application: &str,
    profiles: &[String],
    label: Option<&str>,
) -> Result<Environment, ConfigError> {
    let snapshot = match &sources.repository {
        Some(repository) => Some(repository.snapshot(label)?),
        None => match label {
            None | Some("main") | Some("master") => None,
            Some(other) => return Err(ConfigError::UnknownLabel(other.to_owned())),
        },
    };
    environment::build(
        snapshot.as_ref(),
        sources.kv.as_deref(),
        application,
        profiles,
        label,
    )
}

#[cfg(test)]
mod tests;
