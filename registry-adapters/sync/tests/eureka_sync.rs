//! The Eureka sync engine against a stand-in legacy server: Ferry's own Eureka view over a
//! second registry, served on a loopback port, with a switch that makes it answer 503 (a
//! cluster that is down) and a delay for its registry reads (a slow one). The real Spring Cloud Eureka Server is driven by
//! `tests/e2e/test_sync_clients.py` and `tests/spring/test_migration_eureka.py`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use tokio::sync::watch;

use ferry_core::model::{Instance, Registration, Status, OWNER_FERRY, OWNER_METADATA_KEY};
use ferry_core::registry::{Registry, Route};
use ferry_eureka::{EurekaSettings, FetchCounts};
use ferry_sync::eureka::{self, EurekaSyncSettings};
use ferry_sync::SyncHandle;

/// A stand-in legacy server.
struct Legacy {
    registry: Arc<Registry>,
    url: String,
    /// While false, every request gets 503.
    up: Arc<AtomicBool>,
    /// Milliseconds each registry read (`GET apps/`, `apps/delta`) waits before it is answered.
    read_delay_ms: Arc<AtomicU64>,
}

async fn legacy() -> Legacy {
    let registry = Arc::new(Registry::default());
    let up = Arc::new(AtomicBool::new(true));
    let read_delay_ms = Arc::new(AtomicU64::new(0));
    let (switch, delay) = (up.clone(), read_delay_ms.clone());
    let view = ferry_eureka::routes(
        registry.clone(),
        EurekaSettings::default(),
        Arc::new(FetchCounts::default()),
    )
    .layer(middleware::from_fn(move |request: Request, next: Next| {
        let up = switch.load(Ordering::SeqCst);
        let path = request.uri().path();
        let read = request.method() == axum::http::Method::GET
            && (path.ends_with("/apps/") || path.ends_with("/apps/delta"));
        let wait = Duration::from_millis(if read {
            delay.load(Ordering::SeqCst)
        } else {
            0
        });
        async move {
            tokio::time::sleep(wait).await;
            if up {
                next.run(request).await
            } else {
                StatusCode::SERVICE_UNAVAILABLE.into_response()
            }
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, view).await });
    Legacy {
        registry,
        url: format!("http://{address}/eureka"),
        up,
        read_delay_ms,
    }
}

/// Nothing listens there: connections are refused at once.
const DEAD_URL: &str = "http://127.0.0.1:1/eureka/";

fn settings(urls: Vec<String>, grace: Duration) -> EurekaSyncSettings {
    EurekaSyncSettings {
        urls,
        interval: Duration::from_millis(100),
        renewal_interval: Duration::from_millis(200),
        lease_duration_secs: 90,
        timeout: Duration::from_millis(500),
        grace,
    }
}

struct Running {
    handle: SyncHandle,
    stop: watch::Sender<bool>,
}

fn start(registry: &Arc<Registry>, settings: EurekaSyncSettings) -> Running {
    let (stop, shutdown) = watch::channel(false);
    let handle = eureka::start(registry.clone(), settings, shutdown);
    Running { handle, stop }
}

fn app_instance(app: &str, id: &str, port: u32) -> Instance {
    let mut instance = Instance::new(app, id, "10.0.0.7", "10.0.0.7", port);
    instance.virtual_address = Some(app.to_owned());
    instance
}

fn owner_of(registry: &Registry, app: &str, id: &str) -> Option<String> {
    registry
        .instance(app, id)
        .and_then(|found| found.instance.metadata.get(OWNER_METADATA_KEY).cloned())
}

/// Waits until `condition` holds, at most `within`.
async fn eventually(what: &str, within: Duration, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const SOON: Duration = Duration::from_secs(5);

#[tokio::test]
async fn instances_flow_both_ways_through_a_failed_over_url() {
    let legacy = legacy().await;
    let ferry = Arc::new(Registry::default());
    let running = start(
        &ferry,
        settings(
            vec![DEAD_URL.to_owned(), legacy.url.clone()],
            Duration::from_secs(30),
        ),
    );
    assert!(running.handle.wait_first_import(SOON).await);

    // Ferry's instance appears on the legacy side, marked as Ferry's.
    ferry
        .register(app_instance("orders", "o-1", 8080), false)
        .unwrap();
    eventually("orders exported", SOON, || {
        owner_of(&legacy.registry, "ORDERS", "o-1").as_deref() == Some(OWNER_FERRY)
    })
    .await;
    let exported = legacy.registry.instance("ORDERS", "o-1").unwrap().instance;
    assert_eq!(exported.port.number, 8080);
    assert_eq!(
        exported.lease.renewal_interval_secs, 1,
        "the exporter's lease"
    );

    // A legacy app appears in Ferry as an imported copy; Ferry's export is not imported back.
    legacy
        .registry
        .register(app_instance("billing", "b-1", 9090), false)
        .unwrap();
    eventually("billing imported", SOON, || {
        owner_of(&ferry, "BILLING", "b-1").as_deref() == Some(eureka::OWNER)
    })
    .await;
    let copy = ferry.instance("BILLING", "b-1").unwrap().instance;
    assert_eq!(copy.registration, Registration::Imported);
    assert_eq!(ferry.imported(eureka::OWNER).len(), 1);

    // A change in Ferry is re-registered; a change on the legacy side is re-imported.
    let mut moved = app_instance("orders", "o-1", 8081);
    moved.metadata.insert("zone".into(), "b".into());
    ferry.register(moved, false).unwrap();
    eventually("orders re-registered", SOON, || {
        legacy
            .registry
            .instance("ORDERS", "o-1")
            .is_some_and(|found| found.instance.port.number == 8081)
    })
    .await;
    let mut down = app_instance("billing", "b-1", 9090);
    down.status = Status::Down;
    legacy.registry.register(down, false).unwrap();
    eventually("billing down imported", SOON, || {
        ferry
            .instance("BILLING", "b-1")
            .is_some_and(|found| found.instance.status == Status::Down)
    })
    .await;

    // Gone from either side: gone from the other.
    ferry.cancel("ORDERS", "o-1").unwrap();
    eventually("orders cancelled", SOON, || {
        legacy.registry.instance("ORDERS", "o-1").is_none()
    })
    .await;
    legacy.registry.cancel("BILLING", "b-1").unwrap();
    eventually("billing removed", SOON, || {
        ferry.instance("BILLING", "b-1").is_none()
    })
    .await;

    let status = running.handle.status.snapshot();
    assert!(status.reachable);
    assert!(status.initial_import_done);
    assert_eq!(
        status.current_endpoint.as_deref(),
        Some(format!("{}/", legacy.url).as_str())
    );
    assert!(
        status.full_fetches >= 1 && status.delta_fetches >= 1,
        "{status:?}"
    );
    assert!(
        status.full_fetches < status.delta_fetches,
        "deltas, not full fetches: {status:?}"
    );
    eventually("nothing held", SOON, || {
        let status = running.handle.status.snapshot();
        (status.imported, status.exported) == (0, 0)
    })
    .await;
    running.stop.send_replace(true);
}

/// A stand-in legacy server and a Ferry registry synced with it.
async fn synced(grace: Duration) -> (Legacy, Arc<Registry>, Running) {
    let legacy = legacy().await;
    let ferry = Arc::new(Registry::default());
    let running = start(&ferry, settings(vec![legacy.url.clone()], grace));
    (legacy, ferry, running)
}

/// A stand-in legacy server, a Ferry registry synced with it, and `orders`/`o-1`
/// registered with Ferry and exported.
async fn exporting_orders() -> (Legacy, Arc<Registry>, Running) {
    let (legacy, ferry, running) = synced(Duration::from_secs(30)).await;
    ferry
        .register(app_instance("orders", "o-1", 8080), false)
        .unwrap();
    eventually("exported", SOON, || {
        legacy.registry.instance("ORDERS", "o-1").is_some()
    })
    .await;
    (legacy, ferry, running)
}

#[tokio::test]
async fn out_of_service_is_an_override_on_the_legacy_side() {
    let (legacy, ferry, _running) = exporting_orders().await;
    let status_there = || {
        legacy
            .registry
            .instance("ORDERS", "o-1")
            .map(|found| (found.instance.status, found.instance.overridden_status))
    };
    eventually("exported UP", SOON, || {
        status_there() == Some((Status::Up, Status::Unknown))
    })
    .await;
    ferry
        .set_override("ORDERS", "o-1", Status::OutOfService, None)
        .unwrap();
    eventually("out of service there", SOON, || {
        status_there() == Some((Status::OutOfService, Status::OutOfService))
    })
    .await;
    ferry.remove_override("ORDERS", "o-1", Status::Up).unwrap();
    eventually("back UP there", SOON, || {
        status_there() == Some((Status::Up, Status::Unknown))
    })
    .await;
}

#[tokio::test]
async fn a_mesh_route_shown_to_legacy_is_what_the_legacy_side_sees() {
    let (legacy, ferry, _running) = exporting_orders().await;
    ferry
        .set_route(
            "ORDERS",
            Some(Route {
                host: "10.9.9.9".into(),
                port: 15001,
                publish_to_legacy: true,
            }),
        )
        .unwrap();
    eventually("the route exported", SOON, || {
        legacy
            .registry
            .instance("ORDERS", "o-1")
            .is_some_and(|found| {
                (found.instance.ip_addr.as_str(), found.instance.port.number) == ("10.9.9.9", 15001)
            })
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_cluster_keeps_copies_and_a_return_empty_is_held_for_grace() {
    let (legacy, ferry, running) = synced(Duration::from_millis(1500)).await;
    for n in 0..4 {
        legacy
            .registry
            .register(app_instance("billing", &format!("b-{n}"), 9090), false)
            .unwrap();
    }
    eventually("all imported", SOON, || {
        ferry.imported(eureka::OWNER).len() == 4
    })
    .await;

    // Down: everything stays, stale.
    legacy.up.store(false, Ordering::SeqCst);
    eventually("seen unreachable", SOON, || {
        let status = running.handle.status.snapshot();
        !status.reachable && status.stale == 4
    })
    .await;
    assert_eq!(ferry.imported(eureka::OWNER).len(), 4);

    // Back, restarted empty but for one: the removals wait for the grace period.
    for n in 1..4 {
        legacy
            .registry
            .cancel("BILLING", &format!("b-{n}"))
            .unwrap();
    }
    legacy.up.store(true, Ordering::SeqCst);
    eventually("seen back", SOON, || {
        let status = running.handle.status.snapshot();
        status.reachable && status.pending_removals == 3
    })
    .await;
    assert_eq!(ferry.imported(eureka::OWNER).len(), 4);
    assert_eq!(running.handle.status.snapshot().stale, 0);

    // One registers again within the window; the rest go when it ends.
    legacy
        .registry
        .register(app_instance("billing", "b-1", 9090), false)
        .unwrap();
    eventually("the window ended", SOON, || {
        ferry.imported(eureka::OWNER).len() == 2
    })
    .await;
    let mut left: Vec<String> = ferry
        .imported(eureka::OWNER)
        .iter()
        .map(|copy| copy.id.clone())
        .collect();
    left.sort();
    assert_eq!(left, ["b-0", "b-1"]);
    assert_eq!(running.handle.status.snapshot().pending_removals, 0);
}

#[tokio::test]
async fn every_url_down_still_completes_the_first_import() {
    let ferry = Arc::new(Registry::default());
    let running = start(
        &ferry,
        settings(vec![DEAD_URL.to_owned()], Duration::from_secs(1)),
    );
    assert!(running.handle.wait_first_import(SOON).await);
    let status = running.handle.status.snapshot();
    assert!(!status.reachable);
    assert!(status.errors >= 1);
    assert!(status.last_error.is_some());
}

#[tokio::test]
async fn a_restart_restores_ferrys_instances_from_their_copies_and_cancels_one_that_expires() {
    let legacy = legacy().await;
    let grace = Duration::from_millis(1500);
    let before = Arc::new(Registry::default());
    let first = start(&before, settings(vec![legacy.url.clone()], grace));
    before
        .register(app_instance("orders", "o-1", 8080), false)
        .unwrap();
    before
        .register(app_instance("orders", "o-2", 8081), false)
        .unwrap();
    eventually("both exported", SOON, || {
        legacy
            .registry
            .app("ORDERS")
            .is_some_and(|found| found.len() == 2)
    })
    .await;

    // Ferry stops: nothing is cancelled.
    first.stop.send_replace(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        legacy.registry.app("ORDERS").map(|found| found.len()),
        Some(2)
    );

    // Ferry starts again with an empty registry: by its first import, both instances are
    // its own again, at their own addresses, before any heartbeat reaches it.
    let after = Arc::new(Registry::default());
    let second = start(&after, settings(vec![legacy.url.clone()], grace));
    assert!(second.handle.wait_first_import(SOON).await);
    for (id, port) in [("o-1", 8080), ("o-2", 8081)] {
        let restored = after.instance("ORDERS", id).expect("restored").instance;
        assert_eq!(restored.port.number, port);
        assert_eq!(
            restored.registration,
            ferry_core::model::Registration::Lease
        );
        assert!(!restored.metadata.contains_key(OWNER_METADATA_KEY));
    }
    assert!(
        after.imported(eureka::OWNER).is_empty(),
        "Ferry's copies are not imported"
    );
    // o-1's app heartbeats as usual and finds its lease.
    assert!(after
        .renew(
            "ORDERS",
            "o-1",
            ferry_core::registry::RenewRequest::default()
        )
        .is_ok());
    eventually("both exported", SOON, || {
        second.handle.status.snapshot().exported == 2
    })
    .await;

    // o-2's app died while Ferry was down: its lease ends here, its copy goes there.
    after.cancel("ORDERS", "o-2").unwrap();
    eventually("o-2 cancelled on the legacy side", SOON, || {
        legacy.registry.instance("ORDERS", "o-2").is_none()
    })
    .await;
    assert!(legacy.registry.instance("ORDERS", "o-1").is_some());
    eventually("one exported", SOON, || {
        second.handle.status.snapshot().exported == 1
    })
    .await;
}

#[tokio::test]
async fn an_app_that_registered_itself_on_the_legacy_side_is_not_cancelled() {
    let (legacy, ferry, _running) = exporting_orders().await;

    // The app moves back to the legacy cluster, then leaves Ferry.
    let mut own = app_instance("orders", "o-1", 8080);
    own.last_dirty = i64::MAX / 2;
    legacy.registry.register(own, false).unwrap();
    ferry.cancel("ORDERS", "o-1").unwrap();
    eventually("imported as the legacy app's", SOON, || {
        owner_of(&ferry, "ORDERS", "o-1").as_deref() == Some(eureka::OWNER)
    })
    .await;
    assert!(legacy.registry.instance("ORDERS", "o-1").is_some());
}

/// A hand-written legacy server answering the full and delta reads with fixed bodies; its
/// service URL.
async fn fixed_server(full: &'static str, delta: &'static str) -> String {
    use axum::routing::get;
    let server = axum::Router::new()
        .route("/eureka/apps/", get(move || async move { full }))
        .route("/eureka/apps/delta", get(move || async move { delta }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, server).await });
    format!("http://{address}/eureka/")
}

#[tokio::test]
async fn a_malformed_registry_changes_nothing() {
    let ferry = Arc::new(Registry::default());
    ferry
        .import(eureka::OWNER, app_instance("billing", "b-1", 9090))
        .unwrap();
    let url = fixed_server("{\"applications\": 3", "not json").await;
    let running = start(&ferry, settings(vec![url], Duration::from_millis(10)));
    eventually("errors counted", SOON, || {
        running.handle.status.snapshot().errors >= 3
    })
    .await;
    let status = running.handle.status.snapshot();
    assert!(status.reachable, "a bad document is not a cluster down");
    assert!(!status.initial_import_done);
    assert_eq!(ferry.imported(eureka::OWNER).len(), 1);
}

#[tokio::test]
async fn a_delta_whose_hashcode_disagrees_is_followed_by_a_full_fetch() {
    const FULL: &str = r#"{"applications":{"versions__delta":"1","apps__hashcode":"UP_1_",
        "application":[{"name":"BILLING","instance":[{"instanceId":"b-1","hostName":"h",
        "app":"BILLING","ipAddr":"10.0.0.9","status":"UP","port":{"$":9090,"@enabled":"true"},
        "dataCenterInfo":{"@class":"x","name":"MyOwn"}}]}]}}"#;
    // The delta says nothing changed, but counts two instances.
    const DELTA: &str =
        r#"{"applications":{"versions__delta":"2","apps__hashcode":"UP_2_","application":[]}}"#;
    let ferry = Arc::new(Registry::default());
    let running = start(
        &ferry,
        settings(
            vec![fixed_server(FULL, DELTA).await],
            Duration::from_secs(1),
        ),
    );
    eventually("several deltas", SOON, || {
        running.handle.status.snapshot().delta_fetches >= 3
    })
    .await;
    let status = running.handle.status.snapshot();
    assert!(status.full_fetches >= status.delta_fetches, "{status:?}");
    assert_eq!(status.errors, 0);
    assert_eq!(
        owner_of(&ferry, "BILLING", "b-1").as_deref(),
        Some(eureka::OWNER)
    );
}

#[tokio::test]
async fn a_copy_the_legacy_side_lost_is_registered_again_at_its_next_heartbeat() {
    let (legacy, _ferry, running) = exporting_orders().await;
    legacy.registry.cancel("ORDERS", "o-1").unwrap();
    eventually("registered again", SOON, || {
        owner_of(&legacy.registry, "ORDERS", "o-1").as_deref() == Some(OWNER_FERRY)
    })
    .await;
    assert_eq!(running.handle.status.snapshot().errors, 0);
}

/// A legacy server whose registry reads take longer than the sync interval (a JVM just
/// restarted, a loaded host): every import is late, so another is always due, and the
/// heartbeats must still go out between them, or a copy the server lost is never
/// registered again.
#[tokio::test]
async fn a_lost_copy_is_registered_again_while_every_import_runs_late() {
    let (legacy, _ferry, running) = exporting_orders().await;
    // Three intervals per read, within the client's timeout.
    legacy.read_delay_ms.store(300, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(700)).await;
    legacy.registry.cancel("ORDERS", "o-1").unwrap();
    eventually("registered again between slow imports", SOON, || {
        owner_of(&legacy.registry, "ORDERS", "o-1").as_deref() == Some(OWNER_FERRY)
    })
    .await;
    assert_eq!(running.handle.status.snapshot().errors, 0);
}

#[tokio::test]
async fn hundreds_of_instances_are_exported_and_renewed() {
    let (legacy, ferry, running) = synced(Duration::from_secs(30)).await;
    for n in 0..300 {
        ferry
            .register(app_instance("fleet", &format!("f-{n}"), 8080), false)
            .unwrap();
    }
    eventually("all exported", SOON, || {
        legacy.registry.app("FLEET").map(|found| found.len()) == Some(300)
    })
    .await;
    let renewed = |id: &str| {
        legacy
            .registry
            .instance("FLEET", id)
            .map(|found| found.last_renewal > found.instance.lease.registration)
    };
    eventually("all renewed", SOON, || {
        (0..300).all(|n| renewed(&format!("f-{n}")) == Some(true))
    })
    .await;
    let status = running.handle.status.snapshot();
    assert_eq!((status.exported, status.errors), (300, 0), "{status:?}");
    assert!(ferry.imported(eureka::OWNER).is_empty());
}
