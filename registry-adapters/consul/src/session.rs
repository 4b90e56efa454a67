//! `/v1/session/...`: create, destroy, renew, read and list the sessions that hold KV locks.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, put};
use axum::Router;
use serde_json::{json, Value};

use super::acl::Access;
use super::decode;
use super::encode;
use super::error::ConsulError;
use super::{indexed, json_response, ConsulView};
use ferry_http::request_body;

pub(super) fn routes() -> Router<ConsulView> {
    Router::new()
        .route("/v1/session/create", put(create))
        .route("/v1/session/destroy/{id}", put(destroy))
        .route("/v1/session/renew/{id}", put(renew))
        .route("/v1/session/info/{id}", get(info))
        .route("/v1/session/list", get(list))
        .route("/v1/session/node/{node}", get(by_node))
}

async fn create(
    State(view): State<ConsulView>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ConsulError> {
    let bytes = request_body::read(
        &headers,
        body,
        view.settings.max_body_bytes,
        view.settings.body_timeout,
    )
    .await?;
    let request = decode::session_request(&bytes)?;
    let session = view.kv.create_session(request)?;
    Ok(json_response(&json!({"ID": session.id})))
}

async fn destroy(
    State(view): State<ConsulView>,
    Path(id): Path<String>,
) -> Result<Response, ConsulError> {
    view.kv.destroy_session(&id)?;
    Ok(json_response(&Value::Bool(true)))
}

async fn renew(
    State(view): State<ConsulView>,
    Path(id): Path<String>,
) -> Result<Response, ConsulError> {
    let session = view
        .kv
        .renew_session(&id)
        .ok_or_else(|| ConsulError::NotFound(format!("Session id '{id}' not found")))?;
    Ok(json_response(&json!([encode::session(&session)])))
}

async fn info(State(view): State<ConsulView>, access: Access, Path(id): Path<String>) -> Response {
    let sessions: Vec<Value> = view
        .kv
        .session(&id)
        .iter()
        .filter(|_| access.sees_all())
        .map(encode::session)
        .collect();
    indexed(
        StatusCode::OK,
        view.kv.store_result_index(),
        Some(&Value::Array(sessions)),
    )
}

async fn list(State(view): State<ConsulView>, access: Access) -> Response {
    let sessions: Vec<Value> = view
        .kv
        .sessions()
        .iter()
        .filter(|_| access.sees_all())
        .map(encode::session)
        .collect();
    indexed(
        StatusCode::OK,
        view.kv.store_result_index(),
        Some(&Value::Array(sessions)),
    )
}

async fn by_node(
    State(view): State<ConsulView>,
    access: Access,
    Path(node): Path<String>,
) -> Response {
    let sessions: Vec<Value> = view
        .kv
        .sessions()
        .iter()
        .filter(|session| access.sees_all() && session.node == node)
        .map(encode::session)
        .collect();
    indexed(
        StatusCode::OK,
        view.kv.store_result_index(),
        Some(&Value::Array(sessions)),
    )
}
