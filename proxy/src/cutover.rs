//! Which services are in the mesh, and the stable local port each one's outbound listener
//! uses. Kept in `cutover.json` under the data directory and written atomically (temporary
//! file, sync, rename, sync of the folder) before a change is acknowledged, so a mode
//! survives a crash and a service keeps its port across restarts and round trips.
//!
//! With a shared store the modes live there (the mesh's `SharedModes`) and a node starts
//! from them (`replace_modes`); the file then keeps this node's ports, which are its own.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Callers get the instances' own addresses; Ferry is only a registry.
    Legacy,
    /// Callers get Ferry's outbound listener for the service.
    Mesh,
}

impl Mode {
    pub fn parse(text: &str) -> Option<Mode> {
        match text.trim().to_ascii_lowercase().as_str() {
            "legacy" => Some(Mode::Legacy),
            "mesh" => Some(Mode::Mesh),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Legacy => "legacy",
            Mode::Mesh => "mesh",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePolicy {
    pub mode: Mode,
    /// Handed out once, then kept for good, even while the service is back in legacy.
    pub port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum CutoverError {
    #[error("no free port left in {first}-{last} for {service}")]
    PortsExhausted {
        service: String,
        first: u16,
        last: u16,
    },
    #[error("cannot save {path}: {source}")]
    Save {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {reason}")]
    Load { path: PathBuf, reason: String },
}

#[derive(Debug)]
pub struct CutoverTable {
    path: PathBuf,
    ports: (u16, u16),
    /// Upper-case service name -> its policy.
    services: BTreeMap<String, ServicePolicy>,
}

#[derive(Serialize, Deserialize, Default)]
struct File {
    services: BTreeMap<String, ServicePolicy>,
}

impl CutoverTable {
    /// Loads the table from `data_dir/cutover.json` (empty when missing).
    pub fn load(data_dir: &Path, ports: (u16, u16)) -> Result<CutoverTable, CutoverError> {
        let path = data_dir.join("cutover.json");
        let services = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<File>(&bytes)
                    .map_err(|error| CutoverError::Load {
                        path: path.clone(),
                        reason: error.to_string(),
                    })?
                    .services
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(error) => {
                return Err(CutoverError::Load {
                    path,
                    reason: error.to_string(),
                })
            }
        };
        Ok(CutoverTable {
            path,
            ports,
            services,
        })
    }

    pub fn get(&self, service: &str) -> Option<&ServicePolicy> {
        self.services.get(service)
    }

    pub fn all(&self) -> &BTreeMap<String, ServicePolicy> {
        &self.services
    }

    /// Sets a service's mode, handing it a port on first use; saved before returning.
    pub fn set(&mut self, service: &str, mode: Mode) -> Result<ServicePolicy, CutoverError> {
        let port = match self.services.get(service) {
            Some(policy) => policy.port,
            None => self.free_port(service)?,
        };
        let policy = ServicePolicy { mode, port };
        let previous = self.services.insert(service.to_owned(), policy.clone());
        if let Err(error) = self.save() {
            match previous {
                Some(previous) => self.services.insert(service.to_owned(), previous),
                None => self.services.remove(service),
            };
            return Err(error);
        }
        Ok(policy)
    }

    /// Takes every service's mode from `modes` (a shared store's table): a service it does
    /// not name is in legacy. Ports already handed out are kept; saved before returning.
    pub fn replace_modes(&mut self, modes: &BTreeMap<String, Mode>) -> Result<(), CutoverError> {
        let previous = self.services.clone();
        for policy in self.services.values_mut() {
            policy.mode = Mode::Legacy;
        }
        for (service, mode) in modes {
            let port = match self.services.get(service) {
                Some(policy) => policy.port,
                None => match self.free_port(service) {
                    Ok(port) => port,
                    Err(error) => {
                        self.services = previous;
                        return Err(error);
                    }
                },
            };
            self.services
                .insert(service.clone(), ServicePolicy { mode: *mode, port });
        }
        if let Err(error) = self.save() {
            self.services = previous;
            return Err(error);
        }
        Ok(())
    }

    fn free_port(&self, service: &str) -> Result<u16, CutoverError> {
        let (first, last) = self.ports;
        (first..=last)
            .find(|port| !self.services.values().any(|policy| policy.port == *port))
            .ok_or_else(|| CutoverError::PortsExhausted {
                service: service.to_owned(),
                first,
                last,
            })
    }

    fn save(&self) -> Result<(), CutoverError> {
        let error = |source| CutoverError::Save {
            path: self.path.clone(),
            source,
        };
        let body = serde_json::to_vec_pretty(&File {
            services: self.services.clone(),
        })
        .map_err(|serde_error| error(std::io::Error::other(serde_error)))?;
        let temporary = self.path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&temporary).map_err(error)?;
        file.write_all(&body).map_err(error)?;
        file.sync_all().map_err(error)?;
        std::fs::rename(&temporary, &self.path).map_err(error)?;
        if let Some(folder) = self.path.parent() {
            std::fs::File::open(folder)
                .and_then(|folder| folder.sync_all())
                .map_err(error)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stable_across_modes_and_reloads() {
        let folder = std::env::temp_dir().join(format!("ferry-cutover-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let mut table = CutoverTable::load(&folder, (15001, 15002)).unwrap();
        let orders = table.set("ORDERS", Mode::Mesh).unwrap();
        let billing = table.set("BILLING", Mode::Mesh).unwrap();
        assert_ne!(orders.port, billing.port);
        assert_eq!(table.set("ORDERS", Mode::Legacy).unwrap().port, orders.port);
        assert!(matches!(
            table.set("THIRD", Mode::Mesh),
            Err(CutoverError::PortsExhausted { .. })
        ));
        assert!(
            table.get("THIRD").is_none(),
            "a refused change leaves nothing behind"
        );
        let reloaded = CutoverTable::load(&folder, (15001, 15002)).unwrap();
        assert_eq!(
            reloaded.get("ORDERS"),
            Some(&ServicePolicy {
                mode: Mode::Legacy,
                port: orders.port
            })
        );
        assert_eq!(reloaded.get("BILLING").unwrap().mode, Mode::Mesh);
        std::fs::remove_dir_all(folder).unwrap();
    }

    #[test]
    fn a_shared_table_replaces_the_modes_and_keeps_the_ports() {
        let folder =
            std::env::temp_dir().join(format!("ferry-cutover-shared-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let mut table = CutoverTable::load(&folder, (15001, 15003)).unwrap();
        let orders = table.set("ORDERS", Mode::Mesh).unwrap();
        let shared = BTreeMap::from([("BILLING".to_owned(), Mode::Mesh)]);
        table.replace_modes(&shared).unwrap();
        assert_eq!(
            table.get("ORDERS"),
            Some(&ServicePolicy {
                mode: Mode::Legacy,
                port: orders.port
            })
        );
        assert_eq!(table.get("BILLING").unwrap().mode, Mode::Mesh);
        assert_ne!(table.get("BILLING").unwrap().port, orders.port);
        let reloaded = CutoverTable::load(&folder, (15001, 15003)).unwrap();
        assert_eq!(reloaded.all(), table.all());
        std::fs::remove_dir_all(folder).unwrap();
    }
}
