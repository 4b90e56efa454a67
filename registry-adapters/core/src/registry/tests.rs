use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::clock::Clock;
use crate::model::{Health, Probe, Registration, Status};
use crate::store::{DurableStore, MemoryStore};

pub(super) const START: Millis = 1_700_000_000_000;

pub(super) fn registry(self_preservation: bool) -> Registry {
    Registry::new(
        RegistrySettings {
            self_preservation,
            ..RegistrySettings::default()
        },
        Clock::manual(START),
        Arc::new(MemoryStore),
    )
}

pub(super) fn instance(id: &str) -> Instance {
    let mut instance = Instance::new("orders", id, "10.0.0.1", "10.0.0.1", 8080);
    instance.last_dirty = START - 10;
    instance
}

#[test]
fn register_publishes_an_added_up_instance_and_bumps_the_index_once() {
    let registry = registry(true);
    let before = registry.index();
    registry.register(instance("a"), false).unwrap();
    assert_eq!(registry.index(), before + 1);
    let found = registry.instance("ORDERS", "a").unwrap();
    assert_eq!(found.instance.status, Status::Up);
    assert_eq!(found.instance.action, Action::Added);
    assert_eq!(found.instance.lease.registration, START);
    assert_eq!(found.instance.lease.service_up, START);
    assert_eq!(
        found.instance.last_dirty,
        START - 10,
        "the client's dirty timestamp is kept exactly"
    );
}

#[test]
fn a_stale_re_registration_keeps_the_stored_data() {
    let registry = registry(true);
    let mut newer = instance("a");
    newer.metadata.insert("v".into(), "2".into());
    newer.last_dirty = START;
    registry.register(newer, false).unwrap();
    let mut stale = instance("a");
    stale.metadata.insert("v".into(), "1".into());
    stale.last_dirty = START - 100;
    stale.status = Status::Down;
    registry.register(stale, false).unwrap();
    let found = registry.instance("ORDERS", "a").unwrap();
    assert_eq!(found.instance.metadata["v"], "2");
    assert_eq!(
        found.instance.status,
        Status::Up,
        "the stale body's status is ignored too"
    );
    assert_eq!(found.instance.last_dirty, START);
}

#[test]
fn renew_refreshes_the_lease_without_a_change() {
    let registry = registry(true);
    registry.register(instance("a"), false).unwrap();
    let index = registry.index();
    registry.clock().advance(30_000);
    registry
        .renew("ORDERS", "a", RenewRequest::default())
        .unwrap();
    assert_eq!(registry.index(), index, "heartbeats are not changes");
    assert_eq!(
        registry.instance("ORDERS", "a").unwrap().last_renewal,
        START + 30_000
    );
}

#[test]
fn renew_answers_by_the_dirty_timestamp() {
    let registry = registry(true);
    registry.register(instance("a"), false).unwrap();
    let stored = START - 10;
    let renew = |last_dirty, replication| {
        registry.renew(
            "ORDERS",
            "a",
            RenewRequest {
                last_dirty: Some(last_dirty),
                overridden_status: None,
                replication,
            },
        )
    };
    assert!(renew(stored, false).is_ok());
    assert!(renew(stored - 1, false).is_ok());
    assert!(matches!(
        renew(stored + 1, false),
        Err(RegistryError::ClientIsNewer { .. })
    ));
    assert!(matches!(
        renew(stored - 1, true),
        Err(RegistryError::PeerIsStale { .. })
    ));
    assert!(matches!(
        registry.renew("ORDERS", "missing", RenewRequest::default()),
        Err(RegistryError::NotRegistered { .. })
    ));
}

#[test]
fn an_override_wins_over_up_reports_until_removed() {
    let registry = registry(true);
    registry.register(instance("a"), false).unwrap();
    registry
        .set_override("ORDERS", "a", Status::OutOfService, None)
        .unwrap();
    let found = registry.instance("ORDERS", "a").unwrap();
    assert_eq!(found.instance.status, Status::OutOfService);
    assert_eq!(found.instance.overridden_status, Status::OutOfService);
    assert_eq!(found.instance.action, Action::Modified);

    // The client re-registers UP: the override still wins.
    let mut again = instance("a");
    again.last_dirty = START;
    registry.register(again, false).unwrap();
    assert_eq!(
        registry.instance("ORDERS", "a").unwrap().instance.status,
        Status::OutOfService
    );

    // Removing it publishes UNKNOWN, and the next heartbeat makes the client re-register.
    registry
        .remove_override("ORDERS", "a", Status::Unknown)
        .unwrap();
    assert_eq!(
        registry.instance("ORDERS", "a").unwrap().instance.status,
        Status::Unknown
    );
    assert!(matches!(
        registry.renew("ORDERS", "a", RenewRequest::default()),
        Err(RegistryError::NotRegistered { .. })
    ));
    let mut fresh = instance("a");
    fresh.last_dirty = START + 1;
    registry.register(fresh, false).unwrap();
    assert_eq!(
        registry.instance("ORDERS", "a").unwrap().instance.status,
        Status::Up
    );
}

#[test]
fn setting_the_current_status_as_override_stores_nothing() {
    let registry = registry(true);
    registry.register(instance("a"), false).unwrap();
    let index = registry.index();
    registry
        .set_override("ORDERS", "a", Status::Up, None)
        .unwrap();
    assert_eq!(registry.index(), index);
}

#[test]
fn metadata_merges_and_counts_as_a_re_registration() {
    let registry = registry(true);
    let mut first = instance("a");
    first.metadata.insert("keep".into(), "1".into());
    registry.register(first, false).unwrap();
    registry.clock().advance(5_000);
    registry
        .update_metadata("ORDERS", "a", [("zone".to_owned(), "b".to_owned())])
        .unwrap();
    let found = registry.instance("ORDERS", "a").unwrap();
    assert_eq!(found.instance.metadata["keep"], "1");
    assert_eq!(found.instance.metadata["zone"], "b");
    assert_eq!(found.instance.lease.registration, START + 5_000);
    assert_eq!(found.instance.action, Action::Added);
}

#[test]
fn cancel_removes_and_leaves_a_deleted_entry_in_the_delta() {
    let registry = registry(true);
    registry.register(instance("a"), false).unwrap();
    registry.register(instance("b"), false).unwrap();
    registry.cancel("ORDERS", "a").unwrap();
    assert!(registry.instance("ORDERS", "a").is_none());
    assert!(matches!(
        registry.cancel("ORDERS", "a"),
        Err(RegistryError::NotRegistered { .. })
    ));
    let delta = registry.list_recent_changes();
    let (_, changed) = &delta.apps[0];
    let actions: Vec<(&str, Action)> = changed
        .iter()
        .map(|entry| (entry.instance.id.as_str(), entry.instance.action))
        .collect();
    assert_eq!(actions, vec![("b", Action::Added), ("a", Action::Deleted)]);
    assert_eq!(
        delta.counts.total(),
        1,
        "delta counts cover the current registry"
    );
}

#[test]
fn the_delta_lists_each_instance_at_its_latest_change_oldest_first_removals_last() {
    let registry = registry(true);
    for id in ["a", "b", "c", "d"] {
        registry.register(instance(id), false).unwrap();
        registry.clock().advance(1);
    }
    // `d` is removed before anything else changes: an order blind to removals would list
    // it first, where the Java client would drop it and then adopt it again with the app.
    registry.cancel("ORDERS", "d").unwrap();
    registry.clock().advance(1);
    registry
        .set_override("ORDERS", "a", Status::OutOfService, None)
        .unwrap();
    registry.clock().advance(1);
    registry.cancel("ORDERS", "b").unwrap();
    registry.clock().advance(1);
    registry.register(instance("e"), false).unwrap();
    let delta = registry.list_recent_changes();
    let order: Vec<(&str, Action)> = delta.apps[0]
        .1
        .iter()
        .map(|entry| (entry.instance.id.as_str(), entry.instance.action))
        .collect();
    assert_eq!(
        order,
        vec![
            ("c", Action::Added),
            ("a", Action::Modified),
            ("e", Action::Added),
            ("d", Action::Deleted),
            ("b", Action::Deleted),
        ]
    );
}

#[test]
fn the_delta_forgets_changes_older_than_the_retention() {
    let registry = registry(true);
    registry.register(instance("a"), false).unwrap();
    registry.clock().advance(181_000);
    assert!(registry.list_recent_changes().apps.is_empty());
    assert_eq!(registry.list_all().apps.len(), 1);
}

#[test]
fn eviction_removes_expired_leases_when_self_preservation_is_off() {
    let registry = registry(false);
    let mut short = instance("short");
    short.lease.duration_secs = 5;
    registry.register(short, false).unwrap();
    registry.register(instance("long"), false).unwrap();
    registry.clock().advance(6_000);
    // At most 15% of the registry per run: with 2 instances, one.
    assert_eq!(registry.evict_expired().unwrap(), 1);
    assert!(registry.instance("ORDERS", "short").is_none());
    assert!(registry.instance("ORDERS", "long").is_some());
    let delta = registry.list_recent_changes();
    let evicted = delta.apps[0]
        .1
        .iter()
        .find(|entry| entry.instance.id == "short")
        .unwrap();
    assert_eq!(evicted.instance.action, Action::Deleted);
    assert_eq!(evicted.instance.lease.eviction, START + 6_000);
}

#[test]
fn self_preservation_keeps_expired_leases_while_renewals_are_missing() {
    let registry = registry(true);
    let mut short = instance("short");
    short.lease.duration_secs = 5;
    registry.register(short, false).unwrap();
    registry.clock().advance(120_000);
    assert!(!registry.eviction_allowed());
    assert_eq!(registry.evict_expired().unwrap(), 0);
    assert!(registry.instance("ORDERS", "short").is_some());
}

#[test]
fn self_preservation_allows_eviction_while_renewals_are_healthy() {
    let registry = registry(true);
    for id in 0..10 {
        registry
            .register(instance(&format!("i{id}")), false)
            .unwrap();
    }
    // Threshold: floor(10 * 2 * 0.85) = 17 renewals per minute; send 20 in one minute.
    registry.clock().advance(60_000 - START.rem_euclid(60_000));
    for id in 0..10 {
        for _ in 0..2 {
            registry
                .renew("ORDERS", &format!("i{id}"), RenewRequest::default())
                .unwrap();
        }
    }
    registry.clock().advance(60_000);
    assert!(registry.eviction_allowed());
}

#[test]
fn listings_by_address_match_whole_comma_separated_entries() {
    let registry = registry(true);
    let mut first = instance("a");
    first.virtual_address = Some("orders,orders-v2".into());
    let mut second = instance("b");
    second.virtual_address = Some("orders-v2x".into());
    registry.register(first, false).unwrap();
    registry.register(second, false).unwrap();
    let listing = registry.list_by_address("orders-v2", false);
    assert_eq!(listing.apps.len(), 1);
    assert_eq!(listing.apps[0].1.len(), 1);
    assert_eq!(listing.counts.total(), 1);
    assert!(registry.list_by_address("orders-v2", true).apps.is_empty());
}

#[test]
fn the_recent_change_log_is_bounded() {
    let registry = Registry::new(
        RegistrySettings {
            max_recent_changes: 3,
            ..RegistrySettings::default()
        },
        Clock::manual(START),
        Arc::new(MemoryStore),
    );
    for id in 0..10 {
        registry
            .register(instance(&format!("i{id}")), false)
            .unwrap();
    }
    assert_eq!(registry.list_recent_changes().apps[0].1.len(), 3);
}

#[test]
fn watchers_wake_on_changes() {
    let registry = registry(true);
    let mut watcher = registry.watch();
    registry.register(instance("a"), false).unwrap();
    assert!(watcher.has_changed().unwrap());
    assert_eq!(*watcher.borrow_and_update(), registry.index());
}

#[test]
fn a_route_changes_what_views_publish_but_not_the_endpoints() {
    let registry = registry(true);
    registry.register(instance("a"), false).unwrap();
    let index = registry.index();
    let route = Route {
        host: "10.9.9.9".into(),
        port: 15001,
        publish_to_legacy: true,
    };
    assert_eq!(
        registry.set_route("ORDERS", Some(route.clone())).unwrap(),
        1
    );
    assert_eq!(
        registry.set_route("ORDERS", Some(route)).unwrap(),
        0,
        "setting it again is no change"
    );
    assert!(registry.index() > index);
    let published = registry.instance("ORDERS", "a").unwrap().instance;
    assert_eq!(
        (published.ip_addr.as_str(), published.port.number),
        ("10.9.9.9", 15001)
    );
    let delta = registry.list_recent_changes();
    assert_eq!(delta.apps[0].1[0].instance.action, Action::Modified);
    assert_eq!(delta.apps[0].1[0].instance.port.number, 15001);
    let (_, endpoints) = registry.endpoints("ORDERS");
    assert_eq!(
        (endpoints[0].host.as_str(), endpoints[0].port),
        ("10.0.0.1", 8080)
    );
    // The inbound listener forwards to the app itself, not to the route (this node's own
    // outbound listener, which would balance the call on to another node).
    let kept = registry.kept_here("ORDERS", "a").unwrap().instance;
    assert_eq!(
        (kept.ip_addr.as_str(), kept.port.number),
        ("10.0.0.1", 8080)
    );

    registry.set_route("ORDERS", None).unwrap();
    assert_eq!(
        registry.list_all().apps[0].1[0].instance.port.number,
        8080,
        "rolled back"
    );
}

#[test]
fn a_write_stamps_only_the_checks_it_changed() {
    let registry = registry(true);
    let mut agent = instance("web-1");
    let passing = Check {
        id: "kept".into(),
        status: crate::model::Health::Passing,
        probe: crate::model::Probe::Ttl {
            ttl: std::time::Duration::from_secs(60),
        },
        ..checks::maintenance_check(String::new(), None)
    };
    agent.checks = vec![passing; 2];
    agent.checks[1].id = "changed".into();
    registry.register_agent(agent, true).unwrap();
    let created = registry.index();
    registry
        .update_check(
            "changed",
            CheckUpdate {
                status: crate::model::Health::Warning,
                output: "slow".into(),
            },
            false,
        )
        .unwrap();
    let kept = registry.check("kept").unwrap();
    let changed = registry.check("changed").unwrap();
    assert_eq!((kept.create_index, kept.modify_index), (created, created));
    assert_eq!(changed.create_index, created);
    assert_eq!(changed.modify_index, registry.index());
    let record = registry.instance("ORDERS", "web-1").unwrap().instance;
    assert_eq!(
        (record.create_index, record.modify_index),
        (created, registry.index())
    );
}

/// A check of `probe`'s kind, in `status`, as a registration sends it.
fn agent_check(id: &str, status: Health, probe: Probe) -> Check {
    Check {
        id: id.into(),
        status,
        probe,
        ..checks::maintenance_check(String::new(), None)
    }
}

fn pass(registry: &Registry, check_id: &str, output: &str, ttl_only: bool) {
    let update = CheckUpdate {
        status: Health::Passing,
        output: output.into(),
    };
    registry.update_check(check_id, update, ttl_only).unwrap();
}

#[test]
fn agent_registrations_and_their_checks_survive_a_restart() {
    let dir = crate::store::scratch_dir();
    let path = dir.join("registrations.redb");
    let open = |clock: Clock| {
        let store = DurableStore::open(&path).unwrap();
        Registry::new(RegistrySettings::default(), clock, Arc::new(store))
    };
    let ttl = Probe::Ttl {
        ttl: Duration::from_secs(10),
    };
    let http = Probe::Http {
        url: "http://10.0.0.1:8080/health".into(),
        method: "GET".into(),
        headers: Default::default(),
        body: None,
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        tls_skip_verify: false,
    };
    let registry = open(Clock::manual(START));
    let mut web = instance("web-1");
    web.tags = vec!["blue".into()];
    web.checks = vec![
        agent_check("ttl-1", Health::Critical, ttl.clone()),
        agent_check("http-1", Health::Critical, http),
    ];
    registry.register_agent(web, true).unwrap();
    let mut gone = instance("web-2");
    gone.checks = vec![agent_check("ttl-2", Health::Passing, ttl.clone())];
    registry.register_agent(gone, true).unwrap();
    let mut doomed = instance("web-3");
    doomed.checks = vec![Check {
        deregister_critical_after: Some(Duration::from_secs(60)),
        ..agent_check("ttl-3", Health::Critical, ttl.clone())
    }];
    registry.register_agent(doomed, true).unwrap();
    registry.register(instance("eureka-1"), false).unwrap();
    pass(&registry, "ttl-1", "ready", true);
    pass(&registry, "http-1", "HTTP GET: 200 OK", false);
    registry.set_maintenance("web-2", true, None).unwrap();
    registry.deregister_agent("web-2").unwrap();
    let before = registry.agent_instance("web-1").unwrap().instance;
    drop(registry);

    // Restarted 30 s later: the TTL check has not been renewed since, but its timer
    // starts again at the restart.
    let restarted = open(Clock::manual(START + 30_000));
    assert_eq!(restarted.restore().unwrap(), 2);
    let back = restarted.agent_instance("web-1").unwrap().instance;
    let health = |instance: &Instance| -> Vec<(String, Health, String)> {
        let checks = instance.checks.iter();
        checks
            .map(|check| (check.id.clone(), check.status, check.output.clone()))
            .collect()
    };
    assert_eq!(health(&back), health(&before));
    assert_eq!(
        health(&back)[0],
        ("ttl-1".into(), Health::Passing, "ready".into())
    );
    assert_eq!(
        (back.status, back.registration),
        (Status::Up, Registration::Agent)
    );
    assert_eq!(back.tags, ["blue"]);
    assert_eq!(back.checks[1].probe, before.checks[1].probe);
    assert!(restarted.agent_instance("web-2").is_none(), "deregistered");
    assert!(restarted.check("_service_maintenance:web-2").is_none());
    assert!(
        restarted.instance("ORDERS", "eureka-1").is_none(),
        "a lease"
    );
    assert_eq!(
        restarted.check("ttl-3").unwrap().critical_since,
        Some(START)
    );

    restarted.clock().advance(10_000);
    assert_eq!(
        restarted.expire_ttls().unwrap(),
        0,
        "a full TTL from the restart"
    );
    restarted.clock().advance(1);
    assert_eq!(restarted.expire_ttls().unwrap(), 1);
    assert_eq!(restarted.check("ttl-1").unwrap().status, Health::Critical);
    // Critical since before the restart, for longer than its 60 s: reaped at once.
    restarted.clock().advance(20_000);
    assert_eq!(restarted.reap_critical(Duration::ZERO).unwrap(), 1);
    assert!(restarted.agent_instance("web-3").is_none());
    restarted.deregister_agent("web-1").unwrap();
    drop(restarted);

    let again = open(Clock::manual(START + 90_000));
    assert_eq!(again.restore().unwrap(), 0, "deregistrations are kept too");
    assert!(again.agent_instances().is_empty());
    drop(again);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_catalog_index_moves_when_an_address_port_or_route_changes_not_on_a_status_change() {
    let registry = registry(true);
    registry.register(instance("a"), false).unwrap();
    let catalog_index = || registry.catalog().0;
    let registered = catalog_index();

    // The same registration again (a heartbeat-like re-registration): the catalog is
    // unchanged, though the app's record was rewritten.
    registry.register(instance("a"), false).unwrap();
    assert_eq!(catalog_index(), registered);
    // A status change is the health view's, not the catalog's.
    let mut down = instance("a");
    down.status = Status::Down;
    registry.register(down, false).unwrap();
    assert_eq!(catalog_index(), registered);

    let mut moved = instance("a");
    moved.port.number = 9090;
    registry.register(moved.clone(), false).unwrap();
    let after_port = catalog_index();
    assert!(
        after_port > registered,
        "a new port moves the catalog index"
    );
    moved.ip_addr = "10.0.0.2".into();
    registry.register(moved, false).unwrap();
    let after_address = catalog_index();
    assert!(after_address > after_port, "a new address moves it");

    let route = Route {
        host: "127.0.0.1".into(),
        port: 15001,
        publish_to_legacy: true,
    };
    registry.set_route("ORDERS", Some(route)).unwrap();
    assert!(
        catalog_index() > after_address,
        "a route changes what is published"
    );
}
