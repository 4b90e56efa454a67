//! Sync with a legacy registry, both ways, for the weeks of a migration: a legacy Eureka
//! cluster (`eureka`) and a legacy Consul (`consul`) see the instances registered with
//! Ferry, and Ferry's views (and its proxy) see theirs.
//!
//! The rules every adapter keeps (ARCHITECTURE.md, "Sync"):
//! - one owner side per instance: copies carry the owner in their `ferry-owner` metadata
//!   (`ferry` on exported copies, the source's name on imported ones); only the owner's
//!   changes flow, so nothing exported is imported back and nothing imported is exported;
//! - a legacy side that cannot be reached leaves every imported copy in place, marked
//!   stale, and a side that comes back is reconciled by diff, with removals held for a
//!   grace period so a restarted server that has not yet heard from its apps empties no
//!   service;
//! - writes to Ferry go through `Registry::import`/`unimport` (never the views), which
//!   refuse to touch an instance Ferry owns.
//!
//! `status` is what each source reports to the admin API, `ferry ctl sync` and `/metrics`.
#![forbid(unsafe_code)]

pub mod consul;
pub mod eureka;
pub mod status;

pub use status::{SourceSnapshot, SourceStatus};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// A running sync: its status, and whether its first import has completed.
#[derive(Clone, Debug)]
pub struct SyncHandle {
    pub status: Arc<SourceStatus>,
    first_import: watch::Receiver<bool>,
    first_import_done: Arc<watch::Sender<bool>>,
}

impl SyncHandle {
    pub fn new(name: &str, kind: &str, endpoints: Vec<String>) -> SyncHandle {
        let (sender, receiver) = watch::channel(false);
        SyncHandle {
            status: Arc::new(SourceStatus::new(name, kind, endpoints)),
            first_import: receiver,
            first_import_done: Arc::new(sender),
        }
    }

    /// Marks the first import complete (the adapter calls it once).
    pub fn first_import_done(&self) {
        self.status
            .update(|status| status.initial_import_done = true);
        self.first_import_done.send_replace(true);
    }

    /// Waits until the first import completed, at most `within`; whether it did. Ferry
    /// waits for it before serving, so a restart never answers without the legacy
    /// instances it knew.
    pub async fn wait_first_import(&self, within: Duration) -> bool {
        let mut receiver = self.first_import.clone();
        tokio::time::timeout(within, receiver.wait_for(|done| *done))
            .await
            .is_ok_and(|waited| waited.is_ok())
    }
}
