//! Deltas applied the way Netflix's Java client applies them (`DiscoveryClient.updateDelta`),
//! then checked the way it checks them: its own hashcode against the delta's
//! `apps__hashcode`, where a mismatch costs a full fetch.
//!
//! The client's one quirk that makes the order of a delta matter: an ADDED or MODIFIED
//! entry of an app it does not hold makes it adopt the delta's whole app object, every
//! entry of that app included, removals too; a DELETED entry of an app it does not hold is
//! dropped. So a removal listed before the app's first upsert is kept as a live instance.

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use axum::Router;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::{app, call, get_json, registration};

/// What the Java client holds: app name → instance id → status.
type ClientView = BTreeMap<String, BTreeMap<String, String>>;

fn entries(app: &Value) -> impl Iterator<Item = (String, String, String)> + '_ {
    app["instance"].as_array().unwrap().iter().map(|instance| {
        let text = |key: &str| instance[key].as_str().unwrap().to_owned();
        (text("instanceId"), text("status"), text("actionType"))
    })
}

/// `getAndStoreFullRegistry`: the view is replaced by the full registry.
fn view_of(document: &Value) -> ClientView {
    document["applications"]["application"]
        .as_array()
        .unwrap()
        .iter()
        .map(|app| {
            let name = app["name"].as_str().unwrap().to_owned();
            let instances = entries(app).map(|(id, status, _)| (id, status)).collect();
            (name, instances)
        })
        .collect()
}

/// `updateDelta`, entry by entry in the delta's order.
fn apply_delta(view: &mut ClientView, delta: &Value) {
    for app in delta["applications"]["application"].as_array().unwrap() {
        let name = app["name"].as_str().unwrap();
        for (id, status, action) in entries(app) {
            match action.as_str() {
                "ADDED" | "MODIFIED" => {
                    // `applications.addApplication(app)`: the delta's app object as it is.
                    let held = view.entry(name.to_owned()).or_insert_with(|| {
                        entries(app).map(|(id, status, _)| (id, status)).collect()
                    });
                    held.insert(id, status);
                }
                "DELETED" => {
                    if let Some(held) = view.get_mut(name) {
                        held.remove(&id);
                        if held.is_empty() {
                            view.remove(name);
                        }
                    }
                }
                other => panic!("unknown actionType {other}"),
            }
        }
    }
}

/// `Applications.getReconcileHashCode`, written from its definition rather than with
/// `hashcode.rs`, so that the two are checked against each other.
fn client_hashcode(view: &ClientView) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for status in view.values().flat_map(BTreeMap::values) {
        *counts.entry(status.as_str()).or_default() += 1;
    }
    counts
        .iter()
        .map(|(status, count)| format!("{status}_{count}_"))
        .collect()
}

/// The Java client's fetch cycle: a full fetch while it holds nothing, else a delta whose
/// hashcode must match what it holds once the delta is applied. Returns whether it
/// needed a full fetch because of a mismatch.
async fn fetch(router: &Router, view: &mut ClientView) -> bool {
    if view.is_empty() {
        *view = view_of(&get_json(router, "/eureka/apps/").await.json());
        return false;
    }
    let delta = get_json(router, "/eureka/apps/delta").await.json();
    apply_delta(view, &delta);
    let mismatch = client_hashcode(view) != delta["applications"]["apps__hashcode"];
    if mismatch {
        *view = view_of(&get_json(router, "/eureka/apps/").await.json());
    }
    mismatch
}

async fn register(router: &Router, app: &str, id: &str, status: &str) {
    let mut body = registration(app, id);
    body["instance"]["status"] = json!(status);
    let reply = call(
        router,
        Method::POST,
        &format!("/eureka/apps/{app}"),
        &[("content-type", "application/json")],
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
}

async fn write(router: &Router, method: Method, uri: &str) -> StatusCode {
    call(router, method, uri, &[], Vec::new()).await.status
}

#[tokio::test]
async fn an_app_new_to_the_client_with_an_instance_cancelled_in_the_same_cycle() {
    let (router, _) = app();
    register(&router, "ORDERS", "o-1", "UP").await;
    let mut view = ClientView::new();
    fetch(&router, &mut view).await;

    // Within one fetch interval: BILLING appears with two instances, one of them goes.
    register(&router, "BILLING", "b-1", "UP").await;
    register(&router, "BILLING", "b-2", "UP").await;
    assert_eq!(
        write(&router, Method::DELETE, "/eureka/apps/BILLING/b-2").await,
        StatusCode::OK
    );
    assert!(!fetch(&router, &mut view).await, "no full fetch needed");
    assert_eq!(view["BILLING"].keys().collect::<Vec<_>>(), ["b-1"]);
}

#[tokio::test]
async fn an_app_whose_only_instance_is_replaced_by_a_new_one() {
    // A restart under a new id: the old instance cancels, then the new one registers. In
    // the oldest-first order the removal would come first and empty the app, and the
    // re-adopted app object would bring the removed instance back.
    let (router, _) = app();
    register(&router, "ORDERS", "old", "UP").await;
    let mut view = ClientView::new();
    fetch(&router, &mut view).await;

    register(&router, "ORDERS", "old", "DOWN").await;
    write(&router, Method::DELETE, "/eureka/apps/ORDERS/old").await;
    register(&router, "ORDERS", "new", "UP").await;
    assert!(!fetch(&router, &mut view).await, "no full fetch needed");
    assert_eq!(view["ORDERS"].keys().collect::<Vec<_>>(), ["new"]);
}

#[derive(Clone, Debug)]
enum Step {
    Register(usize, usize, &'static str),
    Cancel(usize, usize),
    Override(usize, usize, &'static str),
    RemoveOverride(usize, usize),
    Fetch,
}

const APPS: [&str; 2] = ["ORDERS", "BILLING"];

fn step() -> impl Strategy<Value = Step> {
    let slot = (0..APPS.len(), 0..3usize);
    prop_oneof![
        3 => (slot.clone(), prop::sample::select(vec!["UP", "DOWN", "STARTING"]))
            .prop_map(|((app, id), status)| Step::Register(app, id, status)),
        2 => slot.clone().prop_map(|(app, id)| Step::Cancel(app, id)),
        1 => (slot.clone(), prop::sample::select(vec!["OUT_OF_SERVICE", "UP"]))
            .prop_map(|((app, id), status)| Step::Override(app, id, status)),
        1 => slot.prop_map(|(app, id)| Step::RemoveOverride(app, id)),
        2 => Just(Step::Fetch),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever happens between fetches, a client that applies each delta in order holds
    /// exactly the registry afterwards, and its hashcode matches: it never needs the full
    /// fetch that a mismatch costs.
    #[test]
    fn applying_each_delta_in_order_gives_the_registry_and_its_hashcode(
        steps in prop::collection::vec(step(), 1..40),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (router, _) = app();
            let mut view = ClientView::new();
            for step in steps {
                let uri = |app: usize, id: usize, tail: &str| {
                    format!("/eureka/apps/{}/{}-{id}{tail}", APPS[app], APPS[app])
                };
                match step {
                    Step::Register(app, id, status) => {
                        register(&router, APPS[app], &format!("{}-{id}", APPS[app]), status)
                            .await;
                    }
                    Step::Cancel(app, id) => {
                        write(&router, Method::DELETE, &uri(app, id, "")).await;
                    }
                    Step::Override(app, id, status) => {
                        let tail = format!("/status?value={status}");
                        write(&router, Method::PUT, &uri(app, id, &tail)).await;
                    }
                    Step::RemoveOverride(app, id) => {
                        write(&router, Method::DELETE, &uri(app, id, "/status")).await;
                    }
                    Step::Fetch => {
                        let mismatch = fetch(&router, &mut view).await;
                        prop_assert!(!mismatch, "the delta's hashcode did not match");
                        let registry = view_of(&get_json(&router, "/eureka/apps/").await.json());
                        prop_assert_eq!(&view, &registry);
                    }
                }
            }
            Ok(())
        })?;
    }
}
