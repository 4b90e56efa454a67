//! A store for the views' tests of what clients see when the shared store is out of reach:
//! its writes fail with `StoreError::Unavailable` and its reads can be marked stale, on
//! demand. Built for this crate's tests and, with the `test-util` feature, for other crates'.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::{Change, Freshness, Store, StoreError, Written};
use crate::model::Instance;

/// Accepts every write, as the memory store does, until `set_reachable(false)`.
#[derive(Debug)]
pub struct UnreachableStore {
    reachable: AtomicBool,
    freshness: Mutex<Freshness>,
}

impl Default for UnreachableStore {
    fn default() -> Self {
        UnreachableStore {
            reachable: AtomicBool::new(true),
            freshness: Mutex::new(Freshness::Shared {
                current: true,
                last_contact: Duration::ZERO,
            }),
        }
    }
}

impl UnreachableStore {
    pub fn set_reachable(&self, reachable: bool) {
        self.reachable.store(reachable, Ordering::Release);
    }

    pub fn set_freshness(&self, freshness: Freshness) {
        *self.freshness.lock() = freshness;
    }
}

#[derive(Debug, thiserror::Error)]
#[error("connection refused")]
struct Refused;

impl Store for UnreachableStore {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn write(&self, _change: &Change<'_>) -> Result<Written, StoreError> {
        if self.reachable.load(Ordering::Acquire) {
            Ok(Written::Local)
        } else {
            Err(StoreError::Unavailable {
                backend: "etcd",
                source: Box::new(Refused),
            })
        }
    }

    fn load(&self) -> Result<Vec<Instance>, StoreError> {
        Ok(Vec::new())
    }

    fn freshness(&self) -> Freshness {
        *self.freshness.lock()
    }
}
