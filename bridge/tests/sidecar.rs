//! Sidecar mode end to end on the real `ferry` binary: two nodes on a three-member etcd on
//! loopback, node-a the signer and node-b joined with a token, an app that only node-b keeps.
//! A caller of node-a's outbound listener reaches the app only through node-b's inbound
//! listener (node-a's registry lists the app at an address where nothing listens for it):
//! HTTP/1.1 with the mesh's own headers never reaching the app, gRPC (tonic's client and
//! server, tonic-health's service) with its trailers, WebSocket (tokio-tungstenite) across
//! the HTTP/2 hop, and an allow rule set and lifted with `ferry ctl allow`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

mod common;
#[path = "../../registry-adapters/etcd/tests/common/mod.rs"]
mod etcd;
use common::{
    ca_init, cut_over, ferry_cli as ferry, free_port, grpc_health_backend, http_app, metrics_text,
    register, start_ferry_with, succeeded as stdout, websocket_echo_backend, websocket_round_trips,
    AccessLog,
};

/// GETs through an outbound listener until `accept` holds for the answer, bounded: the
/// registration and the keeper's inbound address reach node-a through etcd's watch.
async fn get_until(
    port: u16,
    path: &str,
    accept: impl Fn(u16, &str) -> bool,
) -> (u16, String, reqwest::header::HeaderMap) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = client
            .get(format!("http://127.0.0.1:{port}{path}"))
            .header("host", "orders")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap();
        if accept(status, &body) {
            return (status, body, headers);
        }
        assert!(Instant::now() < deadline, "last answer {status}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Three consecutive free ports, for a node that cuts over three services.
fn free_ports() -> u16 {
    loop {
        let first = free_port();
        if (1..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", first + i)).is_ok()) {
            return first;
        }
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_reaches_an_app_only_through_its_keepers_inbound_listener() {
    let _turn = etcd::serial().await;
    let cluster = etcd::Cluster::start("bridge-sidecar").await;
    let store = format!("etcd://{}", cluster.endpoints().join(","));
    let dir = std::env::temp_dir().join(format!("ferry-sidecar-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ca = dir.join("ca");
    let fingerprint = ca_init(&ca, "mesh.test");
    let ports = free_ports();
    let ports = format!("{ports}-{}", ports + 2);
    let node_a = start_ferry_with(&[
        "--outbound-ports",
        &ports,
        "--store",
        &store,
        "--node-name",
        "node-a",
        "--ca-issuer",
        ca.to_str().unwrap(),
    ])
    .await;
    let token = stdout(&ferry(&[
        "ca", "token", "--node", "node-b", "--store", &store,
    ]))
    .trim()
    .to_owned();
    let node_b = start_ferry_with(&[
        "--store",
        &store,
        "--node-name",
        "node-b",
        "--join-token",
        &token,
        "--ca-root-sha256",
        &fingerprint,
    ])
    .await;

    // The apps listen on loopback and register with node-b, which keeps them.
    let log: AccessLog = Arc::default();
    let orders = http_app("orders here", log.clone()).await;
    register(node_b.eureka, "ORDERS", "orders-b", orders).await;
    let (_reporter, grpc) = grpc_health_backend().await;
    register(node_b.eureka, "GRPC-ORDERS", "grpc-orders-b", grpc.port()).await;
    let sockets = websocket_echo_backend().await;
    register(node_b.eureka, "SOCKETS", "sockets-b", sockets.port()).await;

    let outbound = cut_over(&node_a, "ORDERS").await;
    let (status, body, _) = get_until(outbound, "/orders/7", |status, _| status == 200).await;
    assert_eq!((status, body.as_str()), (200, "orders here"));
    {
        let log = log.lock().unwrap();
        let (path, headers) = log.last().unwrap();
        assert_eq!(path, "/orders/7");
        assert_eq!(headers["host"], "orders");
        assert!(
            !headers
                .keys()
                .any(|name| name.as_str().starts_with("ferry-")),
            "{headers:?}"
        );
    }
    let metrics = metrics_text(node_b.admin).await;
    assert!(
        metric(&metrics, "ferry_inbound_tls_handshakes_total") >= 1.0,
        "{metrics}"
    );
    assert!(metric(&metrics, "ferry_inbound_requests_total") >= 1.0);

    // gRPC: HTTP/2 end to end, trailers included.
    let grpc_outbound = cut_over(&node_a, "GRPC-ORDERS").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut client = loop {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{grpc_outbound}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
        let mut client = HealthClient::new(channel);
        match client
            .check(HealthCheckRequest {
                service: "orders.Orders".into(),
            })
            .await
        {
            Ok(reply) => {
                assert_eq!(reply.get_ref().status, ServingStatus::Serving as i32);
                break client;
            }
            Err(status) => {
                assert!(Instant::now() < deadline, "{status:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let unknown = client
        .check(HealthCheckRequest {
            service: "nobody.Nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // WebSocket: an HTTP/1.1 upgrade, carried across the HTTP/2 hop as an extended CONNECT.
    let sockets_outbound = cut_over(&node_a, "SOCKETS").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("http://127.0.0.1:{sockets_outbound}/"))
        .await
        .map_or(true, |response| response.status() == 503)
    {
        assert!(Instant::now() < deadline, "SOCKETS never reachable");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    websocket_round_trips(sockets_outbound).await;

    // An allow rule naming only another service: node-a keeps no app, so it is refused on
    // node-b's side, and the app never sees the call.
    let admin_a = format!("127.0.0.1:{}", node_a.admin);
    let allowed = stdout(&ferry(&[
        "ctl", "--admin", &admin_a, "allow", "ORDERS", "CHECKOUT",
    ]));
    assert!(
        allowed.contains("ORDERS may be called by CHECKOUT"),
        "{allowed}"
    );
    let served = log.lock().unwrap().len();
    let (status, body, headers) = get_until(outbound, "/orders/8", |status, _| status == 403).await;
    assert_eq!(headers["x-ferry-error"], "not-allowed", "{body}");
    assert!(body.contains("may not call ORDERS"), "{body}");
    assert_eq!(
        log.lock().unwrap().len(),
        served,
        "a refused call reached the app"
    );
    assert_eq!(status, 403);
    let listed = stdout(&ferry(&["ctl", "--admin", &admin_a, "allow"]));
    assert!(
        listed.contains("ORDERS") && listed.contains("CHECKOUT"),
        "{listed}"
    );
    // node-a may call it by name.
    stdout(&ferry(&[
        "ctl",
        "--admin",
        &admin_a,
        "allow",
        "ORDERS",
        "CHECKOUT",
        "node:node-a",
    ]));
    get_until(outbound, "/orders/9", |status, _| status == 200).await;
    let lifted = stdout(&ferry(&[
        "ctl", "--admin", &admin_a, "allow", "ORDERS", "--any",
    ]));
    assert!(lifted.contains("any node"), "{lifted}");
    let _ = std::fs::remove_dir_all(&dir);
}
