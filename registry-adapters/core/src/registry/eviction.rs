//! The background task that evicts expired leases at a fixed interval (Eureka: 60 s).

use std::sync::Arc;
use std::time::Duration;

use super::Registry;

/// Runs until the returned handle is aborted or the runtime stops.
pub fn spawn(registry: Arc<Registry>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            match registry.evict_expired() {
                Ok(0) => {}
                Ok(evicted) => tracing::info!(evicted, "evicted expired leases"),
                Err(error) => tracing::warn!(%error, "eviction failed"),
            }
        }
    })
}
