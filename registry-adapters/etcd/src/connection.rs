//! The connection to an etcd cluster: one client per endpoint, one endpoint pinned at a time,
//! a status probe of every endpoint, failover and retry of idempotent calls.
//!
//! Why not etcd-client's own multi-endpoint client: its balanced channel keeps choosing dead
//! members (with one of three killed, 22-37% of calls failed at once) and in a partition calls
//! to the cut member hang until they time out. Here every call goes to the pinned endpoint; a
//! transport error, a timeout or "no leader" marks that endpoint suspect and moves the pin to
//! another endpoint the probe saw healthy (it answered and knows a raft leader).

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use etcd_client::Client;
use futures_util::future::join_all;
use tokio::sync::Notify;

/// HTTP/2 keep-alive ping interval. etcd answers pings sent more often than every 5 s
/// (`--grpc-keepalive-min-time`) with GOAWAY, so this stays above it.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// gRPC status codes (tonic's numbering) that say the endpoint, not the request, failed.
const CODE_CANCELLED: i32 = 1;
const CODE_UNKNOWN: i32 = 2;
const CODE_DEADLINE_EXCEEDED: i32 = 4;
const CODE_UNAVAILABLE: i32 = 14;

/// Timeouts and probe period of a [`Connection`].
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The TCP connect timeout of one endpoint.
    pub connect_timeout: Duration,
    /// How long `connect` keeps probing for an endpoint that answers: etcd started beside
    /// Ferry (one compose file, one boot) may take seconds to elect its first leader.
    pub startup_wait: Duration,
    /// How long one call may take on one endpoint before it counts as failed there.
    pub request_timeout: Duration,
    /// How often every endpoint's status is probed.
    pub probe_interval: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            startup_wait: Duration::from_secs(30),
            request_timeout: Duration::from_secs(2),
            probe_interval: Duration::from_secs(1),
        }
    }
}

/// Why a call to etcd did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("no etcd endpoints given")]
    NoEndpoints,
    #[error("invalid etcd endpoint {endpoint}: {source}")]
    InvalidEndpoint {
        endpoint: String,
        #[source]
        source: etcd_client::Error,
    },
    /// The endpoint could not be reached, or its member has no leader. For a call that was
    /// sent, whether it was applied is unknown.
    #[error("etcd unavailable at {endpoint}: {reason}")]
    Unavailable { endpoint: String, reason: String },
    /// The call got no answer in time; whether it was applied is unknown.
    #[error("etcd call to {endpoint} timed out after {after:?}")]
    Timeout { endpoint: String, after: Duration },
    /// etcd answered with an error, e.g. "request is too large": retrying elsewhere would
    /// get the same answer.
    #[error("etcd rejected the request: {0}")]
    Rejected(#[source] etcd_client::Error),
}

/// One endpoint as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointState {
    pub endpoint: String,
    /// Answered the last probe with a leader, within the last 3 probe intervals, and no call
    /// has failed on it since.
    pub healthy: bool,
    /// The last answer named a raft leader.
    pub has_leader: bool,
    /// Time since the endpoint last answered a probe; `None` if it never did.
    pub last_probe_age: Option<Duration>,
    /// The revision in the header of its last status answer.
    pub revision: Option<i64>,
    pub pinned: bool,
    /// Why the last probe or call failed, until a probe succeeds again.
    pub last_error: Option<String>,
}

impl fmt::Display for EndpointState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{} healthy={} leader={} probe_age=",
            self.endpoint,
            if self.pinned { " (pinned)" } else { "" },
            self.healthy,
            self.has_leader
        )?;
        match self.last_probe_age {
            Some(age) => write!(f, "{}ms", age.as_millis())?,
            None => f.write_str("never")?,
        }
        match self.revision {
            Some(revision) => write!(f, " revision={revision}")?,
            None => f.write_str(" revision=-")?,
        }
        if let Some(error) = &self.last_error {
            write!(f, " error={error:?}")?;
        }
        Ok(())
    }
}

/// A connection to an etcd cluster that fails over between its endpoints. Clones share it;
/// the probe task ends when the last clone is dropped.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    members: Vec<Member>,
    options: ConnectOptions,
    pinned: Mutex<usize>,
    /// Asks the probe task for a round now (a call failed), and wakes it to end on drop.
    probe_now: Arc<Notify>,
    /// Signalled after every probe round, for calls waiting for a healthy endpoint.
    probed: Notify,
}

struct Member {
    endpoint: String,
    client: Client,
    probe: Mutex<Probe>,
}

#[derive(Default)]
struct Probe {
    /// The last probe got an answer (a status, or "no leader").
    reachable: bool,
    has_leader: bool,
    answered_at: Option<Instant>,
    leader_at: Option<Instant>,
    revision: Option<i64>,
    /// A call failed here; only a probe started after this clears it.
    suspect_since: Option<Instant>,
    last_error: Option<String>,
}

impl Probe {
    fn healthy(&self, probe_interval: Duration) -> bool {
        self.reachable
            && self.has_leader
            && self.suspect_since.is_none()
            && self
                .leader_at
                .is_some_and(|at| at.elapsed() < probe_interval * 3)
    }
}

/// A poisoned lock only means another thread panicked mid-update of plain status fields,
/// which stay usable; callers must not see that panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Connection {
    /// Connects to every endpoint ("host:port", no scheme), probes them and pins a healthy one
    /// (its member knows a leader). Waits up to `startup_wait` for a healthy endpoint; then
    /// settles for one that answered without a leader, and fails only if none answered.
    pub async fn connect(
        endpoints: &[String],
        options: ConnectOptions,
    ) -> Result<Connection, EtcdError> {
        if endpoints.is_empty() {
            return Err(EtcdError::NoEndpoints);
        }
        // Require-leader makes calls and watches on a member cut from its leader fail at once
        // instead of stalling; keep-alive ends streams to a member that stopped answering.
        // No per-request timeout here: it would also cut long-lived watches; `run` bounds calls.
        let client_options = etcd_client::ConnectOptions::new()
            .with_require_leader(true)
            .with_connect_timeout(options.connect_timeout)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, options.request_timeout);
        let mut members = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            // Connecting is lazy: a member that is down now still gets its client.
            let client = Client::connect([endpoint.as_str()], Some(client_options.clone()))
                .await
                .map_err(|source| EtcdError::InvalidEndpoint {
                    endpoint: endpoint.clone(),
                    source,
                })?;
            members.push(Member {
                endpoint: endpoint.clone(),
                client,
                probe: Mutex::new(Probe::default()),
            });
        }
        let inner = Arc::new(Inner {
            members,
            options,
            pinned: Mutex::new(0),
            probe_now: Arc::new(Notify::new()),
            probed: Notify::new(),
        });

        let started = tokio::time::Instant::now();
        let deadline = started + inner.options.startup_wait;
        let mut next_report = started + Duration::from_secs(5);
        loop {
            inner.probe_all().await;
            // Starting after the last endpoint makes the first healthy one in the given order win.
            if let Some(index) = inner.choose(inner.members.len() - 1, &[], true) {
                *lock(&inner.pinned) = index;
                break;
            }
            let pause = inner.options.probe_interval.min(Duration::from_millis(100));
            let now = tokio::time::Instant::now();
            if now >= next_report {
                tracing::info!(
                    endpoints = %endpoints.join(","),
                    waited = ?now - started,
                    "waiting for an etcd endpoint that knows a leader"
                );
                next_report = now + Duration::from_secs(5);
            }
            if now >= deadline {
                let answered = inner.members.iter().position(|m| lock(&m.probe).reachable);
                match answered {
                    Some(index) => {
                        *lock(&inner.pinned) = index;
                        break;
                    }
                    None => {
                        return Err(EtcdError::Unavailable {
                            endpoint: endpoints.join(","),
                            reason: format!(
                                "no endpoint answered within {:?}",
                                inner.options.startup_wait
                            ),
                        })
                    }
                }
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
        }

        tokio::spawn(probe_task(
            Arc::downgrade(&inner),
            Arc::clone(&inner.probe_now),
        ));
        Ok(Connection { inner })
    }

    /// Runs `call` on the pinned endpoint's client within the request timeout. On a transport
    /// error, a timeout or "no leader" the endpoint is marked suspect and the pin moves to
    /// another healthy endpoint (waiting up to the request timeout for the probe to find one).
    /// An `idempotent` call is then retried there, each endpoint at most once per call; any
    /// other call returns the error, its outcome unknown (the caller may read back).
    pub async fn run<T, F, Fut>(&self, idempotent: bool, call: F) -> Result<T, EtcdError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let inner = &self.inner;
        let timeout = inner.options.request_timeout;
        let mut tried = vec![false; inner.members.len()];
        let mut index = *lock(&inner.pinned);
        loop {
            tried[index] = true;
            let member = &inner.members[index];
            let failure = match tokio::time::timeout(timeout, call(member.client.clone())).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) if endpoint_failed(&error) => EtcdError::Unavailable {
                    endpoint: member.endpoint.clone(),
                    reason: error.to_string(),
                },
                Ok(Err(error)) => return Err(EtcdError::Rejected(error)),
                Err(_) => EtcdError::Timeout {
                    endpoint: member.endpoint.clone(),
                    after: timeout,
                },
            };
            tracing::warn!(endpoint = %member.endpoint, error = %failure, idempotent, "etcd call failed, failing over");
            inner.mark_suspect(index, &failure);
            if !idempotent {
                inner.repin_from(index, &[]);
                return Err(failure);
            }
            match inner.wait_for_healthy(index, &tried).await {
                Some(next) => index = next,
                None => return Err(failure),
            }
        }
    }

    /// The endpoint pinned now and its client, for long-lived streams such as a watch; when
    /// the stream fails, the caller calls [`Connection::repin`] and takes the new pin.
    pub fn pinned(&self) -> (String, Client) {
        let member = &self.inner.members[*lock(&self.inner.pinned)];
        (member.endpoint.clone(), member.client.clone())
    }

    /// Marks `failed_endpoint` suspect and, if it is pinned, moves the pin: to the next healthy
    /// endpoint, else the next not suspect, else simply the next one.
    pub fn repin(&self, failed_endpoint: &str) {
        let inner = &self.inner;
        let Some(index) = inner
            .members
            .iter()
            .position(|m| m.endpoint == failed_endpoint)
        else {
            return;
        };
        inner.mark_suspect(index, &"failed by its user");
        inner.repin_from(index, &[]);
    }

    /// One entry per endpoint, in the order given to `connect`.
    pub fn endpoints(&self) -> Vec<EndpointState> {
        let inner = &self.inner;
        let pinned = *lock(&inner.pinned);
        inner
            .members
            .iter()
            .enumerate()
            .map(|(index, member)| {
                let probe = lock(&member.probe);
                EndpointState {
                    endpoint: member.endpoint.clone(),
                    healthy: probe.healthy(inner.options.probe_interval),
                    has_leader: probe.has_leader,
                    last_probe_age: probe.answered_at.map(|at| at.elapsed()),
                    revision: probe.revision,
                    pinned: index == pinned,
                    last_error: probe.last_error.clone(),
                }
            })
            .collect()
    }

    /// Whether the pinned endpoint answered a probe with a leader within the last 3 probe
    /// intervals and no call failed on it since.
    pub fn healthy(&self) -> bool {
        let inner = &self.inner;
        inner.is_healthy(*lock(&inner.pinned))
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("endpoints", &self.endpoints())
            .finish()
    }
}

impl Inner {
    fn is_healthy(&self, index: usize) -> bool {
        lock(&self.members[index].probe).healthy(self.options.probe_interval)
    }

    fn mark_suspect(&self, index: usize, why: &dyn fmt::Display) {
        {
            let mut probe = lock(&self.members[index].probe);
            probe.suspect_since = Some(Instant::now());
            probe.last_error = Some(why.to_string());
        }
        self.probe_now.notify_one();
    }

    /// The first endpoint after `after` (round robin, `after` itself last) not in `skip` and,
    /// if `healthy`, healthy.
    fn choose(&self, after: usize, skip: &[bool], healthy: bool) -> Option<usize> {
        let count = self.members.len();
        (1..=count)
            .map(|step| (after + step) % count)
            .find(|&i| !skip.get(i).copied().unwrap_or(false) && (!healthy || self.is_healthy(i)))
    }

    /// Moves the pin off `failed` if it is still there: to a healthy endpoint if any, else one
    /// not suspect, else the next one, so a watch does not come back to the same dead member.
    fn repin_from(&self, failed: usize, skip: &[bool]) -> Option<usize> {
        let mut pinned = lock(&self.pinned);
        if *pinned != failed && !skip.get(*pinned).copied().unwrap_or(false) {
            return Some(*pinned);
        }
        let next = self.choose(failed, skip, true).or_else(|| {
            let count = self.members.len();
            (1..=count)
                .map(|step| (failed + step) % count)
                .find(|&i| lock(&self.members[i].probe).suspect_since.is_none())
        });
        let moved = next.unwrap_or((failed + 1) % self.members.len());
        if moved != *pinned {
            tracing::info!(from = %self.members[*pinned].endpoint, to = %self.members[moved].endpoint, "etcd endpoint re-pinned");
            *pinned = moved;
        }
        next
    }

    /// After a failure on `failed`, the healthy endpoint not yet `tried` to retry on, pinned.
    /// Waits up to the request timeout for the probe to find one (a new leader is being
    /// elected, or the probe has not yet seen the survivors).
    async fn wait_for_healthy(&self, failed: usize, tried: &[bool]) -> Option<usize> {
        if tried.iter().all(|&t| t) {
            self.repin_from(failed, &[]);
            return None;
        }
        let deadline = tokio::time::Instant::now() + self.options.request_timeout;
        loop {
            let probed = self.probed.notified();
            tokio::pin!(probed);
            probed.as_mut().enable();
            if let Some(next) = self.choose(failed, tried, true) {
                let mut pinned = lock(&self.pinned);
                // Another call may have re-pinned to a healthy endpoint already; keep that.
                if *pinned == failed || !self.is_healthy(*pinned) {
                    *pinned = next;
                }
                return Some(next);
            }
            self.probe_now.notify_one();
            if tokio::time::timeout_at(deadline, probed).await.is_err() {
                self.repin_from(failed, &[]);
                return None;
            }
        }
    }

    /// Probes every endpoint at once, then moves the pin if the pinned one is unhealthy and
    /// another is healthy.
    async fn probe_all(&self) {
        let timeout = self
            .options
            .request_timeout
            .min(self.options.probe_interval);
        join_all(self.members.iter().map(|member| async move {
            let started = Instant::now();
            let mut maintenance = member.client.maintenance_client();
            let answer = tokio::time::timeout(timeout, maintenance.status()).await;
            let mut probe = lock(&member.probe);
            let now = Instant::now();
            match answer {
                Ok(Ok(status)) => {
                    probe.reachable = true;
                    probe.has_leader = status.leader() != 0;
                    probe.answered_at = Some(now);
                    if probe.has_leader {
                        probe.leader_at = Some(now);
                    }
                    if let Some(header) = status.header() {
                        probe.revision = Some(header.revision());
                    }
                    if probe.suspect_since.is_some_and(|at| at <= started) {
                        probe.suspect_since = None;
                    }
                    probe.last_error = None;
                }
                Ok(Err(error)) => {
                    // "no leader" is an answer: the member is up but cut from its quorum.
                    probe.reachable = no_leader(&error);
                    if probe.reachable {
                        probe.answered_at = Some(now);
                    }
                    probe.has_leader = false;
                    probe.last_error = Some(error.to_string());
                }
                Err(_) => {
                    probe.reachable = false;
                    probe.has_leader = false;
                    probe.last_error = Some(format!("status timed out after {timeout:?}"));
                }
            }
        }))
        .await;

        let pinned = *lock(&self.pinned);
        if !self.is_healthy(pinned) && self.choose(pinned, &[], true).is_some() {
            self.repin_from(pinned, &[]);
        }
        self.probed.notify_waiters();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Wakes the probe task, which then finds no Connection left and ends.
        self.probe_now.notify_one();
    }
}

/// Probes every `probe_interval`, or sooner when a failed call asks. Holds only a Weak
/// between rounds so that dropping the last Connection ends it.
async fn probe_task(inner: Weak<Inner>, probe_now: Arc<Notify>) {
    let Some(options) = inner.upgrade().map(|inner| inner.options.clone()) else {
        return;
    };
    // Failed calls ask for rounds; spacing them keeps a burst of failures from busy-probing.
    let interval = options.probe_interval.max(Duration::from_millis(10));
    let min_gap = interval / 10;
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = probe_now.notified() => {}
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.probe_all().await;
        drop(inner);
        tokio::time::sleep(min_gap).await;
    }
}

/// Whether an error says the endpoint failed (unreachable, no leader, cut off) rather than
/// that etcd answered the request with a refusal.
fn endpoint_failed(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(status) => {
            let code = i32::from(status.code());
            code == CODE_UNAVAILABLE
                || code == CODE_DEADLINE_EXCEEDED
                || code == CODE_CANCELLED
                || (code == CODE_UNKNOWN && is_connection_message(status.message()))
                || no_leader(error)
        }
        _ => false,
    }
}

fn is_connection_message(message: &str) -> bool {
    ["transport", "connection", "broken pipe", "h2 protocol"]
        .iter()
        .any(|needle| message.contains(needle))
}

/// etcd's "no leader" and "leader changed": the member answered but cannot serve.
fn no_leader(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            message.contains("no leader") || message.contains("leader changed")
        }
        _ => false,
    }
}
