//! `/v1/agent/...`: service and check registration on this node, TTL heartbeats,
//! maintenance mode, and the agent's own description.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use serde_json::{json, Map, Value};

use super::acl::Access;
use super::decode::{self, field};
use super::encode;
use super::error::ConsulError;
use super::query::{parse_bool, Params};
use super::{json_response, ConsulView};
use ferry_core::model::Health;
use ferry_core::registry::CheckUpdate;
use ferry_http::request_body;

pub(super) fn routes() -> Router<ConsulView> {
    Router::new()
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/agent/members", get(members))
        .route("/v1/agent/services", get(services))
        .route("/v1/agent/service/{*id}", get(service))
        .route("/v1/agent/checks", get(checks))
        .route("/v1/agent/service/register", put(register))
        .route("/v1/agent/service/deregister/{*id}", put(deregister))
        .route("/v1/agent/service/maintenance/{*id}", put(maintenance))
        .route("/v1/agent/check/{verb}/{*id}", put(ttl_update))
        .route("/v1/agent/check/update/{*id}", put(update))
        .route("/v1/agent/check/register", put(register_check))
        .route("/v1/agent/check/deregister/{*id}", put(deregister_check))
        .route("/v1/agent/health/service/id/{*id}", get(health_by_id))
        .route("/v1/agent/health/service/name/{*name}", get(health_by_name))
}

fn member(view: &ConsulView) -> Value {
    let node = view.node();
    json!({
        "Name": node.name,
        "Addr": node.address,
        "Port": 8301,
        "Tags": {"dc": node.datacenter, "role": "node", "id": node.id, "vsn": "2", "build": view.settings.version},
        "Status": 1,
        "ProtocolMin": 1,
        "ProtocolMax": 5,
        "ProtocolCur": 2,
        "DelegateMin": 2,
        "DelegateMax": 5,
        "DelegateCur": 4,
    })
}

async fn agent_self(
    State(view): State<ConsulView>,
    access: Access,
) -> Result<Response, ConsulError> {
    // `agent:read` on this node, which the anonymous token lacks.
    access.may_read_one()?;
    let node = view.node();
    Ok(json_response(&json!({
        "Config": {
            "Datacenter": node.datacenter,
            "PrimaryDatacenter": node.datacenter,
            "NodeName": node.name,
            "NodeID": node.id,
            "Server": false,
            "Revision": "ferry",
            "Version": view.settings.version,
        },
        "Member": member(&view),
        "Meta": {"consul-network-segment": ""},
        "Stats": {},
        "DebugConfig": {},
        "xDS": {},
    })))
}

async fn members(State(view): State<ConsulView>, access: Access) -> Response {
    let members = if access.sees_all() {
        vec![member(&view)]
    } else {
        Vec::new()
    };
    json_response(&Value::Array(members))
}

async fn services(State(view): State<ConsulView>, access: Access) -> Response {
    let datacenter = &view.node().datacenter;
    let services: Map<String, Value> = view
        .registry
        .agent_instances()
        .iter()
        .filter(|_| access.sees_all())
        .map(|registered| {
            (
                registered.instance.id.clone(),
                encode::agent_service(&registered.instance, datacenter),
            )
        })
        .collect();
    json_response(&Value::Object(services))
}

async fn service(
    State(view): State<ConsulView>,
    access: Access,
    Path(id): Path<String>,
) -> Result<Response, ConsulError> {
    let registered = view
        .registry
        .agent_instance(&id)
        .ok_or_else(|| ConsulError::NotFound(format!("unknown service ID: {id}")))?;
    // Consul looks the service up first, then checks `service:read` on it.
    access.may_read_one()?;
    let mut service = encode::agent_service(&registered.instance, &view.node().datacenter);
    service["ContentHash"] = Value::String(format!("{:016x}", registered.instance.modify_index));
    Ok(json_response(&service))
}

async fn checks(State(view): State<ConsulView>, access: Access) -> Response {
    let node = view.node();
    let mut checks = Map::new();
    let visible = if access.sees_all() {
        view.registry.agent_instances()
    } else {
        Vec::new()
    };
    for registered in visible {
        for check in &registered.instance.checks {
            checks.insert(
                check.id.clone(),
                encode::check_json(node, &registered.instance, check),
            );
        }
    }
    json_response(&Value::Object(checks))
}

async fn read_json(
    view: &ConsulView,
    headers: &HeaderMap,
    body: Body,
) -> Result<Value, ConsulError> {
    let bytes = request_body::read(
        headers,
        body,
        view.settings.max_body_bytes,
        view.settings.body_timeout,
    )
    .await?;
    decode::parse_body(&bytes)
}

async fn register(
    State(view): State<ConsulView>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ConsulError> {
    let params = Params(params);
    let body = read_json(&view, &headers, body).await?;
    let instance = decode::service_registration(&body, &view.node().address)?;
    let replace = match params.get("replace-existing-checks") {
        None => false,
        Some(value) => parse_bool(value).unwrap_or(true),
    };
    tracing::debug!(service = %instance.app, id = %instance.id, "consul register");
    view.registry.register_agent(instance, replace)?;
    Ok(StatusCode::OK)
}

async fn deregister(
    State(view): State<ConsulView>,
    Path(id): Path<String>,
) -> Result<StatusCode, ConsulError> {
    view.registry.deregister_agent(&id)?;
    Ok(StatusCode::OK)
}

async fn maintenance(
    State(view): State<ConsulView>,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<StatusCode, ConsulError> {
    let params = Params(params);
    let enable = params
        .get("enable")
        .ok_or_else(|| ConsulError::BadRequest("Missing value for enable".into()))?;
    let enable = parse_bool(enable)
        .filter(|_| !enable.is_empty())
        .ok_or_else(|| ConsulError::BadRequest(format!("Invalid value for enable: {enable:?}")))?;
    let reason = params
        .get("reason")
        .filter(|reason| !reason.is_empty())
        .map(str::to_owned);
    view.registry.set_maintenance(&id, enable, reason)?;
    Ok(StatusCode::OK)
}

/// `pass`, `warn` and `fail` of a TTL check, with `?note=` as its output.
async fn ttl_update(
    State(view): State<ConsulView>,
    Path((verb, id)): Path<(String, String)>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<StatusCode, ConsulError> {
    let status = match verb.as_str() {
        "pass" => Health::Passing,
        "warn" => Health::Warning,
        "fail" => Health::Critical,
        _ => {
            return Err(ConsulError::NotFound(format!(
                "no such endpoint: /v1/agent/check/{verb}"
            )))
        }
    };
    let output = Params(params).get("note").unwrap_or("").to_owned();
    view.registry
        .update_check(&id, CheckUpdate { status, output }, true)?;
    Ok(StatusCode::OK)
}

async fn update(
    State(view): State<ConsulView>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ConsulError> {
    let body = read_json(&view, &headers, body).await?;
    let object = body.as_object().ok_or_else(|| {
        ConsulError::BadRequest("Request decode failed: the body must be a JSON object".into())
    })?;
    let status_text = field(object, "Status")
        .and_then(Value::as_str)
        .unwrap_or("");
    let status = Health::parse(status_text)
        .ok_or_else(|| ConsulError::BadRequest(format!("Invalid check status: '{status_text}'")))?;
    let output = field(object, "Output")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    view.registry
        .update_check(&id, CheckUpdate { status, output }, true)?;
    Ok(StatusCode::OK)
}

async fn register_check(
    State(view): State<ConsulView>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ConsulError> {
    let body = read_json(&view, &headers, body).await?;
    let object = body.as_object().ok_or_else(|| {
        ConsulError::BadRequest("Request decode failed: the body must be a JSON object".into())
    })?;
    let name = field(object, "Name")
        .and_then(Value::as_str)
        .filter(|name| !name.is_empty())
        .ok_or_else(|| ConsulError::BadRequest("Missing check name".into()))?;
    let service_id = field(object, "ServiceID")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            ConsulError::BadRequest(
                "Invalid check: checks must belong to a service (ServiceID)".into(),
            )
        })?;
    let check = decode::check(object, name, name)?;
    view.registry.add_agent_check(service_id, check)?;
    Ok(StatusCode::OK)
}

async fn deregister_check(
    State(view): State<ConsulView>,
    Path(id): Path<String>,
) -> Result<StatusCode, ConsulError> {
    view.registry.remove_agent_check(&id)?;
    Ok(StatusCode::OK)
}

/// 200 passing, 429 warning, 503 critical, as Consul's agent health endpoints answer.
fn health_status(health: Health) -> StatusCode {
    match health {
        Health::Passing => StatusCode::OK,
        Health::Warning => StatusCode::TOO_MANY_REQUESTS,
        Health::Critical => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// One instance as the agent health endpoints show it.
fn agent_health(view: &ConsulView, instance: &ferry_core::model::Instance) -> Value {
    json!({
        "AggregatedStatus": encode::instance_health(instance).as_str(),
        "Service": encode::agent_service(instance, &view.node().datacenter),
        "Checks": encode::instance_checks(view.node(), instance),
    })
}

async fn health_by_id(
    State(view): State<ConsulView>,
    access: Access,
    Path(id): Path<String>,
) -> Result<Response, ConsulError> {
    let registered = view
        .registry
        .agent_instance(&id)
        .ok_or_else(|| ConsulError::NotFound(format!("ServiceId {id} not found")))?;
    access.may_read_one()?;
    let health = encode::instance_health(&registered.instance);
    let mut response = json_response(&agent_health(&view, &registered.instance));
    *response.status_mut() = health_status(health);
    Ok(response)
}

async fn health_by_name(
    State(view): State<ConsulView>,
    access: Access,
    Path(name): Path<String>,
) -> Result<Response, ConsulError> {
    // Consul checks `service:read` on the name before it looks anything up.
    access.may_read_one()?;
    let (_, instances) = view.registry.app_with_index(&name.to_ascii_uppercase());
    if instances.is_empty() {
        return Err(ConsulError::NotFound(format!(
            "ServiceName {name} Not Found"
        )));
    }
    let health = instances
        .iter()
        .map(|registered| encode::instance_health(&registered.instance))
        .max()
        .unwrap_or(Health::Passing);
    let body: Vec<Value> = instances
        .iter()
        .map(|registered| agent_health(&view, &registered.instance))
        .collect();
    let mut response = json_response(&Value::Array(body));
    *response.status_mut() = health_status(health);
    Ok(response.into_response())
}
