//! The response cache for the two big documents, the full registry and the delta.
//!
//! A key names the registry's generation it was rendered at (`Registry::generation`, which
//! moves with every change of the listings, the change index included), so a change makes
//! every older entry unreachable at once and a read never serves data older than the last
//! completed write.
//! Concurrent misses for one key wait for a single render (moka's `get_with`), so a burst
//! of fetches serializes the registry once. Heartbeats do not change the index, so the
//! lease timestamps inside a cached document may lag by up to the time-to-live; clients
//! never read them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use moka::sync::Cache;

use super::negotiate::Format;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Doc {
    Full,
    Delta,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DocKey {
    pub generation: u64,
    pub doc: Doc,
    pub format: Format,
    pub gzip: bool,
}

#[derive(Debug)]
pub struct ResponseCache {
    entries: Cache<DocKey, Bytes>,
    /// The highest generation a read has asked for; older entries are dropped when it moves.
    newest_generation: AtomicU64,
}

impl ResponseCache {
    pub fn new(max_bytes: u64, time_to_live: Duration) -> ResponseCache {
        ResponseCache {
            entries: Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_, value: &Bytes| u32::try_from(value.len()).unwrap_or(u32::MAX))
                .time_to_live(time_to_live)
                .build(),
            newest_generation: AtomicU64::new(0),
        }
    }

    pub fn get_or_render(&self, key: DocKey, render: impl FnOnce() -> Bytes) -> Bytes {
        if self
            .newest_generation
            .fetch_max(key.generation, Ordering::AcqRel)
            < key.generation
        {
            self.entries.invalidate_all();
        }
        self.entries.get_with(key, render)
    }
}
