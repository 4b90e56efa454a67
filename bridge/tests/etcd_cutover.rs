//! Two real `ferry` nodes sharing a real 3-member etcd: a cutover made through node A's admin
//! API reaches node B, whose Eureka view then hands out B's own outbound listener; exactly
//! one node leads job `sync` and runs the legacy sync, and the other takes over when the
//! leader is killed; with etcd gone a cutover is refused with 503 and Retry-After.

use std::time::{Duration, Instant};

mod common;
#[path = "../../registry-adapters/etcd/tests/common/mod.rs"]
mod etcd;

use common::{start_ferry_with, Ferry};
use serde_json::{json, Value};

/// An admin API answer; `Null` for one that is not JSON, such as the 404 for a service a
/// node has not heard of yet.
async fn get(url: &str) -> Value {
    reqwest::get(url)
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or(Value::Null)
}

async fn eureka_json(url: &str) -> Value {
    reqwest::Client::new()
        .get(url)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn node(cluster: &etcd::Cluster, name: &str) -> Ferry {
    let store = format!("etcd://{}", cluster.endpoints().join(","));
    // Nothing listens there: the sync only gives the nodes a leader-only job to share.
    start_ferry_with(&[
        "--store",
        &store,
        "--node-name",
        name,
        "--sync-eureka",
        "http://127.0.0.1:9/eureka",
    ])
    .await
}

/// Polls `check` until it holds, at most `within`.
async fn until<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < within, "{what} not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn leads(ferry: &Ferry) -> bool {
    let leaders = get(&format!("http://127.0.0.1:{}/api/leaders", ferry.admin)).await;
    leaders.as_array().is_some_and(|jobs| {
        jobs.iter()
            .any(|job| job["job"] == "sync" && job["this_node"] == true)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cutover_on_node_a_reaches_node_b_and_the_sync_runs_on_one_node() {
    let _turn = etcd::serial().await;
    let mut cluster = etcd::Cluster::start("bridge-cutover").await;
    let a = node(&cluster, "node-a").await;
    let b = node(&cluster, "node-b").await;
    let client = reqwest::Client::new();

    let registration = json!({"instance": {
        "instanceId": "orders-1", "hostName": "127.0.0.1", "app": "ORDERS", "ipAddr": "127.0.0.1",
        "port": {"$": 18080, "@enabled": "true"}, "dataCenterInfo": {"name": "MyOwn"}}});
    let registered = client
        .post(format!("http://127.0.0.1:{}/eureka/apps/ORDERS", a.eureka))
        .json(&registration)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 204);

    let cut = client
        .put(format!("http://127.0.0.1:{}/api/services/ORDERS", a.admin))
        .json(&json!({"mode": "mesh"}))
        .send()
        .await
        .unwrap();
    assert_eq!(cut.status(), 200);
    let b_service = format!("http://127.0.0.1:{}/api/services/ORDERS", b.admin);
    until(Duration::from_secs(5), "node B in the mesh", || async {
        get(&b_service).await["mode"] == "mesh"
    })
    .await;
    let b_port = get(&b_service).await["port"].as_u64().unwrap();
    // B's callers are sent to B's own outbound listener.
    let b_eureka = format!("http://127.0.0.1:{}/eureka/apps/ORDERS", b.eureka);
    until(
        Duration::from_secs(5),
        "node B's route published",
        || async {
            let app = eureka_json(&b_eureka).await;
            let instances = &app["application"]["instance"];
            let instance = instances.get(0).unwrap_or(instances);
            instance["port"]["$"].as_u64() == Some(b_port)
        },
    )
    .await;

    // ...and B's Eureka clients learn it from their next delta (the writer's touch).
    let delta = eureka_json(&format!("http://127.0.0.1:{}/eureka/apps/delta", b.eureka)).await;
    let text = delta.to_string();
    // (ADDED or MODIFIED: a Eureka client replaces the instance either way.)
    assert!(
        text.contains("orders-1") && text.contains(&format!("\"$\":{b_port}")),
        "B's delta shows ORDERS at B's listener: {text}"
    );

    // Exactly one node leads the sync, and only it runs it.
    until(Duration::from_secs(10), "a sync leader", || async {
        leads(&a).await || leads(&b).await
    })
    .await;
    let (leader, follower) = if leads(&a).await { (a, b) } else { (b, a) };
    assert!(!leads(&follower).await);
    let syncs = |ferry: &Ferry| format!("http://127.0.0.1:{}/api/sync", ferry.admin);
    assert_eq!(get(&syncs(&leader)).await.as_array().unwrap().len(), 1);
    assert_eq!(get(&syncs(&follower)).await.as_array().unwrap().len(), 0);
    // kill -9: no resign, its lease runs out (10 s) and the follower takes the sync over.
    drop(leader);
    until(Duration::from_secs(20), "the follower leads", || async {
        leads(&follower).await
    })
    .await;
    until(
        Duration::from_secs(5),
        "the follower runs the sync",
        || async { get(&syncs(&follower)).await.as_array().unwrap().len() == 1 },
    )
    .await;

    // etcd gone: a cutover is refused, and says when to retry.
    for member in 0..3 {
        cluster.kill(member);
    }
    let refused = client
        .put(format!(
            "http://127.0.0.1:{}/api/services/ORDERS",
            follower.admin
        ))
        .json(&json!({"mode": "legacy"}))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let follower_service = format!("http://127.0.0.1:{}/api/services/ORDERS", follower.admin);
    assert_eq!(
        get(&follower_service).await["mode"],
        "mesh",
        "nothing changed"
    );
}
