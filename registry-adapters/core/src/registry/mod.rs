//! The one registry: applications and their instances, server-side status overrides,
//! leases, the change index and the log of recent changes.
//!
//! Every protocol view calls these methods and keeps no state of its own. All writes take
//! the write lock, go through the `Store`, bump the change index once and append to the
//! recent-change log, in that order, so an index value always names a state that every
//! view agrees on. Heartbeats are the exception: they are the most frequent call by far,
//! change no published state, and so only take the read lock and store one atomic.
//!
//! `Registry` is one type under one lock, but its state and methods are split by job so
//! each part owns its own fields:
//! - `listings`: apps → instances, counts, the recent-change log, the result indexes, and
//!   every read of them;
//! - `leases`: Eureka registrations, heartbeats, overrides, self-preservation, eviction;
//! - `agent` and `checks`: registrations through an agent and their health checks;
//! - `routes`: the mesh routes views publish instead of instance addresses;
//! - `own_services`: Ferry's own Config Server, listed for clients that discover it;
//! - `imports`: copies of instances a legacy registry owns, and the instances Ferry owns,
//!   as the sync adapters read and write them;
//! - `events`: the bounded log of what happened, for people, written by the write core.
//!
//! The write path itself (`put` and `remove` below) is shared by all of them and lives
//! here, once: allocate an index → stamp → `Store::write` → event log → in-memory model →
//! recent-change log → publish. With a shared store (etcd) the store's revision is the
//! index, and the other nodes' changes arrive through its feed (`replicated`), applied in
//! the same order on every node.

mod agent;
mod checks;
pub mod events;
pub mod eviction;
mod imports;
mod leases;
mod listings;
mod own_services;
mod recent;
mod renewals;
mod replicated;
mod routes;
mod status_rules;

pub use agent::{AgentError, CheckUpdate};
pub use events::{Event, EventKind, EventPage, EventQuery};
pub use imports::{Imported, Owned};
pub use leases::{lease_or_default, RenewRequest, Renewed};
pub use listings::{CatalogService, Endpoint, Listing, RegisteredInstance};
pub use own_services::{config_server_id, ConfigServerListing};
pub use routes::{routed, Route};
pub use status_rules::effective_status;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::watch;

use crate::change_index::ChangeIndex;
use crate::clock::Clock;
use crate::model::{Action, Check, Instance, Millis};
use crate::store::{Change, Freshness, MemoryStore, Store, StoreError, Written};
use agent::Agents;
use events::{EventLog, Removal};
use leases::Leases;
use listings::Listings;
use renewals::RenewalMeter;
use routes::Routes;

/// Tunables of lease expiry and deltas; the defaults are Eureka's.
#[derive(Clone, Debug)]
pub struct RegistrySettings {
    /// Refuse to evict while fewer heartbeats arrive than expected (a network split looks
    /// like mass expiry; Eureka keeps the instances rather than empty the registry).
    pub self_preservation: bool,
    /// Share of expected renewals below which self-preservation stops eviction.
    pub renewal_threshold: f64,
    /// How long a change stays in the delta.
    pub delta_retention: Duration,
    /// Upper bound on the recent-change log, whatever the retention.
    pub max_recent_changes: usize,
    /// How many events the event log keeps (the oldest go first).
    pub event_capacity: usize,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            self_preservation: true,
            renewal_threshold: 0.85,
            delta_retention: Duration::from_secs(180),
            max_recent_changes: 200_000,
            event_capacity: events::DEFAULT_EVENT_CAPACITY,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("instance {id} of {app} is not registered")]
    NotRegistered { app: String, id: String },
    /// The client holds newer data than the registry (its `lastDirtyTimestamp` is larger):
    /// it must register again.
    #[error("instance {id} of {app} has newer data at the client")]
    ClientIsNewer { app: String, id: String },
    /// A peer replicated a heartbeat with older data than the registry holds; the peer
    /// gets the stored record back.
    #[error("instance {} of {} is newer here than at the peer", .stored.id, .stored.app)]
    PeerIsStale { stored: Box<Instance> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Everything under the registry's one lock, by job. A part's methods change only its own
/// fields; a change that spans parts is sequenced by the `Registry` method making it.
#[derive(Debug)]
struct State {
    listings: Listings,
    leases: Leases,
    agents: Agents,
    routes: Routes,
    /// What happened, for people; written only by the write core, under this lock.
    events: EventLog,
}

pub struct Registry {
    state: RwLock<State>,
    index: Arc<ChangeIndex>,
    /// Outside the lock: a heartbeat counts itself with one atomic add.
    renewals: RenewalMeter,
    /// Moves on every change of the listings (see `Registry::generation`).
    generation: Arc<std::sync::atomic::AtomicU64>,
    clock: Clock,
    store: Arc<dyn Store>,
    settings: RegistrySettings,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("index", &self.index.current())
            .field("store", &self.store.name())
            .finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(
            RegistrySettings::default(),
            Clock::System,
            Arc::new(MemoryStore),
        )
    }
}

impl Registry {
    pub fn new(settings: RegistrySettings, clock: Clock, store: Arc<dyn Store>) -> Registry {
        Registry::with_index(settings, clock, store, Arc::new(ChangeIndex::new(1)))
    }

    /// A registry that shares `index` with other stores (the KV store), so every change
    /// anywhere takes the next value of one index.
    pub fn with_index(
        settings: RegistrySettings,
        clock: Clock,
        store: Arc<dyn Store>,
        index: Arc<ChangeIndex>,
    ) -> Registry {
        let start = index.current();
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let retention = settings.delta_retention.as_millis() as Millis;
        Registry {
            state: RwLock::new(State {
                listings: Listings::new(
                    start,
                    retention,
                    settings.max_recent_changes,
                    generation.clone(),
                ),
                leases: Leases::default(),
                agents: Agents::default(),
                routes: Routes::default(),
                events: EventLog::new(settings.event_capacity),
            }),
            index,
            renewals: RenewalMeter::default(),
            generation,
            clock,
            store,
            settings,
        }
    }

    pub fn now(&self) -> Millis {
        self.clock.now()
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn settings(&self) -> &RegistrySettings {
        &self.settings
    }

    /// The current change index.
    pub fn index(&self) -> u64 {
        self.index.current()
    }

    /// Wakes on every change of the index.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.index.subscribe()
    }

    pub fn change_index(&self) -> &Arc<ChangeIndex> {
        &self.index
    }

    pub fn store_name(&self) -> &'static str {
        self.store.name()
    }

    /// Whether what this registry answers is current, whichever store it stands on.
    pub fn freshness(&self) -> Freshness {
        self.store.freshness()
    }

    /// The one way a record enters the registry.
    fn put(&self, state: &mut State, instance: Instance, now: Millis) -> Result<(), RegistryError> {
        self.put_published(state, instance, now, false)
    }

    /// `put`, for a record whose published address changed even if the record did not
    /// (`rerouted`: a mesh route was set or cleared), so catalog readers are woken.
    fn put_published(
        &self,
        state: &mut State,
        instance: Instance,
        now: Millis,
        rerouted: bool,
    ) -> Result<(), RegistryError> {
        self.write_record(state, instance, now, rerouted, false)
    }

    /// `put`, making this node the instance's keeper (a shared store only).
    fn adopt(
        &self,
        state: &mut State,
        instance: Instance,
        now: Millis,
    ) -> Result<(), RegistryError> {
        self.write_record(state, instance, now, false, true)
    }

    fn write_record(
        &self,
        state: &mut State,
        mut instance: Instance,
        now: Millis,
        rerouted: bool,
        adopt: bool,
    ) -> Result<(), RegistryError> {
        // A shared store stamps the change with its revision, known only once written.
        let shared = self.store.feed().is_some();
        let mut index = if shared { 0 } else { self.index.allocate()? };
        let mut previous = state
            .listings
            .lookup(&instance.app, &instance.id)
            .map(|entry| entry.instance.clone());
        stamp(&mut instance, previous.as_deref(), index);
        let change = if adopt {
            Change::Adopt(&instance)
        } else {
            Change::Put(&instance)
        };
        match self.store.write(&change)? {
            Written::At(revision) => {
                self.catch_up(state, revision, now);
                previous = state
                    .listings
                    .lookup(&instance.app, &instance.id)
                    .map(|entry| entry.instance.clone());
                index = revision;
                stamp(&mut instance, previous.as_deref(), index);
            }
            // Accepted here while the shared store is out of reach: it has no revision yet,
            // so it takes the last one applied (and its own when the store has it).
            Written::Local if shared => {
                index = self.index.published();
                stamp(&mut instance, previous.as_deref(), index);
            }
            Written::Local => {}
        }
        let catalog_changed = rerouted
            || previous
                .as_ref()
                .is_none_or(|stored| !same_catalog_entry(stored, &instance));
        state.agents.track(previous.as_deref(), &instance);
        state
            .events
            .record_put(now, previous.as_deref(), &instance, || None);
        let instance = Arc::new(instance);
        state
            .listings
            .insert(instance.clone(), index, catalog_changed);
        state.listings.record(now, instance);
        self.index.advance(index);
        Ok(())
    }

    /// The one way a record leaves the registry; it stays in the delta as DELETED, and the
    /// event log tells people why (`removal`).
    fn remove(
        &self,
        state: &mut State,
        app: &str,
        id: &str,
        now: Millis,
        removal: Removal,
    ) -> Result<(), RegistryError> {
        if state.listings.lookup(app, id).is_none() {
            return Err(not_registered(app, id));
        }
        let shared = self.store.feed().is_some();
        let mut index = if shared { 0 } else { self.index.allocate()? };
        match self.store.write(&Change::Remove { app, id })? {
            Written::At(revision) => {
                self.catch_up(state, revision, now);
                index = revision;
            }
            Written::Local if shared => index = self.index.published(),
            Written::Local => {}
        }
        // Another node's removal may have been applied while catching up.
        if let Some(entry) = state.listings.take(app, id, index) {
            state.agents.forget(&entry.instance);
            removal.record(&mut state.events, now, &entry.instance);
            record_removal(state, entry.current(), index, now);
        }
        self.index.advance(index);
        Ok(())
    }

    /// What happened, newest first, as `query` narrows it.
    pub fn events(&self, query: &EventQuery) -> EventPage {
        self.state.read().events.read(query)
    }

    /// How many events the log keeps: the most a read can return.
    pub fn event_capacity(&self) -> usize {
        self.state.read().events.capacity()
    }

    /// Whether this node keeps `instance` (renews, evicts, runs its checks); with a shared
    /// store, another node may.
    fn owned_here(&self, instance: &Instance) -> bool {
        self.store.owned_here(&instance.app, &instance.id)
    }
}

/// Records a removed instance in the recent-change log, as DELETED.
fn record_removal(state: &mut State, mut removed: Instance, index: u64, now: Millis) {
    removed.action = Action::Deleted;
    removed.last_updated = now;
    removed.lease.eviction = now;
    removed.modify_index = index;
    state.listings.record(now, Arc::new(removed));
}

/// Stamps a record and each of its checks with `index`: a new record or check is created
/// at it; a changed check is modified at it; an unchanged check keeps its stamps, so a
/// blocking read of checks does not wake for a write that left them alone.
fn stamp(instance: &mut Instance, previous: Option<&Instance>, index: u64) {
    instance.create_index = previous.map_or(index, |stored| stored.create_index);
    instance.modify_index = index;
    for check in &mut instance.checks {
        let known =
            previous.and_then(|stored| stored.checks.iter().find(|known| known.id == check.id));
        match known {
            Some(known) if same_check(known, check) => {
                check.create_index = known.create_index;
                check.modify_index = known.modify_index;
            }
            Some(known) => {
                check.create_index = known.create_index;
                check.modify_index = index;
            }
            None => {
                check.create_index = index;
                check.modify_index = index;
            }
        }
    }
}

/// Whether a record reads the same in the catalog: where it is reached and how it is
/// labelled. Its status and checks are not the catalog's (Consul keeps them in the checks
/// table), so a check result moves only the health and app indexes; an address or port
/// must move the catalog's too, or a watcher of the service list (Spring Cloud Consul's
/// catalog watch, which refreshes its load balancer on a new index) never learns of it.
fn same_catalog_entry(stored: &Instance, instance: &Instance) -> bool {
    stored.name == instance.name
        && stored.host_name == instance.host_name
        && stored.ip_addr == instance.ip_addr
        && stored.port == instance.port
        && stored.secure_port == instance.secure_port
        && stored.tags == instance.tags
        && stored.metadata == instance.metadata
        && stored.weights == instance.weights
        && stored.enable_tag_override == instance.enable_tag_override
        && stored.tagged_addresses == instance.tagged_addresses
}

/// Whether a check is unchanged apart from its index stamps.
fn same_check(known: &Check, check: &Check) -> bool {
    known.status == check.status
        && known.output == check.output
        && known.name == check.name
        && known.notes == check.notes
        && known.probe == check.probe
}

fn not_registered(app: &str, id: &str) -> RegistryError {
    RegistryError::NotRegistered {
        app: app.to_owned(),
        id: id.to_owned(),
    }
}

#[cfg(test)]
mod events_tests;
#[cfg(test)]
mod tests;
