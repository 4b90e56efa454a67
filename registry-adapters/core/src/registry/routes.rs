//! Mesh routes: for an app in the mesh, the address views publish instead of its
//! instances' own (the local proxy's listener for that app).
//!
//! A route is a publishing rule, not part of any record: the stored instances keep their
//! real addresses (the data plane reads those through `Registry::endpoints`), and each
//! read applies the route on the way out. Setting or clearing one re-publishes the app's
//! instances as MODIFIED so Eureka clients pick it up from their next delta. With a shared
//! store the route stays this node's alone and nothing is written (see `set_route`).
//! Each change of a route is a `cutover` or `rollback` event: every node sets its own route
//! when it applies a mode (`ferry-proxy`'s `Mesh::apply`, for a local change and for one
//! another node made in the shared cutover table), so every node's log shows it.

use std::collections::HashMap;
use std::sync::Arc;

use super::events::EventKind;
use super::{Registry, RegistryError};
use crate::model::{Action, Instance, Port};

/// Where callers of an app in the mesh are sent instead of the instances' own addresses:
/// the local proxy's listener for that app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub host: String,
    pub port: u32,
    /// Whether a legacy registry Ferry syncs with is shown this route too (so apps still on
    /// it reach the service through the proxy), or the instances' own addresses.
    pub publish_to_legacy: bool,
}

/// Upper-case app -> the route views publish instead of its instances' addresses.
#[derive(Debug, Default)]
pub(super) struct Routes {
    by_app: HashMap<String, Route>,
}

impl Routes {
    pub(super) fn get(&self, app: &str) -> Option<&Route> {
        self.by_app.get(app)
    }

    /// Sets or clears the route of `app`; false when that is what it already was.
    fn set(&mut self, app: &str, route: Option<Route>) -> bool {
        let unchanged = match &route {
            Some(route) => self.by_app.get(app) == Some(route),
            None => !self.by_app.contains_key(app),
        };
        if unchanged {
            return false;
        }
        match route {
            Some(route) => self.by_app.insert(app.to_owned(), route),
            None => self.by_app.remove(app),
        };
        true
    }
}

/// The instance as views publish it: with `route` applied, if any. Without a route the
/// record is shared, not copied. The sync adapters publish instances to a legacy registry
/// through it too, so a route reads the same everywhere.
pub fn routed(instance: &Arc<Instance>, route: Option<&Route>) -> Arc<Instance> {
    let Some(route) = route else {
        return instance.clone();
    };
    let mut published = (**instance).clone();
    published.host_name = route.host.clone();
    published.ip_addr = route.host.clone();
    published.port = Port {
        number: route.port,
        enabled: true,
    };
    published.secure_port.enabled = false;
    Arc::new(published)
}

impl Registry {
    /// Publishes `route` for every instance of `app` (or stops, with `None`). Each instance
    /// shows the change as MODIFIED in the next delta and moves the app's and the catalog's
    /// indexes, so callers follow on their next refresh. Returns how many instances changed.
    pub fn set_route(&self, app: &str, route: Option<Route>) -> Result<usize, RegistryError> {
        let now = self.now();
        let mut state = self.state.write();
        let previous = state.routes.get(app).cloned();
        let event = route_event(previous.as_ref(), route.as_ref());
        if !state.routes.set(app, route) {
            return Ok(0);
        }
        let instances = state.listings.current_of(app);
        let changed = instances.len();
        if self.store.feed().is_some() {
            // A shared store: the route is this node's own (its outbound listener), so no
            // record is written: every node writing every instance of the app on each
            // cutover would cost N writes per instance, and each node's copy written back
            // could overwrite a newer record. Deltas here show the change at once; the
            // node that made the cutover touches the instances in the store once, which
            // moves every node's index and wakes its readers.
            for mut instance in instances {
                instance.action = Action::Modified;
                instance.last_updated = now;
                state.listings.record(now, Arc::new(instance));
            }
            let (kind, detail) = event;
            state.events.push(now, kind, app, None, detail);
            return Ok(changed);
        }
        for mut instance in instances {
            instance.action = Action::Modified;
            instance.last_updated = now;
            if let Err(error) = self.put_published(&mut state, instance, now, true) {
                // A cutover the store refused did not happen: the caller is told so and
                // the route handed out stays the one before.
                state.routes.set(app, previous);
                return Err(error);
            }
        }
        let (kind, detail) = event;
        state.events.push(now, kind, app, None, detail);
        Ok(changed)
    }

    /// The route published for `app`, if it is in the mesh.
    pub fn route(&self, app: &str) -> Option<Route> {
        self.state.read().routes.get(app).cloned()
    }
}

/// The event a route change is: into the mesh (or to another mesh address), or back out.
fn route_event(previous: Option<&Route>, route: Option<&Route>) -> (EventKind, String) {
    match (previous, route) {
        (Some(_), Some(route)) => (
            EventKind::Cutover,
            format!("mesh address now {}:{}", route.host, route.port),
        ),
        (None, Some(route)) => (
            EventKind::Cutover,
            format!("legacy → mesh at {}:{}", route.host, route.port),
        ),
        (_, None) => (
            EventKind::Rollback,
            "mesh → legacy: the instances' own addresses".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::registry::RegistrySettings;
    use crate::store::{Change, Feed, Replicated, Store, StoreError, Written};

    /// A shared store whose only content arrives through its feed; it counts writes.
    #[derive(Default)]
    struct SharedStore {
        feed: Feed,
        writes: std::sync::atomic::AtomicUsize,
    }

    impl Store for SharedStore {
        fn name(&self) -> &'static str {
            "shared"
        }
        fn write(&self, _change: &Change<'_>) -> Result<Written, StoreError> {
            self.writes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(Written::At(1_000))
        }
        fn load(&self) -> Result<Vec<Instance>, StoreError> {
            Ok(Vec::new())
        }
        fn feed(&self) -> Option<&Feed> {
            Some(&self.feed)
        }
    }

    #[test]
    fn with_a_shared_store_a_route_is_published_here_and_nothing_is_written() {
        let store = Arc::new(SharedStore::default());
        let registry = Registry::new(RegistrySettings::default(), Clock::System, store.clone());
        store.feed.push(Replicated::Put {
            instance: Box::new(Instance::new("ORDERS", "o-1", "10.0.0.7", "10.0.0.7", 8080)),
            created: 7,
            revision: 7,
        });
        registry.apply_feed();
        let route = Route {
            host: "127.0.0.1".into(),
            port: 15001,
            publish_to_legacy: true,
        };
        assert_eq!(registry.set_route("ORDERS", Some(route)).unwrap(), 1);
        assert_eq!(
            store.writes.load(std::sync::atomic::Ordering::Relaxed),
            0,
            "no node writes instances for its own route"
        );
        let delta = registry.list_recent_changes();
        let published = &delta.apps[0].1[0].instance;
        assert_eq!(published.action, Action::Modified);
        assert_eq!(
            (published.host_name.as_str(), published.port.number),
            ("127.0.0.1", 15001)
        );
        assert_eq!(registry.index(), 7, "no revision is invented");
    }

    #[test]
    fn setting_what_is_already_set_is_no_change() {
        let mut routes = Routes::default();
        let route = Route {
            host: "10.9.9.9".into(),
            port: 15001,
            publish_to_legacy: true,
        };
        assert!(!routes.set("ORDERS", None), "nothing to clear");
        assert!(routes.set("ORDERS", Some(route.clone())));
        assert!(!routes.set("ORDERS", Some(route.clone())));
        assert_eq!(routes.get("ORDERS"), Some(&route));
        assert!(routes.set("ORDERS", None));
        assert_eq!(routes.get("ORDERS"), None);
    }
}
