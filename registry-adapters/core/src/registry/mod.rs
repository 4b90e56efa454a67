//! The one registry: applications and their instances, server-side status overrides,
//! leases, the change index and the log of recent changes.
//!
//! Every protocol view calls these methods and keeps no state of its own. All writes take
//! the write lock, go through the `Store`, bump the change index once and append to the
//! recent-change log, in that order, so an index value always names a state that every
//! view agrees on. Heartbeats are the exception: they are the most frequent call by far,
//! change no published state, and so only take the read lock and store one atomic.

mod agent;
pub mod eviction;
mod recent;
mod renewals;
mod status_rules;

pub use agent::{AgentError, CheckUpdate};
pub use status_rules::effective_status;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rand::seq::SliceRandom;
use tokio::sync::watch;

use crate::change_index::ChangeIndex;
use crate::clock::Clock;
use crate::model::{Action, Instance, Lease, Millis, Registration, Status, StatusCounts};
use crate::store::{Change, MemoryStore, Store, StoreError};
use recent::{RecentChange, RecentChanges};
use renewals::RenewalMeter;

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
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            self_preservation: true,
            renewal_threshold: 0.85,
            delta_retention: Duration::from_secs(180),
            max_recent_changes: 200_000,
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

/// An instance with its live last-renewal time, as views render it.
#[derive(Clone, Debug)]
pub struct RegisteredInstance {
    pub instance: Arc<Instance>,
    pub last_renewal: Millis,
}

/// A consistent view of a set of applications at one change index.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub index: u64,
    /// Upper-case app name with its instances, in name order; apps without instances are
    /// left out.
    pub apps: Vec<(String, Vec<RegisteredInstance>)>,
    /// Per-status counts over the whole registry, or over the listed instances for a
    /// filtered listing (Eureka's hashcode scope).
    pub counts: StatusCounts,
}

/// Where callers of an app in the mesh are sent instead of the instances' own addresses:
/// the local proxy's listener for that app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub host: String,
    pub port: u32,
}

/// One instance as the data plane needs it: its real address, never a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub id: String,
    pub host: String,
    pub port: u32,
    pub status: Status,
}

fn routed(instance: &Arc<Instance>, route: Option<&Route>) -> Arc<Instance> {
    let Some(route) = route else {
        return instance.clone();
    };
    let mut published = (**instance).clone();
    published.host_name = route.host.clone();
    published.ip_addr = route.host.clone();
    published.port = crate::model::Port {
        number: route.port,
        enabled: true,
    };
    published.secure_port.enabled = false;
    Arc::new(published)
}

/// How a heartbeat went; its `Err` counterparts say why the client must act.
#[derive(Debug, PartialEq, Eq)]
pub struct Renewed {
    pub status: Status,
}

/// Options of a heartbeat.
#[derive(Clone, Copy, Debug, Default)]
pub struct RenewRequest {
    pub last_dirty: Option<Millis>,
    /// The peer's view of the override, sent with replicated heartbeats.
    pub overridden_status: Option<Status>,
    pub replication: bool,
}

#[derive(Debug)]
struct Entry {
    instance: Arc<Instance>,
    /// Kept outside the record so a heartbeat does not copy the instance.
    last_renewal: AtomicI64,
}

impl Entry {
    /// The instance as views publish it: with the app's mesh route applied, if any.
    fn registered(&self, routes: &HashMap<String, Route>) -> RegisteredInstance {
        RegisteredInstance {
            instance: routed(&self.instance, routes.get(&self.instance.app)),
            last_renewal: self.last_renewal.load(Ordering::Relaxed),
        }
    }

    /// The record with the live renewal time folded in, for a change that replaces it.
    fn current(&self) -> Instance {
        let mut instance = (*self.instance).clone();
        instance.lease.last_renewal = self.last_renewal.load(Ordering::Relaxed);
        instance
    }
}

#[derive(Debug)]
struct State {
    /// Upper-case app name -> instance id -> entry.
    apps: BTreeMap<String, BTreeMap<String, Entry>>,
    /// Server-side status overrides by instance id. Kept apart from the records because
    /// they outlive a cancel-and-register cycle and win over what the client reports.
    overrides: HashMap<String, Status>,
    counts: StatusCounts,
    recent: RecentChanges,
    /// Upper-case app name -> index of the last change to its instances or their checks.
    app_index: HashMap<String, u64>,
    /// Index of the last change to the set of apps or their tags and metadata.
    catalog_index: u64,
    /// Index of the last change to any instance or check.
    health_index: u64,
    /// Agent-registered instance id -> its app: agent ids are unique per node.
    agent_ids: HashMap<String, String>,
    /// Check id -> (app, instance id): check ids are unique per node.
    check_owners: HashMap<String, (String, String)>,
    /// TTL check id -> when it turns critical unless renewed.
    ttl_deadlines: HashMap<String, Millis>,
    /// Upper-case app -> the route views publish instead of its instances' addresses.
    routes: HashMap<String, Route>,
}

pub struct Registry {
    state: RwLock<State>,
    index: Arc<ChangeIndex>,
    renewals: RenewalMeter,
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
        let retention = settings.delta_retention.as_millis() as Millis;
        Registry {
            state: RwLock::new(State {
                apps: BTreeMap::new(),
                overrides: HashMap::new(),
                counts: StatusCounts::default(),
                recent: RecentChanges::new(retention, settings.max_recent_changes),
                app_index: HashMap::new(),
                catalog_index: start,
                health_index: start,
                agent_ids: HashMap::new(),
                check_owners: HashMap::new(),
                ttl_deadlines: HashMap::new(),
                routes: HashMap::new(),
            }),
            index,
            renewals: RenewalMeter::default(),
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

    /// Registers or re-registers an instance (Eureka spec §4.1). The caller has validated
    /// the record; `instance.app` is upper case.
    pub fn register(&self, mut incoming: Instance, replication: bool) -> Result<(), RegistryError> {
        let now = self.now();
        let mut state = self.state.write();
        let previous = state
            .apps
            .get(&incoming.app)
            .and_then(|instances| instances.get(&incoming.id))
            .map(Entry::current);
        if let Some(stored) = &previous {
            if stored.last_dirty > incoming.last_dirty {
                // A stale re-registration: the stored record wins whole; only the lease
                // restarts.
                incoming = stored.clone();
            }
        }
        if incoming.overridden_status != Status::Unknown {
            state
                .overrides
                .entry(incoming.id.clone())
                .or_insert(incoming.overridden_status);
        }
        let stored_override = state.overrides.get(&incoming.id).copied();
        incoming.overridden_status = stored_override.unwrap_or(Status::Unknown);
        incoming.status = effective_status(
            incoming.status,
            stored_override,
            previous.as_ref().map(|stored| stored.status),
            replication,
        );
        incoming.lease.registration = now;
        incoming.lease.last_renewal = now;
        incoming.lease.eviction = 0;
        incoming.lease.service_up = previous
            .as_ref()
            .map(|stored| stored.lease.service_up)
            .filter(|&up| up > 0)
            .unwrap_or(if incoming.status == Status::Up {
                now
            } else {
                0
            });
        incoming.action = Action::Added;
        incoming.last_updated = now;
        self.put(&mut state, incoming, now)
    }

    /// A heartbeat (Eureka spec §4.2).
    pub fn renew(
        &self,
        app: &str,
        id: &str,
        request: RenewRequest,
    ) -> Result<Renewed, RegistryError> {
        let now = self.now();
        let outcome = {
            let state = self.state.read();
            let Some(entry) = lookup(&state, app, id) else {
                drop(state);
                if request.replication {
                    if let Some(overridden) =
                        request.overridden_status.filter(|s| *s != Status::Unknown)
                    {
                        self.state
                            .write()
                            .overrides
                            .insert(id.to_owned(), overridden);
                    }
                }
                return Err(not_registered(app, id));
            };
            let stored = &entry.instance;
            let status = effective_status(
                stored.status,
                state.overrides.get(id).copied(),
                Some(stored.status),
                request.replication,
            );
            if status == Status::Unknown {
                return Err(not_registered(app, id));
            }
            if status == stored.status {
                entry.last_renewal.store(now, Ordering::Relaxed);
                None
            } else {
                Some(status)
            }
        };
        if let Some(status) = outcome {
            // Rare: the status rules moved the published status, which is a change.
            let mut state = self.state.write();
            let Some(entry) = lookup(&state, app, id) else {
                return Err(not_registered(app, id));
            };
            let mut changed = entry.current();
            changed.status = status;
            changed.lease.last_renewal = now;
            changed.action = Action::Modified;
            changed.last_updated = now;
            if status == Status::Up && changed.lease.service_up == 0 {
                changed.lease.service_up = now;
            }
            self.put(&mut state, changed, now)?;
        }
        self.renewals.record(now);
        let state = self.state.read();
        let entry = lookup(&state, app, id).ok_or_else(|| not_registered(app, id))?;
        let stored = &entry.instance;
        if let Some(last_dirty) = request.last_dirty {
            if last_dirty > stored.last_dirty {
                if request.replication {
                    if let Some(overridden) =
                        request.overridden_status.filter(|s| *s != Status::Unknown)
                    {
                        drop(state);
                        self.state
                            .write()
                            .overrides
                            .insert(id.to_owned(), overridden);
                    }
                }
                return Err(RegistryError::ClientIsNewer {
                    app: app.to_owned(),
                    id: id.to_owned(),
                });
            }
            if last_dirty < stored.last_dirty && request.replication {
                return Err(RegistryError::PeerIsStale {
                    stored: Box::new(entry.current()),
                });
            }
        }
        Ok(Renewed {
            status: stored.status,
        })
    }

    /// Removes an instance and its override (Eureka spec §4.3).
    pub fn cancel(&self, app: &str, id: &str) -> Result<(), RegistryError> {
        let now = self.now();
        let mut state = self.state.write();
        state.overrides.remove(id);
        self.remove(&mut state, app, id, now)
    }

    /// Sets a server-side status override (Eureka spec §4.4).
    pub fn set_override(
        &self,
        app: &str,
        id: &str,
        status: Status,
        last_dirty: Option<Millis>,
    ) -> Result<(), RegistryError> {
        let now = self.now();
        let mut state = self.state.write();
        let entry = lookup(&state, app, id).ok_or_else(|| not_registered(app, id))?;
        entry.last_renewal.store(now, Ordering::Relaxed);
        if entry.instance.status == status {
            return Ok(());
        }
        let mut changed = entry.current();
        changed.status = status;
        changed.overridden_status = status;
        changed.action = Action::Modified;
        changed.last_updated = now;
        if let Some(last_dirty) = last_dirty.filter(|&dirty| dirty > changed.last_dirty) {
            changed.last_dirty = last_dirty;
        }
        if status == Status::Up && changed.lease.service_up == 0 {
            changed.lease.service_up = now;
        }
        self.put(&mut state, changed, now)?;
        state.overrides.insert(id.to_owned(), status);
        Ok(())
    }

    /// Drops a server-side override and publishes `status` until the client's next
    /// registration (Eureka spec §4.5).
    pub fn remove_override(
        &self,
        app: &str,
        id: &str,
        status: Status,
    ) -> Result<(), RegistryError> {
        let now = self.now();
        let mut state = self.state.write();
        let entry = lookup(&state, app, id).ok_or_else(|| not_registered(app, id))?;
        entry.last_renewal.store(now, Ordering::Relaxed);
        if !state.overrides.contains_key(id) {
            return Ok(());
        }
        let mut changed = entry.current();
        changed.overridden_status = Status::Unknown;
        changed.status = status;
        changed.action = Action::Modified;
        changed.last_updated = now;
        self.put(&mut state, changed, now)?;
        state.overrides.remove(id);
        Ok(())
    }

    /// Merges metadata into an instance: a server-side re-registration (Eureka spec §4.6).
    pub fn update_metadata(
        &self,
        app: &str,
        id: &str,
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), RegistryError> {
        let now = self.now();
        let mut state = self.state.write();
        let entry = lookup(&state, app, id).ok_or_else(|| not_registered(app, id))?;
        let mut changed = entry.current();
        for (key, value) in pairs {
            changed.metadata.insert(key, value);
        }
        changed.lease.registration = now;
        changed.lease.last_renewal = now;
        changed.action = Action::Added;
        changed.last_updated = now;
        self.put(&mut state, changed, now)
    }

    /// Every instance of every app, with counts over the whole registry.
    pub fn list_all(&self) -> Listing {
        let state = self.state.read();
        Listing {
            index: self.index.current(),
            apps: state
                .apps
                .iter()
                .filter(|(_, instances)| !instances.is_empty())
                .map(|(app, instances)| {
                    (
                        app.clone(),
                        instances
                            .values()
                            .map(|entry| entry.registered(&state.routes))
                            .collect(),
                    )
                })
                .collect(),
            counts: state.counts,
        }
    }

    /// The latest change of every instance changed within the retention window, grouped by
    /// app; counts cover the whole registry.
    pub fn list_recent_changes(&self) -> Listing {
        let now = self.now();
        let state = self.state.read();
        let mut apps: BTreeMap<String, Vec<RegisteredInstance>> = BTreeMap::new();
        for change in state.recent.latest_per_instance(now) {
            let instance = &change.instance;
            // A record still registered shows its live renewal time; a removed one shows
            // the state at removal.
            let last_renewal = lookup(&state, &instance.app, &instance.id)
                .filter(|entry| Arc::ptr_eq(&entry.instance, instance))
                .map(|entry| entry.last_renewal.load(Ordering::Relaxed))
                .unwrap_or(instance.lease.last_renewal);
            apps.entry(instance.app.clone())
                .or_default()
                .push(RegisteredInstance {
                    instance: routed(instance, state.routes.get(&instance.app)),
                    last_renewal,
                });
        }
        Listing {
            index: self.index.current(),
            apps: apps.into_iter().collect(),
            counts: state.counts,
        }
    }

    /// The instances of one app, in id order; `None` when it has none.
    pub fn app(&self, app: &str) -> Option<Vec<RegisteredInstance>> {
        let state = self.state.read();
        state
            .apps
            .get(app)
            .filter(|instances| !instances.is_empty())
            .map(|instances| {
                instances
                    .values()
                    .map(|entry| entry.registered(&state.routes))
                    .collect()
            })
    }

    pub fn instance(&self, app: &str, id: &str) -> Option<RegisteredInstance> {
        let state = self.state.read();
        lookup(&state, app, id).map(|entry| entry.registered(&state.routes))
    }

    /// Finds an instance by id in any app.
    pub fn instance_anywhere(&self, id: &str) -> Option<RegisteredInstance> {
        let state = self.state.read();
        state
            .apps
            .values()
            .find_map(|instances| instances.get(id))
            .map(|entry| entry.registered(&state.routes))
    }

    /// Publishes `route` for every instance of `app` (or stops, with `None`). Each instance
    /// shows the change as MODIFIED in the next delta and moves the app's index, so callers
    /// follow on their next refresh. Returns how many instances changed.
    pub fn set_route(&self, app: &str, route: Option<Route>) -> Result<usize, RegistryError> {
        let now = self.now();
        let mut state = self.state.write();
        let unchanged = match &route {
            Some(route) => state.routes.get(app) == Some(route),
            None => !state.routes.contains_key(app),
        };
        if unchanged {
            return Ok(0);
        }
        match route {
            Some(route) => state.routes.insert(app.to_owned(), route),
            None => state.routes.remove(app),
        };
        let instances: Vec<Instance> = state
            .apps
            .get(app)
            .map(|instances| instances.values().map(Entry::current).collect())
            .unwrap_or_default();
        let changed = instances.len();
        for mut instance in instances {
            instance.action = Action::Modified;
            instance.last_updated = now;
            self.put(&mut state, instance, now)?;
        }
        Ok(changed)
    }

    /// The route published for `app`, if it is in the mesh.
    pub fn route(&self, app: &str) -> Option<Route> {
        self.state.read().routes.get(app).cloned()
    }

    /// The real addresses of an app's instances, with the app's result index; the data
    /// plane re-reads them only when the index moved.
    pub fn endpoints(&self, app: &str) -> (u64, Vec<Endpoint>) {
        let state = self.state.read();
        let index = app_result_index(&state, app);
        let endpoints = state
            .apps
            .get(app)
            .map(|instances| {
                instances
                    .values()
                    .map(|entry| {
                        let instance = &entry.instance;
                        let port = if instance.port.enabled || !instance.secure_port.enabled {
                            instance.port.number
                        } else {
                            instance.secure_port.number
                        };
                        Endpoint {
                            id: instance.id.clone(),
                            host: instance.ip_addr.clone(),
                            port,
                            status: instance.status,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        (index, endpoints)
    }

    /// Instances that serve a logical address, with counts over those instances only.
    pub fn list_by_address(&self, address: &str, secure: bool) -> Listing {
        let state = self.state.read();
        let mut counts = StatusCounts::default();
        let mut apps = Vec::new();
        for (app, instances) in &state.apps {
            let matching: Vec<RegisteredInstance> = instances
                .values()
                .filter(|entry| {
                    let addresses = if secure {
                        &entry.instance.secure_virtual_address
                    } else {
                        &entry.instance.virtual_address
                    };
                    Instance::serves_address(addresses.as_deref(), address)
                })
                .map(|entry| entry.registered(&state.routes))
                .collect();
            if !matching.is_empty() {
                matching
                    .iter()
                    .for_each(|found| counts.add(found.instance.status));
                apps.push((app.clone(), matching));
            }
        }
        Listing {
            index: self.index.current(),
            apps,
            counts,
        }
    }

    pub fn instance_count(&self) -> usize {
        self.state.read().counts.total()
    }

    /// Renewals counted in the last full minute.
    pub fn renewals_last_minute(&self) -> u64 {
        self.renewals.last_minute(self.now())
    }

    /// Whether self-preservation currently allows eviction (Eureka spec §9).
    pub fn eviction_allowed(&self) -> bool {
        if !self.settings.self_preservation {
            return true;
        }
        let expected_clients = self.instance_count() as f64;
        let threshold = (expected_clients * 2.0 * self.settings.renewal_threshold).floor() as u64;
        threshold > 0 && self.renewals_last_minute() > threshold
    }

    /// Cancels expired leases, at most 15% of the registry per run, chosen at random so a
    /// partial outage does not always hit the same apps first. Returns how many went.
    pub fn evict_expired(&self) -> Result<usize, RegistryError> {
        if !self.eviction_allowed() {
            return Ok(0);
        }
        let now = self.now();
        let mut state = self.state.write();
        let mut expired: Vec<(String, String)> = state
            .apps
            .values()
            .flat_map(|instances| instances.values())
            // Agent registrations hold no lease: they stay until deregistered.
            .filter(|entry| entry.instance.registration == Registration::Lease)
            .filter(|entry| {
                entry
                    .instance
                    .lease
                    .is_expired(entry.last_renewal.load(Ordering::Relaxed), now)
            })
            .map(|entry| (entry.instance.app.clone(), entry.instance.id.clone()))
            .collect();
        let size = state
            .apps
            .values()
            .flat_map(|instances| instances.values())
            .filter(|entry| entry.instance.registration == Registration::Lease)
            .count();
        let limit = size - (size as f64 * self.settings.renewal_threshold).floor() as usize;
        expired.shuffle(&mut rand::thread_rng());
        expired.truncate(limit);
        for (app, id) in &expired {
            tracing::info!(%app, %id, "evicting an expired lease");
            self.remove(&mut state, app, id, now)?;
        }
        Ok(expired.len())
    }

    fn put(
        &self,
        state: &mut State,
        mut instance: Instance,
        now: Millis,
    ) -> Result<(), RegistryError> {
        let index = self.index.allocate()?;
        let previous =
            lookup(state, &instance.app, &instance.id).map(|entry| entry.instance.clone());
        instance.create_index = previous
            .as_ref()
            .map_or(index, |stored| stored.create_index);
        instance.modify_index = index;
        for check in &mut instance.checks {
            let known = previous
                .as_ref()
                .and_then(|stored| stored.checks.iter().find(|known| known.id == check.id));
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
        self.store.write(&Change::Put(&instance))?;
        let catalog_changed = previous.as_ref().is_none_or(|stored| {
            stored.tags != instance.tags || stored.metadata != instance.metadata
        });
        if let Some(stored) = &previous {
            // Checks that the new record no longer has stop existing; kept ones keep
            // their TTL timers.
            for check in &stored.checks {
                if !instance.checks.iter().any(|kept| kept.id == check.id) {
                    state.check_owners.remove(&check.id);
                    state.ttl_deadlines.remove(&check.id);
                }
            }
        }
        remember_checks(state, &instance);
        let instance = Arc::new(instance);
        let last_renewal = instance.lease.last_renewal;
        let instances = state.apps.entry(instance.app.clone()).or_default();
        let replaced = instances.insert(
            instance.id.clone(),
            Entry {
                instance: instance.clone(),
                last_renewal: AtomicI64::new(last_renewal),
            },
        );
        if let Some(replaced) = replaced {
            state.counts.remove(replaced.instance.status);
        }
        state.counts.add(instance.status);
        state.app_index.insert(instance.app.clone(), index);
        state.health_index = index;
        if catalog_changed {
            state.catalog_index = index;
        }
        self.record(state, instance, now);
        self.index.publish(index);
        Ok(())
    }

    fn remove(
        &self,
        state: &mut State,
        app: &str,
        id: &str,
        now: Millis,
    ) -> Result<(), RegistryError> {
        if lookup(state, app, id).is_none() {
            return Err(not_registered(app, id));
        }
        let index = self.index.allocate()?;
        self.store.write(&Change::Remove { app, id })?;
        let instances = state.apps.get_mut(app).expect("looked up above");
        let entry = instances.remove(id).expect("looked up above");
        if instances.is_empty() {
            state.apps.remove(app);
        }
        state.counts.remove(entry.instance.status);
        forget_checks(state, &entry.instance);
        state.app_index.insert(app.to_owned(), index);
        state.health_index = index;
        state.catalog_index = index;
        let mut removed = entry.current();
        removed.action = Action::Deleted;
        removed.last_updated = now;
        removed.lease.eviction = now;
        removed.modify_index = index;
        self.record(state, Arc::new(removed), now);
        self.index.publish(index);
        Ok(())
    }

    fn record(&self, state: &mut State, instance: Arc<Instance>, now: Millis) {
        state.recent.push(RecentChange { at: now, instance });
    }
}

/// The result index of reads of one app: its last change, or for an app never seen the
/// catalog's (so a watcher of a service that does not exist yet wakes when it appears).
fn app_result_index(state: &State, app: &str) -> u64 {
    state
        .app_index
        .get(app)
        .copied()
        .unwrap_or(state.catalog_index)
        .max(1)
}

fn lookup<'a>(state: &'a State, app: &str, id: &str) -> Option<&'a Entry> {
    state.apps.get(app).and_then(|instances| instances.get(id))
}

/// Whether a check is unchanged apart from its index stamps.
fn same_check(known: &crate::model::Check, check: &crate::model::Check) -> bool {
    known.status == check.status
        && known.output == check.output
        && known.name == check.name
        && known.notes == check.notes
        && known.probe == check.probe
}

/// Keeps the agent-id and check-id lookups in step with the records.
fn remember_checks(state: &mut State, instance: &Instance) {
    if instance.registration == Registration::Agent {
        state
            .agent_ids
            .insert(instance.id.clone(), instance.app.clone());
    }
    for check in &instance.checks {
        state.check_owners.insert(
            check.id.clone(),
            (instance.app.clone(), instance.id.clone()),
        );
    }
}

fn forget_checks(state: &mut State, instance: &Instance) {
    if instance.registration == Registration::Agent {
        state.agent_ids.remove(&instance.id);
    }
    for check in &instance.checks {
        state.check_owners.remove(&check.id);
        state.ttl_deadlines.remove(&check.id);
    }
}

fn not_registered(app: &str, id: &str) -> RegistryError {
    RegistryError::NotRegistered {
        app: app.to_owned(),
        id: id.to_owned(),
    }
}

/// Keeps `Lease` defaults in one place for views that parse registrations.
pub fn lease_or_default(renewal_interval_secs: u32, duration_secs: u32) -> Lease {
    Lease {
        renewal_interval_secs: if renewal_interval_secs > 0 {
            renewal_interval_secs
        } else {
            Lease::DEFAULT_RENEWAL_INTERVAL_SECS
        },
        duration_secs: if duration_secs > 0 {
            duration_secs
        } else {
            Lease::DEFAULT_DURATION_SECS
        },
        ..Lease::default()
    }
}

#[cfg(test)]
mod tests;
