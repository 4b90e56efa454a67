//! The key/value store: keys with byte values, flags, create/modify/lock indexes and the
//! sessions that hold locks on them.
//!
//! Writes are serialized by one writer lock, take the next value of the shared change
//! index, are committed to disk (`durable`), and only then applied to the in-memory copy
//! that reads and blocking queries use. Deleted keys leave tombstones so a prefix's result
//! index rises on a delete and never falls; old tombstones are reaped (`tombstones`).
//!
//! Where the data is kept is the backend's business (`backend`): the embedded default's
//! redb file, or a store shared by several nodes (etcd), where every node's `KvStore` is a
//! copy fed by the store's watch (`replicated`), each write is a compare-and-swap of what
//! this copy showed when the write was decided, and the index is the store's revision, so
//! every node answers the same read with the same `X-Consul-Index`.

mod backend;
mod durable;
mod replicated;
pub mod sessions;
mod tombstones;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::change_index::ChangeIndex;
use crate::clock::Clock;
use crate::model::Millis;
use crate::store::{StoreError, Written};
pub use backend::{Committed, KvBackend, KvChange, KvWrite};
use durable::Durable;
pub use sessions::{Behavior, Session, SessionRequest};
use tombstones::{under, Tombstones};

/// Consul's limit on one value.
pub const MAX_VALUE_BYTES: usize = 512 * 1024;

/// How long a deleted key's tombstone is kept: Consul's default `tombstone_ttl`.
pub const DEFAULT_TOMBSTONE_TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvEntry {
    pub key: String,
    pub value: Bytes,
    pub flags: u64,
    pub create_index: u64,
    pub modify_index: u64,
    /// How many times the lock changed hands.
    pub lock_index: u64,
    /// The session holding the lock, if any.
    pub session: Option<String>,
}

/// A lock operation with a write.
#[derive(Clone, Debug)]
pub enum LockOp {
    Acquire(String),
    Release(String),
}

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("invalid session {0:?}")]
    UnknownSession(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Default)]
struct KvState {
    entries: BTreeMap<String, KvEntry>,
    tombstones: Tombstones,
    /// Index of the latest KV write.
    last_index: u64,
    sessions: sessions::Sessions,
    /// Key -> time before which no session may acquire it (Consul's lock-delay).
    lock_delays: BTreeMap<String, Millis>,
    /// Sessions ended (elsewhere, with a shared backend) whose locks may still be held:
    /// how to let go of them (`release_orphaned_locks`).
    ended: HashMap<String, Behavior>,
}

pub struct KvStore {
    state: RwLock<KvState>,
    /// Serializes writers across the disk commit, so readers never wait for a sync.
    writer: Mutex<()>,
    /// Where writes are kept; `None` in memory only.
    backend: Option<Arc<dyn KvBackend>>,
    index: Arc<ChangeIndex>,
    clock: Clock,
    node: String,
    tombstone_ttl: Millis,
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore")
            .field(
                "backend",
                &self.backend.as_ref().map(|backend| backend.name()),
            )
            .finish()
    }
}

/// How many times a write is decided again after a shared store found that another node
/// wrote first, before the client is told to retry.
const MAX_ATTEMPTS: usize = 16;

/// One change a write makes.
enum Mutation {
    Put(KvEntry),
    Remove(String),
    /// Every key under a prefix (a recursive delete on a shared store).
    RemovePrefix(String),
}

/// What must still hold in a shared store for a write to happen.
#[derive(Default)]
struct Guard {
    /// Key -> its modify index when the write was decided (0: absent).
    expected: Vec<(String, u64)>,
    /// A session the write acquires a lock for.
    session: Option<String>,
}

impl KvStore {
    /// A store that lives in memory only (tests, benchmarks of the memory path).
    pub fn in_memory(index: Arc<ChangeIndex>, clock: Clock, node: &str) -> KvStore {
        KvStore {
            state: RwLock::new(KvState::default()),
            writer: Mutex::new(()),
            backend: None,
            index,
            clock,
            node: node.to_owned(),
            tombstone_ttl: DEFAULT_TOMBSTONE_TTL.as_millis() as Millis,
        }
    }

    /// Keeps tombstones for `ttl` instead of Consul's 15 minutes.
    pub fn with_tombstone_ttl(mut self, ttl: std::time::Duration) -> KvStore {
        self.tombstone_ttl = ttl.as_millis() as Millis;
        self
    }

    /// Opens (or creates) the store file and builds the change index that continues
    /// above everything handed out before. Sessions of an earlier run continue, their TTLs
    /// counted from now; a lock whose session is gone is released.
    pub fn open(
        path: &Path,
        clock: Clock,
        node: &str,
    ) -> Result<(KvStore, Arc<ChangeIndex>), StoreError> {
        let (durable, loaded) = Durable::open(path)?;
        let durable = Arc::new(durable);
        let reserve_into = durable.clone();
        let durable: Arc<dyn KvBackend> = durable;
        let last = loaded
            .entries
            .iter()
            .map(|entry| entry.modify_index)
            .chain(loaded.tombstones.iter().map(|(_, index)| *index))
            .chain(loaded.watermarks.iter().map(|(_, index)| *index))
            .max()
            .unwrap_or(0)
            .max(loaded.reserved_index);
        let index = Arc::new(ChangeIndex::durable(
            last,
            Box::new(move |reserved| reserve_into.reserve_index(reserved)),
        ));
        let state = KvState {
            last_index: last.max(1),
            entries: loaded
                .entries
                .into_iter()
                .map(|entry| (entry.key.clone(), entry))
                .collect(),
            tombstones: Tombstones::restore(loaded.tombstones, loaded.watermarks, clock.now()),
            sessions: sessions::Sessions::restore(loaded.sessions, clock.now()),
            ..KvState::default()
        };
        let store = KvStore {
            state: RwLock::new(state),
            writer: Mutex::new(()),
            backend: Some(durable),
            index: index.clone(),
            clock,
            node: node.to_owned(),
            tombstone_ttl: DEFAULT_TOMBSTONE_TTL.as_millis() as Millis,
        };
        store
            .release_orphaned_locks()
            .map_err(|error| match error {
                KvError::Store(error) => error,
                // Releases name no session; kept as a plain refusal rather than a panic.
                KvError::UnknownSession(_) => StoreError::Conflict { backend: "kv" },
            })?;
        Ok((store, index))
    }

    /// A copy of a store shared by several nodes: empty until `apply_feed` loads the
    /// backend's first full read; `run_feed` then applies every later change.
    pub fn shared(
        backend: Arc<dyn KvBackend>,
        index: Arc<ChangeIndex>,
        clock: Clock,
        node: &str,
    ) -> KvStore {
        KvStore {
            state: RwLock::new(KvState::default()),
            writer: Mutex::new(()),
            backend: Some(backend),
            index,
            clock,
            node: node.to_owned(),
            tombstone_ttl: DEFAULT_TOMBSTONE_TTL.as_millis() as Millis,
        }
    }

    /// The backend's name (`redb`, `etcd`), `memory` without one.
    pub fn backend_name(&self) -> &'static str {
        self.backend
            .as_ref()
            .map_or("memory", |backend| backend.name())
    }

    pub fn watch(&self) -> watch::Receiver<u64> {
        self.index.subscribe()
    }

    /// One key, with the whole store's latest index as the result index.
    pub fn get(&self, key: &str) -> (u64, Option<KvEntry>) {
        let state = self.state.read();
        (state.last_index.max(1), state.entries.get(key).cloned())
    }

    /// Every key starting with `prefix`, in key order, with the prefix's result index.
    pub fn list(&self, prefix: &str) -> (u64, Vec<KvEntry>) {
        let state = self.state.read();
        let entries: Vec<KvEntry> = under(&state.entries, prefix)
            .map(|(_, entry)| entry.clone())
            .collect();
        (prefix_index(&state, prefix), entries)
    }

    /// The result index of a prefix read: the latest write or delete under it, or the
    /// store's latest index if it never held anything.
    pub fn prefix_result_index(&self, prefix: &str) -> u64 {
        prefix_index(&self.state.read(), prefix)
    }

    pub fn store_result_index(&self) -> u64 {
        self.state.read().last_index.max(1)
    }

    /// Key names under `prefix`, cut after the first `separator` past the prefix.
    pub fn keys(&self, prefix: &str, separator: Option<&str>) -> (u64, Vec<String>) {
        let state = self.state.read();
        let mut keys: Vec<String> = Vec::new();
        for (key, _) in under(&state.entries, prefix) {
            let name = match separator.filter(|separator| !separator.is_empty()) {
                Some(separator) => match key[prefix.len()..].find(separator) {
                    Some(at) => &key[..prefix.len() + at + separator.len()],
                    None => key.as_str(),
                },
                None => key.as_str(),
            };
            if keys.last().map(String::as_str) != Some(name) {
                keys.push(name.to_owned());
            }
        }
        (prefix_index(&state, prefix), keys)
    }

    /// Writes a value; `false` when a `cas` or a lock condition was not met.
    pub fn put(
        &self,
        key: &str,
        value: Bytes,
        flags: u64,
        cas: Option<u64>,
        lock: Option<LockOp>,
    ) -> Result<bool, KvError> {
        let _writer = self.writer.lock();
        if let Some(expected) = cas {
            self.catch_up_to(expected);
        }
        let mut confirmed = false;
        for _ in 0..MAX_ATTEMPTS {
            let Some((entry, guard)) = self.decide_put(key, &value, flags, cas, lock.as_ref())?
            else {
                // A copy may lag behind the store (a lock another node just released): a
                // refusal is decided again once the copy holds what the store holds now.
                if !confirmed && self.feed().is_some() {
                    confirmed = true;
                    self.catch_up_to_store()?;
                    continue;
                }
                return Ok(false);
            };
            if self.commit(vec![Mutation::Put(entry)], guard)? {
                return Ok(true);
            }
        }
        Err(too_busy())
    }

    /// The entry a put writes, and what must still hold for it; `None` when a condition
    /// is not met.
    fn decide_put(
        &self,
        key: &str,
        value: &Bytes,
        flags: u64,
        cas: Option<u64>,
        lock: Option<&LockOp>,
    ) -> Result<Option<(KvEntry, Guard)>, KvError> {
        let now = self.clock.now();
        let (existing, session_ok) = {
            let state = self.state.read();
            let existing = state.entries.get(key).cloned();
            let session_ok = match lock {
                Some(LockOp::Acquire(session) | LockOp::Release(session)) => {
                    state.sessions.get(session).is_some()
                }
                None => true,
            };
            if let Some(LockOp::Acquire(_)) = lock {
                if state.lock_delays.get(key).is_some_and(|until| *until > now) {
                    return Ok(None);
                }
            }
            (existing, session_ok)
        };
        if !session_ok {
            let session = match lock {
                Some(LockOp::Acquire(session) | LockOp::Release(session)) => session.clone(),
                None => String::new(),
            };
            return Err(KvError::UnknownSession(session));
        }
        match cas {
            Some(0) if existing.is_some() => return Ok(None),
            Some(expected)
                if expected > 0
                    && existing.as_ref().map(|entry| entry.modify_index) != Some(expected) =>
            {
                return Ok(None)
            }
            _ => {}
        }
        let guard = Guard {
            expected: vec![(
                key.to_owned(),
                existing.as_ref().map_or(0, |entry| entry.modify_index),
            )],
            session: match lock {
                Some(LockOp::Acquire(session)) => Some(session.clone()),
                _ => None,
            },
        };
        let mut entry = existing.unwrap_or(KvEntry {
            key: key.to_owned(),
            value: Bytes::new(),
            flags: 0,
            create_index: 0,
            modify_index: 0,
            lock_index: 0,
            session: None,
        });
        match lock {
            Some(LockOp::Acquire(session)) => match &entry.session {
                Some(holder) if holder != session => return Ok(None),
                Some(_) => {}
                None => {
                    entry.session = Some(session.clone());
                    entry.lock_index += 1;
                }
            },
            Some(LockOp::Release(session)) => {
                if entry.session.as_deref() != Some(session.as_str()) {
                    return Ok(None);
                }
                entry.session = None;
            }
            None => {}
        }
        entry.value = value.clone();
        entry.flags = flags;
        Ok(Some((entry, guard)))
    }

    /// Deletes a key, or every key under a prefix. With `cas`, only a key whose modify
    /// index matches is deleted, and the answer says whether it was.
    pub fn delete(&self, key: &str, recurse: bool, cas: Option<u64>) -> Result<bool, KvError> {
        let _writer = self.writer.lock();
        if let Some(expected) = cas {
            self.catch_up_to(expected);
        }
        // A copy of a shared store may not know every key yet: the store decides.
        let shared = self.feed().is_some();
        for _ in 0..MAX_ATTEMPTS {
            let (mutations, guard) = {
                let state = self.state.read();
                if recurse && shared {
                    (
                        vec![Mutation::RemovePrefix(key.to_owned())],
                        Guard::default(),
                    )
                } else if recurse {
                    let doomed: Vec<Mutation> = under(&state.entries, key)
                        .map(|(key, _)| Mutation::Remove(key.clone()))
                        .collect();
                    (doomed, Guard::default())
                } else {
                    match (state.entries.get(key), cas) {
                        (_, Some(0)) => return Ok(false),
                        (Some(entry), Some(expected)) if entry.modify_index != expected => {
                            return Ok(false)
                        }
                        (None, Some(_)) => return Ok(false),
                        (Some(_), Some(expected)) => (
                            vec![Mutation::Remove(key.to_owned())],
                            Guard {
                                expected: vec![(key.to_owned(), expected)],
                                session: None,
                            },
                        ),
                        (Some(_), None) => {
                            (vec![Mutation::Remove(key.to_owned())], Guard::default())
                        }
                        (None, None) if shared => {
                            (vec![Mutation::Remove(key.to_owned())], Guard::default())
                        }
                        (None, None) => (Vec::new(), Guard::default()),
                    }
                }
            };
            if mutations.is_empty() || self.commit(mutations, guard)? {
                return Ok(true);
            }
        }
        Err(too_busy())
    }

    pub fn create_session(&self, request: SessionRequest) -> Result<Session, KvError> {
        let _writer = self.writer.lock();
        let index = match self.feed() {
            Some(_) => 0,
            None => self.index.allocate()?,
        };
        let now = self.clock.now();
        let mut session = sessions::Sessions::open(request, &self.node, index, now);
        let written = match &self.backend {
            Some(backend) => backend.put_session(&session)?,
            None => Written::Local,
        };
        let mut state = self.state.write();
        let index = match written {
            Written::Local => index,
            Written::At(revision) => {
                self.catch_up(&mut state, revision, now);
                session.create_index = revision;
                session.modify_index = revision;
                revision
            }
        };
        state.sessions.insert(session.clone());
        drop(state);
        self.index.advance(index);
        Ok(session)
    }

    pub fn session(&self, id: &str) -> Option<Session> {
        self.state.read().sessions.get(id).cloned()
    }

    pub fn sessions(&self) -> Vec<Session> {
        self.state.read().sessions.all()
    }

    /// Restarts a session's TTL; `None` when it does not exist. With a shared store, a
    /// session another node created is renewed there too: that node expires it.
    pub fn renew_session(&self, id: &str) -> Option<Session> {
        let now = self.clock.now();
        let renewed = self.state.write().sessions.renew(id, now)?;
        if renewed.node != self.node && self.feed().is_some() {
            if let Some(backend) = &self.backend {
                if let Err(error) = backend.renew_session(&renewed) {
                    tracing::warn!(%error, session = id, "cannot pass a session renewal to its node");
                }
            }
        }
        Some(renewed)
    }

    /// Ends a session and applies its behaviour to the keys it holds; `false` if unknown.
    pub fn destroy_session(&self, id: &str) -> Result<bool, KvError> {
        let _writer = self.writer.lock();
        self.end_session(id)
    }

    /// Ends every session whose TTL ran out; returns how many. With a shared store, only
    /// the sessions this node created: their node keeps their TTL. Locks of sessions that
    /// ended elsewhere and are still held are released too.
    pub fn expire_sessions(&self) -> Result<usize, KvError> {
        let now = self.clock.now();
        let expired: Vec<String> = {
            let state = self.state.read();
            state
                .sessions
                .expired(now)
                .into_iter()
                .filter(|id| {
                    self.feed().is_none()
                        || state
                            .sessions
                            .get(id)
                            .is_some_and(|session| session.node == self.node)
                })
                .collect()
        };
        let mut ended = 0;
        {
            let _writer = self.writer.lock();
            for id in expired {
                if self.end_session(&id)? {
                    ended += 1;
                }
            }
        }
        if self.feed().is_some() {
            self.release_orphaned_locks()?;
        }
        Ok(ended)
    }

    fn end_session(&self, id: &str) -> Result<bool, KvError> {
        let now = self.clock.now();
        if self.state.read().sessions.get(id).is_none() {
            return Ok(false);
        }
        // Forgotten in the store first: after a crash here its locks are orphans, which the
        // next start (or, shared, every other node) releases, as this end would have.
        let written = match &self.backend {
            Some(backend) => backend.remove_session(id)?,
            None => Written::Local,
        };
        let (behavior, held) = {
            let mut state = self.state.write();
            let mut index = None;
            if let Written::At(revision) = written {
                self.catch_up(&mut state, revision, now);
                index = Some(revision);
            }
            // The store's watch may have ended it already while catching up.
            let behavior = match replicated::session_ended(&mut state, id, now) {
                Some(behavior) => behavior,
                None => state.ended.get(id).copied().unwrap_or(Behavior::Release),
            };
            let held: Vec<KvEntry> = state
                .entries
                .values()
                .filter(|entry| entry.session.as_deref() == Some(id))
                .cloned()
                .collect();
            drop(state);
            if let Some(index) = index {
                self.index.advance(index);
            }
            (behavior, held)
        };
        self.let_go(held, |_| behavior)?;
        self.state.write().ended.remove(id);
        Ok(true)
    }

    /// Forgets tombstones older than the TTL; returns how many went. Prefix indexes keep
    /// their values (see `tombstones`), so no blocking read wakes for it.
    pub fn reap_tombstones(&self) -> Result<usize, KvError> {
        let _writer = self.writer.lock();
        let now = self.clock.now();
        let Some(reaping) = self.state.read().tombstones.due(now, self.tombstone_ttl) else {
            return Ok(0);
        };
        if let Some(backend) = &self.backend {
            backend.reap(&reaping.keys, &reaping.watermarks)?;
        }
        self.state
            .write()
            .tombstones
            .apply(&reaping, now, self.tombstone_ttl);
        Ok(reaping.keys.len())
    }

    /// Tombstones kept now.
    pub fn tombstone_count(&self) -> usize {
        self.state.read().tombstones.len()
    }

    /// Releases (or deletes, for a session whose behaviour was `delete`) every lock whose
    /// session is gone: at start, and with a shared store whenever a session ended
    /// elsewhere (its node died, another node destroyed or expired it). Returns how many.
    pub fn release_orphaned_locks(&self) -> Result<usize, KvError> {
        let _writer = self.writer.lock();
        let (held, ended): (Vec<KvEntry>, HashMap<String, Behavior>) = {
            let state = self.state.read();
            let held = state
                .entries
                .values()
                .filter(|entry| {
                    entry
                        .session
                        .as_deref()
                        .is_some_and(|holder| state.sessions.get(holder).is_none())
                })
                .cloned()
                .collect();
            (held, state.ended.clone())
        };
        let count = held.len();
        self.let_go(held, |entry| {
            entry
                .session
                .as_deref()
                .and_then(|session| ended.get(session).copied())
                .unwrap_or(Behavior::Release)
        })?;
        let mut state = self.state.write();
        let still_held: std::collections::HashSet<String> = state
            .entries
            .values()
            .filter_map(|entry| entry.session.clone())
            .collect();
        state.ended.retain(|id, _| still_held.contains(id));
        Ok(count)
    }

    /// Releases or deletes keys whose session ended. The caller holds `writer`. A local
    /// store does it in one write; a shared one key by key, each a compare-and-swap of the
    /// key as this copy shows it, so several nodes doing it at once do it once.
    fn let_go(
        &self,
        held: Vec<KvEntry>,
        behavior: impl Fn(&KvEntry) -> Behavior,
    ) -> Result<(), KvError> {
        if held.is_empty() {
            return Ok(());
        }
        let mutation = |mut entry: KvEntry| match behavior(&entry) {
            Behavior::Delete => Mutation::Remove(entry.key),
            Behavior::Release => {
                entry.session = None;
                Mutation::Put(entry)
            }
        };
        if self.feed().is_none() {
            self.commit(held.into_iter().map(mutation).collect(), Guard::default())?;
            return Ok(());
        }
        for entry in held {
            let guard = Guard {
                expected: vec![(entry.key.clone(), entry.modify_index)],
                session: None,
            };
            // Refused: another node let go of it first, or it was written since.
            self.commit(vec![mutation(entry)], guard)?;
        }
        Ok(())
    }

    /// Records, applies and publishes one write; `false` when a shared store refused it
    /// because `guard` no longer held (this copy is then caught up, for the caller to
    /// decide again). The caller holds `writer`.
    fn commit(&self, mutations: Vec<Mutation>, guard: Guard) -> Result<bool, KvError> {
        let mut index = match self.feed() {
            Some(_) => 0,
            None => self.index.allocate()?,
        };
        let mut puts = Vec::new();
        let mut removals = Vec::new();
        let mut remove_prefix = None;
        for mutation in mutations {
            match mutation {
                Mutation::Put(mut entry) => {
                    if entry.create_index == 0 {
                        entry.create_index = index;
                    }
                    entry.modify_index = index;
                    puts.push(entry);
                }
                Mutation::Remove(key) => removals.push(key),
                Mutation::RemovePrefix(prefix) => remove_prefix = Some(prefix),
            }
        }
        let answer = match &self.backend {
            Some(backend) => backend.commit(&KvWrite {
                puts: &puts,
                removals: &removals,
                remove_prefix: remove_prefix.as_deref(),
                index,
                expected: &guard.expected,
                session: guard.session.as_deref(),
            })?,
            None => Committed::Local,
        };
        let now = self.clock.now();
        let mut state = self.state.write();
        match answer {
            Committed::Local => {}
            Committed::At(revision) => {
                self.catch_up(&mut state, revision, now);
                index = revision;
            }
            Committed::Refused(revision) => {
                self.catch_up_through(&mut state, revision, now);
                drop(state);
                self.await_refusal(&guard);
                return Ok(false);
            }
        }
        for mut entry in puts {
            if entry.create_index == 0 {
                entry.create_index = index;
            }
            entry.modify_index = index;
            replicated::apply_put(&mut state, entry);
        }
        if let Some(prefix) = remove_prefix {
            removals.extend(under(&state.entries, &prefix).map(|(key, _)| key.clone()));
        }
        for key in removals {
            replicated::apply_remove(&mut state, &key, index, now);
        }
        state.last_index = state.last_index.max(index);
        drop(state);
        self.index.advance(index);
        Ok(true)
    }
}

/// A write that kept losing to other nodes' writes to the same key.
fn too_busy() -> KvError {
    KvError::Store(StoreError::Conflict { backend: "kv" })
}

fn prefix_index(state: &KvState, prefix: &str) -> u64 {
    let live = under(&state.entries, prefix)
        .map(|(_, entry)| entry.modify_index)
        .max();
    let deleted = state.tombstones.newest_under(prefix);
    match live.max(deleted) {
        Some(index) => index,
        None => state.last_index.max(1),
    }
}

#[cfg(test)]
mod shared_tests;
#[cfg(test)]
mod tests;
