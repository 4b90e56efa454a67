//! Handler tests over the in-memory stores, with no socket.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::Router;
use serde_json::{json, Value};

use ferry_http::test_client::{call as call_with, Reply};

use super::*;
use ferry_core::change_index::ChangeIndex;
use ferry_core::clock::Clock;
use ferry_core::store::MemoryStore;
use ferry_core::RegistrySettings;

mod acl;
mod store_unavailable;

struct Fixture {
    router: Router,
    registry: Arc<Registry>,
    kv: Arc<KvStore>,
}

fn fixture_with(token: Option<&str>) -> Fixture {
    fixture_configured(|settings| settings.token = token.map(str::to_owned))
}

/// A fixture whose settings `configure` adjusts.
fn fixture_configured(configure: impl FnOnce(&mut ConsulSettings)) -> Fixture {
    let index = Arc::new(ChangeIndex::new(1));
    let registry = Arc::new(Registry::with_index(
        RegistrySettings::default(),
        Clock::System,
        Arc::new(MemoryStore),
        index.clone(),
    ));
    let kv = Arc::new(KvStore::in_memory(index, Clock::System, "n1"));
    let mut settings = ConsulSettings::new(NodeInfo {
        name: "n1".into(),
        id: "7b3a1c64-0000-4000-8000-000000000001".into(),
        address: "10.0.0.5".into(),
        datacenter: "dc1".into(),
    });
    configure(&mut settings);
    Fixture {
        router: routes(registry.clone(), kv.clone(), settings),
        registry,
        kv,
    }
}

fn fixture() -> Fixture {
    fixture_with(None)
}

/// The index a Consul read reports with its answer.
trait ConsulIndex {
    fn index(&self) -> u64;
}

impl ConsulIndex for Reply {
    fn index(&self) -> u64 {
        self.headers["x-consul-index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    }
}

async fn call(router: &Router, method: Method, uri: &str, body: impl Into<Body>) -> Reply {
    call_with(router, method, uri, &[], body).await
}

async fn register(router: &Router, body: Value) -> Reply {
    call(
        router,
        Method::PUT,
        "/v1/agent/service/register",
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn a_spring_registration_appears_in_agent_catalog_and_health_views() {
    let f = fixture();
    let reply = register(
        &f.router,
        json!({"ID":"orders-8080","Name":"orders","Tags":["v1"],"Address":"10.0.0.7","Meta":{"secure":"false"},
               "Port":8080,"EnableTagOverride":null,"Check":{"TTL":"30s","HTTP":null,"Interval":null},"Checks":null}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(reply.body.is_empty());

    let services = call(&f.router, Method::GET, "/v1/agent/services", Body::empty())
        .await
        .json();
    assert_eq!(services["orders-8080"]["Service"], "orders");
    assert_eq!(
        services["orders-8080"]["Weights"],
        json!({"Passing":1,"Warning":1})
    );

    let catalog = call(
        &f.router,
        Method::GET,
        "/v1/catalog/services",
        Body::empty(),
    )
    .await;
    assert_eq!(catalog.json(), json!({"consul": [], "orders": ["v1"]}));
    assert_eq!(catalog.headers["x-consul-knownleader"], "true");

    let health = call(
        &f.router,
        Method::GET,
        "/v1/health/service/orders?passing=false",
        Body::empty(),
    )
    .await
    .json();
    let entry = &health[0];
    assert_eq!(entry["Service"]["Address"], "10.0.0.7");
    assert_eq!(entry["Node"]["TaggedAddresses"]["lan"], "10.0.0.5");
    let checks: Vec<(&str, &str)> = entry["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|check| {
            (
                check["CheckID"].as_str().unwrap(),
                check["Status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        checks,
        vec![
            ("serfHealth", "passing"),
            ("service:orders-8080", "critical")
        ]
    );
    let passing = call(
        &f.router,
        Method::GET,
        "/v1/health/service/orders?passing=1",
        Body::empty(),
    )
    .await
    .json();
    assert_eq!(passing, json!([]), "a new TTL check is critical");

    assert_eq!(
        call(
            &f.router,
            Method::PUT,
            "/v1/agent/check/pass/service:orders-8080?note=fine",
            Body::empty()
        )
        .await
        .status,
        StatusCode::OK
    );
    let passing = call(
        &f.router,
        Method::GET,
        "/v1/health/service/ORDERS?passing",
        Body::empty(),
    )
    .await
    .json();
    assert_eq!(passing[0]["Checks"][1]["Output"], "fine");
    assert_eq!(
        f.registry
            .instance("ORDERS", "orders-8080")
            .unwrap()
            .instance
            .status,
        ferry_core::Status::Up
    );
}

#[tokio::test]
async fn a_failing_check_is_down_for_eureka_and_a_eureka_down_is_critical_for_consul() {
    let f = fixture();
    register(
        &f.router,
        json!({"Name":"orders","ID":"o1","Port":1,"Check":{"TTL":"30s","Status":"passing"}}),
    )
    .await;
    assert_eq!(
        f.registry.instance("ORDERS", "o1").unwrap().instance.status,
        ferry_core::Status::Up
    );
    let index = f.registry.index();
    call(
        &f.router,
        Method::PUT,
        "/v1/agent/check/fail/service:o1",
        Body::empty(),
    )
    .await;
    assert_eq!(
        f.registry.instance("ORDERS", "o1").unwrap().instance.status,
        ferry_core::Status::Down
    );
    assert!(f.registry.index() > index);
    let delta = f.registry.list_recent_changes();
    assert_eq!(
        delta.apps[0].1[0].instance.action,
        ferry_core::model::Action::Modified
    );

    let mut eureka = ferry_core::Instance::new("billing", "b1", "10.0.0.9", "10.0.0.9", 9000);
    eureka.status = ferry_core::Status::Down;
    f.registry.register(eureka, false).unwrap();
    let health = call(
        &f.router,
        Method::GET,
        "/v1/health/service/billing",
        Body::empty(),
    )
    .await
    .json();
    assert_eq!(health[0]["Checks"][1]["Name"], "Eureka status");
    assert_eq!(health[0]["Checks"][1]["Status"], "critical");
    let critical = call(
        &f.router,
        Method::GET,
        "/v1/health/state/critical",
        Body::empty(),
    )
    .await
    .json();
    assert_eq!(critical.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_heartbeat_that_changes_nothing_moves_no_index() {
    let f = fixture();
    register(
        &f.router,
        json!({"Name":"orders","ID":"o1","Check":{"TTL":"30s"}}),
    )
    .await;
    call(
        &f.router,
        Method::PUT,
        "/v1/agent/check/pass/service:o1",
        Body::empty(),
    )
    .await;
    let index = call(
        &f.router,
        Method::GET,
        "/v1/health/service/orders",
        Body::empty(),
    )
    .await
    .index();
    for _ in 0..3 {
        call(
            &f.router,
            Method::PUT,
            "/v1/agent/check/pass/service:o1",
            Body::empty(),
        )
        .await;
    }
    assert_eq!(
        call(
            &f.router,
            Method::GET,
            "/v1/health/service/orders",
            Body::empty()
        )
        .await
        .index(),
        index
    );
}

#[tokio::test]
async fn agent_errors_use_consuls_codes_and_texts() {
    let f = fixture();
    let cases: Vec<(Method, &str, String, StatusCode, &str)> = vec![
        (
            Method::PUT,
            "/v1/agent/service/register",
            "{".into(),
            StatusCode::BAD_REQUEST,
            "Request decode failed",
        ),
        (
            Method::PUT,
            "/v1/agent/service/register",
            json!({"Port": 1}).to_string(),
            StatusCode::BAD_REQUEST,
            "Missing service name",
        ),
        (
            Method::PUT,
            "/v1/agent/service/deregister/nope",
            String::new(),
            StatusCode::NOT_FOUND,
            "Unknown service ID",
        ),
        (
            Method::PUT,
            "/v1/agent/check/pass/nope",
            String::new(),
            StatusCode::NOT_FOUND,
            "Unknown check ID",
        ),
        (
            Method::PUT,
            "/v1/agent/service/maintenance/nope?enable=true",
            String::new(),
            StatusCode::NOT_FOUND,
            "Unknown service ID",
        ),
        (
            Method::GET,
            "/v1/health/service/orders?passing=maybe",
            String::new(),
            StatusCode::BAD_REQUEST,
            "Invalid value for ?passing",
        ),
        (
            Method::GET,
            "/v1/catalog/services?index=abc",
            String::new(),
            StatusCode::BAD_REQUEST,
            "Invalid index",
        ),
        (
            Method::GET,
            "/v1/catalog/services?index=1&wait=soon",
            String::new(),
            StatusCode::BAD_REQUEST,
            "Invalid wait time",
        ),
        (
            Method::GET,
            "/v1/catalog/services?dc=dc9",
            String::new(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "No path to datacenter",
        ),
        (
            Method::GET,
            "/v1/catalog/services?stale&consistent",
            String::new(),
            StatusCode::BAD_REQUEST,
            "conflicting",
        ),
        (
            Method::GET,
            "/v1/health/state/sleepy",
            String::new(),
            StatusCode::BAD_REQUEST,
            "Bad state",
        ),
    ];
    for (method, uri, body, status, reason) in cases {
        let index = f.registry.index();
        let reply = call(&f.router, method, uri, body).await;
        assert_eq!(reply.status, status, "{uri}: {}", reply.text());
        assert!(reply.text().contains(reason), "{uri}: {}", reply.text());
        assert_eq!(f.registry.index(), index, "{uri} changed nothing");
    }
    register(
        &f.router,
        json!({"Name":"web","ID":"w1","Check":{"HTTP":"http://127.0.0.1:1/","Interval":"10s"}}),
    )
    .await;
    let reply = call(
        &f.router,
        Method::PUT,
        "/v1/agent/check/pass/service:w1",
        Body::empty(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.text().contains("does not have associated TTL"));
    let reply = call(
        &f.router,
        Method::PUT,
        "/v1/agent/check/update/service:w1",
        r#"{"Status":"great"}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = call(
        &f.router,
        Method::GET,
        "/v1/agent/service/register",
        Body::empty(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(reply.headers.contains_key("allow"));
}

#[tokio::test]
async fn maintenance_adds_and_removes_its_critical_check() {
    let f = fixture();
    register(
        &f.router,
        json!({"Name":"orders","ID":"o1","Check":{"TTL":"30s","Status":"passing"}}),
    )
    .await;
    let reply = call(
        &f.router,
        Method::PUT,
        "/v1/agent/service/maintenance/o1?enable=true&reason=deploy",
        Body::empty(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        f.registry.instance("ORDERS", "o1").unwrap().instance.status,
        ferry_core::Status::OutOfService
    );
    let checks = call(&f.router, Method::GET, "/v1/agent/checks", Body::empty())
        .await
        .json();
    assert_eq!(checks["_service_maintenance:o1"]["Notes"], "deploy");
    call(
        &f.router,
        Method::PUT,
        "/v1/agent/service/maintenance/o1?enable=false",
        Body::empty(),
    )
    .await;
    assert_eq!(
        f.registry.instance("ORDERS", "o1").unwrap().instance.status,
        ferry_core::Status::Up
    );
    assert_eq!(
        call(
            &f.router,
            Method::PUT,
            "/v1/agent/service/maintenance/o1",
            Body::empty()
        )
        .await
        .status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn kv_reads_writes_and_their_index_headers() {
    let f = fixture();
    let put = call(
        &f.router,
        Method::PUT,
        "/v1/kv/config/orders/data?flags=42",
        "orders:\n  pool: 5\n",
    )
    .await;
    assert_eq!(put.text(), "true");
    let read = call(
        &f.router,
        Method::GET,
        "/v1/kv/config%2Forders%2Fdata",
        Body::empty(),
    )
    .await;
    let entry = &read.json()[0];
    assert_eq!(entry["Key"], "config/orders/data");
    assert_eq!(entry["Value"], "b3JkZXJzOgogIHBvb2w6IDUK");
    assert_eq!(entry["Flags"], 42);
    assert!(entry.get("Session").is_none());
    let raw = call(
        &f.router,
        Method::GET,
        "/v1/kv/config/orders/data?raw",
        Body::empty(),
    )
    .await;
    assert_eq!(raw.text(), "orders:\n  pool: 5\n");
    assert_eq!(raw.headers["content-type"], "text/plain");

    let missing = call(
        &f.router,
        Method::GET,
        "/v1/kv/config/nope/?recurse",
        Body::empty(),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.is_empty());
    assert!(missing.index() >= 1);
    call(&f.router, Method::PUT, "/v1/kv/config/empty", Body::empty()).await;
    assert_eq!(
        call(&f.router, Method::GET, "/v1/kv/config/empty", Body::empty())
            .await
            .json()[0]["Value"],
        Value::Null
    );
    let keys = call(
        &f.router,
        Method::GET,
        "/v1/kv/config/?keys&separator=/",
        Body::empty(),
    )
    .await
    .json();
    assert_eq!(keys, json!(["config/empty", "config/orders/"]));
    assert_eq!(
        call(&f.router, Method::GET, "/v1/kv/?keys", Body::empty())
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        call(&f.router, Method::GET, "/v1/kv/", Body::empty())
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn kv_bad_input_changes_nothing() {
    let f = fixture();
    call(&f.router, Method::PUT, "/v1/kv/k", "v").await;
    let index = f.kv.store_result_index();
    let big = vec![b'x'; ferry_core::kv::MAX_VALUE_BYTES + 1];
    let cases: Vec<(Method, &str, Vec<u8>, StatusCode, &str)> = vec![
        (
            Method::PUT,
            "/v1/kv/k",
            big,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too large, max size: 524288 bytes",
        ),
        (
            Method::PUT,
            "/v1/kv/k?cas=x",
            b"v".to_vec(),
            StatusCode::BAD_REQUEST,
            "cas",
        ),
        (
            Method::PUT,
            "/v1/kv/k?flags=-1",
            b"v".to_vec(),
            StatusCode::BAD_REQUEST,
            "flags",
        ),
        (
            Method::PUT,
            "/v1/kv/k?cas=1&acquire=s",
            b"v".to_vec(),
            StatusCode::BAD_REQUEST,
            "Conflicting flags",
        ),
        (
            Method::DELETE,
            "/v1/kv/k?recurse&cas=1",
            Vec::new(),
            StatusCode::BAD_REQUEST,
            "Conflicting flags",
        ),
        (
            Method::PUT,
            "/v1/kv/",
            b"v".to_vec(),
            StatusCode::BAD_REQUEST,
            "Missing key name",
        ),
        (
            Method::PUT,
            "/v1/kv/k?acquire=no-such-session",
            b"v".to_vec(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "invalid session",
        ),
    ];
    for (method, uri, body, status, reason) in cases {
        let reply = call(&f.router, method, uri, body).await;
        assert_eq!(reply.status, status, "{uri}: {}", reply.text());
        assert!(reply.text().contains(reason), "{uri}: {}", reply.text());
    }
    assert_eq!(f.kv.store_result_index(), index);
    assert_eq!(
        f.kv.get("k").1.unwrap().value,
        bytes::Bytes::from_static(b"v")
    );
    let failed_cas = call(&f.router, Method::PUT, "/v1/kv/k?cas=999", "w").await;
    assert_eq!(
        (failed_cas.status, failed_cas.text().as_str()),
        (StatusCode::OK, "false")
    );
}

// Blocking reads run on tokio's paused clock: a sleep costs nothing, nothing depends on how
// busy the machine is, and a read that only a timer could end shows as virtual time passing.

#[tokio::test(start_paused = true)]
async fn a_blocking_prefix_read_waits_for_its_prefix_only() {
    let f = fixture();
    call(&f.router, Method::PUT, "/v1/kv/config/orders/data", "a").await;
    let index = call(
        &f.router,
        Method::GET,
        "/v1/kv/config/orders/?recurse",
        Body::empty(),
    )
    .await
    .index();
    let router = f.router.clone();
    let waiter = tokio::spawn(async move {
        let uri = format!("/v1/kv/config/orders/?recurse&index={index}&wait=60s");
        call(&router, Method::GET, &uri, Body::empty()).await
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    call(&f.router, Method::PUT, "/v1/kv/config/payments/data", "x").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!waiter.is_finished(), "another prefix does not wake it");
    let written = tokio::time::Instant::now();
    call(&f.router, Method::PUT, "/v1/kv/config/orders/data", "b").await;
    let reply = waiter.await.unwrap();
    assert_eq!(
        tokio::time::Instant::now(),
        written,
        "woken by the write, not by its 60 s wait running out"
    );
    assert!(reply.index() > index);
    assert_eq!(reply.json()[0]["Value"], "Yg==");
}

#[tokio::test(start_paused = true)]
async fn a_re_registration_at_a_new_port_wakes_a_blocking_service_list_read() {
    let f = fixture();
    let service = |port: u16| json!({"Name":"orders","ID":"o1","Address":"10.0.0.7","Port":port});
    register(&f.router, service(8080)).await;
    let index = call(
        &f.router,
        Method::GET,
        "/v1/catalog/services",
        Body::empty(),
    )
    .await
    .index();
    let router = f.router.clone();
    let waiter = tokio::spawn(async move {
        let uri = format!("/v1/catalog/services?index={index}&wait=60s");
        call(&router, Method::GET, &uri, Body::empty()).await
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    register(&f.router, service(8080)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !waiter.is_finished(),
        "the same registration changes no listing"
    );
    let written = tokio::time::Instant::now();
    register(&f.router, service(8081)).await;
    let reply = waiter.await.unwrap();
    assert_eq!(
        tokio::time::Instant::now(),
        written,
        "woken by the new port"
    );
    assert!(reply.index() > index);
}

#[tokio::test(start_paused = true)]
async fn a_blocking_read_answers_unchanged_when_the_wait_runs_out() {
    let f = fixture();
    register(&f.router, json!({"Name":"orders","ID":"o1"})).await;
    let index = call(
        &f.router,
        Method::GET,
        "/v1/health/service/orders",
        Body::empty(),
    )
    .await
    .index();
    let started = tokio::time::Instant::now();
    let uri = format!("/v1/health/service/orders?index={index}&wait=300ms");
    let reply = call(&f.router, Method::GET, &uri, Body::empty()).await;
    let waited = started.elapsed();
    // Consul adds up to wait/16 of jitter (18.75 ms here), and tokio's timer rounds a
    // deadline up to its next millisecond: at most 319 ms.
    let wait = Duration::from_millis(300);
    let latest = wait + wait / 16 + Duration::from_millis(1);
    assert!(waited >= wait && waited <= latest, "{waited:?}");
    assert_eq!(reply.index(), index);
    assert_eq!(reply.json().as_array().unwrap().len(), 1);
}

#[test]
fn the_wait_defaults_to_5_minutes_and_is_capped_at_10() {
    let blocking = |pairs: &[(&str, &str)]| {
        query::Params(
            pairs
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        )
        .blocking()
        .map(|blocking| (blocking.index, blocking.wait))
    };
    let minutes = |n: u64| Duration::from_secs(60 * n);
    assert_eq!(blocking(&[("index", "7")]).unwrap(), (7, minutes(5)));
    assert_eq!(
        blocking(&[("index", "7"), ("wait", "")]).unwrap(),
        (7, minutes(5))
    );
    assert_eq!(
        blocking(&[("index", "7"), ("wait", "30s")]).unwrap(),
        (7, Duration::from_secs(30))
    );
    for long in ["10m", "10m1s", "11m", "100h"] {
        assert_eq!(
            blocking(&[("index", "7"), ("wait", long)]).unwrap(),
            (7, minutes(10)),
            "{long}"
        );
    }
    for bad in ["forever", "-1s", "10"] {
        assert!(blocking(&[("index", "7"), ("wait", bad)]).is_err(), "{bad}");
    }
    assert!(blocking(&[("index", "x")]).is_err());
}

#[tokio::test(start_paused = true)]
async fn a_huge_wait_blocks_for_the_10_minute_cap_then_answers() {
    let f = fixture();
    call(&f.router, Method::PUT, "/v1/kv/k", "v").await;
    let index = call(&f.router, Method::GET, "/v1/kv/k", Body::empty())
        .await
        .index();
    let started = tokio::time::Instant::now();
    let uri = format!("/v1/kv/k?index={index}&wait=100h");
    let reply = call(&f.router, Method::GET, &uri, Body::empty()).await;
    let waited = started.elapsed();
    let cap = Duration::from_secs(600);
    assert!(waited >= cap && waited <= cap + cap / 16, "{waited:?}");
    assert_eq!((reply.status, reply.index()), (StatusCode::OK, index));
}

#[tokio::test]
async fn the_acl_token_is_taken_from_any_of_its_places() {
    let f = fixture_with(Some("s3cret"));
    let denied = call(&f.router, Method::PUT, "/v1/kv/k", "v").await;
    assert_eq!(
        (denied.status, denied.text().as_str()),
        (StatusCode::FORBIDDEN, "Permission denied")
    );
    assert!(f.kv.get("k").1.is_none());
    assert_eq!(
        call(&f.router, Method::PUT, "/v1/kv/k?token=s3cret", "v")
            .await
            .status,
        StatusCode::OK
    );
    for header in [
        ("x-consul-token", "s3cret"),
        ("authorization", "Bearer s3cret"),
    ] {
        let reply = call_with(&f.router, Method::GET, "/v1/kv/k", &[header], Body::empty()).await;
        assert_eq!(reply.status, StatusCode::OK, "{header:?}");
    }
}

#[tokio::test]
async fn a_listener_facing_the_network_without_a_token_takes_reads_but_no_writes() {
    let f = fixture_configured(|settings| settings.anonymous_writes = false);
    let refused = register(
        &f.router,
        json!({"Name": "inventory", "ID": "inventory-1", "Port": 8080}),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.text().contains("no --consul-token is set"),
        "{}",
        refused.text()
    );
    let put = call(&f.router, Method::PUT, "/v1/kv/k", "v").await;
    assert_eq!(put.status, StatusCode::FORBIDDEN);
    assert!(f.kv.get("k").1.is_none(), "a refused write changed nothing");
    let services = call(&f.router, Method::GET, "/v1/agent/services", Body::empty()).await;
    assert_eq!(
        (services.status, services.text().as_str()),
        (StatusCode::OK, "{}")
    );
    let leader = call(&f.router, Method::GET, "/v1/status/leader", Body::empty()).await;
    assert_eq!(leader.status, StatusCode::OK);

    // With a token configured, the token decides, as on loopback.
    let f = fixture_configured(|settings| {
        settings.anonymous_writes = false;
        settings.token = Some("s3cret".into());
    });
    let put = call(&f.router, Method::PUT, "/v1/kv/k?token=s3cret", "v").await;
    assert_eq!(put.status, StatusCode::OK);
}

#[tokio::test]
async fn sessions_hold_locks_through_the_api() {
    let f = fixture();
    let session = call(
        &f.router,
        Method::PUT,
        "/v1/session/create",
        r#"{"Name":"leader","TTL":"15s"}"#,
    )
    .await
    .json();
    let id = session["ID"].as_str().unwrap().to_owned();
    assert_eq!(
        call(
            &f.router,
            Method::PUT,
            &format!("/v1/kv/lock?acquire={id}"),
            "me"
        )
        .await
        .text(),
        "true"
    );
    assert_eq!(
        call(&f.router, Method::GET, "/v1/kv/lock", Body::empty())
            .await
            .json()[0]["Session"],
        id.as_str()
    );
    let info = call(
        &f.router,
        Method::GET,
        &format!("/v1/session/info/{id}"),
        Body::empty(),
    )
    .await
    .json();
    assert_eq!(info[0]["TTL"], "15s");
    assert_eq!(
        call(
            &f.router,
            Method::PUT,
            &format!("/v1/session/renew/{id}"),
            Body::empty()
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        call(
            &f.router,
            Method::PUT,
            "/v1/session/renew/nope",
            Body::empty()
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(
            &f.router,
            Method::PUT,
            &format!("/v1/session/destroy/{id}"),
            Body::empty()
        )
        .await
        .text(),
        "true"
    );
    assert!(call(&f.router, Method::GET, "/v1/kv/lock", Body::empty())
        .await
        .json()[0]
        .get("Session")
        .is_none());
    let bad = call(
        &f.router,
        Method::PUT,
        "/v1/session/create",
        r#"{"TTL":"1s"}"#,
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_service_keeps_its_registered_case_and_is_found_in_any_case() {
    let f = fixture();
    let reply = register(
        &f.router,
        json!({"ID":"Inventory-1","Name":"Inventory","Port":8080,"Tags":["v1"]}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let mut eureka = ferry_core::Instance::new("orders", "o1", "10.0.0.9", "10.0.0.9", 9000);
    eureka.last_dirty = 1;
    f.registry.register(eureka, false).unwrap();

    let services = call(
        &f.router,
        Method::GET,
        "/v1/catalog/services",
        Body::empty(),
    )
    .await;
    assert_eq!(
        services.json(),
        json!({"consul": [], "Inventory": ["v1"], "orders": []}),
        "a Consul name as registered; a Eureka app (upper case by convention) in lower case"
    );
    // Consul indexes service names in lower case: any spelling finds the service.
    for spelling in ["Inventory", "inventory", "INVENTORY"] {
        let catalog = call(
            &f.router,
            Method::GET,
            &format!("/v1/catalog/service/{spelling}"),
            Body::empty(),
        )
        .await
        .json();
        assert_eq!(catalog[0]["ServiceName"], "Inventory", "{spelling}");
        let health = call(
            &f.router,
            Method::GET,
            &format!("/v1/health/service/{spelling}"),
            Body::empty(),
        )
        .await
        .json();
        assert_eq!(health[0]["Service"]["Service"], "Inventory", "{spelling}");
    }
    let agent = call(&f.router, Method::GET, "/v1/agent/services", Body::empty())
        .await
        .json();
    assert_eq!(agent["Inventory-1"]["Service"], "Inventory");
    // The registry's key, which the Eureka view shows, stays upper case.
    assert!(f.registry.instance("INVENTORY", "Inventory-1").is_some());
}

#[tokio::test]
async fn the_api_also_answers_under_a_path_prefix() {
    assert_eq!(path_prefix("/consul/api/").as_deref(), Some("/consul/api"));
    assert_eq!(path_prefix("consul").as_deref(), Some("/consul"));
    assert_eq!(path_prefix(" / "), None);

    let router = fixture_configured(|settings| {
        settings.path_prefix = Some("/consul/api/".into());
        settings.token = Some("s3cret".into());
    })
    .router;
    let token = [("x-consul-token", "s3cret")];

    let put = call_with(&router, Method::PUT, "/consul/api/v1/kv/a/b", &token, "v").await;
    assert_eq!(put.text(), "true");
    for prefix in ["/consul/api", ""] {
        let uri = format!("{prefix}/v1/kv/a/b");
        let read = call_with(&router, Method::GET, &uri, &token, Body::empty()).await;
        assert_eq!(read.json()[0]["Key"], "a/b", "{uri}");
        // The guard sees the path without the prefix: status stays open.
        let uri = format!("{prefix}/v1/status/leader");
        let leader = call(&router, Method::GET, &uri, Body::empty()).await;
        assert_eq!(leader.status, StatusCode::OK, "{uri}");
    }
    let elsewhere = call_with(
        &router,
        Method::GET,
        "/consul/v1/kv/a/b",
        &token,
        Body::empty(),
    )
    .await;
    assert_eq!(elsewhere.status, StatusCode::NOT_FOUND);
}
