//! ACLs as Consul applies them with `default_policy = "deny"`: the configured token sees
//! and does everything; a request without a token is the anonymous token's, whose list
//! reads come back empty (at the real index, still blocking) and whose named reads and
//! writes get 403; an unknown token gets 403 "ACL not found".

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use super::{call, call_with, fixture_with, ConsulIndex, Fixture};

const TOKEN: (&str, &str) = ("x-consul-token", "s3cret");

/// A service with a TTL check, a KV key and a session, all written with the token.
async fn populated() -> Fixture {
    let f = fixture_with(Some("s3cret"));
    let writes = [
        (
            "/v1/agent/service/register",
            json!({"ID":"orders-1","Name":"orders","Tags":["v1"],"Port":8080,"Check":{"TTL":"30s"}})
                .to_string(),
        ),
        ("/v1/kv/config/orders/data", "x: 1".to_owned()),
        ("/v1/session/create", "{}".to_owned()),
    ];
    for (uri, body) in writes {
        let reply = call_with(&f.router, Method::PUT, uri, &[TOKEN], body).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.text());
    }
    f
}

async fn anonymous(f: &Fixture, method: Method, uri: &str) -> ferry_http::test_client::Reply {
    call(&f.router, method, uri, Body::empty()).await
}

#[tokio::test]
async fn anonymous_list_reads_are_empty_at_the_real_index() {
    let f = populated().await;
    for (uri, empty) in [
        ("/v1/catalog/services", json!({})),
        ("/v1/catalog/service/orders", json!([])),
        ("/v1/catalog/nodes", json!([])),
        ("/v1/catalog/node/n1", Value::Null),
        ("/v1/health/service/orders?passing=false", json!([])),
        ("/v1/health/checks/orders", json!([])),
        ("/v1/health/state/any", json!([])),
        ("/v1/health/node/n1", json!([])),
        ("/v1/agent/services", json!({})),
        ("/v1/agent/checks", json!({})),
        ("/v1/agent/members", json!([])),
        ("/v1/session/list", json!([])),
        ("/v1/session/node/n1", json!([])),
        ("/v1/kv/?keys", json!([])),
    ] {
        let hidden = anonymous(&f, Method::GET, uri).await;
        assert_eq!(hidden.status, StatusCode::OK, "{uri}: {}", hidden.text());
        assert_eq!(hidden.json(), empty, "{uri}");
        // Consul masks the filtered-by-ACLs flag for a caller without a token.
        assert!(!hidden
            .headers
            .contains_key("x-consul-results-filtered-by-acls"));
        let shown = call_with(&f.router, Method::GET, uri, &[TOKEN], Body::empty()).await;
        assert_eq!(shown.status, StatusCode::OK, "{uri}");
        assert_ne!(shown.json(), empty, "{uri}: the token sees it");
        if shown.headers.contains_key("x-consul-index") {
            assert_eq!(hidden.index(), shown.index(), "{uri}");
        }
    }
    // KV listings with nothing visible are answered as with nothing stored.
    for uri in ["/v1/kv/config/?recurse", "/v1/kv/config/?keys"] {
        let hidden = anonymous(&f, Method::GET, uri).await;
        assert_eq!(hidden.status, StatusCode::NOT_FOUND, "{uri}");
        assert!(hidden.index() > 1, "{uri}");
    }
    // No ACL at all on these.
    assert_eq!(
        anonymous(&f, Method::GET, "/v1/status/leader").await.json(),
        json!("10.0.0.5:8300")
    );
    assert_eq!(
        anonymous(&f, Method::GET, "/v1/catalog/datacenters")
            .await
            .json(),
        json!(["dc1"])
    );
}

#[tokio::test]
async fn anonymous_named_reads_and_every_write_are_refused_and_change_nothing() {
    let f = populated().await;
    for uri in [
        "/v1/kv/config/orders/data",
        "/v1/agent/self",
        "/v1/agent/service/orders-1",
        "/v1/agent/health/service/id/orders-1",
        "/v1/agent/health/service/name/orders",
    ] {
        let refused = anonymous(&f, Method::GET, uri).await;
        assert_eq!(
            (refused.status, refused.text().as_str()),
            (StatusCode::FORBIDDEN, "Permission denied"),
            "{uri}"
        );
    }
    // Consul looks an agent service up before it checks the ACL.
    assert_eq!(
        anonymous(&f, Method::GET, "/v1/agent/service/nope")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let index = f.registry.index();
    for (method, uri) in [
        (Method::PUT, "/v1/agent/service/register"),
        (Method::PUT, "/v1/agent/service/deregister/orders-1"),
        (
            Method::PUT,
            "/v1/agent/service/maintenance/orders-1?enable=true",
        ),
        (Method::PUT, "/v1/agent/check/pass/service:orders-1"),
        (Method::PUT, "/v1/kv/config/orders/data"),
        (Method::DELETE, "/v1/kv/config/?recurse"),
        (Method::PUT, "/v1/session/create"),
    ] {
        let refused = anonymous(&f, method.clone(), uri).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{method} {uri}");
    }
    assert_eq!(f.registry.index(), index, "a refused write changed nothing");
    assert!(f.registry.agent_instance("orders-1").is_some());
}

#[tokio::test]
async fn an_unknown_token_is_refused_everywhere_but_the_open_endpoints() {
    let f = populated().await;
    for uri in ["/v1/catalog/services", "/v1/kv/config/?recurse"] {
        let refused = call_with(
            &f.router,
            Method::GET,
            uri,
            &[("x-consul-token", "guess")],
            Body::empty(),
        )
        .await;
        assert_eq!(
            (refused.status, refused.text().as_str()),
            (StatusCode::FORBIDDEN, "ACL not found"),
            "{uri}"
        );
    }
    let leader = call(&f.router, Method::GET, "/v1/status/leader?token=guess", "").await;
    assert_eq!(leader.status, StatusCode::OK);
}

#[tokio::test]
async fn an_anonymous_blocking_read_still_blocks_and_wakes_on_a_change() {
    let f = populated().await;
    let index = anonymous(&f, Method::GET, "/v1/catalog/services")
        .await
        .index();
    let router = f.router.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let body = json!({"ID":"billing-1","Name":"billing","Port":9000}).to_string();
        call_with(
            &router,
            Method::PUT,
            "/v1/agent/service/register",
            &[TOKEN],
            body,
        )
        .await
    });
    let started = tokio::time::Instant::now();
    let uri = format!("/v1/catalog/services?index={index}&wait=5s");
    let woken = anonymous(&f, Method::GET, &uri).await;
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "it blocked"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the change woke it"
    );
    assert!(woken.index() > index);
    assert_eq!(woken.json(), json!({}));
    assert_eq!(writer.await.unwrap().status, StatusCode::OK);
}
