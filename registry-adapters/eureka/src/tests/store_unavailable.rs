//! What a Eureka client sees while the shared store is out of reach: every write that needs
//! it (register, cancel, status override) gets 503 with `Retry-After` and a body naming the
//! store, and reads keep answering from this node's copy.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use ferry_core::registry::Registry;
use ferry_core::store::testing::UnreachableStore;
use ferry_core::{Clock, RegistrySettings};
use ferry_http::test_client::{call, Reply};

use super::{get_json, register_json, routes, EurekaSettings, FetchCounts};

fn assert_refused(reply: &Reply, what: &str) {
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{what}");
    assert_eq!(reply.headers["retry-after"], "5", "{what}");
    let body = String::from_utf8_lossy(&reply.body);
    assert!(body.contains("etcd store is unavailable"), "{what}: {body}");
    assert_eq!(body.lines().count(), 1, "{what}: one line, {body:?}");
}

#[tokio::test]
async fn writes_get_503_with_retry_after_and_reads_go_on() {
    let store = Arc::new(UnreachableStore::default());
    let registry = Arc::new(Registry::new(
        RegistrySettings::default(),
        Clock::System,
        store.clone(),
    ));
    let router = routes(
        registry,
        EurekaSettings::default(),
        Arc::new(FetchCounts::default()),
    );
    assert_eq!(
        register_json(&router, "/eureka/", "orders", "a")
            .await
            .status,
        StatusCode::NO_CONTENT
    );

    store.set_reachable(false);
    assert_refused(
        &register_json(&router, "/eureka/", "orders", "b").await,
        "register",
    );
    let override_status = call(
        &router,
        Method::PUT,
        "/eureka/apps/ORDERS/a/status?value=OUT_OF_SERVICE",
        &[],
        Vec::new(),
    )
    .await;
    assert_refused(&override_status, "status override");
    let cancel = call(
        &router,
        Method::DELETE,
        "/eureka/apps/ORDERS/a",
        &[],
        Vec::new(),
    )
    .await;
    assert_refused(&cancel, "cancel");

    let read = get_json(&router, "/eureka/apps/ORDERS").await;
    assert_eq!(read.status, StatusCode::OK);
    let instances = read.json()["application"]["instance"].clone();
    assert_eq!(instances.as_array().map(Vec::len), Some(1), "{instances}");
    assert_eq!(
        instances[0]["status"], "UP",
        "the refused override changed nothing"
    );

    store.set_reachable(true);
    assert_eq!(
        register_json(&router, "/eureka/", "orders", "b")
            .await
            .status,
        StatusCode::NO_CONTENT,
        "the same write succeeds once the store is back"
    );
}
