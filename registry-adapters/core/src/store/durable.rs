//! The registrations a Consul agent keeps across restarts, kept the same way: a redb file
//! under the data directory (`registrations.redb`) with one record per agent-registered
//! instance (`record.rs`), committed and synced before the registration, check change or
//! deregistration is answered. `Registry::restore` reads them back at start.
//!
//! Imported copies (`Registration::Imported`, held for a legacy registry Ferry syncs with)
//! are recorded too, so a Ferry restarted while the legacy side is down still lists them;
//! they are committed without a sync of their own (no client waits on them, and the next
//! import brings them back anyway), and `flush` syncs them once per import cycle, so an
//! import of 10,000 instances costs one sync, not 10,000.
//!
//! Otherwise only agent registrations (`Registration::Agent`) are recorded. Eureka registrations stay
//! leases in memory, as Netflix Eureka keeps them: a client whose heartbeat gets a 404
//! after a restart registers again, whereas Spring Cloud Consul registers once at start-up
//! and never again. A write about an instance the file does not hold (every Eureka write)
//! touches no disk; a Eureka registration that replaces an agent one with the same app and
//! id removes the agent record, so it cannot come back at the next start.
//!
//! The store is called under the registry's write lock, before the registry changes its
//! model: a write that cannot be committed fails the registration and changes nothing.

use std::collections::HashMap;
use std::path::Path;

use parking_lot::Mutex;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{record, Change, Store, StoreError, Written};
use crate::model::{Instance, Registration};

/// (app, instance id) -> the instance's record.
const INSTANCES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("instances");

#[derive(Debug)]
pub struct DurableStore {
    database: Database,
    /// The (app, id) of every record in the file, so that a write about an instance the
    /// file does not hold needs no transaction, and whether changing it must sync (an agent
    /// registration) or not (an imported copy).
    kept: Mutex<HashMap<(String, String), bool>>,
    /// Whether a commit without a sync happened since the last synced one.
    unsynced: Mutex<bool>,
}

fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Unavailable {
        backend: "registrations",
        source: Box::new(error),
    }
}

impl DurableStore {
    /// Opens (or creates) the file at `path`.
    pub fn open(path: &Path) -> Result<DurableStore, StoreError> {
        let database = Database::create(path).map_err(unavailable)?;
        let transaction = database.begin_write().map_err(unavailable)?;
        // Opening the table inside a write transaction creates it on first start.
        transaction.open_table(INSTANCES).map_err(unavailable)?;
        transaction.commit().map_err(unavailable)?;
        let mut kept = HashMap::new();
        {
            let read = database.begin_read().map_err(unavailable)?;
            let table = read.open_table(INSTANCES).map_err(unavailable)?;
            for item in table.iter().map_err(unavailable)? {
                let (key, bytes) = item.map_err(unavailable)?;
                let (app, id) = key.value();
                let imported = record::decode(bytes.value())
                    .is_ok_and(|instance| instance.registration == Registration::Imported);
                kept.insert((app.to_owned(), id.to_owned()), !imported);
            }
        }
        Ok(DurableStore {
            database,
            kept: Mutex::new(kept),
            unsynced: Mutex::new(false),
        })
    }

    /// Puts (`Some`) or removes (`None`) one record in one transaction, synced unless
    /// `synced` is false (an imported copy).
    fn commit(
        &self,
        app: &str,
        id: &str,
        record: Option<&[u8]>,
        synced: bool,
    ) -> Result<(), StoreError> {
        let mut transaction = self.database.begin_write().map_err(unavailable)?;
        if !synced {
            transaction
                .set_durability(Durability::None)
                .map_err(unavailable)?;
        }
        {
            let mut table = transaction.open_table(INSTANCES).map_err(unavailable)?;
            match record {
                Some(record) => table.insert((app, id), record).map(drop),
                None => table.remove((app, id)).map(drop),
            }
            .map_err(unavailable)?;
        }
        transaction.commit().map_err(unavailable)
    }
}

impl Store for DurableStore {
    fn name(&self) -> &'static str {
        "durable"
    }

    fn write(&self, change: &Change<'_>) -> Result<Written, StoreError> {
        let (app, id, record, synced) = match change {
            Change::Put(instance) | Change::Adopt(instance)
                if instance.registration != Registration::Lease =>
            {
                (
                    instance.app.as_str(),
                    instance.id.as_str(),
                    Some(record::encode(instance)),
                    instance.registration == Registration::Agent,
                )
            }
            Change::Put(instance) | Change::Adopt(instance) => {
                (instance.app.as_str(), instance.id.as_str(), None, true)
            }
            Change::Remove { app, id } => (*app, *id, None, true),
        };
        let mut kept = self.kept.lock();
        let key = (app.to_owned(), id.to_owned());
        let synced = match (&record, kept.get(&key)) {
            (Some(_), _) => synced,
            // Removing an imported copy needs no sync of its own either.
            (None, Some(&kept_synced)) => kept_synced,
            (None, None) => return Ok(Written::Local),
        };
        let mut unsynced = self.unsynced.lock();
        self.commit(app, id, record.as_deref(), synced)?;
        // A synced commit makes every earlier one durable too.
        *unsynced = !synced;
        if record.is_some() {
            kept.insert(key, synced);
        } else {
            kept.remove(&key);
        }
        Ok(Written::Local)
    }

    fn flush(&self) -> Result<(), StoreError> {
        let mut unsynced = self.unsynced.lock();
        if !*unsynced {
            return Ok(());
        }
        // An empty synced commit makes the unsynced ones before it durable.
        let transaction = self.database.begin_write().map_err(unavailable)?;
        transaction.commit().map_err(unavailable)?;
        *unsynced = false;
        Ok(())
    }

    /// Every record that reads back; one that does not (damaged, or written by a newer
    /// Ferry) is logged and left in the file, and the rest still load.
    fn load(&self) -> Result<Vec<Instance>, StoreError> {
        let read = self.database.begin_read().map_err(unavailable)?;
        let table = read.open_table(INSTANCES).map_err(unavailable)?;
        let mut instances = Vec::new();
        for item in table.iter().map_err(unavailable)? {
            let (key, bytes) = item.map_err(unavailable)?;
            let (app, id) = key.value();
            match record::decode(bytes.value()) {
                Ok(instance) => instances.push(instance),
                Err(error) => {
                    tracing::warn!(app, id, %error, "a registration record is left unread");
                }
            }
        }
        Ok(instances)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str) -> Instance {
        let mut instance = Instance::new("web", id, "h", "10.0.0.1", 80);
        instance.registration = Registration::Agent;
        instance
    }

    fn ids(store: &DurableStore) -> Vec<String> {
        let mut ids: Vec<String> = store
            .load()
            .unwrap()
            .into_iter()
            .map(|instance| instance.id)
            .collect();
        ids.sort();
        ids
    }

    /// A store in a fresh directory, and the path to reopen it at.
    fn fresh() -> (DurableStore, std::path::PathBuf) {
        let path = crate::store::scratch_dir().join("registrations.redb");
        (DurableStore::open(&path).unwrap(), path)
    }

    fn done(path: &Path) {
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn agent_records_are_kept_and_others_are_not() {
        let (store, path) = fresh();
        let lease = |id: &str| Instance::new("web", id, "h", "10.0.0.2", 80);
        let remove = |id: &str| store.write(&Change::Remove { app: "WEB", id });
        for id in ["a", "b", "c"] {
            store.write(&Change::Put(&agent(id))).unwrap();
        }
        store.write(&Change::Put(&lease("e"))).unwrap();
        // A Eureka registration that takes over an agent one's app and id ends its record.
        store.write(&Change::Put(&lease("b"))).unwrap();
        remove("c").unwrap();
        remove("x").unwrap();
        assert_eq!(ids(&store), ["a"]);
        drop(store);
        let reopened = DurableStore::open(&path).unwrap();
        assert_eq!(ids(&reopened), ["a"]);
        assert_eq!(reopened.load().unwrap(), [agent("a")]);
        done(&path);
    }

    #[test]
    fn imported_copies_are_kept_and_flushed_once() {
        let (store, path) = fresh();
        let imported = |id: &str| {
            let mut instance = Instance::new("web", id, "h", "10.0.0.3", 80);
            instance.registration = Registration::Imported;
            instance
        };
        for id in ["i-1", "i-2", "i-3"] {
            store.write(&Change::Put(&imported(id))).unwrap();
        }
        assert!(*store.unsynced.lock(), "imported copies wait for a flush");
        store.flush().unwrap();
        assert!(!*store.unsynced.lock());
        store
            .write(&Change::Remove {
                app: "WEB",
                id: "i-2",
            })
            .unwrap();
        // A Eureka registration that takes an imported copy's id over ends its record.
        store
            .write(&Change::Put(&Instance::new(
                "web", "i-3", "h", "10.0.0.4", 80,
            )))
            .unwrap();
        store.write(&Change::Put(&agent("a"))).unwrap();
        assert!(
            !*store.unsynced.lock(),
            "an agent's synced commit covers the rest"
        );
        drop(store);
        let reopened = DurableStore::open(&path).unwrap();
        assert_eq!(ids(&reopened), ["a", "i-1"]);
        assert_eq!(
            reopened
                .load()
                .unwrap()
                .iter()
                .find(|instance| instance.id == "i-1")
                .map(|instance| instance.registration),
            Some(Registration::Imported)
        );
        done(&path);
    }

    #[test]
    fn an_unreadable_record_is_skipped_and_kept() {
        let (store, path) = fresh();
        store.write(&Change::Put(&agent("a"))).unwrap();
        store
            .commit("WEB", "newer", Some(br#"{"v":99}"#), true)
            .unwrap();
        assert_eq!(ids(&store), ["a"]);
        drop(store);
        let reopened = DurableStore::open(&path).unwrap();
        assert!(reopened
            .kept
            .lock()
            .contains_key(&("WEB".into(), "newer".into())));
        done(&path);
    }
}
