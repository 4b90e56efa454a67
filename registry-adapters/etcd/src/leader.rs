//! Leader-only work: one node at a time holds `/ferry/v1/leader/<job>` on a short lease of
//! its own, and the job runs only there.
//!
//! - **Campaign**: a txn creates the key (`create_revision == 0`) with this node's name on a
//!   lease of this campaign (TTL ~10 s, kept alive every third of it). Whoever loses watches
//!   the key and campaigns again the moment it goes: the holder resigned (a clean stop
//!   revokes its lease, so the next node takes over at once) or died (its lease ran out).
//! - **Stepping down**: a leader that cannot renew its lease stops leading on its own two
//!   thirds of a TTL after the last renewal etcd confirmed, before etcd can hand the key to
//!   another node, so two nodes never both believe they lead for longer than a clock drift.
//! - **Embedded mode**: [`Leader::always`] leads from the start and never stops.
//!
//! `Leader::holder()` says who leads (for `ferry ctl nodes` and `/api/leaders`), whatever the
//! store; `Leader::subscribe()` is the switch the job follows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
    WatchRequestSender, WatchResponseStream,
};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::connection::{Connection, EtcdError};
use crate::layout;
use crate::registrations::EtcdStore;

/// The lease TTL of a campaign by default: a dead leader's job moves within this.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// Who leads one job, as an operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub job: String,
    /// The leading node, if any node leads now.
    pub node: Option<String>,
    /// Whether that is this node.
    pub here: bool,
}

/// This node's candidacy for one job. Dropping it stops campaigning without resigning (the
/// lease then runs out, as if the node died); [`Leader::resign`] hands over at once.
pub struct Leader {
    job: String,
    node: String,
    leading: watch::Receiver<bool>,
    shared: Arc<Shared>,
}

struct Shared {
    /// The node holding the key, as last read or watched.
    holder: Mutex<Option<String>>,
    /// Set to end the campaign; with `resign`, the lease is revoked on the way out.
    stop: watch::Sender<Stop>,
    /// The campaign task's end, for `resign` to wait on.
    ended: watch::Sender<bool>,
    /// `always`'s switch, kept so that its subscribers never see it closed.
    _fixed: Option<watch::Sender<bool>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Running,
    Abandon,
    Resign,
}

impl std::fmt::Debug for Leader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leader")
            .field("job", &self.job)
            .field("node", &self.node)
            .field("leading", &*self.leading.borrow())
            .finish()
    }
}

impl Leader {
    /// A node that leads `job` from the start, for good: the embedded store has one node.
    pub fn always(node: &str, job: &str) -> Leader {
        let (fixed, leading) = watch::channel(true);
        let (stop, _) = watch::channel(Stop::Running);
        let (ended, _) = watch::channel(true);
        Leader {
            job: job.to_owned(),
            node: node.to_owned(),
            leading,
            shared: Arc::new(Shared {
                holder: Mutex::new(Some(node.to_owned())),
                stop,
                ended,
                _fixed: Some(fixed),
            }),
        }
    }

    /// Starts campaigning for `job` on the store's connection, on its etcd thread.
    pub fn campaign(store: &Arc<EtcdStore>, job: &str, ttl: Duration) -> Leader {
        let (leading_tx, leading) = watch::channel(false);
        let (stop, stopped) = watch::channel(Stop::Running);
        let (ended, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            holder: Mutex::new(None),
            stop,
            ended,
            _fixed: None,
        });
        let campaign = Campaign {
            connection: store.connection().clone(),
            key: layout::leader_key(job),
            job: job.to_owned(),
            node: store.node().to_owned(),
            ttl: ttl.max(Duration::from_secs(2)),
            leading: leading_tx,
            stopped,
            shared: shared.clone(),
            lease: 0,
            confirmed: Instant::now(),
        };
        store.worker().spawn(campaign.run());
        Leader {
            job: job.to_owned(),
            node: store.node().to_owned(),
            leading,
            shared,
        }
    }

    pub fn job(&self) -> &str {
        &self.job
    }

    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Follows whether this node leads; starts false in etcd mode until the first campaign.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    pub fn holder(&self) -> Holder {
        let node = self.shared.holder.lock().clone();
        Holder {
            job: self.job.clone(),
            here: node.as_deref() == Some(self.node.as_str()) && self.is_leader(),
            node,
        }
    }

    /// Stops campaigning and, if leading, gives the key up now (its lease revoked), so
    /// another node takes over without waiting for a TTL. Waits at most `within`.
    pub async fn resign(&self, within: Duration) {
        self.shared.stop.send_replace(Stop::Resign);
        let mut ended = self.shared.ended.subscribe();
        let _ = tokio::time::timeout(within, ended.wait_for(|ended| *ended)).await;
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.shared.stop.send_if_modified(|stop| {
            if *stop == Stop::Running {
                *stop = Stop::Abandon;
                true
            } else {
                false
            }
        });
    }
}

struct Campaign {
    connection: Connection,
    key: String,
    job: String,
    node: String,
    ttl: Duration,
    leading: watch::Sender<bool>,
    stopped: watch::Receiver<Stop>,
    shared: Arc<Shared>,
    /// The lease of this campaign, 0 when none is held.
    lease: i64,
    /// When etcd last confirmed the lease alive (a renewal, or the key won on it).
    confirmed: Instant,
}

/// Why one round of the campaign ended.
enum Round {
    /// The key went, or was never ours: campaign again now.
    Again,
    /// etcd failed: wait a little, then campaign again.
    Failed(String),
    Stop(Stop),
}

impl Campaign {
    async fn run(mut self) {
        loop {
            let stop = *self.stopped.borrow();
            if stop != Stop::Running {
                self.finish(stop).await;
                return;
            }
            match self.round().await {
                Round::Again => {}
                Round::Stop(stop) => {
                    self.finish(stop).await;
                    return;
                }
                Round::Failed(reason) => {
                    // etcd may expire the lease soon and let another node lead: stop first.
                    if *self.leading.borrow() && self.confirmed.elapsed() >= self.ttl * 2 / 3 {
                        self.set_leading(false, None);
                        self.lease = 0;
                    }
                    tracing::warn!(job = %self.job, %reason, "leader campaign failed; trying again");
                    let _ = tokio::time::timeout(
                        Duration::from_millis(500),
                        stop_requested(self.stopped.clone()),
                    )
                    .await;
                }
            }
        }
    }

    fn set_leading(&self, leading: bool, holder: Option<String>) {
        *self.shared.holder.lock() = holder;
        let changed = self.leading.send_if_modified(|now| {
            let changed = *now != leading;
            *now = leading;
            changed
        });
        if changed {
            if leading {
                tracing::info!(job = %self.job, node = %self.node, "this node leads");
            } else {
                tracing::info!(job = %self.job, node = %self.node, "this node no longer leads");
            }
        }
    }

    async fn finish(&mut self, stop: Stop) {
        let was_leading = *self.leading.borrow();
        self.set_leading(false, None);
        if stop == Stop::Resign && self.lease != 0 {
            let lease = self.lease;
            // Revoking deletes the key: the other candidates' watches fire at once.
            match self
                .connection
                .run(true, |mut client| async move {
                    client.lease_revoke(lease).await
                })
                .await
            {
                Ok(_) if was_leading => {
                    tracing::info!(job = %self.job, "resigned the leadership")
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(job = %self.job, %error, "cannot resign; the lease will run out")
                }
            }
        }
        self.shared.ended.send_replace(true);
    }

    /// This campaign's lease, renewed now (a key won on it then has most of a TTL ahead),
    /// or a new one if etcd no longer knows it.
    async fn grant(&mut self) -> Result<i64, EtcdError> {
        if self.lease != 0 {
            if self.keep_alive().await? {
                return Ok(self.lease);
            }
            self.lease = 0;
        }
        let ttl = self.ttl.as_secs() as i64;
        let asked = Instant::now();
        let granted = self
            .connection
            .run(true, |mut client| async move {
                client.lease_grant(ttl, None).await
            })
            .await?;
        self.lease = granted.id();
        self.confirmed = asked;
        Ok(self.lease)
    }

    /// One campaign: try to take the key; lead while it is ours, or watch it until it goes.
    async fn round(&mut self) -> Round {
        let lease = match self.grant().await {
            Ok(lease) => lease,
            Err(error) => return Round::Failed(error.to_string()),
        };
        let (key, node) = (self.key.clone(), self.node.clone());
        let answer = self
            .connection
            .run(true, |mut client| {
                let (key, node) = (key.clone(), node.clone());
                async move {
                    let txn = Txn::new()
                        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(
                            key.clone(),
                            node,
                            Some(PutOptions::new().with_lease(lease)),
                        )])
                        .or_else([TxnOp::get(key, None)]);
                    client.txn(txn).await
                }
            })
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => return Round::Failed(error.to_string()),
        };
        let revision = answer.header().map_or(0, |header| header.revision());
        let held = if answer.succeeded() {
            Some((self.node.clone(), lease))
        } else {
            answer.op_responses().into_iter().find_map(|op| match op {
                TxnOpResponse::Get(get) => get
                    .kvs()
                    .first()
                    .map(|kv| (String::from_utf8_lossy(kv.value()).into_owned(), kv.lease())),
                _ => None,
            })
        };
        let Some((holder, holder_lease)) = held else {
            // Gone between the compare and the read: campaign again.
            return Round::Again;
        };
        // Our own key from before a lost watch is still ours while its lease is.
        let ours = holder == self.node && holder_lease == lease;
        if ours {
            self.set_leading(true, Some(holder));
            self.lead(revision).await
        } else {
            self.set_leading(false, Some(holder));
            self.follow(revision).await
        }
    }

    /// A watch of the key after `revision` on the pinned endpoint; `None` (and the pin
    /// moved) if it cannot be opened.
    async fn watch_key(
        &self,
        revision: i64,
    ) -> Option<(String, WatchRequestSender, WatchResponseStream)> {
        let (endpoint, mut client) = self.connection.pinned();
        let options = WatchOptions::new().with_start_revision(revision + 1);
        let watched = tokio::time::timeout(
            Duration::from_secs(2),
            client.watch(self.key.clone(), Some(options)),
        )
        .await;
        match watched {
            Ok(Ok(watch)) => {
                let (watcher, stream) = watch.split();
                Some((endpoint, watcher, stream))
            }
            _ => {
                self.connection.repin(&endpoint);
                None
            }
        }
    }

    /// Leads: renews the lease and watches the key; steps down when it goes or cannot be
    /// renewed in time.
    async fn lead(&mut self, revision: i64) -> Round {
        let Some((endpoint, _watcher, mut stream)) = self.watch_key(revision).await else {
            // Without a watch we still lead on the lease; the next round re-reads the key.
            return self.step_down_unless_renewed().await;
        };
        let renew_every = self.ttl / 3;
        let mut ticker = tokio::time::interval(renew_every);
        ticker.tick().await;
        let stopped = stop_requested(self.stopped.clone());
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                message = stream.message() => match message {
                    Ok(Some(response)) => {
                        if response.canceled() {
                            self.connection.repin(&endpoint);
                            return Round::Again;
                        }
                        if response.events().iter().any(|event| event.event_type() == EventType::Delete) {
                            // The lease expired or was revoked behind our back.
                            tracing::warn!(job = %self.job, "the leader key went while this node led");
                            self.lease = 0;
                            self.set_leading(false, None);
                            return Round::Again;
                        }
                    }
                    _ => {
                        self.connection.repin(&endpoint);
                        return Round::Again;
                    }
                },
                _ = ticker.tick() => {
                    match self.keep_alive().await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(job = %self.job, "the leader lease expired");
                            self.lease = 0;
                            self.set_leading(false, None);
                            return Round::Again;
                        }
                        Err(error) => {
                            tracing::warn!(job = %self.job, %error, "cannot renew the leader lease");
                            if self.confirmed.elapsed() >= self.ttl * 2 / 3 {
                                return Round::Failed("the leader lease could not be renewed".into());
                            }
                        }
                    }
                }
                stop = &mut stopped => return Round::Stop(stop),
            }
        }
    }

    async fn step_down_unless_renewed(&mut self) -> Round {
        match self.keep_alive().await {
            Ok(true) => Round::Failed("cannot watch the leader key".into()),
            _ => {
                self.set_leading(false, None);
                self.lease = 0;
                Round::Failed("cannot watch the leader key nor renew its lease".into())
            }
        }
    }

    /// Whether etcd still knows the lease (false: it expired).
    async fn keep_alive(&mut self) -> Result<bool, EtcdError> {
        let lease = self.lease;
        let asked = Instant::now();
        let alive = self
            .connection
            .run(true, |mut client| async move {
                let (mut keeper, mut answers) = client.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                Ok(answers
                    .message()
                    .await?
                    .is_some_and(|answer| answer.ttl() > 0))
            })
            .await?;
        if alive {
            // Renewed as of when it was asked, not answered: the safe side.
            self.confirmed = asked;
        }
        Ok(alive)
    }

    /// Another node leads: watch the key until it goes, keeping this campaign's lease alive
    /// meanwhile so the next round can take it at once.
    async fn follow(&mut self, revision: i64) -> Round {
        let Some((endpoint, _watcher, mut stream)) = self.watch_key(revision).await else {
            return Round::Failed("cannot watch the leader key".into());
        };
        let mut ticker = tokio::time::interval(self.ttl / 3);
        ticker.tick().await;
        let stopped = stop_requested(self.stopped.clone());
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                message = stream.message() => match message {
                    Ok(Some(response)) => {
                        if response.canceled() {
                            // Compacted past our revision, or cancelled: read the key again.
                            return Round::Again;
                        }
                        for event in response.events() {
                            match event.event_type() {
                                EventType::Delete => {
                                    *self.shared.holder.lock() = None;
                                    return Round::Again;
                                }
                                EventType::Put => {
                                    if let Some(kv) = event.kv() {
                                        *self.shared.holder.lock() =
                                            Some(String::from_utf8_lossy(kv.value()).into_owned());
                                    }
                                }
                            }
                        }
                    }
                    _ => {
                        self.connection.repin(&endpoint);
                        return Round::Again;
                    }
                },
                _ = ticker.tick() => {
                    if let Ok(false) = self.keep_alive().await {
                        self.lease = 0;
                    }
                }
                stop = &mut stopped => return Round::Stop(stop),
            }
        }
    }
}

/// Resolves once the campaign is asked to end, with how.
async fn stop_requested(mut stopped: watch::Receiver<Stop>) -> Stop {
    loop {
        let stop = *stopped.borrow_and_update();
        if stop != Stop::Running {
            return stop;
        }
        if stopped.changed().await.is_err() {
            return Stop::Abandon;
        }
    }
}
