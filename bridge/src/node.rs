//! Wires one Ferry node: the registry, the protocol views on their listeners, the admin
//! API and the background tasks, then waits for a signal and shuts down in order
//! (not ready, stop accepting, drain).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use ferry_registry_adapters::eureka::{self, EurekaSettings};
use ferry_registry_adapters::registry::eviction;
use ferry_registry_adapters::store::MemoryStore;
use ferry_registry_adapters::{Clock, Registry, RegistrySettings};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;

use crate::admin::{self, Admin};
use crate::cli::{seconds, Cli, Listen};
use crate::metrics::{self, Metrics};
use crate::serve::{serve, ConnectionLimits};
use crate::shutdown;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let _data_dir = crate::data_dir::open(&cli.data_dir)?;
    let registry = Arc::new(Registry::new(
        RegistrySettings {
            self_preservation: cli.eureka_self_preservation,
            delta_retention: Duration::from_secs(cli.eureka_delta_retention),
            ..RegistrySettings::default()
        },
        Clock::System,
        Arc::new(MemoryStore),
    ));
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let limits = ConnectionLimits {
        idle_timeout: seconds(cli.idle_timeout, "idle-timeout")?,
        max_connections: 10_000,
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
        eureka::routes(registry.clone(), eureka_settings),
    ));
    let admin = Admin {
        registry: registry.clone(),
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    apis.push(("admin", cli.admin_listen, admin::routes(admin)));

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

    let eviction_every = seconds(cli.eureka_eviction_interval, "eureka-eviction-interval")?
        .max(Duration::from_millis(10));
    let eviction = eviction::spawn(registry.clone(), eviction_every);
    let (stop, stopping) = shutdown::channel();
    let servers: Vec<_> = bound
        .into_iter()
        .map(|(api, listener, router)| {
            tokio::spawn(serve(api, listener, router, limits, stopping.clone()))
        })
        .collect();
    ready.store(true, Ordering::Release);
    tracing::info!(store = registry.store_name(), "ferry is ready");

    shutdown::signalled().await;
    ready.store(false, Ordering::Release);
    let _ = stop.send(true);
    eviction.abort();
    for server in servers {
        let _ = server.await;
    }
    tracing::info!("ferry stopped");
    Ok(())
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
