//! The bounded log of recent changes that Eureka deltas are cut from: each change with the
//! record as it was right after it, kept for the retention window (180 s by default) and
//! never more than a fixed number of entries, so a burst of registrations cannot grow
//! memory without bound.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use crate::model::{Instance, Millis};

#[derive(Debug)]
pub struct RecentChange {
    pub at: Millis,
    pub instance: Arc<Instance>,
}

#[derive(Debug)]
pub struct RecentChanges {
    entries: VecDeque<RecentChange>,
    retention_ms: Millis,
    max_entries: usize,
}

impl RecentChanges {
    pub fn new(retention_ms: Millis, max_entries: usize) -> RecentChanges {
        RecentChanges {
            entries: VecDeque::new(),
            retention_ms,
            max_entries: max_entries.max(1),
        }
    }

    pub fn push(&mut self, change: RecentChange) {
        let now = change.at;
        self.entries.push_back(change);
        self.purge(now);
    }

    pub fn purge(&mut self, now: Millis) {
        while let Some(front) = self.entries.front() {
            if self.entries.len() > self.max_entries || front.at < now - self.retention_ms {
                self.entries.pop_front();
            } else {
                break;
            }
        }
    }

    /// The latest change of every instance that changed within the window, oldest first
    /// (in the order those latest changes were made), as Netflix's server walks its queue
    /// of recent changes in insertion order.
    pub fn latest_per_instance(&self, now: Millis) -> Vec<&RecentChange> {
        let mut seen: HashSet<(&str, &str)> = HashSet::new();
        // Walked from the newest so that the first entry met per instance is its latest.
        let mut latest: Vec<&RecentChange> = self
            .entries
            .iter()
            .rev()
            .take_while(|change| change.at >= now - self.retention_ms)
            .filter(|change| {
                seen.insert((change.instance.app.as_str(), change.instance.id.as_str()))
            })
            .collect();
        latest.reverse();
        latest
    }
}
