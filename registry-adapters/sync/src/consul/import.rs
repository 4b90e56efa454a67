//! Import: the legacy Consul's catalog and health into Ferry's registry. Each reconcile
//! reads `/v1/catalog/services`, then every service's `/v1/health/service/<name>` (all
//! entries, passing or not), decodes each row with the Consul view's `health_entry`, and
//! applies the difference to the copies Ferry holds (`Registry::imported`).
//!
//! A reconcile runs every interval and at once when one of two blocking queries answers
//! with a new index: `/v1/catalog/services` moves when services come, go or change tags
//! or meta; `/v1/health/state/any` when any check changes status, which the catalog's
//! index does not show.
//!
//! Skipped: the `consul` service itself, and rows whose meta says `ferry-owner: ferry`
//! (Ferry's own exports, never imported back). A row Ferry cannot read is counted and
//! logged, and its service keeps its copies as they were; an answer Ferry cannot read at
//! all skips the reconcile. While the source cannot be reached every copy stays, counted
//! stale; removals wait as `removals` decides.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use ferry_core::model::{Instance, OWNER_FERRY, OWNER_METADATA_KEY};
use ferry_core::registry::Imported;

use super::client::ConsulSyncError;
use super::removals::{Key, Removals};
use super::{Shared, OWNER};

/// What one read of the source found.
#[derive(Debug, Default)]
pub(super) struct Listing {
    /// The source's instances, by key.
    pub instances: BTreeMap<Key, Instance>,
    /// Apps with a row Ferry could not read: their copies are kept as they are.
    pub protected: HashSet<String>,
    /// Why each refused row was refused.
    pub refused: Vec<String>,
}

/// Whether a decoded row is one Ferry imports: not Consul's own service, not one of
/// Ferry's exports.
pub(super) fn importable(instance: &Instance) -> bool {
    !instance.app.eq_ignore_ascii_case("consul")
        && instance
            .metadata
            .get(OWNER_METADATA_KEY)
            .map(String::as_str)
            != Some(OWNER_FERRY)
}

/// Adds the rows of one service's health answer to `listing`.
pub(super) fn add_rows(listing: &mut Listing, service: &str, rows: &Value) {
    let Some(rows) = rows.as_array() else {
        listing.protected.insert(service.to_ascii_uppercase());
        listing
            .refused
            .push(format!("health of {service}: not a list"));
        return;
    };
    for row in rows {
        match ferry_consul::decode::health_entry(row) {
            Ok(instance) if importable(&instance) => {
                listing
                    .instances
                    .insert((instance.app.clone(), instance.id.clone()), instance);
            }
            Ok(_) => {}
            Err(error) => {
                listing.protected.insert(service.to_ascii_uppercase());
                listing.refused.push(error.to_string());
            }
        }
    }
}

/// Reads the whole source: the service names, then each one's health.
async fn read_source(shared: &Shared) -> Result<Listing, ConsulSyncError> {
    let answer = shared
        .client
        .get(&["v1", "catalog", "services"], &[], None)
        .await?;
    let services = match answer.body {
        Some(Value::Object(services)) => services,
        _ => {
            return Err(ConsulSyncError::Malformed {
                request: "GET /v1/catalog/services".to_owned(),
                reason: "not an object of service names".to_owned(),
            })
        }
    };
    let mut listing = Listing::default();
    for name in services.keys() {
        if name.eq_ignore_ascii_case("consul") {
            continue;
        }
        let answer = shared
            .client
            .get(&["v1", "health", "service", name], &[], None)
            .await?;
        // A service deregistered between the two reads answers an empty list.
        let rows = answer.body.unwrap_or(Value::Array(Vec::new()));
        add_rows(&mut listing, name, &rows);
    }
    Ok(listing)
}

/// The importer's memory between reconciles.
#[derive(Debug, Default)]
struct Importer {
    removals: Removals,
    /// Whether the last read succeeded (false before the first).
    reachable: bool,
    first_done: bool,
}

/// Runs reconciles until shutdown: every interval, and promptly after `changed`.
pub(super) async fn run(
    shared: Arc<Shared>,
    changed: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut importer = Importer::default();
    loop {
        importer.reconcile(&shared).await;
        tokio::select! {
            _ = changed.notified() => {
                // Registrations come in bursts (a service and its check; both indexes
                // move): let them settle into one reconcile.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            _ = tokio::time::sleep(shared.settings.interval) => {}
            _ = super::stopped(&mut shutdown) => return,
        }
    }
}

impl Importer {
    async fn reconcile(&mut self, shared: &Shared) {
        let now = shared.registry.now();
        match read_source(shared).await {
            Ok(listing) => {
                if !self.reachable {
                    self.removals
                        .contact_regained(Instant::now(), shared.settings.grace);
                    self.reachable = true;
                }
                shared
                    .handle
                    .status
                    .succeeded(shared.client.endpoint(), now);
                for reason in &listing.refused {
                    tracing::warn!(source = OWNER, %reason, "legacy Consul entry refused");
                    shared.handle.status.failed(reason, false, now);
                }
                self.apply(shared, listing);
                if !self.first_done {
                    self.first_done = true;
                    shared.handle.first_import_done();
                }
            }
            Err(error) => {
                let unreachable = error.unreachable();
                tracing::warn!(source = OWNER, %error, "legacy Consul import failed");
                shared
                    .handle
                    .status
                    .failed(&error.to_string(), unreachable, now);
                if unreachable {
                    self.reachable = false;
                    let held = shared.registry.imported(OWNER).len();
                    shared.handle.status.update(|status| {
                        status.imported = held;
                        status.stale = held;
                    });
                    if !self.first_done {
                        self.first_done = true;
                        shared.handle.first_import_done();
                    }
                }
            }
        }
    }

    /// Writes what changed and removes what `removals` lets go.
    fn apply(&mut self, shared: &Shared, listing: Listing) {
        let now = shared.registry.now();
        let held: Vec<Key> = shared
            .registry
            .imported(OWNER)
            .iter()
            .map(|copy| (copy.app.clone(), copy.id.clone()))
            .collect();
        let listed: HashSet<Key> = listing.instances.keys().cloned().collect();
        let doomed = self.removals.decide(
            &held,
            &listed,
            &listing.protected,
            Instant::now(),
            shared.settings.grace,
        );
        for (key, instance) in listing.instances {
            match shared.registry.import(OWNER, instance) {
                Ok(Imported::Written) => {
                    tracing::debug!(source = OWNER, app = %key.0, id = %key.1, "imported")
                }
                Ok(Imported::Unchanged | Imported::OwnedHere) => {}
                Err(error) => {
                    tracing::warn!(source = OWNER, %error, "import failed");
                    shared.handle.status.failed(&error.to_string(), false, now);
                }
            }
        }
        for key in doomed {
            match shared.registry.unimport(&key.0, &key.1) {
                Ok(_) => {
                    tracing::debug!(source = OWNER, app = %key.0, id = %key.1, "removed");
                    self.removals.removed(&key);
                }
                Err(error) => {
                    tracing::warn!(source = OWNER, %error, "removal failed");
                    shared.handle.status.failed(&error.to_string(), false, now);
                }
            }
        }
        let imported = shared.registry.imported(OWNER).len();
        let pending = self.removals.pending();
        shared.handle.status.update(|status| {
            status.imported = imported;
            status.stale = 0;
            status.pending_removals = pending;
            status.full_fetches += 1;
        });
    }
}

/// Follows one blocking read (`/v1/catalog/services` or `/v1/health/state/any`) and
/// notifies `changed` whenever its index moves. Failures wait an interval: the reconcile
/// loop reports them.
pub(super) async fn watch_index(
    shared: Arc<Shared>,
    segments: &'static [&'static str],
    changed: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut index = 0u64;
    loop {
        let read = shared
            .client
            .get(segments, &[], Some((index, shared.settings.interval)));
        let answer = tokio::select! {
            answer = read => answer,
            _ = super::stopped(&mut shutdown) => return,
        };
        let pause = match answer {
            Ok(answer) if answer.index == 0 => true,
            Ok(answer) => {
                if index != 0 && answer.index != index {
                    changed.notify_one();
                }
                // An index that went backwards (a restarted agent) starts over.
                index = if answer.index < index {
                    0
                } else {
                    answer.index
                };
                false
            }
            Err(_) => {
                index = 0;
                true
            }
        };
        if pause {
            tokio::select! {
                _ = tokio::time::sleep(shared.settings.interval) => {}
                _ = super::stopped(&mut shutdown) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row(service: &str, id: &str, meta: Value) -> Value {
        json!({"Node": {"Address": "10.0.0.1"},
               "Service": {"ID": id, "Service": service, "Port": 8080, "Meta": meta},
               "Checks": []})
    }

    #[test]
    fn exports_and_consul_itself_are_not_imported() {
        let mut listing = Listing::default();
        let rows = json!([
            row("orders", "o-1", json!({})),
            row("orders", "o-2", json!({"ferry-owner": "ferry"})),
        ]);
        add_rows(&mut listing, "orders", &rows);
        add_rows(
            &mut listing,
            "consul",
            &json!([row("consul", "consul", json!({}))]),
        );
        let keys: Vec<&Key> = listing.instances.keys().collect();
        assert_eq!(keys, vec![&("ORDERS".to_owned(), "o-1".to_owned())]);
        assert!(listing.protected.is_empty());
    }

    #[test]
    fn a_bad_row_protects_its_service_and_is_reported() {
        let mut listing = Listing::default();
        let rows = json!([
            row("orders", "o-1", json!({})),
            {"Service": {"Service": "orders", "Port": 8080, "Address": "h"}},
        ]);
        add_rows(&mut listing, "orders", &rows);
        add_rows(&mut listing, "billing", &json!({"not": "a list"}));
        assert_eq!(listing.instances.len(), 1);
        assert_eq!(listing.refused.len(), 2);
        assert!(listing.protected.contains("ORDERS"));
        assert!(listing.protected.contains("BILLING"));
    }
}
