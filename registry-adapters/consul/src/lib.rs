//! The Consul agent view: the subset of Consul's HTTP API that Spring Cloud Consul and the
//! common clients use (agent, catalog, health, KV, sessions, status), over the same
//! registry as the Eureka view and the durable KV store, with blocking queries on the one
//! change index.
//!
//! Layout: `agent`, `catalog` (catalog and health), `kv`, `session`, `status` hold the
//! handlers; `acl` decides what a caller may see (the configured token, or none: the
//! anonymous token of a default-deny agent); `decode` and `encode` convert bodies; `query`
//! and `duration` parse parameters; `blocking` holds reads until their result index
//! moves; `error` maps status codes.
#![forbid(unsafe_code)]

mod acl;
mod agent;
mod blocking;
mod catalog;
pub mod decode;
pub mod duration;
pub mod encode;
mod error;
mod kv;
mod query;
mod session;
mod status;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;

pub use encode::NodeInfo;
pub use error::ConsulError;

use ferry_core::kv::KvStore;
use ferry_core::registry::Registry;
use query::Params;

#[derive(Clone, Debug)]
pub struct ConsulSettings {
    pub node: NodeInfo,
    /// When set, the ACL token that may do everything; a request without a token is
    /// anonymous, as under Consul's `default_policy = "deny"` (see `acl`).
    pub token: Option<String>,
    /// Bodies other than KV values above this size get 413.
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    /// The Consul version `/v1/agent/self` reports (clients check for 1.x).
    pub version: String,
    /// A path the whole API also answers under (`consul` serves `/consul/v1/...`), for
    /// clients whose `spring.cloud.consul.path` names a prefix before `/v1`.
    pub path_prefix: Option<String>,
    /// Whether writes without a configured token are taken: only on a listener bound to
    /// loopback, where the caller is a process of this host. A listener other hosts reach
    /// takes registrations and KV writes only with `token` (every write then needs it).
    pub anonymous_writes: bool,
}

impl ConsulSettings {
    pub fn new(node: NodeInfo) -> ConsulSettings {
        ConsulSettings {
            node,
            token: None,
            max_body_bytes: 4 << 20,
            body_timeout: Duration::from_secs(10),
            version: "1.18.0".to_owned(),
            path_prefix: None,
            anonymous_writes: true,
        }
    }
}

#[derive(Clone)]
struct ConsulView {
    registry: Arc<Registry>,
    kv: Arc<KvStore>,
    settings: Arc<ConsulSettings>,
    /// Rendered service reads (health and catalog), keyed by the read and its result index,
    /// so pollers of a large service share one rendering per change.
    rendered: moka::sync::Cache<(String, u64), bytes::Bytes>,
}

impl ConsulView {
    fn node(&self) -> &NodeInfo {
        &self.settings.node
    }
}

/// The Consul API under `/v1/`, and under `/{prefix}/v1/` too with a path prefix.
pub fn routes(registry: Arc<Registry>, kv: Arc<KvStore>, settings: ConsulSettings) -> Router {
    let prefix = settings.path_prefix.as_deref().and_then(path_prefix);
    let settings = Arc::new(settings);
    let view = ConsulView {
        registry,
        kv,
        settings: settings.clone(),
        rendered: moka::sync::Cache::builder()
            .max_capacity(32 << 20)
            .weigher(|_, body: &bytes::Bytes| u32::try_from(body.len()).unwrap_or(u32::MAX))
            .time_to_live(Duration::from_secs(60))
            .build(),
    };
    let api = Router::new()
        .merge(agent::routes())
        .merge(catalog::routes())
        .merge(kv::routes())
        .merge(session::routes())
        .merge(status::routes())
        .with_state(view.clone())
        .layer(axum::middleware::from_fn_with_state(
            view.registry.clone(),
            freshness_headers,
        ))
        .layer(axum::middleware::from_fn_with_state(settings, guard));
    match prefix {
        // The API stays at the root as well: clients pointed at Ferry directly keep working.
        // Nested, handlers and the guard see the path without the prefix.
        Some(prefix) => Router::new().nest(&prefix, api.clone()).merge(api),
        None => api,
    }
}

/// A path prefix as Spring Cloud Consul joins it to the agent's address: with its leading
/// and trailing slashes trimmed and one `/` before it (`/consul/` and `consul` are both
/// `/consul`); `None` when nothing is left.
pub fn path_prefix(configured: &str) -> Option<String> {
    let trimmed = configured.trim().trim_matches('/');
    (!trimmed.is_empty()).then(|| format!("/{trimmed}"))
}

/// Checks what every endpoint shares before any handler runs: the ACL token (and with it
/// what the caller may see, stored for the handlers as an `Access`), the datacenter, and
/// flags that cannot go together. A refused request changes nothing.
async fn guard(
    State(settings): State<Arc<ConsulSettings>>,
    mut request: Request,
    next: Next,
) -> Response {
    let params = match axum::extract::Query::<Vec<(String, String)>>::try_from_uri(request.uri()) {
        Ok(axum::extract::Query(pairs)) => Params(pairs),
        Err(_) => return ConsulError::BadRequest("Invalid query string".into()).into_response(),
    };
    if !acl::is_public(request.uri().path()) {
        let presented = presented_token(&params, request.headers());
        let access = match acl::access(settings.token.as_deref(), presented.as_deref()) {
            Ok(access) => access,
            Err(refused) => return refused.into_response(),
        };
        // Reads are sorted out by their handlers; every write needs the token.
        let read = matches!(*request.method(), Method::GET | Method::HEAD);
        if !read && !access.sees_all() {
            return ConsulError::PermissionDenied.into_response();
        }
        if !read && settings.token.is_none() && !settings.anonymous_writes {
            return ConsulError::WritesNeedToken.into_response();
        }
        request.extensions_mut().insert(access);
    }
    if let Some(datacenter) = params.get("dc") {
        if !datacenter.is_empty() && datacenter != settings.node.datacenter {
            return ConsulError::Internal("No path to datacenter".into()).into_response();
        }
    }
    if params.flag("stale") && params.flag("consistent") {
        return ConsulError::BadRequest(
            "Cannot specify ?stale with ?consistent, conflicting semantics.".into(),
        )
        .into_response();
    }
    if params
        .get("filter")
        .is_some_and(|filter| !filter.is_empty())
    {
        return ConsulError::BadRequest("filter not supported".into()).into_response();
    }
    next.run(request).await
}

/// The token from `?token=`, `X-Consul-Token` or `Authorization: Bearer`, in that order.
fn presented_token(params: &Params, headers: &HeaderMap) -> Option<String> {
    if let Some(token) = params.get("token").filter(|token| !token.is_empty()) {
        return Some(token.to_owned());
    }
    if let Some(token) = headers
        .get("x-consul-token")
        .and_then(|value| value.to_str().ok())
    {
        return Some(token.trim().to_owned());
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().strip_prefix("Bearer "))
        .map(|token| token.trim().to_owned())
}

/// A JSON answer.
fn json_response(value: &Value) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        value.to_string(),
    )
        .into_response()
}

/// A rendered JSON body with Consul's index headers.
fn indexed_bytes(index: u64, body: bytes::Bytes) -> Response {
    let mut response = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    add_index_headers(response.headers_mut(), index);
    response
}

/// A blocking-capable read's answer: the body with Consul's index headers.
fn indexed(status: StatusCode, index: u64, body: Option<&Value>) -> Response {
    let mut response = match body {
        Some(value) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            value.to_string(),
        )
            .into_response(),
        None => status.into_response(),
    };
    add_index_headers(response.headers_mut(), index);
    response
}

/// Says on every indexed answer whether this node's copy is current, as a Consul server
/// cut off from its leader does: reads keep being served, from a copy that may miss other
/// nodes' changes (`X-Consul-KnownLeader: false`, and how long since the store answered).
/// Done once here, when the answer leaves (a blocking read may have waited minutes), so
/// handlers only write the index.
async fn freshness_headers(
    State(registry): State<Arc<Registry>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if headers.contains_key("x-consul-index") {
        let freshness = registry.freshness();
        if !freshness.is_current() {
            let millis = freshness.last_contact().unwrap_or_default().as_millis();
            headers.insert("x-consul-knownleader", HeaderValue::from_static("false"));
            headers.insert(
                "x-consul-lastcontact",
                HeaderValue::from(u64::try_from(millis).unwrap_or(u64::MAX)),
            );
        }
    }
    response
}

fn add_index_headers(headers: &mut HeaderMap, index: u64) {
    headers.insert("x-consul-index", HeaderValue::from(index.max(1)));
    headers.insert("x-consul-knownleader", HeaderValue::from_static("true"));
    headers.insert("x-consul-lastcontact", HeaderValue::from_static("0"));
}

#[cfg(test)]
mod tests;
