//! Ferry's copy of the whole legacy registry, as a Eureka client keeps its local one: filled
//! by a full fetch, moved forward by deltas (ADDED and MODIFIED are upserts by id, DELETED
//! removes), and checked after each delta against the servers' `apps__hashcode`, which
//! counts every instance by status (`apps_hashcode`, the same function Ferry's view
//! answers with). A mismatch, or any doubt (a failed or malformed read), sends the next
//! read back to a full fetch.
//!
//! It holds every legacy instance, the copies Ferry exported included: the hashcode covers
//! them, the importer skips them by their `ferry-owner`, and the exporter adopts them after
//! a restart and checks them before cancelling.

use std::collections::{BTreeMap, HashSet};

use ferry_core::model::{Action, Instance, Millis, StatusCounts, OWNER_FERRY, OWNER_METADATA_KEY};
use ferry_eureka::decode::{Applications, DecodeError};
use ferry_eureka::hashcode::apps_hashcode;
use ferry_eureka::stream;

/// The legacy registry as last read.
#[derive(Debug, Default)]
pub(crate) struct Mirror {
    /// Upper-case app -> instance id -> instance, as decoded.
    apps: BTreeMap<String, BTreeMap<String, Instance>>,
    /// Whether a full fetch filled it and nothing since put it in doubt; until then, the
    /// next read is a full fetch and nothing is reconciled against it.
    complete: bool,
    /// (app, id) of the instances a read put here since the last reconcile: only these
    /// (and any Ferry no longer holds) are offered to the registry again, so a quiet cycle
    /// copies nothing.
    changed: HashSet<(String, String)>,
}

/// A read `applications` document: its instances, the hashcode it announces, and the
/// instances it carried that did not decode.
#[derive(Debug)]
pub(crate) struct Document {
    pub hashcode: String,
    pub instances: Vec<Instance>,
    pub refused: Vec<DecodeError>,
}

impl Document {
    /// Parses an `applications` document; `Err` when it is not one at all (the whole read is
    /// then dropped), one bad instance is only left out.
    pub fn parse(body: &[u8], now: Millis) -> Result<Document, String> {
        // Instance by instance: a legacy registry of 10,000 instances is a 10 MB document,
        // whose whole tree would cost ten times that at every full fetch (and at every
        // delta while the legacy's recent changes hold them all).
        let (applications, refused) =
            stream::applications_json(body, now).map_err(|error| error.to_string())?;
        let Applications { hashcode, apps, .. } = applications;
        Ok(Document {
            hashcode,
            instances: apps
                .into_iter()
                .flat_map(|(_, instances)| instances)
                .collect(),
            refused,
        })
    }
}

/// Whether a legacy instance is a copy Ferry exported.
pub(crate) fn exported_by_ferry(instance: &Instance) -> bool {
    instance
        .metadata
        .get(OWNER_METADATA_KEY)
        .map(String::as_str)
        == Some(OWNER_FERRY)
}

impl Mirror {
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Puts the mirror in doubt: the next read is a full fetch.
    pub fn invalidate(&mut self) {
        self.complete = false;
    }

    /// Replaces everything with a full fetch's instances.
    pub fn replace(&mut self, instances: Vec<Instance>) {
        self.apps.clear();
        self.changed.clear();
        for instance in instances {
            self.upsert(instance);
        }
        self.complete = true;
    }

    /// Applies a delta's entries in order; whether the result's hashcode equals the one the
    /// server announced. On a mismatch the mirror is left in doubt.
    pub fn apply_delta(&mut self, changes: Vec<Instance>, announced_hashcode: &str) -> bool {
        for change in changes {
            match change.action {
                Action::Deleted => self.remove(&change.app, &change.id),
                Action::Added | Action::Modified => self.upsert(change),
            }
        }
        let matches = self.hashcode() == announced_hashcode;
        if !matches {
            self.complete = false;
        }
        matches
    }

    /// `apps__hashcode` of everything held, as a Eureka client computes its own.
    pub fn hashcode(&self) -> String {
        let mut counts = StatusCounts::default();
        for instance in self.instances() {
            counts.add(instance.status);
        }
        apps_hashcode(&counts)
    }

    pub fn get(&self, app: &str, id: &str) -> Option<&Instance> {
        self.apps.get(app).and_then(|instances| instances.get(id))
    }

    /// Every instance, in app and id order.
    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.apps.values().flat_map(BTreeMap::values)
    }

    /// Whether the legacy side holds `app`/`id` as an instance of its own (not a copy
    /// Ferry exported).
    pub fn holds_foreign(&self, app: &str, id: &str) -> bool {
        self.get(app, id)
            .is_some_and(|instance| !exported_by_ferry(instance))
    }

    /// Whether a read put `app`/`id` here since the last `clear_changed`.
    pub fn is_changed(&self, app: &str, id: &str) -> bool {
        self.changed.contains(&(app.to_owned(), id.to_owned()))
    }

    /// Called once the registry has been offered every changed instance.
    pub fn clear_changed(&mut self) {
        self.changed.clear();
    }

    fn upsert(&mut self, instance: Instance) {
        self.changed
            .insert((instance.app.clone(), instance.id.clone()));
        self.apps
            .entry(instance.app.clone())
            .or_default()
            .insert(instance.id.clone(), instance);
    }

    fn remove(&mut self, app: &str, id: &str) {
        if let Some(instances) = self.apps.get_mut(app) {
            instances.remove(id);
            if instances.is_empty() {
                self.apps.remove(app);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::model::Status;

    fn instance(app: &str, id: &str, status: Status, action: Action) -> Instance {
        let mut instance = Instance::new(app, id, "10.0.0.7", "10.0.0.7", 8080);
        instance.status = status;
        instance.action = action;
        instance
    }

    #[test]
    fn a_delta_moves_the_mirror_and_its_hashcode() {
        let mut mirror = Mirror::default();
        assert!(!mirror.is_complete());
        mirror.replace(vec![
            instance("orders", "o-1", Status::Up, Action::Added),
            instance("orders", "o-2", Status::Up, Action::Added),
            instance("billing", "b-1", Status::Down, Action::Added),
        ]);
        assert!(mirror.is_complete());
        assert_eq!(mirror.hashcode(), "DOWN_1_UP_2_");

        let delta = vec![
            instance("orders", "o-3", Status::Up, Action::Added),
            instance("orders", "o-1", Status::OutOfService, Action::Modified),
            instance("billing", "b-1", Status::Down, Action::Deleted),
        ];
        assert!(mirror.apply_delta(delta, "OUT_OF_SERVICE_1_UP_2_"));
        assert!(mirror.is_complete());
        assert_eq!(
            mirror.get("ORDERS", "o-1").map(|found| found.status),
            Some(Status::OutOfService)
        );
        assert!(mirror.get("BILLING", "b-1").is_none());
        assert_eq!(mirror.instances().count(), 3);
    }

    #[test]
    fn a_hashcode_mismatch_puts_the_mirror_in_doubt() {
        let mut mirror = Mirror::default();
        mirror.replace(vec![instance("orders", "o-1", Status::Up, Action::Added)]);
        // The server holds an instance the delta never told us about.
        let delta = vec![instance("orders", "o-2", Status::Up, Action::Added)];
        assert!(!mirror.apply_delta(delta, "UP_3_"));
        assert!(!mirror.is_complete(), "the next read is a full fetch");
        mirror.replace(vec![]);
        assert!(mirror.is_complete());
        assert_eq!(mirror.hashcode(), "");
    }

    #[test]
    fn removing_what_is_not_held_is_no_change() {
        let mut mirror = Mirror::default();
        mirror.replace(vec![instance("orders", "o-1", Status::Up, Action::Added)]);
        let delta = vec![instance("billing", "b-9", Status::Up, Action::Deleted)];
        assert!(mirror.apply_delta(delta, "UP_1_"));
    }

    #[test]
    fn ferrys_exported_copies_are_told_apart() {
        let mut mirror = Mirror::default();
        let mut exported = instance("orders", "o-2", Status::Up, Action::Added);
        exported
            .metadata
            .insert(OWNER_METADATA_KEY.to_owned(), OWNER_FERRY.to_owned());
        mirror.replace(vec![
            instance("orders", "o-1", Status::Up, Action::Added),
            exported,
        ]);
        assert!(mirror.holds_foreign("ORDERS", "o-1"));
        assert!(!mirror.holds_foreign("ORDERS", "o-2"));
        assert!(!mirror.holds_foreign("ORDERS", "o-3"));
    }

    #[test]
    fn documents_keep_what_decodes_and_count_what_does_not() {
        let body = br#"{"applications":{"versions__delta":"3","apps__hashcode":"UP_1_",
            "application":[{"name":"ORDERS","instance":[
              {"instanceId":"o-1","hostName":"h1","app":"ORDERS","ipAddr":"10.0.0.1",
               "status":"UP","port":{"$":8080,"@enabled":"true"},
               "dataCenterInfo":{"@class":"x","name":"MyOwn"},"actionType":"ADDED"},
              {"instanceId":"o-4","hostName":"h4","app":"ORDERS","ipAddr":"10.0.0.4",
               "status":"UP","dataCenterInfo":{"@class":"x","name":"MyOwn"}},
              {"instanceId":"o-2","app":"ORDERS","ipAddr":"10.0.0.2","status":"UP",
               "dataCenterInfo":{"@class":"x","name":"MyOwn"}},
              {"instanceId":"o-3","hostName":"h3","ipAddr":"10.0.0.3",
               "dataCenterInfo":{"@class":"x","name":"MyOwn"}}
            ]}]}}"#;
        let document = Document::parse(body, 0).unwrap();
        assert_eq!(document.hashcode, "UP_1_");
        assert_eq!(document.instances.len(), 1);
        assert_eq!(document.instances[0].id, "o-1");
        assert_eq!(document.instances[0].port.number, 8080);
        assert_eq!(document.refused.len(), 3, "no port, no host, no app");
        assert!(Document::parse(b"<applications/>", 0).is_err());
        assert!(Document::parse(br#"{"instance":{}}"#, 0).is_err());
        assert!(Document::parse(br#"{"applications":{"application":[3]}}"#, 0).is_err());
    }
}
