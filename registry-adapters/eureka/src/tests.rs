//! Handler tests over the memory store with no socket, and codec round trips.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::Router;
use proptest::prelude::*;
use serde_json::{json, Value};

use ferry_http::test_client::{call, Reply};

use super::decode::{self, Origin};
use super::hashcode::{apps_hashcode, Document};
use super::spelling::DataCenterKind;
use super::{json as json_codec, routes, xml, EurekaSettings, FetchCounts};
use ferry_core::model::*;
use ferry_core::registry::{RegisteredInstance, Registry};

mod delta_client;
mod store_unavailable;

fn app() -> (Router, Arc<Registry>) {
    let (router, registry, _) = counted_app();
    (router, registry)
}

/// `app()` with the fetch counts its router adds to.
fn counted_app() -> (Router, Arc<Registry>, Arc<FetchCounts>) {
    let registry = Arc::new(Registry::default());
    let settings = EurekaSettings {
        max_body_bytes: 4096,
        ..EurekaSettings::default()
    };
    let fetches = Arc::new(FetchCounts::default());
    (
        routes(registry.clone(), settings, fetches.clone()),
        registry,
        fetches,
    )
}

fn registration(app: &str, id: &str) -> Value {
    json!({"instance": {
        "instanceId": id, "hostName": "10.1.2.3", "app": app, "ipAddr": "10.1.2.3",
        "status": "UP", "overriddenStatus": "UNKNOWN",
        "port": {"$": 8080, "@enabled": true}, "securePort": {"$": "443", "@enabled": "false"},
        "countryId": 1,
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90},
        "metadata": {"management.port": "8080"},
        "vipAddress": app.to_lowercase(), "secureVipAddress": app.to_lowercase(),
        "lastDirtyTimestamp": "1700000000000"
    }})
}

async fn register_json(router: &Router, prefix: &str, app: &str, id: &str) -> Reply {
    call(
        router,
        Method::POST,
        &format!("{prefix}apps/{app}"),
        &[("content-type", "application/json")],
        registration(app, id).to_string().into_bytes(),
    )
    .await
}

async fn get_json(router: &Router, uri: &str) -> Reply {
    call(
        router,
        Method::GET,
        uri,
        &[("accept", "application/json")],
        Vec::new(),
    )
    .await
}

#[tokio::test]
async fn register_answers_204_and_the_instance_is_served_under_both_prefixes() {
    let (router, _) = app();
    let reply = register_json(&router, "/eureka/", "orders", "10.1.2.3:orders:8080").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    assert!(reply.body.is_empty());
    for uri in [
        "/eureka/apps",
        "/eureka/apps/",
        "/eureka/v2/apps",
        "/eureka/v2/apps/",
    ] {
        let reply = get_json(&router, uri).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}");
        let document = reply.json();
        assert_eq!(document["applications"]["versions__delta"], "1");
        assert_eq!(document["applications"]["apps__hashcode"], "UP_1_");
        let instance = &document["applications"]["application"][0]["instance"][0];
        assert_eq!(instance["instanceId"], "10.1.2.3:orders:8080");
        assert_eq!(instance["app"], "ORDERS");
        assert_eq!(instance["port"], json!({"$": 8080, "@enabled": "true"}));
        assert_eq!(
            instance["securePort"],
            json!({"$": 443, "@enabled": "false"})
        );
        assert_eq!(instance["isCoordinatingDiscoveryServer"], "false");
        assert_eq!(instance["lastDirtyTimestamp"], "1700000000000");
    }
}

#[tokio::test]
async fn instance_json_has_exactly_the_spec_keys_in_order() {
    let (router, _) = app();
    register_json(&router, "/eureka/", "orders", "i-1").await;
    let reply = get_json(&router, "/eureka/apps/ORDERS/i-1").await;
    let text = reply.text();
    let document: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
    let instance = document["instance"].as_object().unwrap();
    let keys: Vec<&str> = instance.keys().map(String::as_str).collect();
    let expected = [
        "instanceId",
        "hostName",
        "app",
        "ipAddr",
        "status",
        "overriddenStatus",
        "port",
        "securePort",
        "countryId",
        "dataCenterInfo",
        "leaseInfo",
        "metadata",
        "vipAddress",
        "secureVipAddress",
        "isCoordinatingDiscoveryServer",
        "lastUpdatedTimestamp",
        "lastDirtyTimestamp",
        "actionType",
    ];
    let mut sorted_expected = expected.to_vec();
    sorted_expected.sort_unstable();
    let mut sorted_keys = keys.clone();
    sorted_keys.sort_unstable();
    assert_eq!(sorted_keys, sorted_expected);
    // serde_json's map is sorted, so check the order on the raw text.
    let positions: Vec<usize> = expected
        .iter()
        .map(|key| text.find(&format!("\"{key}\":")).unwrap())
        .collect();
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "{text}");
}

#[tokio::test]
async fn xml_is_the_default_format_with_the_attributes_py_eureka_client_needs() {
    let (router, _) = app();
    register_json(&router, "/eureka/", "orders", "i-1").await;
    for accept in [None, Some("*/*"), Some("application/xml")] {
        let headers: Vec<(&str, &str)> =
            accept.map(|value| ("accept", value)).into_iter().collect();
        let reply = call(&router, Method::GET, "/eureka/apps/", &headers, Vec::new()).await;
        assert_eq!(reply.headers["content-type"], "application/xml");
        let text = reply.text();
        assert!(text.starts_with("<applications><versions__delta>1</versions__delta><apps__hashcode>UP_1_</apps__hashcode>"));
        assert!(text.contains("<overriddenstatus>UNKNOWN</overriddenstatus>"));
        assert!(text.contains("<port enabled=\"true\">8080</port>"));
        assert!(text.contains("<dataCenterInfo class=\"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo\"><name>MyOwn</name>"));
        assert!(text.contains("<metadata><management.port>8080</management.port></metadata>"));
    }
}

#[tokio::test]
async fn xml_registration_is_accepted() {
    let (router, registry) = app();
    let body = r#"<instance><instanceId>x-1</instanceId><hostName>h</hostName><app>BILLING</app>
        <ipAddr>10.0.0.9</ipAddr><status>STARTING</status><overriddenstatus>UNKNOWN</overriddenstatus>
        <port enabled="true">9000</port><securePort enabled="false">9443</securePort>
        <dataCenterInfo class="com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"><name>MyOwn</name></dataCenterInfo>
        <metadata><my__key>v</my__key><dollar_-sign>d</dollar_-sign></metadata></instance>"#;
    let reply = call(
        &router,
        Method::POST,
        "/eureka/v2/apps/billing",
        &[("content-type", "text/xml; charset=utf-8")],
        body.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    let stored = registry.instance("BILLING", "x-1").unwrap().instance;
    assert_eq!(stored.status, Status::Starting);
    assert_eq!(stored.port.number, 9000);
    assert_eq!(stored.metadata["my_key"], "v");
    assert_eq!(stored.metadata["dollar$sign"], "d");
}

#[tokio::test]
async fn gzip_is_sent_only_when_accepted() {
    let (router, _) = app();
    register_json(&router, "/eureka/", "orders", "i-1").await;
    let plain = get_json(&router, "/eureka/apps/").await;
    assert!(plain.headers.get("content-encoding").is_none());
    let gzipped = call(
        &router,
        Method::GET,
        "/eureka/apps/delta",
        &[
            ("accept", "application/json"),
            ("accept-encoding", "gzip, deflate"),
        ],
        Vec::new(),
    )
    .await;
    assert_eq!(gzipped.headers["content-encoding"], "gzip");
    let mut inflated = String::new();
    flate2::read::GzDecoder::new(gzipped.body.as_slice())
        .read_to_string(&mut inflated)
        .unwrap();
    let delta: Value = serde_json::from_str(&inflated).unwrap();
    assert_eq!(
        delta["applications"]["application"][0]["instance"][0]["actionType"],
        "ADDED"
    );
}

#[tokio::test]
async fn gzip_request_bodies_are_inflated() {
    let (router, registry) = app();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(registration("orders", "gz-1").to_string().as_bytes())
        .unwrap();
    let reply = call(
        &router,
        Method::POST,
        "/eureka/apps/ORDERS",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        encoder.finish().unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    assert!(registry.instance("ORDERS", "gz-1").is_some());
}

#[tokio::test]
async fn the_delta_carries_each_change_once_and_the_full_registry_hashcode() {
    let (router, _) = app();
    register_json(&router, "/eureka/", "orders", "a").await;
    register_json(&router, "/eureka/", "orders", "b").await;
    register_json(&router, "/eureka/", "billing", "c").await;
    let before = get_json(&router, "/eureka/apps/delta").await.json();
    call(
        &router,
        Method::PUT,
        "/eureka/apps/ORDERS/a/status?value=OUT_OF_SERVICE",
        &[],
        Vec::new(),
    )
    .await;
    call(
        &router,
        Method::DELETE,
        "/eureka/apps/BILLING/c",
        &[],
        Vec::new(),
    )
    .await;
    let delta = get_json(&router, "/eureka/apps/delta").await.json();
    let applications = &delta["applications"];
    assert_ne!(
        applications["versions__delta"],
        before["applications"]["versions__delta"]
    );
    assert_eq!(applications["apps__hashcode"], "OUT_OF_SERVICE_1_UP_1_");
    let mut seen = BTreeMap::new();
    for app in applications["application"].as_array().unwrap() {
        for instance in app["instance"].as_array().unwrap() {
            let previous = seen.insert(
                instance["instanceId"].as_str().unwrap().to_owned(),
                instance["actionType"].clone(),
            );
            assert!(previous.is_none(), "one entry per instance");
        }
    }
    assert_eq!(seen["a"], "MODIFIED");
    assert_eq!(seen["b"], "ADDED");
    assert_eq!(seen["c"], "DELETED");
}

#[tokio::test]
async fn every_get_of_the_registry_or_the_delta_is_counted_by_kind() {
    let (router, _, fetches) = counted_app();
    register_json(&router, "/eureka/", "orders", "a").await;
    let get = |uri: &'static str, headers: &'static [(&'static str, &'static str)]| {
        call(&router, Method::GET, uri, headers, Vec::new())
    };
    // Both prefixes, with and without the slash, JSON, XML and gzip; the second GET of a
    // document at the same index is a cache hit and counts all the same.
    for (uri, headers) in [
        ("/eureka/apps", &[("accept", "application/json")][..]),
        ("/eureka/apps/", &[("accept", "application/json")][..]),
        ("/eureka/apps/", &[("accept", "application/json")][..]),
        ("/eureka/v2/apps/", &[][..]),
        ("/eureka/v2/apps", &[("accept-encoding", "gzip")][..]),
    ] {
        assert_eq!(get(uri, headers).await.status, StatusCode::OK, "{uri}");
    }
    for (uri, headers) in [
        ("/eureka/apps/delta", &[("accept", "application/json")][..]),
        ("/eureka/apps/delta", &[("accept", "application/json")][..]),
        ("/eureka/v2/apps/delta", &[("accept-encoding", "gzip")][..]),
    ] {
        assert_eq!(get(uri, headers).await.status, StatusCode::OK, "{uri}");
    }
    assert_eq!((fetches.full(), fetches.delta()), (5, 3));

    // Other reads, a HEAD and writes are no registry fetch.
    for uri in [
        "/eureka/apps/ORDERS",
        "/eureka/apps/ORDERS/a",
        "/eureka/instances/a",
        "/eureka/vips/orders",
        "/eureka/svips/orders",
    ] {
        assert_eq!(get(uri, &[]).await.status, StatusCode::OK, "{uri}");
    }
    let head = call(&router, Method::HEAD, "/eureka/apps/", &[], Vec::new()).await;
    assert_eq!(head.status, StatusCode::OK);
    register_json(&router, "/eureka/", "orders", "b").await;
    assert_eq!((fetches.full(), fetches.delta()), (5, 3));
}

#[tokio::test]
async fn renew_answers_200_404_and_409_as_eureka_does() {
    let (router, _) = app();
    register_json(&router, "/eureka/", "orders", "a").await;
    let put = |uri: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let router = router.clone();
        async move { call(&router, Method::PUT, uri, headers, Vec::new()).await }
    };
    assert_eq!(
        put(
            "/eureka/apps/ORDERS/a?status=UP&lastDirtyTimestamp=1700000000000",
            &[]
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        put("/eureka/apps/orders/a", &[]).await.status,
        StatusCode::OK,
        "app names are case-insensitive"
    );
    // Issue 10, defect 9: a 404 with a body breaks the Java clients' re-registration.
    let unknown = put("/eureka/apps/ORDERS/unknown", &[]).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.body.is_empty(), "{}", unknown.text());
    assert!(unknown.headers.get("content-type").is_none());
    assert_eq!(
        put(
            "/eureka/apps/ORDERS/a?lastDirtyTimestamp=1700000000001",
            &[]
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        put(
            "/eureka/apps/ORDERS/a?lastDirtyTimestamp=1699999999999",
            &[]
        )
        .await
        .status,
        StatusCode::OK
    );
    let conflict = put(
        "/eureka/apps/ORDERS/a?lastDirtyTimestamp=1699999999999",
        &[
            ("x-netflix-discovery-replication", "true"),
            ("accept", "application/json"),
        ],
    )
    .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    assert_eq!(conflict.json()["instance"]["instanceId"], "a");
    assert_eq!(
        put("/eureka/apps/ORDERS/a?lastDirtyTimestamp=soon", &[])
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn overrides_and_metadata_follow_the_spec() {
    let (router, registry) = app();
    register_json(&router, "/eureka/", "orders", "a").await;
    let status = |uri: &'static str, method: Method| {
        let router = router.clone();
        async move { call(&router, method, uri, &[], Vec::new()).await.status }
    };
    assert_eq!(
        status("/eureka/apps/ORDERS/a/status", Method::PUT).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        status("/eureka/apps/ORDERS/a/status?value=SLEEPY", Method::PUT).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        status("/eureka/apps/ORDERS/zz/status?value=DOWN", Method::PUT).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(
            "/eureka/apps/ORDERS/a/status?value=out_of_service",
            Method::PUT
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(
        registry.instance("ORDERS", "a").unwrap().instance.status,
        Status::OutOfService
    );
    assert_eq!(
        status("/eureka/apps/ORDERS/a/status?value=BAD", Method::DELETE).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        status("/eureka/apps/ORDERS/a/status?value=UP", Method::DELETE).await,
        StatusCode::OK
    );
    assert_eq!(
        registry.instance("ORDERS", "a").unwrap().instance.status,
        Status::Up
    );
    assert_eq!(
        status(
            "/eureka/apps/ORDERS/a/metadata?zone=b&zone=c&team=x",
            Method::PUT
        )
        .await,
        StatusCode::OK
    );
    let metadata = registry
        .instance("ORDERS", "a")
        .unwrap()
        .instance
        .metadata
        .clone();
    assert_eq!(metadata["zone"], "b", "the first value of a repeated key");
    assert_eq!(metadata["team"], "x");
    assert_eq!(metadata["management.port"], "8080");
    assert_eq!(
        status("/eureka/apps/ORDERS/zz/metadata?a=b", Method::PUT).await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn reads_of_missing_things_are_404_and_vips_are_filtered() {
    let (router, _) = app();
    register_json(&router, "/eureka/", "orders", "10.0.0.1:orders:1").await;
    assert_eq!(
        get_json(&router, "/eureka/apps/NOPE").await.status,
        StatusCode::NOT_FOUND
    );
    let missing = get_json(&router, "/eureka/apps/ORDERS/nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.is_empty(), "{}", missing.text());
    assert_eq!(
        get_json(&router, "/eureka/instances/nope").await.status,
        StatusCode::NOT_FOUND
    );
    let by_id = get_json(&router, "/eureka/instances/10.0.0.1%3Aorders%3A1").await;
    assert_eq!(
        by_id.status,
        StatusCode::OK,
        "percent-encoded ids are decoded"
    );
    let vip = get_json(&router, "/eureka/vips/orders").await.json();
    assert_eq!(vip["applications"]["versions__delta"], "-1");
    assert_eq!(vip["applications"]["apps__hashcode"], "UP_1_");
    let none = get_json(&router, "/eureka/svips/billing").await.json();
    assert_eq!(none["applications"]["application"], json!([]));
    assert_eq!(none["applications"]["apps__hashcode"], "");
}

#[tokio::test]
async fn bad_registrations_get_their_status_and_change_nothing() {
    let (router, registry) = app();
    let good = registration("orders", "a");
    let mut missing_host = good.clone();
    missing_host["instance"]
        .as_object_mut()
        .unwrap()
        .remove("hostName");
    let mut unknown_center = good.clone();
    unknown_center["instance"]["dataCenterInfo"]["name"] = json!("Moon");
    let mut wrong_type = good.clone();
    wrong_type["instance"]["port"]["$"] = json!("eighty");
    let mut no_center = good.clone();
    no_center["instance"]
        .as_object_mut()
        .unwrap()
        .remove("dataCenterInfo");
    let cases: Vec<(&str, &str, Vec<u8>, StatusCode)> = vec![
        (
            "/eureka/apps/ORDERS",
            "application/json",
            b"{not json".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/eureka/apps/ORDERS",
            "application/json",
            b"{\"applications\":{}}".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/eureka/apps/ORDERS",
            "application/json",
            missing_host.to_string().into_bytes(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/eureka/apps/ORDERS",
            "application/json",
            unknown_center.to_string().into_bytes(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/eureka/apps/ORDERS",
            "application/json",
            wrong_type.to_string().into_bytes(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/eureka/apps/ORDERS",
            "application/json",
            no_center.to_string().into_bytes(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/eureka/apps/BILLING",
            "application/json",
            good.to_string().into_bytes(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/eureka/apps/ORDERS",
            "text/plain",
            good.to_string().into_bytes(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "/eureka/apps/ORDERS",
            "application/xml",
            b"<instance><hostName>".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/eureka/apps/ORDERS",
            "application/xml",
            b"<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><instance>&e;</instance>"
                .to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/eureka/apps/ORDERS",
            "application/json",
            vec![b' '; 5000],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (uri, content_type, body, expected) in cases {
        let index = registry.index();
        let reply = call(
            &router,
            Method::POST,
            uri,
            &[("content-type", content_type)],
            body,
        )
        .await;
        assert_eq!(
            reply.status,
            expected,
            "{uri} {content_type}: {}",
            reply.text()
        );
        assert_eq!(registry.index(), index, "nothing changed");
        assert_eq!(registry.instance_count(), 0);
    }
    let deep = "<a>".repeat(100) + &"</a>".repeat(100);
    let reply = call(
        &router,
        Method::POST,
        "/eureka/apps/ORDERS",
        &[("content-type", "application/xml")],
        deep.into_bytes(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn wrong_methods_are_405_and_unknown_paths_404() {
    let (router, _) = app();
    assert_eq!(
        call(&router, Method::DELETE, "/eureka/apps", &[], Vec::new())
            .await
            .status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        call(&router, Method::POST, "/eureka/apps/delta", &[], Vec::new())
            .await
            .status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        call(
            &router,
            Method::GET,
            "/eureka/nothing/here",
            &[],
            Vec::new()
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_cached_registry_document_never_outlives_a_write() {
    let (router, _) = app();
    register_json(&router, "/eureka/", "orders", "a").await;
    let first = get_json(&router, "/eureka/apps").await.json();
    assert_eq!(first["applications"]["apps__hashcode"], "UP_1_");
    register_json(&router, "/eureka/", "orders", "b").await;
    let second = get_json(&router, "/eureka/apps").await.json();
    assert_eq!(second["applications"]["apps__hashcode"], "UP_2_");
}

// === codec round trips ===

fn text_strategy() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 .:/_<>&\"'-]{1,16}"
}

fn metadata_key() -> impl Strategy<Value = String> {
    "[a-zA-Z][a-zA-Z0-9._-]{0,10}"
}

fn status_strategy() -> impl Strategy<Value = Status> {
    proptest::sample::select(Status::ALL.to_vec())
}

prop_compose! {
    fn instance_strategy()(
        id in text_strategy(),
        app in "[A-Z][A-Z0-9-]{0,8}",
        host in text_strategy(),
        ip in "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
        status in status_strategy(),
        overridden in status_strategy(),
        port in 1u32..65536, port_on in any::<bool>(),
        secure_port in 1u32..65536, secure_on in any::<bool>(),
        lease in (1u32..1000, 1u32..1000, 0i64..i64::MAX / 2, 0i64..i64::MAX / 2, 0i64..i64::MAX / 2),
        metadata in proptest::collection::btree_map(metadata_key(), text_strategy(), 0..4),
        amazon in any::<bool>(),
        links in proptest::option::of(text_strategy()),
        vip in proptest::option::of("[a-z,]{1,12}"),
        timestamps in (0i64..i64::MAX / 2, 0i64..i64::MAX / 2),
        action in proptest::sample::select(vec![Action::Added, Action::Modified, Action::Deleted]),
        group in proptest::option::of(text_strategy()),
    ) -> Instance {
        let mut instance = Instance::new(&app, &id, &host, &ip, port);
        instance.status = status;
        instance.overridden_status = overridden;
        instance.port.enabled = port_on;
        instance.secure_port = Port { number: secure_port, enabled: secure_on };
        instance.lease = Lease {
            renewal_interval_secs: lease.0, duration_secs: lease.1,
            registration: lease.2, last_renewal: lease.3, eviction: lease.4, service_up: lease.2,
        };
        instance.metadata = metadata.clone();
        if amazon {
            instance.data_center = DataCenter { name: DataCenterKind::Amazon.model_name(), metadata };
        }
        instance.links.home_page = links.clone();
        instance.links.health_check = links;
        instance.virtual_address = vip.clone();
        instance.secure_virtual_address = vip;
        instance.last_updated = timestamps.0;
        instance.last_dirty = timestamps.1;
        instance.action = action;
        instance.app_group = group.clone();
        instance.scaling_group = group;
        instance
    }
}

fn listing(instances: &[Instance]) -> Vec<(String, Vec<RegisteredInstance>)> {
    let mut apps: BTreeMap<String, Vec<RegisteredInstance>> = BTreeMap::new();
    for instance in instances {
        apps.entry(instance.app.clone())
            .or_default()
            .push(RegisteredInstance {
                last_renewal: instance.lease.last_renewal,
                instance: Arc::new(instance.clone()),
            });
    }
    apps.into_iter().collect()
}

fn counts(instances: &[Instance]) -> StatusCounts {
    let mut counts = StatusCounts::default();
    instances
        .iter()
        .for_each(|instance| counts.add(instance.status));
    counts
}

/// How many ways `broken_json` and `broken_xml` know to break a valid registration.
const BROKEN_REGISTRATIONS: usize = 10;

/// A valid JSON registration of `ORDERS`/`fuzz-1` broken by mutation `which`; `cut` picks
/// where a truncated document ends.
fn broken_json(which: usize, cut: prop::sample::Index) -> Vec<u8> {
    let mut body = registration("ORDERS", "fuzz-1");
    let instance = body["instance"].as_object_mut().unwrap();
    match which {
        0 => drop(instance.remove("hostName")),
        1 => drop(instance.remove("ipAddr")),
        2 => drop(instance.remove("app")),
        3 => drop(instance.remove("dataCenterInfo")),
        4 => instance["dataCenterInfo"] = json!({"@class": "x"}),
        5 => instance["hostName"] = json!({"nested": "object"}),
        6 => instance["port"]["$"] = json!("80a"),
        7 => instance["leaseInfo"]["durationInSecs"] = json!([90]),
        8 => instance["metadata"] = json!(5),
        _ => {
            let text = body.to_string().into_bytes();
            // Any proper prefix of an object is unfinished JSON.
            return text[..1 + cut.index(text.len() - 1)].to_vec();
        }
    }
    body.to_string().into_bytes()
}

/// The XML form of `broken_json`'s mutations (and a DTD where JSON has none to offer).
fn broken_xml(which: usize, cut: prop::sample::Index) -> Vec<u8> {
    let mut elements: Vec<(&str, String)> = vec![
        ("instanceId", "fuzz-1".into()),
        ("hostName", "10.1.2.3".into()),
        ("app", "ORDERS".into()),
        ("ipAddr", "10.1.2.3".into()),
        ("status", "UP".into()),
        ("port enabled=\"true\"", "8080".into()),
        (
            "dataCenterInfo class=\"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo\"",
            "<name>MyOwn</name>".into(),
        ),
        ("leaseInfo", "<durationInSecs>90</durationInSecs>".into()),
        ("metadata", "<zone>a</zone>".into()),
    ];
    let mut set = |name: &str, inner: &str| {
        let element = elements
            .iter_mut()
            .find(|(tag, _)| tag.split(' ').next() == Some(name))
            .unwrap();
        element.1 = inner.to_owned();
    };
    let mut prologue = "";
    match which {
        0 => elements.retain(|(tag, _)| *tag != "hostName"),
        1 => elements.retain(|(tag, _)| *tag != "ipAddr"),
        2 => elements.retain(|(tag, _)| *tag != "app"),
        3 => elements.retain(|(tag, _)| !tag.starts_with("dataCenterInfo")),
        4 => set("dataCenterInfo", ""),
        5 => set("hostName", "<a>b</a>"),
        6 => set("port", "80a"),
        7 => set("leaseInfo", "<durationInSecs>ninety</durationInSecs>"),
        8 => prologue = "<!DOCTYPE instance [<!ENTITY x \"y\">]>",
        _ => {}
    }
    let mut text = format!("{prologue}<instance>");
    for (tag, inner) in &elements {
        let name = tag.split(' ').next().unwrap();
        text.push_str(&format!("<{tag}>{inner}</{name}>"));
    }
    text.push_str("</instance>");
    let text = text.into_bytes();
    if which >= 9 {
        // Any proper prefix leaves the root element unclosed.
        return text[..1 + cut.index(text.len() - 1)].to_vec();
    }
    text
}

proptest! {
    #[test]
    fn instances_round_trip_through_json_and_xml(instance in instance_strategy()) {
        let json_bytes = json_codec::instance_document(&instance, instance.lease.last_renewal);
        let tree: Value = serde_json::from_slice(&json_bytes).unwrap();
        prop_assert_eq!(&decode::instance_document(&tree, Origin::RegistryDocument, 0).unwrap(), &instance);

        let xml_bytes = xml::instance_document(&instance, instance.lease.last_renewal);
        let tree = xml::parse(&xml_bytes).unwrap();
        prop_assert_eq!(&decode::instance_document(&tree, Origin::RegistryDocument, 0).unwrap(), &instance);
    }

    #[test]
    fn applications_round_trip_through_json_and_xml(instances in proptest::collection::vec(instance_strategy(), 0..6)) {
        let apps = listing(&instances);
        let document = Document { versions_delta: "7", hashcode: apps_hashcode(&counts(&instances)), apps: &apps };
        let expected: Vec<(String, Vec<Instance>)> = apps
            .iter()
            .map(|(name, entries)| (name.clone(), entries.iter().map(|entry| (*entry.instance).clone()).collect()))
            .collect();
        for (bytes, is_json) in [(json_codec::applications(&document), true), (xml::applications(&document), false)] {
            let tree: Value = if is_json { serde_json::from_slice(&bytes).unwrap() } else { xml::parse(&bytes).unwrap() };
            let decoded = decode::applications_document(&tree, 0).unwrap();
            prop_assert_eq!(&decoded.versions_delta, "7");
            prop_assert_eq!(&decoded.hashcode, &document.hashcode);
            prop_assert_eq!(&decoded.apps, &expected);
        }
    }

    /// A valid registration, JSON or XML, broken in one way the protocol defines as bad
    /// input, gets 400 and leaves the registry as it was (random bytes almost never get past
    /// the parsers; these reach the decoders).
    #[test]
    fn a_broken_registration_is_400_and_changes_nothing(
        xml_form in any::<bool>(),
        mutation in 0..BROKEN_REGISTRATIONS,
        cut in any::<prop::sample::Index>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(async {
            let (router, registry) = app();
            let kept = register_json(&router, "/eureka/", "orders", "kept-1").await;
            assert_eq!(kept.status, StatusCode::NO_CONTENT);
            let index = registry.index();
            let (content_type, body) = if xml_form {
                ("application/xml", broken_xml(mutation, cut))
            } else {
                ("application/json", broken_json(mutation, cut))
            };
            let reply = call(&router, Method::POST, "/eureka/apps/ORDERS", &[("content-type", content_type)], body.clone()).await;
            let shown = String::from_utf8_lossy(&body).into_owned();
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{shown}\n{}", reply.text());
            assert_eq!(registry.index(), index, "{shown}");
            assert!(registry.instance("ORDERS", "fuzz-1").is_none(), "{shown}");
            assert!(registry.instance("ORDERS", "kept-1").is_some());
        });
    }

    #[test]
    fn arbitrary_json_trees_never_panic_the_decoder(
        host in proptest::option::of(any::<i64>()),
        port in proptest::option::of(".{0,8}"),
        nested in any::<bool>(),
    ) {
        let mut body = registration("orders", "a");
        if let Some(host) = host { body["instance"]["hostName"] = json!(host); }
        if let Some(port) = port { body["instance"]["port"]["$"] = json!(port); }
        if nested { body["instance"]["metadata"]["x"] = json!({"deep": [1, 2]}); }
        let _ = decode::instance_document(&body, Origin::Registration, 0);
    }
}

/// Issue 10, defect 4: a control character in one registration's metadata must not make
/// the registry unreadable to every XML client.
#[tokio::test]
async fn control_characters_never_make_the_xml_documents_unreadable() {
    let (router, _) = app();
    let mut document = registration("ORDERS", "a");
    document["instance"]["metadata"]["k"] = json!("a\u{1}b\u{1F}c\u{FFFE}");
    let registered = call(
        &router,
        Method::POST,
        "/eureka/apps/ORDERS",
        &[("content-type", "application/json")],
        document.to_string().into_bytes(),
    )
    .await;
    assert_eq!(registered.status, StatusCode::NO_CONTENT);
    for uri in [
        "/eureka/apps/",
        "/eureka/apps/ORDERS",
        "/eureka/apps/delta",
        "/eureka/apps/ORDERS/a",
    ] {
        let reply = call(
            &router,
            Method::GET,
            uri,
            &[("accept", "application/xml")],
            Vec::new(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}");
        // A strict XML 1.0 reader, as the XML clients use: every event must parse.
        let mut reader = quick_xml::Reader::from_reader(reply.body.as_slice());
        let mut buffer = Vec::new();
        loop {
            match reader.read_event_into(&mut buffer) {
                Ok(quick_xml::events::Event::Eof) => break,
                Ok(quick_xml::events::Event::Text(text)) => {
                    let text = text.unescape().expect("well-formed text");
                    assert!(
                        !text.chars().any(|c| c < ' ' && !"\t\n\r".contains(c)),
                        "{uri}: {text:?}"
                    );
                }
                Ok(_) => {}
                Err(error) => panic!("{uri} is not well-formed XML: {error}"),
            }
            buffer.clear();
        }
        assert!(super::xml::parse(&reply.body).is_ok(), "{uri}");
        assert!(
            reply.text().contains("a\u{FFFD}b\u{FFFD}c\u{FFFD}"),
            "{uri}: {}",
            reply.text()
        );
    }
    // JSON carries the value exactly as registered.
    let json = get_json(&router, "/eureka/apps/ORDERS/a").await.json();
    assert_eq!(json["instance"]["metadata"]["k"], "a\u{1}b\u{1F}c\u{FFFE}");
}

#[test]
fn a_registry_document_with_a_bad_instance_is_refused_or_read_without_it() {
    let mut bad = registration("orders", "o-2");
    bad["instance"].as_object_mut().unwrap().remove("hostName");
    let document = json!({"applications": {"versions__delta": "1", "apps__hashcode": "UP_2_",
        "application": [{"name": "ORDERS", "instance": [
            registration("orders", "o-1")["instance"].clone(), bad["instance"].clone()]}]}});
    assert_eq!(
        decode::applications_document(&document, 0),
        Err(decode::DecodeError::Missing("hostName"))
    );
    let (read, refused) = decode::applications_document_lenient(&document, 0).unwrap();
    assert_eq!(refused, [decode::DecodeError::Missing("hostName")]);
    assert_eq!(read.hashcode, "UP_2_");
    let ids: Vec<&str> = read.apps[0]
        .1
        .iter()
        .map(|found| found.id.as_str())
        .collect();
    assert_eq!(ids, ["o-1"]);
}
