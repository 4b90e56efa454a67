//! The key/value store: keys with byte values, flags, create/modify/lock indexes and the
//! sessions that hold locks on them.
//!
//! Writes are serialized by one writer lock, take the next value of the shared change
//! index, are committed to disk (`durable`), and only then applied to the in-memory copy
//! that reads and blocking queries use. Deleted keys leave tombstones so a prefix's result
//! index rises on a delete and never falls; old tombstones are reaped (`tombstones`).

mod durable;
pub mod sessions;
mod tombstones;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::change_index::ChangeIndex;
use crate::clock::Clock;
use crate::model::Millis;
use crate::store::StoreError;
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
}

pub struct KvStore {
    state: RwLock<KvState>,
    /// Serializes writers across the disk commit, so readers never wait for a sync.
    writer: Mutex<()>,
    durable: Option<Arc<Durable>>,
    index: Arc<ChangeIndex>,
    clock: Clock,
    node: String,
    tombstone_ttl: Millis,
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore")
            .field("durable", &self.durable.is_some())
            .finish()
    }
}

/// One change a write makes.
enum Mutation {
    Put(KvEntry),
    Remove(String),
}

impl KvStore {
    /// A store that lives in memory only (tests, benchmarks of the memory path).
    pub fn in_memory(index: Arc<ChangeIndex>, clock: Clock, node: &str) -> KvStore {
        KvStore {
            state: RwLock::new(KvState::default()),
            writer: Mutex::new(()),
            durable: None,
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
            durable: Some(durable),
            index: index.clone(),
            clock,
            node: node.to_owned(),
            tombstone_ttl: DEFAULT_TOMBSTONE_TTL.as_millis() as Millis,
        };
        store.release_orphaned_locks()?;
        Ok((store, index))
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
        let now = self.clock.now();
        let (existing, session_ok) = {
            let state = self.state.read();
            let existing = state.entries.get(key).cloned();
            let session_ok = match &lock {
                Some(LockOp::Acquire(session) | LockOp::Release(session)) => {
                    state.sessions.get(session).is_some()
                }
                None => true,
            };
            if let Some(LockOp::Acquire(_)) = &lock {
                if state.lock_delays.get(key).is_some_and(|until| *until > now) {
                    return Ok(false);
                }
            }
            (existing, session_ok)
        };
        if !session_ok {
            let session = match lock {
                Some(LockOp::Acquire(session) | LockOp::Release(session)) => session,
                None => String::new(),
            };
            return Err(KvError::UnknownSession(session));
        }
        match cas {
            Some(0) if existing.is_some() => return Ok(false),
            Some(expected)
                if expected > 0
                    && existing.as_ref().map(|entry| entry.modify_index) != Some(expected) =>
            {
                return Ok(false)
            }
            _ => {}
        }
        let mut entry = existing.clone().unwrap_or(KvEntry {
            key: key.to_owned(),
            value: Bytes::new(),
            flags: 0,
            create_index: 0,
            modify_index: 0,
            lock_index: 0,
            session: None,
        });
        match &lock {
            Some(LockOp::Acquire(session)) => match &entry.session {
                Some(holder) if holder != session => return Ok(false),
                Some(_) => {}
                None => {
                    entry.session = Some(session.clone());
                    entry.lock_index += 1;
                }
            },
            Some(LockOp::Release(session)) => {
                if entry.session.as_deref() != Some(session.as_str()) {
                    return Ok(false);
                }
                entry.session = None;
            }
            None => {}
        }
        entry.value = value;
        entry.flags = flags;
        self.commit(vec![Mutation::Put(entry)])?;
        Ok(true)
    }

    /// Deletes a key, or every key under a prefix. With `cas`, only a key whose modify
    /// index matches is deleted, and the answer says whether it was.
    pub fn delete(&self, key: &str, recurse: bool, cas: Option<u64>) -> Result<bool, KvError> {
        let _writer = self.writer.lock();
        let doomed: Vec<String> = {
            let state = self.state.read();
            if recurse {
                under(&state.entries, key)
                    .map(|(key, _)| key.clone())
                    .collect()
            } else {
                match (state.entries.get(key), cas) {
                    (_, Some(0)) => return Ok(false),
                    (Some(entry), Some(expected)) if entry.modify_index != expected => {
                        return Ok(false)
                    }
                    (None, Some(_)) => return Ok(false),
                    (Some(_), _) => vec![key.to_owned()],
                    (None, None) => Vec::new(),
                }
            }
        };
        if !doomed.is_empty() {
            self.commit(doomed.into_iter().map(Mutation::Remove).collect())?;
        }
        Ok(true)
    }

    pub fn create_session(&self, request: SessionRequest) -> Result<Session, KvError> {
        let _writer = self.writer.lock();
        let index = self.index.allocate()?;
        let now = self.clock.now();
        let session = sessions::Sessions::open(request, &self.node, index, now);
        if let Some(durable) = &self.durable {
            durable.put_session(&session)?;
        }
        self.state.write().sessions.insert(session.clone());
        self.index.publish(index);
        Ok(session)
    }

    pub fn session(&self, id: &str) -> Option<Session> {
        self.state.read().sessions.get(id).cloned()
    }

    pub fn sessions(&self) -> Vec<Session> {
        self.state.read().sessions.all()
    }

    /// Restarts a session's TTL; `None` when it does not exist.
    pub fn renew_session(&self, id: &str) -> Option<Session> {
        let now = self.clock.now();
        self.state.write().sessions.renew(id, now)
    }

    /// Ends a session and applies its behaviour to the keys it holds; `false` if unknown.
    pub fn destroy_session(&self, id: &str) -> Result<bool, KvError> {
        let _writer = self.writer.lock();
        self.end_session(id)
    }

    /// Ends every session whose TTL ran out; returns how many.
    pub fn expire_sessions(&self) -> Result<usize, KvError> {
        let now = self.clock.now();
        let expired = self.state.read().sessions.expired(now);
        let _writer = self.writer.lock();
        let mut ended = 0;
        for id in expired {
            if self.end_session(&id)? {
                ended += 1;
            }
        }
        Ok(ended)
    }

    fn end_session(&self, id: &str) -> Result<bool, KvError> {
        let now = self.clock.now();
        if self.state.read().sessions.get(id).is_none() {
            return Ok(false);
        }
        // Forgotten on disk first: after a crash here its locks are orphans, which the
        // next start releases, as this end would have.
        if let Some(durable) = &self.durable {
            durable.remove_session(id)?;
        }
        let (session, held) = {
            let mut state = self.state.write();
            let Some(session) = state.sessions.remove(id) else {
                return Ok(false);
            };
            let held: Vec<KvEntry> = state
                .entries
                .values()
                .filter(|entry| entry.session.as_deref() == Some(id))
                .cloned()
                .collect();
            let until = now + session.lock_delay.as_millis() as Millis;
            for entry in &held {
                state.lock_delays.insert(entry.key.clone(), until);
            }
            (session, held)
        };
        if !held.is_empty() {
            let mutations = held
                .into_iter()
                .map(|mut entry| match session.behavior {
                    Behavior::Delete => Mutation::Remove(entry.key),
                    Behavior::Release => {
                        entry.session = None;
                        Mutation::Put(entry)
                    }
                })
                .collect();
            self.commit(mutations)?;
        }
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
        if let Some(durable) = &self.durable {
            durable.reap(&reaping.keys, &reaping.watermarks)?;
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

    fn release_orphaned_locks(&self) -> Result<(), StoreError> {
        let held: Vec<KvEntry> = {
            let state = self.state.read();
            state
                .entries
                .values()
                .filter(|entry| {
                    entry
                        .session
                        .as_deref()
                        .is_some_and(|holder| state.sessions.get(holder).is_none())
                })
                .cloned()
                .collect()
        };
        if held.is_empty() {
            return Ok(());
        }
        let _writer = self.writer.lock();
        let mutations = held
            .into_iter()
            .map(|mut entry| {
                entry.session = None;
                Mutation::Put(entry)
            })
            .collect();
        self.commit(mutations).map_err(|error| match error {
            KvError::Store(error) => error,
            KvError::UnknownSession(_) => unreachable!("releases name no session"),
        })
    }

    /// Stamps, persists, applies and publishes one write. The caller holds `writer`.
    fn commit(&self, mutations: Vec<Mutation>) -> Result<(), KvError> {
        let now = self.clock.now();
        let index = self.index.allocate()?;
        let mut puts = Vec::new();
        let mut removals = Vec::new();
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
            }
        }
        if let Some(durable) = &self.durable {
            let put_refs: Vec<&KvEntry> = puts.iter().collect();
            let removal_refs: Vec<(&str, u64)> =
                removals.iter().map(|key| (key.as_str(), index)).collect();
            durable.commit(&put_refs, &removal_refs)?;
        }
        {
            let mut state = self.state.write();
            for entry in puts {
                state.tombstones.revive(&entry.key);
                state.entries.insert(entry.key.clone(), entry);
            }
            for key in removals {
                state.entries.remove(&key);
                state.tombstones.bury(key, index, now);
            }
            state.last_index = index;
        }
        self.index.publish(index);
        Ok(())
    }
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
mod tests;
