//! The registry's vocabulary: instances, their status, ports, lease figures, checks and the
//! kinds of change. Plain data with no serde and no HTTP. Each view (Eureka, Consul) spells
//! and parses statuses, actions and data centres at its own edge, so none of them leaks
//! its wire format into the model or into the others. `Status`'s `Display` is the
//! registry's name for people (logs, admin API, `ferry ctl`). One exception is left:
//! `Health` keeps its lower-case names (`passing`...), which are also Consul's.

use std::collections::BTreeMap;
use std::fmt;

/// Milliseconds since the Unix epoch; the unit every registry timestamp is kept in.
pub type Millis = i64;

/// The health of an instance as the registry publishes it.
///
/// Each protocol view spells and parses statuses itself (the Eureka view writes its wire
/// names); `Display` is the registry's own name for a status, for people: logs, the admin
/// API and `ferry ctl`, and free-text output such as a check's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Down,
    OutOfService,
    Starting,
    Unknown,
    Up,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Down,
        Status::OutOfService,
        Status::Starting,
        Status::Unknown,
        Status::Up,
    ];

    /// Index into per-status counters.
    pub fn slot(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Down => "DOWN",
            Status::OutOfService => "OUT_OF_SERVICE",
            Status::Starting => "STARTING",
            Status::Unknown => "UNKNOWN",
            Status::Up => "UP",
        })
    }
}

/// What the latest change to an instance was; a delta reader applies it as upsert or removal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Added,
    Modified,
    Deleted,
}

/// A port an instance listens on and whether clients should use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    pub number: u32,
    pub enabled: bool,
}

/// Where an instance runs, as its registrant described it: `name` is the data centre's
/// name as given (`None`: its owner's own, nothing more said), `metadata` what the
/// registrant said about it (a cloud's instance id, zone...). The registry does not
/// interpret either; a view that knows the names (Eureka's data-centre kinds) does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataCenter {
    pub name: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// Lease figures of one registration. `last_renewal` is the value at the moment this copy
/// was taken: the registry keeps the live value outside the record so that a heartbeat does
/// not have to copy the instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub renewal_interval_secs: u32,
    pub duration_secs: u32,
    pub registration: Millis,
    pub last_renewal: Millis,
    pub eviction: Millis,
    pub service_up: Millis,
}

impl Lease {
    pub const DEFAULT_RENEWAL_INTERVAL_SECS: u32 = 30;
    pub const DEFAULT_DURATION_SECS: u32 = 90;

    /// A lease is expired once its whole duration has passed since the last renewal.
    pub fn is_expired(&self, last_renewal: Millis, now: Millis) -> bool {
        now > last_renewal + i64::from(self.duration_secs) * 1000
    }
}

impl Default for Lease {
    fn default() -> Self {
        Lease {
            renewal_interval_secs: Lease::DEFAULT_RENEWAL_INTERVAL_SECS,
            duration_secs: Lease::DEFAULT_DURATION_SECS,
            registration: 0,
            last_renewal: 0,
            eviction: 0,
            service_up: 0,
        }
    }
}

/// How an instance stays registered, which decides how the registry keeps it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Registration {
    /// A lease the instance renews with heartbeats: evicted once they stop for its lease
    /// duration; its status is what the instance (or an override) reports. Eureka
    /// registrations are leases.
    #[default]
    Lease,
    /// Held by an agent on the instance's behalf: kept until deregistered (or reaped after
    /// staying critical), with no lease; its status comes from its checks. Consul
    /// registrations are agent registrations.
    Agent,
    /// A copy of an instance another registry owns (a legacy Eureka or Consul Ferry syncs
    /// with), held by the sync adapter: no lease here and no checks; its status is what the
    /// owner publishes, and it goes when the owner's copy goes. Its owner is named in its
    /// metadata under `OWNER_METADATA_KEY`.
    Imported,
}

/// The metadata key naming the side that owns an instance whose copy lives in another
/// registry: `ferry` on the copies Ferry exports to a legacy registry, the source's name
/// (`legacy-eureka`, `legacy-consul`) on the copies it imports. Consul allows only letters,
/// digits, `-` and `_` in metadata keys, hence the spelling.
pub const OWNER_METADATA_KEY: &str = "ferry-owner";

/// The owner value of the copies Ferry exports.
pub const OWNER_FERRY: &str = "ferry";

/// The health a check reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Health {
    Passing,
    Warning,
    Critical,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Passing => "passing",
            Health::Warning => "warning",
            Health::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Health> {
        match text.trim().to_ascii_lowercase().as_str() {
            "passing" => Some(Health::Passing),
            "warning" => Some(Health::Warning),
            "critical" => Some(Health::Critical),
            _ => None,
        }
    }
}

/// How a check finds out its health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The instance reports itself (pass/warn/fail); silence longer than `ttl` is critical.
    Ttl { ttl: std::time::Duration },
    /// Ferry requests the URL every `interval`.
    Http {
        url: String,
        method: String,
        headers: BTreeMap<String, Vec<String>>,
        body: Option<String>,
        interval: std::time::Duration,
        timeout: std::time::Duration,
        tls_skip_verify: bool,
    },
    /// Ferry opens a TCP connection every `interval`.
    Tcp {
        address: String,
        interval: std::time::Duration,
        timeout: std::time::Duration,
    },
    /// An operator took the instance out of service.
    Maintenance,
}

impl Probe {
    pub fn kind(&self) -> &'static str {
        match self {
            Probe::Ttl { .. } => "ttl",
            Probe::Http { .. } => "http",
            Probe::Tcp { .. } => "tcp",
            Probe::Maintenance => "maintenance",
        }
    }
}

/// A health check of one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Unique per node.
    pub id: String,
    pub name: String,
    pub status: Health,
    pub notes: String,
    pub output: String,
    pub probe: Probe,
    /// Deregister the whole instance after this long critical without interruption.
    pub deregister_critical_after: Option<std::time::Duration>,
    /// Consecutive results needed before the status flips (1 = at once).
    pub successes_before_passing: u32,
    pub failures_before_critical: u32,
    pub create_index: u64,
    pub modify_index: u64,
    /// When the check last turned critical; `None` while not critical.
    pub critical_since: Option<Millis>,
}

/// Links an instance publishes about itself (home page, status and health endpoints).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Links {
    pub home_page: Option<String>,
    pub status_page: Option<String>,
    pub health_check: Option<String>,
    pub secure_health_check: Option<String>,
}

/// One registered instance of an application: everything a client registered, echoed back
/// unchanged, plus the fields the registry owns (status, override, action, timestamps).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// Unique within the application; case-sensitive.
    pub id: String,
    /// Whether the client sent the id explicitly; views that echo registrations omit an id
    /// the client never gave.
    pub id_explicit: bool,
    /// Application name, upper case: the key every lookup uses, so that names match
    /// whatever their case, as in Eureka (which upper-cases them) and Consul (which
    /// matches service names case-insensitively).
    pub app: String,
    /// The name as its registrant spelled it, where the registering protocol keeps case
    /// (a Consul registration: `Inventory` stays `Inventory`); `None` where it does not
    /// (Eureka clients send upper case only). Views that show case show this.
    pub name: Option<String>,
    pub host_name: String,
    pub ip_addr: String,
    pub sid: Option<String>,
    pub status: Status,
    pub overridden_status: Status,
    pub port: Port,
    pub secure_port: Port,
    pub country_id: i64,
    pub data_center: DataCenter,
    pub lease: Lease,
    pub metadata: BTreeMap<String, String>,
    pub app_group: Option<String>,
    pub links: Links,
    /// Comma-separated logical names clients resolve to this instance (plain and TLS).
    pub virtual_address: Option<String>,
    pub secure_virtual_address: Option<String>,
    pub last_updated: Millis,
    /// The client's own change clock; stored exactly as sent (see the Eureka spec, §5.3).
    pub last_dirty: Millis,
    pub action: Action,
    pub scaling_group: Option<String>,
    pub registration: Registration,
    /// Free-form labels clients filter on.
    pub tags: Vec<String>,
    pub checks: Vec<Check>,
    /// Relative load-balancing weights while passing and while warning.
    pub weights: (u32, u32),
    pub enable_tag_override: bool,
    /// Other addresses the instance is reachable at, by network name.
    pub tagged_addresses: BTreeMap<String, (String, u32)>,
    /// Change index at which this instance first appeared, and at which it last changed.
    pub create_index: u64,
    pub modify_index: u64,
}

impl Instance {
    /// A minimal UP instance with defaults where a registration may leave fields out.
    pub fn new(app: &str, id: &str, host_name: &str, ip_addr: &str, port: u32) -> Instance {
        Instance {
            id: id.to_owned(),
            id_explicit: true,
            app: app.to_ascii_uppercase(),
            name: None,
            host_name: host_name.to_owned(),
            ip_addr: ip_addr.to_owned(),
            sid: None,
            status: Status::Up,
            overridden_status: Status::Unknown,
            port: Port {
                number: port,
                enabled: true,
            },
            secure_port: Port {
                number: 7002,
                enabled: false,
            },
            country_id: 1,
            data_center: DataCenter::default(),
            lease: Lease::default(),
            metadata: BTreeMap::new(),
            app_group: None,
            links: Links::default(),
            virtual_address: None,
            secure_virtual_address: None,
            last_updated: 0,
            last_dirty: 0,
            action: Action::Added,
            scaling_group: None,
            registration: Registration::Lease,
            tags: Vec::new(),
            checks: Vec::new(),
            weights: (1, 1),
            enable_tag_override: false,
            tagged_addresses: BTreeMap::new(),
            create_index: 0,
            modify_index: 0,
        }
    }

    /// The worst status among the checks; `Passing` without checks.
    pub fn health(&self) -> Health {
        self.checks
            .iter()
            .map(|check| check.status)
            .max()
            .unwrap_or(Health::Passing)
    }

    /// The status an agent-registered instance publishes, from its checks: maintenance is
    /// out of service, critical is down, warning still serves (it is up, as Consul's DNS
    /// and Spring's `passing=false` queries treat it).
    pub fn status_from_checks(&self) -> Status {
        if self
            .checks
            .iter()
            .any(|check| check.probe == Probe::Maintenance)
        {
            Status::OutOfService
        } else if self.health() == Health::Critical {
            Status::Down
        } else {
            Status::Up
        }
    }

    /// Whether `name` is one of the comma-separated entries of `addresses` (exact match).
    pub fn serves_address(addresses: Option<&str>, name: &str) -> bool {
        addresses.is_some_and(|list| list.split(',').any(|entry| entry.trim() == name))
    }
}

/// Per-status instance counts over some scope (the whole registry, or one response).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusCounts(pub [usize; 5]);

impl StatusCounts {
    pub fn add(&mut self, status: Status) {
        self.0[status.slot()] += 1;
    }

    pub fn remove(&mut self, status: Status) {
        self.0[status.slot()] = self.0[status.slot()].saturating_sub(1);
    }

    pub fn total(&self) -> usize {
        self.0.iter().sum()
    }

    /// Counts by status in `Status::ALL` order, skipping zeroes.
    pub fn nonzero(&self) -> impl Iterator<Item = (Status, usize)> + '_ {
        Status::ALL
            .into_iter()
            .map(|status| (status, self.0[status.slot()]))
            .filter(|(_, count)| *count > 0)
    }
}
