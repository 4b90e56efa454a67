//! The shared-store path of `KvStore` without etcd: two copies on one in-process store that
//! checks each write's guard as etcd's transactions do, so a copy that lags behind is
//! refused, catches up and decides again.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use super::*;
use crate::store::Feed;

#[derive(Default)]
struct Hub {
    revision: u64,
    keys: BTreeMap<String, KvEntry>,
    sessions: HashSet<String>,
    feeds: Vec<Arc<Feed<KvChange>>>,
}

impl Hub {
    fn advance(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    /// What a watch says after a write: everything up to `revision` is sent.
    fn delivered(&self, revision: u64) {
        for feed in &self.feeds {
            feed.delivered(revision);
        }
    }

    fn broadcast(&self, change: impl Fn() -> KvChange) {
        for feed in &self.feeds {
            feed.push(change());
        }
    }
}

struct Copy {
    hub: Arc<Mutex<Hub>>,
    feed: Arc<Feed<KvChange>>,
}

impl KvBackend for Copy {
    fn name(&self) -> &'static str {
        "hub"
    }

    fn commit(&self, write: &KvWrite<'_>) -> Result<Committed, StoreError> {
        let mut hub = self.hub.lock();
        let holds = write.expected.iter().all(|(key, expected)| {
            hub.keys.get(key).map_or(0, |entry| entry.modify_index) == *expected
        }) && write
            .session
            .is_none_or(|session| hub.sessions.contains(session));
        if !holds {
            return Ok(Committed::Refused(hub.revision));
        }
        let revision = hub.advance();
        for entry in write.puts {
            let mut entry = entry.clone();
            entry.create_index = hub
                .keys
                .get(&entry.key)
                .map_or(revision, |held| held.create_index);
            entry.modify_index = revision;
            hub.keys.insert(entry.key.clone(), entry.clone());
            hub.broadcast(|| KvChange::Put(entry.clone()));
        }
        let mut removals: Vec<String> = write.removals.to_vec();
        if let Some(prefix) = write.remove_prefix {
            removals.extend(
                hub.keys
                    .keys()
                    .filter(|key| key.starts_with(prefix))
                    .cloned(),
            );
        }
        for key in removals {
            if hub.keys.remove(&key).is_some() {
                hub.broadcast(|| KvChange::Remove {
                    key: key.clone(),
                    revision,
                });
            }
        }
        hub.delivered(revision);
        Ok(Committed::At(revision))
    }

    fn put_session(&self, session: &Session) -> Result<Written, StoreError> {
        let mut hub = self.hub.lock();
        let revision = hub.advance();
        hub.sessions.insert(session.id.clone());
        let mut session = session.clone();
        session.create_index = revision;
        session.modify_index = revision;
        hub.broadcast(|| KvChange::SessionPut {
            session: session.clone(),
            revision,
        });
        hub.delivered(revision);
        Ok(Written::At(revision))
    }

    fn remove_session(&self, id: &str) -> Result<Written, StoreError> {
        let mut hub = self.hub.lock();
        let revision = hub.advance();
        if hub.sessions.remove(id) {
            hub.broadcast(|| KvChange::SessionRemove {
                id: id.to_owned(),
                revision,
            });
        }
        hub.delivered(revision);
        Ok(Written::At(revision))
    }

    fn feed(&self) -> Option<&Feed<KvChange>> {
        Some(&self.feed)
    }
}

/// Two copies ("nodes" a and b) of one store; neither applies the other's changes until
/// its `apply_feed` (or a write of its own that needs them) runs.
fn two_copies() -> (KvStore, KvStore) {
    let hub = Arc::new(Mutex::new(Hub::default()));
    let copy = |node: &str| {
        let feed = Arc::new(Feed::default());
        hub.lock().feeds.push(feed.clone());
        KvStore::shared(
            Arc::new(Copy {
                hub: hub.clone(),
                feed,
            }),
            Arc::new(ChangeIndex::new(1)),
            Clock::manual(1_000_000),
            node,
        )
    };
    (copy("a"), copy("b"))
}

fn session_request() -> SessionRequest {
    SessionRequest {
        name: "s".to_owned(),
        ttl: None,
        behavior: Behavior::Release,
        lock_delay: std::time::Duration::ZERO,
        node_checks: Vec::new(),
    }
}

#[test]
fn a_lagging_copy_is_refused_then_decides_on_what_the_store_holds() {
    let (a, b) = two_copies();
    assert!(a
        .put("k", Bytes::from_static(b"1"), 0, Some(0), None)
        .unwrap());
    assert!(b.get("k").1.is_none(), "b has not applied a's write yet");
    assert!(
        !b.put("k", Bytes::from_static(b"2"), 0, Some(0), None)
            .unwrap(),
        "b's cas=0 is refused by the store, not by its stale copy"
    );
    assert_eq!(
        b.get("k"),
        a.get("k"),
        "b caught up: same entry, same index"
    );
    let index = b.get("k").1.unwrap().modify_index;
    assert!(b
        .put("k", Bytes::from_static(b"3"), 0, Some(index), None)
        .unwrap());
    a.apply_feed();
    assert_eq!(a.get("k").1.unwrap().value, Bytes::from_static(b"3"));
    assert_eq!(a.list("").0, b.list("").0);
}

#[test]
fn a_lock_taken_on_one_copy_is_refused_on_a_lagging_other_and_released_by_either_on_session_end() {
    let (a, b) = two_copies();
    let on_a = a.create_session(session_request()).unwrap();
    let on_b = b.create_session(session_request()).unwrap();
    a.apply_feed();
    assert!(a
        .put(
            "lock",
            Bytes::new(),
            0,
            None,
            Some(LockOp::Acquire(on_a.id.clone()))
        )
        .unwrap());
    assert!(
        !b.put(
            "lock",
            Bytes::new(),
            0,
            None,
            Some(LockOp::Acquire(on_b.id.clone()))
        )
        .unwrap(),
        "b acquiring from a stale copy never wins"
    );
    assert_eq!(
        b.get("lock").1.unwrap().session.as_deref(),
        Some(on_a.id.as_str())
    );

    // a's session ends without a letting go (its node died): b does.
    a.state.write().sessions.remove(&on_a.id);
    b.backend
        .as_ref()
        .unwrap()
        .remove_session(&on_a.id)
        .unwrap();
    assert!(b.apply_feed(), "b sees a held lock orphaned");
    assert_eq!(b.release_orphaned_locks().unwrap(), 1);
    let released = b.get("lock").1.unwrap();
    assert!(released.session.is_none());
    a.apply_feed();
    assert_eq!(a.get("lock").1.unwrap(), released);
    assert_eq!(
        a.release_orphaned_locks().unwrap(),
        0,
        "nothing left for a to do"
    );
}

#[test]
fn a_recursive_delete_takes_keys_this_copy_had_not_seen() {
    let (a, b) = two_copies();
    a.put("dir/x", Bytes::from_static(b"1"), 0, None, None)
        .unwrap();
    let before = b.prefix_result_index("dir/");
    assert!(b.delete("dir/", true, None).unwrap());
    a.apply_feed();
    assert!(a.list("dir/").1.is_empty() && b.list("dir/").1.is_empty());
    assert!(b.prefix_result_index("dir/") > before);
    assert_eq!(a.prefix_result_index("dir/"), b.prefix_result_index("dir/"));
}
