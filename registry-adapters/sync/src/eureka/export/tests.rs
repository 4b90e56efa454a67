use std::sync::Arc;
use std::time::Duration;

use ferry_core::model::{Instance, Status, OWNER_FERRY, OWNER_METADATA_KEY};
use ferry_core::registry::{ConfigServerListing, Owned, Registry, Route};

use super::{desired_set, fingerprint, plan, published_copy, ExportSettings, Published, Step};

const SETTINGS: ExportSettings = ExportSettings {
    renewal_interval: Duration::from_secs(10),
    lease_duration_secs: 40,
    grace: Duration::from_secs(90),
};

fn owned(instance: Instance, route: Option<Route>) -> Owned {
    Owned {
        instance: Arc::new(instance),
        route,
    }
}

fn orders() -> Instance {
    let mut instance = Instance::new("orders", "o-1", "orders-1.internal", "10.0.0.1", 8080);
    instance.metadata.insert("zone".into(), "a".into());
    instance
}

fn route(publish_to_legacy: bool) -> Route {
    Route {
        host: "10.9.9.9".into(),
        port: 15001,
        publish_to_legacy,
    }
}

#[test]
fn the_published_copy_is_marked_ferrys_with_the_exporters_lease() {
    let copy = published_copy(&owned(orders(), None), &SETTINGS).unwrap();
    assert_eq!(
        copy.metadata.get(OWNER_METADATA_KEY).map(String::as_str),
        Some(OWNER_FERRY)
    );
    assert_eq!(copy.metadata.get("zone").map(String::as_str), Some("a"));
    assert_eq!(
        (copy.lease.renewal_interval_secs, copy.lease.duration_secs),
        (10, 40)
    );
    assert_eq!(copy.host_name, "orders-1.internal");
    assert_eq!(copy.port.number, 8080);
}

#[test]
fn a_route_shown_to_legacy_replaces_the_address() {
    let mut instance = orders();
    instance.id_explicit = false;
    instance.secure_port.enabled = true;
    let copy = published_copy(&owned(instance.clone(), Some(route(true))), &SETTINGS).unwrap();
    assert_eq!(
        (copy.host_name.as_str(), copy.ip_addr.as_str()),
        ("10.9.9.9", "10.9.9.9")
    );
    assert_eq!((copy.port.number, copy.port.enabled), (15001, true));
    assert!(!copy.secure_port.enabled);
    assert!(
        copy.id_explicit,
        "the id is sent: the host no longer names it"
    );

    let copy = published_copy(&owned(instance, Some(route(false))), &SETTINGS).unwrap();
    assert_eq!(
        (copy.ip_addr.as_str(), copy.port.number),
        ("10.0.0.1", 8080)
    );
}

#[test]
fn copies_of_others_and_ferrys_config_server_are_not_exported() {
    let mut copy = orders();
    copy.metadata
        .insert(OWNER_METADATA_KEY.to_owned(), "legacy-consul".to_owned());
    assert!(published_copy(&owned(copy, None), &SETTINGS).is_none());

    let registry = Registry::default();
    registry
        .list_config_server(&ConfigServerListing {
            service_name: "configserver".into(),
            node: "n1".into(),
            host: "10.0.0.5".into(),
            port: 8888,
        })
        .unwrap();
    registry.register(orders(), false).unwrap();
    let (_, everything) = registry.owned();
    assert_eq!(everything.len(), 2);
    let desired = desired_set(&everything, &SETTINGS);
    let keys: Vec<_> = desired.keys().cloned().collect();
    assert_eq!(keys, [("ORDERS".to_owned(), "o-1".to_owned())]);
}

#[test]
fn the_fingerprint_is_what_the_legacy_side_sees_but_the_status() {
    let base = published_copy(&owned(orders(), None), &SETTINGS).unwrap();
    let print = fingerprint(&base);

    let mut same = base.clone();
    same.status = Status::Down;
    same.last_dirty = 99;
    same.last_updated = 99;
    same.lease.last_renewal = 99;
    same.tags.push("not-a-eureka-field".into());
    same.modify_index = 7;
    assert_eq!(fingerprint(&same), print);

    for change in [
        |copy: &mut Instance| copy.port.number = 8081,
        |copy: &mut Instance| copy.ip_addr = "10.0.0.2".into(),
        |copy: &mut Instance| {
            copy.metadata.insert("zone".into(), "b".into());
        },
        |copy: &mut Instance| copy.links.health_check = Some("http://x/health".into()),
        |copy: &mut Instance| copy.lease.duration_secs = 90,
    ] {
        let mut changed = base.clone();
        change(&mut changed);
        assert_ne!(fingerprint(&changed), print);
    }
}

#[test]
fn a_route_change_is_a_new_fingerprint() {
    let direct = desired_set(&[owned(orders(), None)], &SETTINGS);
    let routed = desired_set(&[owned(orders(), Some(route(true)))], &SETTINGS);
    let key = ("ORDERS".to_owned(), "o-1".to_owned());
    assert_ne!(direct[&key].fingerprint, routed[&key].fingerprint);
}

fn published(fingerprint: u64, status: Status) -> Published {
    Published {
        fingerprint,
        status,
    }
}

#[test]
fn new_instances_register_and_out_of_service_ones_are_overridden_after() {
    assert_eq!(plan(None, 1, Status::Up), [Step::Register(Status::Up)]);
    assert_eq!(plan(None, 1, Status::Down), [Step::Register(Status::Down)]);
    assert_eq!(
        plan(None, 1, Status::OutOfService),
        [Step::Register(Status::Starting), Step::SetOutOfService],
        "never shown UP before the override"
    );
}

#[test]
fn nothing_changed_is_nothing_sent() {
    for status in Status::ALL {
        assert_eq!(plan(Some(&published(1, status)), 1, status), []);
    }
}

#[test]
fn status_changes_go_by_registration_except_out_of_service() {
    let up = published(1, Status::Up);
    assert_eq!(
        plan(Some(&up), 1, Status::Down),
        [Step::Register(Status::Down)]
    );
    assert_eq!(plan(Some(&up), 2, Status::Up), [Step::Register(Status::Up)]);
    assert_eq!(
        plan(Some(&up), 1, Status::OutOfService),
        [Step::SetOutOfService]
    );
    assert_eq!(
        plan(Some(&up), 2, Status::OutOfService),
        [Step::SetOutOfService, Step::Register(Status::Up)]
    );
    let out = published(1, Status::OutOfService);
    assert_eq!(
        plan(Some(&out), 1, Status::Up),
        [
            Step::LiftOutOfService(Status::Up),
            Step::Register(Status::Up)
        ]
    );
    assert_eq!(
        plan(Some(&out), 1, Status::Down),
        [
            Step::LiftOutOfService(Status::Down),
            Step::Register(Status::Down)
        ]
    );
    assert_eq!(
        plan(Some(&out), 2, Status::OutOfService),
        [Step::Register(Status::Up)],
        "the override keeps it out of service"
    );
}
