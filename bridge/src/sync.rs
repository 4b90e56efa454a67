//! Starts the sync adapters the command line asks for (`--sync-eureka`, `--sync-consul`)
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

/// Starts every sync the command line asks for; none when it asks for none.
pub fn start(
    cli: &Cli,
    registry: &Arc<Registry>,
    kv: &Arc<KvStore>,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<SyncHandle>> {
    let interval = seconds(cli.sync_interval, "sync-interval")?.max(Duration::from_millis(100));
    let grace = seconds(cli.sync_grace, "sync-grace")?;
    let timeout = seconds(cli.sync_timeout, "sync-timeout")?.max(Duration::from_millis(100));
    let mut handles = Vec::new();
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
        tracing::info!(urls = ?urls, "syncing with a legacy Eureka cluster");
        handles.push(ferry_sync::eureka::start(
            registry.clone(),
            EurekaSyncSettings {
                urls,
                interval,
                renewal_interval: interval,
                timeout,
                grace,
                ..EurekaSyncSettings::default()
            },
            shutdown.clone(),
        ));
    }
    if let Some(address) = cli
        .sync_consul
        .as_deref()
        .map(str::trim)
        .filter(|address| !address.is_empty())
    {
        tracing::info!(address, "syncing with a legacy Consul");
        handles.push(ferry_sync::consul::start(
            registry.clone(),
            kv.clone(),
            ConsulSyncSettings {
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
            },
            shutdown.clone(),
        ));
    }
    forget_unsynced(registry, &handles)?;
    Ok(handles)
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
