//! Ferry's own services in its registry: its Config Server, listed like any instance so
//! that Spring Config clients that find their server by discovery
//! (`spring.cloud.config.discovery.enabled=true`, service id `configserver` by default)
//! find Ferry's, through the Eureka view and the Consul view alike.
//!
//! Such a client builds the server's URL from the instance alone: its URI (scheme from the
//! secure flag, its host and port) plus `/`, and the `configPath` metadata when there is
//! some (Spring Cloud Config's `ConfigServerInstanceMonitor`). Ferry serves the Config
//! Server API at the root of its config listener, so the instance is that listener's
//! advertised host and port, plain HTTP, with no `configPath`.
//!
//! It is an agent registration (no lease to renew; UP, having no checks), kept by the
//! store like any other and listed again at every start, under an id that names the node
//! and not the port or the service name, so a restart with other settings replaces it and
//! one with the listing turned off removes it.

use super::{AgentError, Registry};
use crate::model::{Instance, Registration};

/// Where this node's Config Server is reached, and under which service name it is listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigServerListing {
    /// The service name clients look up (`spring.cloud.config.discovery.service-id`).
    pub service_name: String,
    /// This node's name; it makes the instance id unique among nodes.
    pub node: String,
    /// The host apps reach this node at (the advertised host).
    pub host: String,
    /// The config listener's port.
    pub port: u16,
}

/// The instance id of a node's own Config Server listing.
pub fn config_server_id(node: &str) -> String {
    format!("ferry-config-server:{node}")
}

impl ConfigServerListing {
    /// The listing as an instance.
    pub fn instance(&self) -> Instance {
        let id = config_server_id(&self.node);
        let mut instance = Instance::new(
            &self.service_name,
            &id,
            &self.host,
            &self.host,
            u32::from(self.port),
        );
        instance.name = Some(self.service_name.clone());
        instance.registration = Registration::Agent;
        let base = format!("http://{}:{}", url_host(&self.host), self.port);
        instance.links.home_page = Some(format!("{base}/"));
        // The Config Server API answers its health here, with 200 while Ferry serves.
        instance.links.status_page = Some(format!("{base}/actuator/health"));
        instance.links.health_check = Some(format!("{base}/actuator/health"));
        let address = self.service_name.to_ascii_lowercase();
        instance.virtual_address = Some(address.clone());
        instance.secure_virtual_address = Some(address);
        instance
    }
}

/// An IPv6 literal in brackets, as a URL needs it.
fn url_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

impl Registry {
    /// Lists this node's Config Server (replacing an earlier listing of the node's).
    pub fn list_config_server(&self, listing: &ConfigServerListing) -> Result<(), AgentError> {
        self.register_agent(listing.instance(), true)
    }

    /// Removes this node's Config Server listing, if a previous start left one.
    pub fn unlist_config_server(&self, node: &str) -> Result<(), AgentError> {
        match self.deregister_agent(&config_server_id(node)) {
            Err(AgentError::UnknownService(_)) => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

    fn listing(service_name: &str, port: u16) -> ConfigServerListing {
        ConfigServerListing {
            service_name: service_name.to_owned(),
            node: "n1".to_owned(),
            host: "10.0.0.5".to_owned(),
            port,
        }
    }

    #[test]
    fn the_config_server_is_an_up_instance_at_the_listener_and_a_restart_replaces_it() {
        let registry = Registry::default();
        registry
            .list_config_server(&listing("configserver", 8888))
            .unwrap();
        let found = registry
            .instance("CONFIGSERVER", "ferry-config-server:n1")
            .unwrap()
            .instance;
        assert_eq!(found.status, Status::Up);
        assert_eq!(
            (found.ip_addr.as_str(), found.port.number),
            ("10.0.0.5", 8888)
        );
        assert_eq!(found.name.as_deref(), Some("configserver"));
        assert_eq!(
            found.links.status_page.as_deref(),
            Some("http://10.0.0.5:8888/actuator/health")
        );

        // Other settings at the next start: the node's one listing moves.
        registry
            .list_config_server(&listing("config", 9999))
            .unwrap();
        assert!(registry.app("CONFIGSERVER").is_none());
        let moved = registry.app("CONFIG").unwrap();
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].instance.port.number, 9999);

        registry.unlist_config_server("n1").unwrap();
        assert!(registry.app("CONFIG").is_none());
        registry.unlist_config_server("n1").unwrap();
    }

    #[test]
    fn an_ipv6_host_is_bracketed_in_urls() {
        let mut ipv6 = listing("configserver", 8888);
        ipv6.host = "fd00::5".to_owned();
        assert_eq!(
            ipv6.instance().links.home_page.as_deref(),
            Some("http://[fd00::5]:8888/")
        );
    }
}
