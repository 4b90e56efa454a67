//! Export: every instance Ferry owns is registered with the legacy Consul's agent
//! (`PUT /v1/agent/service/register`), its meta saying `ferry-owner: ferry`, with a TTL
//! check (`ferry:<id>`) that Ferry keeps passing or failing as the instance's status says;
//! out of service is Consul's maintenance mode. The TTL is three intervals and the check
//! deregisters the service after a few critical minutes, so a Ferry that stops for good
//! leaves nothing behind; shutting down deregisters nothing, so a restart loses nothing.
//!
//! What was published is remembered by fingerprint (the registration body): a change of
//! address, port, name, tags, meta, or of the route shown to legacy callers registers
//! again. A service Ferry registered that leaves Ferry is deregistered, if the agent's copy
//! still says `ferry-owner: ferry`. After a Ferry start, services it registered before and
//! does not own (yet) are adopted: kept passing for the grace period while their apps
//! register again, then deregistered.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use ferry_core::model::{Status, OWNER_FERRY, OWNER_METADATA_KEY};
use ferry_core::registry::Owned;

use super::client::ConsulSyncError;
use super::{Shared, OWNER};

/// How long the legacy agent keeps an exported service whose TTL check went critical
/// (Ferry stopped refreshing it) before it deregisters it on its own.
const DEREGISTER_CRITICAL_AFTER: &str = "5m";

/// How long Ferry's changes settle before an export cycle runs.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// The state Ferry keeps an exported service's checks in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wanted {
    /// UP: the TTL check passing.
    Pass,
    /// DOWN, STARTING, UNKNOWN: the TTL check critical.
    Fail,
    /// OUT_OF_SERVICE: Consul's maintenance mode (the TTL check kept passing, so the
    /// agent does not reap the service).
    Maintenance,
}

impl Wanted {
    pub(super) fn of(status: Status) -> Wanted {
        match status {
            Status::Up => Wanted::Pass,
            Status::OutOfService => Wanted::Maintenance,
            Status::Down | Status::Starting | Status::Unknown => Wanted::Fail,
        }
    }
}

/// One service as Ferry wants the legacy agent to hold it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Desired {
    /// The registration body, TTL check included (its initial status excluded).
    pub body: Value,
    /// The body's text: what was published, compared on every cycle.
    pub fingerprint: String,
    pub wanted: Wanted,
}

/// The check id of an exported service's TTL check.
pub(super) fn check_id(service_id: &str) -> String {
    format!("ferry:{service_id}")
}

/// Metadata as Consul accepts it: keys of letters, digits, `-` and `_` (other characters
/// become `_`, as `management.port` becomes `management_port`), none reserved (`consul-`),
/// values of at most 512 bytes, at most 64 pairs with `ferry-owner: ferry` among them.
pub(super) fn legacy_meta(metadata: &BTreeMap<String, String>) -> Map<String, Value> {
    let mut meta = Map::new();
    for (key, value) in metadata {
        if meta.len() >= 63 || key == OWNER_METADATA_KEY {
            continue;
        }
        let key: String = key
            .chars()
            .take(128)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if key.is_empty() || key.starts_with("consul-") || meta.contains_key(&key) {
            continue;
        }
        let mut end = value.len().min(512);
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        meta.insert(key, Value::String(value[..end].to_owned()));
    }
    meta.insert(
        OWNER_METADATA_KEY.to_owned(),
        Value::String(OWNER_FERRY.to_owned()),
    );
    meta
}

/// What Ferry wants registered, by service id: every owned instance but those whose
/// metadata names an owner (copies of someone else's), at the route's address when the
/// app is in the mesh and its route is shown to legacy callers.
pub(super) fn desired(owned: &[Owned], interval: Duration) -> BTreeMap<String, Desired> {
    let ttl = interval * 3;
    let mut desired = BTreeMap::new();
    for Owned { instance, route } in owned {
        if instance.metadata.contains_key(OWNER_METADATA_KEY) || desired.contains_key(&instance.id)
        {
            continue;
        }
        let (address, port) = match route {
            Some(route) if route.publish_to_legacy => (route.host.clone(), route.port),
            _ => (
                instance.ip_addr.clone(),
                ferry_consul::encode::port(instance),
            ),
        };
        let name = ferry_consul::encode::service_name(&instance.app, instance.name.as_deref());
        let body = json!({
            "ID": instance.id,
            "Name": name,
            "Address": address,
            "Port": port,
            "Tags": instance.tags,
            "Meta": legacy_meta(&instance.metadata),
            "Check": {
                "CheckID": check_id(&instance.id),
                "Name": "Ferry owns this instance",
                "Notes": "Kept by Ferry's Consul sync; critical when the instance is not UP in Ferry",
                "TTL": format!("{}ms", ttl.as_millis().max(1000)),
                "DeregisterCriticalServiceAfter": DEREGISTER_CRITICAL_AFTER,
            },
        });
        desired.insert(
            instance.id.clone(),
            Desired {
                fingerprint: body.to_string(),
                body,
                wanted: Wanted::of(instance.status),
            },
        );
    }
    desired
}

/// One service Ferry registered.
#[derive(Debug)]
struct Published {
    fingerprint: String,
    wanted: Wanted,
    /// When its TTL check was last refreshed.
    refreshed: Instant,
}

/// The exporter's memory between cycles.
#[derive(Debug, Default)]
struct Exporter {
    /// Services Ferry registered, by id.
    published: HashMap<String, Published>,
    /// Services a previous run registered and this one does not own (yet), with when
    /// they are deregistered and when their TTL was last refreshed.
    adopted: HashMap<String, (Instant, Instant)>,
    /// Whether the agent has been read once (adoption happens then).
    started: bool,
}

/// Runs export cycles until shutdown: every interval, and shortly after Ferry changes.
pub(super) async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut changes = shared.registry.watch();
    let mut exporter = Exporter::default();
    loop {
        let now = shared.registry.now();
        if let Err(error) = exporter.cycle(&shared).await {
            tracing::warn!(source = OWNER, %error, "legacy Consul export failed");
            shared
                .handle
                .status
                .failed(&error.to_string(), error.unreachable(), now);
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                tokio::time::sleep(DEBOUNCE).await;
                changes.borrow_and_update();
            }
            _ = tokio::time::sleep(shared.settings.interval) => {}
            _ = super::stopped(&mut shutdown) => return,
        }
    }
}

impl Exporter {
    async fn cycle(&mut self, shared: &Shared) -> Result<(), ConsulSyncError> {
        let (_, owned) = shared.registry.owned();
        let desired = desired(&owned, shared.settings.interval);
        let held = ours_on_agent(shared).await?;
        let (ours, others) = held;
        let now = Instant::now();
        if !self.started {
            self.started = true;
            for id in ours.iter().filter(|id| !desired.contains_key(*id)) {
                tracing::info!(source = OWNER, %id, "adopted a service a previous run registered");
                self.adopted
                    .insert(id.clone(), (now + shared.settings.grace, now));
            }
        }
        let refresh_every = shared.settings.interval / 2;
        for (id, want) in &desired {
            self.adopted.remove(id);
            if others.contains(id) {
                tracing::debug!(source = OWNER, %id, "the legacy agent holds a service of its own under this id; not exported");
                continue;
            }
            let published = self.published.get(id);
            let registered = ours.contains(id)
                && published.is_some_and(|published| published.fingerprint == want.fingerprint);
            if !registered {
                let mut body = want.body.clone();
                body["Check"]["Status"] = Value::from(if want.wanted == Wanted::Fail {
                    "critical"
                } else {
                    "passing"
                });
                shared
                    .client
                    .put(&["v1", "agent", "service", "register"], &[], Some(&body))
                    .await?;
                set_maintenance(shared, id, want.wanted == Wanted::Maintenance).await?;
                self.published.insert(
                    id.clone(),
                    Published {
                        fingerprint: want.fingerprint.clone(),
                        wanted: want.wanted,
                        refreshed: now,
                    },
                );
                continue;
            }
            let Some(published) = self.published.get_mut(id) else {
                continue;
            };
            if published.wanted != want.wanted {
                let was_maintenance = published.wanted == Wanted::Maintenance;
                let is_maintenance = want.wanted == Wanted::Maintenance;
                if was_maintenance != is_maintenance {
                    set_maintenance(shared, id, is_maintenance).await?;
                }
                refresh(shared, id, want.wanted).await?;
                published.wanted = want.wanted;
                published.refreshed = now;
            } else if now.duration_since(published.refreshed) >= refresh_every {
                refresh(shared, id, want.wanted).await?;
                published.refreshed = now;
            }
        }
        let gone: Vec<String> = self
            .published
            .keys()
            .filter(|id| !desired.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            if ours.contains(&id) {
                deregister(shared, &id).await?;
            }
            self.published.remove(&id);
        }
        let adopted: Vec<String> = self.adopted.keys().cloned().collect();
        for id in adopted {
            let Some((until, refreshed)) = self.adopted.get(&id).copied() else {
                continue;
            };
            if !ours.contains(&id) {
                self.adopted.remove(&id);
            } else if now >= until {
                tracing::info!(source = OWNER, %id, "no instance took an adopted service over; deregistered");
                deregister(shared, &id).await?;
                self.adopted.remove(&id);
            } else if now.duration_since(refreshed) >= refresh_every {
                refresh(shared, &id, Wanted::Pass).await?;
                self.adopted.insert(id, (until, now));
            }
        }
        let exported = self.published.len();
        let registry_now = shared.registry.now();
        shared
            .handle
            .status
            .update(|status| status.exported = exported);
        shared
            .handle
            .status
            .succeeded(shared.client.endpoint(), registry_now);
        Ok(())
    }
}

/// The ids of the agent's services, split into Ferry's (meta `ferry-owner: ferry`) and
/// the others.
async fn ours_on_agent(
    shared: &Shared,
) -> Result<(HashSet<String>, HashSet<String>), ConsulSyncError> {
    let answer = shared
        .client
        .get(&["v1", "agent", "services"], &[], None)
        .await?;
    let Some(Value::Object(services)) = answer.body else {
        return Err(ConsulSyncError::Malformed {
            request: "GET /v1/agent/services".to_owned(),
            reason: "not an object of services".to_owned(),
        });
    };
    let mut ours = HashSet::new();
    let mut others = HashSet::new();
    for (id, service) in services {
        let owner = service
            .get("Meta")
            .and_then(|meta| meta.get(OWNER_METADATA_KEY))
            .and_then(Value::as_str);
        if owner == Some(OWNER_FERRY) {
            ours.insert(id);
        } else {
            others.insert(id);
        }
    }
    Ok((ours, others))
}

/// Refreshes the TTL check: passing, or critical for `Wanted::Fail`.
async fn refresh(shared: &Shared, id: &str, wanted: Wanted) -> Result<(), ConsulSyncError> {
    let (verb, note) = match wanted {
        Wanted::Fail => ("fail", "not UP in Ferry"),
        Wanted::Pass | Wanted::Maintenance => ("pass", "kept by Ferry"),
    };
    shared
        .client
        .put(
            &["v1", "agent", "check", verb, &check_id(id)],
            &[("note", note.to_owned())],
            None,
        )
        .await
}

async fn set_maintenance(shared: &Shared, id: &str, enable: bool) -> Result<(), ConsulSyncError> {
    let mut query = vec![("enable", enable.to_string())];
    if enable {
        query.push(("reason", "OUT_OF_SERVICE in Ferry".to_owned()));
    }
    shared
        .client
        .put(&["v1", "agent", "service", "maintenance", id], &query, None)
        .await
}

async fn deregister(shared: &Shared, id: &str) -> Result<(), ConsulSyncError> {
    tracing::debug!(source = OWNER, %id, "deregistered from the legacy Consul");
    shared
        .client
        .put(&["v1", "agent", "service", "deregister", id], &[], None)
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ferry_core::model::Instance;
    use ferry_core::registry::Route;

    use super::*;

    fn owned(instance: Instance, route: Option<Route>) -> Owned {
        Owned {
            instance: Arc::new(instance),
            route,
        }
    }

    #[test]
    fn meta_is_made_acceptable_to_consul_and_says_ferry_owns_it() {
        let metadata: BTreeMap<String, String> = [
            ("management.port", "8081"),
            ("consul-x", "1"),
            ("zone", "a"),
            ("long", &"é".repeat(300)),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
        let meta = legacy_meta(&metadata);
        assert_eq!(meta["management_port"], "8081");
        assert!(!meta.contains_key("consul-x"));
        assert_eq!(meta["zone"], "a");
        assert!(meta["long"].as_str().unwrap().len() <= 512);
        assert_eq!(meta[OWNER_METADATA_KEY], OWNER_FERRY);
    }

    #[test]
    fn the_route_replaces_the_address_only_when_shown_to_legacy_callers() {
        let mut instance = Instance::new("orders", "o-1", "10.0.0.5", "10.0.0.5", 8080);
        instance.tags = vec!["v1".to_owned()];
        let route = |publish_to_legacy| Route {
            host: "10.9.9.9".to_owned(),
            port: 15001,
            publish_to_legacy,
        };
        let interval = Duration::from_secs(1);
        let direct = desired(&[owned(instance.clone(), None)], interval);
        let body = &direct["o-1"].body;
        assert_eq!(
            (&body["Name"], &body["Address"], &body["Port"]),
            (&json!("orders"), &json!("10.0.0.5"), &json!(8080))
        );
        assert_eq!(body["Check"]["CheckID"], "ferry:o-1");
        assert_eq!(body["Check"]["TTL"], "3000ms");
        let hidden = desired(&[owned(instance.clone(), Some(route(false)))], interval);
        assert_eq!(hidden["o-1"].fingerprint, direct["o-1"].fingerprint);
        let shown = desired(&[owned(instance, Some(route(true)))], interval);
        assert_eq!(
            (&shown["o-1"].body["Address"], &shown["o-1"].body["Port"]),
            (&json!("10.9.9.9"), &json!(15001))
        );
        assert_ne!(shown["o-1"].fingerprint, direct["o-1"].fingerprint);
    }

    #[test]
    fn copies_are_not_exported_and_status_picks_the_check_state() {
        let mut copy = Instance::new("orders", "o-2", "h", "h", 80);
        copy.metadata
            .insert(OWNER_METADATA_KEY.to_owned(), "legacy-eureka".to_owned());
        let mut down = Instance::new("Billing", "b-1", "h", "h", 80);
        down.name = Some("Billing".to_owned());
        down.status = Status::Down;
        let wanted = desired(
            &[owned(copy, None), owned(down, None)],
            Duration::from_secs(1),
        );
        assert_eq!(wanted.keys().collect::<Vec<_>>(), vec!["b-1"]);
        assert_eq!(wanted["b-1"].body["Name"], "Billing");
        assert_eq!(wanted["b-1"].wanted, Wanted::Fail);
        assert_eq!(Wanted::of(Status::OutOfService), Wanted::Maintenance);
        assert_eq!(Wanted::of(Status::Starting), Wanted::Fail);
        assert_eq!(Wanted::of(Status::Up), Wanted::Pass);
    }
}
