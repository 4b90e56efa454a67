//! What a node shares with the others through etcd besides the registry: the cutover table
//! (the mesh's `SharedModes`, and the task applying the other nodes' changes) and the
//! leaders of leader-only jobs. In embedded mode none of this runs: the table is the file
//! and this node leads every job.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use ferry_core::Registry;

use ferry_etcd::{CutoverEntry, CutoverEvent, CutoverMode, Leader, SharedCutover};
use ferry_proxy::cutover::Mode;
use ferry_proxy::mesh::{Mesh, SharedModes};
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, watch};

/// The cutover table in etcd, as the mesh sees it.
#[derive(Debug)]
pub struct EtcdModes {
    table: SharedCutover,
    /// The revision of this node's last write per service: the watch brings that write back
    /// after it was applied here, and an older one must not flip the service back meanwhile.
    written: Mutex<HashMap<String, i64>>,
}

impl EtcdModes {
    pub fn new(table: SharedCutover) -> EtcdModes {
        EtcdModes {
            table,
            written: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a change at `revision` is older than this node's own last write.
    fn superseded(&self, service: &str, revision: i64) -> bool {
        self.written
            .lock()
            .map(|written| written.get(service).is_some_and(|at| *at > revision))
            .unwrap_or(false)
    }
}

impl SharedModes for EtcdModes {
    fn save<'a>(&'a self, service: &'a str, mode: Mode) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let revision = self
                .table
                .set(service, to_etcd(mode))
                .await
                .map_err(|error| error.to_string())?;
            if let Ok(mut written) = self.written.lock() {
                written.insert(service.to_owned(), revision);
            }
            Ok(())
        })
    }

    fn published<'a>(&'a self, service: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            // The mode is saved and applied: a failure here only delays readers elsewhere
            // until the app's next change, so it is logged, not returned.
            match self.table.touch_instances(service).await {
                Ok(touched) => {
                    tracing::debug!(service, touched, "instances touched for the cutover")
                }
                Err(error) => {
                    tracing::warn!(service, %error, "cannot touch the instances after a cutover")
                }
            }
        })
    }
}

pub fn to_etcd(mode: Mode) -> CutoverMode {
    match mode {
        Mode::Mesh => CutoverMode::Mesh,
        Mode::Legacy => CutoverMode::Legacy,
    }
}

pub fn from_etcd(mode: CutoverMode) -> Mode {
    match mode {
        CutoverMode::Mesh => Mode::Mesh,
        CutoverMode::Legacy => Mode::Legacy,
    }
}

/// The modes of a table read from etcd.
pub fn modes(table: &BTreeMap<String, CutoverEntry>) -> BTreeMap<String, Mode> {
    table
        .iter()
        .map(|(service, entry)| (service.to_ascii_uppercase(), from_etcd(entry.mode)))
        .collect()
}

/// Applies every change the table's watch brings to this node's mesh, as a local change
/// would be applied (listener first, then the route), until `shutdown`.
///
/// The node that made a change touches the service's instances once it applied it, which
/// wakes every node's readers at a new revision. If that touch reached this node's registry
/// before this node set its route, its readers may have read the old address at that
/// revision and nothing would wake them again: this node then touches once more itself
/// (a rare race, so rarely more than one touch per cutover).
pub async fn follow_cutovers(
    mesh: Arc<Mesh>,
    registry: Arc<Registry>,
    shared: Arc<EtcdModes>,
    mut events: mpsc::UnboundedReceiver<CutoverEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            event = events.recv() => match event {
                Some(event) => event,
                None => return,
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let (changes, revision): (Vec<(String, Mode)>, i64) = match event {
            CutoverEvent::Set {
                service,
                entry,
                revision,
            } => {
                if shared.superseded(&service, revision) {
                    continue;
                }
                tracing::info!(%service, mode = entry.mode.as_str(), by = %entry.by, "cutover from the shared table");
                (vec![(service, from_etcd(entry.mode))], revision)
            }
            CutoverEvent::Removed { service, revision } => {
                (vec![(service, Mode::Legacy)], revision)
            }
            CutoverEvent::Reload { table, revision } => {
                let wanted = modes(&table);
                let mut changes: Vec<(String, Mode)> = mesh
                    .modes()
                    .into_iter()
                    .filter(|(service, mode)| *mode == Mode::Mesh && !wanted.contains_key(service))
                    .map(|(service, _)| (service, Mode::Legacy))
                    .collect();
                changes.extend(wanted);
                (changes, revision)
            }
        };
        for (service, mode) in changes {
            let before = registry.route(&service);
            if let Err(error) = mesh.apply(&service, mode).await {
                tracing::error!(%service, mode = mode.as_str(), %error, "cannot apply a cutover from the shared table");
                continue;
            }
            let rerouted = registry.route(&service) != before;
            let (index, _) = registry.endpoints(&service);
            if rerouted && index > revision.max(0) as u64 {
                shared.published(&service).await;
            }
        }
    }
}

/// The leaders of this node's leader-only jobs, for `/api/leaders` and `ferry ctl nodes`.
#[derive(Clone, Debug, Default)]
pub struct Leaders(pub Vec<Arc<Leader>>);

impl Leaders {
    pub fn json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.0
                .iter()
                .map(|leader| {
                    let holder = leader.holder();
                    serde_json::json!({
                        "job": holder.job,
                        "leader": holder.node,
                        "this_node": holder.here,
                    })
                })
                .collect(),
        )
    }

    /// Gives up every job this node leads, so the others take over at once.
    pub async fn resign(&self) {
        for leader in &self.0 {
            leader.resign(std::time::Duration::from_secs(1)).await;
        }
    }
}
