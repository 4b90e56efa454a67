//! The event log through the registry's public API: each kind from the path that makes it,
//! on a manual clock, and the changes that must make none.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::clock::Clock;
use crate::model::{Check, Health, Probe, Status};
use crate::store::{Feed, MemoryStore, Replicated};

use super::tests::{instance, registry, START};

/// Every event, oldest first, as (kind, instance, detail).
fn history(registry: &Registry) -> Vec<(EventKind, Option<String>, String)> {
    let mut page = registry.events(&EventQuery {
        limit: usize::MAX,
        ..EventQuery::default()
    });
    page.events.reverse();
    page.events
        .into_iter()
        .map(|event| (event.kind, event.instance, event.detail))
        .collect()
}

fn event(kind: EventKind, id: &str, detail: &str) -> (EventKind, Option<String>, String) {
    (kind, Some(id.to_owned()), detail.to_owned())
}

#[test]
fn a_registration_is_one_event_and_renewals_and_identical_registrations_add_none() {
    let registry = registry(false);
    registry.clock().advance(123);
    registry.register(instance("o-1"), false).unwrap();
    let first = registry.events(&EventQuery::default());
    assert_eq!(first.latest, 1);
    let registered = &first.events[0];
    assert_eq!(
        (registered.seq, registered.at, registered.service.as_str()),
        (1, START + 123, "ORDERS")
    );
    for _ in 0..100 {
        registry.clock().advance(1_000);
        registry
            .renew("ORDERS", "o-1", RenewRequest::default())
            .unwrap();
    }
    // A Eureka client registers again on every refresh of its record.
    registry.register(instance("o-1"), false).unwrap();
    registry
        .update_metadata("ORDERS", "o-1", [("zone".to_owned(), "a".to_owned())])
        .unwrap();
    assert_eq!(
        history(&registry),
        vec![event(EventKind::Registered, "o-1", "UP")]
    );
}

#[test]
fn status_changes_say_from_what_to_what() {
    let registry = registry(false);
    registry.register(instance("o-1"), false).unwrap();
    registry
        .set_override("ORDERS", "o-1", Status::OutOfService, None)
        .unwrap();
    registry
        .set_override("ORDERS", "o-1", Status::OutOfService, None)
        .unwrap();
    registry
        .remove_override("ORDERS", "o-1", Status::Up)
        .unwrap();
    let mut down = instance("o-1");
    down.status = Status::Down;
    down.last_dirty = START;
    registry.register(down, false).unwrap();
    assert_eq!(
        history(&registry),
        vec![
            event(EventKind::Registered, "o-1", "UP"),
            event(EventKind::Status, "o-1", "UP → OUT_OF_SERVICE"),
            event(EventKind::Status, "o-1", "OUT_OF_SERVICE → UP"),
            event(EventKind::Status, "o-1", "UP → DOWN"),
        ]
    );
}

#[test]
fn a_cancel_is_deregistered_and_an_expired_lease_evicted() {
    let registry = registry(false);
    registry.register(instance("o-1"), false).unwrap();
    registry.register(instance("o-2"), false).unwrap();
    registry.cancel("ORDERS", "o-1").unwrap();
    registry.clock().advance(60_000);
    assert_eq!(registry.evict_expired().unwrap(), 0, "not expired yet");
    registry.clock().advance(31_000);
    assert_eq!(registry.evict_expired().unwrap(), 1);
    assert_eq!(
        history(&registry),
        vec![
            event(EventKind::Registered, "o-1", "UP"),
            event(EventKind::Registered, "o-2", "UP"),
            event(EventKind::Deregistered, "o-1", "cancelled"),
            event(
                EventKind::Evicted,
                "o-2",
                "lease expired: no renewal for 91 s"
            ),
        ]
    );
}

#[test]
fn an_expired_ttl_is_a_status_change_and_reaping_an_eviction() {
    let registry = registry(false);
    let mut web = Instance::new("web", "web-1", "10.0.0.2", "10.0.0.2", 80);
    web.checks = vec![Check {
        id: "ttl".into(),
        status: Health::Passing,
        probe: Probe::Ttl {
            ttl: Duration::from_secs(10),
        },
        deregister_critical_after: Some(Duration::from_secs(60)),
        ..checks::maintenance_check(String::new(), None)
    }];
    registry.register_agent(web.clone(), true).unwrap();
    // The same registration again (a Consul agent's anti-entropy) changes nothing.
    registry.register_agent(web, true).unwrap();
    registry.clock().advance(11_000);
    assert_eq!(registry.expire_ttls().unwrap(), 1);
    registry.clock().advance(60_000);
    assert_eq!(registry.reap_critical(Duration::ZERO).unwrap(), 1);
    registry
        .register_agent(
            Instance::new("web", "web-2", "10.0.0.3", "10.0.0.3", 80),
            true,
        )
        .unwrap();
    registry.deregister_agent("web-2").unwrap();
    assert_eq!(
        history(&registry),
        vec![
            event(EventKind::Registered, "web-1", "UP"),
            event(EventKind::Status, "web-1", "UP → DOWN"),
            event(
                EventKind::Evicted,
                "web-1",
                "a check critical for longer than its deregister-critical-after"
            ),
            event(EventKind::Registered, "web-2", "UP"),
            event(EventKind::Deregistered, "web-2", "deregistered"),
        ]
    );
}

#[test]
fn imports_name_their_source_and_a_registration_takes_a_copy_over() {
    let registry = registry(false);
    let copy = || Instance::new("orders", "o-1", "10.0.0.7", "10.0.0.7", 8080);
    registry.import("legacy-eureka", copy()).unwrap();
    registry.import("legacy-eureka", copy()).unwrap();
    let mut down = copy();
    down.status = Status::Down;
    registry.import("legacy-eureka", down).unwrap();
    registry.register(instance("o-1"), false).unwrap();
    registry.import("legacy-consul", copy()).unwrap();
    registry
        .import(
            "legacy-consul",
            Instance::new("pay", "p-1", "10.0.0.8", "10.0.0.8", 80),
        )
        .unwrap();
    assert!(registry.unimport("PAY", "p-1").unwrap());
    assert_eq!(
        history(&registry),
        vec![
            event(EventKind::Registered, "o-1", "UP (from eureka sync)"),
            event(EventKind::Status, "o-1", "UP → DOWN (from eureka sync)"),
            event(EventKind::Status, "o-1", "DOWN → UP",),
            event(EventKind::Registered, "p-1", "UP (from consul sync)"),
            event(EventKind::Deregistered, "p-1", "gone from consul sync"),
        ]
    );
}

#[test]
fn cutover_and_rollback_are_one_event_each_and_a_repeat_none() {
    let registry = registry(false);
    registry.register(instance("o-1"), false).unwrap();
    registry.register(instance("o-2"), false).unwrap();
    let route = Route {
        host: "127.0.0.1".into(),
        port: 15001,
        publish_to_legacy: true,
    };
    registry.set_route("ORDERS", Some(route.clone())).unwrap();
    registry.set_route("ORDERS", Some(route)).unwrap();
    registry.set_route("ORDERS", None).unwrap();
    registry.set_route("ORDERS", None).unwrap();
    let history = history(&registry);
    assert_eq!(
        history[2..],
        [
            (
                EventKind::Cutover,
                None,
                "legacy → mesh at 127.0.0.1:15001".to_owned()
            ),
            (
                EventKind::Rollback,
                None,
                "mesh → legacy: the instances' own addresses".to_owned()
            ),
        ]
    );
    let page = registry.events(&EventQuery {
        service: Some("orders".into()),
        after: 2,
        ..EventQuery::default()
    });
    assert_eq!(page.latest, 4);
    let kinds: Vec<EventKind> = page.events.iter().map(|event| event.kind).collect();
    assert_eq!(kinds, vec![EventKind::Rollback, EventKind::Cutover]);
}

#[test]
fn the_log_keeps_its_capacity_whatever_happens() {
    let registry = Registry::new(
        RegistrySettings {
            event_capacity: 10,
            ..RegistrySettings::default()
        },
        Clock::manual(START),
        Arc::new(MemoryStore),
    );
    for n in 0..25 {
        registry
            .register(instance(&format!("o-{n}")), false)
            .unwrap();
    }
    let page = registry.events(&EventQuery {
        limit: usize::MAX,
        ..EventQuery::default()
    });
    assert_eq!(page.latest, 25);
    assert_eq!(page.events.len(), 10);
    assert_eq!(page.events.last().unwrap().seq, 16);
    assert_eq!(registry.event_capacity(), 10);
}

/// A shared store whose content arrives only through its feed, as another node's changes
/// do; this node's own writes are refused, so every change here is another node's.
#[derive(Default)]
struct OtherNodes {
    feed: Feed,
}

impl crate::store::Store for OtherNodes {
    fn name(&self) -> &'static str {
        "shared"
    }
    fn write(
        &self,
        _change: &crate::store::Change<'_>,
    ) -> Result<crate::store::Written, crate::store::StoreError> {
        Err(crate::store::StoreError::Conflict { backend: "shared" })
    }
    fn load(&self) -> Result<Vec<Instance>, crate::store::StoreError> {
        Ok(Vec::new())
    }
    fn feed(&self) -> Option<&Feed> {
        Some(&self.feed)
    }
    fn keeper(&self, _app: &str, _id: &str) -> Option<String> {
        Some("node-b".to_owned())
    }
}

#[test]
fn other_nodes_changes_are_events_here_but_the_first_read_is_not() {
    let store = Arc::new(OtherNodes::default());
    let registry = Registry::new(
        RegistrySettings::default(),
        Clock::manual(START),
        store.clone(),
    );
    store.feed.push(Replicated::Resync {
        instances: vec![(instance("o-0"), 3, 3)],
        revision: 5,
    });
    registry.apply_feed();
    assert_eq!(registry.events(&EventQuery::default()).latest, 0);
    store.feed.push(Replicated::Put {
        instance: Box::new(instance("o-1")),
        created: 6,
        revision: 6,
    });
    let mut out = instance("o-1");
    out.status = Status::OutOfService;
    store.feed.push(Replicated::Put {
        instance: Box::new(out.clone()),
        created: 6,
        revision: 7,
    });
    // The same change delivered twice (a node's own write coming back) is applied once.
    store.feed.push(Replicated::Put {
        instance: Box::new(out),
        created: 6,
        revision: 7,
    });
    store.feed.push(Replicated::Remove {
        app: "ORDERS".into(),
        id: "o-1".into(),
        revision: 8,
        keeper_left: false,
    });
    store.feed.push(Replicated::Put {
        instance: Box::new(instance("o-2")),
        created: 9,
        revision: 9,
    });
    store.feed.push(Replicated::Remove {
        app: "ORDERS".into(),
        id: "o-2".into(),
        revision: 10,
        keeper_left: true,
    });
    registry.apply_feed();
    assert_eq!(
        history(&registry),
        vec![
            event(EventKind::Registered, "o-1", "UP (on node-b)"),
            event(EventKind::Status, "o-1", "UP → OUT_OF_SERVICE (on node-b)"),
            event(EventKind::Deregistered, "o-1", "removed on another node"),
            event(EventKind::Registered, "o-2", "UP (on node-b)"),
            event(
                EventKind::Evicted,
                "o-2",
                "its node left: the node's lease in the store ended"
            ),
        ]
    );
}
