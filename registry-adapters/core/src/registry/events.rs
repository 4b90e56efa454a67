//! The event log: what happened to the registry's instances and services, in the order it
//! happened, for people (the admin API's `/api/events`, `ferry ctl events`, the dashboard).
//!
//! The log is a fixed-capacity ring kept under the registry's lock and written by the write
//! core itself (`Registry::write_record`, `Registry::remove`, the replicated feed,
//! `Registry::set_route`), so every path that changes the registry — a client's write, a
//! legacy sync's import, another node's change through a shared store, a cutover — records
//! its event in the same order as the change, and no caller can forget to. A change that
//! changes nothing people care about (a renewal, a re-registration with the same status, a
//! metadata refresh) records nothing, so a busy estate does not flush the log with noise.
//! Memory is bounded by the capacity, whatever the uptime: the oldest event goes first.

use std::collections::VecDeque;
use std::fmt;

use crate::model::{Instance, Millis, Status, OWNER_METADATA_KEY};

/// How many events a registry keeps unless told otherwise.
pub const DEFAULT_EVENT_CAPACITY: usize = 1_000;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A new instance.
    Registered,
    /// Removed by its client, through an API, or by the sync that imported it.
    Deregistered,
    /// Removed by the registry: its lease expired, its keeping node's lease went, or a
    /// check stayed critical past its `DeregisterCriticalServiceAfter`.
    Evicted,
    /// Its published status changed.
    Status,
    /// A service moved to the mesh (or its mesh address moved).
    Cutover,
    /// A service moved back to its instances' own addresses.
    Rollback,
}

impl EventKind {
    /// The kind's name for people and the admin API (`registered`, `status`...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Registered => "registered",
            EventKind::Deregistered => "deregistered",
            EventKind::Evicted => "evicted",
            EventKind::Status => "status",
            EventKind::Cutover => "cutover",
            EventKind::Rollback => "rollback",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing that happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Grows by one per event, from 1 at the process's start; a poller asks for what came
    /// after the last one it saw.
    pub seq: u64,
    /// Wall-clock milliseconds from the registry's clock.
    pub at: Millis,
    pub kind: EventKind,
    /// The upper-case app key.
    pub service: String,
    /// The instance, for the kinds about one instance.
    pub instance: Option<String>,
    /// A short sentence for people (`UP → OUT_OF_SERVICE`, `lease expired`).
    pub detail: String,
}

/// What a read of the log returns: the newest event's sequence number (0 before the first
/// event) and the events asked for, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventPage {
    pub latest: u64,
    pub events: Vec<Event>,
}

/// Which events a read wants.
#[derive(Clone, Debug)]
pub struct EventQuery {
    /// Only events with a larger sequence number.
    pub after: u64,
    /// At most this many, the newest ones.
    pub limit: usize,
    /// Only this service's (any case).
    pub service: Option<String>,
}

impl Default for EventQuery {
    fn default() -> Self {
        EventQuery {
            after: 0,
            limit: 100,
            service: None,
        }
    }
}

/// The bounded ring of events.
#[derive(Debug)]
pub(super) struct EventLog {
    /// Oldest first; never longer than `capacity`.
    events: VecDeque<Event>,
    capacity: usize,
    /// The sequence number the next event takes.
    next_seq: u64,
}

impl EventLog {
    pub(super) fn new(capacity: usize) -> EventLog {
        let capacity = capacity.max(1);
        EventLog {
            // Allocated once: the ring never grows past it, nor reallocates.
            events: VecDeque::with_capacity(capacity),
            capacity,
            next_seq: 1,
        }
    }

    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(super) fn push(
        &mut self,
        at: Millis,
        kind: EventKind,
        service: &str,
        instance: Option<&str>,
        detail: String,
    ) {
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            seq: self.next_seq,
            at,
            kind,
            service: service.to_owned(),
            instance: instance.map(str::to_owned),
            detail,
        });
        self.next_seq += 1;
    }

    pub(super) fn read(&self, query: &EventQuery) -> EventPage {
        let service = query.service.as_deref().map(str::to_ascii_uppercase);
        let events = self
            .events
            .iter()
            .rev()
            // Newest first, so the first at or below `after` ends the read.
            .take_while(|event| event.seq > query.after)
            .filter(|event| {
                service
                    .as_deref()
                    .is_none_or(|wanted| event.service == wanted)
            })
            .take(query.limit)
            .cloned()
            .collect();
        EventPage {
            latest: self.next_seq - 1,
            events,
        }
    }

    /// Records what a write of `instance` over `previous` means to people, if anything: a
    /// new instance, a status change, or an imported copy taken over by a registration.
    /// `origin` (where the change was made, asked only when there is an event) is said in
    /// the detail unless the copy's import source is.
    pub(super) fn record_put(
        &mut self,
        at: Millis,
        previous: Option<&Instance>,
        instance: &Instance,
        origin: impl FnOnce() -> Option<String>,
    ) {
        let source = || imported_from(instance).or_else(origin);
        let (kind, detail) = match previous {
            None => (
                EventKind::Registered,
                with_source(status(instance.status), source()),
            ),
            Some(stored) if stored.status != instance.status => (
                EventKind::Status,
                with_source(
                    format!("{} → {}", status(stored.status), status(instance.status)),
                    source(),
                ),
            ),
            Some(stored)
                if stored.registration == crate::model::Registration::Imported
                    && instance.registration != crate::model::Registration::Imported =>
            {
                let from = imported_from(stored).unwrap_or_else(|| "from a legacy sync".to_owned());
                (
                    EventKind::Registered,
                    format!("{}, taking over the copy {from}", status(instance.status)),
                )
            }
            Some(_) => return,
        };
        self.push(at, kind, &instance.app, Some(&instance.id), detail);
    }
}

/// How an instance left the registry, as the event log tells it.
#[derive(Clone, Debug)]
pub(super) enum Removal {
    /// Its client or an API removed it; the detail says who.
    Deregistered(String),
    /// The registry removed it; the detail says why.
    Evicted(String),
}

impl Removal {
    pub(super) fn record(self, log: &mut EventLog, at: Millis, removed: &Instance) {
        let (kind, detail) = match self {
            Removal::Deregistered(detail) => (EventKind::Deregistered, detail),
            Removal::Evicted(detail) => (EventKind::Evicted, detail),
        };
        log.push(at, kind, &removed.app, Some(&removed.id), detail);
    }
}

/// `from eureka sync` for a copy a legacy sync imported (`ferry-owner: legacy-eureka`).
pub(super) fn imported_from(instance: &Instance) -> Option<String> {
    if instance.registration != crate::model::Registration::Imported {
        return None;
    }
    let owner = instance.metadata.get(OWNER_METADATA_KEY)?;
    let source = owner.strip_prefix("legacy-").unwrap_or(owner);
    Some(format!("from {source} sync"))
}

fn with_source(detail: String, source: Option<String>) -> String {
    match source {
        Some(source) => format!("{detail} ({source})"),
        None => detail,
    }
}

fn status(status: Status) -> String {
    status.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(capacity: usize, count: u64) -> EventLog {
        let mut log = EventLog::new(capacity);
        for n in 0..count {
            let service = if n % 2 == 0 { "ORDERS" } else { "PAYMENTS" };
            log.push(
                n as Millis,
                EventKind::Registered,
                service,
                Some(&format!("i-{n}")),
                "UP".into(),
            );
        }
        log
    }

    #[test]
    fn the_ring_keeps_the_newest_events_up_to_its_capacity() {
        let log = log_with(5, 12);
        assert_eq!(log.events.len(), 5);
        let page = log.read(&EventQuery {
            limit: 100,
            ..EventQuery::default()
        });
        assert_eq!(page.latest, 12);
        let seqs: Vec<u64> = page.events.iter().map(|event| event.seq).collect();
        assert_eq!(
            seqs,
            vec![12, 11, 10, 9, 8],
            "newest first, the oldest dropped"
        );
    }

    #[test]
    fn an_empty_log_reports_latest_zero() {
        let page = EventLog::new(10).read(&EventQuery::default());
        assert_eq!(page, EventPage::default());
    }

    #[test]
    fn after_limit_and_service_narrow_a_read() {
        let log = log_with(100, 10);
        let newer = log.read(&EventQuery {
            after: 7,
            ..EventQuery::default()
        });
        assert_eq!(newer.latest, 10);
        let seqs: Vec<u64> = newer.events.iter().map(|event| event.seq).collect();
        assert_eq!(seqs, vec![10, 9, 8]);
        let none = log.read(&EventQuery {
            after: 10,
            ..EventQuery::default()
        });
        assert!(none.events.is_empty());
        assert_eq!(none.latest, 10);
        let limited = log.read(&EventQuery {
            limit: 2,
            ..EventQuery::default()
        });
        let seqs: Vec<u64> = limited.events.iter().map(|event| event.seq).collect();
        assert_eq!(seqs, vec![10, 9]);
        let orders = log.read(&EventQuery {
            service: Some("orders".into()),
            after: 2,
            ..EventQuery::default()
        });
        let seqs: Vec<u64> = orders.events.iter().map(|event| event.seq).collect();
        assert_eq!(
            seqs,
            vec![9, 7, 5, 3],
            "odd sequence numbers are ORDERS' events"
        );
        assert!(orders.events.iter().all(|event| event.service == "ORDERS"));
    }
}
