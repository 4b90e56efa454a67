//! The admin API: liveness, readiness, Prometheus metrics, and the services API that shows
//! and changes each service's cutover mode (`/api/services`, `/api/services/{name}`), and
//! the state of each sync with a legacy registry (`/api/sync`), the store (`/api/store`),
//! the nodes sharing it (`/api/nodes`), who leads each leader-only job (`/api/leaders`) and
//! this node's certificate for mutual TLS (`/api/identity`, read-only), the event log
//! (`/api/events`: what happened to instances and services, newest first, which the
//! dashboard polls with `after=`), and the dashboard at `/` with the read-only JSON it adds
//! (`dashboard.rs`).
//! Readiness is true from the moment every listener is bound until shutdown begins, so a
//! load balancer stops sending traffic before connections are drained; it stays true while
//! the shared store is out of reach (reads are still served) and says so in its body.
//! Writes pass `admin_auth` first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ferry_core::model::Registration;
use ferry_core::registry::{Event, EventQuery, RegisteredInstance};
use ferry_core::{Instance, Registry};
use ferry_proxy::cutover::Mode;
use ferry_proxy::mesh::{Mesh, MeshError, ServiceStatus};
use serde_json::{json, Value};

use crate::admin_auth::{self, WritePolicy};
use crate::dashboard;
use crate::metrics::{Exposition, Metrics};
use crate::store_report::StoreReport;

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
    pub store: Arc<StoreReport>,
    /// This node's certificate, when it has one (`--ca-issuer` or `--join-token`).
    pub identity: Option<Arc<ferry_identity::LiveIdentity>>,
    /// The proxy's traffic over the last 15 minutes, for the dashboard.
    pub history: Arc<crate::history::History>,
    /// The KV store, listed read-only by prefix (`/api/kv`).
    pub kv: Arc<ferry_core::kv::KvStore>,
    /// The Config Server's repository (`--config-repo`), if any (`/api/config`).
    pub config_repository: Option<Arc<ferry_config_server::Repository>>,
}

pub fn routes(admin: Admin, writes: WritePolicy) -> Router {
    Router::new()
        .route("/", get(dashboard::index))
        .route("/ui/app.js", get(dashboard::script))
        .route("/ui/app.css", get(dashboard::style))
        .route("/api/traffic", get(dashboard::traffic))
        .route("/api/config", get(dashboard::config))
        .route("/api/kv", get(dashboard::kv))
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/services", get(services))
        .route("/api/events", get(events))
        .route("/api/sync", get(sync))
        .route("/api/store", get(store))
        .route("/api/nodes", get(nodes))
        .route("/api/leaders", get(leaders))
        .route("/api/identity", get(identity))
        .route("/api/allow", get(crate::allow::list))
        .route(
            "/api/allow/{service}",
            axum::routing::put(crate::allow::set).delete(crate::allow::remove),
        )
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
        (
            StatusCode::OK,
            format!("ready ({})\n", admin.store.ready_detail()),
        )
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned())
    }
}

async fn identity(State(admin): State<Admin>) -> Json<Value> {
    Json(crate::identity::json(admin.identity.as_deref()))
}

async fn store(State(admin): State<Admin>) -> Json<Value> {
    Json(admin.store.store_json())
}

async fn nodes(State(admin): State<Admin>) -> Response {
    match admin.store.nodes_json().await {
        Ok(nodes) => Json(nodes).into_response(),
        Err(error) => {
            tracing::warn!(%error, "cannot list the nodes");
            unavailable(format!(
                "the etcd store is unavailable, cannot list the nodes: {error}"
            ))
        }
    }
}

/// 503 for what needs the shared store while it is out of reach: one line naming it, and
/// when to try again.
pub(crate) fn unavailable(reason: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(
            header::RETRY_AFTER,
            ferry_core::store::RETRY_AFTER.as_secs().to_string(),
        )],
        format!("{}\n", reason.replace('\n', " ")),
    )
        .into_response()
}

/// OpenMetrics to a scraper that asks for it (Prometheus does), the Prometheus text format
/// 0.0.4 to everything else (curl, `promtool check metrics`, older scrapers): the two
/// differ in how a counter's family is named, and each reader checks its own rule.
async fn metrics(State(admin): State<Admin>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let wants_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains("application/openmetrics-text"));
    let format = if wants_openmetrics {
        Exposition::OpenMetrics
    } else {
        Exposition::Text
    };
    (
        [(header::CONTENT_TYPE, format.content_type())],
        admin.metrics.render(&admin.registry, format),
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

/// `GET /api/events?after=SEQ&limit=N&service=NAME`: the event log, newest first, with the
/// newest event's sequence number (`latest`) for the next `after=`. A parameter that is not
/// a number is a 400 naming it; `limit` is capped at what the log keeps.
async fn events(
    State(admin): State<Admin>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    match event_query(query, admin.registry.event_capacity()) {
        Ok(wanted) => {
            let page = admin.registry.events(&wanted);
            Json(json!({
                "latest": page.latest,
                "events": page.events.iter().map(event_json).collect::<Vec<_>>(),
            }))
            .into_response()
        }
        Err(reason) => (StatusCode::BAD_REQUEST, format!("{reason}\n")).into_response(),
    }
}

/// The read `/api/events`'s parameters ask for, or why they cannot be read.
fn event_query(query: Vec<(String, String)>, capacity: usize) -> Result<EventQuery, String> {
    let mut wanted = EventQuery {
        limit: 100.min(capacity),
        ..EventQuery::default()
    };
    for (key, value) in query {
        let number = |what: &str| {
            value
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("`{key}` must be {what}, not `{value}`"))
        };
        match key.as_str() {
            "after" => wanted.after = number("an event's sequence number (0 or more)")?,
            "limit" => {
                let limit = number("a number of events (0 or more)")?;
                wanted.limit = usize::try_from(limit).unwrap_or(usize::MAX).min(capacity);
            }
            "service" if !value.trim().is_empty() => wanted.service = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    Ok(wanted)
}

fn event_json(event: &Event) -> Value {
    json!({
        "seq": event.seq,
        "at": utc_timestamp(event.at),
        "at_ms": event.at,
        "kind": event.kind.as_str(),
        "service": event.service,
        "instance": event.instance,
        "detail": event.detail,
    })
}

/// `2026-12-01T05:40:00.123Z`: RFC 3339 in UTC with milliseconds, from epoch milliseconds.
fn utc_timestamp(at_ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000) {
        Ok(at) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            at.millisecond()
        ),
        Err(_) => String::new(),
    }
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

/// A service with its instances; `detailed` adds what one service's page shows (metadata,
/// last renewal, checks).
fn service_json(registry: &Registry, status: &ServiceStatus, detailed: bool) -> Value {
    let registered: std::collections::HashMap<String, RegisteredInstance> = registry
        .app(&status.name)
        .unwrap_or_default()
        .into_iter()
        .map(|found| (found.instance.id.clone(), found))
        .collect();
    json!({
        "name": status.name,
        "mode": status.mode.as_str(),
        "port": status.port,
        "instances": status.endpoints.iter().map(|(endpoint, ejected)| {
            let mut instance = json!({
                "id": endpoint.id,
                "address": format!("{}:{}", endpoint.host, endpoint.port),
                "status": endpoint.status.to_string(),
                "ejected": ejected,
            });
            if let Some(found) = registered.get(&endpoint.id) {
                let (source, owner) = source(&found.instance);
                instance["source"] = source.into();
                instance["owner"] = owner.into();
                if detailed {
                    instance_detail(&mut instance, found);
                }
            }
            instance
        }).collect::<Vec<_>>(),
    })
}

/// Which API registered an instance: `eureka` (a lease), `consul` (an agent registration),
/// or `synced` from a legacy registry, whose name is the owner.
fn source(instance: &Instance) -> (&'static str, Option<&str>) {
    match instance.registration {
        Registration::Lease => ("eureka", None),
        Registration::Agent => ("consul", None),
        Registration::Imported => (
            "synced",
            instance
                .metadata
                .get(ferry_core::model::OWNER_METADATA_KEY)
                .map(String::as_str),
        ),
    }
}

fn instance_detail(instance: &mut Value, found: &RegisteredInstance) {
    let registered = &found.instance;
    instance["metadata"] = json!(registered.metadata);
    instance["tags"] = json!(registered.tags);
    // Only a lease is renewed; agent registrations and synced copies have no renewals.
    instance["last_renewal_ms"] = match registered.registration {
        Registration::Lease => json!(found.last_renewal),
        _ => Value::Null,
    };
    instance["registered_ms"] = json!(registered.lease.registration);
    instance["checks"] = registered
        .checks
        .iter()
        .map(|check| {
            json!({
                "name": check.name,
                "kind": check.probe.kind(),
                "status": check.status.as_str(),
                "output": check.output,
            })
        })
        .collect();
}

async fn services(State(admin): State<Admin>) -> Json<Value> {
    Json(Value::Array(
        admin
            .mesh
            .services()
            .iter()
            .map(|status| service_json(&admin.registry, status, false))
            .collect(),
    ))
}

/// One service; 404 for a name the registry holds no instance of and that was never cut
/// over, so `ferry ctl service` can tell a typo from a service without instances.
async fn service(State(admin): State<Admin>, Path(name): Path<String>) -> Response {
    let status = admin.mesh.status(&name);
    if status.port.is_none() && status.endpoints.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            format!(
                "no service {}: no instance is registered under that name and it was never cut over\n",
                status.name
            ),
        )
            .into_response();
    }
    Json(service_json(&admin.registry, &status, true)).into_response()
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
        Ok(_) => Json(service_json(
            &admin.registry,
            &admin.mesh.status(&name),
            true,
        ))
        .into_response(),
        Err(MeshError::Store { source, .. }) => {
            unavailable(format!("{source}; the cutover was not made, retry later"))
        }
        // etcd did not take it: nothing changed anywhere, the client may simply retry.
        Err(error @ MeshError::Shared(_)) => {
            unavailable(format!("{error}; the cutover was not made, retry later"))
        }
        Err(error) => (StatusCode::CONFLICT, format!("{error}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::Method;
    use ferry_core::store::testing::UnreachableStore;
    use ferry_core::{Clock, Instance, RegistrySettings};
    use ferry_http::listen::ConnectionLimits;
    use ferry_http::test_client::call;
    use ferry_proxy::cutover::CutoverTable;
    use ferry_proxy::mesh::MeshSettings;
    use ferry_proxy::metrics::ProxyMetrics;

    use super::*;

    /// What a test's admin router needs kept alive: the shutdown sender the mesh watches
    /// and the data directory (removed at the end).
    struct Fixture {
        router: Router,
        data: std::path::PathBuf,
        _stop: tokio::sync::watch::Sender<bool>,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.data);
        }
    }

    /// The admin router over `registry`, with a mesh whose one outbound port is free.
    async fn admin_over(registry: Arc<Registry>) -> Fixture {
        let data = std::env::temp_dir().join(format!(
            "ferry-admin-test-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&data).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (stop, stopping) = crate::shutdown::channel();
        let proxy_metrics = Arc::new(ProxyMetrics::new());
        let mesh = Mesh::start(
            registry.clone(),
            CutoverTable::load(&data, (port, port)).unwrap(),
            MeshSettings {
                bind: [127, 0, 0, 1].into(),
                advertise_host: "127.0.0.1".into(),
                limits: ConnectionLimits {
                    idle_timeout: Duration::from_secs(5),
                    max_connections: 10,
                    max_header_bytes: 16 << 10,
                    drain_timeout: Duration::from_secs(1),
                },
                upstream: Default::default(),
                services: Default::default(),
                sidecar: None,
                shared: None,
            },
            proxy_metrics.clone(),
            stopping,
        )
        .await
        .unwrap();
        let report = Arc::new(StoreReport::new(registry.clone(), None, "n1".into()));
        let kv = Arc::new(ferry_core::kv::KvStore::in_memory(
            registry.change_index().clone(),
            Clock::System,
            "n1",
        ));
        for key in [
            "config/orders/greeting",
            "config/application/limit",
            "other/x",
        ] {
            kv.put(key, Bytes::from_static(b"hello"), 0, None, None)
                .unwrap();
        }
        let router = routes(
            Admin {
                mesh,
                registry,
                metrics: Arc::new(Metrics::new(&proxy_metrics, Arc::default(), report.clone())),
                ready: Arc::new(AtomicBool::new(true)),
                syncs: Default::default(),
                leaders: Default::default(),
                store: report,
                identity: None,
                history: Arc::new(crate::history::History::new(&proxy_metrics)),
                kv,
                config_repository: None,
            },
            WritePolicy::new(None, true),
        );
        Fixture {
            router,
            data,
            _stop: stop,
        }
    }

    #[tokio::test]
    async fn events_are_listed_newest_first_and_a_bad_parameter_is_400() {
        let registry = Arc::new(Registry::new(
            RegistrySettings::default(),
            Clock::manual(1_764_567_600_123),
            Arc::new(ferry_core::store::MemoryStore),
        ));
        let admin = admin_over(registry.clone()).await;
        let router = &admin.router;
        registry
            .register(
                Instance::new("orders", "orders-1", "127.0.0.1", "127.0.0.1", 8080),
                false,
            )
            .unwrap();
        let mesh = call(
            router,
            Method::PUT,
            "/api/services/orders",
            &[("content-type", "application/json")],
            r#"{"mode":"mesh"}"#,
        )
        .await;
        assert_eq!(mesh.status, StatusCode::OK);
        registry
            .register(
                Instance::new("payments", "payments-1", "127.0.0.1", "127.0.0.1", 8081),
                false,
            )
            .unwrap();

        let all = call(router, Method::GET, "/api/events", &[], "").await;
        assert_eq!(all.status, StatusCode::OK);
        let all = all.json();
        assert_eq!(all["latest"], 3);
        assert_eq!(
            all["events"][2],
            json!({
                "seq": 1,
                "at": "2025-12-01T05:40:00.123Z",
                "at_ms": 1_764_567_600_123_i64,
                "kind": "registered",
                "service": "ORDERS",
                "instance": "orders-1",
                "detail": "UP",
            })
        );
        assert_eq!(all["events"][1]["kind"], "cutover");
        assert_eq!(all["events"][1]["instance"], Value::Null);
        assert_eq!(all["events"][0]["service"], "PAYMENTS");

        let newer = call(router, Method::GET, "/api/events?after=2", &[], "").await;
        let seqs: Vec<u64> = newer.json()["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|event| event["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, vec![3]);
        let orders = call(
            router,
            Method::GET,
            "/api/events?service=Orders&limit=1",
            &[],
            "",
        )
        .await;
        let orders = orders.json();
        assert_eq!(
            orders["latest"], 3,
            "latest is the log's, whatever the filter"
        );
        assert_eq!(orders["events"].as_array().unwrap().len(), 1);
        assert_eq!(orders["events"][0]["kind"], "cutover");

        for bad in [
            "/api/events?after=x",
            "/api/events?limit=-1",
            "/api/events?after=",
        ] {
            let refused = call(router, Method::GET, bad, &[], "").await;
            assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{bad}");
            let body = String::from_utf8_lossy(&refused.body);
            assert!(body.contains("must be"), "{bad}: {body}");
        }
    }

    #[tokio::test]
    async fn a_cutover_the_store_refuses_is_503_with_retry_after_and_changes_nothing() {
        let store = Arc::new(UnreachableStore::default());
        let registry = Arc::new(Registry::new(
            RegistrySettings::default(),
            Clock::System,
            store.clone(),
        ));
        registry
            .register(
                Instance::new("orders", "o1", "127.0.0.1", "127.0.0.1", 8080),
                false,
            )
            .unwrap();
        let admin = admin_over(registry.clone()).await;
        let router = &admin.router;
        let cut_over = || {
            call(
                router,
                Method::PUT,
                "/api/services/ORDERS",
                &[("content-type", "application/json")],
                r#"{"mode":"mesh"}"#,
            )
        };

        store.set_reachable(false);
        let refused = cut_over().await;
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers["retry-after"], "5");
        let body = String::from_utf8_lossy(&refused.body);
        assert!(body.contains("etcd store is unavailable"), "{body}");
        assert_eq!(body.lines().count(), 1, "{body:?}");
        let shown = call(router, Method::GET, "/api/services/ORDERS", &[], "").await;
        assert_eq!(
            shown.json()["mode"],
            "legacy",
            "the refused cutover changed nothing"
        );
        assert!(registry.route("ORDERS").is_none());

        store.set_reachable(true);
        let done = cut_over().await;
        assert_eq!(done.status, StatusCode::OK);
        assert_eq!(done.json()["mode"], "mesh");
        let unknown = call(router, Method::GET, "/api/services/NOPE", &[], "").await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text());
        assert!(
            unknown.text().contains("no service NOPE"),
            "{}",
            unknown.text()
        );
        // Without identity flags there is no certificate, and the endpoint says so.
        let identity = call(router, Method::GET, "/api/identity", &[], "").await;
        assert_eq!(identity.json(), serde_json::json!({"enabled": false}));

        // What the dashboard reads: the page itself, where each instance came from, the KV
        // store's folders and keys, the config sources.
        let page = call(router, Method::GET, "/", &[], "").await;
        assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
        registry
            .import(
                "legacy-eureka",
                Instance::new("orders", "o2", "10.0.0.9", "10.0.0.9", 8080),
            )
            .unwrap();
        let orders = call(router, Method::GET, "/api/services/ORDERS", &[], "")
            .await
            .json();
        assert_eq!(orders["instances"][0]["source"], "eureka");
        assert_eq!(orders["instances"][0]["owner"], Value::Null);
        assert_eq!(orders["instances"][1]["source"], "synced", "{orders}");
        assert_eq!(orders["instances"][1]["owner"], "legacy-eureka");
        assert_eq!(
            orders["instances"][1]["last_renewal_ms"],
            Value::Null,
            "a copy is not renewed here"
        );
        assert!(orders["instances"][0]["metadata"].is_object(), "{orders}");
        let listed = call(router, Method::GET, "/api/services", &[], "")
            .await
            .json();
        assert!(
            listed[0]["instances"][0].get("metadata").is_none(),
            "the list stays small"
        );
        let folders = call(router, Method::GET, "/api/kv?prefix=config/", &[], "")
            .await
            .json();
        assert_eq!(
            folders["keys"],
            serde_json::json!([
                {"key": "config/application/", "folder": true},
                {"key": "config/orders/", "folder": true},
            ])
        );
        let keys = call(
            router,
            Method::GET,
            "/api/kv?prefix=config/orders/",
            &[],
            "",
        )
        .await
        .json();
        assert_eq!(keys["keys"][0]["key"], "config/orders/greeting");
        assert_eq!(keys["keys"][0]["bytes"], 5);
        let config = call(router, Method::GET, "/api/config", &[], "")
            .await
            .json();
        assert_eq!(config["repository"], Value::Null);
        assert_eq!(
            config["kv"]["contexts"],
            serde_json::json!(["config/application/", "config/orders/"])
        );
        let traffic = call(router, Method::GET, "/api/traffic", &[], "")
            .await
            .json();
        assert_eq!(traffic["services"], serde_json::json!([]));
    }
}
