//! Sidecar mode's allow rules, shared by every node: `/ferry/v1/allow/<SERVICE>` holds
//! `{"callers":["CHECKOUT","node:gateway-1"],"by":"<node>","at_ms":...}`, the services (or
//! `node:<name>` for a node that keeps no app, such as an edge gateway) that may call
//! SERVICE through an inbound listener. A service without a key may be called by any node
//! of the trust domain: rules are off until one is set, as Consul intentions default to
//! allow without ACLs.
//!
//! Every node follows the prefix through its one registry watch (no watch of its own) and
//! keeps the rules in memory, so the inbound listener checks a request without a call to
//! etcd. Values another tool wrote are counted and skipped like any foreign value.

use std::collections::BTreeMap;

use etcd_client::{Event, EventType, KeyValue};
use serde_json::{json, Value};

use crate::connection::EtcdError;
use crate::layout;
use crate::registrations::{gone, now_ms, EtcdStore};

/// Who may call one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowRule {
    /// Upper-case service names, and `node:<name>` entries.
    pub callers: Vec<String>,
    /// The node whose admin API set it.
    pub by: String,
    pub at_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AllowValueError {
    #[error("not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("no \"callers\" list of strings")]
    Callers,
}

/// A caller entry as stored: services upper-case (as the registry keys apps), node names
/// as given.
pub fn normalize_caller(caller: &str) -> String {
    let caller = caller.trim();
    match caller.strip_prefix("node:") {
        // Node names are lower-case DNS labels, as certificates carry them.
        Some(node) => format!("node:{}", node.trim().to_ascii_lowercase()),
        None => caller.to_ascii_uppercase(),
    }
}

pub fn encode(rule: &AllowRule) -> Vec<u8> {
    json!({"callers": rule.callers, "by": rule.by, "at_ms": rule.at_ms})
        .to_string()
        .into_bytes()
}

pub fn decode(bytes: &[u8]) -> Result<AllowRule, AllowValueError> {
    let value: Value = serde_json::from_slice(bytes)?;
    let callers = value
        .get("callers")
        .and_then(Value::as_array)
        .ok_or(AllowValueError::Callers)?
        .iter()
        .map(|caller| caller.as_str().map(normalize_caller))
        .collect::<Option<Vec<_>>>()
        .ok_or(AllowValueError::Callers)?;
    let (by, at_ms) = crate::cutover::stamp(&value);
    Ok(AllowRule { callers, by, at_ms })
}

/// Applies a watch event under `allow/` to the store's rules; false for any other key.
pub(crate) fn deliver(store: &EtcdStore, event: &Event, kv: &KeyValue) -> bool {
    let key = String::from_utf8_lossy(kv.key());
    let Some(service) = key.strip_prefix(&layout::allow_prefix()) else {
        return false;
    };
    let service = layout::unescape(service);
    match event.event_type() {
        EventType::Put => match decode(kv.value()) {
            Ok(rule) => {
                tracing::info!(%service, callers = ?rule.callers, by = %rule.by, "allow rule");
                store.allow_rules().insert(service, rule);
            }
            Err(error) => store.bad_value(kv, "an allow rule", &error),
        },
        EventType::Delete => {
            tracing::info!(%service, "allow rule removed: any node may call it");
            store.allow_rules().remove(&service);
        }
    }
    true
}

/// The rules from a full read of the prefix.
pub(crate) fn table(store: &EtcdStore, kvs: &[KeyValue]) -> BTreeMap<String, AllowRule> {
    let prefix = layout::allow_prefix();
    kvs.iter()
        .filter_map(|kv| {
            let key = kv.key_str().ok()?;
            let service = layout::unescape(key.strip_prefix(&prefix)?);
            match decode(kv.value()) {
                Ok(rule) => Some((service, rule)),
                Err(error) => {
                    store.bad_value(kv, "an allow rule", &error);
                    None
                }
            }
        })
        .collect()
}

impl EtcdStore {
    /// The rule for `service` (upper-case), as this node last saw it; `None`: any node.
    pub fn allow_rule(&self, service: &str) -> Option<AllowRule> {
        self.allow_rules().get(service).cloned()
    }

    /// Every rule, by service.
    pub fn allow_table(&self) -> BTreeMap<String, AllowRule> {
        self.allow_rules().clone()
    }

    /// Sets who may call `service` (`Some`), or lets any node call it again (`None`).
    /// Acknowledged once etcd has it; every node applies it from its watch.
    pub async fn set_allow(
        self: &std::sync::Arc<Self>,
        service: &str,
        callers: Option<Vec<String>>,
    ) -> Result<(), EtcdError> {
        let key = layout::allow_key(&service.to_ascii_uppercase());
        let value = callers.map(|callers| {
            encode(&AllowRule {
                callers: callers.iter().map(|c| normalize_caller(c)).collect(),
                by: self.node().to_owned(),
                at_ms: now_ms(),
            })
        });
        let store = self.clone();
        self.worker()
            .run(async move {
                store
                    .connection()
                    .run(true, |mut client| {
                        let (key, value) = (key.clone(), value.clone());
                        async move {
                            match value {
                                Some(value) => client.put(key, value, None).await.map(drop),
                                None => client.delete(key, None).await.map(drop),
                            }
                        }
                    })
                    .await
            })
            .await
            .map_err(|_| gone())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_reads_back_with_services_upper_case_and_nodes_as_given() {
        let rule = AllowRule {
            callers: vec!["CHECKOUT".into(), "node:gw-1".into()],
            by: "a".into(),
            at_ms: 7,
        };
        assert_eq!(decode(&encode(&rule)).unwrap(), rule);
        let read = decode(br#"{"callers":["checkout"," node:gw-1 "]}"#).unwrap();
        assert_eq!(read.callers, vec!["CHECKOUT", "node:gw-1"]);
        assert!(matches!(
            decode(br#"{"callers":"checkout"}"#),
            Err(AllowValueError::Callers)
        ));
        assert!(matches!(decode(b"nope"), Err(AllowValueError::NotJson(_))));
    }
}
