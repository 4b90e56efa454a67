//! Leases and eviction: Eureka-style registrations (register, heartbeat, cancel), the
//! server-side status overrides, self-preservation and the eviction of expired leases.
//!
//! Overrides live here rather than in the records because they outlive a
//! cancel-and-register cycle and win over what the client reports; agent registrations
//! read them too (an override set through Eureka wins over checks) but hold no lease.

use std::collections::HashMap;

use rand::seq::SliceRandom;

use super::events::Removal;
use super::{effective_status, not_registered, Registry, RegistryError};
use crate::model::{Action, Instance, Lease, Millis, Registration, Status};

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

/// Server-side status overrides by instance id.
#[derive(Debug, Default)]
pub(super) struct Leases {
    overrides: HashMap<String, Status>,
}

impl Leases {
    pub(super) fn overridden(&self, id: &str) -> Option<Status> {
        self.overrides.get(id).copied()
    }

    /// A registration's own override counts only while none is stored: the server's wins.
    fn keep_override(&mut self, id: &str, status: Status) {
        self.overrides.entry(id.to_owned()).or_insert(status);
    }

    pub(super) fn set_override(&mut self, id: &str, status: Status) {
        self.overrides.insert(id.to_owned(), status);
    }

    /// Drops an instance's override: it went for good (cancelled, deregistered, reaped).
    pub(super) fn forget(&mut self, id: &str) {
        self.overrides.remove(id);
    }
}

impl Registry {
    /// Registers or re-registers an instance (Eureka spec §4.1). The caller has validated
    /// the record; `instance.app` is upper case.
    pub fn register(&self, mut incoming: Instance, replication: bool) -> Result<(), RegistryError> {
        let now = self.now();
        let mut state = self.state.write();
        let previous = state
            .listings
            .lookup(&incoming.app, &incoming.id)
            // A registration here takes over an imported copy: nothing of it carries over.
            .filter(|entry| entry.instance.registration != Registration::Imported)
            .map(|entry| entry.current());
        if let Some(stored) = &previous {
            if stored.last_dirty > incoming.last_dirty {
                // A stale re-registration: the stored record wins whole; only the lease
                // restarts.
                incoming = stored.clone();
            }
        }
        if incoming.overridden_status != Status::Unknown {
            state
                .leases
                .keep_override(&incoming.id, incoming.overridden_status);
        }
        let stored_override = state.leases.overridden(&incoming.id);
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
        incoming.lease.service_up = service_up_since(previous.as_ref(), incoming.status, now);
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
            let Some(entry) = state.listings.lookup(app, id) else {
                drop(state);
                self.adopt_peer_override(id, &request);
                return Err(not_registered(app, id));
            };
            let stored = &entry.instance;
            let status = effective_status(
                stored.status,
                state.leases.overridden(id),
                Some(stored.status),
                request.replication,
            );
            if status == Status::Unknown {
                return Err(not_registered(app, id));
            }
            // A client whose own node went away renews here: this node keeps it from now
            // on, or the old keeper's expiry would drop it (a shared store only).
            let adopt = stored.registration == Registration::Lease && !self.owned_here(stored);
            if status == stored.status && !adopt {
                entry.touch(now);
                None
            } else {
                Some((status, adopt))
            }
        };
        if let Some((status, adopt)) = outcome {
            // Rare: the status rules moved the published status, which is a change.
            let mut state = self.state.write();
            let Some(entry) = state.listings.lookup(app, id) else {
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
            if adopt {
                tracing::info!(%app, %id, "keeping an instance whose client now renews here");
                self.adopt(&mut state, changed, now)?;
                if let Some(entry) = state.listings.lookup(app, id) {
                    entry.touch(now);
                }
            } else {
                self.put(&mut state, changed, now)?;
            }
        }
        self.renewals.record(now);
        let state = self.state.read();
        let entry = state.listings.find(app, id)?;
        let stored = &entry.instance;
        if let Some(last_dirty) = request.last_dirty {
            if last_dirty > stored.last_dirty {
                drop(state);
                self.adopt_peer_override(id, &request);
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

    /// A replicated heartbeat the registry cannot apply still carries the peer's override,
    /// kept for when the instance registers again.
    fn adopt_peer_override(&self, id: &str, request: &RenewRequest) {
        if request.replication {
            if let Some(overridden) = request.overridden_status.filter(|s| *s != Status::Unknown) {
                self.state.write().leases.set_override(id, overridden);
            }
        }
    }

    /// Removes an instance and its override (Eureka spec §4.3).
    pub fn cancel(&self, app: &str, id: &str) -> Result<(), RegistryError> {
        let now = self.now();
        let mut state = self.state.write();
        state.leases.forget(id);
        let removal = Removal::Deregistered("cancelled".to_owned());
        self.remove(&mut state, app, id, now, removal)
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
        let entry = state.listings.find(app, id)?;
        entry.touch(now);
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
        state.leases.set_override(id, status);
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
        let entry = state.listings.find(app, id)?;
        entry.touch(now);
        if state.leases.overridden(id).is_none() {
            return Ok(());
        }
        let mut changed = entry.current();
        changed.overridden_status = Status::Unknown;
        changed.status = status;
        changed.action = Action::Modified;
        changed.last_updated = now;
        self.put(&mut state, changed, now)?;
        state.leases.forget(id);
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
        let entry = state.listings.find(app, id)?;
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

    /// Renewals counted in the last full minute.
    pub fn renewals_last_minute(&self) -> u64 {
        self.renewals.last_minute(self.now())
    }

    /// Whether self-preservation currently allows eviction (Eureka spec §9).
    pub fn eviction_allowed(&self) -> bool {
        if !self.settings.self_preservation {
            return true;
        }
        // Only leases renew: agent registrations and imported copies send no heartbeats.
        let expected_clients = self.lease_count() as f64;
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
        let mut expired: Vec<(String, String, Millis)> = state
            .listings
            .entries()
            // Agent registrations hold no lease: they stay until deregistered.
            .filter(|entry| entry.instance.registration == Registration::Lease)
            // Another node's instances are its to evict (a shared store).
            .filter(|entry| self.owned_here(&entry.instance))
            .filter(|entry| entry.instance.lease.is_expired(entry.last_renewal(), now))
            .map(|entry| {
                let instance = &entry.instance;
                let silent = now - entry.last_renewal();
                (instance.app.clone(), instance.id.clone(), silent)
            })
            .collect();
        let size = state
            .listings
            .entries()
            .filter(|entry| entry.instance.registration == Registration::Lease)
            .filter(|entry| self.owned_here(&entry.instance))
            .count();
        let limit = size - (size as f64 * self.settings.renewal_threshold).floor() as usize;
        expired.shuffle(&mut rand::thread_rng());
        expired.truncate(limit);
        for (app, id, silent) in &expired {
            tracing::info!(%app, %id, "evicting an expired lease");
            let removal =
                Removal::Evicted(format!("lease expired: no renewal for {} s", silent / 1000));
            self.remove(&mut state, app, id, now, removal)?;
        }
        Ok(expired.len())
    }
}

/// When a (re-)registered instance came up: an instance that was up keeps that time across
/// re-registrations; one up only now is up since now.
pub(super) fn service_up_since(previous: Option<&Instance>, status: Status, now: Millis) -> Millis {
    previous
        .map(|stored| stored.lease.service_up)
        .filter(|&up| up > 0)
        .unwrap_or(if status == Status::Up { now } else { 0 })
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
