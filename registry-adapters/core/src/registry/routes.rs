//! Mesh routes: for an app in the mesh, the address views publish instead of its
//! instances' own (the local proxy's listener for that app).
//!
//! A route is a publishing rule, not part of any record: the stored instances keep their
//! real addresses (the data plane reads those through `Registry::endpoints`), and each
//! read applies the route on the way out. Setting or clearing one re-publishes the app's
//! instances as MODIFIED so Eureka clients pick it up from their next delta.

use std::collections::HashMap;
use std::sync::Arc;

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
        if !state.routes.set(app, route) {
            return Ok(0);
        }
        let instances = state.listings.current_of(app);
        let changed = instances.len();
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
        Ok(changed)
    }

    /// The route published for `app`, if it is in the mesh.
    pub fn route(&self, app: &str) -> Option<Route> {
        self.state.read().routes.get(app).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
