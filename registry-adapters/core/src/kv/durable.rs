//! The KV store's file: a redb database under the data directory. A write is committed
//! (and synced) before the caller answers, so anything acknowledged survives `kill -9`.
//! The same file keeps the change index's reservation, the tombstones of deleted keys and
//! the watermarks of reaped ones, so neither the index nor any prefix's result index goes backwards after a restart.

use std::path::Path;

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use std::time::Duration;

use super::backend::{Committed, KvBackend, KvWrite};
use super::sessions::{Behavior, Session};
use super::KvEntry;
use crate::store::{StoreError, Written};

const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const TOMBSTONES: TableDefinition<&str, u64> = TableDefinition::new("tombstones");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Session id -> the session (see `encode_session`).
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// Directory -> the highest index of a tombstone reaped from it (see `tombstones`).
const WATERMARKS: TableDefinition<&str, u64> = TableDefinition::new("tombstone_watermarks");
const RESERVED_INDEX: &str = "index_reserved";

#[derive(Debug)]
pub struct Durable {
    database: Database,
}

/// Everything read back at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub entries: Vec<KvEntry>,
    pub tombstones: Vec<(String, u64)>,
    pub watermarks: Vec<(String, u64)>,
    pub sessions: Vec<Session>,
    pub reserved_index: u64,
}

fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Unavailable {
        backend: "kv",
        source: Box::new(error),
    }
}

impl Durable {
    pub fn open(path: &Path) -> Result<(Durable, Loaded), StoreError> {
        let database = Database::create(path).map_err(unavailable)?;
        let durable = Durable { database };
        let loaded = durable.load()?;
        Ok((durable, loaded))
    }

    fn load(&self) -> Result<Loaded, StoreError> {
        let transaction = self.database.begin_write().map_err(unavailable)?;
        // Opening the tables inside a write transaction creates them on first start.
        transaction.open_table(ENTRIES).map_err(unavailable)?;
        transaction.open_table(TOMBSTONES).map_err(unavailable)?;
        transaction.open_table(META).map_err(unavailable)?;
        transaction.open_table(WATERMARKS).map_err(unavailable)?;
        transaction.open_table(SESSIONS).map_err(unavailable)?;
        transaction.commit().map_err(unavailable)?;

        let read = self.database.begin_read().map_err(unavailable)?;
        let mut loaded = Loaded::default();
        let entries = read.open_table(ENTRIES).map_err(unavailable)?;
        for item in entries.iter().map_err(unavailable)? {
            let (key, value) = item.map_err(unavailable)?;
            if let Some(entry) = decode(key.value(), value.value()) {
                loaded.entries.push(entry);
            }
        }
        let tombstones = read.open_table(TOMBSTONES).map_err(unavailable)?;
        for item in tombstones.iter().map_err(unavailable)? {
            let (key, index) = item.map_err(unavailable)?;
            loaded
                .tombstones
                .push((key.value().to_owned(), index.value()));
        }
        let watermarks = read.open_table(WATERMARKS).map_err(unavailable)?;
        for item in watermarks.iter().map_err(unavailable)? {
            let (directory, index) = item.map_err(unavailable)?;
            loaded
                .watermarks
                .push((directory.value().to_owned(), index.value()));
        }
        let sessions = read.open_table(SESSIONS).map_err(unavailable)?;
        for item in sessions.iter().map_err(unavailable)? {
            let (id, bytes) = item.map_err(unavailable)?;
            match decode_session(id.value(), bytes.value()) {
                Some(session) => loaded.sessions.push(session),
                None => tracing::warn!(id = id.value(), "an unreadable session record is skipped"),
            }
        }
        let meta = read.open_table(META).map_err(unavailable)?;
        loaded.reserved_index = meta
            .get(RESERVED_INDEX)
            .map_err(unavailable)?
            .map(|value| value.value())
            .unwrap_or(0);
        Ok(loaded)
    }

    /// Writes entries and removals (with their tombstones) in one synced transaction.
    pub fn commit(&self, puts: &[&KvEntry], removals: &[(&str, u64)]) -> Result<(), StoreError> {
        let transaction = self.database.begin_write().map_err(unavailable)?;
        {
            let mut entries = transaction.open_table(ENTRIES).map_err(unavailable)?;
            let mut tombstones = transaction.open_table(TOMBSTONES).map_err(unavailable)?;
            for entry in puts {
                entries
                    .insert(entry.key.as_str(), encode(entry).as_slice())
                    .map_err(unavailable)?;
                tombstones.remove(entry.key.as_str()).map_err(unavailable)?;
            }
            for (key, index) in removals {
                entries.remove(*key).map_err(unavailable)?;
                tombstones.insert(*key, *index).map_err(unavailable)?;
            }
        }
        transaction.commit().map_err(unavailable)
    }

    /// Removes reaped tombstones and raises their directories' watermarks, in one synced
    /// transaction: after a crash either both happened or neither.
    pub fn reap(&self, keys: &[String], watermarks: &[(String, u64)]) -> Result<(), StoreError> {
        let transaction = self.database.begin_write().map_err(unavailable)?;
        {
            let mut tombstones = transaction.open_table(TOMBSTONES).map_err(unavailable)?;
            for key in keys {
                tombstones.remove(key.as_str()).map_err(unavailable)?;
            }
            let mut marks = transaction.open_table(WATERMARKS).map_err(unavailable)?;
            for (directory, index) in watermarks {
                marks
                    .insert(directory.as_str(), *index)
                    .map_err(unavailable)?;
            }
        }
        transaction.commit().map_err(unavailable)
    }

    /// Keeps a new session, synced before the client hears of it.
    pub fn put_session(&self, session: &Session) -> Result<(), StoreError> {
        let transaction = self.database.begin_write().map_err(unavailable)?;
        {
            let mut sessions = transaction.open_table(SESSIONS).map_err(unavailable)?;
            sessions
                .insert(session.id.as_str(), encode_session(session).as_slice())
                .map_err(unavailable)?;
        }
        transaction.commit().map_err(unavailable)
    }

    pub fn remove_session(&self, id: &str) -> Result<(), StoreError> {
        let transaction = self.database.begin_write().map_err(unavailable)?;
        {
            let mut sessions = transaction.open_table(SESSIONS).map_err(unavailable)?;
            sessions.remove(id).map_err(unavailable)?;
        }
        transaction.commit().map_err(unavailable)
    }

    /// Records a change-index reservation (see `change_index`).
    pub fn reserve_index(&self, reserved: u64) -> Result<(), StoreError> {
        let transaction = self.database.begin_write().map_err(unavailable)?;
        {
            let mut meta = transaction.open_table(META).map_err(unavailable)?;
            meta.insert(RESERVED_INDEX, reserved).map_err(unavailable)?;
        }
        transaction.commit().map_err(unavailable)
    }
}

/// The embedded default: everything in the file, checked under the store's writer lock.
impl KvBackend for Durable {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn commit(&self, write: &KvWrite<'_>) -> Result<Committed, StoreError> {
        let puts: Vec<&KvEntry> = write.puts.iter().collect();
        let removals: Vec<(&str, u64)> = write
            .removals
            .iter()
            .map(|key| (key.as_str(), write.index))
            .collect();
        Durable::commit(self, &puts, &removals)?;
        Ok(Committed::Local)
    }

    fn put_session(&self, session: &Session) -> Result<Written, StoreError> {
        Durable::put_session(self, session)?;
        Ok(Written::Local)
    }

    fn remove_session(&self, id: &str) -> Result<Written, StoreError> {
        Durable::remove_session(self, id)?;
        Ok(Written::Local)
    }

    fn reap(&self, keys: &[String], watermarks: &[(String, u64)]) -> Result<(), StoreError> {
        Durable::reap(self, keys, watermarks)
    }
}

/// `flags, create, modify, lock` as little-endian u64s, the session id's length (u16) and
/// bytes, then the value.
fn encode(entry: &KvEntry) -> Vec<u8> {
    let session = entry.session.as_deref().unwrap_or("");
    let mut out = Vec::with_capacity(34 + session.len() + entry.value.len());
    for number in [
        entry.flags,
        entry.create_index,
        entry.modify_index,
        entry.lock_index,
    ] {
        out.extend_from_slice(&number.to_le_bytes());
    }
    out.extend_from_slice(&(session.len() as u16).to_le_bytes());
    out.extend_from_slice(session.as_bytes());
    out.extend_from_slice(&entry.value);
    out
}

fn decode(key: &str, bytes: &[u8]) -> Option<KvEntry> {
    let number = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    let session_len = u16::from_le_bytes(bytes.get(32..34)?.try_into().ok()?) as usize;
    let session = std::str::from_utf8(bytes.get(34..34 + session_len)?).ok()?;
    Some(KvEntry {
        key: key.to_owned(),
        flags: number(0)?,
        create_index: number(8)?,
        modify_index: number(16)?,
        lock_index: number(24)?,
        session: (!session.is_empty()).then(|| session.to_owned()),
        value: Bytes::copy_from_slice(bytes.get(34 + session_len..)?),
    })
}

/// `create, modify, lock-delay ms, ttl ms (0: none)` as little-endian u64s, the behaviour
/// (one byte), then the name, the node and each node check as a u16 length and bytes.
fn encode_session(session: &Session) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + session.name.len() + session.node.len());
    for number in [
        session.create_index,
        session.modify_index,
        session.lock_delay.as_millis() as u64,
        session.ttl.map_or(0, |ttl| ttl.as_millis() as u64),
    ] {
        out.extend_from_slice(&number.to_le_bytes());
    }
    out.push(match session.behavior {
        Behavior::Release => 0,
        Behavior::Delete => 1,
    });
    let texts = [session.name.as_str(), session.node.as_str()]
        .into_iter()
        .chain(session.node_checks.iter().map(String::as_str));
    for text in texts {
        let text = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(text.len() as u16).to_le_bytes());
        out.extend_from_slice(text);
    }
    out
}

fn decode_session(id: &str, bytes: &[u8]) -> Option<Session> {
    let number = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    let behavior = match bytes.get(32)? {
        0 => Behavior::Release,
        1 => Behavior::Delete,
        _ => return None,
    };
    let mut texts = Vec::new();
    let mut at = 33;
    while at < bytes.len() {
        let length = u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?) as usize;
        texts.push(
            std::str::from_utf8(bytes.get(at + 2..at + 2 + length)?)
                .ok()?
                .to_owned(),
        );
        at += 2 + length;
    }
    let mut texts = texts.into_iter();
    let ttl = number(24)?;
    Some(Session {
        id: id.to_owned(),
        name: texts.next()?,
        node: texts.next()?,
        node_checks: texts.collect(),
        create_index: number(0)?,
        modify_index: number(8)?,
        lock_delay: Duration::from_millis(number(16)?),
        ttl: (ttl > 0).then(|| Duration::from_millis(ttl)),
        behavior,
        expires_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_reads_back_as_it_was_written() {
        let session = Session {
            id: "5e1c".to_owned(),
            name: "leader-lock".to_owned(),
            node: "n1".to_owned(),
            lock_delay: Duration::from_secs(15),
            behavior: Behavior::Delete,
            ttl: Some(Duration::from_secs(30)),
            node_checks: vec!["serfHealth".to_owned(), String::new()],
            create_index: 7,
            modify_index: 9,
            expires_at: None,
        };
        let back = decode_session("5e1c", &encode_session(&session)).unwrap();
        assert_eq!(format!("{back:?}"), format!("{session:?}"));
        let no_ttl = Session {
            ttl: None,
            ..session
        };
        assert_eq!(
            decode_session("5e1c", &encode_session(&no_ttl))
                .unwrap()
                .ttl,
            None
        );
        assert!(decode_session("x", &[1, 2, 3]).is_none());
    }
}
