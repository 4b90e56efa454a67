//! Export: the instances Ferry owns are registered with the legacy cluster as a Eureka
//! client registers itself, renewed every renewal interval, re-registered when what they
//! publish changes, and cancelled when they leave Ferry.
//!
//! The rules:
//! - What is published: every instance `Registry::owned` lists, with `ferry-owner: ferry`
//!   added, the exporter's lease figures, and the app's mesh route applied when the route
//!   says the legacy side sees it (`routed`, as Ferry's own views publish). Left out: an
//!   instance already carrying `ferry-owner` (a copy of someone else's, defensively), and
//!   Ferry's own Config Server listing: the legacy estate has its own Config Server (or
//!   none), and a second `configserver` under the same service id would send
//!   discovery-first config clients on the legacy side to one server or the other at
//!   random, with different repositories behind them.
//! - What was sent is remembered as a fingerprint of the registration body (everything but
//!   the status and the timestamps) and the status the legacy side holds. A new or changed
//!   fingerprint is a registration (`POST apps/{APP}`, 204).
//! - Status: the legacy server keeps an existing UP or OUT_OF_SERVICE on re-registration
//!   (its LeaseExistsRule), so OUT_OF_SERVICE is set as an override (`PUT …/status`) and
//!   lifted with `DELETE …/status?value=S`; DOWN, STARTING and UP go by re-registration. A
//!   new instance that is out of service is registered STARTING, then overridden, so it is
//!   never shown UP in between.
//! - Heartbeats every renewal interval (`PUT apps/{APP}/{ID}?status=S&lastDirtyTimestamp=N`
//!   with the timestamp of the last registration); a 404 re-registers at once.
//! - An instance gone from Ferry is cancelled (`DELETE apps/{APP}/{ID}`) only while the
//!   legacy copy is still Ferry's: if the app registered itself with the legacy cluster
//!   meanwhile (no `ferry-owner: ferry`, in the mirror or in a fresh read of the instance),
//!   its registration is left alone.
//! - After a Ferry restart, the import's first read registers the copies a previous run
//!   exported with Ferry again (`restore`); a routed copy carries its real address in
//!   `ferry-real-address` for that. Legacy instances marked `ferry-owner: ferry` that Ferry
//!   still does not own are adopted (those the mirror shows during the first `grace` after its first
//!   complete read: a server's answers may lag by its response cache): renewed for `grace`
//!   (Ferry's apps register with it again within a heartbeat), then cancelled if still not
//!   owned. A restart leaves no gap on the legacy side, and no leftovers.
//! - Shutting down cancels nothing: a Ferry restart must not make its instances vanish from
//!   the legacy side. If Ferry never comes back, they expire there after their lease.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{stream, StreamExt};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use ferry_core::model::{
    Action, Instance, Lease, Millis, Registration, Status, OWNER_FERRY, OWNER_METADATA_KEY,
};
use ferry_core::registry::{config_server_id, routed, Owned, Registry};
use ferry_eureka::decode::{self, Origin};
use ferry_eureka::json;
use ferry_eureka::spelling::status_name;

use super::client::{Client, Request};
use super::error::EurekaSyncError;
use super::mirror::{exported_by_ferry, Mirror};
use super::restore::{real_address, REAL_ADDRESS_KEY};

/// The lease figures and windows the exporter works with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ExportSettings {
    pub renewal_interval: Duration,
    pub lease_duration_secs: u32,
    pub grace: Duration,
}

impl ExportSettings {
    fn renewal_interval_secs(&self) -> u32 {
        u32::try_from(self.renewal_interval.as_secs())
            .unwrap_or(u32::MAX)
            .max(1)
    }
}

/// An instance as Ferry publishes it to the legacy cluster.
#[derive(Clone, Debug)]
pub(crate) struct Desired {
    /// The registration body's instance; its timestamps are set when it is sent.
    pub copy: Instance,
    pub fingerprint: u64,
}

/// App and instance id.
type Key = (String, String);

/// What Ferry owns and publishes, by app and id.
pub(crate) fn desired_set(owned: &[Owned], settings: &ExportSettings) -> BTreeMap<Key, Desired> {
    owned
        .iter()
        .filter_map(|owned| published_copy(owned, settings))
        .map(|copy| {
            let fingerprint = fingerprint(&copy);
            (
                (copy.app.clone(), copy.id.clone()),
                Desired { copy, fingerprint },
            )
        })
        .collect()
}

/// The copy of an owned instance the legacy side is shown, or `None` if it is not exported.
pub(crate) fn published_copy(owned: &Owned, settings: &ExportSettings) -> Option<Instance> {
    let instance = &owned.instance;
    if instance.metadata.contains_key(OWNER_METADATA_KEY) || is_own_config_server(instance) {
        return None;
    }
    if instance.host_name.is_empty() || instance.ip_addr.is_empty() {
        tracing::debug!(app = %instance.app, id = %instance.id,
            "eureka sync: an instance with no address is not exported");
        return None;
    }
    let route = owned.route.as_ref().filter(|route| route.publish_to_legacy);
    let mut copy = (*routed(instance, route)).clone();
    copy.metadata
        .insert(OWNER_METADATA_KEY.to_owned(), OWNER_FERRY.to_owned());
    if route.is_some() {
        // Where it really is, for a restarted Ferry that restores it from this copy.
        copy.metadata
            .insert(REAL_ADDRESS_KEY.to_owned(), real_address(instance));
    }
    // The legacy server derives a missing id from the host name, which a route replaces.
    copy.id_explicit = true;
    copy.lease = Lease {
        renewal_interval_secs: settings.renewal_interval_secs(),
        duration_secs: settings.lease_duration_secs,
        ..Lease::default()
    };
    Some(without_volatile_fields(copy))
}

/// Ferry's own Config Server listing (`own_services`), which is not exported.
fn is_own_config_server(instance: &Instance) -> bool {
    instance.registration == Registration::Agent && instance.id.starts_with(&config_server_id(""))
}

/// The instance with everything the registration does not decide cleared: timestamps,
/// indexes, the action, the override (a body's override would become a stored one on the
/// legacy side), checks.
fn without_volatile_fields(mut instance: Instance) -> Instance {
    instance.overridden_status = Status::Unknown;
    instance.action = Action::Added;
    instance.last_updated = 0;
    instance.last_dirty = 0;
    instance.lease.registration = 0;
    instance.lease.last_renewal = 0;
    instance.lease.eviction = 0;
    instance.lease.service_up = 0;
    instance.create_index = 0;
    instance.modify_index = 0;
    instance.registration = Registration::Lease;
    instance.checks.clear();
    instance
}

/// A hash of the registration body without its status and timestamps: what was sent,
/// compared with what would be sent now. Computed on the encoded body, so only what the
/// legacy side sees counts (a Consul tag that Eureka has no field for changes nothing).
pub(crate) fn fingerprint(copy: &Instance) -> u64 {
    let mut comparable = without_volatile_fields(copy.clone());
    comparable.status = Status::Unknown;
    let mut hasher = DefaultHasher::new();
    json::instance_document(&comparable, 0).hash(&mut hasher);
    hasher.finish()
}

/// What the legacy side holds of an instance Ferry exported, as far as Ferry knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Published {
    pub fingerprint: u64,
    /// The status it shows there; OUT_OF_SERVICE means Ferry's override is set.
    pub status: Status,
}

/// One exchange that brings the legacy copy closer to what Ferry publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// `POST apps/{APP}` with this status in the body.
    Register(Status),
    /// `PUT …/status?value=OUT_OF_SERVICE`.
    SetOutOfService,
    /// `DELETE …/status?value=S`.
    LiftOutOfService(Status),
}

/// The exchanges that take the legacy copy from `published` to `fingerprint` and `status`.
pub(crate) fn plan(published: Option<&Published>, fingerprint: u64, status: Status) -> Vec<Step> {
    let out = Status::OutOfService;
    let Some(published) = published else {
        return if status == out {
            vec![Step::Register(Status::Starting), Step::SetOutOfService]
        } else {
            vec![Step::Register(status)]
        };
    };
    let changed = published.fingerprint != fingerprint;
    match (published.status == out, status == out) {
        // The override keeps it out of service through a re-registration reporting UP.
        (true, true) if changed => vec![Step::Register(Status::Up)],
        (true, true) => vec![],
        // Overridden first, so a re-registration never shows it UP in between.
        (false, true) if changed => vec![Step::SetOutOfService, Step::Register(Status::Up)],
        (false, true) => vec![Step::SetOutOfService],
        (true, false) => vec![Step::LiftOutOfService(status), Step::Register(status)],
        (false, false) if changed || published.status != status => vec![Step::Register(status)],
        (false, false) => vec![],
    }
}

/// The status the legacy side shows after a registration reporting `sent`, by its rules
/// (an override set by Ferry wins over UP).
fn status_after_register(before: Option<Status>, sent: Status) -> Status {
    if before == Some(Status::OutOfService) && sent == Status::Up {
        Status::OutOfService
    } else {
        sent
    }
}

/// One instance the exporter keeps on the legacy side.
#[derive(Clone, Debug, Default)]
struct Entry {
    /// What the legacy side holds; `None` until registered (or after a 404).
    published: Option<Published>,
    /// An adopted copy a previous Ferry process exported and this one does not own (yet):
    /// renewed until then, cancelled after.
    adopted_until: Option<Millis>,
    /// The `lastDirtyTimestamp` of the last registration, sent with each heartbeat.
    last_dirty: Millis,
    /// When the legacy side last renewed it (a registration or a heartbeat).
    renewed_at: Millis,
    /// Whether anything was ever sent for it (or it was adopted): only then is a cancel
    /// worth a request.
    attempted: bool,
}

/// What the exporter keeps between passes.
#[derive(Debug, Default)]
pub(crate) struct Exporter {
    entries: BTreeMap<Key, Entry>,
    /// Until when the mirror is searched for copies a previous run exported, from the first
    /// complete mirror on for `grace`: one look is not enough, as a legacy server's reads
    /// may lag its registrations by its response cache's refresh (30 s by default), and a
    /// copy registered just before Ferry stopped shows up in a later delta.
    adoption_window: Option<Millis>,
    /// Copies cancelled while the window is open, which the mirror may still show for an
    /// interval: not adopted again.
    cancelled: BTreeSet<Key>,
}

/// How an exchange about one instance ended.
enum Exchange {
    Done,
    /// The legacy side does not hold the instance (404).
    NotFound,
    /// A heartbeat refused (logged and counted) or not sent: tried again next interval.
    NotRenewed,
}

/// Heartbeats sent at a time: one after the other, thousands of exported instances would
/// take longer than a renewal interval against a slow server.
const HEARTBEATS_IN_FLIGHT: usize = 8;

impl Exporter {
    /// Instances held on the legacy side now.
    pub fn exported(&self) -> usize {
        self.entries
            .values()
            .filter(|entry| entry.published.is_some())
            .count()
    }

    /// One pass: publish what changed, cancel what left, and renew what is due when
    /// `renew`. Stops at the first sign that the cluster is unreachable.
    pub async fn pass(
        &mut self,
        client: &Client,
        registry: &Registry,
        mirror: &Mirror,
        settings: &ExportSettings,
        renew: bool,
    ) -> Result<(), EurekaSyncError> {
        let now = client.now();
        let (_, owned) = registry.owned();
        let desired = desired_set(&owned, settings);
        if mirror.is_complete() {
            let window = *self
                .adoption_window
                .get_or_insert_with(|| now.saturating_add(millis(settings.grace)));
            if now < window {
                self.adopt(mirror, &desired, now, settings.grace);
            } else {
                self.cancelled.clear();
            }
        }

        for (key, want) in &desired {
            let entry = self.entries.entry(key.clone()).or_default();
            entry.adopted_until = None;
            publish(client, entry, want).await?;
        }

        let leaving: Vec<Key> = self
            .entries
            .iter()
            .filter(|(key, entry)| {
                !desired.contains_key(*key) && entry.adopted_until.is_none_or(|until| now >= until)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in leaving {
            let attempted = self.entries.get(&key).is_some_and(|entry| entry.attempted);
            if attempted {
                cancel(client, mirror, &key).await?;
            }
            self.entries.remove(&key);
            if self.adoption_window.is_none_or(|window| now < window) {
                self.cancelled.insert(key);
            }
        }

        if renew {
            self.renew(client, &desired, now, settings).await?;
        }
        Ok(())
    }

    /// Heartbeats for every copy not renewed for half an interval, several at a time; a
    /// 404 registers an owned instance again at once and drops an adopted one. After the
    /// first sign that the cluster is unreachable, the heartbeats not yet sent are not.
    async fn renew(
        &mut self,
        client: &Client,
        desired: &BTreeMap<Key, Desired>,
        now: Millis,
        settings: &ExportSettings,
    ) -> Result<(), EurekaSyncError> {
        let due_after = millis(settings.renewal_interval) / 2;
        let due: Vec<(Key, Status, Millis)> = self
            .entries
            .iter()
            .filter_map(|(key, entry)| {
                let published = entry.published?;
                (now.saturating_sub(entry.renewed_at) >= due_after)
                    .then(|| (key.clone(), published.status, entry.last_dirty))
            })
            .collect();
        let given_up = AtomicBool::new(false);
        let answers: Vec<(Key, Result<Exchange, EurekaSyncError>)> = stream::iter(due)
            .map(|(key, status, last_dirty)| {
                let given_up = &given_up;
                async move {
                    if given_up.load(Ordering::Relaxed) {
                        return (key, Ok(Exchange::NotRenewed));
                    }
                    let answer = heartbeat(client, &key, status, last_dirty).await;
                    if answer.as_ref().is_err_and(EurekaSyncError::is_unreachable) {
                        given_up.store(true, Ordering::Relaxed);
                    }
                    (key, answer)
                }
            })
            .buffer_unordered(HEARTBEATS_IN_FLIGHT)
            .collect()
            .await;
        let mut unreachable = None;
        for (key, answer) in answers {
            match answer {
                Ok(Exchange::Done) => {
                    if let Some(entry) = self.entries.get_mut(&key) {
                        entry.renewed_at = client.now();
                    }
                }
                Ok(Exchange::NotRenewed) => {}
                Ok(Exchange::NotFound) => match (desired.get(&key), self.entries.get_mut(&key)) {
                    (Some(want), Some(entry)) => {
                        entry.published = None;
                        publish(client, entry, want).await?;
                    }
                    // An adopted copy the legacy side dropped: not Ferry's to register again.
                    _ => {
                        self.entries.remove(&key);
                    }
                },
                Err(error) => unreachable = Some(error),
            }
        }
        unreachable.map_or(Ok(()), Err)
    }

    /// Takes over the copies a previous Ferry process exported (see the module rules).
    fn adopt(
        &mut self,
        mirror: &Mirror,
        desired: &BTreeMap<Key, Desired>,
        now: Millis,
        grace: Duration,
    ) {
        let until = now.saturating_add(millis(grace));
        for copy in mirror.instances().filter(|copy| exported_by_ferry(copy)) {
            let key = (copy.app.clone(), copy.id.clone());
            if self.entries.contains_key(&key) || self.cancelled.contains(&key) {
                continue;
            }
            let owned = desired.contains_key(&key);
            tracing::info!(app = %copy.app, id = %copy.id, owned,
                "eureka sync: adopting a copy a previous run exported");
            self.entries.insert(
                key,
                Entry {
                    published: Some(Published {
                        fingerprint: fingerprint(copy),
                        status: copy.status,
                    }),
                    adopted_until: (!owned).then_some(until),
                    last_dirty: copy.last_dirty,
                    renewed_at: 0,
                    attempted: true,
                },
            );
        }
    }
}

/// Brings one instance's legacy copy to `want`; a 404 on the way starts over once from a
/// fresh registration.
async fn publish(
    client: &Client,
    entry: &mut Entry,
    want: &Desired,
) -> Result<(), EurekaSyncError> {
    for _round in 0..2 {
        let steps = plan(entry.published.as_ref(), want.fingerprint, want.copy.status);
        let mut restart = false;
        for step in steps {
            match run_step(client, entry, want, step).await {
                Ok(Exchange::Done | Exchange::NotRenewed) => {}
                Ok(Exchange::NotFound) => {
                    entry.published = None;
                    restart = true;
                    break;
                }
                Err(error) if error.is_unreachable() => return Err(error),
                Err(error) => {
                    tracing::warn!(app = %want.copy.app, id = %want.copy.id, %error,
                        "eureka sync: export refused");
                    client
                        .status()
                        .failed(&error.to_string(), false, client.now());
                    return Ok(());
                }
            }
        }
        if !restart {
            return Ok(());
        }
    }
    Ok(())
}

async fn run_step(
    client: &Client,
    entry: &mut Entry,
    want: &Desired,
    step: Step,
) -> Result<Exchange, EurekaSyncError> {
    let app = want.copy.app.as_str();
    let id = want.copy.id.as_str();
    let before = entry.published.map(|published| published.status);
    match step {
        Step::Register(status) => {
            let now = client.now();
            let last_dirty = now.max(entry.last_dirty.saturating_add(1));
            let mut body = want.copy.clone();
            body.status = status;
            body.last_dirty = last_dirty;
            body.last_updated = now;
            entry.attempted = true;
            let answer = client
                .send(
                    Request::new(Method::POST, &["apps", app])
                        .body(json::instance_document(&body, now)),
                )
                .await?;
            expect_success("a registration", &answer.server, answer.status)?;
            entry.last_dirty = last_dirty;
            entry.renewed_at = now;
            entry.published = Some(Published {
                fingerprint: want.fingerprint,
                status: status_after_register(before, status),
            });
            Ok(Exchange::Done)
        }
        Step::SetOutOfService => {
            let answer = client
                .send(
                    Request::new(Method::PUT, &["apps", app, id, "status"])
                        .query(&[("value", status_name(Status::OutOfService))]),
                )
                .await?;
            if answer.status == StatusCode::NOT_FOUND {
                return Ok(Exchange::NotFound);
            }
            expect_success("an out-of-service override", &answer.server, answer.status)?;
            if let Some(published) = &mut entry.published {
                published.status = Status::OutOfService;
            }
            Ok(Exchange::Done)
        }
        Step::LiftOutOfService(to) => {
            let answer = client
                .send(
                    Request::new(Method::DELETE, &["apps", app, id, "status"])
                        .query(&[("value", status_name(to))]),
                )
                .await?;
            if answer.status == StatusCode::NOT_FOUND {
                return Ok(Exchange::NotFound);
            }
            expect_success("lifting an override", &answer.server, answer.status)?;
            if let Some(published) = &mut entry.published {
                published.status = to;
            }
            Ok(Exchange::Done)
        }
    }
}

async fn heartbeat(
    client: &Client,
    (app, id): &Key,
    status: Status,
    last_dirty: Millis,
) -> Result<Exchange, EurekaSyncError> {
    let last_dirty = last_dirty.to_string();
    let answer = client
        .send(Request::new(Method::PUT, &["apps", app, id]).query(&[
            ("status", status_name(status)),
            ("lastDirtyTimestamp", &last_dirty),
        ]))
        .await?;
    match answer.status {
        StatusCode::NOT_FOUND => Ok(Exchange::NotFound),
        code if code.is_success() => Ok(Exchange::Done),
        code => {
            let error = EurekaSyncError::Refused {
                operation: "a heartbeat",
                server: answer.server,
                status: code.as_u16(),
            };
            tracing::warn!(%app, %id, %error, "eureka sync: heartbeat refused");
            client
                .status()
                .failed(&error.to_string(), false, client.now());
            Ok(Exchange::NotRenewed)
        }
    }
}

/// Cancels Ferry's copy of `app`/`id`, unless the legacy side holds the app's own
/// registration under that id now.
async fn cancel(client: &Client, mirror: &Mirror, (app, id): &Key) -> Result<(), EurekaSyncError> {
    if mirror.holds_foreign(app, id) {
        tracing::info!(%app, %id, "eureka sync: registered on the legacy side by its app; not cancelled");
        return Ok(());
    }
    // The mirror is up to one interval old: read the instance as it is now.
    let answer = client
        .send(Request::new(Method::GET, &["apps", app, id]))
        .await?;
    if answer.status == StatusCode::NOT_FOUND {
        return Ok(());
    }
    let now = client.now();
    let current = serde_json::from_slice::<Value>(&answer.body)
        .map_err(|error| error.to_string())
        .and_then(|tree| {
            decode::instance_document(&tree, Origin::RegistryDocument, now)
                .map_err(|error| error.to_string())
        });
    match current {
        Ok(current) if exported_by_ferry(&current) => {}
        Ok(_) => {
            tracing::info!(%app, %id, "eureka sync: registered on the legacy side by its app; not cancelled");
            return Ok(());
        }
        Err(reason) => {
            let error = EurekaSyncError::Malformed {
                what: "instance",
                server: answer.server,
                reason,
            };
            tracing::warn!(%app, %id, %error, "eureka sync: not cancelled; it expires after its lease");
            client.status().failed(&error.to_string(), false, now);
            return Ok(());
        }
    }
    let answer = client
        .send(Request::new(Method::DELETE, &["apps", app, id]))
        .await?;
    if answer.status != StatusCode::NOT_FOUND {
        if let Err(error) = expect_success("a cancel", &answer.server, answer.status) {
            tracing::warn!(%app, %id, %error, "eureka sync: not cancelled; it expires after its lease");
            client.status().failed(&error.to_string(), false, now);
        }
    }
    Ok(())
}

fn millis(duration: Duration) -> Millis {
    Millis::try_from(duration.as_millis()).unwrap_or(Millis::MAX)
}

fn expect_success(
    operation: &'static str,
    server: &str,
    status: StatusCode,
) -> Result<(), EurekaSyncError> {
    if status.is_success() {
        Ok(())
    } else {
        Err(EurekaSyncError::Refused {
            operation,
            server: server.to_owned(),
            status: status.as_u16(),
        })
    }
}

#[cfg(test)]
mod tests;
