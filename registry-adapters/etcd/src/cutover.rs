//! The cutover table every node follows: `/ferry/v1/cutover/<SERVICE>` holds
//! `{"mode":"mesh"|"legacy","by":"<node>","at_ms":...}`, with no lease (a mode outlives the
//! node that set it).
//!
//! A change is written by the node whose admin API got it and is acknowledged only once etcd
//! has it; every node (the writer too) follows the prefix with a watch (`prefix_watch`) and
//! applies what it sees. A node starts from a full read, never from its own file. Values
//! another tool wrote under the prefix are logged, counted and skipped.
//!
//! Routes: each node publishes a service in the mesh at its own outbound listener, a rule
//! applied when a view reads, so no node writes instances for it. Only the writer of the
//! change "touches" the service's instances once (`touch_instances`: the same value again,
//! guarded by its revision), so every node's registry sees them change at one etcd revision
//! and wakes its Eureka and Consul readers: one write per instance per cutover, not one per
//! instance per node.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use etcd_client::{Compare, CompareOp, EventType, KeyValue, PutOptions, Txn, TxnOp};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::connection::{Connection, EtcdError};
use crate::layout::{self, unescape};
use crate::prefix_watch::{self, Update};
use crate::registrations::{gone, now_ms, EtcdStore};
use crate::worker::Worker;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutoverMode {
    Mesh,
    Legacy,
}

impl CutoverMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CutoverMode::Mesh => "mesh",
            CutoverMode::Legacy => "legacy",
        }
    }
}

/// One service's entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CutoverEntry {
    pub mode: CutoverMode,
    /// The node whose admin API set it.
    pub by: String,
    pub at_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CutoverValueError {
    #[error("not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("mode {0:?} is neither mesh nor legacy")]
    Mode(Option<String>),
}

pub fn encode(entry: &CutoverEntry) -> Vec<u8> {
    json!({"mode": entry.mode.as_str(), "by": entry.by, "at_ms": entry.at_ms})
        .to_string()
        .into_bytes()
}

pub fn decode(bytes: &[u8]) -> Result<CutoverEntry, CutoverValueError> {
    let value: Value = serde_json::from_slice(bytes)?;
    let mode = match value.get("mode").and_then(Value::as_str) {
        Some("mesh") => CutoverMode::Mesh,
        Some("legacy") => CutoverMode::Legacy,
        other => return Err(CutoverValueError::Mode(other.map(str::to_owned))),
    };
    let (by, at_ms) = stamp(&value);
    Ok(CutoverEntry { mode, by, at_ms })
}

/// Who set a shared entry (a node name) and when (ms since the epoch), as the cutover
/// table and the allow rules record it; missing fields read as empty.
pub(crate) fn stamp(value: &Value) -> (String, u64) {
    (
        value
            .get("by")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        value
            .get("at_ms")
            .and_then(Value::as_u64)
            .unwrap_or_default(),
    )
}

/// What a node's watch of the table hands over, in etcd's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CutoverEvent {
    Set {
        service: String,
        entry: CutoverEntry,
        revision: i64,
    },
    /// The key was deleted (by hand): the service goes back to legacy.
    Removed { service: String, revision: i64 },
    /// The whole table, after the watch fell behind a compaction: apply the difference.
    Reload {
        table: BTreeMap<String, CutoverEntry>,
        revision: i64,
    },
}

/// The table in etcd, through one node's connection.
#[derive(Clone)]
pub struct SharedCutover {
    node: String,
    connection: Connection,
    worker: Worker,
    decode_errors: Arc<AtomicU64>,
}

impl std::fmt::Debug for SharedCutover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCutover")
            .field("node", &self.node)
            .finish()
    }
}

impl SharedCutover {
    pub fn new(store: &EtcdStore) -> SharedCutover {
        SharedCutover {
            node: store.node().to_owned(),
            connection: store.connection().clone(),
            worker: store.worker().clone(),
            decode_errors: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Values under the prefix that were not a cutover entry, so far.
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors.load(Ordering::Relaxed)
    }

    /// The whole table and the revision it was read at.
    pub async fn load(&self) -> Result<(BTreeMap<String, CutoverEntry>, i64), EtcdError> {
        let this = self.clone();
        self.worker
            .run(async move {
                let (kvs, revision) =
                    prefix_watch::read_all(&this.connection, &layout::cutover_prefix(), 0).await?;
                Ok((this.table(&kvs), revision as i64))
            })
            .await
            .map_err(|_| gone())?
    }

    /// Writes a service's mode; returns the revision etcd gave it. A put of one whole value
    /// may be retried on another endpoint: the same entry twice is the same state.
    pub async fn set(&self, service: &str, mode: CutoverMode) -> Result<i64, EtcdError> {
        let entry = CutoverEntry {
            mode,
            by: self.node.clone(),
            at_ms: now_ms(),
        };
        let (key, value) = (layout::cutover_key(service), encode(&entry));
        let connection = self.connection.clone();
        self.worker
            .run(async move {
                let answer = connection
                    .run(true, |mut client| {
                        let (key, value) = (key.clone(), value.clone());
                        async move { client.put(key, value, None).await }
                    })
                    .await?;
                Ok(answer.header().map_or(0, |header| header.revision()))
            })
            .await
            .map_err(|_| gone())?
    }

    /// Writes every registration of `app` again, unchanged and on its own lease, each only if
    /// nobody changed it since it was read: every node's registry then sees the app change
    /// at one revision and wakes its readers, who read it with that node's route. Returns
    /// how many were touched.
    pub async fn touch_instances(&self, app: &str) -> Result<usize, EtcdError> {
        let connection = self.connection.clone();
        let prefix = format!("{}{}/", layout::instances_prefix(), layout::escape(app));
        self.worker
            .run(async move {
                let (kvs, _) = prefix_watch::read_all(&connection, &prefix, 0).await?;
                let mut touched = 0;
                // One txn per instance keeps each under etcd's limit on operations per txn
                // and lets one changed meanwhile be skipped alone.
                for kv in kvs {
                    let (key, value, revision) =
                        (kv.key().to_vec(), kv.value().to_vec(), kv.mod_revision());
                    let answer = connection
                        .run(true, |mut client| {
                            let (key, value) = (key.clone(), value.clone());
                            async move {
                                let txn = Txn::new()
                                    .when([Compare::mod_revision(
                                        key.clone(),
                                        CompareOp::Equal,
                                        revision,
                                    )])
                                    .and_then([TxnOp::put(
                                        key,
                                        value,
                                        Some(PutOptions::new().with_ignore_lease()),
                                    )]);
                                client.txn(txn).await
                            }
                        })
                        .await?;
                    if answer.succeeded() {
                        touched += 1;
                    }
                }
                Ok(touched)
            })
            .await
            .map_err(|_| gone())?
    }

    /// Follows the table from the revision after `from` (the revision `load` returned). The
    /// watch runs on the etcd thread until the receiver is dropped.
    pub fn watch(&self, from: i64) -> mpsc::UnboundedReceiver<CutoverEvent> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let this = self.clone();
        self.worker.spawn(prefix_watch::watch_prefix(
            self.connection.clone(),
            layout::cutover_prefix(),
            from,
            move |update| {
                for event in this.events(update) {
                    if sender.send(event).is_err() {
                        return false;
                    }
                }
                !sender.is_closed()
            },
        ));
        receiver
    }

    fn events(&self, update: Update) -> Vec<CutoverEvent> {
        match update {
            Update::Reload { kvs, revision } => vec![CutoverEvent::Reload {
                table: self.table(&kvs),
                revision,
            }],
            Update::Events(events) => events
                .iter()
                .filter_map(|event| {
                    let kv = event.kv()?;
                    let service = service_of(kv)?;
                    let revision = kv.mod_revision();
                    match event.event_type() {
                        EventType::Put => self.entry(kv).map(|entry| CutoverEvent::Set {
                            service,
                            entry,
                            revision,
                        }),
                        EventType::Delete => Some(CutoverEvent::Removed { service, revision }),
                    }
                })
                .collect(),
        }
    }

    fn table(&self, kvs: &[KeyValue]) -> BTreeMap<String, CutoverEntry> {
        kvs.iter()
            .filter_map(|kv| Some((service_of(kv)?, self.entry(kv)?)))
            .collect()
    }

    fn entry(&self, kv: &KeyValue) -> Option<CutoverEntry> {
        match decode(kv.value()) {
            Ok(entry) => Some(entry),
            Err(error) => {
                self.decode_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    key = %String::from_utf8_lossy(kv.key()),
                    %error,
                    "skipping a value under Ferry's cutover prefix that is not a cutover entry"
                );
                None
            }
        }
    }
}

fn service_of(kv: &KeyValue) -> Option<String> {
    let key = std::str::from_utf8(kv.key()).ok()?;
    let service = key.strip_prefix(&layout::cutover_prefix())?;
    (!service.is_empty()).then(|| unescape(service))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_and_garbage_is_refused() {
        let entry = CutoverEntry {
            mode: CutoverMode::Mesh,
            by: "node-a".into(),
            at_ms: 42,
        };
        assert_eq!(decode(&encode(&entry)).unwrap(), entry);
        assert!(decode(b"\xffnope").is_err());
        assert!(decode(br#"{"mode":"sideways"}"#).is_err());
        assert!(decode(br#"{"by":"a"}"#).is_err());
    }
}
