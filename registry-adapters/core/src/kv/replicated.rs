//! Applying a shared store's KV changes: each node's `KvStore` as a copy of the store, fed
//! by its watch (`KvBackend::feed`), as the registry is (`registry::replicated`).
//!
//! Changes are applied in the store's order and stamped with its revision, so every node
//! shows the same create and modify indexes and the same result index for the same read. A
//! node's own write is applied by the writer once every older change has been
//! (`catch_up`); the rest by the task `run_feed` drives. Applying is idempotent by
//! revision: a change at or below what a key (or its tombstone) already shows is skipped.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::{Behavior, Guard, KvChange, KvEntry, KvState, KvStore};
use crate::model::Millis;
use crate::store::{Feed, StoreError};

/// How long a writer waits for the store's watch to bring its own write back before
/// applying it anyway; reached only when the watch is broken.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a writer whose write was refused looks for the change that refused it.
const REFUSAL_POLL: Duration = Duration::from_millis(2);

/// How often letting go of an ended session's locks is tried again while some remain.
const ORPHAN_RETRY: Duration = Duration::from_secs(1);

impl KvStore {
    pub(super) fn feed(&self) -> Option<&Feed<KvChange>> {
        self.backend.as_ref().and_then(|backend| backend.feed())
    }

    /// Applies every change the feed holds; true when a session that held locks ended, so
    /// that they need letting go (`release_orphaned_locks`). Called by `run_feed`, and once
    /// at start after the backend pushed its first full read.
    pub fn apply_feed(&self) -> bool {
        let Some(feed) = self.feed() else {
            return false;
        };
        let mut state = self.state.write();
        // Taken under the lock: a writer holding it takes the older changes itself.
        let changes = feed.take_all();
        let now = self.clock.now();
        let mut orphans = false;
        for change in changes {
            orphans |= self.apply_change(&mut state, change, now);
        }
        orphans
    }

    /// Applies the feed's changes as they arrive, and lets go of the locks of sessions
    /// that ended elsewhere, for as long as the store lives. Letting go is tried again
    /// every `ORPHAN_RETRY` while some remain (etcd out of reach, a compare lost to a write
    /// this copy had not seen yet).
    pub async fn run_feed(self: Arc<KvStore>) {
        let Some(feed) = self.feed() else {
            return;
        };
        let mut orphans = false;
        loop {
            if orphans {
                tokio::select! {
                    _ = feed.ready() => {}
                    _ = tokio::time::sleep(ORPHAN_RETRY) => {}
                }
            } else {
                feed.ready().await;
            }
            orphans |= self.apply_feed();
            if orphans {
                // Blocking etcd calls: off the server's threads.
                let store = self.clone();
                match tokio::task::spawn_blocking(move || store.release_orphaned_locks()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "cannot release the locks of an ended session yet")
                    }
                    Err(error) => tracing::warn!(%error, "releasing orphaned locks failed"),
                }
                orphans = self.holds_orphans();
            }
        }
    }

    /// Whether a key is still locked by a session this copy no longer holds.
    fn holds_orphans(&self) -> bool {
        orphaned(&self.state.read())
    }

    /// Brings the copy up to just below `revision` (a write's own), so that write is
    /// applied after every older change. Nothing without a shared store.
    pub(super) fn catch_up(&self, state: &mut KvState, revision: u64, now: Millis) {
        self.catch_up_below(state, revision, revision, now);
    }

    /// Applies everything up to and with `revision` (where a shared store refused a write:
    /// the backend has asked its watch to confirm it is current, as no event may follow).
    pub(super) fn catch_up_through(&self, state: &mut KvState, revision: u64, now: Millis) {
        self.catch_up_below(state, revision, revision.saturating_add(1), now);
    }

    fn catch_up_below(&self, state: &mut KvState, delivered: u64, below: u64, now: Millis) {
        let Some(feed) = self.feed() else {
            return;
        };
        let revision = delivered;
        if !feed.wait_delivered(revision, CATCH_UP_TIMEOUT) {
            tracing::warn!(
                revision,
                delivered = feed.delivered_revision(),
                "the store's watch has not brought back a KV write; applying it ahead of \
                 changes not yet seen"
            );
        }
        for change in feed.take_below(below) {
            self.apply_change(state, change, now);
        }
    }

    /// Applies everything up to `revision` (a client's `cas` index, which it may have read
    /// on a node further ahead than this one), waiting briefly for the watch to bring it.
    pub(super) fn catch_up_to(&self, revision: u64) {
        let Some(feed) = self.feed() else {
            return;
        };
        if feed.delivered_revision() < revision {
            feed.wait_delivered(revision, CATCH_UP_TIMEOUT);
        }
        let mut state = self.state.write();
        let now = self.clock.now();
        for change in feed.take_below(revision.saturating_add(1)) {
            self.apply_change(&mut state, change, now);
        }
    }

    /// After a shared store refused a write, waits until this copy shows why (a guarded key
    /// changed, or the session is gone), so the write is decided again on what the store
    /// holds. Catching up to the refusal's revision is not always enough: etcd may confirm
    /// its watch is current before it has sent the events (etcd#15220).
    pub(super) fn await_refusal(&self, guard: &Guard) {
        let Some(feed) = self.feed() else {
            return;
        };
        let deadline = std::time::Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            {
                let mut state = self.state.write();
                let now = self.clock.now();
                for change in feed.take_all() {
                    self.apply_change(&mut state, change, now);
                }
                let moved = guard.expected.iter().any(|(key, expected)| {
                    state.entries.get(key).map_or(0, |entry| entry.modify_index) != *expected
                });
                let session_gone = guard
                    .session
                    .as_deref()
                    .is_some_and(|session| state.sessions.get(session).is_none());
                if moved || session_gone {
                    return;
                }
            }
            if std::time::Instant::now() >= deadline {
                tracing::warn!(
                    "the store refused a KV write for a change its watch has not brought"
                );
                return;
            }
            std::thread::sleep(REFUSAL_POLL);
        }
    }

    /// Applies everything up to the store's present revision.
    pub(super) fn catch_up_to_store(&self) -> Result<(), StoreError> {
        if let Some(backend) = &self.backend {
            let revision = backend.revision()?;
            self.catch_up_to(revision);
        }
        Ok(())
    }

    fn apply_change(&self, state: &mut KvState, change: KvChange, now: Millis) -> bool {
        let mut orphans = false;
        let revision = match change {
            KvChange::Put(entry) => {
                let revision = entry.modify_index;
                apply_put(state, entry);
                state.last_index = state.last_index.max(revision);
                revision
            }
            KvChange::Remove { key, revision } => {
                apply_remove(state, &key, revision, now);
                state.last_index = state.last_index.max(revision);
                revision
            }
            KvChange::SessionPut { session, revision } => {
                state.sessions.arrived(session, now);
                revision
            }
            KvChange::SessionRemove { id, revision } => {
                orphans = session_ended(state, &id, now).is_some() && holds_locks(state, &id);
                revision
            }
            KvChange::Resync {
                entries,
                sessions,
                revision,
            } => {
                let kept: HashSet<&str> = entries.iter().map(|entry| entry.key.as_str()).collect();
                let gone: Vec<String> = state
                    .entries
                    .keys()
                    .filter(|key| !kept.contains(key.as_str()))
                    .cloned()
                    .collect();
                for key in gone {
                    apply_remove(state, &key, revision, now);
                }
                for entry in entries {
                    state.last_index = state.last_index.max(entry.modify_index);
                    let differs = state
                        .entries
                        .get(&entry.key)
                        .is_none_or(|held| held.modify_index != entry.modify_index);
                    if differs {
                        state.tombstones.revive(&entry.key);
                        state.entries.insert(entry.key.clone(), entry);
                    }
                }
                let live: HashSet<String> =
                    sessions.iter().map(|session| session.id.clone()).collect();
                for id in state.sessions.ids() {
                    if !live.contains(&id) && session_ended(state, &id, now).is_some() {
                        orphans |= holds_locks(state, &id);
                    }
                }
                for session in sessions {
                    state.sessions.arrived(session, now);
                }
                // Locks whose session this copy never saw (it ended while this node was
                // away) are orphans too.
                orphans |= orphaned(state);
                revision
            }
        };
        self.index.advance(revision);
        orphans
    }
}

fn orphaned(state: &KvState) -> bool {
    state.entries.values().any(|entry| {
        entry
            .session
            .as_deref()
            .is_some_and(|holder| state.sessions.get(holder).is_none())
    })
}

fn holds_locks(state: &KvState, id: &str) -> bool {
    state
        .entries
        .values()
        .any(|entry| entry.session.as_deref() == Some(id))
}

/// Keeps `entry` unless this copy already shows the key at or past its revision (written
/// again, or deleted since).
pub(super) fn apply_put(state: &mut KvState, entry: KvEntry) {
    let revision = entry.modify_index;
    let newer_held = state
        .entries
        .get(&entry.key)
        .is_some_and(|held| held.modify_index >= revision);
    let deleted_since = state
        .tombstones
        .buried_at(&entry.key)
        .is_some_and(|deleted| deleted >= revision);
    if newer_held || deleted_since {
        return;
    }
    state.tombstones.revive(&entry.key);
    state.entries.insert(entry.key.clone(), entry);
}

/// Deletes `key` at `revision`, leaving a tombstone, unless it was written since.
pub(super) fn apply_remove(state: &mut KvState, key: &str, revision: u64, now: Millis) {
    let held = state.entries.get(key).map(|held| held.modify_index);
    if held.is_some_and(|held| held < revision) {
        state.entries.remove(key);
        state.tombstones.bury(key.to_owned(), revision, now);
    }
}

/// Forgets a session, starts the lock-delay of every key it holds and remembers how to let
/// go of them; its behaviour, or `None` if this copy did not hold it.
pub(super) fn session_ended(state: &mut KvState, id: &str, now: Millis) -> Option<Behavior> {
    let session = state.sessions.remove(id)?;
    let until = now + session.lock_delay.as_millis() as Millis;
    let held: Vec<String> = state
        .entries
        .values()
        .filter(|entry| entry.session.as_deref() == Some(id))
        .map(|entry| entry.key.clone())
        .collect();
    for key in held {
        state.lock_delays.insert(key, until);
    }
    state.ended.insert(id.to_owned(), session.behavior);
    Some(session.behavior)
}
