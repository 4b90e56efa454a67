//! The Eureka sync engine against a real legacy Eureka Server (the Spring Cloud Netflix one
//! `samples/boot3/eureka-server` builds), when `FERRY_LEGACY_EUREKA_URL` names one
//! (`http://127.0.0.1:18761/eureka/`); without it the test returns at once. Run with
//! `--nocapture` to see how long each step took.
//!
//! It registers an instance with Ferry and reads it back from the legacy server by HTTP,
//! registers an app with the legacy server by HTTP as a Spring client would and finds it
//! imported, and walks status, re-registration and cancellation both ways. App names carry
//! a per-run suffix, so a long-running server can take several runs.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::watch;

use ferry_core::model::{Instance, Status, OWNER_FERRY, OWNER_METADATA_KEY};
use ferry_core::registry::Registry;
use ferry_eureka::decode::{self, Origin};
use ferry_sync::eureka::{self, EurekaSyncSettings};
use ferry_sync::SyncHandle;

const WITHIN: Duration = Duration::from_secs(20);

/// The legacy server's copy of `app`/`id`, read over HTTP.
async fn legacy_instance(
    http: &reqwest::Client,
    base: &str,
    app: &str,
    id: &str,
) -> Option<Instance> {
    let response = http
        .get(format!("{base}apps/{app}/{id}"))
        .header("Accept", "application/json")
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let tree: Value = response.json().await.ok()?;
    decode::instance_document(&tree, Origin::RegistryDocument, 0).ok()
}

/// Polls `probe` until it gives `Some`, at most `WITHIN`; what it gave and how long it took.
async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(found) = probe().await {
            let took = started.elapsed();
            eprintln!("real eureka: {what}: {took:?}");
            return (found, took);
        }
        assert!(started.elapsed() < WITHIN, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the legacy server no longer holds `app`/`id`.
async fn wait_gone(what: &str, http: &reqwest::Client, base: &str, app: &str, id: &str) {
    wait_for(what, || async {
        legacy_instance(http, base, app, id)
            .await
            .is_none()
            .then_some(())
    })
    .await;
}

/// An instance registered with Ferry, with its app's name as VIP address as Spring's.
fn ferrys(app: &str, id: &str, port: u32) -> Instance {
    let mut instance = Instance::new(app, id, "10.0.0.7", "10.0.0.7", port);
    instance.virtual_address = Some(app.to_ascii_lowercase());
    instance
}

fn registration(app: &str, id: &str, port: u32) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis())
        .unwrap_or(0);
    let vip = app.to_ascii_lowercase();
    format!(
        r#"{{"instance":{{"instanceId":"{id}","hostName":"10.1.2.3","app":"{app}","ipAddr":"10.1.2.3",
        "status":"UP","overriddenStatus":"UNKNOWN","port":{{"$":{port},"@enabled":"true"}},
        "securePort":{{"$":443,"@enabled":"false"}},"countryId":1,
        "dataCenterInfo":{{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"}},
        "leaseInfo":{{"renewalIntervalInSecs":30,"durationInSecs":90}},
        "metadata":{{"management.port":"{port}"}},"vipAddress":"{vip}","secureVipAddress":"{vip}",
        "homePageUrl":"http://10.1.2.3:{port}/","statusPageUrl":"http://10.1.2.3:{port}/actuator/info",
        "healthCheckUrl":"http://10.1.2.3:{port}/actuator/health",
        "lastDirtyTimestamp":"{now}","actionType":"ADDED"}}}}"#
    )
}

/// The legacy server's service URL (with its trailing slash), if the environment names one.
fn legacy_url() -> Option<String> {
    let Ok(base) = std::env::var("FERRY_LEGACY_EUREKA_URL") else {
        eprintln!("FERRY_LEGACY_EUREKA_URL is not set: no real Eureka Server to test against");
        return None;
    };
    Some(if base.ends_with('/') {
        base
    } else {
        format!("{base}/")
    })
}

/// An app name of this run's.
fn app_name(what: &str) -> String {
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() % 1_000_000)
        .unwrap_or(0);
    format!("FERRY-SYNC-{what}-{run}")
}

/// The engine syncing `ferry` with `base` at a test's pace, once its first import is done.
async fn start(ferry: &Arc<Registry>, base: &str) -> (SyncHandle, watch::Sender<bool>) {
    let (stop, shutdown) = watch::channel(false);
    let handle = eureka::start(
        ferry.clone(),
        EurekaSyncSettings {
            urls: vec![base.to_owned()],
            interval: Duration::from_secs(1),
            renewal_interval: Duration::from_secs(1),
            lease_duration_secs: 10,
            timeout: Duration::from_secs(2),
            grace: Duration::from_secs(3),
        },
        shutdown,
    );
    assert!(handle.wait_first_import(WITHIN).await, "first import");
    (handle, stop)
}

#[tokio::test]
async fn a_real_eureka_server_sees_ferrys_instances_and_ferry_sees_its_apps() {
    let Some(base) = legacy_url() else { return };
    let ours = app_name("ORDERS");
    let theirs = app_name("BILLING");
    let http = reqwest::Client::new();
    let ferry = Arc::new(Registry::default());
    let (handle, stop) = start(&ferry, &base).await;

    // Ferry -> legacy.
    let mut instance = ferrys(&ours, "o-1", 8080);
    ferry.register(instance.clone(), false).unwrap();
    let (exported, _) = wait_for("Ferry's instance registered on the legacy server", || {
        legacy_instance(&http, &base, &ours, "o-1")
    })
    .await;
    assert_eq!(
        exported
            .metadata
            .get(OWNER_METADATA_KEY)
            .map(String::as_str),
        Some(OWNER_FERRY)
    );
    assert_eq!((exported.status, exported.port.number), (Status::Up, 8080));
    assert_eq!(exported.lease.duration_secs, 10);

    // Legacy -> Ferry, registered by HTTP as a Spring client registers.
    let answer = http
        .post(format!("{base}apps/{theirs}"))
        .header("Content-Type", "application/json")
        .body(registration(&theirs, "b-1", 9090))
        .send()
        .await
        .unwrap();
    eprintln!("real eureka: POST a legacy app: {}", answer.status());
    assert_eq!(answer.status().as_u16(), 204);
    let (imported, _) = wait_for("the legacy app imported", || {
        let found = ferry.instance(&theirs, "b-1").map(|found| found.instance);
        async move { found }
    })
    .await;
    assert_eq!(
        imported
            .metadata
            .get(OWNER_METADATA_KEY)
            .map(String::as_str),
        Some(eureka::OWNER)
    );
    assert_eq!(imported.port.number, 9090);
    assert!(
        ferry
            .instance(&ours, "o-1")
            .is_some_and(|found| !found.instance.metadata.contains_key(OWNER_METADATA_KEY)),
        "Ferry's own export is not imported back"
    );

    // Out of service, down, up again (each as Ferry's own Eureka clients would move it).
    let wait_status = |what: &'static str, status: Status| {
        let (http, base, ours) = (&http, &base, &ours);
        async move {
            wait_for(what, || async {
                legacy_instance(http, base, ours, "o-1")
                    .await
                    .filter(|found| found.status == status)
            })
            .await
        }
    };
    ferry
        .set_override(&ours, "o-1", Status::OutOfService, None)
        .unwrap();
    wait_status("OUT_OF_SERVICE on the legacy server", Status::OutOfService).await;
    ferry.remove_override(&ours, "o-1", Status::Down).unwrap();
    wait_status("out of service to DOWN on the legacy server", Status::Down).await;
    ferry.register(instance.clone(), false).unwrap();
    wait_status("UP again on the legacy server", Status::Up).await;
    instance.port.number = 8081;
    ferry.register(instance, false).unwrap();
    wait_for("the new port on the legacy server", || async {
        legacy_instance(&http, &base, &ours, "o-1")
            .await
            .filter(|found| found.port.number == 8081)
    })
    .await;

    // Heartbeats keep a 10 s lease alive past its end.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(
        legacy_instance(&http, &base, &ours, "o-1").await.is_some(),
        "renewed"
    );

    // Gone from either side: gone from the other.
    ferry.cancel(&ours, "o-1").unwrap();
    wait_gone("cancelled on the legacy server", &http, &base, &ours, "o-1").await;
    let answer = http
        .delete(format!("{base}apps/{theirs}/b-1"))
        .send()
        .await
        .unwrap();
    eprintln!("real eureka: DELETE a legacy app: {}", answer.status());
    wait_for("the legacy app removed from Ferry", || {
        let gone = ferry.instance(&theirs, "b-1").is_none().then_some(());
        async move { gone }
    })
    .await;

    let status = handle.status.snapshot();
    eprintln!("real eureka: status {status:?}");
    assert!(status.reachable);
    assert_eq!(status.errors, 0, "{:?}", status.last_error);
    stop.send_replace(true);
}

#[tokio::test]
async fn after_a_restart_a_real_eureka_server_keeps_ferrys_copies_and_loses_the_leftovers() {
    let Some(base) = legacy_url() else { return };
    let app = app_name("RESTART");
    let http = reqwest::Client::new();
    let before = Arc::new(Registry::default());
    let (_, stop) = start(&before, &base).await;
    for id in ["r-1", "r-2"] {
        before.register(ferrys(&app, id, 8080), false).unwrap();
    }
    let (first, _) = wait_for("both exported", || async {
        let one = legacy_instance(&http, &base, &app, "r-1").await?;
        legacy_instance(&http, &base, &app, "r-2").await?;
        Some(one)
    })
    .await;
    stop.send_replace(true);

    // A new Ferry process; r-1 registers with it again, r-2 never does.
    let after = Arc::new(Registry::default());
    let (handle, stop) = start(&after, &base).await;
    after.register(ferrys(&app, "r-1", 8080), false).unwrap();
    wait_gone(
        "r-2 cancelled after the grace period",
        &http,
        &base,
        &app,
        "r-2",
    )
    .await;
    let kept = legacy_instance(&http, &base, &app, "r-1").await;
    assert!(kept.is_some(), "r-1 kept through the restart");
    let re_registered = kept.is_some_and(|kept| kept.last_dirty != first.last_dirty);
    eprintln!("real eureka: r-1 registered again after the restart: {re_registered}");
    assert!(
        after
            .imported(eureka::OWNER)
            .iter()
            .all(|copy| copy.app != app),
        "Ferry's copies are not imported"
    );
    let status = handle.status.snapshot();
    eprintln!("real eureka: status {status:?}");
    assert_eq!(status.errors, 0, "{:?}", status.last_error);
    stop.send_replace(true);
}
