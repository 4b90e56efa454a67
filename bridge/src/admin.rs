//! The admin API: liveness, readiness, Prometheus metrics, and the services API that shows
//! and changes each service's cutover mode (`/api/services`, `/api/services/{name}`), and
//! the state of each sync with a legacy registry (`/api/sync`), and who leads each
//! leader-only job (`/api/leaders`).
//! Readiness is true from the moment every listener is bound until shutdown begins, so a
//! load balancer stops sending traffic before connections are drained. Writes pass
//! `admin_auth` first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ferry_core::Registry;
use ferry_proxy::cutover::Mode;
use ferry_proxy::mesh::{Mesh, MeshError, ServiceStatus};
use serde_json::{json, Value};

use crate::admin_auth::{self, WritePolicy};
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct Admin {
    pub mesh: Arc<Mesh>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    /// The legacy registries this node syncs with (with etcd: while it leads job `sync`).
    pub syncs: crate::sync::Running,
    /// Who leads each leader-only job this node campaigns for (none in embedded mode).
    pub leaders: crate::shared::Leaders,
}

pub fn routes(admin: Admin, writes: WritePolicy) -> Router {
    Router::new()
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/services", get(services))
        .route("/api/sync", get(sync))
        .route("/api/leaders", get(leaders))
        .route(
            "/api/services/{name}",
            get(service).put(cutover).post(cutover),
        )
        .with_state(admin)
        .layer(axum::middleware::from_fn_with_state(
            writes,
            admin_auth::guard,
        ))
}

async fn ready(State(admin): State<Admin>) -> impl IntoResponse {
    if admin.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(admin): State<Admin>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        admin.metrics.render(&admin.registry),
    )
}

async fn sync(State(admin): State<Admin>) -> Json<Value> {
    Json(Value::Array(
        admin
            .syncs
            .current()
            .iter()
            .map(|handle| sync_json(&handle.status.snapshot()))
            .collect(),
    ))
}

async fn leaders(State(admin): State<Admin>) -> Json<Value> {
    Json(admin.leaders.json())
}

fn sync_json(source: &ferry_sync::SourceSnapshot) -> Value {
    json!({
        "name": source.name,
        "kind": source.kind,
        "endpoints": source.endpoints,
        "current_endpoint": source.current_endpoint,
        "reachable": source.reachable,
        "last_success": source.last_success,
        "initial_import_done": source.initial_import_done,
        "imported": source.imported,
        "stale": source.stale,
        "pending_removals": source.pending_removals,
        "exported": source.exported,
        "full_fetches": source.full_fetches,
        "delta_fetches": source.delta_fetches,
        "errors": source.errors,
        "last_error": source.last_error,
        "last_error_at": source.last_error_at,
    })
}

fn service_json(status: &ServiceStatus) -> Value {
    json!({
        "name": status.name,
        "mode": status.mode.as_str(),
        "port": status.port,
        "instances": status.endpoints.iter().map(|(endpoint, ejected)| json!({
            "id": endpoint.id,
            "address": format!("{}:{}", endpoint.host, endpoint.port),
            "status": endpoint.status.to_string(),
            "ejected": ejected,
        })).collect::<Vec<_>>(),
    })
}

async fn services(State(admin): State<Admin>) -> Json<Value> {
    Json(Value::Array(
        admin.mesh.services().iter().map(service_json).collect(),
    ))
}

async fn service(State(admin): State<Admin>, Path(name): Path<String>) -> Json<Value> {
    Json(service_json(&admin.mesh.status(&name)))
}

/// `PUT /api/services/{name}` with `{"mode": "mesh"}` (or `?mode=mesh`).
async fn cutover(
    State(admin): State<Admin>,
    Path(name): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    let from_body = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|value| value.get("mode").and_then(Value::as_str).map(str::to_owned));
    let requested = from_body.or_else(|| {
        query
            .into_iter()
            .find(|(key, _)| key == "mode")
            .map(|(_, mode)| mode)
    });
    let Some(mode) = requested.as_deref().and_then(Mode::parse) else {
        return (StatusCode::BAD_REQUEST, "mode must be `mesh` or `legacy`\n").into_response();
    };
    if name.trim().is_empty() {
        return (StatusCode::BAD_REQUEST, "a service name is required\n").into_response();
    }
    match admin.mesh.set_mode(&name, mode).await {
        Ok(_) => Json(service_json(&admin.mesh.status(&name))).into_response(),
        // etcd did not take it: nothing changed anywhere, the client may simply retry.
        Err(error @ MeshError::Shared(_)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "2")],
            format!("{error}\n"),
        )
            .into_response(),
        Err(error) => (StatusCode::CONFLICT, format!("{error}\n")).into_response(),
    }
}
