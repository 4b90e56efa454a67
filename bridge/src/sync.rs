//! Starts the sync adapters the command line asks for (`--sync-eureka`, `--sync-consul`)
//! (with etcd, only on the node leading job `sync`, and only while it leads: `run_while_leading`)
//! and holds the node's start until their first import, so a restarted Ferry never answers
//! without the legacy instances it knew; copies kept from a source no longer synced go.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use ferry_core::kv::KvStore;
use ferry_core::Registry;
use ferry_sync::consul::ConsulSyncSettings;
use ferry_sync::eureka::EurekaSyncSettings;
use ferry_sync::SyncHandle;
use tokio::sync::watch;

use crate::cli::{seconds, Cli};

/// The longest a start waits for the first imports. An adapter reports its first import
/// done after one round of every endpoint failing too, so this bounds only a legacy side
/// that accepts connections and then hangs.
const FIRST_IMPORT_WAIT: Duration = Duration::from_secs(20);

/// The syncs the command line asks for, checked.
#[derive(Clone, Debug, Default)]
pub struct SyncPlan {
    eureka: Option<EurekaSyncSettings>,
    consul: Option<ConsulSyncSettings>,
}

impl SyncPlan {
    pub fn is_empty(&self) -> bool {
        self.eureka.is_none() && self.consul.is_none()
    }
}

/// Reads and checks the sync flags.
pub fn plan(cli: &Cli) -> anyhow::Result<SyncPlan> {
    let interval = seconds(cli.sync_interval, "sync-interval")?.max(Duration::from_millis(100));
    let grace = seconds(cli.sync_grace, "sync-grace")?;
    let timeout = seconds(cli.sync_timeout, "sync-timeout")?.max(Duration::from_millis(100));
    let mut plan = SyncPlan::default();
    let urls: Vec<String> = cli
        .sync_eureka
        .iter()
        .map(|url| url.trim().to_owned())
        .filter(|url| !url.is_empty())
        .collect();
    if !urls.is_empty() {
        for url in &urls {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("--sync-eureka: `{url}` is not an http:// or https:// service URL");
            }
        }
        plan.eureka = Some(EurekaSyncSettings {
            urls,
            interval,
            renewal_interval: interval,
            timeout,
            grace,
            ..EurekaSyncSettings::default()
        });
    }
    if let Some(address) = cli
        .sync_consul
        .as_deref()
        .map(str::trim)
        .filter(|address| !address.is_empty())
    {
        plan.consul = Some(ConsulSyncSettings {
            address: address.to_owned(),
            token: cli
                .sync_consul_token
                .clone()
                .filter(|token| !token.is_empty()),
            interval,
            kv_prefix: cli
                .sync_consul_kv_prefix
                .clone()
                .filter(|prefix| !prefix.is_empty()),
            timeout,
            grace,
        });
    }
    Ok(plan)
}

/// Starts the syncs of `plan`; they run until `shutdown`.
pub fn start_plan(
    plan: &SyncPlan,
    registry: &Arc<Registry>,
    kv: &Arc<KvStore>,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<SyncHandle>> {
    let mut handles = Vec::new();
    if let Some(settings) = &plan.eureka {
        tracing::info!(urls = ?settings.urls, "syncing with a legacy Eureka cluster");
        handles.push(ferry_sync::eureka::start(
            registry.clone(),
            settings.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(settings) = &plan.consul {
        tracing::info!(address = %settings.address, "syncing with a legacy Consul");
        handles.push(ferry_sync::consul::start(
            registry.clone(),
            kv.clone(),
            settings.clone(),
            shutdown.clone(),
        ));
    }
    forget_unsynced(registry, &handles)?;
    Ok(handles)
}

/// The syncs running on this node now: all of them in embedded mode; with etcd, those of the
/// current term while this node leads job `sync`, none otherwise.
#[derive(Clone, Debug, Default)]
pub struct Running(Arc<std::sync::Mutex<Vec<SyncHandle>>>);

impl Running {
    pub fn new(handles: Vec<SyncHandle>) -> Running {
        Running(Arc::new(std::sync::Mutex::new(handles)))
    }

    pub fn current(&self) -> Vec<SyncHandle> {
        self.0
            .lock()
            .map(|handles| handles.clone())
            .unwrap_or_default()
    }

    fn set(&self, handles: Vec<SyncHandle>) {
        if let Ok(mut running) = self.0.lock() {
            *running = handles;
        }
    }
}

/// With a shared store: runs the syncs of `plan` only while `leading` says this node leads
/// job `sync`, each term with a shutdown of its own, so a node that loses the lead stops
/// importing and exporting (its exports stay registered in the legacy registry, as at any
/// shutdown, and the new leader's exports renew them). Ends at `shutdown`.
pub async fn run_while_leading(
    plan: SyncPlan,
    registry: Arc<Registry>,
    kv: Arc<KvStore>,
    mut leading: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
    running: Running,
    metrics: Arc<crate::metrics::Metrics>,
) {
    loop {
        tokio::select! {
            led = leading.wait_for(|leads| *leads) => if led.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let (end_term, term) = watch::channel(false);
        match start_plan(&plan, &registry, &kv, &term) {
            Ok(handles) => {
                tracing::info!(
                    syncs = handles.len(),
                    "leading job `sync`: legacy syncs started"
                );
                metrics.watch_syncs(&handles);
                running.set(handles);
            }
            Err(error) => tracing::error!(%error, "cannot start the legacy syncs"),
        }
        let stop = tokio::select! {
            // A campaign that ended is a lead lost for good.
            led = leading.wait_for(|leads| !*leads) => led.is_err(),
            _ = shutdown.wait_for(|stop| *stop) => true,
        };
        let _ = end_term.send(true);
        running.set(Vec::new());
        metrics.watch_syncs(&[]);
        if stop {
            return;
        }
        tracing::info!("lost job `sync`: legacy syncs stopped");
    }
}
/// Removes the copies a previous run imported from a source this run does not sync with
/// (the sync was turned off at the end of a migration): nothing would ever update them.
fn forget_unsynced(registry: &Registry, handles: &[SyncHandle]) -> anyhow::Result<()> {
    let synced: Vec<String> = handles
        .iter()
        .map(|handle| handle.status.snapshot().name)
        .collect();
    for owner in [ferry_sync::eureka::OWNER, ferry_sync::consul::OWNER] {
        if synced.iter().any(|name| name == owner) {
            continue;
        }
        let copies = registry.imported(owner);
        for copy in &copies {
            registry.unimport(&copy.app, &copy.id)?;
        }
        if !copies.is_empty() {
            registry.flush_imports()?;
            tracing::info!(
                source = owner,
                removed = copies.len(),
                "copies of a registry no longer synced removed"
            );
        }
    }
    Ok(())
}

/// Waits for every sync's first import, at most `FIRST_IMPORT_WAIT` in all.
pub async fn wait_first_imports(handles: &[SyncHandle]) {
    for handle in handles {
        let name = handle.status.snapshot().name;
        if handle.wait_first_import(FIRST_IMPORT_WAIT).await {
            tracing::info!(source = %name, "first import done");
        } else {
            tracing::warn!(source = %name, "serving before the first import completed");
        }
    }
}
