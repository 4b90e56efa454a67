//! Copies of instances another registry owns, and the instances Ferry owns, as the sync
//! adapters (a legacy Eureka cluster, a legacy Consul) read and write them.
//!
//! Each instance has one owner side. An imported copy (`Registration::Imported`, its owner
//! named in its `ferry-owner` metadata) is written only by its source's adapter, and only
//! while Ferry holds no instance of its own under that app and id: an app that registers
//! with Ferry directly owns its record from then on, whatever a legacy registry still says.
//! Everything else is Ferry's and may be exported; imported copies never are, so nothing
//! Ferry learnt from a legacy registry flows back to it as a new instance.

use std::sync::Arc;

use super::events::{imported_from, Removal};
use super::routes::Route;
use super::{Registry, RegistryError};
use crate::model::{Action, Instance, Registration, OWNER_METADATA_KEY};

/// What `Registry::import` did with a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Imported {
    /// A new copy, or one whose published fields changed: a change at a new index.
    Written,
    /// The stored copy already says the same: nothing moved, no index was spent.
    Unchanged,
    /// Ferry holds an instance of its own under that app and id; the copy is not taken.
    OwnedHere,
}

/// An instance Ferry owns, as an exporter needs it: the record with its real address and
/// the mesh route of its app, if any.
#[derive(Clone, Debug)]
pub struct Owned {
    pub instance: Arc<Instance>,
    pub route: Option<Route>,
}

impl Registry {
    /// Puts or refreshes an imported copy owned by `owner` (its source's name). The copy's
    /// status is the owner's, applied as given: no override rules, no lease, no checks.
    pub fn import(&self, owner: &str, mut copy: Instance) -> Result<Imported, RegistryError> {
        let now = self.now();
        let mut state = self.state.write();
        let stored = state
            .listings
            .lookup(&copy.app, &copy.id)
            .map(|entry| entry.instance.clone());
        copy.registration = Registration::Imported;
        copy.metadata
            .insert(OWNER_METADATA_KEY.to_owned(), owner.to_owned());
        copy.overridden_status = crate::model::Status::Unknown;
        copy.checks.clear();
        match &stored {
            Some(stored) if stored.registration != Registration::Imported => {
                return Ok(Imported::OwnedHere)
            }
            Some(stored) if same_copy(stored, &copy) => return Ok(Imported::Unchanged),
            _ => {}
        }
        copy.action = if stored.is_some() {
            Action::Modified
        } else {
            Action::Added
        };
        copy.last_updated = now;
        copy.lease.last_renewal = now;
        if copy.lease.registration == 0 {
            copy.lease.registration = now;
        }
        self.put(&mut state, copy, now)?;
        Ok(Imported::Written)
    }

    /// Removes an imported copy; `false` when there is none (already gone, or Ferry owns
    /// that instance, which an import never removes).
    pub fn unimport(&self, app: &str, id: &str) -> Result<bool, RegistryError> {
        let now = self.now();
        let mut state = self.state.write();
        let Some(source) = state.listings.lookup(app, id).and_then(|entry| {
            (entry.instance.registration == Registration::Imported)
                .then(|| imported_from(&entry.instance).unwrap_or_default())
        }) else {
            return Ok(false);
        };
        let removal = Removal::Deregistered(format!("gone {source}").trim_end().to_owned());
        self.remove(&mut state, app, id, now, removal)?;
        Ok(true)
    }

    /// Makes the imported copies written so far durable (the store records them without a
    /// sync each); a sync adapter calls it once per import cycle.
    pub fn flush_imports(&self) -> Result<(), RegistryError> {
        Ok(self.store.flush()?)
    }

    /// The imported copies `owner` holds, in app and id order.
    pub fn imported(&self, owner: &str) -> Vec<Arc<Instance>> {
        let state = self.state.read();
        state
            .listings
            .entries()
            .filter(|entry| is_imported_from(&entry.instance, owner))
            .map(|entry| entry.instance.clone())
            .collect()
    }

    /// Every instance Ferry owns (all but imported copies) with its app's route, and the
    /// index of the last change to any instance.
    pub fn owned(&self) -> (u64, Vec<Owned>) {
        let state = self.state.read();
        let owned = state
            .listings
            .entries()
            .filter(|entry| entry.instance.registration != Registration::Imported)
            .map(|entry| Owned {
                instance: Arc::new(entry.current()),
                route: state.routes.get(&entry.instance.app).cloned(),
            })
            .collect();
        (state.listings.health_index().max(1), owned)
    }
}

fn is_imported_from(instance: &Instance, owner: &str) -> bool {
    instance.registration == Registration::Imported
        && instance
            .metadata
            .get(OWNER_METADATA_KEY)
            .map(String::as_str)
            == Some(owner)
}

/// Whether a refreshed copy publishes the same as the stored one: the fields the registry
/// stamps itself (indexes, action, times) do not count.
fn same_copy(stored: &Instance, copy: &Instance) -> bool {
    let mut comparable = copy.clone();
    comparable.create_index = stored.create_index;
    comparable.modify_index = stored.modify_index;
    comparable.action = stored.action;
    comparable.last_updated = stored.last_updated;
    comparable.last_dirty = stored.last_dirty;
    comparable.lease = stored.lease;
    comparable == *stored
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

    fn legacy(app: &str, id: &str, port: u32) -> Instance {
        Instance::new(app, id, "10.0.0.7", "10.0.0.7", port)
    }

    #[test]
    fn an_unchanged_copy_spends_no_index() {
        let registry = Registry::default();
        assert_eq!(
            registry
                .import("legacy-eureka", legacy("orders", "o-1", 8080))
                .unwrap(),
            Imported::Written
        );
        let index = registry.index();
        assert_eq!(
            registry
                .import("legacy-eureka", legacy("orders", "o-1", 8080))
                .unwrap(),
            Imported::Unchanged
        );
        assert_eq!(registry.index(), index);
        let mut down = legacy("orders", "o-1", 8080);
        down.status = Status::Down;
        assert_eq!(
            registry.import("legacy-eureka", down).unwrap(),
            Imported::Written
        );
        let stored = registry.instance("ORDERS", "o-1").unwrap().instance;
        assert_eq!(stored.status, Status::Down);
        assert_eq!(stored.action, Action::Modified);
        assert_eq!(
            stored.metadata.get(OWNER_METADATA_KEY).map(String::as_str),
            Some("legacy-eureka")
        );
    }

    #[test]
    fn a_copy_never_replaces_an_instance_ferry_owns() {
        let registry = Registry::default();
        registry
            .register(legacy("orders", "o-1", 9000), false)
            .unwrap();
        assert_eq!(
            registry
                .import("legacy-eureka", legacy("orders", "o-1", 8080))
                .unwrap(),
            Imported::OwnedHere
        );
        assert!(!registry.unimport("ORDERS", "o-1").unwrap());
        let stored = registry.instance("ORDERS", "o-1").unwrap().instance;
        assert_eq!(stored.port.number, 9000);
        assert_eq!(stored.registration, Registration::Lease);
    }

    #[test]
    fn a_registration_here_takes_over_a_copy() {
        let registry = Registry::default();
        registry
            .import("legacy-eureka", legacy("orders", "o-1", 8080))
            .unwrap();
        registry
            .register(legacy("orders", "o-1", 9000), false)
            .unwrap();
        assert!(registry.imported("legacy-eureka").is_empty());
        let (_, owned) = registry.owned();
        assert_eq!(owned.len(), 1);
        assert_eq!(owned[0].instance.port.number, 9000);
    }

    #[test]
    fn a_restart_brings_imported_copies_back_from_a_durable_store() {
        let dir = crate::store::scratch_dir();
        let path = dir.join("registrations.redb");
        {
            let store = Arc::new(crate::store::DurableStore::open(&path).unwrap());
            let registry = Registry::new(Default::default(), Default::default(), store);
            let mut copy = legacy("orders", "o-1", 8080);
            copy.metadata.insert("zone".to_owned(), "a".to_owned());
            registry.import("legacy-eureka", copy).unwrap();
            registry.flush_imports().unwrap();
        }
        let store = Arc::new(crate::store::DurableStore::open(&path).unwrap());
        let registry = Registry::new(Default::default(), Default::default(), store);
        assert_eq!(registry.restore().unwrap(), 1);
        let copies = registry.imported("legacy-eureka");
        assert_eq!(copies.len(), 1);
        assert_eq!(copies[0].port.number, 8080);
        assert_eq!(
            copies[0].metadata.get("zone").map(String::as_str),
            Some("a")
        );
        drop(registry);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn imported_copies_are_never_owned_nor_evicted() {
        let registry = Registry::default();
        registry
            .import("legacy-eureka", legacy("orders", "o-1", 8080))
            .unwrap();
        registry
            .import("legacy-consul", legacy("orders", "o-2", 8080))
            .unwrap();
        assert!(registry.owned().1.is_empty());
        assert_eq!(registry.imported("legacy-eureka").len(), 1);
        assert_eq!(registry.imported("legacy-consul").len(), 1);
        assert_eq!(registry.lease_count(), 0);
        assert!(registry.unimport("ORDERS", "o-1").unwrap());
        assert!(registry.instance("ORDERS", "o-1").is_none());
    }
}
