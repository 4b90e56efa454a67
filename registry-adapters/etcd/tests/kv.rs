//! The Consul KV store shared through a real 3-member etcd cluster: two `KvStore`s (two
//! nodes) on one etcd, as two `ferry` processes on two hosts would be.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{serial, Cluster};
use etcd_client::Client;
use ferry_core::change_index::ChangeIndex;
use ferry_core::kv::{
    Behavior, KvError, KvStore, LockOp, Session, SessionRequest, MAX_VALUE_BYTES,
};
use ferry_core::store::StoreError;
use ferry_core::Clock;
use ferry_etcd::{EtcdKv, EtcdStore, EtcdStoreOptions};
use tokio::sync::MutexGuard;

struct Node {
    store: Arc<EtcdStore>,
    kv: Arc<KvStore>,
    feed: tokio::task::JoinHandle<()>,
}

/// A node's feed task ends with it, as its process would.
impl Drop for Node {
    fn drop(&mut self) {
        self.feed.abort();
    }
}

async fn node(cluster: &Cluster, name: &str) -> Node {
    let mut options = EtcdStoreOptions::new(cluster.endpoints(), name.to_owned());
    options.lease_ttl = Duration::from_secs(4);
    let store = EtcdStore::start(options)
        .await
        .expect("the etcd store starts");
    let kv = Arc::new(KvStore::shared(
        Arc::new(EtcdKv::new(store.clone())),
        Arc::new(ChangeIndex::new(1)),
        Clock::System,
        name,
    ));
    kv.apply_feed();
    let feed = tokio::spawn(kv.clone().run_feed());
    Node { store, kv, feed }
}

/// A cluster and two nodes on it, for one test at a time.
async fn two_nodes(test: &str) -> (MutexGuard<'static, ()>, Cluster, Node, Node) {
    let turn = serial().await;
    let cluster = Cluster::start(test).await;
    let a = node(&cluster, "a").await;
    let b = node(&cluster, "b").await;
    (turn, cluster, a, b)
}

async fn open_session(kv: &Arc<KvStore>, request: SessionRequest) -> Session {
    let kv = kv.clone();
    blocking(move || kv.create_session(request))
        .await
        .expect("etcd takes the session")
}

/// A put with a lock operation, as `?acquire=` and `?release=` make.
async fn lock(kv: &Arc<KvStore>, key: &'static str, value: &str, op: LockOp) -> bool {
    let (kv, value) = (kv.clone(), Bytes::from(value.to_owned()));
    blocking(move || kv.put(key, value, 0, None, Some(op)))
        .await
        .expect("etcd takes the lock operation")
}

/// KV calls block on etcd (as they do under a view's request): off the test's runtime.
async fn blocking<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(call)
        .await
        .expect("the call does not panic")
}

fn session(name: &str) -> SessionRequest {
    SessionRequest {
        name: name.to_owned(),
        ttl: None,
        behavior: Behavior::Release,
        lock_delay: Duration::ZERO,
        node_checks: Vec::new(),
    }
}

/// Until `check` holds, bounded.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_on_one_node_wakes_a_blocking_read_on_the_other_with_the_same_index() {
    let (_turn, _cluster, a, b) = two_nodes("kv-wake").await;

    let mut waiting = b.kv.watch();
    let before = b.kv.prefix_result_index("config/orders/");
    let kv = a.kv.clone();
    let written = blocking(move || {
        kv.put(
            "config/orders/data",
            Bytes::from_static(b"port: 1"),
            7,
            None,
            None,
        )
    })
    .await
    .expect("etcd takes the put");
    assert!(written);
    let on_a = a.kv.get("config/orders/data");
    let entry = on_a
        .1
        .clone()
        .expect("the writer sees its own write at once");
    assert_eq!(entry.create_index, entry.modify_index);
    assert_eq!(entry.flags, 7);

    tokio::time::timeout(
        Duration::from_secs(5),
        waiting.wait_for(|index| *index >= entry.modify_index),
    )
    .await
    .expect("the blocking read on b wakes")
    .expect("the index lives");
    assert_eq!(
        b.kv.get("config/orders/data"),
        on_a,
        "same entry, same index"
    );
    assert!(b.kv.prefix_result_index("config/orders/") > before);
    assert_eq!(
        b.kv.list("config/").0,
        a.kv.list("config/").0,
        "a prefix read answers the same index on both nodes"
    );

    // A delete on b moves the prefix's index on a (the tombstone), and both agree.
    let kv = b.kv.clone();
    assert!(
        blocking(move || kv.delete("config/orders/data", false, None))
            .await
            .expect("etcd takes the delete")
    );
    let deleted_at = b.kv.prefix_result_index("config/orders/");
    assert!(deleted_at > entry.modify_index);
    eventually("a applies b's delete", || {
        a.kv.get("config/orders/data").1.is_none()
    })
    .await;
    assert_eq!(a.kv.prefix_result_index("config/orders/"), deleted_at);
    assert_eq!(a.kv.get("x").0, b.kv.get("x").0, "same store index");

    // Consul's largest value fits in one etcd request with room to spare.
    let big = Bytes::from(vec![b'x'; MAX_VALUE_BYTES]);
    let (kv, value) = (a.kv.clone(), big.clone());
    assert!(blocking(move || kv.put("big", value, 0, None, None))
        .await
        .expect("etcd takes a 512 KiB value"));
    eventually("b holds the 512 KiB value", || {
        b.kv.get("big").1.is_some_and(|entry| entry.value == big)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cas_increments_from_two_nodes_lose_no_update() {
    let (_turn, _cluster, a, b) = two_nodes("kv-cas").await;
    let kv = a.kv.clone();
    assert!(
        blocking(move || kv.put("counter", Bytes::from_static(b"0"), 0, Some(0), None))
            .await
            .unwrap()
    );
    let kv = b.kv.clone();
    assert!(
        !blocking(move || kv.put("counter", Bytes::from_static(b"9"), 0, Some(0), None))
            .await
            .unwrap(),
        "cas=0 on another node refuses an existing key"
    );

    let increments = |kv: Arc<KvStore>| {
        blocking(move || {
            let mut refused = 0u32;
            for _ in 0..50 {
                loop {
                    let (_, entry) = kv.get("counter");
                    let entry = entry.expect("the counter exists");
                    let value: u64 = std::str::from_utf8(&entry.value)
                        .expect("utf-8")
                        .parse()
                        .expect("a number");
                    let next = Bytes::from((value + 1).to_string());
                    match kv.put("counter", next, 0, Some(entry.modify_index), None) {
                        Ok(true) => break,
                        Ok(false) => refused += 1,
                        Err(error) => panic!("the store failed: {error}"),
                    }
                    assert!(refused < 10_000, "bounded retries");
                }
            }
            refused
        })
    };
    let (on_a, on_b) = tokio::join!(increments(a.kv.clone()), increments(b.kv.clone()));
    eprintln!("cas refusals: a {on_a}, b {on_b}");
    eventually("both nodes show 100", || {
        [&a.kv, &b.kv]
            .iter()
            .all(|kv| kv.get("counter").1.is_some_and(|e| e.value == "100"))
    })
    .await;
    assert_eq!(a.kv.get("counter"), b.kv.get("counter"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_never_hold_one_lock_and_a_destroyed_session_releases_it_everywhere() {
    let (_turn, _cluster, a, b) = two_nodes("kv-lock").await;
    let on_a = open_session(&a.kv, session("a")).await;
    let on_b = open_session(&b.kv, session("b")).await;
    eventually("both sessions on both nodes", || {
        a.kv.session(&on_b.id).is_some() && b.kv.session(&on_a.id).is_some()
    })
    .await;

    let mut lock_index = 0;
    for round in 0..20 {
        let (got_a, got_b) = tokio::join!(
            lock(
                &a.kv,
                "service/leader",
                &on_a.id,
                LockOp::Acquire(on_a.id.clone())
            ),
            lock(
                &b.kv,
                "service/leader",
                &on_b.id,
                LockOp::Acquire(on_b.id.clone())
            )
        );
        assert!(
            got_a != got_b,
            "round {round}: exactly one holder ({got_a}, {got_b})"
        );
        let (winner, id) = if got_a {
            (a.kv.clone(), on_a.id.clone())
        } else {
            (b.kv.clone(), on_b.id.clone())
        };
        let held = winner.get("service/leader").1.unwrap();
        assert_eq!(held.session.as_deref(), Some(id.as_str()));
        assert!(
            held.lock_index > lock_index,
            "LockIndex rises on each acquire"
        );
        lock_index = held.lock_index;
        assert!(lock(&winner, "service/leader", "", LockOp::Release(id)).await);
    }

    // a holds it, then destroys its session: released on both nodes.
    assert!(
        lock(
            &a.kv,
            "service/leader",
            "a",
            LockOp::Acquire(on_a.id.clone())
        )
        .await
    );
    eventually("b sees a's lock", || {
        b.kv.get("service/leader").1.unwrap().session.as_deref() == Some(on_a.id.as_str())
    })
    .await;
    let (kv, id) = (a.kv.clone(), on_a.id.clone());
    assert!(blocking(move || kv.destroy_session(&id)).await.unwrap());
    assert!(a.kv.get("service/leader").1.unwrap().session.is_none());
    eventually("b sees the lock released", || {
        b.kv.get("service/leader").1.unwrap().session.is_none() && b.kv.session(&on_a.id).is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_nodes_sessions_go_and_their_locks_are_released_or_deleted() {
    let (_turn, cluster, a, b) = two_nodes("kv-death").await;
    let released = open_session(&a.kv, session("release")).await;
    let deleting = open_session(
        &a.kv,
        SessionRequest {
            behavior: Behavior::Delete,
            ..session("delete")
        },
    )
    .await;
    for (key, id) in [("locks/r", &released.id), ("locks/d", &deleting.id)] {
        assert!(lock(&a.kv, key, "held", LockOp::Acquire(id.clone())).await);
    }
    eventually("b sees both locks", || b.kv.list("locks/").1.len() == 2).await;

    // Node a dies: its feed stops and etcd drops its lease (what its expiry does).
    a.feed.abort();
    let client = Client::connect(cluster.endpoints(), None).await.unwrap();
    client
        .lease_client()
        .revoke(a.store.lease_id())
        .await
        .expect("revoke a's lease");
    eventually(
        "b releases a's release-lock and deletes its delete-lock",
        || {
            let (_, held) = b.kv.list("locks/");
            held.len() == 1 && held[0].key == "locks/r" && held[0].session.is_none()
        },
    )
    .await;
    assert!(b.kv.sessions().is_empty());
    // Released in etcd too, not only in b's copy.
    let stored = client
        .kv_client()
        .get("/ferry/v1/kv/locks/d", None)
        .await
        .unwrap();
    assert!(stored.kvs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_one_member_of_three_loses_no_acknowledged_put() {
    let (_turn, mut cluster, a, b) = two_nodes("kv-member").await;
    let kv = a.kv.clone();
    let writer = blocking(move || {
        let mut acknowledged = Vec::new();
        let mut failed = 0;
        for n in 0..200 {
            let key = format!("load/{n:03}");
            match kv.put(&key, Bytes::from(n.to_string()), 0, None, None) {
                Ok(true) => acknowledged.push(key),
                Ok(false) => panic!("a plain put is never refused"),
                Err(_) => failed += 1,
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (acknowledged, failed)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pinned = a
        .store
        .connection()
        .endpoints()
        .iter()
        .position(|endpoint| endpoint.pinned)
        .expect("an endpoint is pinned");
    cluster.kill(pinned);
    let (acknowledged, failed) = writer.await;
    let client = Client::connect(
        (0..3)
            .filter(|&i| i != pinned)
            .map(|i| cluster.endpoint(i))
            .collect::<Vec<_>>(),
        None,
    )
    .await
    .unwrap();
    let mut lost = 0;
    for key in &acknowledged {
        let stored = client
            .kv_client()
            .get(format!("/ferry/v1/kv/{key}"), None)
            .await
            .unwrap();
        if stored.kvs().is_empty() {
            lost += 1;
        }
    }
    eprintln!(
        "member killed: {} puts acknowledged, {failed} failed (503), {lost} lost",
        acknowledged.len()
    );
    assert_eq!(lost, 0);
    assert!(acknowledged.len() >= 150, "writes go on after the kill");
    eventually("b holds every acknowledged put", || {
        acknowledged.iter().all(|key| b.kv.get(key).1.is_some())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_under_the_kv_prefix_is_counted_and_skipped() {
    let _turn = serial().await;
    let cluster = Cluster::start("kv-garbage").await;
    let client = Client::connect(cluster.endpoints(), None).await.unwrap();
    let mut raw = client.kv_client();
    raw.put("/ferry/v1/kv/early", b"\xffnot ferry's".to_vec(), None)
        .await
        .unwrap();
    let a = node(&cluster, "a").await;
    assert_eq!(a.store.decode_errors(), 1, "the first full read skips it");
    raw.put("/ferry/v1/kv/late", Vec::new(), None)
        .await
        .unwrap();
    raw.put("/ferry/v1/sessions/bogus", "{]", None)
        .await
        .unwrap();
    let kv = a.kv.clone();
    assert!(
        blocking(move || kv.put("good", Bytes::from_static(b"1"), 0, None, None))
            .await
            .unwrap()
    );
    eventually("the watch skipped both", || a.store.decode_errors() == 3).await;
    assert_eq!(a.kv.list("").1.len(), 1, "only the good key");
    assert!(a.kv.sessions().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_quorum_writes_are_unavailable_and_reads_answer_from_memory() {
    let (_turn, mut cluster, a, _b) = two_nodes("kv-quorum").await;
    let kv = a.kv.clone();
    assert!(
        blocking(move || kv.put("kept", Bytes::from_static(b"1"), 0, None, None))
            .await
            .unwrap()
    );
    cluster.kill(1);
    cluster.kill(2);
    let kv = a.kv.clone();
    let refused = blocking(move || kv.put("lost", Bytes::from_static(b"2"), 0, None, None)).await;
    assert!(
        matches!(refused, Err(KvError::Store(StoreError::Unavailable { .. }))),
        "a write without quorum is unavailable (503): {refused:?}"
    );
    assert_eq!(
        a.kv.get("kept").1.map(|entry| entry.value),
        Some(Bytes::from_static(b"1")),
        "reads keep answering from memory"
    );
    cluster.spawn(1);
    cluster.spawn(2);
    cluster.wait_for_leader(&[0, 1, 2]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let kv = a.kv.clone();
        let put = blocking(move || kv.put("back", Bytes::from_static(b"3"), 0, None, None)).await;
        if put.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "writes come back with quorum");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_expires_on_its_own_node_and_renewals_elsewhere_keep_it() {
    let (_turn, _cluster, a, b) = two_nodes("kv-ttl").await;
    let request = SessionRequest {
        ttl: Some(Duration::from_millis(500)),
        ..session("ttl")
    };
    let created = open_session(&a.kv, request).await;
    assert!(lock(&a.kv, "ttl/lock", "a", LockOp::Acquire(created.id.clone())).await);
    eventually("b sees the lock", || {
        b.kv.get("ttl/lock")
            .1
            .is_some_and(|entry| entry.session.is_some())
    })
    .await;
    // Renewed on b only, for longer than the TTL: a, which expires it, hears of it.
    for _ in 0..8 {
        let (kv, id) = (b.kv.clone(), created.id.clone());
        assert!(blocking(move || kv.renew_session(&id)).await.is_some());
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (kv_a, kv_b) = (a.kv.clone(), b.kv.clone());
        let ended = blocking(move || (kv_a.expire_sessions(), kv_b.expire_sessions())).await;
        assert_eq!(
            (ended.0.unwrap(), ended.1.unwrap()),
            (0, 0),
            "renewed in time"
        );
    }
    // No renewals: b never expires a's session, a does.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let kv = b.kv.clone();
    assert_eq!(blocking(move || kv.expire_sessions()).await.unwrap(), 0);
    let kv = a.kv.clone();
    assert_eq!(blocking(move || kv.expire_sessions()).await.unwrap(), 1);
    eventually("b sees the session gone and the lock released", || {
        b.kv.session(&created.id).is_none()
            && b.kv
                .get("ttl/lock")
                .1
                .is_some_and(|entry| entry.session.is_none())
    })
    .await;
}
