//! Sidecar mode's allow rules through the admin API (`GET /api/allow`,
//! `PUT|DELETE /api/allow/{service}`, `ferry ctl allow`), and their check on the inbound
//! side. The rules live in etcd (`ferry_etcd::allow`); this node reads them from memory.
//!
//! A caller is a node; the services it speaks for are the apps it keeps instances of (a
//! sidecar keeps its own app's), so no rule names a node unless it keeps no app (an edge
//! gateway: `node:<name>`). Which apps a node keeps is read from the registry once per
//! change of it, not per request.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_core::Registry;
use ferry_etcd::{AllowRule, EtcdStore};
use ferry_identity::NodeName;
use ferry_proxy::inbound::AllowRules;
use serde_json::{json, Value};
use std::sync::Mutex;

use crate::admin::Admin;

/// The inbound side's check: the target's rule, if any, against what the caller keeps.
#[derive(Debug)]
pub struct EtcdAllow {
    store: Arc<EtcdStore>,
    registry: Arc<Registry>,
    /// Apps each caller node keeps, as of one registry change index.
    kept: Mutex<(u64, HashMap<String, BTreeSet<String>>)>,
}

impl EtcdAllow {
    pub fn new(store: Arc<EtcdStore>, registry: Arc<Registry>) -> Self {
        Self {
            store,
            registry,
            kept: Mutex::new((0, HashMap::new())),
        }
    }

    fn apps_kept_by(&self, node: &str) -> BTreeSet<String> {
        let index = self.registry.change_index().current();
        // A poisoned lock only means a panic mid-refresh of a cache: rebuild it.
        let mut kept = self
            .kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if kept.0 != index {
            *kept = (index, HashMap::new());
        }
        kept.1
            .entry(node.to_owned())
            .or_insert_with(|| self.registry.apps_kept_by(node))
            .clone()
    }
}

impl AllowRules for EtcdAllow {
    fn check(&self, caller: &NodeName, service: &str) -> Result<(), String> {
        let Some(rule) = self.store.allow_rule(service) else {
            return Ok(());
        };
        if rule.callers.contains(&format!("node:{caller}")) {
            return Ok(());
        }
        let speaks_for = self.apps_kept_by(caller.as_str());
        if speaks_for.iter().any(|app| rule.callers.contains(app)) {
            return Ok(());
        }
        let speaks_for = if speaks_for.is_empty() {
            "keeps no app".to_owned()
        } else {
            format!(
                "speaks for {}",
                speaks_for.into_iter().collect::<Vec<_>>().join(", ")
            )
        };
        Err(format!(
            "node {caller} ({speaks_for}) may not call {service}: its allow rule names {}",
            rule.callers.join(", ")
        ))
    }
}

fn rule_json(rule: &AllowRule) -> Value {
    json!({"callers": rule.callers, "by": rule.by, "at_ms": rule.at_ms})
}

fn needs_etcd() -> Response {
    (
        StatusCode::CONFLICT,
        "allow rules are sidecar mode's: they need a shared store (--store etcd://...)\n",
    )
        .into_response()
}

pub async fn list(State(admin): State<Admin>) -> Response {
    match admin.store.etcd() {
        Some(store) => Json(Value::Object(
            store
                .allow_table()
                .iter()
                .map(|(service, rule)| (service.clone(), rule_json(rule)))
                .collect(),
        ))
        .into_response(),
        None => Json(json!({})).into_response(),
    }
}

/// `PUT /api/allow/{service}` with `{"callers": [...]}`; an empty list lets no one call it.
pub async fn set(State(admin): State<Admin>, Path(service): Path<String>, body: Bytes) -> Response {
    let Some(store) = admin.store.etcd() else {
        return needs_etcd();
    };
    let callers = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|value| {
            value
                .get("callers")?
                .as_array()?
                .iter()
                .map(|caller| {
                    caller
                        .as_str()
                        .map(str::trim)
                        .filter(|caller| !caller.is_empty() && *caller != "node:")
                        .map(str::to_owned)
                })
                .collect::<Option<Vec<_>>>()
        });
    let Some(callers) = callers else {
        return (
            StatusCode::BAD_REQUEST,
            "the body must be {\"callers\": [\"SERVICE\" or \"node:NAME\", ...]}\n",
        )
            .into_response();
    };
    change(store, &service, Some(callers)).await
}

/// `DELETE /api/allow/{service}`: any node may call it again.
pub async fn remove(State(admin): State<Admin>, Path(service): Path<String>) -> Response {
    let Some(store) = admin.store.etcd() else {
        return needs_etcd();
    };
    change(store, &service, None).await
}

async fn change(store: Arc<EtcdStore>, service: &str, callers: Option<Vec<String>>) -> Response {
    let service = service.trim().to_ascii_uppercase();
    if service.is_empty() {
        return (StatusCode::BAD_REQUEST, "a service name is required\n").into_response();
    }
    match store.set_allow(&service, callers.clone()).await {
        Ok(()) => Json(json!({
            "service": service,
            "callers": callers.map(|callers| callers
                .iter()
                .map(|caller| ferry_etcd::allow::normalize_caller(caller))
                .collect::<Vec<_>>()),
        }))
        .into_response(),
        Err(error) => crate::admin::unavailable(format!(
            "{error}; the allow rule was not changed, retry later"
        )),
    }
}
