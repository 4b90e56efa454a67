//! Import: every interval, read the legacy registry into the mirror (a full fetch first and
//! after any doubt, deltas otherwise) and reconcile Ferry's imported copies against it by
//! diff.
//!
//! The rules:
//! - Every legacy instance that is not a copy Ferry exported (`ferry-owner: ferry`) is
//!   imported with `Registry::import`, which writes only what changed and never touches an
//!   instance Ferry owns itself (an app that registered with Ferry owns its record). Each
//!   cycle offers it only the instances the last read brought (all of them after a full
//!   fetch) and any Ferry no longer holds, so a quiet cycle over 10,000 instances copies
//!   none of them.
//! - An imported copy the legacy side no longer holds is removed with `unimport`, unless
//!   removals are held: for `grace` after contact is (re)gained (the first fetch after a
//!   Ferry start, when Ferry already holds copies; the first fetch after the cluster was
//!   unreachable), and for `grace` when one reconcile would remove more than half of the
//!   copies and more than two (a restarted legacy server starts empty; its apps register
//!   again within one heartbeat, 30 s). Held copies are checked every interval and removed
//!   once the window ends if they are still gone.
//! - While the cluster is unreachable every copy stays, counted as stale.
//! - A document that does not parse changes nothing (the cycle is skipped and the next
//!   read is a full fetch); an instance that does not decode is skipped alone. Both count as
//!   errors, not as the cluster being down.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use ferry_core::model::{Instance, Millis};
use ferry_core::registry::{Imported, Registry};

use super::client::{Answer, Client, Request};
use super::error::EurekaSyncError;
use super::mirror::{exported_by_ferry, Document, Mirror};
use super::OWNER;

/// Whether the copies found gone are removed now or held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Removal {
    Now,
    Held,
}

/// The grace window during which removals are held.
#[derive(Debug, Default)]
pub(crate) struct RemovalHold {
    /// Removals are held while `now` is before this.
    until: Option<Millis>,
}

impl RemovalHold {
    /// Opens (or extends) a window of `grace` from `now`.
    pub fn open(&mut self, now: Millis, grace: Duration) {
        let until = now.saturating_add(grace.as_millis().try_into().unwrap_or(Millis::MAX));
        self.until = Some(self.until.map_or(until, |open| open.max(until)));
    }

    /// Whether `absent` of `imported` copies found gone are removed now. A burst (more than
    /// half and more than two) opens a window; when a window ends, whatever is still gone
    /// goes, burst or not, so a window is never followed by another for the same burst.
    pub fn decide(
        &mut self,
        now: Millis,
        absent: usize,
        imported: usize,
        grace: Duration,
    ) -> Removal {
        if let Some(until) = self.until {
            if now < until {
                return Removal::Held;
            }
            self.until = None;
            return Removal::Now;
        }
        if is_burst(absent, imported) {
            self.open(now, grace);
            return Removal::Held;
        }
        Removal::Now
    }
}

/// More than half of the copies, and more than two of them.
fn is_burst(absent: usize, imported: usize) -> bool {
    absent > 2 && absent * 2 > imported
}

/// The outcome of one reconcile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Reconciled {
    /// Copies written (new or changed).
    pub written: usize,
    /// Copies removed.
    pub removed: usize,
    /// Copies gone from the legacy side but kept for now.
    pub held: usize,
    /// Copies held after the reconcile.
    pub imported: usize,
}

/// Makes Ferry's copies match the mirror; see the module rules.
pub(crate) fn reconcile(
    registry: &Registry,
    mirror: &Mirror,
    hold: &mut RemovalHold,
    now: Millis,
    grace: Duration,
) -> Reconciled {
    let mut outcome = Reconciled::default();
    let offered = mirror
        .instances()
        .filter(|found| !exported_by_ferry(found))
        .filter(|found| {
            mirror.is_changed(&found.app, &found.id) || !registry.holds(&found.app, &found.id)
        });
    for instance in offered {
        match registry.import(OWNER, instance.clone()) {
            Ok(Imported::Written) => outcome.written += 1,
            Ok(Imported::Unchanged | Imported::OwnedHere) => {}
            Err(error) => {
                tracing::warn!(app = %instance.app, id = %instance.id, %error,
                    "eureka sync: an imported copy could not be written");
            }
        }
    }
    let copies = registry.imported(OWNER);
    let absent: Vec<&Instance> = copies
        .iter()
        .map(AsRef::as_ref)
        .filter(|copy| !mirror.holds_foreign(&copy.app, &copy.id))
        .collect();
    match hold.decide(now, absent.len(), copies.len(), grace) {
        Removal::Held => outcome.held = absent.len(),
        Removal::Now => {
            for copy in absent {
                match registry.unimport(&copy.app, &copy.id) {
                    Ok(true) => outcome.removed += 1,
                    Ok(false) => {}
                    Err(error) => {
                        outcome.held += 1;
                        tracing::warn!(app = %copy.app, id = %copy.id, %error,
                            "eureka sync: an imported copy could not be removed");
                    }
                }
            }
        }
    }
    outcome.imported = copies.len() - outcome.removed;
    outcome
}

/// The importer's state between cycles.
#[derive(Debug, Default)]
pub(crate) struct Importer {
    pub mirror: Mirror,
    hold: RemovalHold,
    /// Whether a fetch has succeeded since Ferry started.
    fetched_once: bool,
    /// Whether contact was lost since the last successful fetch: the next one reads the
    /// whole registry (a server that restarted may announce the same hashcode over other
    /// instances) and opens a grace window.
    regaining: bool,
}

impl Importer {
    /// One cycle: read, then reconcile. `Err` when nothing was reconciled (the cluster is
    /// unreachable, or its answer could not be used); the status is written either way.
    pub async fn cycle(
        &mut self,
        client: &Client,
        registry: &Registry,
        grace: Duration,
    ) -> Result<Reconciled, EurekaSyncError> {
        if client.take_lost_contact() {
            self.regaining = true;
            self.mirror.invalidate();
        }
        let read = self.refresh(client).await;
        let now = client.now();
        if let Err(error) = read {
            let imported = registry.imported(OWNER).len();
            let unreachable = error.is_unreachable();
            client.status().update(|status| {
                status.imported = imported;
                status.stale = if unreachable { imported } else { 0 };
            });
            if !unreachable {
                tracing::warn!(%error, "eureka sync: legacy registry read refused; nothing changed");
                client.status().failed(&error.to_string(), false, now);
            }
            return Err(error);
        }
        // Contact (re)gained: a cluster that was down, or the first answer since Ferry
        // started while Ferry holds copies, may not yet have heard from all its apps.
        let regained = std::mem::take(&mut self.regaining);
        if regained || (!self.fetched_once && !registry.imported(OWNER).is_empty()) {
            self.hold.open(now, grace);
        }
        if !self.fetched_once {
            super::restore::restore_exported(registry, &self.mirror, client).await;
        }
        self.fetched_once = true;
        let outcome = reconcile(registry, &self.mirror, &mut self.hold, now, grace);
        self.mirror.clear_changed();
        if let Err(error) = registry.flush_imports() {
            tracing::warn!(%error, "eureka sync: imported copies not made durable");
            client.status().failed(&error.to_string(), false, now);
        }
        client.status().update(|status| {
            status.imported = outcome.imported;
            status.stale = 0;
            status.pending_removals = outcome.held;
        });
        Ok(outcome)
    }

    /// Brings the mirror up to date: a delta when it is complete, checked against the
    /// hashcode; a full fetch otherwise or on a mismatch.
    async fn refresh(&mut self, client: &Client) -> Result<(), EurekaSyncError> {
        if self.mirror.is_complete() {
            let answer = client
                .send(Request::new(Method::GET, &["apps", "delta"]))
                .await?;
            client.status().update(|status| status.delta_fetches += 1);
            let document = match read_document(client, "delta", answer) {
                Ok(document) => document,
                Err(error) => {
                    self.mirror.invalidate();
                    return Err(error);
                }
            };
            if self
                .mirror
                .apply_delta(document.instances, &document.hashcode)
            {
                return Ok(());
            }
            tracing::debug!(
                announced = %document.hashcode,
                held = %self.mirror.hashcode(),
                "eureka sync: delta hashcode mismatch, full fetch"
            );
        }
        let answer = client
            .send(Request::new(Method::GET, &["apps", ""]))
            .await?;
        client.status().update(|status| status.full_fetches += 1);
        let document = read_document(client, "registry", answer)?;
        self.mirror.replace(document.instances);
        Ok(())
    }
}

/// The answer as a document; a refused instance is logged and counted, the rest kept.
fn read_document(
    client: &Client,
    what: &'static str,
    answer: Answer,
) -> Result<Document, EurekaSyncError> {
    if answer.status != StatusCode::OK {
        return Err(EurekaSyncError::Refused {
            operation: if what == "delta" {
                "a delta fetch"
            } else {
                "a registry fetch"
            },
            server: answer.server,
            status: answer.status.as_u16(),
        });
    }
    let now = client.now();
    let mut document =
        Document::parse(&answer.body, now).map_err(|reason| EurekaSyncError::Malformed {
            what,
            server: answer.server.clone(),
            reason,
        })?;
    for source in std::mem::take(&mut document.refused) {
        let error = EurekaSyncError::BadInstance {
            what,
            server: answer.server.clone(),
            source,
        };
        tracing::warn!(%error, "eureka sync: legacy instance skipped");
        client.status().failed(&error.to_string(), false, now);
    }
    Ok(document)
}

#[cfg(test)]
mod tests;
