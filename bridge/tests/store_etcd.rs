//! What operators and clients see of a shared etcd store, on the real `ferry` binary over a
//! three-member etcd on loopback (the nodes told of one member only, so losing it cuts them
//! off): while etcd answers, `/ready`, `/api/store`, `/api/nodes`
//! (both nodes, `self` on the one answering) and `/metrics` say current; once etcd is gone,
//! reads keep answering 200 and say they are stale (`/ready`, `X-Consul-KnownLeader`,
//! `ferry_store_current 0`), what cannot wait for etcd (`/api/nodes`) gets 503 with
//! `Retry-After`, and a registration is accepted and kept; when etcd is back the copy is
//! current again and that registration reaches the other node. (A write the store refuses
//! gets 503 with `Retry-After` in every view: the views' tests show it with a failing store.)

use std::process::Command;
use std::time::{Duration, Instant};

mod common;
#[path = "../../registry-adapters/etcd/tests/common/mod.rs"]
mod etcd;
use common::{start_ferry_with, start_ferry_with_consul};

async fn json(url: String) -> serde_json::Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

async fn text(url: String) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Polls `/ready` until its body contains `wanted`, for at most `within`.
async fn wait_ready_says(admin: &str, wanted: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = text(format!("{admin}/ready")).await;
        assert_eq!(status, 200, "/ready stays 200: {body}");
        if body.contains(wanted) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/ready never said {wanted:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn register(client: &reqwest::Client, eureka: &str, id: &str) -> reqwest::Response {
    client
        .post(eureka)
        .json(&registration(id))
        .send()
        .await
        .unwrap()
}

fn registration(id: &str) -> serde_json::Value {
    serde_json::json!({"instance": {
        "instanceId": id, "hostName": "127.0.0.1", "app": "ORDERS", "ipAddr": "127.0.0.1",
        "status": "UP", "port": {"$": 8080, "@enabled": "true"},
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"}}})
}

#[tokio::test]
async fn a_node_cut_off_from_etcd_serves_stale_reads_and_says_so() {
    // The nodes know one member only, so losing it cuts them off etcd.
    let mut cluster = etcd::Cluster::start("store-report").await;
    let member = cluster.endpoint(0);
    let store = format!("etcd://{member}");
    let a = start_ferry_with_consul(&["--store", &store, "--node-name", "node-a"]).await;
    let b = start_ferry_with(&["--store", &store, "--node-name", "node-b"]).await;
    let admin = format!("http://127.0.0.1:{}", a.admin);
    let eureka = format!("http://127.0.0.1:{}/eureka/apps/ORDERS", a.eureka);
    let consul = format!(
        "http://127.0.0.1:{}/v1/catalog/services",
        a.consul.expect("node-a has its Consul API")
    );
    let client = reqwest::Client::new();

    wait_ready_says(
        &admin,
        "ready (store etcd: current)",
        Duration::from_secs(5),
    )
    .await;
    let shown = json(format!("{admin}/api/store")).await;
    assert_eq!(shown["kind"], "etcd");
    assert_eq!(shown["node"], "node-a");
    assert_eq!(shown["current"], true);
    assert_eq!(shown["pinned_endpoint"], member);
    assert_eq!(shown["endpoints"][0]["endpoint"], member);
    assert_eq!(shown["endpoints"][0]["pinned"], true);
    let registered = register(&client, &eureka, "orders-1").await;
    assert_eq!(registered.status(), 204);

    // Both nodes' keys are refreshed every 5 s; the first is written at start.
    let nodes = json(format!("{admin}/api/nodes")).await;
    let names: Vec<(&str, bool)> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|node| {
            (
                node["node"].as_str().unwrap(),
                node["self"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(names, [("node-a", true), ("node-b", false)], "{nodes}");
    assert_eq!(nodes[0]["endpoint"], member);
    let ctl = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["ctl", "--admin", &format!("127.0.0.1:{}", b.admin), "nodes"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&ctl.stdout);
    assert!(out.lines().any(|l| l.starts_with("* node-b")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("  node-a")), "{out}");
    let metrics = text(format!("{admin}/metrics")).await.1;
    assert!(metrics.contains("ferry_store_current 1"), "{metrics}");
    let healthy = format!("ferry_store_endpoint_healthy{{endpoint=\"{}\"}} 1", member);
    assert!(metrics.contains(&healthy), "{metrics}");

    cluster.kill(0);
    let stale = wait_ready_says(&admin, "stale, last contact", Duration::from_secs(30)).await;
    assert!(
        stale.starts_with("ready (store etcd: stale, last contact "),
        "{stale}"
    );
    let read = client.get(&consul).send().await.unwrap();
    assert_eq!(read.status(), 200, "stale reads are served");
    assert_eq!(read.headers()["x-consul-knownleader"], "false");
    let last_contact: u64 = read.headers()["x-consul-lastcontact"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(last_contact > 0, "{last_contact} ms");
    let listed = client
        .get(&eureka)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    assert!(listed.text().await.unwrap().contains("orders-1"));
    let kept = register(&client, &eureka, "orders-2").await;
    assert_eq!(
        kept.status(),
        204,
        "a registration is kept while etcd is away"
    );
    let metrics = text(format!("{admin}/metrics")).await.1;
    assert!(metrics.contains("ferry_store_current 0"), "{metrics}");
    assert!(
        metrics.contains(&healthy.replace("} 1", "} 0")),
        "{metrics}"
    );
    let shown = json(format!("{admin}/api/store")).await;
    assert_eq!(shown["current"], false);
    assert!(shown["last_contact_ms"].as_u64().unwrap() > 0, "{shown}");
    let nodes = reqwest::get(format!("{admin}/api/nodes")).await.unwrap();
    assert_eq!(nodes.status(), 503);
    assert_eq!(nodes.headers()["retry-after"], "5");

    cluster.spawn(0);
    cluster.wait_for_leader(&[0]).await;
    wait_ready_says(
        &admin,
        "ready (store etcd: current)",
        Duration::from_secs(30),
    )
    .await;
    let read = client.get(&consul).send().await.unwrap();
    assert_eq!(read.headers()["x-consul-knownleader"], "true");
    assert_eq!(read.headers()["x-consul-lastcontact"], "0");
    let on_b = format!("http://127.0.0.1:{}/eureka/apps/ORDERS", b.eureka);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = client
            .get(&on_b)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        if listed.text().await.unwrap().contains("orders-2") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the registration kept while etcd was away never reached node-b"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop((a, b));
}
