//! Applying a shared store's changes: the registry as a copy of the store, fed by its
//! watch (`store::Feed`).
//!
//! Every node applies the same changes in the store's order and stamps each with the
//! store's revision, so every view on every node reports the same index for the same
//! state. A node's own write is applied by the writer itself, once every older change has
//! been (`catch_up`); all other changes are applied by the task `run_feed` drives. Both
//! take the registry's write lock first, so changes are applied one at a time, in order.
//! Applying is idempotent by revision: a change at or below what a record already shows is
//! skipped. Each change applied here records its event (a registration or status change on
//! another node, a removal), so every node's event log shows the whole registry's; the
//! first full read at start records none: it is the state the node found, not news.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::events::Removal;
use super::{record_removal, same_catalog_entry, stamp, Registry, State};
use crate::model::{Instance, Millis, Status};
use crate::store::Replicated;

/// How long a writer waits for the store's watch to bring its own write back before
/// applying it anyway (and logging that order may have suffered). Far above the watch's
/// few milliseconds; reached only when the watch is broken.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(2);

impl Registry {
    /// Applies every change the store's feed holds. Called by `run_feed`, and once at
    /// start, after the store has pushed its first full read.
    pub fn apply_feed(&self) {
        let Some(feed) = self.store.feed() else {
            return;
        };
        let mut state = self.state.write();
        // Taken under the lock: a writer holding it takes the older changes itself.
        let changes = feed.take_all();
        let now = self.now();
        for change in changes {
            self.apply_replicated(&mut state, change, now);
        }
    }

    /// Applies the feed's changes as they arrive, for as long as the registry lives.
    pub async fn run_feed(self: Arc<Registry>) {
        if self.store.feed().is_none() {
            return;
        }
        loop {
            // A `Notify` keeps one permit, so a change pushed between two runs is not lost.
            if let Some(feed) = self.store.feed() {
                feed.ready().await;
            }
            self.apply_feed();
        }
    }

    /// The revision of the last change applied from the store (0 without a shared store).
    pub fn applied_revision(&self) -> u64 {
        match self.store.feed() {
            Some(_) => self.index.published(),
            None => 0,
        }
    }

    /// Brings the registry up to just below `revision`, the one its caller's own write got,
    /// so that write is applied after every older change.
    pub(super) fn catch_up(&self, state: &mut State, revision: u64, now: Millis) {
        let Some(feed) = self.store.feed() else {
            return;
        };
        if !feed.wait_delivered(revision, CATCH_UP_TIMEOUT) {
            tracing::warn!(
                revision,
                delivered = feed.delivered_revision(),
                "the store's watch has not brought back a write; applying it ahead of changes \
                 not yet seen"
            );
        }
        for change in feed.take_below(revision) {
            self.apply_replicated(state, change, now);
        }
    }

    fn apply_replicated(&self, state: &mut State, change: Replicated, now: Millis) {
        match change {
            Replicated::Put {
                instance,
                created,
                revision,
            } => self.apply_put(state, *instance, created, revision, now, true),
            Replicated::Remove {
                app,
                id,
                revision,
                keeper_left,
            } => {
                let removal = if keeper_left {
                    Removal::Evicted(
                        "its node left: the node's lease in the store ended".to_owned(),
                    )
                } else {
                    Removal::Deregistered("removed on another node".to_owned())
                };
                self.apply_remove(state, &app, &id, revision, now, removal)
            }
            Replicated::Resync {
                instances,
                revision,
            } => self.apply_resync(state, instances, revision, now),
        }
    }

    fn apply_put(
        &self,
        state: &mut State,
        mut instance: Instance,
        created: u64,
        revision: u64,
        now: Millis,
        record_event: bool,
    ) {
        let previous = state
            .listings
            .lookup(&instance.app, &instance.id)
            .map(|entry| entry.instance.clone());
        if previous
            .as_ref()
            .is_some_and(|stored| stored.modify_index >= revision)
        {
            return;
        }
        stamp(&mut instance, previous.as_deref(), revision);
        if previous.is_none() {
            instance.create_index = created.min(revision).max(1);
        }
        let catalog_changed = previous
            .as_ref()
            .is_none_or(|stored| !same_catalog_entry(stored, &instance));
        // An override set or removed on another node holds here too: the keeper applies
        // it at the next heartbeat.
        if instance.overridden_status == Status::Unknown {
            state.leases.forget(&instance.id);
        } else {
            state
                .leases
                .set_override(&instance.id, instance.overridden_status);
        }
        state.agents.track(previous.as_deref(), &instance);
        if record_event {
            let origin = || {
                self.store
                    .keeper(&instance.app, &instance.id)
                    .map(|node| format!("on {node}"))
            };
            state
                .events
                .record_put(now, previous.as_deref(), &instance, origin);
        }
        let instance = Arc::new(instance);
        state
            .listings
            .insert(instance.clone(), revision, catalog_changed);
        state.listings.record(now, instance);
        self.index.advance(revision);
    }

    fn apply_remove(
        &self,
        state: &mut State,
        app: &str,
        id: &str,
        revision: u64,
        now: Millis,
        removal: Removal,
    ) {
        let stale = state
            .listings
            .lookup(app, id)
            .is_none_or(|entry| entry.instance.modify_index >= revision);
        if !stale {
            if let Some(entry) = state.listings.take(app, id, revision) {
                state.agents.forget(&entry.instance);
                state.leases.forget(id);
                removal.record(&mut state.events, now, &entry.instance);
                record_removal(state, entry.current(), revision, now);
            }
        }
        self.index.advance(revision);
    }

    /// Makes the registry what the store holds at `revision`: every record that differs is
    /// applied at `revision` (a harmless wake-up for readers), every record the store no
    /// longer holds is removed, and a record new here comes in at its own revision.
    fn apply_resync(
        &self,
        state: &mut State,
        instances: Vec<(Instance, u64, u64)>,
        revision: u64,
        now: Millis,
    ) {
        // The first read at start: what the node found, not news.
        let record_events = state.listings.entries().next().is_some();
        let kept: HashSet<(String, String)> = instances
            .iter()
            .map(|(instance, _, _)| (instance.app.clone(), instance.id.clone()))
            .collect();
        let gone: Vec<(String, String)> = state
            .listings
            .entries()
            .map(|entry| (entry.instance.app.clone(), entry.instance.id.clone()))
            .filter(|key| !kept.contains(key))
            .collect();
        for (app, id) in gone {
            if let Some(entry) = state.listings.take(&app, &id, revision) {
                state.agents.forget(&entry.instance);
                state.leases.forget(&id);
                Removal::Deregistered("gone from the shared store".to_owned()).record(
                    &mut state.events,
                    now,
                    &entry.instance,
                );
                record_removal(state, entry.current(), revision, now);
            }
        }
        for (instance, created, modified) in instances {
            let held = state
                .listings
                .lookup(&instance.app, &instance.id)
                .map(|entry| entry.instance.modify_index);
            match held {
                // New here (every record at a start): at its own revision, as every other
                // node has it.
                None => self.apply_put(state, instance, created, modified, now, record_events),
                Some(held) if held != modified => self.apply_put(
                    state,
                    instance,
                    created,
                    revision.max(held + 1),
                    now,
                    record_events,
                ),
                Some(_) => {}
            }
        }
        self.index.advance(revision);
    }
}
