//! Sync with a legacy Consul (an agent, or a server's HTTP API): its catalog and health
//! are imported, Ferry's instances are registered with it, and optionally a KV prefix is
//! mirrored. Blocking queries on the legacy side bring its changes within one wait.
//!
//! Layout: `client` (the HTTP client: token, indexes, errors), `import` (catalog and
//! health into the registry, by diff) with `removals` (when a vanished copy may go),
//! `export` (Ferry's instances registered with TTL checks Ferry keeps), `kv` (the one-way
//! KV mirror). Each runs as its own task until shutdown.

mod client;
mod export;
mod import;
mod kv;
mod removals;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

pub use client::ConsulSyncError;

use ferry_core::kv::KvStore;
use ferry_core::registry::Registry;

use crate::SyncHandle;

/// The owner name of copies imported from a legacy Consul.
pub const OWNER: &str = "legacy-consul";

/// How Ferry talks to a legacy Consul.
#[derive(Clone, Debug)]
pub struct ConsulSyncSettings {
    /// `host:port` or a URL of the legacy Consul's HTTP API.
    pub address: String,
    /// The ACL token sent as `X-Consul-Token`, if the legacy side needs one.
    pub token: Option<String>,
    /// A blocking query's longest wait, and the pace of retries after a failure.
    pub interval: Duration,
    /// Mirror KV keys under this prefix from the legacy side into Ferry's KV store.
    pub kv_prefix: Option<String>,
    /// Bound on each non-blocking request.
    pub timeout: Duration,
    /// How long a copy that vanished from a source that was unreachable is kept before
    /// it is removed.
    pub grace: Duration,
}

impl Default for ConsulSyncSettings {
    fn default() -> Self {
        ConsulSyncSettings {
            address: String::new(),
            token: None,
            interval: Duration::from_secs(30),
            kv_prefix: None,
            timeout: Duration::from_secs(5),
            grace: Duration::from_secs(90),
        }
    }
}

/// What the sync tasks share.
#[derive(Debug)]
struct Shared {
    registry: Arc<Registry>,
    client: client::Client,
    settings: ConsulSyncSettings,
    handle: SyncHandle,
}

/// Starts syncing with the legacy Consul until `shutdown` turns true. Must be called
/// within a Tokio runtime. An address that is no URL is reported in the status and syncs
/// nothing (the first import counts as done, so Ferry's start does not wait for it).
pub fn start(
    registry: Arc<Registry>,
    kv: Arc<KvStore>,
    settings: ConsulSyncSettings,
    shutdown: watch::Receiver<bool>,
) -> SyncHandle {
    let handle = SyncHandle::new(OWNER, "consul", vec![settings.address.clone()]);
    let client =
        match client::Client::new(&settings.address, settings.token.clone(), settings.timeout) {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(source = OWNER, %error, "legacy Consul sync not started");
                handle
                    .status
                    .failed(&error.to_string(), true, registry.now());
                handle.first_import_done();
                return handle;
            }
        };
    let kv_prefix = settings.kv_prefix.clone();
    let shared = Arc::new(Shared {
        registry,
        client,
        settings,
        handle: handle.clone(),
    });
    let changed = Arc::new(Notify::new());
    for segments in [
        &["v1", "catalog", "services"][..],
        &["v1", "health", "state", "any"][..],
    ] {
        tokio::spawn(import::watch_index(
            shared.clone(),
            segments,
            changed.clone(),
            shutdown.clone(),
        ));
    }
    tokio::spawn(import::run(shared.clone(), changed, shutdown.clone()));
    tokio::spawn(export::run(shared.clone(), shutdown.clone()));
    if let Some(prefix) = kv_prefix {
        tokio::spawn(kv::run(shared, kv, prefix, shutdown));
    }
    handle
}

/// Resolves once `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
