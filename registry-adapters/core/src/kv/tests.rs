use std::sync::Arc;
use std::time::Duration;

use super::*;

fn store() -> KvStore {
    KvStore::in_memory(
        Arc::new(ChangeIndex::new(1)),
        Clock::manual(1_000_000),
        "n1",
    )
}

fn put(store: &KvStore, key: &str, value: &str) -> bool {
    store
        .put(key, Bytes::from(value.to_owned()), 0, None, None)
        .unwrap()
}

#[test]
fn create_and_modify_indexes_follow_writes() {
    let store = store();
    assert!(put(&store, "config/orders/data", "a"));
    let (_, first) = store.get("config/orders/data");
    let first = first.unwrap();
    assert_eq!(first.create_index, first.modify_index);
    put(&store, "config/orders/data", "b");
    let second = store.get("config/orders/data").1.unwrap();
    assert_eq!(second.create_index, first.create_index);
    assert!(second.modify_index > first.modify_index);
}

#[test]
fn cas_writes_only_when_the_index_matches() {
    let store = store();
    assert!(store
        .put("k", Bytes::from_static(b"1"), 0, Some(0), None)
        .unwrap());
    assert!(
        !store
            .put("k", Bytes::from_static(b"2"), 0, Some(0), None)
            .unwrap(),
        "cas=0 needs an absent key"
    );
    let index = store.get("k").1.unwrap().modify_index;
    assert!(!store
        .put("k", Bytes::from_static(b"3"), 0, Some(index + 7), None)
        .unwrap());
    assert!(store
        .put("k", Bytes::from_static(b"4"), 0, Some(index), None)
        .unwrap());
    assert_eq!(store.get("k").1.unwrap().value, Bytes::from_static(b"4"));
    let index = store.get("k").1.unwrap().modify_index;
    assert!(!store.delete("k", false, Some(index - 1)).unwrap());
    assert!(!store.delete("k", false, Some(0)).unwrap());
    assert!(store.delete("k", false, Some(index)).unwrap());
    assert!(store.get("k").1.is_none());
}

#[test]
fn prefix_indexes_move_on_writes_and_deletes_under_them_only() {
    let store = store();
    put(&store, "config/orders/a", "1");
    put(&store, "config/payments/a", "1");
    let orders = store.prefix_result_index("config/orders/");
    put(&store, "config/payments/b", "1");
    assert_eq!(
        store.prefix_result_index("config/orders/"),
        orders,
        "other prefixes do not move it"
    );
    store.delete("config/orders/a", false, None).unwrap();
    let after_delete = store.prefix_result_index("config/orders/");
    assert!(after_delete > orders, "a delete moves it (tombstone)");
    assert!(store.list("config/orders/").1.is_empty());
    assert_eq!(
        store.prefix_result_index("nothing/"),
        store.store_result_index()
    );
}

#[test]
fn keys_are_cut_at_the_separator_and_deduplicated() {
    let store = store();
    for key in ["cfg/a", "cfg/sub/x", "cfg/sub/y", "cfh"] {
        put(&store, key, "v");
    }
    assert_eq!(store.keys("cfg/", Some("/")).1, vec!["cfg/a", "cfg/sub/"]);
    assert_eq!(
        store.keys("cf", None).1,
        vec!["cfg/a", "cfg/sub/x", "cfg/sub/y", "cfh"]
    );
}

#[test]
fn recursive_delete_removes_the_prefix_only() {
    let store = store();
    for key in ["a/1", "a/2", "ab", "b"] {
        put(&store, key, "v");
    }
    store.delete("a/", true, None).unwrap();
    let left: Vec<String> = store
        .list("")
        .1
        .into_iter()
        .map(|entry| entry.key)
        .collect();
    assert_eq!(left, vec!["ab", "b"]);
}

fn session(store: &KvStore, behavior: Behavior, ttl: Option<Duration>) -> String {
    store
        .create_session(SessionRequest {
            name: "lock".into(),
            ttl,
            behavior,
            lock_delay: Duration::from_secs(15),
            node_checks: vec![],
        })
        .unwrap()
        .id
}

#[test]
fn locks_are_exclusive_and_released_by_their_holder() {
    let store = store();
    let first = session(&store, Behavior::Release, None);
    let second = session(&store, Behavior::Release, None);
    let acquire = |session: &str| {
        store.put(
            "lock",
            Bytes::from_static(b"x"),
            0,
            None,
            Some(LockOp::Acquire(session.into())),
        )
    };
    assert!(acquire(&first).unwrap());
    assert!(acquire(&first).unwrap(), "the holder may acquire again");
    assert!(!acquire(&second).unwrap());
    let held = store.get("lock").1.unwrap();
    assert_eq!(
        (held.session.as_deref(), held.lock_index),
        (Some(first.as_str()), 1)
    );
    let release = |session: &str| {
        store.put(
            "lock",
            Bytes::new(),
            0,
            None,
            Some(LockOp::Release(session.into())),
        )
    };
    assert!(!release(&second).unwrap());
    assert!(release(&first).unwrap());
    assert!(acquire(&second).unwrap());
    assert_eq!(store.get("lock").1.unwrap().lock_index, 2);
    assert!(matches!(
        acquire("no-such-session"),
        Err(KvError::UnknownSession(_))
    ));
}

#[test]
fn ending_a_session_applies_its_behaviour_and_the_lock_delay() {
    let store = store();
    let releasing = session(&store, Behavior::Release, None);
    let deleting = session(&store, Behavior::Delete, Some(Duration::from_secs(10)));
    store
        .put(
            "r",
            Bytes::new(),
            0,
            None,
            Some(LockOp::Acquire(releasing.clone())),
        )
        .unwrap();
    store
        .put(
            "d",
            Bytes::new(),
            0,
            None,
            Some(LockOp::Acquire(deleting.clone())),
        )
        .unwrap();
    assert!(store.destroy_session(&releasing).unwrap());
    assert!(store.get("r").1.unwrap().session.is_none());
    let other = session(&store, Behavior::Release, None);
    assert!(
        !store
            .put(
                "r",
                Bytes::new(),
                0,
                None,
                Some(LockOp::Acquire(other.clone()))
            )
            .unwrap(),
        "lock-delay"
    );
    store.clock.advance(16_000);
    assert!(store
        .put("r", Bytes::new(), 0, None, Some(LockOp::Acquire(other)))
        .unwrap());
    // The TTL session expires after twice its TTL.
    store.clock.advance(21_000);
    assert_eq!(store.expire_sessions().unwrap(), 1);
    assert!(
        store.get("d").1.is_none(),
        "delete behaviour removes the key"
    );
}

#[test]
fn writes_survive_a_reopen_and_the_index_keeps_rising() {
    let folder = std::env::temp_dir().join(format!("ferry-kv-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join("kv.redb");
    let (last, deleted_at) = {
        let (store, _) = KvStore::open(&path, Clock::System, "n1").unwrap();
        put(&store, "a", "1");
        put(&store, "b", "2");
        store.delete("b", false, None).unwrap();
        let deleted_at = store.prefix_result_index("b");
        let holder = session(&store, Behavior::Release, None);
        store
            .put(
                "locked",
                Bytes::new(),
                0,
                None,
                Some(LockOp::Acquire(holder)),
            )
            .unwrap();
        (store.prefix_result_index(""), deleted_at)
    };
    let (store, index) = KvStore::open(&path, Clock::System, "n1").unwrap();
    assert_eq!(store.get("a").1.unwrap().value, Bytes::from_static(b"1"));
    assert!(store.get("b").1.is_none());
    assert_eq!(
        store.prefix_result_index("b"),
        deleted_at,
        "the tombstone survives"
    );
    let holder = store.get("locked").1.unwrap().session;
    assert!(holder.is_some(), "a restart releases no lock");
    assert!(
        store.session(holder.as_deref().unwrap()).is_some(),
        "the lock's session survives the restart"
    );
    assert!(index.allocate().unwrap() > last);
    std::fs::remove_dir_all(folder).unwrap();
}

/// Issue 10, defect 12: a lock holder keeps its lock across a restart of Ferry; the
/// session's TTL starts again from the restart, and a session destroyed before the restart
/// stays destroyed.
#[test]
fn sessions_and_their_locks_survive_a_restart_and_expire_from_it() {
    let folder = std::env::temp_dir().join(format!("ferry-kv-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join("kv.redb");
    let clock = Clock::manual(1_000_000);
    let (holder, gone) = {
        let (store, _) = KvStore::open(&path, clock.clone(), "n1").unwrap();
        let holder = session(&store, Behavior::Release, Some(Duration::from_secs(10)));
        let gone = session(&store, Behavior::Release, None);
        assert!(store
            .put(
                "service/leader",
                Bytes::from_static(b"me"),
                0,
                None,
                Some(LockOp::Acquire(holder.clone()))
            )
            .unwrap());
        assert!(store.destroy_session(&gone).unwrap());
        (holder, gone)
    };
    clock.advance(15_000);
    let (store, _) = KvStore::open(&path, clock.clone(), "n1").unwrap();
    let restored = store.session(&holder).expect("the session survives");
    assert_eq!(restored.ttl, Some(Duration::from_secs(10)));
    assert!(
        store.session(&gone).is_none(),
        "a destroyed session stays destroyed"
    );
    assert_eq!(
        store.get("service/leader").1.unwrap().session,
        Some(holder.clone())
    );
    let rival = session(&store, Behavior::Release, None);
    assert!(
        !store
            .put(
                "service/leader",
                Bytes::from_static(b"rival"),
                0,
                None,
                Some(LockOp::Acquire(rival))
            )
            .unwrap(),
        "nobody else takes the lock after the restart"
    );

    // Twice the TTL from the restart, not from the last renewal before it.
    clock.advance(20_000);
    assert_eq!(store.expire_sessions().unwrap(), 0);
    clock.advance(1);
    assert_eq!(store.expire_sessions().unwrap(), 1);
    assert_eq!(store.get("service/leader").1.unwrap().session, None);
    std::fs::remove_dir_all(folder).unwrap();
}

/// Issue 10, defect 11: put/delete churn of distinct keys no longer grows the store for
/// ever, and reaping moves no prefix's result index, so no watcher wakes for it.
#[test]
fn tombstones_are_reaped_after_their_ttl_without_moving_any_prefix_index() {
    let clock = Clock::manual(1_000_000);
    let store = KvStore::in_memory(Arc::new(ChangeIndex::new(1)), clock.clone(), "n1");
    put(&store, "config/orders/data", "a: 1");
    for n in 0..20_000 {
        let key = format!("churn/key-{n}");
        put(&store, &key, "x");
        store.delete(&key, false, None).unwrap();
    }
    assert_eq!(store.tombstone_count(), 20_000);
    let watched = ["", "churn/", "config/", "config/orders/"];
    let before: Vec<u64> = watched
        .iter()
        .map(|prefix| store.prefix_result_index(prefix))
        .collect();

    clock.advance(DEFAULT_TOMBSTONE_TTL.as_millis() as i64 - 1);
    assert_eq!(store.reap_tombstones().unwrap(), 0, "younger than the TTL");
    clock.advance(1);
    assert_eq!(store.reap_tombstones().unwrap(), 20_000);
    assert_eq!(store.tombstone_count(), 0);
    let after: Vec<u64> = watched
        .iter()
        .map(|prefix| store.prefix_result_index(prefix))
        .collect();
    assert_eq!(after, before, "reaping moves no directory's index");

    // A later delete still raises its prefix above everything before.
    put(&store, "churn/late", "x");
    store.delete("churn/late", false, None).unwrap();
    assert!(store.prefix_result_index("churn/") > before[1]);
}

#[test]
fn reaped_tombstones_stay_reaped_and_indexes_hold_across_a_reopen() {
    let folder = std::env::temp_dir().join(format!("ferry-kv-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join("kv.redb");
    let clock = Clock::manual(1_000_000);
    let (churn_index, last) = {
        let (store, _) = KvStore::open(&path, clock.clone(), "n1").unwrap();
        let store = store.with_tombstone_ttl(Duration::from_secs(60));
        put(&store, "churn/kept", "x");
        for n in 0..100 {
            put(&store, &format!("churn/{n}"), "x");
            store.delete(&format!("churn/{n}"), false, None).unwrap();
        }
        let churn_index = store.prefix_result_index("churn/");
        clock.advance(60_000);
        assert_eq!(store.reap_tombstones().unwrap(), 100);
        assert_eq!(store.prefix_result_index("churn/"), churn_index);
        (churn_index, store.prefix_result_index(""))
    };
    let (store, index) = KvStore::open(&path, clock.clone(), "n1").unwrap();
    assert_eq!(store.tombstone_count(), 0, "the reaping was persisted");
    assert_eq!(
        store.prefix_result_index("churn/"),
        churn_index,
        "the watermark survives the restart"
    );
    assert!(index.allocate().unwrap() > last);
    std::fs::remove_dir_all(folder).unwrap();
}
