//! The changes a shared store (etcd) hands back to every node, in the store's order.
//!
//! With a shared store, a node's registry is a copy of the store fed by one watch (the
//! Kubernetes watch-cache pattern): every node applies the same changes in the same order,
//! stamped with the store's revision, so Eureka's `versions__delta` and Consul's
//! `X-Consul-Index` agree on every node. The store's watch task `push`es each change and
//! then says how far it has `delivered`; the registry applies them (`Registry::apply_feed`).
//!
//! A node's own write is stamped with the revision the store gave it and applied at once,
//! but only after every change below that revision has been applied first
//! (`take_below`), so no reader ever sees revision R and then a change older than R.
//! Applying is idempotent by revision, so the write's own change, when the watch brings
//! it back, is skipped.

use std::collections::VecDeque;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::model::Instance;

/// One change of a registration, as the store recorded it.
#[derive(Debug)]
pub enum Replicated {
    Put {
        instance: Box<Instance>,
        /// The revision the record was first created at (Consul's `CreateIndex`).
        created: u64,
        revision: u64,
    },
    Remove {
        app: String,
        id: String,
        revision: u64,
        /// The store dropped it with its keeper node's lease (the node went away), rather
        /// than a node deleting it: what the event log calls an eviction.
        keeper_left: bool,
    },
    /// Everything the store holds now, at `revision`: after a start or after the store
    /// compacted past what the watch had seen. What the registry holds and this does not
    /// is gone.
    Resync {
        instances: Vec<(Instance, u64, u64)>,
        revision: u64,
    },
}

/// A change that carries the store revision it was made at; a `Feed` queues them in order.
pub trait Revised {
    fn revision(&self) -> u64;
}

impl Revised for Replicated {
    fn revision(&self) -> u64 {
        Replicated::revision(self)
    }
}

impl Replicated {
    pub fn revision(&self) -> u64 {
        match self {
            Replicated::Put { revision, .. }
            | Replicated::Remove { revision, .. }
            | Replicated::Resync { revision, .. } => *revision,
        }
    }
}

#[derive(Debug)]
struct Queue<C> {
    changes: VecDeque<C>,
    /// Every change at or below this revision has been pushed.
    delivered: u64,
}

/// The queue between the store's watch task and the registry (or, with `KvChange`, the
/// KV store).
#[derive(Debug)]
pub struct Feed<C = Replicated> {
    queue: Mutex<Queue<C>>,
    arrived: Condvar,
    /// Wakes the registry's apply task.
    ready: tokio::sync::Notify,
}

impl<C> Default for Feed<C> {
    fn default() -> Self {
        Feed {
            queue: Mutex::new(Queue {
                changes: VecDeque::new(),
                delivered: 0,
            }),
            arrived: Condvar::new(),
            ready: tokio::sync::Notify::new(),
        }
    }
}

impl<C: Revised> Feed<C> {
    /// Queues one change; changes must come in the store's order.
    pub fn push(&self, change: C) {
        let mut queue = self.queue.lock();
        let revision = change.revision();
        queue.changes.push_back(change);
        queue.delivered = queue.delivered.max(revision);
        drop(queue);
        self.arrived.notify_all();
        self.ready.notify_one();
    }

    /// Everything at or below `revision` has been pushed (a watch response or a progress
    /// notification said so).
    pub fn delivered(&self, revision: u64) {
        let mut queue = self.queue.lock();
        if revision > queue.delivered {
            queue.delivered = revision;
            drop(queue);
            self.arrived.notify_all();
        }
    }

    pub fn delivered_revision(&self) -> u64 {
        self.queue.lock().delivered
    }

    /// Waits (blocking the thread: the caller holds the registry's lock) until everything
    /// up to `revision` has been pushed. False when `timeout` passed first.
    pub fn wait_delivered(&self, revision: u64, timeout: Duration) -> bool {
        let mut queue = self.queue.lock();
        let deadline = std::time::Instant::now() + timeout;
        while queue.delivered < revision {
            if self.arrived.wait_until(&mut queue, deadline).timed_out() {
                return queue.delivered >= revision;
            }
        }
        true
    }

    /// Takes the queued changes below `revision`; the rest stay queued (the caller's own
    /// change at `revision` among them, which it applies itself and applying again skips).
    pub fn take_below(&self, revision: u64) -> Vec<C> {
        let mut queue = self.queue.lock();
        let mut taken = Vec::new();
        while queue
            .changes
            .front()
            .is_some_and(|change| change.revision() < revision)
        {
            taken.extend(queue.changes.pop_front());
        }
        taken
    }

    /// Takes every queued change.
    pub fn take_all(&self) -> Vec<C> {
        self.queue.lock().changes.drain(..).collect()
    }

    /// Resolves when changes may be waiting.
    pub async fn ready(&self) {
        self.ready.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remove(revision: u64) -> Replicated {
        Replicated::Remove {
            app: "A".into(),
            id: "i".into(),
            revision,
            keeper_left: false,
        }
    }

    #[test]
    fn a_writer_takes_what_is_older_and_leaves_what_is_newer() {
        let feed: Feed = Feed::default();
        for revision in [3, 4, 5, 6] {
            feed.push(remove(revision));
        }
        let taken: Vec<u64> = feed.take_below(5).iter().map(|c| c.revision()).collect();
        assert_eq!(taken, vec![3, 4]);
        let rest: Vec<u64> = feed.take_all().iter().map(|c| c.revision()).collect();
        assert_eq!(
            rest,
            vec![5, 6],
            "the writer's own change stays, skipped when applied"
        );
    }

    #[test]
    fn waiting_for_a_revision_ends_when_it_is_delivered_or_times_out() {
        let feed: std::sync::Arc<Feed> = std::sync::Arc::new(Feed::default());
        assert!(!feed.wait_delivered(2, Duration::from_millis(20)));
        let pusher = feed.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            pusher.delivered(2);
        });
        assert!(feed.wait_delivered(2, Duration::from_secs(5)));
        thread.join().unwrap();
    }
}
