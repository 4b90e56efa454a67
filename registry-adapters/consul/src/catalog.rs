//! `/v1/catalog/...` and `/v1/health/...`: the cluster-wide reads discovery clients poll,
//! all blocking-capable and all carrying the `X-Consul-*` index headers.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

use super::acl::Access;
use super::blocking::wait_for;
use super::encode::{self, service_name};
use super::error::ConsulError;
use super::query::Params;
use super::{indexed, indexed_bytes, ConsulView};
use bytes::Bytes;
use ferry_core::model::Health;
use ferry_core::registry::RegisteredInstance;

pub(super) fn routes() -> Router<ConsulView> {
    Router::new()
        .route("/v1/catalog/services", get(services))
        .route("/v1/catalog/service/{name}", get(service))
        .route("/v1/catalog/nodes", get(nodes))
        .route("/v1/catalog/node/{node}", get(node))
        .route("/v1/catalog/datacenters", get(datacenters))
        .route("/v1/health/service/{name}", get(health_service))
        .route("/v1/health/checks/{name}", get(health_checks))
        .route("/v1/health/state/{state}", get(health_state))
        .route("/v1/health/node/{node}", get(health_node))
}

async fn services(
    State(view): State<ConsulView>,
    access: Access,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ConsulError> {
    let blocking = Params(params).blocking()?;
    let (index, body) = wait_for(view.registry.watch(), blocking, || {
        let (index, apps) = view.registry.catalog();
        let mut services = Map::new();
        if !access.sees_all() {
            return (index, Value::Object(services));
        }
        // Real Consul lists itself; clients that list services expect it.
        services.insert("consul".to_owned(), json!([]));
        for service in apps {
            let name = service_name(&service.app, service.name.as_deref());
            services.insert(name.into_owned(), json!(service.tags));
        }
        (index, Value::Object(services))
    })
    .await;
    Ok(indexed(StatusCode::OK, index, Some(&body)))
}

/// An app's instances carrying every one of `tags`.
fn tagged<'a>(
    instances: &'a [RegisteredInstance],
    tags: &'a [String],
) -> impl Iterator<Item = &'a RegisteredInstance> {
    instances.iter().filter(move |registered| {
        tags.iter()
            .all(|tag| registered.instance.tags.contains(tag))
    })
}

async fn service(
    State(view): State<ConsulView>,
    access: Access,
    Path(name): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ConsulError> {
    let params = Params(params);
    let blocking = params.blocking()?;
    let tags: Vec<String> = params.all("tag").map(str::to_owned).collect();
    let app = name.to_ascii_uppercase();
    let key = format!("catalog\u{0}{app}\u{0}{}", tags.join("\u{0}"));
    let (index, body) = wait_for(view.registry.watch(), blocking, || {
        rendered(&view, access, &key, &app, |instances| {
            let rows: Vec<Value> = tagged(instances, &tags)
                .map(|registered| encode::catalog_service(view.node(), &registered.instance))
                .collect();
            Value::Array(rows)
        })
    })
    .await;
    Ok(indexed_bytes(index, body))
}

/// One app's read at its current result index, rendered once per index and key; a
/// caller who may not see it gets an empty list at the same index.
fn rendered(
    view: &ConsulView,
    access: Access,
    key: &str,
    app: &str,
    render: impl FnOnce(&[RegisteredInstance]) -> Value,
) -> (u64, Bytes) {
    let index = view.registry.app_result_index(app);
    if !access.sees_all() {
        return (index, Bytes::from_static(b"[]"));
    }
    let body = view.rendered.get_with((key.to_owned(), index), || {
        let (_, instances) = view.registry.app_with_index(app);
        Bytes::from(render(&instances).to_string())
    });
    (index, body)
}

async fn nodes(
    State(view): State<ConsulView>,
    access: Access,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ConsulError> {
    let blocking = Params(params).blocking()?;
    // One node, registered at start: its index never moves.
    let (index, body) = wait_for(view.registry.watch(), blocking, || {
        let nodes = if access.sees_all() {
            vec![encode::node(view.node())]
        } else {
            Vec::new()
        };
        (1, Value::Array(nodes))
    })
    .await;
    Ok(indexed(StatusCode::OK, index, Some(&body)))
}

async fn node(
    State(view): State<ConsulView>,
    access: Access,
    Path(node): Path<String>,
) -> Result<Response, ConsulError> {
    let info = view.node();
    if node != info.name {
        return Ok(indexed(StatusCode::OK, 1, Some(&Value::Null)));
    }
    let (index, instances) = view.registry.all_with_index();
    // A node the caller may not read is answered as one that does not exist.
    if !access.sees_all() {
        return Ok(indexed(StatusCode::OK, index, Some(&Value::Null)));
    }
    let services: Map<String, Value> = instances
        .iter()
        .map(|registered| {
            (
                registered.instance.id.clone(),
                encode::agent_service(&registered.instance, &info.datacenter),
            )
        })
        .collect();
    let body = json!({"Node": encode::node(info), "Services": services});
    Ok(indexed(StatusCode::OK, index, Some(&body)))
}

async fn datacenters(State(view): State<ConsulView>) -> Response {
    super::json_response(&json!([view.node().datacenter]))
}

async fn health_service(
    State(view): State<ConsulView>,
    access: Access,
    Path(name): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ConsulError> {
    let params = Params(params);
    let passing = params.boolean("passing")?;
    let blocking = params.blocking()?;
    let tags: Vec<String> = params.all("tag").map(str::to_owned).collect();
    let app = name.to_ascii_uppercase();
    let key = format!("health\u{0}{app}\u{0}{passing}\u{0}{}", tags.join("\u{0}"));
    let (index, body) = wait_for(view.registry.watch(), blocking, || {
        rendered(&view, access, &key, &app, |instances| {
            let rows: Vec<Value> = tagged(instances, &tags)
                .filter(|registered| {
                    !passing || encode::instance_health(&registered.instance) == Health::Passing
                })
                .map(|registered| encode::health_entry(view.node(), &registered.instance))
                .collect();
            Value::Array(rows)
        })
    })
    .await;
    Ok(indexed_bytes(index, body))
}

async fn health_checks(
    State(view): State<ConsulView>,
    access: Access,
    Path(name): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ConsulError> {
    let blocking = Params(params).blocking()?;
    let app = name.to_ascii_uppercase();
    let (index, body) = wait_for(view.registry.watch(), blocking, || {
        let (index, instances) = view.registry.app_with_index(&app);
        let checks: Vec<Value> = instances
            .iter()
            .filter(|_| access.sees_all())
            .flat_map(|registered| encode::instance_checks(view.node(), &registered.instance))
            .collect();
        (index, Value::Array(checks))
    })
    .await;
    Ok(indexed(StatusCode::OK, index, Some(&body)))
}

async fn health_state(
    State(view): State<ConsulView>,
    access: Access,
    Path(state): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ConsulError> {
    let wanted = match state.as_str() {
        "any" => None,
        other => {
            Some(Health::parse(other).ok_or_else(|| ConsulError::BadRequest("Bad state".into()))?)
        }
    };
    let blocking = Params(params).blocking()?;
    let (index, body) = wait_for(view.registry.watch(), blocking, || {
        let (index, mut checks) = node_checks(&view, access);
        checks.retain(|check| wanted.is_none_or(|wanted| check["Status"] == wanted.as_str()));
        (index, Value::Array(checks))
    })
    .await;
    Ok(indexed(StatusCode::OK, index, Some(&body)))
}

async fn health_node(
    State(view): State<ConsulView>,
    access: Access,
    Path(node): Path<String>,
) -> Result<Response, ConsulError> {
    if node != view.node().name {
        return Ok(indexed(StatusCode::OK, 1, Some(&json!([]))));
    }
    let (index, checks) = node_checks(&view, access);
    Ok(indexed(StatusCode::OK, index, Some(&Value::Array(checks))))
}

/// Every check on this node, its own `serfHealth` first, with the health result index;
/// none for a caller who may not see them.
fn node_checks(view: &ConsulView, access: Access) -> (u64, Vec<Value>) {
    let (index, instances) = view.registry.all_with_index();
    if !access.sees_all() {
        return (index, Vec::new());
    }
    let mut checks = vec![encode::serf_check(view.node())];
    for registered in &instances {
        checks.extend(encode::instance_checks(view.node(), &registered.instance));
    }
    (index, checks)
}
