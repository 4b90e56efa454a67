//! What operators see of the store on the real `ferry` binary with the embedded store:
//! `/ready` names it, `GET /api/store` and `GET /api/nodes` describe it in the same shapes
//! as etcd's (one current node), `/metrics` has the `ferry_store_*` figures, and
//! `ferry ctl nodes` prints this node's line. The etcd side is in `store_etcd.rs`.

use std::process::Command;

mod common;
use common::start_ferry_with;

#[tokio::test]
async fn the_embedded_store_is_reported_as_one_current_node() {
    let ferry = start_ferry_with(&["--node-name", "solo"]).await;
    let admin = format!("http://127.0.0.1:{}", ferry.admin);

    let ready = reqwest::get(format!("{admin}/ready")).await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap(), "ready (store embedded)\n");

    let store = json(format!("{admin}/api/store")).await;
    assert_eq!(store["kind"], "embedded");
    assert_eq!(store["node"], "solo");
    assert_eq!(store["current"], true);
    assert!(store["last_contact_ms"].is_null());
    assert!(store["pinned_endpoint"].is_null());
    assert!(store["applied_revision"].as_u64().is_some(), "{store}");
    assert_eq!(store["endpoints"], serde_json::json!([]));

    let nodes = json(format!("{admin}/api/nodes")).await;
    let nodes = nodes.as_array().expect("an array of nodes");
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["node"], "solo");
    assert_eq!(nodes[0]["self"], true);
    assert_eq!(nodes[0]["endpoint"], "embedded");
    assert_eq!(nodes[0]["refreshed_seconds_ago"], 0);

    let metrics = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let figure = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in:\n{metrics}"))
    };
    assert_eq!(figure("ferry_store_current"), 1.0);
    assert_eq!(figure("ferry_store_last_contact_seconds"), 0.0);
    assert_eq!(figure("ferry_store_decode_errors_total"), 0.0);
    assert!(figure("ferry_store_applied_revision") >= 1.0);
    assert!(!metrics.contains("ferry_store_endpoint_healthy{"));

    let ctl = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "ctl",
            "--admin",
            &format!("127.0.0.1:{}", ferry.admin),
            "nodes",
        ])
        .output()
        .unwrap();
    assert!(
        ctl.status.success(),
        "{}",
        String::from_utf8_lossy(&ctl.stderr)
    );
    let out = String::from_utf8_lossy(&ctl.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains("NODE") && lines[0].contains("APPLIED"),
        "{out}"
    );
    assert!(lines[1].starts_with("* solo"), "{out}");
    assert!(lines[1].contains("embedded"), "{out}");
}

async fn json(url: String) -> serde_json::Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}
