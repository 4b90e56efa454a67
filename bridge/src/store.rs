//! Which store the registry stands on: the embedded default (one node, its agent
//! registrations and imported copies in `registrations.redb`) or a shared etcd cluster
//! (`--store etcd://host:port,...`: every node a copy of one registry, fed by etcd's watch).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;
use ferry_core::change_index::ChangeIndex;
use ferry_core::store::DurableStore;
use ferry_core::{Clock, Registry, RegistrySettings};
use ferry_etcd::{EtcdStore, EtcdStoreOptions};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreChoice {
    /// `memory`: this node alone, its durable parts under the data directory.
    Embedded,
    /// `etcd://host:port[,host:port...]`.
    Etcd(Vec<String>),
}

impl FromStr for StoreChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<StoreChoice, String> {
        if text == "memory" {
            return Ok(StoreChoice::Embedded);
        }
        let Some(list) = text.strip_prefix("etcd://") else {
            return Err(format!(
                "{text:?} is not a store: use `memory` or `etcd://HOST:PORT[,HOST:PORT...]`"
            ));
        };
        let endpoints: Vec<String> = list
            .split(',')
            .map(|endpoint| endpoint.trim().trim_end_matches('/').to_owned())
            .filter(|endpoint| !endpoint.is_empty())
            .collect();
        if endpoints.is_empty() || endpoints.iter().any(|e| !e.contains(':')) {
            return Err(format!(
                "{text:?}: every etcd endpoint is HOST:PORT, separated by commas"
            ));
        }
        Ok(StoreChoice::Etcd(endpoints))
    }
}

/// The registry, on its store, with everything the store kept already in it.
pub struct Opened {
    pub registry: Arc<Registry>,
    /// The shared store, when there is one (for `/ready`, metrics, `ferry ctl nodes`).
    pub etcd: Option<Arc<EtcdStore>>,
}

pub async fn open(
    choice: &StoreChoice,
    settings: RegistrySettings,
    data_dir: &Path,
    node: &str,
    lease_ttl: std::time::Duration,
    index: Arc<ChangeIndex>,
) -> anyhow::Result<Opened> {
    match choice {
        StoreChoice::Embedded => {
            // Agent registrations are kept here, as a Consul agent keeps them; Eureka ones
            // are leases in memory that clients re-create.
            let path = data_dir.join("registrations.redb");
            let registrations = DurableStore::open(&path).with_context(|| {
                format!("cannot open the registrations file {}", path.display())
            })?;
            let registry = Arc::new(Registry::with_index(
                settings,
                Clock::System,
                Arc::new(registrations),
                index,
            ));
            // Before any listener serves: a client never sees the registry without them.
            let restored = registry
                .restore()
                .context("cannot restore the agent registrations")?;
            tracing::info!(restored, "agent registrations and imported copies restored");
            Ok(Opened {
                registry,
                etcd: None,
            })
        }
        StoreChoice::Etcd(endpoints) => {
            let mut options = EtcdStoreOptions::new(endpoints.clone(), node.to_owned());
            options.lease_ttl = lease_ttl;
            let store = EtcdStore::start(options)
                .await
                .with_context(|| format!("cannot use etcd at {}", endpoints.join(",")))?;
            // The registry's index is etcd's revision, the same on every node; the KV store
            // keeps its own until it moves to etcd too.
            let registry = Arc::new(Registry::with_index(
                settings,
                Clock::System,
                store.clone(),
                Arc::new(ChangeIndex::new(1)),
            ));
            registry.apply_feed();
            tokio::spawn(registry.clone().run_feed());
            tracing::info!(
                instances = registry.instance_count(),
                revision = registry.index(),
                node,
                "registry loaded from etcd"
            );
            Ok(Opened {
                registry,
                etcd: Some(store),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse_or_say_what_is_wrong() {
        assert_eq!("memory".parse(), Ok(StoreChoice::Embedded));
        assert_eq!(
            "etcd://127.0.0.1:2379, 10.0.0.2:2379/".parse(),
            Ok(StoreChoice::Etcd(vec![
                "127.0.0.1:2379".into(),
                "10.0.0.2:2379".into()
            ]))
        );
        assert!("etcd://".parse::<StoreChoice>().is_err());
        assert!("etcd://hostonly".parse::<StoreChoice>().is_err());
        assert!("redis://x:1".parse::<StoreChoice>().is_err());
    }
}
