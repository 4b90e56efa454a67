//! What a node shares with the others through etcd besides the registry: the cutover table
//! (the mesh's `SharedModes`, and the task applying the other nodes' changes) and the
//! leaders of leader-only jobs. In embedded mode none of this runs: the table is the file
//! and this node leads every job.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_etcd::{CutoverEntry, CutoverEvent, CutoverMode, Leader, SharedCutover};
use ferry_proxy::cutover::Mode;
use ferry_proxy::mesh::{Mesh, SharedModes};
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, watch};

/// The cutover table in etcd, as the mesh sees it.
#[derive(Debug)]
pub struct EtcdModes(pub SharedCutover);

impl SharedModes for EtcdModes {
    fn save<'a>(&'a self, service: &'a str, mode: Mode) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.0
                .set(service, to_etcd(mode))
                .await
                .map(drop)
                .map_err(|error| error.to_string())
        })
    }

    fn published<'a>(&'a self, service: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            // The mode is saved and applied: a failure here only delays readers elsewhere
            // until the app's next change, so it is logged, not returned.
            match self.0.touch_instances(service).await {
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
pub async fn follow_cutovers(
    mesh: Arc<Mesh>,
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
        let changes: Vec<(String, Mode)> = match event {
            CutoverEvent::Set { service, entry, .. } => {
                tracing::info!(%service, mode = entry.mode.as_str(), by = %entry.by, "cutover from the shared table");
                vec![(service, from_etcd(entry.mode))]
            }
            CutoverEvent::Removed { service, .. } => vec![(service, Mode::Legacy)],
            CutoverEvent::Reload { table, .. } => {
                let wanted = modes(&table);
                let mut changes: Vec<(String, Mode)> = mesh
                    .modes()
                    .into_iter()
                    .filter(|(service, mode)| *mode == Mode::Mesh && !wanted.contains_key(service))
                    .map(|(service, _)| (service, Mode::Legacy))
                    .collect();
                changes.extend(wanted);
                changes
            }
        };
        for (service, mode) in changes {
            if let Err(error) = mesh.apply(&service, mode).await {
                tracing::error!(%service, mode = mode.as_str(), %error, "cannot apply a cutover from the shared table");
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
