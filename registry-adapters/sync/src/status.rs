//! What one legacy source reports about itself: reachable or not, the last successful
//! exchange, instances imported and exported, errors. The adapter writes it; the admin API
//! (`/api/sync`, `ferry ctl sync`) and `/metrics` read snapshots of it.

use parking_lot::Mutex;

use ferry_core::model::Millis;

/// One source's live status, shared between its adapter and the readers.
#[derive(Debug)]
pub struct SourceStatus {
    inner: Mutex<SourceSnapshot>,
}

/// A copy of a source's status at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceSnapshot {
    /// The owner name its imported copies carry (`legacy-eureka`, `legacy-consul`).
    pub name: String,
    /// `eureka` or `consul`.
    pub kind: String,
    /// The addresses it was given, in failover order.
    pub endpoints: Vec<String>,
    /// The one it talks to now.
    pub current_endpoint: Option<String>,
    /// Whether the last exchange succeeded.
    pub reachable: bool,
    /// When an exchange last succeeded (milliseconds since the epoch).
    pub last_success: Option<Millis>,
    /// Whether the first import has completed since Ferry started.
    pub initial_import_done: bool,
    /// Imported copies held now.
    pub imported: usize,
    /// Imported copies held while the source cannot be reached (kept, not evicted).
    pub stale: usize,
    /// Imported copies gone from the source but kept until its grace period ends.
    pub pending_removals: usize,
    /// Instances of Ferry's held in the legacy registry now.
    pub exported: usize,
    /// Reads of the legacy registry: whole and incremental.
    pub full_fetches: u64,
    pub delta_fetches: u64,
    /// Failed exchanges, and documents or instances refused as malformed.
    pub errors: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<Millis>,
}

impl SourceStatus {
    pub fn new(name: &str, kind: &str, endpoints: Vec<String>) -> SourceStatus {
        SourceStatus {
            inner: Mutex::new(SourceSnapshot {
                name: name.to_owned(),
                kind: kind.to_owned(),
                endpoints,
                ..SourceSnapshot::default()
            }),
        }
    }

    pub fn snapshot(&self) -> SourceSnapshot {
        self.inner.lock().clone()
    }

    /// Changes the status in place.
    pub fn update(&self, change: impl FnOnce(&mut SourceSnapshot)) {
        change(&mut self.inner.lock());
    }

    /// A successful exchange with `endpoint` at `now`.
    pub fn succeeded(&self, endpoint: &str, now: Millis) {
        let mut inner = self.inner.lock();
        inner.reachable = true;
        inner.last_success = Some(now);
        inner.current_endpoint = Some(endpoint.to_owned());
    }

    /// A failed exchange, or something refused; `unreachable` when the source itself could
    /// not be reached (every endpoint failed), not for one bad document.
    pub fn failed(&self, error: &str, unreachable: bool, now: Millis) {
        let mut inner = self.inner.lock();
        inner.errors += 1;
        inner.last_error = Some(error.to_owned());
        inner.last_error_at = Some(now);
        if unreachable {
            inner.reachable = false;
        }
    }
}
