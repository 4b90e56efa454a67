//! Sync with a legacy Eureka cluster, as a Eureka client would: Ferry fetches the legacy
//! registry (deltas, checked against the servers' hashcode, a full fetch when they
//! disagree) and imports what the legacy apps own; it registers the instances it owns
//! with the legacy servers, keeps them alive with heartbeats, sends their status and
//! metadata changes, and cancels them when they leave Ferry. Several server URLs fail
//! over in order, as the Java client's `defaultZone` list does.
//!
//! Why a client and not a replication peer: a peer has to be in every legacy server's peer
//! list (`eureka.client.service-url` of the servers themselves), which means changing and
//! restarting the legacy cluster Ferry is meant to replace, and it would receive and have to
//! honour every replicated write. As a client Ferry needs no change on the legacy side: it
//! registers with one server, and the servers' own replication spreads its registrations
//! to the rest of the cluster, as for any app.
//!
//! Layout: `client` (HTTP with failover), `mirror` (the legacy registry as last read),
//! `import` (legacy instances into Ferry, with the grace rules), `export` (Ferry's
//! instances to the legacy cluster), `restore` (after a restart, Ferry's own instances
//! back from their legacy copies), `error`; this module runs them in one task.
//!
//! When: an import every `interval` (the first at once); an export pass whenever Ferry's
//! registry changes (within a second, several changes in one pass) and a renewing pass
//! every `renewal_interval`. The one task ends when `shutdown` turns true, without
//! cancelling anything: Ferry's copies stay registered on the legacy side through a
//! restart (the next run adopts them) and expire after their lease if Ferry does not come
//! back.

mod client;
mod error;
mod export;
mod import;
mod mirror;
mod restore;

pub use error::EurekaSyncError;

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::watch;
use tokio::time::{self, Instant, MissedTickBehavior};

use ferry_core::registry::Registry;

use crate::SyncHandle;
use client::Client;
use export::{ExportSettings, Exporter};
use import::Importer;

/// The owner name of copies imported from a legacy Eureka cluster.
pub const OWNER: &str = "legacy-eureka";

/// How Ferry talks to a legacy Eureka cluster.
#[derive(Clone, Debug)]
pub struct EurekaSyncSettings {
    /// The servers' service URLs, as in `eureka.client.service-url.defaultZone`
    /// (`http://host:8761/eureka/`), tried in this order.
    pub urls: Vec<String>,
    /// How often the legacy registry is fetched (the Java client's
    /// `registryFetchIntervalSeconds`, 30 s).
    pub interval: Duration,
    /// How often exported copies are renewed (`leaseRenewalIntervalInSeconds`, 30 s).
    pub renewal_interval: Duration,
    /// The shortest lease exported copies are registered with; a copy takes its app's own
    /// lease when that is longer, and never less than three renewal intervals.
    pub lease_duration_secs: u32,
    /// Bound on each request to a legacy server.
    pub timeout: Duration,
    /// How long a copy that vanished from a source that was unreachable (or from its
    /// first answer after a Ferry start) is kept before it is removed.
    pub grace: Duration,
}

impl Default for EurekaSyncSettings {
    fn default() -> Self {
        EurekaSyncSettings {
            urls: Vec::new(),
            interval: Duration::from_secs(30),
            renewal_interval: Duration::from_secs(30),
            lease_duration_secs: 0,
            timeout: Duration::from_secs(5),
            grace: Duration::from_secs(90),
        }
    }
}

/// Starts syncing with the legacy cluster until `shutdown` turns true (or its sender is
/// dropped); call it within a tokio runtime (it spawns the sync task).
pub fn start(
    registry: Arc<Registry>,
    settings: EurekaSyncSettings,
    shutdown: watch::Receiver<bool>,
) -> SyncHandle {
    let handle = SyncHandle::new(OWNER, "eureka", settings.urls.clone());
    let engine = Engine::new(registry, settings, handle.clone());
    tokio::spawn(engine.run(shutdown));
    handle
}

/// How long after a change in Ferry's registry its export pass runs: changes arriving
/// meanwhile are taken in the same pass.
const EXPORT_DEBOUNCE: Duration = Duration::from_millis(500);

/// The sync task's state: one client shared by import and export, so both talk to the
/// server that answered last.
#[derive(Debug)]
struct Engine {
    registry: Arc<Registry>,
    settings: EurekaSyncSettings,
    handle: SyncHandle,
    client: Client,
    importer: Importer,
    exporter: Exporter,
    /// Whether `first_import_done` was called.
    first_import_reported: bool,
    /// Whether the last import found the cluster unreachable (logged once, not each cycle).
    unreachable: bool,
}

impl Engine {
    fn new(registry: Arc<Registry>, settings: EurekaSyncSettings, handle: SyncHandle) -> Engine {
        let client = Client::new(
            &settings.urls,
            settings.timeout,
            handle.status.clone(),
            registry.clock().clone(),
        );
        Engine {
            registry,
            settings,
            handle,
            client,
            importer: Importer::default(),
            exporter: Exporter::default(),
            first_import_reported: false,
            unreachable: false,
        }
    }

    fn export_settings(&self) -> ExportSettings {
        ExportSettings {
            renewal_interval: self.settings.renewal_interval,
            lease_duration_secs: self.settings.lease_duration_secs,
            grace: self.settings.grace,
        }
    }

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut imports = time::interval(self.settings.interval.max(MIN_INTERVAL));
        imports.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut renewals = time::interval(self.settings.renewal_interval.max(MIN_INTERVAL));
        renewals.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut changes = self.registry.watch();
        // The registry holds the sender while we hold the registry; this is only for form.
        let mut watching = true;
        let mut export_due: Option<Instant> = None;
        let mut imported_last = false;
        loop {
            // Biased: the first import runs before the first export pass, so copies a
            // previous run exported are adopted, not registered again. But an import from
            // a slow server (a legacy JVM just restarted, a loaded host) can take longer
            // than the interval, and then the next one is always due: after an import, a
            // renewal that is due goes first, or imports would run back to back while
            // Ferry's copies lapsed on the legacy side and a restarted server never got
            // them back.
            let renewal_due = imported_last && renewals.tick().now_or_never().is_some();
            let work = if renewal_due {
                Work::Export { renew: true }
            } else {
                let debounce = async {
                    match export_due {
                        Some(at) => time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|stop| *stop) => break,
                    _ = imports.tick() => Work::Import,
                    _ = renewals.tick() => Work::Export { renew: true },
                    changed = changes.changed(), if watching => {
                        watching = changed.is_ok();
                        export_due.get_or_insert_with(|| Instant::now() + EXPORT_DEBOUNCE);
                        continue;
                    }
                    () = debounce => Work::Export { renew: false },
                }
            };
            imported_last = matches!(work, Work::Import);
            if let Work::Export { .. } = work {
                export_due = None;
            }
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => break,
                () = self.work(work) => {}
            }
        }
        tracing::info!(
            "eureka sync: stopped; exported copies stay registered until their lease ends"
        );
    }

    async fn work(&mut self, work: Work) {
        match work {
            Work::Import => self.import().await,
            Work::Export { renew } => {
                let settings = self.export_settings();
                let result = self
                    .exporter
                    .pass(
                        &self.client,
                        &self.registry,
                        &self.importer.mirror,
                        &settings,
                        renew,
                    )
                    .await;
                let exported = self.exporter.exported();
                self.handle
                    .status
                    .update(|status| status.exported = exported);
                if let Err(error) = result {
                    if error.is_unreachable() {
                        // The source is down from the moment any exchange finds it so, not
                        // from the next import: its copies are stale now, as /api/sync says.
                        let imported = self.registry.imported(OWNER).len();
                        self.handle.status.update(|status| {
                            status.imported = imported;
                            status.stale = imported;
                        });
                    }
                    tracing::debug!(%error, "eureka sync: export pass stopped");
                }
            }
        }
    }

    async fn import(&mut self) {
        let result = self
            .importer
            .cycle(&self.client, &self.registry, self.settings.grace)
            .await;
        let report = match &result {
            Ok(outcome) => {
                if self.unreachable {
                    tracing::info!("eureka sync: legacy cluster reachable again");
                }
                tracing::debug!(?outcome, "eureka sync: imported");
                true
            }
            Err(error) if error.is_unreachable() => {
                if !self.unreachable {
                    tracing::warn!(%error, "eureka sync: legacy cluster unreachable; imported copies kept");
                }
                true
            }
            Err(_) => false,
        };
        self.unreachable = result.as_ref().is_err_and(EurekaSyncError::is_unreachable);
        if report && !self.first_import_reported {
            self.first_import_reported = true;
            self.handle.first_import_done();
        }
    }
}

/// The shortest interval the task runs at (an interval of zero would spin).
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// What the task does next.
#[derive(Clone, Copy, Debug)]
enum Work {
    Import,
    Export { renew: bool },
}
