//! Wires one Ferry node: the registry, the protocol views on their listeners, the admin
//! API, the syncs with legacy registries and the background tasks, then waits for a signal and shuts down in order
//! (not ready, stop accepting, drain).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use ferry_config_server::{ConfigSources, Repository, TextEncryptor};
use ferry_consul::{ConsulSettings, NodeInfo};
use ferry_core::health::{self, HealthSettings};
use ferry_core::registry::{eviction, ConfigServerListing};
use ferry_core::{Registry, RegistrySettings};
use ferry_eureka::EurekaSettings;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;

use crate::admin::{self, Admin};
use crate::admin_auth::WritePolicy;
use crate::cli::{seconds, Cli, Listen};
use crate::metrics::{self, Metrics};
use crate::shutdown;
use crate::store_report::StoreReport;
use ferry_http::listen::{serve, ConnectionLimits};
use ferry_proxy::cutover::CutoverTable;
use ferry_proxy::mesh::{Mesh, MeshSettings};
use ferry_proxy::metrics::ProxyMetrics;
use ferry_proxy::upstream::UpstreamSettings;
use hyper_util::service::TowerToHyperService;

pub async fn run(
    cli: Cli,
    services: std::collections::BTreeMap<String, ferry_proxy::mesh::ServiceOverrides>,
) -> anyhow::Result<()> {
    let data_dir = crate::data_dir::open(&cli.data_dir)?;
    let node = NodeInfo {
        name: cli.node_name.clone().unwrap_or_else(host_name),
        id: data_dir.node_id().to_owned(),
        address: advertise_host(&cli),
        datacenter: cli.datacenter.clone(),
    };
    // A node with an identity is a sidecar: it publishes where its inbound listener is.
    let sidecar_mode = cli.ca_issuer.is_some() || cli.join_token.is_some();
    let inbound_advertised = crate::sidecar::advertised(
        cli.inbound_listen,
        cli.inbound_advertise.as_deref(),
        &node.address,
    );
    let opened = crate::store::open(
        &cli.store,
        RegistrySettings {
            self_preservation: cli.eureka_self_preservation,
            delta_retention: Duration::from_secs(cli.eureka_delta_retention),
            ..RegistrySettings::default()
        },
        &cli.data_dir,
        &node.name,
        Duration::from_secs(cli.store_lease_ttl),
        Duration::from_secs(cli.store_wait),
        sidecar_mode.then(|| inbound_advertised.clone()),
    )
    .await?;
    let registry = opened.registry;
    let kv = opened.kv;
    let etcd = opened.etcd;
    let store = Arc::new(StoreReport::new(
        registry.clone(),
        etcd.clone(),
        node.name.clone(),
    ));
    let proxy_metrics = Arc::new(ProxyMetrics::new());
    let eureka_fetches = Arc::new(ferry_eureka::FetchCounts::default());
    let metrics = Arc::new(Metrics::new(
        &proxy_metrics,
        eureka_fetches.clone(),
        store.clone(),
    ));
    let ready = Arc::new(AtomicBool::new(false));
    let limits = ConnectionLimits {
        idle_timeout: seconds(cli.idle_timeout, "idle-timeout")?,
        max_connections: 10_000,
        max_header_bytes: cli.max_header_bytes,
        drain_timeout: Duration::from_secs(10),
    };

    let mut apis: Vec<(&'static str, Listen, Router)> = Vec::new();
    let eureka_settings = EurekaSettings {
        max_body_bytes: cli.max_body_bytes,
        body_timeout: seconds(cli.body_timeout, "body-timeout")?,
        ..EurekaSettings::default()
    };
    apis.push((
        "eureka",
        cli.eureka_listen,
        ferry_eureka::routes(registry.clone(), eureka_settings, eureka_fetches),
    ));
    let mut consul_settings = ConsulSettings::new(node.clone());
    consul_settings.token = cli.consul_token.clone().filter(|token| !token.is_empty());
    consul_settings.path_prefix = cli.consul_path_prefix.clone();
    consul_settings.anonymous_writes =
        !matches!(cli.consul_listen, Listen::On(address) if !address.ip().is_loopback());
    if !consul_settings.anonymous_writes && consul_settings.token.is_none() {
        tracing::warn!(
            "the Consul API faces the network and no --consul-token is set: it takes no \
             registrations or KV writes (set a token, or listen on loopback)"
        );
    }
    consul_settings.body_timeout = seconds(cli.body_timeout, "body-timeout")?;
    // KV values keep Consul's own 512 KiB limit; every other body takes the common one.
    consul_settings.max_body_bytes = cli.max_body_bytes;
    apis.push((
        "consul",
        cli.consul_listen,
        ferry_consul::routes(registry.clone(), kv.clone(), consul_settings),
    ));
    let config_repository = match &cli.config_repo {
        Some(location) => Some(Arc::new(
            Repository::open(location).map_err(anyhow::Error::msg)?,
        )),
        None => None,
    };
    // A blank key is no key, as Spring's `StringUtils.hasText` has it.
    let encryptor = match cli
        .encrypt_key
        .as_deref()
        .filter(|key| !key.trim().is_empty())
    {
        Some(key) => Some(Arc::new(
            TextEncryptor::new(key, &cli.encrypt_salt)
                .map_err(|error| anyhow::anyhow!("--encrypt-key/--encrypt-salt: {error}"))?,
        )),
        None => None,
    };
    apis.push((
        "config",
        cli.config_listen,
        ferry_config_server::routes(ConfigSources {
            repository: config_repository.clone(),
            kv: Some(kv.clone()),
            validate_profiles: cli.config_validate_profiles,
            encryptor,
            decrypt: cli.config_decrypt,
            max_body_bytes: cli.max_body_bytes,
            body_timeout: seconds(cli.body_timeout, "body-timeout")?,
        }),
    ));
    let (stop, stopping) = shutdown::channel();
    let mut cutover = CutoverTable::load(&cli.data_dir, cli.outbound_ports)?;
    // With etcd the modes are the shared table's, read before the mesh opens anything; the
    // file keeps this node's ports.
    let shared_cutover = match &etcd {
        Some(store) => {
            let shared = ferry_etcd::SharedCutover::new(store);
            let (table, revision) = shared
                .load()
                .await
                .context("cannot read the cutover table from etcd")?;
            cutover.replace_modes(&crate::shared::modes(&table))?;
            tracing::info!(
                services = table.len(),
                revision,
                "cutover table loaded from etcd"
            );
            Some((
                Arc::new(crate::shared::EtcdModes::new(shared.clone())),
                shared,
                revision,
            ))
        }
        None => None,
    };
    let mut leaders = crate::shared::Leaders::default();
    // This node's certificate (and, with --ca-issuer, its candidacy to sign), before any
    // listener serves: the mesh's hop to other nodes and the inbound listener need it.
    let identity = crate::identity::start(
        crate::identity::Settings::from_cli(&cli),
        etcd.as_ref(),
        &node.name,
        stopping.clone(),
    )
    .await?;
    if let Some(identity) = &identity {
        metrics.watch_identity(identity.figures.clone());
        leaders.0.extend(identity.signer_leader());
    }
    let proxy_connect_timeout = seconds(cli.proxy_connect_timeout, "proxy-connect-timeout")?;
    let sidecar = match (&identity, &etcd) {
        (Some(identity), Some(store)) => Some(crate::sidecar::sidecar(
            identity.live.clone(),
            store.clone(),
            proxy_connect_timeout,
            proxy_metrics.peer.clone(),
        )),
        _ => None,
    };
    if let (Some(identity), Some(store)) = (&identity, &etcd) {
        crate::sidecar::open_inbound(
            cli.inbound_listen,
            &inbound_advertised,
            registry.clone(),
            identity.live.clone(),
            Arc::new(crate::allow::EtcdAllow::new(
                store.clone(),
                registry.clone(),
            )),
            proxy_connect_timeout,
            proxy_metrics.inbound.clone(),
            limits,
            stopping.clone(),
        )
        .await?;
    }
    let mesh = Mesh::start(
        registry.clone(),
        cutover,
        MeshSettings {
            bind: cli.outbound_bind,
            advertise_host: node.address.clone(),
            limits,
            upstream: UpstreamSettings {
                request_timeout: seconds(cli.proxy_request_timeout, "proxy-request-timeout")?,
                connect_timeout: proxy_connect_timeout,
                strategy: cli.proxy_balancer.into(),
                ..UpstreamSettings::default()
            },
            services,
            sidecar,
            shared: shared_cutover
                .as_ref()
                .map(|(modes, _, _)| modes.clone() as Arc<dyn ferry_proxy::mesh::SharedModes>),
        },
        proxy_metrics.clone(),
        stopping.clone(),
    )
    .await?;
    if let Some((modes, shared, revision)) = &shared_cutover {
        tokio::spawn(crate::shared::follow_cutovers(
            mesh.clone(),
            registry.clone(),
            modes.clone(),
            shared.watch(*revision),
            stopping.clone(),
        ));
    }
    // After the mesh restored its routes, so the first export already shows services in
    // the mesh at the proxy.
    let sync_plan = crate::sync::plan(&cli)?;
    let syncs = match &etcd {
        None => {
            let handles = crate::sync::start_plan(&sync_plan, &registry, &kv, &stopping)?;
            metrics.watch_syncs(&handles);
            crate::sync::Running::new(handles)
        }
        // Only the node leading job `sync` runs it; a node without sync flags does not run.
        Some(store) if !sync_plan.is_empty() => {
            let leader = Arc::new(ferry_etcd::Leader::campaign(
                store,
                "sync",
                ferry_etcd::leader::DEFAULT_TTL,
            ));
            let running = crate::sync::Running::default();
            tokio::spawn(crate::sync::run_while_leading(
                sync_plan,
                registry.clone(),
                kv.clone(),
                leader.subscribe(),
                stopping.clone(),
                running.clone(),
                metrics.clone(),
            ));
            leaders.0.push(leader);
            running
        }
        Some(_) => crate::sync::Running::default(),
    };
    // Sampled whether or not anyone watches, so the dashboard opens on 15 minutes of history.
    let history = Arc::new(crate::history::History::new(&proxy_metrics));
    let sampler = history
        .clone()
        .spawn(registry.clock().clone(), stopping.clone());
    let admin = Admin {
        mesh: mesh.clone(),
        registry: registry.clone(),
        metrics: metrics.clone(),
        ready: ready.clone(),
        syncs: syncs.clone(),
        leaders: leaders.clone(),
        store,
        identity: identity.as_ref().map(|identity| identity.live.clone()),
        history: history.clone(),
        kv: kv.clone(),
        config_repository,
    };
    let writes = WritePolicy::new(
        cli.admin_token.as_deref(),
        matches!(cli.admin_listen, Listen::On(address) if address.ip().is_loopback()),
    );
    apis.push(("admin", cli.admin_listen, admin::routes(admin, writes)));

    // Bind everything before serving anything, so a bad address fails the start cleanly.
    let mut bound = Vec::new();
    for (api, listen, router) in apis {
        let Listen::On(address) = listen else {
            tracing::info!(api, "listener turned off");
            continue;
        };
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen for the {api} API on {address}"))?;
        tracing::info!(api, address = %listener.local_addr()?, "listening");
        let router = router
            .fallback(not_found)
            .layer(axum::middleware::from_fn_with_state(
                (metrics.clone(), api),
                metrics::record,
            ))
            .layer(CatchPanicLayer::custom(panic_response));
        bound.push((api, listener, router));
    }

    list_config_server(&registry, &cli, &node, &bound)?;
    // A node that does not lead job `sync` has no import to wait for.
    wait_for_campaigns(&leaders, &syncs).await;
    crate::sync::wait_first_imports(&syncs.current()).await;

    let eviction_every = seconds(cli.eureka_eviction_interval, "eureka-eviction-interval")?
        .max(Duration::from_millis(10));
    let eviction = eviction::spawn(registry.clone(), eviction_every);
    let checks = health::spawn(
        registry.clone(),
        Some(kv.clone()),
        HealthSettings {
            minimum_deregister_after: seconds(
                cli.consul_min_deregister_after,
                "consul-min-deregister-after",
            )?,
            ..HealthSettings::default()
        },
    );
    // The admin listener stops last, so `/ready` answers 503 while the others drain.
    let (stop_admin, admin_stopping) = shutdown::channel();
    let (admin_server, servers): (Vec<_>, Vec<_>) = bound
        .into_iter()
        .map(|(api, listener, router)| {
            let stopping = if api == "admin" {
                admin_stopping.clone()
            } else {
                stopping.clone()
            };
            let server = tokio::spawn(serve(
                api,
                listener,
                TowerToHyperService::new(router),
                limits,
                stopping,
            ));
            (api, server)
        })
        .partition(|(api, _)| *api == "admin");
    ready.store(true, Ordering::Release);
    tracing::info!(store = registry.store_name(), "ferry is ready");

    shutdown::signalled().await;
    ready.store(false, Ordering::Release);
    // First, so the other nodes take this node's jobs over at once.
    leaders.resign().await;
    let _ = stop.send(true);
    eviction.abort();
    checks.abort();
    sampler.abort();
    for (_, server) in servers {
        let _ = server.await;
    }
    let _ = stop_admin.send(true);
    for (_, server) in admin_server {
        let _ = server.await;
    }
    tracing::info!("ferry stopped");
    Ok(())
}

/// Lists this node's Config Server in the registry at the config listener's bound port,
/// or removes a listing an earlier start left when the listener or the listing is off.
fn list_config_server(
    registry: &Registry,
    cli: &Cli,
    node: &NodeInfo,
    bound: &[(&'static str, TcpListener, Router)],
) -> anyhow::Result<()> {
    let config_port = bound
        .iter()
        .find(|(api, _, _)| *api == "config")
        .map(|(_, listener, _)| listener.local_addr().map(|address| address.port()))
        .transpose()?;
    let name = cli.config_service_name.trim();
    match config_port {
        Some(port) if !name.is_empty() && !name.eq_ignore_ascii_case("off") => {
            let listing = ConfigServerListing {
                service_name: name.to_owned(),
                node: node.name.clone(),
                host: node.address.clone(),
                port,
            };
            registry
                .list_config_server(&listing)
                .context("cannot list the Config Server in the registry")?;
            tracing::info!(service = name, host = %node.address, port, "Config Server listed");
        }
        _ => registry
            .unlist_config_server(&node.name)
            .context("cannot remove the Config Server's listing")?,
    }
    Ok(())
}

/// Waits (at most 3 s) until each campaign knows who leads and, where this node won, until
/// its syncs have started, so a leader's first import is awaited as in embedded mode and a
/// node that does not lead has none to wait for. Embedded mode campaigns for nothing.
async fn wait_for_campaigns(leaders: &crate::shared::Leaders, syncs: &crate::sync::Running) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    // Only `sync` has a first import to wait for; the other jobs (`ca-signer`) do not.
    for leader in leaders.0.iter().filter(|leader| leader.job() == "sync") {
        let decided = || {
            leader.holder().node.is_some() && (!leader.is_leader() || !syncs.current().is_empty())
        };
        while !decided() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "ferry".to_owned())
}

/// What apps are told to call: the flag, else the first listener's IP, else the host name
/// (a wildcard address is no address to call).
fn advertise_host(cli: &Cli) -> String {
    if let Some(host) = &cli.advertise_host {
        return host.clone();
    }
    [
        cli.eureka_listen,
        cli.consul_listen,
        cli.config_listen,
        cli.admin_listen,
    ]
    .into_iter()
    .find_map(|listen| match listen {
        Listen::On(address) if !address.ip().is_unspecified() => Some(address.ip().to_string()),
        _ => None,
    })
    .unwrap_or_else(host_name)
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such resource\n").into_response()
}

/// A panic in a handler is a bug: log it, answer 500, keep serving.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = message, "a request handler panicked");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
}
