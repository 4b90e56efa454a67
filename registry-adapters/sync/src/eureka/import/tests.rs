use std::time::Duration;

use ferry_core::model::{Instance, Status, OWNER_FERRY, OWNER_METADATA_KEY};
use ferry_core::registry::Registry;

use super::{reconcile, Reconciled, Removal, RemovalHold};
use crate::eureka::mirror::Mirror;
use crate::eureka::OWNER;

const GRACE: Duration = Duration::from_secs(90);
const T0: i64 = 1_000_000;

fn legacy(app: &str, id: &str) -> Instance {
    Instance::new(app, id, "10.0.0.7", "10.0.0.7", 8080)
}

fn mirror_of(instances: Vec<Instance>) -> Mirror {
    let mut mirror = Mirror::default();
    mirror.replace(instances);
    mirror
}

fn ids(registry: &Registry) -> Vec<String> {
    registry
        .imported(OWNER)
        .iter()
        .map(|copy| copy.id.clone())
        .collect()
}

#[test]
fn without_a_window_a_few_removals_happen_at_once() {
    let mut hold = RemovalHold::default();
    assert_eq!(hold.decide(T0, 1, 10, GRACE), Removal::Now);
    assert_eq!(
        hold.decide(T0, 2, 3, GRACE),
        Removal::Now,
        "two is no burst"
    );
    assert_eq!(
        hold.decide(T0, 5, 10, GRACE),
        Removal::Now,
        "half is no burst"
    );
}

#[test]
fn a_burst_is_held_for_the_grace_period_once() {
    let mut hold = RemovalHold::default();
    assert_eq!(hold.decide(T0, 6, 10, GRACE), Removal::Held);
    assert_eq!(hold.decide(T0 + 89_999, 6, 10, GRACE), Removal::Held);
    assert_eq!(
        hold.decide(T0 + 90_000, 6, 10, GRACE),
        Removal::Now,
        "what is still gone when the window ends goes, burst or not"
    );
    assert_eq!(
        hold.decide(T0 + 90_001, 3, 4, GRACE),
        Removal::Held,
        "a new burst"
    );
}

#[test]
fn an_open_window_holds_every_removal() {
    let mut hold = RemovalHold::default();
    hold.open(T0, GRACE);
    assert_eq!(hold.decide(T0 + 1, 1, 10, GRACE), Removal::Held);
    hold.open(T0 + 30_000, GRACE);
    assert_eq!(
        hold.decide(T0 + 100_000, 1, 10, GRACE),
        Removal::Held,
        "reopening extends"
    );
    assert_eq!(hold.decide(T0 + 120_000, 1, 10, GRACE), Removal::Now);
    assert_eq!(hold.decide(T0 + 120_001, 1, 10, GRACE), Removal::Now);
}

#[test]
fn copies_follow_the_mirror_and_ferrys_own_exports_are_skipped() {
    let registry = Registry::default();
    let mut exported = legacy("orders", "o-ferry");
    exported
        .metadata
        .insert(OWNER_METADATA_KEY.to_owned(), OWNER_FERRY.to_owned());
    let mirror = mirror_of(vec![
        legacy("orders", "o-1"),
        legacy("billing", "b-1"),
        exported,
    ]);
    let mut hold = RemovalHold::default();
    let outcome = reconcile(&registry, &mirror, &mut hold, T0, GRACE);
    assert_eq!(
        outcome,
        Reconciled {
            written: 2,
            removed: 0,
            held: 0,
            imported: 2
        }
    );
    assert_eq!(ids(&registry), ["b-1", "o-1"]);

    // Nothing changed: nothing written, no index spent.
    let index = registry.index();
    let outcome = reconcile(&registry, &mirror, &mut hold, T0, GRACE);
    assert_eq!(outcome.written, 0);
    assert_eq!(registry.index(), index);

    // A status change is written; an instance gone is removed.
    let mut down = legacy("orders", "o-1");
    down.status = Status::Down;
    let mirror = mirror_of(vec![down]);
    let outcome = reconcile(&registry, &mirror, &mut hold, T0, GRACE);
    assert_eq!(
        (outcome.written, outcome.removed, outcome.imported),
        (1, 1, 1)
    );
    let stored = registry.instance("ORDERS", "o-1").unwrap().instance;
    assert_eq!(stored.status, Status::Down);
}

#[test]
fn an_instance_ferry_owns_is_never_taken_nor_removed() {
    let registry = Registry::default();
    registry.register(legacy("orders", "o-1"), false).unwrap();
    let mut hold = RemovalHold::default();
    let outcome = reconcile(
        &registry,
        &mirror_of(vec![legacy("orders", "o-1")]),
        &mut hold,
        T0,
        GRACE,
    );
    assert_eq!((outcome.written, outcome.imported), (0, 0));
    let outcome = reconcile(&registry, &mirror_of(vec![]), &mut hold, T0, GRACE);
    assert_eq!(outcome.removed, 0);
    assert!(registry.instance("ORDERS", "o-1").is_some());
}

#[test]
fn a_legacy_server_that_comes_back_empty_keeps_the_copies_for_the_grace_period() {
    let registry = Registry::default();
    let everything: Vec<Instance> = (0..10)
        .map(|n| legacy("orders", &format!("o-{n}")))
        .collect();
    let mut hold = RemovalHold::default();
    reconcile(
        &registry,
        &mirror_of(everything.clone()),
        &mut hold,
        T0,
        GRACE,
    );

    let mut reconcile_at = |known: usize, now: i64| {
        reconcile(
            &registry,
            &mirror_of(everything[..known].to_vec()),
            &mut hold,
            now,
            GRACE,
        )
    };

    // Restarted: it knows 2 of 10 so far. A burst: held.
    let outcome = reconcile_at(2, T0 + 1_000);
    assert_eq!(
        (outcome.removed, outcome.held, outcome.imported),
        (0, 8, 10)
    );

    // The apps register again within the window: nothing is ever removed.
    let outcome = reconcile_at(9, T0 + 30_000);
    assert_eq!((outcome.removed, outcome.held), (0, 1));

    // The one that never came back goes once the window ends.
    let outcome = reconcile_at(9, T0 + 91_000);
    assert_eq!((outcome.removed, outcome.held, outcome.imported), (1, 0, 9));
    assert!(!ids(&registry).contains(&"o-9".to_owned()));
}

#[test]
fn a_quiet_cycle_offers_only_what_ferry_no_longer_holds() {
    let registry = Registry::default();
    let mut mirror = mirror_of(vec![legacy("orders", "o-1"), legacy("orders", "o-2")]);
    let mut hold = RemovalHold::default();
    assert_eq!(
        reconcile(&registry, &mirror, &mut hold, T0, GRACE).written,
        2
    );
    mirror.clear_changed();

    // An app registered with Ferry under o-1 took it over, then left: with no change on the
    // legacy side, the legacy instance is imported again at the next cycle.
    let mut own = legacy("orders", "o-1");
    own.port.number = 9000;
    registry.register(own, false).unwrap();
    registry.cancel("ORDERS", "o-1").unwrap();
    let outcome = reconcile(&registry, &mirror, &mut hold, T0, GRACE);
    assert_eq!((outcome.written, outcome.imported), (1, 2));
    let back = registry.instance("ORDERS", "o-1").unwrap().instance;
    assert_eq!(back.port.number, 8080);
    mirror.clear_changed();

    let index = registry.index();
    assert_eq!(
        reconcile(&registry, &mirror, &mut hold, T0, GRACE).written,
        0
    );
    assert_eq!(registry.index(), index, "a quiet cycle writes nothing");
}
