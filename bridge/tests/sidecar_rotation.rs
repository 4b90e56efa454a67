//! Certificates and a root rotated under load, on the real `ferry` binary over a
//! three-member etcd on loopback: two sidecars (node-a calling, node-b keeping the app)
//! with 20-second certificates, a signer on the first root; a second root added to the
//! bundle, a signer on it started and the first one stopped, every node renewed from the new
//! issuer, the first root removed; a node joining afterwards talks to node-b on the new root
//! alone. A bounded load loop runs from before the first renewal to the end: zero failed
//! requests.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
#[path = "../../registry-adapters/etcd/tests/common/mod.rs"]
mod etcd;
use common::{
    ca_init, cut_over, ferry_cli as ferry, http_app, register, start_ferry_with, succeeded,
    AccessLog, Ferry,
};

async fn identity(node: &Ferry) -> serde_json::Value {
    reqwest::get(format!("http://127.0.0.1:{}/api/identity", node.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls `check` on `node`'s identity until it holds, bounded.
async fn until_identity(node: &Ferry, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let shown = identity(node).await;
        if check(&shown) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {shown}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn roots(shown: &serde_json::Value) -> Vec<String> {
    shown["roots_sha256"]
        .as_array()
        .map(|roots| {
            roots
                .iter()
                .filter_map(|root| root.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// One call through an outbound listener: the app's answer, or why not.
async fn call(client: &reqwest::Client, port: u16) -> Result<(), String> {
    let response = client
        .get(format!("http://127.0.0.1:{port}/orders"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.text().await.map_err(|e| e.to_string())?;
    if status == 200 && body == "orders" {
        Ok(())
    } else {
        Err(format!("{status}: {body}"))
    }
}

async fn join(store: &str, node: &str, fingerprint: &str, extra: &[&str]) -> Ferry {
    let token = succeeded(&ferry(&["ca", "token", "--node", node, "--store", store]))
        .trim()
        .to_owned();
    let mut args = vec![
        "--store",
        store,
        "--node-name",
        node,
        "--join-token",
        &token,
        "--ca-root-sha256",
        fingerprint,
    ];
    args.extend_from_slice(extra);
    start_ferry_with(&args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_and_the_root_rotate_under_load_with_no_failed_request() {
    let _turn = etcd::serial().await;
    let cluster = etcd::Cluster::start("bridge-rotation").await;
    let store = format!("etcd://{}", cluster.endpoints().join(","));
    let dir = std::env::temp_dir().join(format!("ferry-rotation-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (ca_one, ca_two) = (dir.join("ca-one"), dir.join("ca-two"));
    let first = ca_init(&ca_one, "mesh.test");
    let second = ca_init(&ca_two, "mesh.test");
    let lifetime = ["--cert-lifetime", "20s"];

    let signer_one = start_ferry_with(&[
        "--store",
        &store,
        "--node-name",
        "signer-one",
        "--ca-issuer",
        ca_one.to_str().unwrap(),
        lifetime[0],
        lifetime[1],
    ])
    .await;
    let node_a = join(&store, "node-a", &first, &[]).await;
    let node_b = join(&store, "node-b", &first, &[]).await;

    // The app, kept by node-b; node-a's callers reach it only through node-b.
    let app_port = http_app("orders", AccessLog::default()).await;
    register(node_b.eureka, "ORDERS", "orders-b", app_port).await;
    let outbound = cut_over(&node_a, "ORDERS").await;
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(error) = call(&client, outbound).await {
        assert!(Instant::now() < deadline, "never reachable: {error}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The load: 20 calls a second until told to stop, every failure kept.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let load = tokio::spawn({
        let (stop, sent, failures) = (stop.clone(), sent.clone(), failures.clone());
        async move {
            let client = reqwest::Client::new();
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            // Bounded whatever happens: at most two minutes.
            for _ in 0..2400 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                tick.tick().await;
                sent.fetch_add(1, Ordering::Relaxed);
                if let Err(error) = call(&client, outbound).await {
                    failures.lock().unwrap().push(error);
                }
            }
        }
    });

    // Certificates renew by themselves at 50-70% of 20 s.
    let issued = identity(&node_a).await["not_after"].clone();
    until_identity(&node_a, "node-a renewed", |shown| {
        shown["not_after"] != issued
    })
    .await;

    // Rotation, step 1: both roots trusted everywhere.
    let listed = succeeded(&ferry(&[
        "ca",
        "bundle",
        "add",
        "--root",
        ca_two.join("root.pem").to_str().unwrap(),
        "--store",
        &store,
    ]));
    assert!(
        listed.contains(&first) && listed.contains(&second),
        "{listed}"
    );
    for node in [&node_a, &node_b] {
        until_identity(node, "both roots trusted", |shown| roots(shown).len() == 2).await;
    }

    // Step 2: the new issuer signs from now on (the old signer stops cleanly and resigns).
    let signer_two = start_ferry_with(&[
        "--store",
        &store,
        "--node-name",
        "signer-two",
        "--ca-issuer",
        ca_two.to_str().unwrap(),
        lifetime[0],
        lifetime[1],
    ])
    .await;
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &signer_one.pid().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let switched = Instant::now();
    // Every node renews after the switch, from the new issuer: the old root can go once a
    // node's certificate verifies without it.
    let (a_before, b_before) = (
        identity(&node_a).await["not_after"].clone(),
        identity(&node_b).await["not_after"].clone(),
    );
    until_identity(&node_a, "node-a renewed by the new issuer", |shown| {
        shown["not_after"] != a_before && switched.elapsed() > Duration::from_secs(1)
    })
    .await;
    until_identity(&node_b, "node-b renewed by the new issuer", |shown| {
        shown["not_after"] != b_before
    })
    .await;
    // The renewals just seen may have been signed before the switch took: wait one more
    // round, then drop the old root.
    let (a_now, b_now) = (
        identity(&node_a).await["not_after"].clone(),
        identity(&node_b).await["not_after"].clone(),
    );
    until_identity(&node_a, "node-a renewed again", |shown| {
        shown["not_after"] != a_now
    })
    .await;
    until_identity(&node_b, "node-b renewed again", |shown| {
        shown["not_after"] != b_now
    })
    .await;
    let listed = succeeded(&ferry(&[
        "ca", "bundle", "remove", "--sha256", &first, "--store", &store,
    ]));
    assert!(
        !listed.contains(&first) && listed.contains(&second),
        "{listed}"
    );
    for node in [&node_a, &node_b] {
        until_identity(node, "the old root dropped", |shown| {
            roots(shown) == [second.clone()]
        })
        .await;
    }

    // A node that joins now knows only the new root, and still reaches node-b.
    let node_c = join(&store, "node-c", &second, &[]).await;
    let answer: serde_json::Value = reqwest::get(format!(
        "http://127.0.0.1:{}/api/services/ORDERS",
        node_c.admin
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let outbound_c = answer["port"].as_u64().unwrap() as u16;
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(error) = call(&client, outbound_c).await {
        assert!(
            Instant::now() < deadline,
            "node-c never reached node-b: {error}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let failures = failures.lock().unwrap().clone();
    let sent = sent.load(Ordering::Relaxed);
    eprintln!(
        "rotation under load: {sent} calls, {} failed",
        failures.len()
    );
    assert!(sent >= 200, "only {sent} calls were made");
    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {failures:?}",
        failures.len()
    );
    drop(signer_two);
    let _ = std::fs::remove_dir_all(&dir);
}
