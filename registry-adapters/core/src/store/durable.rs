//! The registrations a Consul agent keeps across restarts, kept the same way: a redb file
//! under the data directory (`registrations.redb`) with one record per agent-registered
//! instance (`record.rs`), committed and synced before the registration, check change or
//! deregistration is answered. `Registry::restore` reads them back at start.
//!
//! Only agent registrations (`Registration::Agent`) are recorded. Eureka registrations stay
//! leases in memory, as Netflix Eureka keeps them: a client whose heartbeat gets a 404
//! after a restart registers again, whereas Spring Cloud Consul registers once at start-up
//! and never again. A write about an instance the file does not hold (every Eureka write)
//! touches no disk; a Eureka registration that replaces an agent one with the same app and
//! id removes the agent record, so it cannot come back at the next start.
//!
//! The store is called under the registry's write lock, before the registry changes its
//! model: a write that cannot be committed fails the registration and changes nothing.

use std::collections::HashSet;
use std::path::Path;

use parking_lot::Mutex;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{record, Change, Store, StoreError};
use crate::model::{Instance, Registration};

/// (app, instance id) -> the instance's record.
const INSTANCES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("instances");

#[derive(Debug)]
pub struct DurableStore {
    database: Database,
    /// The (app, id) of every record in the file, so that a write about an instance the
    /// file does not hold needs no transaction.
    kept: Mutex<HashSet<(String, String)>>,
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
        let mut kept = HashSet::new();
        {
            let read = database.begin_read().map_err(unavailable)?;
            let table = read.open_table(INSTANCES).map_err(unavailable)?;
            for item in table.iter().map_err(unavailable)? {
                let (key, _) = item.map_err(unavailable)?;
                let (app, id) = key.value();
                kept.insert((app.to_owned(), id.to_owned()));
            }
        }
        Ok(DurableStore {
            database,
            kept: Mutex::new(kept),
        })
    }

    /// Puts (`Some`) or removes (`None`) one record in one synced transaction.
    fn commit(&self, app: &str, id: &str, record: Option<&[u8]>) -> Result<(), StoreError> {
        let transaction = self.database.begin_write().map_err(unavailable)?;
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

    fn write(&self, change: &Change<'_>) -> Result<(), StoreError> {
        let (app, id, record) = match change {
            Change::Put(instance) if instance.registration == Registration::Agent => (
                instance.app.as_str(),
                instance.id.as_str(),
                Some(record::encode(instance)),
            ),
            Change::Put(instance) => (instance.app.as_str(), instance.id.as_str(), None),
            Change::Remove { app, id } => (*app, *id, None),
        };
        let mut kept = self.kept.lock();
        let key = (app.to_owned(), id.to_owned());
        if record.is_none() && !kept.contains(&key) {
            return Ok(());
        }
        self.commit(app, id, record.as_deref())?;
        if record.is_some() {
            kept.insert(key);
        } else {
            kept.remove(&key);
        }
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
    fn an_unreadable_record_is_skipped_and_kept() {
        let (store, path) = fresh();
        store.write(&Change::Put(&agent("a"))).unwrap();
        store.commit("WEB", "newer", Some(br#"{"v":99}"#)).unwrap();
        assert_eq!(ids(&store), ["a"]);
        drop(store);
        let reopened = DurableStore::open(&path).unwrap();
        assert!(reopened
            .kept
            .lock()
            .contains(&("WEB".into(), "newer".into())));
        done(&path);
    }
}
