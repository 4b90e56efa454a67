//! What operators are told about the store this node stands on and the nodes sharing it:
//! the `/ready` detail, `GET /api/store`, `GET /api/nodes` (and so `ferry ctl nodes`) and
//! the `ferry_store_*` metrics all read one `StoreReport`, so they never disagree. The
//! embedded store is reported in the same shapes (always current, one node), so scripts
//! and dashboards need no second case.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_core::Registry;
use ferry_etcd::{EndpointState, EtcdError, EtcdStore};
use serde_json::{json, Value};

pub struct StoreReport {
    registry: Arc<Registry>,
    etcd: Option<Arc<EtcdStore>>,
    /// This node's name, as `--node-name` (or the host) gives it.
    node: String,
    started_ms: u64,
}

/// The store as `/api/store` and the metrics show it.
#[derive(Clone, Debug)]
pub struct StoreStatus {
    /// `etcd` or `embedded`.
    pub kind: &'static str,
    pub current: bool,
    /// Since etcd last answered; `None` for the embedded store.
    pub last_contact: Option<Duration>,
    /// The last revision (the embedded store: change index) this node's registry applied.
    pub applied_revision: u64,
    pub pinned_endpoint: Option<String>,
    pub decode_errors: u64,
    pub lease: Option<i64>,
    pub endpoints: Vec<EndpointState>,
}

impl StoreReport {
    /// The etcd store, when the registry is shared.
    pub fn etcd(&self) -> Option<Arc<EtcdStore>> {
        self.etcd.clone()
    }

    pub fn new(registry: Arc<Registry>, etcd: Option<Arc<EtcdStore>>, node: String) -> StoreReport {
        StoreReport {
            registry,
            etcd,
            node,
            started_ms: now_ms(),
        }
    }

    pub fn status(&self) -> StoreStatus {
        match &self.etcd {
            Some(etcd) => {
                let health = etcd.health();
                StoreStatus {
                    kind: "etcd",
                    current: health.current,
                    last_contact: Some(health.last_contact),
                    applied_revision: health.delivered_revision,
                    pinned_endpoint: Some(health.endpoint),
                    decode_errors: health.decode_errors,
                    lease: Some(health.lease),
                    endpoints: etcd.connection().endpoints(),
                }
            }
            None => StoreStatus {
                kind: "embedded",
                current: true,
                last_contact: None,
                applied_revision: self.registry.index(),
                pinned_endpoint: None,
                decode_errors: 0,
                lease: None,
                endpoints: Vec::new(),
            },
        }
    }

    /// What `/ready` says after `ready`: reads are served either way, so a load balancer
    /// keeps sending them; the operator reads whether they are current.
    pub fn ready_detail(&self) -> String {
        let status = self.status();
        match (status.kind, status.current, status.last_contact) {
            ("etcd", true, _) => "store etcd: current".to_owned(),
            ("etcd", false, Some(since)) => {
                format!("store etcd: stale, last contact {} s ago", since.as_secs())
            }
            (kind, _, _) => format!("store {kind}"),
        }
    }

    /// `GET /api/store`.
    pub fn store_json(&self) -> Value {
        let status = self.status();
        json!({
            "kind": status.kind,
            "node": self.node,
            "current": status.current,
            "last_contact_ms": status.last_contact.map(|since| since.as_millis() as u64),
            "applied_revision": status.applied_revision,
            "pinned_endpoint": status.pinned_endpoint,
            "decode_errors": status.decode_errors,
            "lease": status.lease,
            "endpoints": status.endpoints.iter().map(|endpoint| json!({
                "endpoint": endpoint.endpoint,
                "healthy": endpoint.healthy,
                "has_leader": endpoint.has_leader,
                "pinned": endpoint.pinned,
                "last_probe_ms": endpoint.last_probe_age.map(|age| age.as_millis() as u64),
                "revision": endpoint.revision,
                "last_error": endpoint.last_error,
            })).collect::<Vec<_>>(),
        })
    }

    /// `GET /api/nodes`: every node sharing the store, as their keys in etcd describe them
    /// (`self` marks the node answering); with the embedded store, this node alone.
    pub async fn nodes_json(&self) -> Result<Value, EtcdError> {
        let now = now_ms();
        let Some(etcd) = &self.etcd else {
            return Ok(json!([{
                "node": self.node,
                "self": true,
                "store": "embedded",
                "started_ms": self.started_ms,
                "endpoint": "embedded",
                "applied_revision": self.registry.index(),
                "instances_kept": self.registry.instance_count(),
                "refreshed_ms": now,
                "refreshed_seconds_ago": 0,
                "version": env!("CARGO_PKG_VERSION"),
            }]));
        };
        let mut nodes = etcd.nodes().await?;
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(Value::Array(
            nodes
                .iter()
                .map(|node| {
                    json!({
                        "node": node.node,
                        "self": node.node == etcd.node(),
                        "store": "etcd",
                        "started_ms": node.started_ms,
                        "endpoint": node.endpoint,
                        "applied_revision": node.applied_revision,
                        "instances_kept": node.instances_kept,
                        "refreshed_ms": node.refreshed_ms,
                        "refreshed_seconds_ago": now.saturating_sub(node.refreshed_ms) / 1000,
                        "version": node.version,
                        "inbound": node.inbound,
                    })
                })
                .collect(),
        ))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_embedded_store_is_one_current_node() {
        let report = StoreReport::new(Arc::new(Registry::default()), None, "a".into());
        assert_eq!(report.ready_detail(), "store embedded");
        let store = report.store_json();
        assert_eq!(store["kind"], "embedded");
        assert_eq!(store["current"], true);
        assert_eq!(store["endpoints"], json!([]));
        let nodes = report.nodes_json().await.unwrap();
        assert_eq!(nodes[0]["node"], "a");
        assert_eq!(nodes[0]["self"], true);
        assert_eq!(nodes[0]["endpoint"], "embedded");
    }
}
