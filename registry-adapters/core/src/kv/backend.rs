//! Where the KV store's writes go: the seam between `KvStore` and what keeps its data.
//!
//! The embedded default commits to its redb file (`durable`) under the store's writer lock,
//! so the checks `KvStore` made against its in-memory copy still hold and every write
//! succeeds at the index the store allocated (`Committed::Local`). A store shared by several
//! nodes (etcd) cannot rely on that lock: another node may have written meanwhile, so each
//! write carries the modify index every key it touches had when it was decided (`expected`)
//! and the session it acquires for, and the backend writes only if they all still hold —
//! one compare-and-swap — answering with the revision it wrote at or the revision at which
//! it found them changed. Every node's copy is then fed by the backend's `feed`, in the
//! store's order, exactly as the registry is (`store::feed`).

use super::sessions::Session;
use super::KvEntry;
use crate::store::{Feed, Revised, StoreError, Written};

/// One write, as a backend records it.
#[derive(Debug)]
pub struct KvWrite<'a> {
    /// Entries written, stamped with `index` (a shared backend restamps them).
    pub puts: &'a [KvEntry],
    /// Keys deleted.
    pub removals: &'a [String],
    /// Every key under this prefix deleted (a recursive delete on a shared backend, which
    /// cannot know every key another node just wrote).
    pub remove_prefix: Option<&'a str>,
    /// The store's own index for this write (0 with a shared backend).
    pub index: u64,
    /// Key -> the modify index it must still have (0: absent) for the write to happen.
    pub expected: &'a [(String, u64)],
    /// A session that must still exist for the write to happen (a lock acquire).
    pub session: Option<&'a str>,
}

/// What became of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Committed {
    /// Recorded by this node alone at the store's own index.
    Local,
    /// Recorded by a shared store at this revision.
    At(u64),
    /// Not recorded: an expected index or the session no longer held at this revision.
    Refused(u64),
}

/// One change of the shared KV data, as the store recorded it.
#[derive(Debug)]
pub enum KvChange {
    /// The key now holds this entry; its create and modify indexes are the store's.
    Put(KvEntry),
    Remove {
        key: String,
        revision: u64,
    },
    /// A session created (or renewed from another node) at `revision`.
    SessionPut {
        session: Session,
        revision: u64,
    },
    SessionRemove {
        id: String,
        revision: u64,
    },
    /// Everything the store holds now, at `revision` (a start, or a watch that fell behind
    /// a compaction).
    Resync {
        entries: Vec<KvEntry>,
        sessions: Vec<Session>,
        revision: u64,
    },
}

impl Revised for KvChange {
    fn revision(&self) -> u64 {
        match self {
            KvChange::Put(entry) => entry.modify_index,
            KvChange::Remove { revision, .. }
            | KvChange::SessionPut { revision, .. }
            | KvChange::SessionRemove { revision, .. }
            | KvChange::Resync { revision, .. } => *revision,
        }
    }
}

pub trait KvBackend: Send + Sync + 'static {
    /// A short name for logs (`redb`, `etcd`).
    fn name(&self) -> &'static str;

    /// Records one write. An error means it did not happen (or, for a shared store that
    /// lost its connection mid-call, that its outcome is unknown): the client is told the
    /// store is unavailable.
    fn commit(&self, write: &KvWrite<'_>) -> Result<Committed, StoreError>;

    /// Keeps a new session before its client hears of it.
    fn put_session(&self, session: &Session) -> Result<Written, StoreError>;

    /// A renewal made on a node other than the session's own, so that node (which expires
    /// it) restarts its TTL. A local store never sees one.
    fn renew_session(&self, _session: &Session) -> Result<(), StoreError> {
        Ok(())
    }

    fn remove_session(&self, id: &str) -> Result<Written, StoreError>;

    /// The store's present revision, read through its leader (a shared store): a write
    /// about to be refused from this node's copy waits for the copy to reach it first.
    fn revision(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// Forgets reaped tombstones and raises their directories' watermarks.
    fn reap(&self, _keys: &[String], _watermarks: &[(String, u64)]) -> Result<(), StoreError> {
        Ok(())
    }

    /// For a store shared by several nodes: every node's changes, in the store's order.
    fn feed(&self) -> Option<&Feed<KvChange>> {
        None
    }
}
