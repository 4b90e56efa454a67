//! What a Consul client sees of a shared store out of reach: writes that need it get 503
//! with `Retry-After` and a body naming the store; reads keep answering 200 and say their
//! copy is stale (`X-Consul-KnownLeader: false`, `X-Consul-LastContact` in ms).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use ferry_core::kv::{KvError, KvStore};
use ferry_core::store::testing::UnreachableStore;
use ferry_core::store::{Freshness, StoreError};
use serde_json::json;

use super::{call, register, ChangeIndex, Clock, ConsulSettings, NodeInfo, Registry, Reply};
use super::{routes, RegistrySettings};

struct Fixture {
    router: axum::Router,
    store: Arc<UnreachableStore>,
}

fn fixture() -> Fixture {
    let index = Arc::new(ChangeIndex::new(1));
    let store = Arc::new(UnreachableStore::default());
    let registry = Arc::new(Registry::with_index(
        RegistrySettings::default(),
        Clock::System,
        store.clone(),
        index.clone(),
    ));
    let kv = Arc::new(KvStore::in_memory(index, Clock::System, "n1"));
    let settings = ConsulSettings::new(NodeInfo {
        name: "n1".into(),
        id: "7b3a1c64-0000-4000-8000-000000000001".into(),
        address: "10.0.0.5".into(),
        datacenter: "dc1".into(),
    });
    Fixture {
        router: routes(registry, kv, settings),
        store,
    }
}

fn assert_refused(reply: &Reply, what: &str) {
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{what}");
    assert_eq!(reply.headers["retry-after"], "5", "{what}");
    let body = reply.text();
    assert!(body.contains("etcd store is unavailable"), "{what}: {body}");
    assert_eq!(body.lines().count(), 1, "{what}: one line, {body:?}");
}

#[tokio::test]
async fn agent_writes_get_503_with_retry_after_and_change_nothing() {
    let f = fixture();
    let registered = register(
        &f.router,
        json!({"Name":"orders","ID":"o1","Port":1,"Check":{"TTL":"30s","Status":"passing"}}),
    )
    .await;
    assert_eq!(registered.status, StatusCode::OK);

    f.store.set_reachable(false);
    assert_refused(
        &register(&f.router, json!({"Name":"orders","ID":"o2","Port":2})).await,
        "register",
    );
    let check = call(
        &f.router,
        Method::PUT,
        "/v1/agent/check/fail/service:o1",
        Body::empty(),
    )
    .await;
    assert_refused(&check, "check update");
    let deregister = call(
        &f.router,
        Method::PUT,
        "/v1/agent/service/deregister/o1",
        Body::empty(),
    )
    .await;
    assert_refused(&deregister, "deregister");

    let health = call(
        &f.router,
        Method::GET,
        "/v1/health/service/orders",
        Body::empty(),
    )
    .await;
    assert_eq!(health.status, StatusCode::OK);
    let entries = health.json();
    assert_eq!(entries.as_array().map(Vec::len), Some(1), "{entries}");
    assert_eq!(entries[0]["Checks"][1]["Status"], "passing");
}

#[tokio::test]
async fn reads_say_when_the_copy_is_stale() {
    let f = fixture();
    let read = |f: &Fixture| {
        let router = f.router.clone();
        async move { call(&router, Method::GET, "/v1/catalog/services", Body::empty()).await }
    };
    let current = read(&f).await;
    assert_eq!(current.headers["x-consul-knownleader"], "true");
    assert_eq!(current.headers["x-consul-lastcontact"], "0");

    f.store.set_freshness(Freshness::Shared {
        current: false,
        last_contact: Duration::from_millis(12_345),
    });
    let stale = read(&f).await;
    assert_eq!(stale.status, StatusCode::OK, "stale reads are still served");
    assert_eq!(stale.headers["x-consul-knownleader"], "false");
    assert_eq!(stale.headers["x-consul-lastcontact"], "12345");
    let kv = call(&f.router, Method::GET, "/v1/kv/?recurse", Body::empty()).await;
    assert_eq!(kv.headers["x-consul-knownleader"], "false", "KV reads too");

    f.store.set_freshness(Freshness::Shared {
        current: true,
        last_contact: Duration::from_millis(800),
    });
    let back = read(&f).await;
    assert_eq!(back.headers["x-consul-knownleader"], "true");
    assert_eq!(back.headers["x-consul-lastcontact"], "0");
}

#[tokio::test]
async fn a_kv_write_the_store_refuses_gets_503_with_retry_after() {
    #[derive(Debug, thiserror::Error)]
    #[error("no quorum")]
    struct NoQuorum;
    let error = KvError::Store(StoreError::Unavailable {
        backend: "etcd",
        source: Box::new(NoQuorum),
    });
    let response = super::ConsulError::from(error).into_response();
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, 1 << 16).await.unwrap();
    let reply = Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.to_vec(),
    };
    assert_refused(&reply, "KV write");
}
