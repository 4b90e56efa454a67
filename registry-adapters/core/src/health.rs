//! The checks Ferry runs itself, as a Consul agent does: HTTP and TCP probes at each check's
//! interval, TTL checks that turn critical when not renewed, the reaper for instances
//! critical longer than `DeregisterCriticalServiceAfter`, session expiry, and the reaping
//! of KV tombstones older than their TTL.
//!
//! One supervisor task ticks every `TICK`; probes run as their own tasks (bounded in
//! number) and report through `Registry::update_check`, which writes only when a check's
//! status or output changed.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::kv::KvStore;
use crate::model::{Check, Health, Probe};
use crate::registry::{CheckUpdate, Registry};

const TICK: Duration = Duration::from_millis(200);
const MAX_PARALLEL_PROBES: usize = 64;
const MAX_OUTPUT: usize = 4096;

#[derive(Clone, Debug)]
pub struct HealthSettings {
    /// The floor under `DeregisterCriticalServiceAfter` (Consul: one minute).
    pub minimum_deregister_after: Duration,
    /// How often the reaper looks for long-critical instances.
    pub reap_every: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            minimum_deregister_after: Duration::from_secs(60),
            reap_every: Duration::from_secs(1),
        }
    }
}

/// Per-check state of the supervisor.
#[derive(Default)]
struct ProbeState {
    next_due: Option<Instant>,
    running: bool,
    successes: u32,
    failures: u32,
}

pub fn spawn(
    registry: Arc<Registry>,
    kv: Option<Arc<KvStore>>,
    settings: HealthSettings,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let clients = Arc::new(Clients::default());
        let permits = Arc::new(Semaphore::new(MAX_PARALLEL_PROBES));
        let (results, mut incoming) =
            tokio::sync::mpsc::unbounded_channel::<(String, Health, String)>();
        let mut states: HashMap<String, ProbeState> = HashMap::new();
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_reap = Instant::now();
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                Some((check_id, health, output)) = incoming.recv() => {
                    apply(&registry, &mut states, &check_id, health, output);
                    continue;
                }
            }
            if let Err(error) = registry.expire_ttls() {
                tracing::warn!(%error, "TTL expiry failed");
            }
            if last_reap.elapsed() >= settings.reap_every {
                last_reap = Instant::now();
                if let Err(error) = registry.reap_critical(settings.minimum_deregister_after) {
                    tracing::warn!(%error, "reaping critical instances failed");
                }
                if let Some(kv) = &kv {
                    if let Err(error) = kv.expire_sessions() {
                        tracing::warn!(%error, "session expiry failed");
                    }
                    match kv.reap_tombstones() {
                        Ok(0) => {}
                        Ok(reaped) => tracing::debug!(reaped, "KV tombstones reaped"),
                        Err(error) => tracing::warn!(%error, "reaping KV tombstones failed"),
                    }
                }
            }
            let now = Instant::now();
            let checks = registry.probed_checks();
            states.retain(|id, _| checks.iter().any(|(_, check)| &check.id == id));
            for (_, check) in checks {
                let state = states.entry(check.id.clone()).or_default();
                // The first probe runs at once: the instance is critical until it does.
                let due = state.next_due.is_none_or(|due| due <= now);
                if !due || state.running {
                    continue;
                }
                let interval = match &check.probe {
                    Probe::Http { interval, .. } | Probe::Tcp { interval, .. } => *interval,
                    _ => continue,
                };
                state.next_due = Some(now + interval);
                state.running = true;
                let permits = permits.clone();
                let clients = clients.clone();
                let results = results.clone();
                tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    let (health, output) = probe(&clients, &check).await;
                    let _ = results.send((check.id, health, output));
                });
            }
        }
    })
}

/// Applies one probe result through the consecutive-result thresholds.
fn apply(
    registry: &Registry,
    states: &mut HashMap<String, ProbeState>,
    check_id: &str,
    health: Health,
    output: String,
) {
    let Some(state) = states.get_mut(check_id) else {
        return;
    };
    state.running = false;
    let Some(check) = registry.check(check_id) else {
        return;
    };
    let status = match health {
        Health::Passing => {
            state.successes += 1;
            state.failures = 0;
            if check.status == Health::Passing || state.successes >= check.successes_before_passing
            {
                Health::Passing
            } else {
                check.status
            }
        }
        Health::Critical => {
            state.failures += 1;
            state.successes = 0;
            if check.status == Health::Critical || state.failures >= check.failures_before_critical
            {
                Health::Critical
            } else {
                check.status
            }
        }
        Health::Warning => {
            state.successes = 0;
            state.failures = 0;
            Health::Warning
        }
    };
    if let Err(error) = registry.update_check(check_id, CheckUpdate { status, output }, false) {
        tracing::debug!(check_id, %error, "probe result for a check that went away");
    }
}

/// The HTTP clients of HTTP checks, built on the first check that needs one: building a
/// TLS client loads the root certificates, which a node without HTTP checks never needs.
#[derive(Default)]
struct Clients {
    verifying: OnceLock<Result<reqwest::Client, String>>,
    trusting: OnceLock<Result<reqwest::Client, String>>,
}

impl Clients {
    fn get(&self, trust_any: bool) -> Result<&reqwest::Client, &str> {
        let slot = if trust_any {
            &self.trusting
        } else {
            &self.verifying
        };
        slot.get_or_init(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::limited(3))
                .danger_accept_invalid_certs(trust_any)
                .user_agent("Consul Health Check")
                .pool_max_idle_per_host(0)
                .build()
                .map_err(|error| format!("cannot build the HTTP client: {error}"))
        })
        .as_ref()
        .map_err(String::as_str)
    }
}

async fn probe(clients: &Clients, check: &Check) -> (Health, String) {
    match &check.probe {
        Probe::Http {
            url,
            method,
            headers,
            body,
            timeout,
            tls_skip_verify,
            ..
        } => {
            let client = match clients.get(*tls_skip_verify) {
                Ok(client) => client,
                Err(error) => return (Health::Critical, error.to_owned()),
            };
            let Ok(method_value) = reqwest::Method::from_bytes(method.as_bytes()) else {
                return (Health::Critical, format!("invalid method {method}"));
            };
            let mut request = client
                .request(method_value, url)
                .timeout(*timeout)
                .header("Accept", "text/plain, text/*, */*");
            for (name, values) in headers {
                for value in values {
                    request = request.header(name.as_str(), value.as_str());
                }
            }
            if let Some(body) = body {
                request = request.body(body.clone());
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    let mut excerpt: String = text.chars().take(MAX_OUTPUT).collect();
                    if excerpt.len() > MAX_OUTPUT {
                        excerpt.truncate(MAX_OUTPUT);
                    }
                    let output = format!("HTTP {method} {url}: {status} Output: {excerpt}");
                    let health = if status.is_success() {
                        Health::Passing
                    } else if status.as_u16() == 429 {
                        Health::Warning
                    } else {
                        Health::Critical
                    };
                    (health, output)
                }
                Err(error) => (Health::Critical, format!("Get {url:?}: {error}")),
            }
        }
        Probe::Tcp {
            address, timeout, ..
        } => {
            match tokio::time::timeout(*timeout, tokio::net::TcpStream::connect(address.as_str()))
                .await
            {
                Ok(Ok(_)) => (Health::Passing, format!("TCP connect {address}: Success")),
                Ok(Err(error)) => (Health::Critical, format!("dial tcp {address}: {error}")),
                Err(_) => (Health::Critical, format!("dial tcp {address}: i/o timeout")),
            }
        }
        Probe::Ttl { .. } | Probe::Maintenance => (check.status, check.output.clone()),
    }
}
