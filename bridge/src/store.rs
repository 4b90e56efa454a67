//! Which store the registry stands on: the embedded default (one node, its agent
//! registrations and imported copies in `registrations.redb`) or a shared etcd cluster
//! (`--store etcd://host:port,...`: every node a copy of one registry, fed by etcd's watch),
//! and the KV store beside it: `kv.redb` with the embedded default, etcd with etcd (Consul
//! KV, sessions and locks shared by every node, its index etcd's revision as the
//! registry's is).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;
use ferry_core::change_index::ChangeIndex;
use ferry_core::kv::KvStore;
use ferry_core::store::DurableStore;
use ferry_core::{Clock, Registry, RegistrySettings};
use ferry_etcd::{EtcdKv, EtcdStore, EtcdStoreOptions};

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

/// The registry and the KV store, on their store, with everything it kept already in them.
pub struct Opened {
    pub registry: Arc<Registry>,
    pub kv: Arc<KvStore>,
    /// The shared store, when there is one (for `/ready`, metrics, `ferry ctl nodes`).
    pub etcd: Option<Arc<EtcdStore>>,
}

pub async fn open(
    choice: &StoreChoice,
    settings: RegistrySettings,
    data_dir: &Path,
    node: &str,
    lease_ttl: std::time::Duration,
    startup_wait: std::time::Duration,
    inbound: Option<String>,
) -> anyhow::Result<Opened> {
    match choice {
        StoreChoice::Embedded => {
            let kv_path = data_dir.join("kv.redb");
            let (kv, index) = KvStore::open(&kv_path, Clock::System, node)
                .with_context(|| format!("cannot open the KV store {}", kv_path.display()))?;
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
                kv: Arc::new(kv),
                etcd: None,
            })
        }
        StoreChoice::Etcd(endpoints) => {
            let mut options = EtcdStoreOptions::new(endpoints.clone(), node.to_owned());
            options.lease_ttl = lease_ttl;
            options.connect.startup_wait = startup_wait;
            options.inbound = inbound;
            let store = EtcdStore::start(options)
                .await
                .with_context(|| format!("cannot use etcd at {}", endpoints.join(",")))?;
            // One index for both, etcd's revision, the same on every node: a blocking read
            // of either wakes on the other's changes too, and re-checks its own index.
            let index = Arc::new(ChangeIndex::new(1));
            let registry = Arc::new(Registry::with_index(
                settings,
                Clock::System,
                store.clone(),
                index.clone(),
            ));
            registry.apply_feed();
            tokio::spawn(registry.clone().run_feed());
            let kv = Arc::new(KvStore::shared(
                Arc::new(EtcdKv::new(store.clone())),
                index,
                Clock::System,
                node,
            ));
            kv.apply_feed();
            // Locks whose session ended while no node was looking (its node died with no
            // other node up): blocking etcd calls, off the runtime's threads.
            let releasing = kv.clone();
            match tokio::task::spawn_blocking(move || releasing.release_orphaned_locks()).await {
                Ok(Ok(0)) => {}
                Ok(Ok(released)) => tracing::info!(released, "locks of ended sessions released"),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "cannot release the locks of ended sessions yet")
                }
                Err(error) => {
                    tracing::warn!(%error, "releasing the locks of ended sessions failed")
                }
            }
            tokio::spawn(kv.clone().run_feed());
            tracing::info!(
                instances = registry.instance_count(),
                revision = registry.index(),
                node,
                "registry and KV store loaded from etcd"
            );
            Ok(Opened {
                registry,
                kv,
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
