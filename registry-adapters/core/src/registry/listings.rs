//! Listings and indexes: the apps → instances map with its per-status counts, the
//! recent-change log deltas are cut from, the result indexes Consul reads report (per
//! app, catalog, health), and every read the views make of them.
//!
//! This part changes only through the registry's write core (`Registry::put` and
//! `Registry::remove`), which stamps a change before handing it here, so the map, the
//! counts, the indexes and the log always move together under one write lock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use super::recent::{RecentChange, RecentChanges};
use super::routes::{routed, Routes};
use super::{not_registered, Registry, RegistryError};
use crate::model::{Action, Instance, Millis, Registration, Status, StatusCounts};

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

/// One app as the catalog lists it.
#[derive(Clone, Debug)]
pub struct CatalogService {
    /// The upper-case key.
    pub app: String,
    /// Its registered spelling, if a registration kept one (`Instance::name`).
    pub name: Option<String>,
    /// The union of its instances' tags.
    pub tags: BTreeSet<String>,
}

/// One instance as the data plane needs it: its real address, never a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub id: String,
    pub host: String,
    pub port: u32,
    pub status: Status,
    /// The node that keeps the instance, when it is not this one (a shared store): in
    /// sidecar mode the instance is reached through that node's inbound listener.
    pub keeper: Option<String>,
}

#[derive(Debug)]
pub(super) struct Entry {
    pub(super) instance: Arc<Instance>,
    /// Kept outside the record so a heartbeat does not copy the instance.
    last_renewal: AtomicI64,
}

impl Entry {
    /// A heartbeat: one atomic store, which is why it needs only the read lock.
    pub(super) fn touch(&self, now: Millis) {
        self.last_renewal.store(now, Ordering::Relaxed);
    }

    pub(super) fn last_renewal(&self) -> Millis {
        self.last_renewal.load(Ordering::Relaxed)
    }

    /// The instance as views publish it: with the app's mesh route applied, if any.
    pub(super) fn registered(&self, routes: &Routes) -> RegisteredInstance {
        RegisteredInstance {
            instance: routed(&self.instance, routes.get(&self.instance.app)),
            last_renewal: self.last_renewal(),
        }
    }

    /// The instance as its app registered it, whatever its route.
    pub(super) fn unrouted(&self) -> RegisteredInstance {
        RegisteredInstance {
            instance: self.instance.clone(),
            last_renewal: self.last_renewal(),
        }
    }

    /// The record with the live renewal time folded in, for a change that replaces it.
    pub(super) fn current(&self) -> Instance {
        let mut instance = (*self.instance).clone();
        instance.lease.last_renewal = self.last_renewal();
        instance
    }
}

#[derive(Debug)]
pub(super) struct Listings {
    /// Upper-case app name -> instance id -> entry.
    apps: BTreeMap<String, BTreeMap<String, Entry>>,
    counts: StatusCounts,
    recent: RecentChanges,
    /// Upper-case app name -> index of the last change to its instances or their checks.
    app_index: HashMap<String, u64>,
    /// Index of the last change to the set of apps or their tags and metadata.
    catalog_index: u64,
    /// Index of the last change to any instance or check.
    health_index: u64,
    /// Moves on every change of the listings, even one no index names yet (a registration
    /// accepted while a shared store is out of reach), so caches of rendered listings
    /// never outlive what they show.
    /// Shared with `Registry`, which reads it without the lock (a fetch's cache key).
    generation: Arc<AtomicU64>,
}

impl Listings {
    /// Empty, with the result indexes at `start` so a restarted registry never reports an
    /// index below one it handed out before.
    pub(super) fn new(
        start: u64,
        retention: Millis,
        max_recent_changes: usize,
        generation: Arc<AtomicU64>,
    ) -> Listings {
        Listings {
            apps: BTreeMap::new(),
            counts: StatusCounts::default(),
            recent: RecentChanges::new(retention, max_recent_changes),
            app_index: HashMap::new(),
            catalog_index: start,
            health_index: start,
            generation,
        }
    }

    /// Index of the last change to any instance or check.
    pub(super) fn health_index(&self) -> u64 {
        self.health_index
    }

    pub(super) fn lookup(&self, app: &str, id: &str) -> Option<&Entry> {
        self.apps.get(app).and_then(|instances| instances.get(id))
    }

    /// The entry of a registered instance, or the error that it is not.
    pub(super) fn find(&self, app: &str, id: &str) -> Result<&Entry, RegistryError> {
        self.lookup(app, id).ok_or_else(|| not_registered(app, id))
    }

    /// Every entry, in app and id order.
    pub(super) fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.apps.values().flat_map(|instances| instances.values())
    }

    /// The current records of one app's instances, for a change that re-publishes them.
    pub(super) fn current_of(&self, app: &str) -> Vec<Instance> {
        self.apps
            .get(app)
            .map(|instances| instances.values().map(Entry::current).collect())
            .unwrap_or_default()
    }

    /// Stores a stamped record as the current one and moves the indexes to `index`.
    pub(super) fn insert(&mut self, instance: Arc<Instance>, index: u64, catalog_changed: bool) {
        let last_renewal = instance.lease.last_renewal;
        let instances = self.apps.entry(instance.app.clone()).or_default();
        let replaced = instances.insert(
            instance.id.clone(),
            Entry {
                instance: instance.clone(),
                last_renewal: AtomicI64::new(last_renewal),
            },
        );
        if let Some(replaced) = replaced {
            self.counts.remove(replaced.instance.status);
        }
        self.counts.add(instance.status);
        self.generation.fetch_add(1, Ordering::Release);
        self.app_index.insert(instance.app.clone(), index);
        self.health_index = index;
        if catalog_changed {
            self.catalog_index = index;
        }
    }

    /// Takes an instance out and moves the indexes to `index`.
    pub(super) fn take(&mut self, app: &str, id: &str, index: u64) -> Option<Entry> {
        let instances = self.apps.get_mut(app)?;
        let entry = instances.remove(id)?;
        if instances.is_empty() {
            self.apps.remove(app);
        }
        self.counts.remove(entry.instance.status);
        self.generation.fetch_add(1, Ordering::Release);
        self.app_index.insert(app.to_owned(), index);
        self.health_index = index;
        self.catalog_index = index;
        Some(entry)
    }

    /// Appends a change to the log deltas are cut from.
    pub(super) fn record(&mut self, now: Millis, instance: Arc<Instance>) {
        self.recent.push(RecentChange { at: now, instance });
    }

    /// The result index of reads of one app: its last change, or for an app never seen the
    /// catalog's (so a watcher of a service that does not exist yet wakes when it appears).
    pub(super) fn result_index(&self, app: &str) -> u64 {
        self.app_index
            .get(app)
            .copied()
            .unwrap_or(self.catalog_index)
            .max(1)
    }

    /// One app's instances as views publish them, in id order (empty for an unknown app).
    fn registered_of(&self, app: &str, routes: &Routes) -> Vec<RegisteredInstance> {
        self.apps
            .get(app)
            .map(|instances| registered(instances, routes))
            .unwrap_or_default()
    }
}

fn registered(instances: &BTreeMap<String, Entry>, routes: &Routes) -> Vec<RegisteredInstance> {
    instances
        .values()
        .map(|entry| entry.registered(routes))
        .collect()
}

impl Registry {
    /// Every instance of every app, with counts over the whole registry.
    pub fn list_all(&self) -> Listing {
        let state = self.state.read();
        let listings = &state.listings;
        Listing {
            index: self.index.current(),
            apps: listings
                .apps
                .iter()
                .filter(|(_, instances)| !instances.is_empty())
                .map(|(app, instances)| (app.clone(), registered(instances, &state.routes)))
                .collect(),
            counts: listings.counts,
        }
    }

    /// The latest change of every instance changed within the retention window, grouped by
    /// app; counts cover the whole registry.
    ///
    /// Within an app the entries come oldest first, except that removals come after every
    /// other entry of the app. Clients apply a delta in order, and Netflix's Java client
    /// (`DiscoveryClient.updateDelta`), meeting an app it does not hold, adopts the delta's
    /// whole app — its removed instances included — at the first ADDED or MODIFIED entry; a
    /// removal met before that finds nothing to remove, so the removed instance would stay
    /// (and the hashcode check would force a full fetch). py-eureka-client fails outright
    /// on such a removal. Each instance appears once, so the order changes nothing else.
    pub fn list_recent_changes(&self) -> Listing {
        let now = self.now();
        let state = self.state.read();
        let listings = &state.listings;
        let mut apps: BTreeMap<String, Vec<RegisteredInstance>> = BTreeMap::new();
        for change in listings.recent.latest_per_instance(now) {
            let instance = &change.instance;
            // A record still registered shows its live renewal time; a removed one shows
            // the state at removal.
            let last_renewal = listings
                .lookup(&instance.app, &instance.id)
                .filter(|entry| Arc::ptr_eq(&entry.instance, instance))
                .map(Entry::last_renewal)
                .unwrap_or(instance.lease.last_renewal);
            apps.entry(instance.app.clone())
                .or_default()
                .push(RegisteredInstance {
                    instance: routed(instance, state.routes.get(&instance.app)),
                    last_renewal,
                });
        }
        for instances in apps.values_mut() {
            // A stable sort: oldest first within the upserts and within the removals.
            instances.sort_by_key(|entry| entry.instance.action == Action::Deleted);
        }
        Listing {
            index: self.index.current(),
            apps: apps.into_iter().collect(),
            counts: listings.counts,
        }
    }

    /// The instances of one app, in id order; `None` when it has none.
    pub fn app(&self, app: &str) -> Option<Vec<RegisteredInstance>> {
        let state = self.state.read();
        Some(state.listings.registered_of(app, &state.routes)).filter(|found| !found.is_empty())
    }

    pub fn instance(&self, app: &str, id: &str) -> Option<RegisteredInstance> {
        let state = self.state.read();
        let entry = state.listings.lookup(app, id)?;
        Some(entry.registered(&state.routes))
    }

    /// The instance if this node keeps it (renews it, runs its checks): the only ones a
    /// node's inbound listener forwards to. It is the record as the app registered it,
    /// never with the app's mesh route applied: routed, its address is this node's own
    /// outbound listener, whose balancer would send the call on to another node.
    pub fn kept_here(&self, app: &str, id: &str) -> Option<RegisteredInstance> {
        let found = self.state.read().listings.lookup(app, id)?.unrouted();
        Some(found).filter(|found| {
            self.store
                .owned_here(&found.instance.app, &found.instance.id)
        })
    }

    /// The apps with an instance `node` keeps (not imported copies): the services a sidecar
    /// node speaks for when it calls another node.
    pub fn apps_kept_by(&self, node: &str) -> BTreeSet<String> {
        let state = self.state.read();
        state
            .listings
            .apps
            .iter()
            .filter(|(_, instances)| {
                instances.values().any(|entry| {
                    let instance = &entry.instance;
                    instance.registration != Registration::Imported
                        && self.store.keeper(&instance.app, &instance.id).as_deref() == Some(node)
                })
            })
            .map(|(app, _)| app.clone())
            .collect()
    }

    /// Finds an instance by id in any app.
    pub fn instance_anywhere(&self, id: &str) -> Option<RegisteredInstance> {
        let state = self.state.read();
        state
            .listings
            .apps
            .values()
            .find_map(|instances| instances.get(id))
            .map(|entry| entry.registered(&state.routes))
    }

    /// The real addresses of an app's instances, with the app's result index; the data
    /// plane re-reads them only when the index moved.
    pub fn endpoints(&self, app: &str) -> (u64, Vec<Endpoint>) {
        let state = self.state.read();
        let listings = &state.listings;
        let endpoints = listings
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
                            // An imported copy lives on the legacy estate, not on a node.
                            keeper: (instance.registration != Registration::Imported)
                                .then(|| self.store.keeper(&instance.app, &instance.id))
                                .flatten(),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        (listings.result_index(app), endpoints)
    }

    /// Instances that serve a logical address, with counts over those instances only.
    pub fn list_by_address(&self, address: &str, secure: bool) -> Listing {
        let state = self.state.read();
        let mut counts = StatusCounts::default();
        let mut apps = Vec::new();
        for (app, instances) in &state.listings.apps {
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

    /// Moves on every change of the listings (the change index may not, for a change a
    /// shared store has not taken yet): what caches of rendered listings are keyed by.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn instance_count(&self) -> usize {
        self.state.read().listings.counts.total()
    }

    /// Instances by status over the whole registry, kept as the listings change, so a
    /// metrics scrape reads them without walking the apps.
    pub fn status_counts(&self) -> StatusCounts {
        self.state.read().listings.counts
    }

    /// Whether `app` holds an instance `id` (a lookup that copies nothing).
    pub fn holds(&self, app: &str, id: &str) -> bool {
        self.state.read().listings.lookup(app, id).is_some()
    }

    /// How many instances are lease registrations this node keeps (the ones that send it
    /// heartbeats).
    pub fn lease_count(&self) -> usize {
        self.state
            .read()
            .listings
            .entries()
            .filter(|entry| entry.instance.registration == crate::model::Registration::Lease)
            .filter(|entry| self.owned_here(&entry.instance))
            .count()
    }

    /// Every app with its registered spelling (that of its first instance, in id order, to
    /// have one; see `Instance::name`) and the union of its instances' tags, at the
    /// catalog's result index.
    pub fn catalog(&self) -> (u64, Vec<CatalogService>) {
        let state = self.state.read();
        let listings = &state.listings;
        let apps = listings
            .apps
            .iter()
            .filter(|(_, instances)| !instances.is_empty())
            .map(|(app, instances)| {
                let name = instances
                    .values()
                    .find_map(|entry| entry.instance.name.clone());
                let tags = instances
                    .values()
                    .flat_map(|entry| entry.instance.tags.iter().cloned())
                    .collect();
                CatalogService {
                    app: app.clone(),
                    name,
                    tags,
                }
            })
            .collect();
        (listings.catalog_index.max(1), apps)
    }

    /// The result index of one app's reads; for an app never seen, the catalog's.
    pub fn app_result_index(&self, app: &str) -> u64 {
        self.state.read().listings.result_index(app)
    }

    /// One app's instances (possibly none) with the result index of that read.
    pub fn app_with_index(&self, app: &str) -> (u64, Vec<RegisteredInstance>) {
        let state = self.state.read();
        let listings = &state.listings;
        (
            listings.result_index(app),
            listings.registered_of(app, &state.routes),
        )
    }

    /// Every instance with the index of the last change to any instance or check.
    pub fn all_with_index(&self) -> (u64, Vec<RegisteredInstance>) {
        let state = self.state.read();
        let instances = state
            .listings
            .entries()
            .map(|entry| entry.registered(&state.routes))
            .collect();
        (state.listings.health_index.max(1), instances)
    }

    pub fn health_result_index(&self) -> u64 {
        self.state.read().listings.health_index.max(1)
    }
}
