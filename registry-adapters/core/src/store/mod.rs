//! Where registry changes go before they are published.
//!
//! The registry keeps the live model in memory and funnels every change through one
//! `Store::write` call before any view can see it. The embedded default (`MemoryStore`) is
//! that in-memory model and nothing more, which is what Eureka itself does: instances are
//! leases that clients re-create by re-registering. `DurableStore` (what `ferry` runs)
//! also keeps agent registrations in a file under the data directory, as a Consul agent
//! keeps the services registered through its API, and the copies imported from a legacy
//! registry (so a Ferry restarted while that registry is down still lists them), and hands
//! them back at start
//! (`Store::load`, then `Registry::restore`). A distributed backend (etcd) implements the
//! same trait with the same record encoding (`record`), so views and the registry's rules
//! do not change when it slots in.

mod durable;
pub mod feed;
mod memory;
pub mod record;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use durable::DurableStore;
pub use feed::{Feed, Replicated, Revised};
pub use memory::MemoryStore;

use std::time::Duration;

use crate::model::Instance;

/// How long a client told that a write needs the store should wait before retrying: a few
/// seconds covers an etcd leader election or a failover to another endpoint.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Whether this node's reads are current, as views report it to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// The store is this node's own: what it reads is all there is.
    Local,
    /// A copy of a shared store, which last answered `last_contact` ago; `current` is false
    /// once the copy may miss other nodes' changes.
    Shared {
        current: bool,
        last_contact: Duration,
    },
}

impl Freshness {
    pub fn is_current(&self) -> bool {
        match self {
            Freshness::Local => true,
            Freshness::Shared { current, .. } => *current,
        }
    }

    /// Since the shared store last answered; `None` for a local store.
    pub fn last_contact(&self) -> Option<Duration> {
        match self {
            Freshness::Local => None,
            Freshness::Shared { last_contact, .. } => Some(*last_contact),
        }
    }
}

/// One change as a backend has to record it.
#[derive(Debug)]
pub enum Change<'a> {
    /// The instance now has exactly this record.
    Put(&'a Instance),
    /// The instance now has this record and belongs to this node from now on: a client
    /// whose own node is gone renews here (a shared store only; others treat it as `Put`).
    Adopt(&'a Instance),
    /// The instance is gone.
    Remove { app: &'a str, id: &'a str },
}

/// Where a recorded change stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// Recorded by this node alone; the registry stamps it with its own index. From a
    /// shared store: accepted here while the store is out of reach, written to it later.
    Local,
    /// Recorded by a shared store at this revision, which stamps it on every node.
    At(u64),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another node changed the record first; the write did not happen.
    #[error("the record changed in the {backend} store meanwhile")]
    Conflict { backend: &'static str },
    #[error("the {backend} store is unavailable")]
    Unavailable {
        backend: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

pub trait Store: Send + Sync + 'static {
    /// A short name for logs and metrics (`memory`, `etcd`).
    fn name(&self) -> &'static str;

    /// Records one change. An error means the change did not happen: the registry leaves
    /// its model as it was and the view answers 503.
    fn write(&self, change: &Change<'_>) -> Result<Written, StoreError>;

    /// The instances this store kept, for `Registry::restore` to register again at start.
    fn load(&self) -> Result<Vec<Instance>, StoreError>;

    /// Makes every change recorded so far durable. A backend may record imported copies
    /// (which no client waits on, and which the next import brings back anyway) without
    /// syncing each one; the sync adapter calls this once per import cycle.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// For a store shared by several nodes: the changes every node makes, in the store's
    /// order, which the registry applies (`Registry::apply_feed`).
    fn feed(&self) -> Option<&Feed> {
        None
    }

    /// Whether this node keeps the instance: renews its lease, evicts it, runs its checks.
    /// With a shared store another node may; with a local one, every instance is this
    /// node's.
    fn owned_here(&self, _app: &str, _id: &str) -> bool {
        true
    }

    /// The node that keeps the instance when another one does; `None` when this node does,
    /// or when no node does (an imported copy), or with a local store.
    fn keeper(&self, _app: &str, _id: &str) -> Option<String> {
        None
    }

    /// Whether reads from this node's registry are current. A local store always is; a
    /// shared one is as current as its feed.
    fn freshness(&self) -> Freshness {
        Freshness::Local
    }
}

/// A fresh directory under the system's temporary one, for tests that open files.
#[cfg(test)]
pub(crate) fn scratch_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ferry-store-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("the temporary directory is writable");
    dir
}
