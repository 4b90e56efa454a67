//! The shared registry store against a real 3-member etcd: two nodes (a registry and an
//! `EtcdStore` each, in one process) see each other's registrations at the same index, a
//! failed-over client is adopted, a dead node's instances leave with its lease, changes
//! made while etcd is out of reach are written when it is back, a lost lease is taken
//! again without the node dropping its instances, and garbage under the prefix is skipped.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{serial, Cluster};
use etcd_client::Client;
use ferry_core::change_index::ChangeIndex;
use ferry_core::registry::RenewRequest;
use ferry_core::{Clock, Instance, Registry, RegistrySettings};
use ferry_etcd::{layout, EtcdStore, EtcdStoreOptions};

struct Node {
    registry: Arc<Registry>,
    store: Arc<EtcdStore>,
}

async fn node(cluster: &Cluster, name: &str, lease: Duration) -> Node {
    let mut options = EtcdStoreOptions::new(cluster.endpoints(), name.to_owned());
    options.lease_ttl = lease;
    let store = EtcdStore::start(options).await.expect("the store starts");
    let registry = Arc::new(Registry::with_index(
        RegistrySettings::default(),
        Clock::System,
        store.clone(),
        Arc::new(ChangeIndex::new(1)),
    ));
    registry.apply_feed();
    tokio::spawn(registry.clone().run_feed());
    Node { registry, store }
}

fn instance(app: &str, id: &str) -> Instance {
    Instance::new(app, id, "10.0.0.1", "10.0.0.1", 8080)
}

/// Registers from a blocking thread, as a request handler does (the write blocks).
async fn register(node: &Node, app: &str, id: &str) {
    let registry = node.registry.clone();
    let instance = instance(app, id);
    tokio::task::spawn_blocking(move || registry.register(instance, false))
        .await
        .unwrap()
        .expect("registered");
}

async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn owner_in_etcd(cluster: &Cluster, app: &str, id: &str) -> Option<String> {
    let mut client = Client::connect([cluster.endpoint(0)], None).await.ok()?;
    let answer = client.get(layout::instance_key(app, id), None).await.ok()?;
    let kv = answer.kvs().first()?;
    layout::decode(kv.value())
        .ok()
        .map(|envelope| envelope.owner)
}

const LEASE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_on_one_node_is_seen_on_the_other_at_the_same_index() {
    let _turn = serial().await;
    let cluster = Cluster::start("same-index").await;
    let (a, b) = (
        node(&cluster, "a", LEASE).await,
        node(&cluster, "b", LEASE).await,
    );
    for i in 0..20 {
        register(&a, "ORDERS", &format!("orders-{i}")).await;
    }
    register(&b, "ORDERS", "orders-b").await;
    eventually("both nodes hold all 21", Duration::from_secs(5), || {
        a.registry.app("ORDERS").map(|l| l.len()) == Some(21)
            && b.registry.app("ORDERS").map(|l| l.len()) == Some(21)
    })
    .await;
    assert_eq!(
        a.registry.app_result_index("ORDERS"),
        b.registry.app_result_index("ORDERS"),
        "the same state has the same index on every node"
    );
    assert_eq!(
        owner_in_etcd(&cluster, "ORDERS", "orders-b")
            .await
            .as_deref(),
        Some("b")
    );
    // A node started afterwards loads the same state at the same index.
    let c = node(&cluster, "c", LEASE).await;
    assert_eq!(c.registry.app("ORDERS").map(|l| l.len()), Some(21));
    assert_eq!(
        c.registry.app_result_index("ORDERS"),
        a.registry.app_result_index("ORDERS")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_fails_over_is_adopted_and_a_dead_nodes_instances_leave_with_its_lease() {
    let _turn = serial().await;
    let cluster = Cluster::start("adopt").await;
    let short = Duration::from_secs(3);
    let a = node(&cluster, "a", short).await;
    let b = node(&cluster, "b", LEASE).await;
    register(&a, "PAY", "pay-1").await;
    register(&a, "PAY", "pay-2").await;
    eventually("b holds a's instances", Duration::from_secs(5), || {
        b.registry.holds("PAY", "pay-1") && b.registry.holds("PAY", "pay-2")
    })
    .await;
    // pay-1's client now renews at b.
    let registry = b.registry.clone();
    tokio::task::spawn_blocking(move || registry.renew("PAY", "pay-1", RenewRequest::default()))
        .await
        .unwrap()
        .expect("b renews a's instance");
    assert_eq!(
        owner_in_etcd(&cluster, "PAY", "pay-1").await.as_deref(),
        Some("b")
    );
    // a dies: nothing keeps its lease alive any more.
    a.store.stop();
    eventually(
        "a's pay-2 leaves b with a's lease",
        Duration::from_secs(15),
        || !b.registry.holds("PAY", "pay-2"),
    )
    .await;
    assert!(
        b.registry.holds("PAY", "pay-1"),
        "the adopted instance stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_etcd_is_out_of_reach_are_written_when_it_is_back() {
    let _turn = serial().await;
    let mut cluster = Cluster::start("replay").await;
    let a = node(&cluster, "a", LEASE).await;
    let b = node(&cluster, "b", LEASE).await;
    register(&a, "SHIP", "ship-1").await;
    eventually("b holds ship-1", Duration::from_secs(5), || {
        b.registry.holds("SHIP", "ship-1")
    })
    .await;
    cluster.kill(1);
    cluster.kill(2);
    tokio::time::sleep(Duration::from_secs(1)).await;
    register(&a, "SHIP", "ship-2").await;
    let registry = a.registry.clone();
    tokio::task::spawn_blocking(move || registry.cancel("SHIP", "ship-1"))
        .await
        .unwrap()
        .expect("a cancels while etcd has no quorum");
    assert!(a.registry.holds("SHIP", "ship-2"), "accepted on a at once");
    assert!(a.store.pending() >= 1, "kept for later");
    assert!(
        b.registry.holds("SHIP", "ship-1"),
        "b keeps serving what it had"
    );
    cluster.spawn(1);
    cluster.spawn(2);
    cluster.wait_for_leader(&[0, 1, 2]).await;
    eventually("b sees both changes", Duration::from_secs(20), || {
        b.registry.holds("SHIP", "ship-2") && !b.registry.holds("SHIP", "ship-1")
    })
    .await;
    assert_eq!(a.store.pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_is_taken_again_and_garbage_under_the_prefix_is_skipped() {
    let _turn = serial().await;
    let cluster = Cluster::start("lost-lease").await;
    let a = node(&cluster, "a", LEASE).await;
    let b = node(&cluster, "b", LEASE).await;
    register(&a, "INV", "inv-1").await;
    eventually("b holds inv-1", Duration::from_secs(5), || {
        b.registry.holds("INV", "inv-1")
    })
    .await;
    let mut client = Client::connect([cluster.endpoint(0)], None).await.unwrap();
    client
        .put(
            format!("{}BAD/x", layout::instances_prefix()),
            b"\xff\x00 not json".to_vec(),
            None,
        )
        .await
        .unwrap();
    client
        .put(
            format!("{}BAD/y", layout::instances_prefix()),
            br#"{"v":1,"owner":"z","record":{"v":7}}"#.to_vec(),
            None,
        )
        .await
        .unwrap();
    // As when a node was cut off longer than its lease: etcd drops every key on it.
    client.lease_revoke(a.store.health().lease).await.unwrap();
    let started = Instant::now();
    eventually(
        "inv-1 is back in etcd, kept by a",
        Duration::from_secs(15),
        || b.registry.holds("INV", "inv-1") && started.elapsed() > Duration::from_millis(50),
    )
    .await;
    assert!(
        a.registry.holds("INV", "inv-1"),
        "a never dropped its own instance"
    );
    eventually("inv-1 in etcd again", Duration::from_secs(15), || {
        futures_block(owner_in_etcd(&cluster, "INV", "inv-1")).is_some()
    })
    .await;
    assert!(
        b.store.health().decode_errors >= 2,
        "both bad values counted"
    );
    assert!(!b.registry.holds("BAD", "x") && !b.registry.holds("BAD", "y"));
    register(&a, "INV", "inv-2").await;
    eventually(
        "later registrations still arrive",
        Duration::from_secs(5),
        || b.registry.holds("INV", "inv-2"),
    )
    .await;
}

/// Runs a future to completion from a synchronous check (the test's runtime has two
/// threads, so blocking one briefly is fine).
fn futures_block<F: std::future::Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_keeping_more_than_a_lease_full_of_instances_takes_another_lease() {
    let _turn = serial().await;
    let cluster = Cluster::start("lease-pool").await;
    let a = node(&cluster, "a", LEASE).await;
    let b = node(&cluster, "b", LEASE).await;
    let registry = a.registry.clone();
    // 1,000 keys on one lease at most (etcd#15993: a put costs time linear in the keys
    // already on its lease).
    tokio::task::spawn_blocking(move || {
        for n in 0..1050 {
            registry
                .register(instance("BULK", &format!("bulk-{n}")), false)
                .expect("registered");
        }
    })
    .await
    .unwrap();
    eventually("b holds all 1,050", Duration::from_secs(20), || {
        b.registry.app("BULK").map(|l| l.len()) == Some(1050)
    })
    .await;
    let mut client = Client::connect([cluster.endpoint(0)], None).await.unwrap();
    let leases = client.leases().await.unwrap();
    // a's two, b's one.
    assert_eq!(leases.leases().len(), 3, "{:?}", leases.leases());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_instances_past_its_old_lease() {
    let _turn = serial().await;
    let cluster = Cluster::start("restart").await;
    let short = Duration::from_secs(3);
    let before = node(&cluster, "a", short).await;
    let b = node(&cluster, "b", LEASE).await;
    register(&before, "CART", "cart-1").await;
    eventually("b holds cart-1", Duration::from_secs(5), || {
        b.registry.holds("CART", "cart-1")
    })
    .await;
    // a crashes and starts again under the same name, its clients renewing there as before.
    before.store.stop();
    let after = node(&cluster, "a", LEASE).await;
    assert!(after.registry.holds("CART", "cart-1"));
    // Past the old process's lease: the instance is on the new one.
    tokio::time::sleep(short + Duration::from_secs(4)).await;
    assert!(b.registry.holds("CART", "cart-1"), "never dropped on b");
    assert!(after.registry.holds("CART", "cart-1"));
    assert_eq!(
        owner_in_etcd(&cluster, "CART", "cart-1").await.as_deref(),
        Some("a")
    );
}
