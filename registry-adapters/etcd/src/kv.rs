//! The Consul KV store on etcd: entries under `/ferry/v1/kv/<key>`, sessions under
//! `/ferry/v1/sessions/<id>`, every node's `KvStore` a copy fed by the node's one watch.
//!
//! - **Writes** are etcd transactions comparing what the writing node's copy showed when it
//!   decided the write: each key's `mod_revision` (`create_revision == 0` for a key it saw
//!   absent) and, for a lock acquire, that the session's key exists. So Consul's `?cas=N`
//!   is a compare of `mod_revision` with N, two nodes racing for one lock never both win,
//!   and a session ending while a lock is taken makes the acquire fail. A write is
//!   acknowledged only once etcd has it; its revision is its index on every node
//!   (CreateIndex = `create_revision`, ModifyIndex = `mod_revision`).
//! - **Sessions** are written on the creating node's lease (the `EtcdStore`'s), so a node
//!   that dies takes its sessions with it once its lease runs out; every node then sees
//!   the session's key go and lets go of its locks by compare-and-swap (`KvStore`).
//! - **Values**: a version byte, the flags, the lock index (u64, little-endian), the
//!   holding session (u16 length and bytes), then the raw value. Sessions are JSON, so
//!   `etcdctl get` shows something a person can read. A value no reader understands
//!   (another tool's) is logged, counted with the registrations' decode errors and skipped.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Compare, CompareOp, DeleteOptions, Event, EventType, GetOptions, KeyValue, PutOptions, Txn,
    TxnOp,
};
use ferry_core::kv::{Behavior, Committed, KvBackend, KvChange, KvEntry, KvWrite, Session};
use ferry_core::store::{Feed, StoreError, Written};
use serde_json::{json, Value};

use crate::layout;
use crate::registrations::EtcdStore;

/// The entry encoding's version; a reader refuses others.
const ENTRY_VERSION: u8 = 1;
const SESSION_VERSION: u64 = 1;
/// Version, flags, lock index, session length.
const ENTRY_HEADER: usize = 1 + 8 + 8 + 2;

/// The KV backend of a node on etcd; shares the node's `EtcdStore` (its connection, lease,
/// watch and decode-error count).
#[derive(Debug, Clone)]
pub struct EtcdKv {
    store: Arc<EtcdStore>,
}

impl EtcdKv {
    pub fn new(store: Arc<EtcdStore>) -> EtcdKv {
        EtcdKv { store }
    }

    /// Runs one call on the node's etcd thread, waiting for its answer. Not retried on
    /// another endpoint: a compare-and-swap retried after an unknown outcome could be
    /// refused by its own first attempt.
    fn call<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(etcd_client::Client) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>> + Send,
    {
        let connection = self.store.connection().clone();
        let timeout: Duration = self.store.call_timeout();
        self.store
            .worker()
            .call(timeout, async move { connection.run(false, call).await })
            .map_err(|_| self.store.unavailable("etcd did not answer in time"))?
            .map_err(|error| self.store.unavailable(error))
    }
}

impl KvBackend for EtcdKv {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn commit(&self, write: &KvWrite<'_>) -> Result<Committed, StoreError> {
        let mut compares = Vec::new();
        for (key, expected) in write.expected {
            compares.push(match expected {
                0 => Compare::create_revision(entry_key(key), CompareOp::Equal, 0),
                index => Compare::mod_revision(entry_key(key), CompareOp::Equal, *index as i64),
            });
        }
        if let Some(session) = write.session {
            compares.push(Compare::create_revision(
                session_key(session),
                CompareOp::Greater,
                0,
            ));
        }
        let mut operations = Vec::new();
        for entry in write.puts {
            operations.push(TxnOp::put(entry_key(&entry.key), encode_entry(entry), None));
        }
        for key in write.removals {
            operations.push(TxnOp::delete(entry_key(key), None));
        }
        if let Some(prefix) = write.remove_prefix {
            operations.push(TxnOp::delete(
                entry_key(prefix),
                Some(DeleteOptions::new().with_prefix()),
            ));
        }
        let answer = self.call(move |mut client| {
            let txn = Txn::new()
                .when(compares.clone())
                .and_then(operations.clone());
            async move { client.txn(txn).await }
        })?;
        let revision = answer.header().map_or(0, |header| header.revision()) as u64;
        if !answer.succeeded() {
            self.store.request_progress();
            return Ok(Committed::Refused(revision));
        }
        if write.puts.is_empty() {
            // A delete may have found nothing: no event would confirm the revision.
            self.store.request_progress();
        }
        Ok(Committed::At(revision))
    }

    fn put_session(&self, session: &Session) -> Result<Written, StoreError> {
        let lease = self.store.lease_id();
        let (key, value) = (session_key(&session.id), encode_session(session));
        let answer = self.call(move |mut client| {
            let (key, value) = (key.clone(), value.clone());
            async move {
                client
                    .put(key, value, Some(PutOptions::new().with_lease(lease)))
                    .await
            }
        })?;
        Ok(Written::At(
            answer.header().map_or(0, |header| header.revision()) as u64,
        ))
    }

    /// Writes the session again, keeping its node's lease: that node restarts its TTL.
    fn renew_session(&self, session: &Session) -> Result<(), StoreError> {
        let (key, value) = (session_key(&session.id), encode_session(session));
        self.call(move |mut client| {
            let (key, value) = (key.clone(), value.clone());
            async move {
                client
                    .put(key, value, Some(PutOptions::new().with_ignore_lease()))
                    .await
            }
        })
        .map(drop)
    }

    fn remove_session(&self, id: &str) -> Result<Written, StoreError> {
        let key = session_key(id);
        let answer = self.call(move |mut client| {
            let key = key.clone();
            async move { client.delete(key, None).await }
        })?;
        if answer.deleted() == 0 {
            self.store.request_progress();
        }
        Ok(Written::At(
            answer.header().map_or(0, |header| header.revision()) as u64,
        ))
    }

    fn revision(&self) -> Result<u64, StoreError> {
        let key = layout::kv_prefix();
        let answer = self.call(move |mut client| {
            let key = key.clone();
            async move {
                client
                    .get(key, Some(GetOptions::new().with_count_only()))
                    .await
            }
        })?;
        // The revision may be of a change outside Ferry's prefix, which no event reports.
        self.store.request_progress();
        Ok(answer.header().map_or(0, |header| header.revision()) as u64)
    }

    fn feed(&self) -> Option<&Feed<KvChange>> {
        Some(self.store.kv_feed())
    }
}

fn entry_key(key: &str) -> String {
    format!("{}{key}", layout::kv_prefix())
}

fn session_key(id: &str) -> String {
    format!("{}{id}", layout::sessions_prefix())
}

/// Pushes a watch event under `kv/` or `sessions/` into the KV feed; false for any other
/// key (the caller's). A value that does not decode is counted and skipped.
pub(crate) fn deliver(store: &EtcdStore, event: &Event, kv: &KeyValue) -> bool {
    let key = String::from_utf8_lossy(kv.key());
    let revision = kv.mod_revision() as u64;
    let put = event.event_type() == EventType::Put;
    let change = if let Some(name) = key.strip_prefix(&layout::kv_prefix()) {
        match put {
            true => decode_entry(name, kv)
                .map(KvChange::Put)
                .map_err(|error| ("a KV entry", error)),
            false => Ok(KvChange::Remove {
                key: name.to_owned(),
                revision,
            }),
        }
    } else if let Some(id) = key.strip_prefix(&layout::sessions_prefix()) {
        match put {
            true => decode_session(id, kv)
                .map(|session| KvChange::SessionPut { session, revision })
                .map_err(|error| ("a session", error)),
            false => Ok(KvChange::SessionRemove {
                id: id.to_owned(),
                revision,
            }),
        }
    } else {
        return false;
    };
    match change {
        Ok(change) => store.kv_feed().push(change),
        Err((what, error)) => store.bad_value(kv, what, &error),
    }
    true
}

/// Everything under `kv/` and `sessions/` at `revision`, as one change.
pub(crate) fn resync(
    store: &EtcdStore,
    entries: &[KeyValue],
    sessions: &[KeyValue],
    revision: u64,
) -> KvChange {
    KvChange::Resync {
        entries: decoded(
            store,
            entries,
            &layout::kv_prefix(),
            "a KV entry",
            decode_entry,
        ),
        sessions: decoded(
            store,
            sessions,
            &layout::sessions_prefix(),
            "a session",
            decode_session,
        ),
        revision,
    }
}

/// What `decode` makes of each value under `prefix` (given the key past it); the rest
/// counted and skipped.
fn decoded<T>(
    store: &EtcdStore,
    kvs: &[KeyValue],
    prefix: &str,
    what: &str,
    decode: impl Fn(&str, &KeyValue) -> Result<T, DecodeError>,
) -> Vec<T> {
    kvs.iter()
        .filter_map(|kv| {
            let key = String::from_utf8_lossy(kv.key());
            let name = key.strip_prefix(prefix)?;
            decode(name, kv)
                .map_err(|error| store.bad_value(kv, what, &error))
                .ok()
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("KV entry encoding version {0} is not known to this Ferry")]
    Version(u8),
    #[error("the value is too short for a KV entry")]
    Short,
    #[error("the holding session is not UTF-8")]
    Session,
    #[error("not a session: {0}")]
    NotSession(String),
}

pub fn encode_entry(entry: &KvEntry) -> Vec<u8> {
    let session = entry.session.as_deref().unwrap_or("");
    let mut out = Vec::with_capacity(ENTRY_HEADER + session.len() + entry.value.len());
    out.push(ENTRY_VERSION);
    out.extend_from_slice(&entry.flags.to_le_bytes());
    out.extend_from_slice(&entry.lock_index.to_le_bytes());
    out.extend_from_slice(&(session.len() as u16).to_le_bytes());
    out.extend_from_slice(session.as_bytes());
    out.extend_from_slice(&entry.value);
    out
}

fn decode_entry(key: &str, kv: &KeyValue) -> Result<KvEntry, DecodeError> {
    let bytes = kv.value();
    let version = *bytes.first().ok_or(DecodeError::Short)?;
    if version != ENTRY_VERSION {
        return Err(DecodeError::Version(version));
    }
    let number = |at: usize| -> Result<u64, DecodeError> {
        let slice = bytes.get(at..at + 8).ok_or(DecodeError::Short)?;
        Ok(u64::from_le_bytes(
            slice.try_into().map_err(|_| DecodeError::Short)?,
        ))
    };
    let length = bytes.get(17..19).ok_or(DecodeError::Short)?;
    let length = u16::from_le_bytes([length[0], length[1]]) as usize;
    let session = bytes
        .get(ENTRY_HEADER..ENTRY_HEADER + length)
        .ok_or(DecodeError::Short)?;
    let session = std::str::from_utf8(session).map_err(|_| DecodeError::Session)?;
    Ok(KvEntry {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(&bytes[ENTRY_HEADER + length..]),
        flags: number(1)?,
        create_index: kv.create_revision() as u64,
        modify_index: kv.mod_revision() as u64,
        lock_index: number(9)?,
        session: (!session.is_empty()).then(|| session.to_owned()),
    })
}

fn encode_session(session: &Session) -> Vec<u8> {
    json!({
        "v": SESSION_VERSION,
        "name": session.name,
        "node": session.node,
        "lock_delay_ms": session.lock_delay.as_millis() as u64,
        "behavior": session.behavior.as_str(),
        "ttl_ms": session.ttl.map(|ttl| ttl.as_millis() as u64),
        "checks": session.node_checks,
    })
    .to_string()
    .into_bytes()
}

fn decode_session(id: &str, kv: &KeyValue) -> Result<Session, DecodeError> {
    let bad = |why: &str| DecodeError::NotSession(why.to_owned());
    let value: Value =
        serde_json::from_slice(kv.value()).map_err(|error| bad(&error.to_string()))?;
    if value.get("v").and_then(Value::as_u64) != Some(SESSION_VERSION) {
        return Err(bad("unknown version"));
    }
    let text = |field: &str| value.get(field).and_then(Value::as_str);
    let behavior = match text("behavior") {
        Some("release") => Behavior::Release,
        Some("delete") => Behavior::Delete,
        _ => return Err(bad("unknown behavior")),
    };
    Ok(Session {
        id: id.to_owned(),
        name: text("name").unwrap_or_default().to_owned(),
        node: text("node").ok_or_else(|| bad("no node"))?.to_owned(),
        lock_delay: Duration::from_millis(
            value
                .get("lock_delay_ms")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        ),
        behavior,
        ttl: value
            .get("ttl_ms")
            .and_then(Value::as_u64)
            .map(Duration::from_millis),
        node_checks: value
            .get("checks")
            .and_then(Value::as_array)
            .map(|checks| {
                checks
                    .iter()
                    .filter_map(|check| check.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        create_index: kv.create_revision() as u64,
        modify_index: kv.mod_revision() as u64,
        expires_at: None,
    })
}
