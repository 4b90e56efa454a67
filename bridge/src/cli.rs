//! The command line. Every setting has an environment twin (`FERRY_...`) so a compose file
//! can configure Ferry without a command line; `ferry --help` explains each.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Parser, Subcommand, ValueEnum};
use ferry_proxy::balance::Strategy;

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    args_override_self = true,
    version,
    about = "A Spring Cloud compatible registry (Eureka, Consul, Config Server) and service-mesh sidecar",
    long_about = "Ferry answers Spring Cloud clients as a Eureka server, a Consul agent and a \
                  Spring Cloud Config Server would, from one registry, and proxies the traffic \
                  of services cut over to the mesh (`ferry ctl ... cutover SERVICE mesh`). \
                  With no arguments it runs a single node with an in-memory registry on \
                  loopback."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// A TOML file with the same settings (`eureka-listen = "0.0.0.0:8761"`, ...) and per
    /// service proxy settings under `[services.NAME]`. The command line and the environment
    /// win over the file.
    #[arg(long, env = "FERRY_CONFIG")]
    pub config: Option<std::path::PathBuf>,

    /// Address of the Eureka API (`/eureka/...` and `/eureka/v2/...`), or `off`.
    #[arg(long, env = "FERRY_EUREKA_LISTEN", default_value = "127.0.0.1:8761")]
    pub eureka_listen: Listen,

    /// Address of the Consul agent API (`/v1/...`), or `off`.
    #[arg(long, env = "FERRY_CONSUL_LISTEN", default_value = "127.0.0.1:8500")]
    pub consul_listen: Listen,

    /// ACL token of the Consul API (in `X-Consul-Token`, `?token=` or `Authorization:
    /// Bearer`): it may do everything. With one set, the API acts as Consul with
    /// `default_policy = "deny"`: a request without a token is anonymous (list reads come
    /// back empty, other reads and every write get 403), another token gets 403. Without
    /// one the Consul API is open, as Consul with ACLs off.
    #[arg(long, env = "FERRY_CONSUL_TOKEN", hide_env_values = true)]
    pub consul_token: Option<String>,

    /// A path prefix the whole Consul API also answers under, as `spring.cloud.consul.path`
    /// sets one before `/v1` (e.g. when Consul sits behind a reverse proxy): `consul`
    /// serves `/consul/v1/...`; leading and trailing slashes do not matter.
    #[arg(long, env = "FERRY_CONSUL_PATH_PREFIX")]
    pub consul_path_prefix: Option<String>,

    /// Address of the Spring Cloud Config Server API, or `off`.
    #[arg(long, env = "FERRY_CONFIG_LISTEN", default_value = "127.0.0.1:8888")]
    pub config_listen: Listen,

    /// The service name Ferry lists its own Config Server under, so that config clients
    /// with `spring.cloud.config.discovery.enabled=true` find it (through the Eureka view
    /// as the upper-case app, through the Consul catalog as is), at the advertised host and
    /// the config listener's port; `off` lists nothing. Listed only while the config
    /// listener is on.
    #[arg(
        long,
        env = "FERRY_CONFIG_SERVICE_NAME",
        default_value = "configserver"
    )]
    pub config_service_name: String,

    /// Configuration files to serve: a folder in Spring Cloud Config's native layout, or a
    /// local git repository (a path or a `file://` URL) whose labels are branches, tags and
    /// commits. The KV store is served too, in Spring Cloud Consul Config's layout.
    #[arg(long, env = "FERRY_CONFIG_REPO")]
    pub config_repo: Option<String>,

    /// Refuse (400) profile names Spring's Config Server refuses since 4.3.3: anything but
    /// letters, digits and `-_.+@`, or not starting and ending with a letter or digit
    /// (`_local`, `dev:eu`). `false` accepts them as older servers did, like Spring's
    /// `spring.profiles.validate=false`.
    #[arg(long, env = "FERRY_CONFIG_VALIDATE_PROFILES", default_value_t = true, action = clap::ArgAction::Set)]
    pub config_validate_profiles: bool,

    /// Symmetric key for `{cipher}` values and `/encrypt` and `/decrypt`, as Spring Cloud
    /// Config's `encrypt.key` (Spring Security's `Encryptors.text`: AES-256-CBC, a PBKDF2
    /// key). Without one, `{cipher}` values are served as `invalid.<name>: <n/a>` and the
    /// endpoints fail, as Spring's server without a key does.
    #[arg(long, env = "FERRY_ENCRYPT_KEY", hide_env_values = true)]
    pub encrypt_key: Option<String>,

    /// The salt for `--encrypt-key`, in hex, as Spring's `encrypt.salt`.
    #[arg(long, env = "FERRY_ENCRYPT_SALT", default_value = "deadbeef")]
    pub encrypt_salt: String,

    /// Serve `{cipher}` values decrypted (Spring's `spring.cloud.config.server.encrypt.enabled`);
    /// `false` hands them to clients as written, for clients that decrypt them themselves.
    #[arg(long, env = "FERRY_CONFIG_DECRYPT", default_value_t = true, action = clap::ArgAction::Set)]
    pub config_decrypt: bool,

    /// The node name the Consul view reports (default: the host name).
    #[arg(long, env = "FERRY_NODE_NAME")]
    pub node_name: Option<String>,

    /// The datacenter the Consul view reports.
    #[arg(long, env = "FERRY_DATACENTER", default_value = "dc1")]
    pub datacenter: String,

    /// The host name or IP apps use to reach this Ferry (default: the first listener's IP,
    /// or the host name when that listens on all addresses).
    #[arg(long, env = "FERRY_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,

    /// The floor under a check's DeregisterCriticalServiceAfter, in seconds (Consul: 60).
    #[arg(
        long,
        env = "FERRY_CONSUL_MIN_DEREGISTER_AFTER",
        default_value_t = 60.0
    )]
    pub consul_min_deregister_after: f64,

    /// Local ports handed to services' outbound listeners, `FIRST-LAST` (one port is valid).
    /// A service keeps its port for good, across restarts.
    #[arg(long, env = "FERRY_OUTBOUND_PORTS", default_value = "15001-15999", value_parser = port_range)]
    pub outbound_ports: (u16, u16),

    /// The IP outbound listeners bind to (`0.0.0.0` in a container).
    #[arg(long, env = "FERRY_OUTBOUND_BIND", default_value = "127.0.0.1")]
    pub outbound_bind: std::net::IpAddr,

    /// Seconds a proxied request may take before the proxy answers 504.
    #[arg(long, env = "FERRY_PROXY_REQUEST_TIMEOUT", default_value_t = 10.0)]
    pub proxy_request_timeout: f64,

    /// Seconds a connection to an endpoint may take to open.
    #[arg(long, env = "FERRY_PROXY_CONNECT_TIMEOUT", default_value_t = 1.0)]
    pub proxy_connect_timeout: f64,

    /// How the proxy picks an endpoint.
    #[arg(long, env = "FERRY_PROXY_BALANCER", value_enum, default_value_t = Balancer::PeakEwma)]
    pub proxy_balancer: Balancer,

    /// Largest request head (request line and headers) accepted, in bytes; larger is 431.
    #[arg(long, env = "FERRY_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,

    /// Address of the admin API: /ready, /live, /metrics (Prometheus), or `off`.
    #[arg(long, env = "FERRY_ADMIN_LISTEN", default_value = "127.0.0.1:15000")]
    pub admin_listen: Listen,

    /// Token that admin writes (a cutover) must carry as `Authorization: Bearer TOKEN`.
    /// Without one, admin writes are accepted only when the admin listener is on loopback.
    #[arg(long, env = "FERRY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Where the registry lives: `memory` (this node alone, the embedded default) or
    /// `etcd://HOST:PORT[,HOST:PORT...]` (a registry every node shares; name each node
    /// with `--node-name`).
    #[arg(long, env = "FERRY_STORE", default_value = "memory")]
    pub store: crate::store::StoreChoice,

    /// With an etcd store: seconds the lease this node keeps its instances on outlives the
    /// node (Eureka's 90 s lease expiry); a node that dies takes its instances with it
    /// after this long. At least 2.
    #[arg(long, env = "FERRY_STORE_LEASE_TTL", default_value_t = 90, value_parser = clap::value_parser!(u64).range(2..))]
    pub store_lease_ttl: u64,

    /// Sidecar mode (a node with a certificate, `--ca-issuer` or `--join-token`): where the
    /// inbound listener other nodes deliver calls to listens; mutual TLS only.
    #[arg(long, env = "FERRY_INBOUND_LISTEN", default_value = "127.0.0.1:15006")]
    pub inbound_listen: std::net::SocketAddr,

    /// The `HOST:PORT` other nodes dial for the inbound listener, published in this node's
    /// key in etcd (default: the listen address, or the advertised host when it listens on
    /// every address).
    #[arg(long, env = "FERRY_INBOUND_ADVERTISE")]
    pub inbound_advertise: Option<String>,

    /// With an etcd store: seconds to wait at start for an etcd member that knows a leader
    /// (etcd started alongside may still be electing one) before giving up; also how long a
    /// node waits for the trust bundle and for its certificate (`--join-token`).
    #[arg(long, env = "FERRY_STORE_WAIT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub store_wait: u64,

    /// With an etcd store: a folder made by `ferry ca init` holding issuer.pem, issuer.key
    /// and root.pem. This node then signs its own certificate and is a candidate to sign
    /// the others' (one signer is elected, leader job `ca-signer`).
    #[arg(long, env = "FERRY_CA_ISSUER")]
    pub ca_issuer: Option<PathBuf>,

    /// With an etcd store: the one-time token from `ferry ca token --node NAME` this node
    /// (named NAME with `--node-name`) joins with. Needs `--ca-root-sha256`. Unused once
    /// the node holds a valid certificate (kept under the data directory, renewed with its
    /// key).
    #[arg(long, env = "FERRY_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,

    /// The SHA-256 fingerprint of the trust domain's root, as `ferry ca init` printed it:
    /// the trust bundle read from etcd is refused unless one of its roots has it.
    #[arg(long, env = "FERRY_CA_ROOT_SHA256")]
    pub ca_root_sha256: Option<String>,

    /// How long the certificates this node signs (with `--ca-issuer`) are valid: `24h`,
    /// `90m`, `30s`, or seconds. Nodes renew at 50-70% of it.
    #[arg(long, env = "FERRY_CERT_LIFETIME", default_value = "24h", value_parser = duration)]
    pub cert_lifetime: std::time::Duration,

    /// Folder for Ferry's durable state. Created if missing; one process at a time may use it.
    #[arg(long, env = "FERRY_DATA_DIR", default_value = "./ferry-data")]
    pub data_dir: PathBuf,

    /// Runtime worker threads (default: one per core).
    #[arg(long, env = "FERRY_WORKER_THREADS")]
    pub worker_threads: Option<usize>,

    /// Keep expired leases while fewer heartbeats arrive than expected (Eureka's
    /// self-preservation): a network split then does not empty the registry.
    #[arg(long, env = "FERRY_EUREKA_SELF_PRESERVATION", default_value_t = true, action = clap::ArgAction::Set)]
    pub eureka_self_preservation: bool,

    /// Seconds between eviction runs for expired leases.
    #[arg(long, env = "FERRY_EUREKA_EVICTION_INTERVAL", default_value_t = 60.0)]
    pub eureka_eviction_interval: f64,

    /// Seconds a change stays in the Eureka delta.
    #[arg(long, env = "FERRY_EUREKA_DELTA_RETENTION", default_value_t = 180)]
    pub eureka_delta_retention: u64,

    /// Largest request body accepted, in bytes; larger ones get 413.
    #[arg(long, env = "FERRY_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,

    /// Seconds a connection may take to send a request's headers, idle keep-alive time
    /// included; then it is closed. On outbound listeners, also the longest a request or
    /// response body may make no progress.
    #[arg(long, env = "FERRY_IDLE_TIMEOUT", default_value_t = 60.0)]
    pub idle_timeout: f64,

    /// Seconds a request body may take to arrive; then the answer is 408.
    #[arg(long, env = "FERRY_BODY_TIMEOUT", default_value_t = 10.0)]
    pub body_timeout: f64,

    /// Sync with a legacy Eureka cluster, both ways: its service URLs as in an app's
    /// `defaultZone` (`http://eureka-1:8761/eureka/,http://eureka-2:8761/eureka/`), tried in
    /// order with failover. Its instances appear in every Ferry view; Ferry's are
    /// registered there and kept alive by Ferry. See the README, "Migrating from a running
    /// Eureka cluster".
    #[arg(long, env = "FERRY_SYNC_EUREKA", value_delimiter = ',')]
    pub sync_eureka: Vec<String>,

    /// Sync with a legacy Consul agent or server, both ways: its HTTP API as `HOST:PORT`
    /// or a URL.
    #[arg(long, env = "FERRY_SYNC_CONSUL")]
    pub sync_consul: Option<String>,

    /// The ACL token Ferry sends to the legacy Consul (`X-Consul-Token`).
    #[arg(long, env = "FERRY_SYNC_CONSUL_TOKEN", hide_env_values = true)]
    pub sync_consul_token: Option<String>,

    /// Also copy the legacy Consul's KV keys under this prefix into Ferry's KV store
    /// (one way: legacy to Ferry).
    #[arg(long, env = "FERRY_SYNC_CONSUL_KV_PREFIX")]
    pub sync_consul_kv_prefix: Option<String>,

    /// Seconds between reads of a legacy registry, and between the heartbeats Ferry sends
    /// for its instances there (the Eureka client's 30 s for both).
    #[arg(long, env = "FERRY_SYNC_INTERVAL", default_value_t = 30.0)]
    pub sync_interval: f64,

    /// Seconds an imported instance that vanished from a legacy registry is kept when that
    /// registry has just come back (or Ferry has just started), before it is removed: a
    /// restarted legacy server is empty until its apps register again.
    #[arg(long, env = "FERRY_SYNC_GRACE", default_value_t = 90.0)]
    pub sync_grace: f64,

    /// Seconds each request to a legacy registry may take.
    #[arg(long, env = "FERRY_SYNC_TIMEOUT", default_value_t = 5.0)]
    pub sync_timeout: f64,

    /// Log format.
    #[arg(long, env = "FERRY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter in tracing's syntax, e.g. `info` or `ferry=debug`.
    #[arg(long, env = "FERRY_LOG", default_value = "info")]
    pub log: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Talk to a running ferry's admin API.
    Ctl(CtlCommand),
    /// The certificate authority of a trust domain: make it, hand out join tokens.
    #[command(subcommand)]
    Ca(CaCommand),
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Make a trust domain's root (10 years, keep root.key offline) and issuer (1 year) in
    /// DIR, and print the root's SHA-256 fingerprint for `--ca-root-sha256`. Never
    /// overwrites a file.
    Init {
        /// The trust domain, a lowercase DNS name such as `ferry.local`.
        #[arg(long)]
        trust_domain: String,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Make a one-time join token for node NODE, store its hash in etcd, print the token.
    Token {
        /// The node's `--node-name`.
        #[arg(long)]
        node: String,
        /// How long the token may be used: `1h`, `30m`, `90s`, or seconds.
        #[arg(long, default_value = "1h", value_parser = duration)]
        ttl: std::time::Duration,
        #[arg(long, env = "FERRY_STORE")]
        store: crate::store::StoreChoice,
    },
    /// The trust bundle in etcd, for rotating a root: `bundle list`, `bundle add
    /// --root NEW/root.pem` (nodes then trust both), and once every certificate is from the
    /// new issuer, `bundle remove --sha256 OLD`.
    Bundle {
        #[command(subcommand)]
        action: BundleAction,
        #[arg(long, env = "FERRY_STORE", global = true)]
        store: Option<crate::store::StoreChoice>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BundleAction {
    /// Print the fingerprint of every root in the bundle.
    List,
    /// Add a root (a `ferry ca init` root.pem of the same trust domain).
    Add {
        #[arg(long)]
        root: PathBuf,
    },
    /// Remove the root with this SHA-256 fingerprint (never the last one).
    Remove {
        #[arg(long)]
        sha256: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct CtlCommand {
    /// The admin API of the ferry to talk to.
    #[arg(long, env = "FERRY_ADMIN", default_value = "127.0.0.1:15000")]
    pub admin: String,

    /// The admin token, when the ferry was started with one (needed by `cutover`).
    #[arg(long, env = "FERRY_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// `table` for people, `json` for scripts (the admin API's document as it is).
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,

    #[command(subcommand)]
    pub action: CtlAction,
}

/// How `ferry ctl` prints what the admin API answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum CtlAction {
    /// List services with their mode, port and instances.
    Services,
    /// Show one service: mode, port, instances, ejections and traffic figures.
    Service { name: String },
    /// Move a service into the mesh or back: `cutover SERVICE mesh|legacy`.
    Cutover { service: String, mode: String },
    /// Show each legacy registry Ferry syncs with: reachable or not, last successful
    /// exchange, instances imported and exported, errors.
    Sync,
    /// Show the nodes sharing the registry: each one's etcd endpoint, the revision it has
    /// applied, the instances it keeps and when its key was last refreshed (`*`: the node
    /// answering). With the embedded store, this node alone.
    Nodes,
    /// What happened to instances and services, newest first: registrations, removals,
    /// evictions, status changes, cutovers and rollbacks (times in UTC).
    Events {
        /// At most this many events (the newest).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Only this service's events (any case).
        #[arg(long)]
        service: Option<String>,
    },
    /// Sidecar mode's allow rules: with no argument, list them; `allow SERVICE CALLER...`
    /// lets only those services (or `node:NAME`) call SERVICE; `allow SERVICE --any` lets
    /// every node call it again.
    Allow {
        service: Option<String>,
        callers: Vec<String>,
        #[arg(long, conflicts_with = "callers")]
        any: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Balancer {
    /// Power of two choices over a peak-EWMA latency estimate.
    PeakEwma,
    RoundRobin,
}

impl Balancer {
    /// A balancer by the name the command line uses (`peak-ewma`, `round-robin`), so the
    /// config file accepts exactly the same names.
    pub fn parse(name: &str) -> Option<Balancer> {
        <Balancer as ValueEnum>::from_str(name, false).ok()
    }
}

impl From<Balancer> for Strategy {
    fn from(balancer: Balancer) -> Strategy {
        match balancer {
            Balancer::PeakEwma => Strategy::PeakEwma,
            Balancer::RoundRobin => Strategy::RoundRobin,
        }
    }
}

fn port_range(text: &str) -> Result<(u16, u16), String> {
    let (first, last) = text.split_once('-').unwrap_or((text, text));
    let parse = |port: &str| {
        port.trim()
            .parse::<u16>()
            .map_err(|_| format!("`{text}` is not FIRST-LAST ports"))
    };
    let (first, last) = (parse(first)?, parse(last)?);
    if first == 0 || first > last {
        return Err(format!(
            "`{text}`: FIRST must be at least 1 and not above LAST"
        ));
    }
    Ok((first, last))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A listener address, or `off` to not open that listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    Off,
    On(SocketAddr),
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(text: &str) -> Result<Listen, String> {
        if text.eq_ignore_ascii_case("off") {
            return Ok(Listen::Off);
        }
        text.parse().map(Listen::On).map_err(|_| {
            format!("`{text}` is neither HOST:PORT (an IP address and a port) nor `off`")
        })
    }
}

/// A duration as Go writes them (`24h`, `1h30m`, `90s`: the Consul view's parser) or bare
/// seconds; at least one second, as certificate lifetimes and token TTLs are whole seconds.
pub fn duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let parsed = match text.parse::<u64>() {
        Ok(seconds) => Some(std::time::Duration::from_secs(seconds)),
        Err(_) => ferry_consul::duration::parse(text),
    };
    parsed
        .filter(|duration| duration.as_secs() >= 1)
        .ok_or_else(|| format!("`{text}`: use seconds or a duration such as 30s, 90m, 24h"))
}

pub fn seconds(value: f64, flag: &str) -> anyhow::Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(value)
        .map_err(|_| anyhow::anyhow!("--{flag} must be a non-negative number of seconds"))
}
