//! The single, monotonically increasing change index shared by the registry and the KV store.
//!
//! Every write takes a unique value with `allocate`, stamps what it changed with it, and
//! `publish`es it once the change is visible. Eureka shows the index as `versions__delta`,
//! Consul as `X-Consul-Index`; blocking queries wait on the watch channel, so a waiter is
//! woken by the change itself, never by polling.
//!
//! The index must not go backwards across restarts, `kill -9` included. Persisting every
//! value would put a disk sync on every heartbeat-driven status change, so the index instead
//! reserves blocks: before handing out a value beyond the durable reservation it records a
//! new reservation (one sync per `RESERVATION_BLOCK` changes), and a restart begins above
//! the last reservation.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::store::StoreError;

/// How far ahead of the last handed-out value a reservation reaches.
pub const RESERVATION_BLOCK: u64 = 10_000;

/// Records a reservation durably; the index never hands out a value above the last
/// reservation that was recorded.
pub type Reserve = Box<dyn Fn(u64) -> Result<(), StoreError> + Send + Sync>;

pub struct ChangeIndex {
    /// The last value handed out.
    allocated: AtomicU64,
    /// The highest value that may be handed out without a new reservation.
    reserved: AtomicU64,
    reserve: Mutex<Option<Reserve>>,
    /// The highest published value; waiters subscribe to it.
    published: watch::Sender<u64>,
}

impl std::fmt::Debug for ChangeIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeIndex")
            .field("allocated", &self.allocated.load(Ordering::Relaxed))
            .field("reserved", &self.reserved.load(Ordering::Relaxed))
            .finish()
    }
}

impl ChangeIndex {
    /// An index that lives in memory only, starting at `start` (at least 1: Consul treats
    /// index 0 as "no index").
    pub fn new(start: u64) -> ChangeIndex {
        let start = start.max(1);
        let (published, _) = watch::channel(start);
        ChangeIndex {
            allocated: AtomicU64::new(start),
            reserved: AtomicU64::new(u64::MAX),
            reserve: Mutex::new(None),
            published,
        }
    }

    /// An index that continues above `last_reservation` (read back from durable storage)
    /// and records new reservations with `reserve`.
    pub fn durable(last_reservation: u64, reserve: Reserve) -> ChangeIndex {
        let index = ChangeIndex::new(last_reservation.saturating_add(1));
        index.reserved.store(0, Ordering::Relaxed);
        *index.reserve.lock() = Some(reserve);
        index
    }

    /// The last value handed out.
    pub fn current(&self) -> u64 {
        self.allocated.load(Ordering::Acquire)
    }

    /// The highest value whose change is visible.
    pub fn published(&self) -> u64 {
        *self.published.borrow()
    }

    /// A fresh value for one write. Fails only when a needed reservation could not be
    /// recorded; the write must then not happen.
    pub fn allocate(&self) -> Result<u64, StoreError> {
        let mut reservation = None;
        if self.allocated.load(Ordering::Acquire) + 1 > self.reserved.load(Ordering::Acquire) {
            reservation = Some(self.reserve.lock());
            let guard = reservation.as_ref().expect("just set");
            let next = self.allocated.load(Ordering::Acquire) + 1;
            if next > self.reserved.load(Ordering::Acquire) {
                let block = next + RESERVATION_BLOCK;
                if let Some(reserve) = guard.as_ref() {
                    reserve(block)?;
                }
                self.reserved.store(block, Ordering::Release);
            }
        }
        let value = self.allocated.fetch_add(1, Ordering::AcqRel) + 1;
        drop(reservation);
        Ok(value)
    }

    /// Announces that the change stamped `value` is visible; wakes every waiter.
    pub fn publish(&self, value: u64) {
        self.published.send_if_modified(|published| {
            if value > *published {
                *published = value;
                true
            } else {
                false
            }
        });
    }

    /// Publishes a value that was not handed out here (a shared store's revision), and
    /// hands out only values above it from now on.
    pub fn advance(&self, value: u64) {
        self.allocated.fetch_max(value, Ordering::AcqRel);
        self.publish(value);
    }

    /// A receiver that sees every later publication.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn values_are_unique_and_increasing() {
        let index = ChangeIndex::new(1);
        let first = index.allocate().unwrap();
        let second = index.allocate().unwrap();
        assert!(second > first && first > 1);
    }

    #[test]
    fn a_restart_continues_above_the_last_reservation() {
        let recorded = Arc::new(AtomicU64::new(0));
        let sink = recorded.clone();
        let index = ChangeIndex::durable(
            0,
            Box::new(move |block| {
                sink.store(block, Ordering::SeqCst);
                Ok(())
            }),
        );
        let mut last = 0;
        for _ in 0..(RESERVATION_BLOCK + 5) {
            last = index.allocate().unwrap();
        }
        let reservation = recorded.load(Ordering::SeqCst);
        assert!(reservation >= last, "every handed-out value is covered");
        let restarted = ChangeIndex::durable(reservation, Box::new(|_| Ok(())));
        assert!(restarted.allocate().unwrap() > last);
    }

    #[test]
    fn a_failed_reservation_hands_out_nothing() {
        let index = ChangeIndex::durable(
            5,
            Box::new(|_| {
                Err(StoreError::Unavailable {
                    backend: "test",
                    source: "disk full".into(),
                })
            }),
        );
        let before = index.current();
        assert!(index.allocate().is_err());
        assert_eq!(index.current(), before);
    }
}
