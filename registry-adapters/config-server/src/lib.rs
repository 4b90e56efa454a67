//! The Spring Cloud Config Server view: Environment JSON and the rendered `.yml`,
//! `.properties` and `.json` views, from a folder or git repository and from the KV store.
//!
//! Layout: `routes` (path shapes and handlers), `repository` (folder and git backends),
//! `environment` (which files, in which order; KV contexts), `yaml` and `properties`
//! (file formats), `render` (merged views), `cipher` (Spring Security's `Encryptors.text`),
//! `encryption` (`{cipher}` values and the `/encrypt` endpoints), `error` (status codes).
#![forbid(unsafe_code)]

pub mod cipher;
mod encryption;
mod environment;
mod error;
pub mod limits;
pub mod properties;
pub mod render;
mod repository;
mod routes;
pub mod yaml;

use std::sync::Arc;
use std::time::Duration;

pub use cipher::TextEncryptor;
pub use environment::{Environment, PropertySource};
pub use error::ConfigError;
pub use repository::Repository;
pub use routes::routes;

use ferry_core::kv::KvStore;

/// What the Config Server serves from, and how it checks requests.
#[derive(Clone, Debug)]
pub struct ConfigSources {
    /// The repository (`--config-repo`), if any.
    pub repository: Option<Arc<Repository>>,
    /// The KV store, read in Spring Cloud Consul Config's layout, if any.
    pub kv: Option<Arc<KvStore>>,
    /// Whether profile names are checked as Spring's server checks them since 4.3.3 (letters,
    /// digits and `-_.+@`, starting and ending with a letter or digit), and refused with 400
    /// otherwise. Spring turns it off with `spring.profiles.validate=false` (4.3.4); older
    /// servers (3.1.x, 4.3.0-4.3.2) never checked, and Boot 2.7 clients send such names.
    pub validate_profiles: bool,
    /// The symmetric key (`--encrypt-key`), derived once; `None` is Spring's server without
    /// `encrypt.key`, whose failsafe encryptor refuses every use.
    pub encryptor: Option<Arc<TextEncryptor>>,
    /// Whether `{cipher}` values are served decrypted (Spring's
    /// `spring.cloud.config.server.encrypt.enabled`, on by default); off, they reach the
    /// clients as written, for clients that decrypt them themselves.
    pub decrypt: bool,
    /// Largest `/encrypt` or `/decrypt` body; larger is 413.
    pub max_body_bytes: usize,
    /// How long an `/encrypt` or `/decrypt` body may take to arrive; then 408.
    pub body_timeout: Duration,
}

impl Default for ConfigSources {
    fn default() -> ConfigSources {
        ConfigSources {
            repository: None,
            kv: None,
            validate_profiles: true,
            encryptor: None,
            decrypt: true,
            max_body_bytes: 1 << 20,
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// Builds the Environment for one request; shared by every endpoint.
///
/// A comma-separated `label` (the client's `send-all-labels`) is read label by label, and
/// any unknown label is 404 for the whole request, as Spring's git backend does unless
/// told to continue.
pub fn environment(
    sources: &ConfigSources,
    application: &str,
    profiles: &[String],
    label: Option<&str>,
) -> Result<Environment, ConfigError> {
    let labels = split_labels(label);
    let mut snapshots = Vec::with_capacity(labels.len());
    for label in &labels {
        match &sources.repository {
            Some(repository) => snapshots.push(repository.snapshot(*label)?),
            None => match label {
                None | Some("main") | Some("master") => {}
                Some(other) => return Err(ConfigError::UnknownLabel((*other).to_owned())),
            },
        }
    }
    // A folder is one label's content whichever aliases name it, so it is read once.
    if snapshots
        .iter()
        .all(|snapshot| snapshot.version().is_none())
    {
        snapshots.truncate(1);
    }
    // Spring's git backend reports the default label it read when none was asked for
    // (`main`, even when it fell back to `master`); its native backend reports none.
    let is_git = matches!(sources.repository.as_deref(), Some(Repository::Git { .. }));
    let label = label.or(is_git.then_some(repository::DEFAULT_LABEL));
    let mut environment = environment::build(
        &snapshots,
        sources.kv.as_deref(),
        application,
        profiles,
        label,
    )?;
    if sources.decrypt {
        encryption::decrypt_environment(&mut environment, sources.encryptor.as_deref());
    }
    Ok(environment)
}

/// The labels of a request: none, one, or a comma-separated list without its empty items
/// (a list of nothing but commas is kept whole, and is then no label that exists).
fn split_labels(label: Option<&str>) -> Vec<Option<&str>> {
    let Some(label) = label else {
        return vec![None];
    };
    let labels: Vec<Option<&str>> = label
        .split(',')
        .filter(|part| !part.trim().is_empty())
        .map(Some)
        .collect();
    if labels.is_empty() {
        vec![Some(label)]
    } else {
        labels
    }
}

#[cfg(test)]
mod request_tests;
#[cfg(test)]
mod tests;
