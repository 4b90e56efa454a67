//! The registry store every node shares: registrations in etcd, one watch feeding each
//! node's in-memory registry, and the node's lease.
//!
//! - **Writes** go to etcd and are acknowledged only once etcd has them; the revision etcd
//!   gave is the change's index on every node (`Written::At`). A registration is written on
//!   its keeper's lease, so a node that dies takes the instances it kept with it once that
//!   lease runs out; a node changing another node's instance keeps that node's lease
//!   (`ignore_lease`). Imported copies of a legacy registry's instances carry no lease: the
//!   node that runs the sync keeps them.
//! - **No lease per instance**: each node holds one lease with Eureka's 90 s expiry, kept
//!   alive every 30 s. Eureka heartbeats never reach etcd; the keeping node evicts as the
//!   embedded store does. A lease lost while etcd was out of reach is granted again and
//!   every instance this node keeps is written back on it (go-micro's etcd registry does
//!   the same).
//! - **Reads** never touch etcd: the watch (all of `/ferry/v1/`, from the revision of the
//!   first full read) pushes every registration change into the registry's feed, and every
//!   KV entry and session change into the KV store's (`kv`), so both see one order. A watch that fails moves
//!   to another endpoint and resumes where it stopped; one that fell behind a compaction
//!   reads everything again and hands the registry a `Resync`.
//! - **Bad values** under the prefix (another tool's writes) are logged, counted and
//!   skipped; they never stop the watch.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{EventType, GetOptions, KeyValue, PutOptions, WatchOptions};
use ferry_core::kv::KvChange;
use ferry_core::model::{Instance, Registration};
use ferry_core::store::{Change, Feed, Freshness, Replicated, Store, StoreError, Written};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::Notify;

use crate::connection::{ConnectOptions, Connection, EtcdError};
use crate::layout::{self, unescape};
use crate::leases::LeasePool;
use crate::prefix_watch;
use crate::worker::Worker;

/// How often the watch asks etcd to confirm it is current, and how long without any word
/// from etcd before the node counts its copy as stale and moves its watch elsewhere.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);
const STALE_AFTER: Duration = Duration::from_secs(10);
/// How often the node's own key (`nodes/<node>`) is refreshed with what it has applied.
const NODE_REFRESH: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct EtcdStoreOptions {
    /// `host:port` of every member.
    pub endpoints: Vec<String>,
    /// This node's name, unique in the cluster.
    pub node: String,
    /// The TTL of the lease this node keeps its instances on (Eureka's lease expiry).
    pub lease_ttl: Duration,
    pub connect: ConnectOptions,
    /// Where other nodes reach this node's inbound listener (sidecar mode), published in
    /// its node key; `None` when it has none.
    pub inbound: Option<String>,
}

impl EtcdStoreOptions {
    pub fn new(endpoints: Vec<String>, node: String) -> EtcdStoreOptions {
        EtcdStoreOptions {
            endpoints,
            node,
            lease_ttl: Duration::from_secs(90),
            connect: ConnectOptions::default(),
            inbound: None,
        }
    }
}

/// What an operator and `/ready` are told about the store.
#[derive(Clone, Debug)]
pub struct StoreHealth {
    /// etcd answered the watch recently: reads are current.
    pub current: bool,
    /// Since the last word from etcd.
    pub last_contact: Duration,
    /// The last revision pushed to the registry.
    pub delivered_revision: u64,
    pub endpoint: String,
    pub decode_errors: u64,
    pub lease: i64,
}

/// A node as its own key in etcd describes it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub node: String,
    pub started_ms: u64,
    pub refreshed_ms: u64,
    pub applied_revision: u64,
    pub endpoint: String,
    pub instances_kept: u64,
    pub version: String,
    /// Its inbound listener's address, in sidecar mode.
    pub inbound: Option<String>,
}

pub struct EtcdStore {
    node: String,
    worker: Worker,
    connection: Connection,
    options: EtcdStoreOptions,
    feed: Feed,
    /// The KV entries' and sessions' changes, for the KV store (`kv`): the same watch feeds
    /// both, so they come in one order.
    kv_feed: Feed<KvChange>,
    /// Keeper of every registration key this node has seen.
    owners: Mutex<HashMap<String, String>>,
    /// Every live node's inbound address, from the node keys the watch delivers.
    inbounds: Mutex<HashMap<String, String>>,
    /// Sidecar mode's allow rules, by service (`allow`).
    allow: Mutex<std::collections::BTreeMap<String, crate::allow::AllowRule>>,
    /// The values of the keys this node keeps, to write back after a lost lease.
    kept: Mutex<HashMap<String, Vec<u8>>>,
    /// Registrations accepted while etcd was out of reach, to write once it is back; the
    /// number orders a later write of the same key after an earlier one.
    pending: Mutex<HashMap<String, (u64, Op)>>,
    pending_seq: AtomicU64,
    /// etcd deleted a key this node keeps (its lease ran out while the node was cut off):
    /// the lease must be granted again and the kept keys written back.
    lease_suspect: std::sync::atomic::AtomicBool,
    leases: Mutex<LeasePool>,
    decode_errors: AtomicU64,
    last_contact: Mutex<Instant>,
    /// Asks the watch for a progress answer now (a delete that found nothing to delete
    /// produces no event to wait for).
    progress_now: Notify,
    started_ms: u64,
    /// The store itself, for calls that run on the worker.
    this: Mutex<Weak<EtcdStore>>,
    stopped: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("node", &self.node)
            .field("endpoints", &self.options.endpoints)
            .finish()
    }
}

impl EtcdStore {
    /// Connects, takes a lease, reads every registration and starts the watch. The first
    /// full read is in the feed when this returns: `Registry::apply_feed` loads it.
    pub async fn start(options: EtcdStoreOptions) -> Result<Arc<EtcdStore>, EtcdError> {
        let worker = Worker::start("ferry-etcd").map_err(|error| EtcdError::Unavailable {
            endpoint: options.endpoints.join(","),
            reason: format!("cannot start the etcd thread: {error}"),
        })?;
        let endpoints = options.endpoints.clone();
        let connect = options.connect.clone();
        let connection = worker
            .run(async move { Connection::connect(&endpoints, connect).await })
            .await
            .map_err(|_| gone())??;
        let store = Arc::new(EtcdStore {
            node: options.node.clone(),
            worker: worker.clone(),
            connection,
            options,
            feed: Feed::default(),
            kv_feed: Feed::default(),
            owners: Mutex::new(HashMap::new()),
            inbounds: Mutex::new(HashMap::new()),
            allow: Mutex::new(std::collections::BTreeMap::new()),
            kept: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            pending_seq: AtomicU64::new(0),
            lease_suspect: std::sync::atomic::AtomicBool::new(false),
            leases: Mutex::new(LeasePool::default()),
            decode_errors: AtomicU64::new(0),
            last_contact: Mutex::new(Instant::now()),
            progress_now: Notify::new(),
            started_ms: now_ms(),
            this: Mutex::new(Weak::new()),
            stopped: std::sync::atomic::AtomicBool::new(false),
        });
        *store.this.lock() = Arc::downgrade(&store);
        let starting = store.clone();
        worker
            .run(async move {
                let lease = starting.grant().await?;
                *starting.leases.lock() = LeasePool::new(lease);
                let revision = starting.resync().await?;
                starting.refresh_node().await?;
                let weak = Arc::downgrade(&starting);
                tokio::spawn(watch(weak.clone(), revision + 1));
                tokio::spawn(keep_alive(weak));
                Ok::<(), EtcdError>(())
            })
            .await
            .map_err(|_| gone())??;
        Ok(store)
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Stops keeping the lease and the node's key alive, as a node that goes away does:
    /// its instances stay in etcd until the lease runs out, so clients that fail over to
    /// another node meanwhile are adopted there without a gap.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    pub(crate) fn worker(&self) -> &Worker {
        &self.worker
    }

    /// Whether reads are current, and since the last word from etcd. Every Consul read
    /// asks (through `Store::freshness`), so this copies no endpoint name and takes no
    /// lease lock.
    fn contact(&self) -> (bool, Duration) {
        let last_contact = self.last_contact.lock().elapsed();
        (
            last_contact < STALE_AFTER && self.connection.healthy(),
            last_contact,
        )
    }

    pub fn health(&self) -> StoreHealth {
        let (current, last_contact) = self.contact();
        StoreHealth {
            current,
            last_contact,
            delivered_revision: self.feed.delivered_revision(),
            endpoint: self.connection.pinned().0,
            decode_errors: self.decode_errors.load(Ordering::Relaxed),
            lease: self.leases.lock().first(),
        }
    }

    /// Every node whose lease is alive, as their keys say.
    pub async fn nodes(self: &Arc<Self>) -> Result<Vec<NodeInfo>, EtcdError> {
        let store = self.clone();
        self.worker
            .run(async move {
                let prefix = layout::nodes_prefix();
                let kvs = store
                    .connection
                    .run(true, |mut client| {
                        let prefix = prefix.clone();
                        async move {
                            client
                                .get(prefix, Some(GetOptions::new().with_prefix()))
                                .await
                        }
                    })
                    .await?
                    .take_kvs();
                Ok(kvs.iter().filter_map(node_info).collect())
            })
            .await
            .map_err(|_| gone())?
    }

    async fn grant(&self) -> Result<i64, EtcdError> {
        let ttl = self.options.lease_ttl.as_secs().max(2) as i64;
        let granted = self
            .connection
            .run(true, |mut client| async move {
                client.lease_grant(ttl, None).await
            })
            .await?;
        tracing::info!(
            lease = granted.id(),
            ttl,
            "holding an etcd lease for this node's instances"
        );
        Ok(granted.id())
    }

    /// Reads every registration, KV entry and session at one revision and pushes them as
    /// a `Resync` to the registry and to the KV store.
    async fn resync(&self) -> Result<u64, EtcdError> {
        let (kvs, revision) =
            prefix_watch::read_all(&self.connection, &layout::instances_prefix(), 0).await?;
        let (entries, _) =
            prefix_watch::read_all(&self.connection, &layout::kv_prefix(), revision).await?;
        let (sessions, _) =
            prefix_watch::read_all(&self.connection, &layout::sessions_prefix(), revision).await?;
        let (nodes, _) =
            prefix_watch::read_all(&self.connection, &layout::nodes_prefix(), revision).await?;
        let (rules, _) =
            prefix_watch::read_all(&self.connection, &layout::allow_prefix(), revision).await?;
        *self.allow.lock() = crate::allow::table(self, &rules);
        *self.inbounds.lock() = nodes
            .iter()
            .filter_map(node_info)
            .filter_map(|info| Some((info.node, info.inbound?)))
            .collect();
        let mut instances = Vec::new();
        let mut owners = HashMap::new();
        let ours = self.leases.lock().ids();
        let mut orphans = Vec::new();
        for kv in &kvs {
            if let Some(envelope) = self.decode(kv) {
                let key = kv.key_str().unwrap_or_default().to_owned();
                // This node's, on a lease it does not hold: written by this node before
                // a restart, on the lease the old process held until it ran out.
                if envelope.owner == self.node && kv.lease() != 0 && !ours.contains(&kv.lease()) {
                    orphans.push((key.clone(), kv.value().to_vec()));
                }
                owners.insert(key, envelope.owner);
                instances.push((
                    envelope.instance,
                    kv.create_revision() as u64,
                    kv.mod_revision() as u64,
                ));
            }
        }
        tracing::info!(
            instances = instances.len(),
            kv_entries = entries.len(),
            sessions = sessions.len(),
            revision,
            "read every registration, KV entry and session from etcd"
        );
        {
            let mut known = self.owners.lock();
            *known = owners;
            let mut kept = self.kept.lock();
            kept.retain(|key, _| known.get(key).is_some_and(|owner| *owner == self.node));
        }
        self.feed.push(Replicated::Resync {
            instances,
            revision,
        });
        self.kv_feed
            .push(crate::kv::resync(self, &entries, &sessions, revision));
        *self.last_contact.lock() = Instant::now();
        if !orphans.is_empty() {
            tracing::info!(
                instances = orphans.len(),
                "keeping this node's instances from before its restart, on its new lease"
            );
        }
        for (key, value) in orphans {
            self.kept.lock().insert(key.clone(), value.clone());
            let lease = self.lease_for(&key).await?;
            self.put_on_lease(key, value, lease).await?;
        }
        Ok(revision)
    }

    /// Counts and logs a value under Ferry's prefix that no reader understands.
    pub(crate) fn bad_value(&self, kv: &KeyValue, what: &str, error: &dyn std::fmt::Display) {
        self.decode_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            key = %String::from_utf8_lossy(kv.key()),
            %error,
            "skipping a value under Ferry's etcd prefix that is not {what}"
        );
    }

    /// Everything up to `revision` has been pushed, to the registry and the KV store.
    fn delivered(&self, revision: u64) {
        self.feed.delivered(revision);
        self.kv_feed.delivered(revision);
    }

    /// The lease the sessions created on this node are kept on: its first, the one its own
    /// key is on, so its sessions go when the node does.
    pub fn lease_id(&self) -> i64 {
        self.leases.lock().first()
    }

    /// Values under Ferry's prefix skipped as unreadable (registrations, KV entries and
    /// sessions): `ferry_store_decode_errors_total`.
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors.load(Ordering::Relaxed)
    }

    pub(crate) fn kv_feed(&self) -> &Feed<KvChange> {
        &self.kv_feed
    }

    /// Asks the watch to confirm it is current: a write that changed nothing (a refused
    /// compare, a delete of nothing) makes no event to wait for.
    pub(crate) fn request_progress(&self) {
        self.progress_now.notify_one();
    }

    fn decode(&self, kv: &KeyValue) -> Option<layout::Envelope> {
        match layout::decode(kv.value()) {
            Ok(envelope) => Some(envelope),
            Err(error) => {
                self.bad_value(kv, "a registration", &error);
                None
            }
        }
    }

    pub(crate) fn allow_rules(
        &self,
    ) -> parking_lot::MutexGuard<'_, std::collections::BTreeMap<String, crate::allow::AllowRule>>
    {
        self.allow.lock()
    }

    /// Follows the node keys for their inbound addresses (sidecar mode's routes).
    fn node_changed(&self, key: &str, event: EventType, kv: &KeyValue) {
        let Some(node) = key.strip_prefix(&layout::nodes_prefix()) else {
            return;
        };
        let node = layout::unescape(node);
        let inbound = match event {
            EventType::Put => node_info(kv).and_then(|info| info.inbound),
            EventType::Delete => None,
        };
        let mut inbounds = self.inbounds.lock();
        match inbound {
            Some(inbound) => {
                if inbounds.get(&node) != Some(&inbound) {
                    tracing::info!(%node, %inbound, "node's inbound listener");
                    inbounds.insert(node, inbound);
                }
            }
            None => {
                inbounds.remove(&node);
            }
        }
    }

    /// Where `node`'s inbound listener is, as its node key says; `None` for a node with no
    /// inbound listener or no live key.
    pub fn inbound_of(&self, node: &str) -> Option<String> {
        self.inbounds.lock().get(node).cloned()
    }

    /// Applies one watch response's events to what this store knows and pushes them.
    fn deliver(&self, events: &[etcd_client::Event]) {
        // A lease that ends deletes every key on it at one revision, delivered in one
        // response: a node's key deleted at the revision of an instance's delete means the
        // instance went with its node, not by a node's deregistration.
        let nodes_left: HashSet<(i64, String)> = events
            .iter()
            .filter(|event| event.event_type() == EventType::Delete)
            .filter_map(|event| {
                let kv = event.kv()?;
                let key = std::str::from_utf8(kv.key()).ok()?;
                let node = key.strip_prefix(&layout::nodes_prefix())?;
                Some((kv.mod_revision(), layout::unescape(node)))
            })
            .collect();
        for event in events {
            let Some(kv) = event.kv() else { continue };
            if crate::kv::deliver(self, event, kv) || crate::allow::deliver(self, event, kv) {
                continue;
            }
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            if key.starts_with(&layout::nodes_prefix()) {
                self.node_changed(&key, event.event_type(), kv);
                continue;
            }
            let Some((app, id)) = parse_instance_key(&key) else {
                continue;
            };
            let revision = kv.mod_revision() as u64;
            match event.event_type() {
                EventType::Put => {
                    let Some(envelope) = self.decode(kv) else {
                        continue;
                    };
                    if envelope.owner != self.node {
                        self.kept.lock().remove(&key);
                        self.leases.lock().release(&key);
                    }
                    self.owners.lock().insert(key, envelope.owner);
                    self.feed.push(Replicated::Put {
                        instance: Box::new(envelope.instance),
                        created: kv.create_revision() as u64,
                        revision,
                    });
                }
                EventType::Delete => {
                    if self.kept.lock().contains_key(&key) {
                        // Not this node's delete (it forgets a key before deleting it): its
                        // lease ran out while it was cut off. Its clients still renew here,
                        // so the instance stays, and goes back into etcd on a new lease.
                        tracing::warn!(%key, "etcd dropped an instance this node keeps; writing it back");
                        self.lease_suspect.store(true, Ordering::Release);
                        continue;
                    }
                    let keeper = self.owners.lock().remove(&key);
                    let keeper_left = keeper
                        .is_some_and(|keeper| nodes_left.contains(&(kv.mod_revision(), keeper)));
                    self.leases.lock().release(&key);
                    self.feed.push(Replicated::Remove {
                        app,
                        id,
                        revision,
                        keeper_left,
                    });
                }
            }
        }
    }

    /// Writes this node's key: who it is and how far it has applied.
    async fn refresh_node(&self) -> Result<(), EtcdError> {
        let lease = self.leases.lock().first();
        let value = json!({
            "node": self.node,
            "started_ms": self.started_ms,
            "refreshed_ms": now_ms(),
            "applied_revision": self.feed.delivered_revision(),
            "endpoint": self.connection.pinned().0,
            "instances_kept": self.kept.lock().len(),
            "version": env!("CARGO_PKG_VERSION"),
            "inbound": self.options.inbound,
        })
        .to_string();
        self.put_on_lease(layout::node_key(&self.node), value.into_bytes(), lease)
            .await
    }

    async fn put_on_lease(&self, key: String, value: Vec<u8>, lease: i64) -> Result<(), EtcdError> {
        self.connection
            .run(true, |mut client| {
                let (key, value) = (key.clone(), value.clone());
                async move {
                    client
                        .put(key, value, Some(PutOptions::new().with_lease(lease)))
                        .await
                }
            })
            .await
            .map(drop)
    }

    /// Keeps every lease alive; a lease etcd no longer knows is granted again and the
    /// instances that were on it are written back on the new one.
    async fn keep_leases(&self) -> Result<(), EtcdError> {
        let ids = self.leases.lock().ids();
        for lease in ids {
            self.keep_lease(lease).await?;
        }
        Ok(())
    }

    async fn keep_lease(&self, lease: i64) -> Result<(), EtcdError> {
        let ttl = match self
            .connection
            .run(true, |mut client| async move {
                let (mut keeper, mut answers) = client.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                Ok(answers.message().await?.map_or(0, |answer| answer.ttl()))
            })
            .await
        {
            Ok(ttl) => ttl,
            // etcd says so with a TTL of 0 or with this error, depending on the path.
            Err(EtcdError::Rejected(error)) if lease_not_found(&error) => 0,
            Err(error) => return Err(error),
        };
        if ttl > 0 {
            return Ok(());
        }
        tracing::warn!(
            lease,
            "an etcd lease of this node expired; taking a new one and writing back its instances"
        );
        let renewed = self.grant().await?;
        let moved = self.leases.lock().replace(lease, renewed);
        let kept: Vec<(String, Vec<u8>)> = {
            let kept = self.kept.lock();
            moved
                .into_iter()
                .filter_map(|key| kept.get(&key).map(|value| (key, value.clone())))
                .collect()
        };
        for (key, value) in kept {
            self.put_on_lease(key, value, renewed).await?;
        }
        if self.leases.lock().first() == renewed {
            self.refresh_node().await?;
        }
        Ok(())
    }

    /// The lease a key this node keeps goes on, taking a new one when all are full.
    async fn lease_for(&self, key: &str) -> Result<i64, EtcdError> {
        loop {
            if let Some(lease) = self.leases.lock().place(key) {
                return Ok(lease);
            }
            let lease = self.grant().await?;
            self.leases.lock().add(lease);
        }
    }

    pub(crate) fn unavailable(
        &self,
        reason: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> StoreError {
        StoreError::Unavailable {
            backend: "etcd",
            source: reason.into(),
        }
    }

    fn put(&self, instance: &Instance, adopt: bool) -> Result<Written, StoreError> {
        let key = layout::instance_key(&instance.app, &instance.id);
        let keeper = match self.owners.lock().get(&key) {
            Some(owner) if !adopt => owner.clone(),
            _ => self.node.clone(),
        };
        let value = layout::encode(&keeper, instance);
        let lease = if instance.registration == Registration::Imported {
            LeaseUse::None
        } else if keeper == self.node {
            LeaseUse::Own
        } else {
            LeaseUse::Keep
        };
        if lease == LeaseUse::Own {
            self.kept.lock().insert(key.clone(), value.clone());
        } else {
            self.kept.lock().remove(&key);
            self.leases.lock().release(&key);
        }
        self.owners.lock().insert(key.clone(), keeper);
        self.send(key, Op::Put { value, lease })
    }

    fn delete(&self, app: &str, id: &str) -> Result<Written, StoreError> {
        let key = layout::instance_key(app, id);
        // Forgotten first: the watch may bring the delete back before etcd's answer does,
        // and a delete of a kept key means a lost lease.
        self.kept.lock().remove(&key);
        self.owners.lock().remove(&key);
        self.leases.lock().release(&key);
        self.send(key, Op::Delete)
    }

    /// Sends one registration change to etcd. While etcd is out of reach the change is
    /// accepted here and kept for `replay` (a Eureka server accepts registrations while
    /// its peers are away, too): `Written::Local`.
    fn send(&self, key: String, op: Op) -> Result<Written, StoreError> {
        let reachable =
            self.connection.healthy() || self.last_contact.lock().elapsed() < STALE_AFTER;
        let outcome = if reachable {
            let store = self.self_ref();
            let (call_key, call_op) = (key.clone(), op.clone());
            self.worker
                .call(self.call_timeout(), async move {
                    match store {
                        Some(store) => store.apply(&call_key, &call_op).await,
                        None => Err(gone()),
                    }
                })
                .unwrap_or_else(|_| Err(gone()))
        } else {
            Err(EtcdError::Unavailable {
                endpoint: self.connection.pinned().0,
                reason: "no etcd member has answered for a while".into(),
            })
        };
        match outcome {
            Ok(answer) => {
                self.pending.lock().remove(&key);
                if answer.events == 0 {
                    // Nothing changed makes no event: ask the watch to confirm it is current.
                    self.progress_now.notify_one();
                }
                Ok(Written::At(answer.revision))
            }
            Err(EtcdError::Rejected(error)) => Err(self.unavailable(error)),
            Err(error) => {
                tracing::warn!(%key, %error, "etcd is out of reach; keeping the registration change to write later");
                let seq = self.pending_seq.fetch_add(1, Ordering::Relaxed);
                self.pending.lock().insert(key, (seq, op));
                Ok(Written::Local)
            }
        }
    }

    /// One change, on the worker.
    async fn apply(&self, key: &str, op: &Op) -> Result<Applied, EtcdError> {
        match op {
            Op::Put { value, lease } => {
                let options = match lease {
                    LeaseUse::None => PutOptions::new(),
                    LeaseUse::Own => PutOptions::new().with_lease(self.lease_for(key).await?),
                    // Another node keeps it: its lease stays on the key.
                    LeaseUse::Keep => PutOptions::new().with_ignore_lease(),
                };
                let answer = self
                    .connection
                    .run(true, |mut client| {
                        let (key, value, options) =
                            (key.to_owned(), value.clone(), options.clone());
                        async move { client.put(key, value, Some(options)).await }
                    })
                    .await?;
                Ok(Applied {
                    revision: header_revision(answer.header()),
                    events: 1,
                })
            }
            Op::Delete => {
                let answer = self
                    .connection
                    .run(true, |mut client| {
                        let key = key.to_owned();
                        async move { client.delete(key, None).await }
                    })
                    .await?;
                Ok(Applied {
                    revision: header_revision(answer.header()),
                    events: answer.deleted().max(0) as u64,
                })
            }
        }
    }

    /// Writes the changes accepted while etcd was out of reach, oldest first; each leaves
    /// the queue unless a newer change of its key came meanwhile.
    async fn replay(&self) {
        let mut waiting: Vec<(String, u64, Op)> = self
            .pending
            .lock()
            .iter()
            .map(|(key, (seq, op))| (key.clone(), *seq, op.clone()))
            .collect();
        if waiting.is_empty() {
            return;
        }
        waiting.sort_by_key(|(_, seq, _)| *seq);
        let mut written = 0;
        for (key, seq, op) in waiting {
            match self.apply(&key, &op).await {
                Ok(_) => {
                    let mut pending = self.pending.lock();
                    if pending
                        .get(&key)
                        .is_some_and(|(current, _)| *current == seq)
                    {
                        pending.remove(&key);
                    }
                    written += 1;
                }
                Err(EtcdError::Rejected(error)) => {
                    tracing::warn!(%key, %error, "etcd refused a kept registration change; dropping it");
                    self.pending.lock().remove(&key);
                }
                Err(error) => {
                    tracing::debug!(%error, "etcd still out of reach; replaying later");
                    return;
                }
            }
        }
        tracing::info!(
            written,
            "wrote the registration changes accepted while etcd was out of reach"
        );
    }

    /// How many registration changes wait for etcd.
    pub fn pending(&self) -> usize {
        self.pending.lock().len()
    }

    /// One try and one retry on another endpoint; beyond that the change waits for
    /// `replay`.
    pub(crate) fn call_timeout(&self) -> Duration {
        self.options.connect.request_timeout * 2 + Duration::from_millis(500)
    }

    fn self_ref(&self) -> Option<Arc<EtcdStore>> {
        self.this.lock().upgrade()
    }
}

impl Store for EtcdStore {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn write(&self, change: &Change<'_>) -> Result<Written, StoreError> {
        match change {
            Change::Put(instance) => self.put(instance, false),
            Change::Adopt(instance) => self.put(instance, true),
            Change::Remove { app, id } => self.delete(app, id),
        }
    }

    /// Nothing to load: the first full read is in the feed already.
    fn load(&self) -> Result<Vec<Instance>, StoreError> {
        Ok(Vec::new())
    }

    fn feed(&self) -> Option<&Feed> {
        Some(&self.feed)
    }

    fn owned_here(&self, app: &str, id: &str) -> bool {
        self.owners
            .lock()
            .get(&layout::instance_key(app, id))
            .is_none_or(|owner| *owner == self.node)
    }

    fn keeper(&self, app: &str, id: &str) -> Option<String> {
        self.owners
            .lock()
            .get(&layout::instance_key(app, id))
            .filter(|owner| **owner != self.node)
            .cloned()
    }

    fn freshness(&self) -> Freshness {
        let (current, last_contact) = self.contact();
        Freshness::Shared {
            current,
            last_contact,
        }
    }
}

/// A registration change as sent to etcd, or kept until etcd is back.
#[derive(Clone, Debug)]
enum Op {
    Put { value: Vec<u8>, lease: LeaseUse },
    Delete,
}

/// Which lease a put carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeaseUse {
    /// This node's: it keeps the instance.
    Own,
    /// Whatever the key has: another node keeps it.
    Keep,
    /// None: an imported copy, kept by whichever node runs the sync.
    None,
}

struct Applied {
    revision: u64,
    /// How many keys changed (a delete of nothing changes none).
    events: u64,
}

fn lease_not_found(error: &etcd_client::Error) -> bool {
    error.to_string().contains("lease not found")
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> u64 {
    header.map_or(0, |header| header.revision()).max(0) as u64
}

/// The watch, for as long as the store lives: moves to another endpoint when it fails,
/// resumes after the last revision it delivered, reads everything again after a
/// compaction.
async fn watch(store: Weak<EtcdStore>, mut from: u64) {
    let mut failures = 0u32;
    loop {
        let Some(current) = store.upgrade() else {
            return;
        };
        match watch_once(&current, from).await {
            Ok(next) => from = next,
            Err(WatchEnd::Compacted) => match current.resync().await {
                Ok(revision) => {
                    from = revision + 1;
                    failures = 0;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot read the registrations again after a compaction");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            },
            Err(WatchEnd::Failed {
                endpoint,
                reason,
                next,
                delivered,
            }) => {
                failures = if delivered { 1 } else { failures + 1 };
                // Once per outage at warning level; then quietly, backing off to 2 s.
                if failures == 1 {
                    tracing::warn!(%endpoint, %reason, "the etcd watch failed; moving it");
                } else {
                    tracing::debug!(%endpoint, %reason, failures, "the etcd watch failed again");
                }
                current.connection.repin(&endpoint);
                from = next;
                drop(current);
                let pause =
                    Duration::from_millis(100 << failures.min(5)).min(Duration::from_secs(2));
                tokio::time::sleep(pause).await;
            }
        }
    }
}

enum WatchEnd {
    Compacted,
    Failed {
        endpoint: String,
        reason: String,
        next: u64,
        /// The watch had delivered something before it failed: a new outage, not the same.
        delivered: bool,
    },
}

async fn watch_once(store: &EtcdStore, mut from: u64) -> Result<u64, WatchEnd> {
    let (endpoint, mut client) = store.connection.pinned();
    let start = from;
    let failed = |reason: String, next: u64| WatchEnd::Failed {
        endpoint: endpoint.clone(),
        reason,
        next,
        delivered: next > start,
    };
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(from as i64)
        .with_progress_notify();
    let (mut watcher, mut stream) = tokio::time::timeout(
        store.options.connect.request_timeout,
        client.watch(layout::PREFIX, Some(options)),
    )
    .await
    .map_err(|_| failed("no answer".into(), from))?
    .map_err(|error| failed(error.to_string(), from))?
    .split();
    let mut asked = Instant::now();
    let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
    loop {
        tokio::select! {
            message = stream.message() => {
                let response = match message {
                    Ok(Some(response)) => response,
                    Ok(None) => return Err(failed("the stream ended".into(), from)),
                    Err(error) => return Err(failed(error.to_string(), from)),
                };
                if response.created() {
                    // Says nothing of what was sent: the backlog from `from` follows it.
                    continue;
                }
                if response.canceled() {
                    if response.compact_revision() > 0 {
                        tracing::warn!(
                            compacted = response.compact_revision(),
                            from,
                            "the etcd watch fell behind a compaction; reading everything again"
                        );
                        return Err(WatchEnd::Compacted);
                    }
                    return Err(failed(format!("cancelled: {}", response.cancel_reason()), from));
                }
                *store.last_contact.lock() = Instant::now();
                let events = response.events();
                if events.is_empty() {
                    // A progress answer: everything up to its revision has been sent.
                    if let Some(header) = response.header() {
                        let revision = header.revision() as u64;
                        if revision >= from {
                            store.delivered(revision);
                            from = revision + 1;
                        }
                    }
                } else {
                    store.deliver(events);
                    let last = events
                        .iter()
                        .filter_map(|event| event.kv())
                        .map(|kv| kv.mod_revision() as u64)
                        .max()
                        .unwrap_or(from);
                    store.delivered(last);
                    from = last + 1;
                }
            }
            _ = ticker.tick() => {
                if store.last_contact.lock().elapsed() > STALE_AFTER && asked.elapsed() > STALE_AFTER {
                    return Err(failed("no word from etcd".into(), from));
                }
                if watcher.request_progress().await.is_err() {
                    return Err(failed("cannot ask for progress".into(), from));
                }
                asked = Instant::now();
            }
            _ = store.progress_now.notified() => {
                let _ = watcher.request_progress().await;
            }
        }
    }
}

/// Keeps the lease alive and the node's key fresh, for as long as the store lives.
async fn keep_alive(store: Weak<EtcdStore>) {
    let mut last_keep = Instant::now();
    loop {
        let Some(keep_every) = store.upgrade().map(|current| current.options.lease_ttl / 3) else {
            return;
        };
        tokio::time::sleep(NODE_REFRESH.min(keep_every)).await;
        let Some(current) = store.upgrade() else {
            return;
        };
        if current.stopped.load(Ordering::Acquire) {
            return;
        }
        let suspect = current.lease_suspect.swap(false, Ordering::AcqRel);
        if suspect || last_keep.elapsed() >= keep_every {
            match current.keep_leases().await {
                Ok(()) => last_keep = Instant::now(),
                Err(error) => tracing::warn!(%error, "cannot keep this node's etcd lease alive"),
            }
        }
        if let Err(error) = current.refresh_node().await {
            tracing::debug!(%error, "cannot refresh this node's key in etcd");
            if matches!(&error, EtcdError::Rejected(error) if lease_not_found(error)) {
                current.lease_suspect.store(true, Ordering::Release);
            }
        } else {
            current.replay().await;
        }
    }
}

fn node_info(kv: &KeyValue) -> Option<NodeInfo> {
    let value: serde_json::Value = serde_json::from_slice(kv.value()).ok()?;
    let text = |field: &str| {
        value
            .get(field)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let number = |field: &str| {
        value
            .get(field)
            .and_then(|v| v.as_u64())
            .unwrap_or_default()
    };
    Some(NodeInfo {
        node: text("node"),
        started_ms: number("started_ms"),
        refreshed_ms: number("refreshed_ms"),
        applied_revision: number("applied_revision"),
        endpoint: text("endpoint"),
        instances_kept: number("instances_kept"),
        version: text("version"),
        inbound: value
            .get("inbound")
            .and_then(|v| v.as_str())
            .filter(|inbound| !inbound.is_empty())
            .map(str::to_owned),
    })
}

/// `(app, id)` of a registration key, unescaped.
fn parse_instance_key(key: &str) -> Option<(String, String)> {
    let rest = key.strip_prefix(&layout::instances_prefix())?;
    let (app, id) = rest.split_once('/')?;
    Some((unescape(app), unescape(id)))
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

pub(crate) fn gone() -> EtcdError {
    EtcdError::Unavailable {
        endpoint: String::new(),
        reason: "the etcd thread is gone".into(),
    }
}
