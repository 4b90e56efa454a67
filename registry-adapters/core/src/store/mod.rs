//! Where registry changes go before they are published.
//!
//! The registry keeps the live model in memory and funnels every change through one
//! `Store::write` call before any view can see it. The embedded default (`MemoryStore`) is
//! that in-memory model and nothing more, which is what Eureka itself does: instances are
//! leases that clients re-create by re-registering. A distributed backend (etcd) implements
//! the same trait, so views and the registry's rules do not change when it slots in.

mod memory;

pub use memory::MemoryStore;

use crate::model::Instance;

/// One change as a backend has to record it.
#[derive(Debug)]
pub enum Change<'a> {
    /// The instance now has exactly this record.
    Put(&'a Instance),
    /// The instance is gone.
    Remove { app: &'a str, id: &'a str },
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
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
    fn write(&self, change: &Change<'_>) -> Result<(), StoreError>;
}
