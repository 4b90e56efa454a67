//! The cutover table and leader election against a real 3-member etcd cluster on loopback:
//! two nodes' tables converge (also after a compaction), exactly one of two candidates
//! leads, a dead leader's job moves within its TTL, a clean resign hands over at once.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{serial, Cluster};
use ferry_etcd::{CutoverEvent, CutoverMode, EtcdStore, EtcdStoreOptions, Leader, SharedCutover};
use tokio::sync::mpsc::UnboundedReceiver;

async fn node(cluster: &Cluster, name: &str) -> Arc<EtcdStore> {
    EtcdStore::start(EtcdStoreOptions::new(cluster.endpoints(), name.to_owned()))
        .await
        .expect("start an etcd store")
}

async fn next_event(events: &mut UnboundedReceiver<CutoverEvent>) -> CutoverEvent {
    tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("a cutover event within 5 s")
        .expect("the watch is alive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cutover_on_one_node_reaches_the_other_also_after_a_compaction() {
    let _turn = serial().await;
    let cluster = Cluster::start("cutover").await;
    let (a, b) = (
        node(&cluster, "node-a").await,
        node(&cluster, "node-b").await,
    );
    let (table_a, table_b) = (SharedCutover::new(&a), SharedCutover::new(&b));

    let (start, revision) = table_b.load().await.unwrap();
    assert!(start.is_empty());
    let mut events = table_b.watch(revision);

    let written = table_a.set("ORDERS", CutoverMode::Mesh).await.unwrap();
    match next_event(&mut events).await {
        CutoverEvent::Set {
            service,
            entry,
            revision,
        } => {
            assert_eq!(service, "ORDERS");
            assert_eq!(entry.mode, CutoverMode::Mesh);
            assert_eq!(entry.by, "node-a");
            assert_eq!(revision, written);
        }
        other => panic!("expected ORDERS set, got {other:?}"),
    }

    // Another tool's garbage under the prefix is skipped and counted, never delivered.
    cluster.etcdctl(&["put", "/ferry/v1/cutover/JUNK", "not json"]);
    table_a.set("BILLING", CutoverMode::Mesh).await.unwrap();
    match next_event(&mut events).await {
        CutoverEvent::Set { service, .. } => assert_eq!(service, "BILLING"),
        other => panic!("expected BILLING set, got {other:?}"),
    }
    assert_eq!(table_b.decode_errors(), 1);

    table_a.set("ORDERS", CutoverMode::Legacy).await.unwrap();
    match next_event(&mut events).await {
        CutoverEvent::Set { service, entry, .. } => {
            assert_eq!(
                (service.as_str(), entry.mode),
                ("ORDERS", CutoverMode::Legacy)
            )
        }
        other => panic!("expected ORDERS legacy, got {other:?}"),
    }

    // A watch from before a compaction reads everything again and hands over the table.
    let last = table_a.set("PAYMENTS", CutoverMode::Mesh).await.unwrap();
    cluster.etcdctl(&["compact", &last.to_string()]);
    let mut behind = table_b.watch(revision);
    match next_event(&mut behind).await {
        CutoverEvent::Reload { table, revision } => {
            assert!(revision >= last);
            let modes: Vec<(&str, CutoverMode)> = table
                .iter()
                .map(|(service, entry)| (service.as_str(), entry.mode))
                .collect();
            assert_eq!(
                modes,
                vec![
                    ("BILLING", CutoverMode::Mesh),
                    ("ORDERS", CutoverMode::Legacy),
                    ("PAYMENTS", CutoverMode::Mesh),
                ]
            );
        }
        other => panic!("expected a reload after the compaction, got {other:?}"),
    }
    // ...and follows the changes after it.
    table_a.set("BILLING", CutoverMode::Legacy).await.unwrap();
    match next_event(&mut behind).await {
        CutoverEvent::Set { service, entry, .. } => {
            assert_eq!(
                (service.as_str(), entry.mode),
                ("BILLING", CutoverMode::Legacy)
            )
        }
        other => panic!("expected BILLING legacy after the reload, got {other:?}"),
    }
    // A node starting now loads the same table.
    let c = node(&cluster, "node-c").await;
    let (loaded, _) = SharedCutover::new(&c).load().await.unwrap();
    assert_eq!(loaded.get("BILLING").unwrap().mode, CutoverMode::Legacy);
    assert_eq!(loaded.get("PAYMENTS").unwrap().mode, CutoverMode::Mesh);
    assert_eq!(loaded.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touching_an_app_rewrites_its_instances_once_and_never_over_a_newer_record() {
    let _turn = serial().await;
    let cluster = Cluster::start("touch").await;
    let a = node(&cluster, "node-a").await;
    cluster.etcdctl(&["put", "/ferry/v1/inst/ORDERS/o-1", "one"]);
    cluster.etcdctl(&["put", "/ferry/v1/inst/ORDERS/o-2", "two"]);
    cluster.etcdctl(&["put", "/ferry/v1/inst/ORDERSX/x-1", "other app"]);
    let touched = SharedCutover::new(&a)
        .touch_instances("ORDERS")
        .await
        .unwrap();
    assert_eq!(touched, 2);
    let values = cluster.etcdctl(&[
        "get",
        "--prefix",
        "/ferry/v1/inst/ORDERS/",
        "--print-value-only",
    ]);
    assert_eq!(values.lines().collect::<Vec<_>>(), vec!["one", "two"]);
}

/// Waits until `check` holds, at most `within`; how long it took.
async fn until(within: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < within,
            "condition not met within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_candidate_leads_and_the_job_moves_when_the_leader_goes() {
    let _turn = serial().await;
    let cluster = Cluster::start("leader").await;
    let (a, b) = (
        node(&cluster, "node-a").await,
        node(&cluster, "node-b").await,
    );
    let ttl = Duration::from_secs(4);
    let first = Leader::campaign(&a, "sync", ttl);
    let second = Leader::campaign(&b, "sync", ttl);
    until(Duration::from_secs(5), || {
        first.is_leader() || second.is_leader()
    })
    .await;
    // Give a wrong second winner time to show itself.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(first.is_leader() ^ second.is_leader(), "exactly one leads");
    let (leader, follower) = if first.is_leader() {
        (first, second)
    } else {
        (second, first)
    };
    let leader_node = leader.holder().node.expect("the leader knows itself");
    until(Duration::from_secs(2), || {
        follower.holder().node.as_deref() == Some(leader_node.as_str())
    })
    .await;
    assert!(leader.holder().here && !follower.holder().here);
    assert_eq!(
        cluster
            .etcdctl(&["get", "/ferry/v1/leader/sync", "--print-value-only"])
            .trim(),
        leader_node
    );

    // The leader dies (no resign): its lease runs out and the other takes over.
    drop(leader);
    let took = until(ttl + Duration::from_secs(4), || follower.is_leader()).await;
    eprintln!("a dead leader's job moved after {took:?} (TTL {ttl:?})");
    assert!(
        took > Duration::from_secs(1),
        "not before the lease could expire"
    );

    // A clean stop hands over at once to a new candidate.
    let c = node(&cluster, "node-c").await;
    let third = Leader::campaign(&c, "sync", ttl);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(follower.is_leader() && !third.is_leader());
    let mut leading = third.subscribe();
    follower.resign(Duration::from_secs(2)).await;
    assert!(!follower.is_leader());
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(2), leading.wait_for(|leads| *leads))
        .await
        .expect("the next candidate leads after a resign")
        .unwrap();
    let took = started.elapsed();
    eprintln!("a resigned leader's job moved after {took:?}");
    assert!(took < Duration::from_secs(1), "handed over within 1 s");
    assert_eq!(third.holder().node.as_deref(), Some("node-c"));

    // Embedded mode: one node, always the leader.
    let alone = Leader::always("solo", "sync");
    assert!(alone.is_leader() && alone.holder().here);
}
