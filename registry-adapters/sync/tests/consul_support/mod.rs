//! A real Consul dev agent for the sync tests: HashiCorp's binary (`FERRY_CONSUL_BIN`, or
//! `~/.cache/ferry-tools/bin/consul` as `scripts/install-consul.sh` installs it) on free
//! loopback ports, killed when the guard drops (a failing test included). Each test starts
//! its own, so tests run in parallel and never see each other's services. Also: Ferry's
//! side (a registry and KV store in memory) and the polling helpers the tests wait with.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use ferry_core::change_index::ChangeIndex;
use ferry_core::kv::KvStore;
use ferry_core::registry::Registry;
use ferry_core::store::MemoryStore;
use ferry_core::{Clock, Instance, RegistrySettings};
use ferry_sync::consul::ConsulSyncSettings;
use ferry_sync::SyncHandle;

/// The binary, if installed; tests skip with a printed reason without it.
pub fn consul_binary() -> Option<PathBuf> {
    let path = std::env::var_os("FERRY_CONSUL_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache/ferry-tools/bin/consul"))
        })?;
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "skipped: no Consul binary at {} (set FERRY_CONSUL_BIN or run scripts/install-consul.sh)",
            path.display()
        );
        None
    }
}

/// A fresh agent, or `None` (the test returns, skipped) without the binary.
pub async fn agent() -> Option<ConsulAgent> {
    Some(ConsulAgent::start(consul_binary()?).await)
}

/// A loopback port free now and never handed out before by this test process: the kernel
/// may offer a just-closed port again, and an agent given one port twice refuses to start
/// ("Serf Advertise WAN address ... already configured for HTTP").
fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("a free loopback port");
        if HANDED_OUT.lock().expect("port set").insert(port) {
            return port;
        }
    }
}

fn four_free_ports() -> [u16; 4] {
    [free_port(), free_port(), free_port(), free_port()]
}

/// A running dev agent; killed on drop.
pub struct ConsulAgent {
    binary: PathBuf,
    child: Option<Child>,
    /// HTTP, serf LAN, serf WAN, server RPC: kept across a restart.
    ports: [u16; 4],
    /// With ACLs on (default deny), the management token every request of the harness
    /// sends.
    token: Option<String>,
    http: reqwest::Client,
}

impl ConsulAgent {
    /// Starts an agent and waits until it has a leader and its node is in the catalog.
    pub async fn start(binary: PathBuf) -> ConsulAgent {
        ConsulAgent::start_with_token(binary, None).await
    }

    /// With `token`, an agent with ACLs on, `default_policy = "deny"`, and `token` as its
    /// management token.
    pub async fn start_with_token(binary: PathBuf, token: Option<&str>) -> ConsulAgent {
        let mut agent = ConsulAgent {
            binary,
            child: None,
            ports: four_free_ports(),
            token: token.map(str::to_owned),
            http: reqwest::Client::new(),
        };
        // Another process may take a port (TCP or serf's UDP) between the probe and the
        // agent's bind: a first start gets fresh ports up to three times.
        let mut failure = String::new();
        for _ in 0..3 {
            match agent.launch().await {
                Ok(()) => return agent,
                Err(log) => {
                    agent.kill();
                    failure = log;
                    agent.ports = four_free_ports();
                }
            }
        }
        panic!("the Consul dev agent did not become ready: {failure}");
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.ports[0])
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports[0])
    }

    /// Where the agent's own log goes: kept after a failing test, removed otherwise.
    fn log_path(&self) -> PathBuf {
        std::env::temp_dir().join(format!("ferry-consul-{}.log", self.ports[0]))
    }

    /// Starts the agent on `self.ports`; its log if it never became ready.
    async fn launch(&mut self) -> Result<(), String> {
        let [http, lan, wan, server] = self.ports.map(|port| port.to_string());
        let log_path = self.log_path();
        let log = std::fs::File::create(&log_path).expect("a log file for the agent");
        let mut command = Command::new(&self.binary);
        command.args([
            "agent",
            "-dev",
            "-bind",
            "127.0.0.1",
            "-client",
            "127.0.0.1",
            "-http-port",
            &http,
            "-dns-port",
            "-1",
            "-grpc-port",
            "-1",
            "-grpc-tls-port",
            "-1",
            "-serf-lan-port",
            &lan,
            "-serf-wan-port",
            &wan,
            "-server-port",
            &server,
            "-log-level",
            "warn",
        ]);
        if let Some(token) = &self.token {
            command.arg("-hcl").arg(format!(
                "acl {{\n enabled = true\n default_policy = \"deny\"\n tokens {{\n initial_management = \"{token}\"\n }}\n}}"
            ));
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the consul binary starts");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let ready = loop {
            if self.is_ready().await {
                break true;
            }
            // An agent refusing its configuration (a port taken) exits at once: no need
            // to wait out the deadline.
            let exited = self
                .child
                .as_mut()
                .is_some_and(|child| matches!(child.try_wait(), Ok(Some(_))));
            if exited || tokio::time::Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if ready {
            Ok(())
        } else {
            Err(std::fs::read_to_string(&log_path).unwrap_or_default())
        }
    }

    /// Has a leader, and its own node is in the catalog.
    async fn is_ready(&self) -> bool {
        let leader = self.get("/v1/status/leader").await;
        let nodes = self.get("/v1/catalog/nodes").await;
        leader
            .as_ref()
            .and_then(Value::as_str)
            .is_some_and(|l| !l.is_empty())
            && nodes
                .as_ref()
                .and_then(Value::as_array)
                .is_some_and(|nodes| !nodes.is_empty())
    }

    /// Kills the agent (a dev agent forgets everything).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports, empty.
    pub async fn restart(&mut self) {
        self.kill();
        if let Err(log) = self.launch().await {
            panic!("the Consul dev agent did not come back: {log}");
        }
    }

    /// A request of the harness, with the management token if there is one.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match &self.token {
            Some(token) => request.header("X-Consul-Token", token),
            None => request,
        }
    }

    /// A GET's JSON body, `None` on any failure or a 404.
    pub async fn get(&self, path: &str) -> Option<Value> {
        let response = self.request(reqwest::Method::GET, path).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// A PUT that must succeed.
    pub async fn put(&self, path: &str, body: Option<Value>) {
        let mut request = self.request(reqwest::Method::PUT, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("PUT to Consul");
        assert!(
            response.status().is_success(),
            "PUT {path}: {}",
            response.status()
        );
    }

    /// A raw KV write.
    pub async fn put_kv(&self, key: &str, value: &str) {
        let response = self
            .request(reqwest::Method::PUT, &format!("/v1/kv/{key}"))
            .body(value.to_owned())
            .send()
            .await
            .expect("KV PUT to Consul");
        assert!(response.status().is_success());
    }

    pub async fn delete_kv(&self, key: &str) {
        let response = self
            .request(reqwest::Method::DELETE, &format!("/v1/kv/{key}"))
            .send()
            .await
            .expect("KV DELETE to Consul");
        assert!(response.status().is_success());
    }

    /// The rows of `/v1/health/service/<name>`.
    pub async fn health(&self, name: &str) -> Vec<Value> {
        self.get(&format!("/v1/health/service/{name}"))
            .await
            .and_then(|rows| rows.as_array().cloned())
            .unwrap_or_default()
    }
}

impl Drop for ConsulAgent {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(self.log_path());
        }
    }
}

/// Ferry's side: a registry and a KV store on one change index, in memory.
pub struct Ferry {
    pub registry: Arc<Registry>,
    pub kv: Arc<KvStore>,
    shutdown: watch::Sender<bool>,
}

impl Ferry {
    pub fn new() -> Ferry {
        let index = Arc::new(ChangeIndex::new(1));
        let registry = Arc::new(Registry::with_index(
            RegistrySettings::default(),
            Clock::System,
            Arc::new(MemoryStore),
            index.clone(),
        ));
        let kv = Arc::new(KvStore::in_memory(index, Clock::System, "ferry-test"));
        let (shutdown, _) = watch::channel(false);
        Ferry {
            registry,
            kv,
            shutdown,
        }
    }

    /// Test pace: a 1 s interval, a 2 s grace.
    pub fn settings(agent: &ConsulAgent) -> ConsulSyncSettings {
        ConsulSyncSettings {
            address: agent.address(),
            interval: Duration::from_secs(1),
            grace: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            ..ConsulSyncSettings::default()
        }
    }

    /// Registers an instance with Ferry (a lease, as a Eureka client would).
    pub fn register(&self, app: &str, id: &str, address: &str, port: u32) {
        self.registry
            .register(Instance::new(app, id, address, address, port), false)
            .expect("registered with Ferry");
    }

    pub fn sync(&self, settings: ConsulSyncSettings) -> SyncHandle {
        ferry_sync::consul::start(
            self.registry.clone(),
            self.kv.clone(),
            settings,
            self.shutdown.subscribe(),
        )
    }
}

impl Drop for Ferry {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// Polls `check` every 100 ms until it holds or `within` passes; whether it held.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
