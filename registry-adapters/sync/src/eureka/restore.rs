//! After a Ferry restart: the instances a previous run exported are registered with Ferry
//! again from their legacy copies, before Ferry serves, as a Eureka server copies its
//! registry from a peer when it starts (`syncUp`). Ferry keeps leases in memory, so without
//! this every app registered with Ferry would be missing from Ferry's views (and its
//! services empty for Ferry's callers) until its next heartbeat found a 404 and it
//! registered again. Restored, the app's next heartbeat simply renews; an app that died
//! while Ferry was down expires here after its lease, and its copy is then cancelled on the
//! legacy side like any other.
//!
//! A copy published at Ferry's proxy (a service in the mesh) carries its real address in
//! `ferry-real-address` (`hostName ipAddr port`), so it is restored where it really is:
//! a proxy must never balance over its own listener.

use ferry_core::model::{Instance, Port, Registration, OWNER_METADATA_KEY};
use ferry_core::registry::Registry;

use super::mirror::{exported_by_ferry, Mirror};

/// The metadata key a routed copy keeps its real address under.
pub(crate) const REAL_ADDRESS_KEY: &str = "ferry-real-address";

/// The real address of a routed instance, as `REAL_ADDRESS_KEY` spells it.
pub(crate) fn real_address(instance: &Instance) -> String {
    format!(
        "{} {} {}",
        instance.host_name, instance.ip_addr, instance.port.number
    )
}

/// Registers with Ferry every copy in `mirror` a previous run exported that Ferry does not
/// hold; returns how many.
pub(crate) fn restore_exported(registry: &Registry, mirror: &Mirror) -> usize {
    let mut restored = 0;
    for copy in mirror.instances().filter(|copy| exported_by_ferry(copy)) {
        if registry.instance(&copy.app, &copy.id).is_some() {
            continue;
        }
        let Some(instance) = as_registered(copy) else {
            tracing::warn!(app = %copy.app, id = %copy.id,
                "eureka sync: a copy with an unreadable real address is not restored");
            continue;
        };
        match registry.register(instance, false) {
            Ok(()) => restored += 1,
            Err(error) => {
                tracing::warn!(app = %copy.app, id = %copy.id, %error,
                    "eureka sync: a copy could not be restored");
            }
        }
    }
    if restored > 0 {
        tracing::info!(
            restored,
            "eureka sync: instances a previous run exported registered again"
        );
    }
    restored
}

/// The instance as its app registered it with Ferry: without the export's marks, at its
/// real address.
fn as_registered(copy: &Instance) -> Option<Instance> {
    let mut instance = copy.clone();
    instance.metadata.remove(OWNER_METADATA_KEY);
    if let Some(address) = instance.metadata.remove(REAL_ADDRESS_KEY) {
        let mut parts = address.split(' ');
        let (host, ip, port) = (parts.next()?, parts.next()?, parts.next()?);
        if host.is_empty() || ip.is_empty() || parts.next().is_some() {
            return None;
        }
        instance.host_name = host.to_owned();
        instance.ip_addr = ip.to_owned();
        instance.port = Port {
            number: port.parse().ok()?,
            enabled: true,
        };
    }
    instance.registration = Registration::Lease;
    Some(instance)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::model::{Status, OWNER_FERRY};

    fn exported(id: &str, port: u32) -> Instance {
        let mut copy = Instance::new("orders", id, "10.0.0.9", "10.0.0.9", port);
        copy.metadata
            .insert(OWNER_METADATA_KEY.to_owned(), OWNER_FERRY.to_owned());
        copy.metadata.insert("zone".to_owned(), "a".to_owned());
        copy
    }

    #[test]
    fn copies_ferry_exported_come_back_as_its_own_leases() {
        let registry = Registry::default();
        let mut mirror = Mirror::default();
        let mut routed = exported("o-2", 15001);
        routed.host_name = "ferry".to_owned();
        routed.ip_addr = "10.0.0.1".to_owned();
        let mut real = Instance::new("orders", "o-2", "orders-2.local", "10.0.0.8", 8080);
        real.status = Status::Up;
        routed
            .metadata
            .insert(REAL_ADDRESS_KEY.to_owned(), real_address(&real));
        let mut foreign = exported("legacy-1", 9000);
        foreign.metadata.remove(OWNER_METADATA_KEY);
        mirror.replace(vec![exported("o-1", 8080), routed, foreign]);

        assert_eq!(restore_exported(&registry, &mirror), 2);
        let first = registry.instance("ORDERS", "o-1").unwrap().instance;
        assert_eq!(first.registration, Registration::Lease);
        assert_eq!(first.port.number, 8080);
        assert_eq!(first.metadata.get("zone").map(String::as_str), Some("a"));
        assert!(!first.metadata.contains_key(OWNER_METADATA_KEY));
        let second = registry.instance("ORDERS", "o-2").unwrap().instance;
        assert_eq!(
            (
                second.host_name.as_str(),
                second.ip_addr.as_str(),
                second.port.number
            ),
            ("orders-2.local", "10.0.0.8", 8080)
        );
        assert!(!second.metadata.contains_key(REAL_ADDRESS_KEY));
        assert!(
            registry.instance("ORDERS", "legacy-1").is_none(),
            "not Ferry's"
        );
        assert_eq!(restore_exported(&registry, &mirror), 0, "held already");
    }

    #[test]
    fn an_unreadable_real_address_is_not_restored() {
        let registry = Registry::default();
        let mut mirror = Mirror::default();
        let mut copy = exported("o-1", 15001);
        copy.metadata
            .insert(REAL_ADDRESS_KEY.to_owned(), "just-a-host".to_owned());
        mirror.replace(vec![copy]);
        assert_eq!(restore_exported(&registry, &mirror), 0);
        assert!(registry.instance("ORDERS", "o-1").is_none());
    }
}
