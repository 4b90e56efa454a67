//! Counts of registry fetches: full (`GET apps`) and delta (`GET apps/delta`), whatever
//! their format and whether the answer came from the cache.
//!
//! A Eureka client fetches the full registry once at start and then only deltas, unless
//! its hashcode check fails; a client that falls back to full fetches cycle after cycle
//! doubles the registry's traffic. These counts let an operator (and the Java tests) see
//! that from the server's side. They are plain atomics so that this crate needs no metrics
//! library: the binary reads them at scrape time and exports them.

use std::sync::atomic::{AtomicU64, Ordering};

use super::cache::Doc;

/// Registry fetches answered since start, by kind.
#[derive(Debug, Default)]
pub struct FetchCounts {
    /// `GET {P}apps` and `GET {P}apps/`.
    full: AtomicU64,
    /// `GET {P}apps/delta`.
    delta: AtomicU64,
}

impl FetchCounts {
    /// Full-registry fetches so far.
    pub fn full(&self) -> u64 {
        self.full.load(Ordering::Relaxed)
    }

    /// Delta fetches so far.
    pub fn delta(&self) -> u64 {
        self.delta.load(Ordering::Relaxed)
    }

    pub(crate) fn count(&self, doc: Doc) {
        let counter = match doc {
            Doc::Full => &self.full,
            Doc::Delta => &self.delta,
        };
        // Relaxed: each counter is read on its own, and only its total matters.
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
