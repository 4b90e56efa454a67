//! Certificates end to end on the real `ferry` binary over a three-member etcd on loopback:
//! `ferry ca init`, a signer node (`--ca-issuer`), `ferry ca token`, a node joining with the
//! token and the pinned root, both showing their identity on `/api/identity`, the joined
//! node renewing through the signer, following a bundle with a second root, restarting on
//! its kept key and certificate, and a node with a wrong pin refusing to start.

use std::time::{Duration, Instant};

mod common;
#[path = "../../registry-adapters/etcd/tests/common/mod.rs"]
mod etcd;
use common::{ferry_cli as ferry, free_port, start_ferry_with, succeeded as stdout};

async fn json(url: String) -> serde_json::Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn a_signer_and_a_joined_node_get_certificates_and_renew() {
    let _turn = etcd::serial().await;
    let cluster = etcd::Cluster::start("bridge-identity").await;
    let store = format!("etcd://{}", cluster.endpoints().join(","));
    let dir = std::env::temp_dir().join(format!("ferry-identity-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ca_dir = dir.join("ca");
    let ca = ca_dir.to_str().unwrap();

    let printed = stdout(&ferry(&[
        "ca",
        "init",
        "--trust-domain",
        "ferry.test",
        "--dir",
        ca,
    ]));
    let fingerprint = printed
        .lines()
        .find_map(|line| line.strip_prefix("root SHA-256: "))
        .expect("init prints the root's fingerprint")
        .to_owned();
    // Never twice over the same files.
    let again = ferry(&["ca", "init", "--trust-domain", "ferry.test", "--dir", ca]);
    assert!(!again.status.success());

    let signer = start_ferry_with(&[
        "--store",
        &store,
        "--node-name",
        "node-a",
        "--ca-issuer",
        ca,
        "--cert-lifetime",
        "8s",
    ])
    .await;
    let token = stdout(&ferry(&[
        "ca", "token", "--node", "node-b", "--ttl", "10m", "--store", &store,
    ]))
    .trim()
    .to_owned();
    assert_eq!(token.len(), 64, "{token}");
    // node-b's data directory is its own, so that a restart finds its key and chain.
    let data_b = dir.join("node-b");
    let node_b = [
        "--store",
        &store,
        "--node-name",
        "node-b",
        "--join-token",
        &token,
        "--ca-root-sha256",
        &fingerprint,
        "--data-dir",
        data_b.to_str().unwrap(),
    ];
    let joined = start_ferry_with(&node_b).await;

    for (ferry, node) in [(&signer, "node-a"), (&joined, "node-b")] {
        let shown = json(format!("http://127.0.0.1:{}/api/identity", ferry.admin)).await;
        assert_eq!(shown["enabled"], true, "{shown}");
        assert_eq!(shown["node"], node);
        assert_eq!(shown["trust_domain"], "ferry.test");
        assert_eq!(
            shown["spiffe_id"],
            format!("spiffe://ferry.test/node/{node}")
        );
        assert_eq!(shown["roots_sha256"], serde_json::json!([fingerprint]));
    }

    // The joined node renews with its key at 50-70% of 8 s, through the elected signer.
    let admin_b = format!("http://127.0.0.1:{}", joined.admin);
    let first = json(format!("{admin_b}/api/identity")).await["not_after"].clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = json(format!("{admin_b}/api/identity")).await["not_after"].clone();
        if now != first {
            break;
        }
        assert!(Instant::now() < deadline, "node-b never renewed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let metrics_b = reqwest::get(format!("{admin_b}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics_b.contains("ferry_identity_renewals_total{result=\"ok\"}"),
        "{metrics_b}"
    );
    assert!(metrics_b.contains("ferry_identity_cert_not_after_seconds "));
    let metrics_a = reqwest::get(format!("http://127.0.0.1:{}/metrics", signer.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let signed: u64 = metrics_a
        .lines()
        .find_map(|line| line.strip_prefix("ferry_ca_signed_total "))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ferry_ca_signed_total: {metrics_a}"));
    assert!(signed >= 2, "the join and a renewal: {signed}");

    // A second root added to etcd's bundle (a rotation's first step) reaches the nodes'
    // credentials without a restart.
    let next_dir = dir.join("next-ca");
    let next = stdout(&ferry(&[
        "ca",
        "init",
        "--trust-domain",
        "ferry.test",
        "--dir",
        next_dir.to_str().unwrap(),
    ]));
    let next_fingerprint = next
        .lines()
        .find_map(|line| line.strip_prefix("root SHA-256: "))
        .unwrap()
        .to_owned();
    let rotated = format!(
        "{}{}",
        std::fs::read_to_string(ca_dir.join("root.pem")).unwrap(),
        std::fs::read_to_string(next_dir.join("root.pem")).unwrap()
    );
    // `--`: a PEM value starts with dashes, which etcdctl would take for a flag.
    cluster.etcdctl(&["put", "--", "/ferry/v1/ca/bundle", &rotated]);
    let both = serde_json::json!([fingerprint, next_fingerprint]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while json(format!("{admin_b}/api/identity")).await["roots_sha256"] != both {
        assert!(
            Instant::now() < deadline,
            "node-b never took the new bundle"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Restarted with the same (spent) token, node-b keeps its key and its still valid
    // certificate from disk: no token is needed while the certificate lives.
    let key_before = std::fs::read_to_string(data_b.join("identity/node.key")).unwrap();
    drop(joined);
    let restarted = start_ferry_with(&node_b).await;
    let shown = json(format!("http://127.0.0.1:{}/api/identity", restarted.admin)).await;
    assert_eq!(shown["node"], "node-b", "{shown}");
    assert_eq!(
        std::fs::read_to_string(data_b.join("identity/node.key")).unwrap(),
        key_before
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data_b.join("identity/node.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "node.key is private: {mode:o}");
    drop(restarted);

    // A wrong pin: the node refuses etcd's bundle and does not start.
    let token_c = stdout(&ferry(&[
        "ca", "token", "--node", "node-c", "--store", &store,
    ]))
    .trim()
    .to_owned();
    let wrong = "00".repeat(32);
    let outbound = free_port();
    let data_c = dir.join("node-c");
    let refused = ferry(&[
        "--store",
        &store,
        "--node-name",
        "node-c",
        "--join-token",
        &token_c,
        "--ca-root-sha256",
        &wrong,
        "--eureka-listen",
        "off",
        "--consul-listen",
        "off",
        "--config-listen",
        "off",
        "--admin-listen",
        "off",
        "--outbound-ports",
        &format!("{outbound}-{outbound}"),
        "--data-dir",
        data_c.to_str().unwrap(),
        "--log",
        "off",
    ]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("pinned SHA-256"), "{said}");
    let _ = std::fs::remove_dir_all(&dir);
}
