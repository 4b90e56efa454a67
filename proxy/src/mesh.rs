//! The mesh: which services are cut over, their outbound listeners, and the routes the
//! registry publishes for them.
//!
//! Cutting a service over opens its listener first and only then publishes the route, so a
//! caller is never handed an address that is not listening. Rolling back withdraws the
//! route but keeps the listener open: callers that still hold the mesh address until their
//! next registry refresh keep being served, so neither direction fails a request.
//!
//! Many nodes sharing one store share the modes through `SharedModes` (the proxy knows no
//! store): a change made here is saved there first and acknowledged only once it is, and
//! every node applies the changes it is told of with `apply`, exactly as a local one.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ferry_core::registry::{Endpoint, RegistryError, Route};
use ferry_core::Registry;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::cutover::{CutoverError, CutoverTable, Mode, ServicePolicy};
use super::metrics::{ProxyMetrics, ServiceLabels};
use super::upstream::{Upstream, UpstreamSettings};
use ferry_http::listen::ConnectionLimits;

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error(transparent)]
    Cutover(#[from] CutoverError),
    #[error("cannot open the outbound listener for {service} on {address}: {source}")]
    Listen {
        service: String,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the registry refused the route for {service}: {reason}")]
    Registry { service: String, reason: String },
    /// The store the route is written to is out of reach; nothing changed.
    #[error("cannot publish the route for {service}: {source}")]
    Store {
        service: String,
        #[source]
        source: ferry_core::store::StoreError,
    },
    /// The shared store did not take the change: nothing changed, try again later.
    #[error("the shared cutover table is unavailable: {0}")]
    Shared(String),
}

/// Where the modes live when many nodes share them (etcd), so a change made on one node
/// reaches every node.
pub trait SharedModes: Send + Sync + std::fmt::Debug {
    /// Saves `mode` for `service` where every node reads it; Ok only once it is there.
    fn save<'a>(&'a self, service: &'a str, mode: Mode) -> BoxFuture<'a, Result<(), String>>;
    /// This node's own change was applied here: let every node's registry readers know.
    fn published<'a>(&'a self, service: &'a str) -> BoxFuture<'a, ()>;
}

/// Where outbound listeners bind and what address the registry hands out for them.
#[derive(Clone, Debug)]
pub struct MeshSettings {
    pub bind: IpAddr,
    pub advertise_host: String,
    pub limits: ConnectionLimits,
    /// The defaults every service starts from.
    pub upstream: UpstreamSettings,
    /// Per-service settings from the configuration file, by upper-case name.
    pub services: std::collections::BTreeMap<String, ServiceOverrides>,
    /// The shared table, with a shared store; `None`: this node's file alone.
    pub shared: Option<Arc<dyn SharedModes>>,
    /// Sidecar mode: instances other nodes keep are called through their inbound
    /// listeners, over mutual TLS.
    pub sidecar: Option<Arc<crate::peer::Sidecar>>,
}

/// One service's settings from the configuration file; unset fields keep the defaults.
#[derive(Clone, Debug, Default)]
pub struct ServiceOverrides {
    /// Put the service in this mode at every start.
    pub pinned: Option<Mode>,
    /// While in the mesh, whether a synced legacy registry shows the service at the proxy
    /// too (`None`: yes), so its callers still on the legacy registry go through the mesh.
    pub legacy_via_proxy: Option<bool>,
    pub request_timeout: Option<std::time::Duration>,
    pub connect_timeout: Option<std::time::Duration>,
    pub strategy: Option<super::balance::Strategy>,
    pub max_attempts: Option<u32>,
}

impl MeshSettings {
    /// The upstream settings of `service`: the defaults with its overrides applied.
    pub fn upstream_for(&self, service: &str) -> UpstreamSettings {
        let mut settings = self.upstream.clone();
        if let Some(overrides) = self.services.get(service) {
            if let Some(timeout) = overrides.request_timeout {
                settings.request_timeout = timeout;
            }
            if let Some(timeout) = overrides.connect_timeout {
                settings.connect_timeout = timeout;
            }
            if let Some(strategy) = overrides.strategy {
                settings.strategy = strategy;
            }
            if let Some(attempts) = overrides.max_attempts {
                settings.max_attempts = attempts;
            }
        }
        settings
    }
}

/// One service as the admin API shows it.
#[derive(Clone, Debug)]
pub struct ServiceStatus {
    pub name: String,
    pub mode: Mode,
    pub port: Option<u16>,
    pub endpoints: Vec<(Endpoint, bool)>,
}

pub struct Mesh {
    registry: Arc<Registry>,
    table: Mutex<CutoverTable>,
    settings: MeshSettings,
    metrics: Arc<ProxyMetrics>,
    /// Open outbound listeners by service; they stay open once opened.
    upstreams: Mutex<HashMap<String, Arc<Upstream>>>,
    /// Serializes mode changes, so two cutovers of one service cannot interleave.
    changing: tokio::sync::Mutex<()>,
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Mesh {
    /// Restores the saved modes: listeners for every service in the mesh, and their routes.
    pub async fn start(
        registry: Arc<Registry>,
        table: CutoverTable,
        settings: MeshSettings,
        metrics: Arc<ProxyMetrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Mesh>, MeshError> {
        let in_mesh: Vec<(String, ServicePolicy)> = table
            .all()
            .iter()
            .filter(|(_, policy)| policy.mode == Mode::Mesh)
            .map(|(name, policy)| (name.clone(), policy.clone()))
            .collect();
        let mesh = Arc::new(Mesh {
            registry,
            table: Mutex::new(table),
            settings,
            metrics,
            upstreams: Mutex::new(HashMap::new()),
            changing: tokio::sync::Mutex::new(()),
            shutdown,
        });
        for (service, policy) in in_mesh {
            mesh.open(&service, policy.port).await?;
            mesh.publish(&service, Some(policy.port))?;
        }
        let pinned: Vec<(String, Mode)> = mesh
            .settings
            .services
            .iter()
            .filter_map(|(service, overrides)| overrides.pinned.map(|mode| (service.clone(), mode)))
            .collect();
        for (service, mode) in pinned {
            mesh.set_mode(&service, mode).await?;
        }
        Ok(mesh)
    }

    /// Moves a service into the mesh or back; takes effect at the callers' next refresh.
    /// With a shared table the change is saved there first (refused if it cannot be), then
    /// applied here; the other nodes apply it when their watch brings it.
    pub async fn set_mode(&self, service: &str, mode: Mode) -> Result<ServicePolicy, MeshError> {
        let service = service.to_ascii_uppercase();
        let Some(shared) = self.settings.shared.clone() else {
            return self.apply(&service, mode).await;
        };
        shared
            .save(&service, mode)
            .await
            .map_err(MeshError::Shared)?;
        let policy = self.apply(&service, mode).await?;
        shared.published(&service).await;
        Ok(policy)
    }

    /// Applies a mode here only: a local change, or one another node made in the shared
    /// table. Applying the mode a service already has changes nothing.
    pub async fn apply(&self, service: &str, mode: Mode) -> Result<ServicePolicy, MeshError> {
        let service = service.to_ascii_uppercase();
        let _one_at_a_time = self.changing.lock().await;
        let previous = self.table.lock().get(&service).cloned();
        let policy = self.table.lock().set(&service, mode)?;
        if mode == Mode::Mesh {
            if let Err(error) = self.open(&service, policy.port).await {
                // Put the saved mode back: the service stays where it was.
                let restore = previous.map_or(Mode::Legacy, |previous| previous.mode);
                let _ = self.table.lock().set(&service, restore);
                return Err(error);
            }
        }
        if let Err(error) = self.publish(&service, (mode == Mode::Mesh).then_some(policy.port)) {
            // Unpublished, the cutover did not happen: the saved mode goes back too.
            let restore = previous.map_or(Mode::Legacy, |previous| previous.mode);
            let _ = self.table.lock().set(&service, restore);
            return Err(error);
        }
        tracing::info!(%service, mode = mode.as_str(), port = policy.port, "cutover");
        Ok(policy)
    }

    /// Every service's mode in the table.
    pub fn modes(&self) -> std::collections::BTreeMap<String, Mode> {
        self.table
            .lock()
            .all()
            .iter()
            .map(|(service, policy)| (service.clone(), policy.mode))
            .collect()
    }

    pub fn status(&self, service: &str) -> ServiceStatus {
        let service = service.to_ascii_uppercase();
        let policy = self.table.lock().get(&service).cloned();
        let (_, endpoints) = self.registry.endpoints(&service);
        let upstream = self.upstreams.lock().get(&service).cloned();
        let ejected = |id: &str| {
            upstream.as_ref().is_some_and(|upstream| {
                upstream
                    .current_endpoints()
                    .iter()
                    .any(|endpoint| endpoint.id == id && endpoint.breaker.is_ejected())
            })
        };
        ServiceStatus {
            mode: policy.as_ref().map_or(Mode::Legacy, |policy| policy.mode),
            port: policy.map(|policy| policy.port),
            endpoints: endpoints
                .into_iter()
                .map(|endpoint| {
                    let ejected = ejected(&endpoint.id);
                    (endpoint, ejected)
                })
                .collect(),
            name: service,
        }
    }

    /// Every service the registry or the cutover table knows.
    pub fn services(&self) -> Vec<ServiceStatus> {
        let mut names: Vec<String> = self
            .registry
            .list_all()
            .apps
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        names.extend(self.table.lock().all().keys().cloned());
        names.sort();
        names.dedup();
        names.iter().map(|name| self.status(name)).collect()
    }

    async fn open(&self, service: &str, port: u16) -> Result<(), MeshError> {
        if self.upstreams.lock().contains_key(service) {
            return Ok(());
        }
        let address = SocketAddr::new(self.settings.bind, port);
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| MeshError::Listen {
                service: service.to_owned(),
                address,
                source,
            })?;
        let upstream = Arc::new(
            Upstream::new(
                service,
                self.registry.clone(),
                self.settings.upstream_for(service),
                self.metrics.clone(),
            )
            .with_sidecar(self.settings.sidecar.clone()),
        );
        self.upstreams
            .lock()
            .insert(service.to_owned(), upstream.clone());
        let upstream_for_listener = upstream.clone();
        let handler = hyper::service::service_fn(move |request| {
            let upstream = upstream.clone();
            async move {
                // A panic is a bug: the caller gets a 500, the listener keeps serving.
                let handled = std::panic::AssertUnwindSafe(upstream.handle(request))
                    .catch_unwind()
                    .await;
                Ok::<_, std::convert::Infallible>(handled.unwrap_or_else(|_| {
                    tracing::error!("the proxy's request handler panicked");
                    super::error::internal_error()
                }))
            }
        });
        let gauge = self
            .metrics
            .open_connections
            .get_or_create(&ServiceLabels {
                service: service.into(),
            })
            .clone();
        tracing::info!(service, %address, "outbound listener open");
        tokio::spawn(super::h1::serve(
            listener,
            upstream_for_listener,
            handler,
            self.settings.limits,
            self.shutdown.clone(),
            gauge,
        ));
        Ok(())
    }

    fn publish(&self, service: &str, port: Option<u16>) -> Result<(), MeshError> {
        let publish_to_legacy = self
            .settings
            .services
            .get(service)
            .and_then(|overrides| overrides.legacy_via_proxy)
            .unwrap_or(true);
        let route = port.map(|port| Route {
            host: self.settings.advertise_host.clone(),
            port: u32::from(port),
            publish_to_legacy,
        });
        self.registry
            .set_route(service, route)
            .map(|_| ())
            .map_err(|error| match error {
                RegistryError::Store(source) => MeshError::Store {
                    service: service.to_owned(),
                    source,
                },
                error => MeshError::Registry {
                    service: service.to_owned(),
                    reason: error.to_string(),
                },
            })
    }
}
