//! Traffic history for the dashboard (`GET /api/traffic`): every `INTERVAL` the proxy's
//! per-service families are read once, and each service's figures over that interval
//! (requests, answers, failed answers, p50 and p99 interpolated in the latency histogram's
//! bucket deltas) go into a ring of `WINDOW` samples, 15 minutes. At most `MAX_SERVICES`
//! services have a ring, so memory stays bounded however long Ferry runs.
//!
//! Nothing on the proxy's request path changes: the sampler only reads. prometheus-client
//! exposes a histogram's buckets (and a family's label sets) only through its encoders, so
//! the sampler encodes a private registry that holds clones of the proxy's own families
//! (clones share their cells) under names of its own, and reads that text: the public
//! names on `/metrics` can change without touching this module.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_core::Clock;
use ferry_proxy::metrics::ProxyMetrics;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tokio::sync::watch;

/// How often a sample is taken.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Samples kept per service: 15 minutes at `INTERVAL`.
pub const WINDOW: usize = 90;
/// Services with a ring at most; a new one takes the ring of a service idle for the whole
/// window, or waits until there is one.
pub const MAX_SERVICES: usize = 256;

/// One service's cumulative figures as the families hold them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    pub requests: u64,
    pub retries: u64,
    pub open_connections: u64,
    /// Answers the proxy gave itself (no endpoint answered: 502, 503, 504).
    pub proxy_errors: u64,
    /// Cumulative latency bucket counts by upper bound, ascending, `+Inf` last.
    pub buckets: Vec<(f64, u64)>,
    /// By endpoint id: answers by status class (1xx..5xx) and ejections.
    pub endpoints: BTreeMap<String, ([u64; 5], u64)>,
}

impl Totals {
    /// Every answer: the endpoints' and the proxy's own.
    fn answered(&self) -> u64 {
        self.proxy_errors
            + self
                .endpoints
                .values()
                .map(|(classes, _)| classes.iter().sum::<u64>())
                .sum::<u64>()
    }

    /// Answers that failed: 5xx from an endpoint, or no endpoint answered.
    fn failed(&self) -> u64 {
        self.proxy_errors
            + self
                .endpoints
                .values()
                .map(|(classes, _)| classes[4])
                .sum::<u64>()
    }
}

/// One service's figures over one interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// When the interval ended (Unix milliseconds).
    pub at_ms: i64,
    /// How long it was, for the rate.
    pub span_ms: u32,
    pub requests: u32,
    /// Answers the callers got (an attempt the proxy retried is none) and how many failed.
    pub answered: u32,
    pub failed: u32,
    /// `None` when no request finished in the interval.
    pub p50_ms: Option<f32>,
    pub p99_ms: Option<f32>,
}

impl Sample {
    fn request_rate(&self) -> f64 {
        f64::from(self.requests) * 1000.0 / f64::from(self.span_ms.max(1))
    }

    fn success_rate(&self) -> Option<f64> {
        (self.answered > 0)
            .then(|| f64::from(self.answered - self.failed) / f64::from(self.answered))
    }
}

/// The value at quantile `q` of what a histogram observed between two readings of its
/// cumulative buckets (same bounds, ascending, `+Inf` last), interpolated linearly within
/// the bucket it falls in, as Prometheus's `histogram_quantile` does; a value in the `+Inf`
/// bucket is reported as the highest finite bound. `None` when nothing was observed.
pub fn quantile(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> Option<f64> {
    let deltas: Vec<(f64, u64)> = after
        .iter()
        .enumerate()
        .map(|(at, (bound, count))| {
            let earlier = before
                .get(at)
                .filter(|(earlier_bound, _)| earlier_bound == bound)
                .map_or(0, |(_, count)| *count);
            (*bound, count.saturating_sub(earlier))
        })
        .collect();
    let total = deltas.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for (bound, cumulative) in deltas {
        if cumulative as f64 >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let within = (cumulative - lower.1) as f64;
            let share = if within > 0.0 {
                (rank - lower.1 as f64) / within
            } else {
                1.0
            };
            return Some(lower.0 + (bound - lower.0) * share);
        }
        lower = (bound, cumulative);
    }
    Some(lower.0)
}

/// The rings and the readings they are cut from.
#[derive(Debug, Default)]
struct Rings {
    /// The previous reading of every service in the families (they never shrink, so this
    /// is no larger than the families themselves).
    baselines: BTreeMap<String, Totals>,
    /// When the previous reading was taken; `None` before the first.
    last_at_ms: Option<i64>,
    /// Each service with traffic: its last `WINDOW` samples, oldest first.
    rings: BTreeMap<String, VecDeque<Sample>>,
}

impl Rings {
    /// Takes a reading at `at_ms`: each service's change since the previous one becomes a
    /// sample. The first reading only sets the baselines.
    fn record(&mut self, at_ms: i64, totals: BTreeMap<String, Totals>) {
        let Some(last_at_ms) = self.last_at_ms.replace(at_ms) else {
            self.baselines = totals;
            return;
        };
        let span_ms = u32::try_from(at_ms.saturating_sub(last_at_ms)).unwrap_or(u32::MAX);
        for (service, now) in &totals {
            let before = self.baselines.get(service).cloned().unwrap_or_default();
            let count = |now: u64, before: u64| {
                u32::try_from(now.saturating_sub(before)).unwrap_or(u32::MAX)
            };
            let sample = Sample {
                at_ms,
                span_ms,
                requests: count(now.requests, before.requests),
                answered: count(now.answered(), before.answered()),
                failed: count(now.failed(), before.failed()),
                p50_ms: quantile(&before.buckets, &now.buckets, 0.5)
                    .map(|seconds| (seconds * 1000.0) as f32),
                p99_ms: quantile(&before.buckets, &now.buckets, 0.99)
                    .map(|seconds| (seconds * 1000.0) as f32),
            };
            // A service gets a ring with its first traffic, and keeps it while idle so its
            // charts show the quiet too.
            let busy = sample.requests > 0 || sample.answered > 0;
            let tracked = self.rings.contains_key(service) || (busy && self.make_room());
            if !tracked {
                continue;
            }
            let ring = self
                .rings
                .entry(service.clone())
                .or_insert_with(|| VecDeque::with_capacity(WINDOW));
            if ring.len() == WINDOW {
                ring.pop_front();
            }
            ring.push_back(sample);
        }
        self.baselines = totals;
    }

    /// Whether a new ring may be added: below the cap, or after dropping the ring of a
    /// service that had no traffic in the whole window.
    fn make_room(&mut self) -> bool {
        if self.rings.len() < MAX_SERVICES {
            return true;
        }
        let idle = self.rings.iter().find_map(|(service, ring)| {
            (ring.len() == WINDOW && ring.iter().all(|sample| sample.requests == 0))
                .then(|| service.clone())
        });
        match idle {
            Some(service) => {
                self.rings.remove(&service);
                true
            }
            None => false,
        }
    }
}

/// The sampler's state, shared with the admin API.
pub struct History {
    /// Clones of the proxy's families only, under this module's own names.
    families: Registry,
    rings: Mutex<Rings>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").finish_non_exhaustive()
    }
}

impl History {
    pub fn new(proxy: &ProxyMetrics) -> History {
        let mut families = Registry::default();
        families.register("requests", "", proxy.requests.clone());
        families.register("responses", "", proxy.responses.clone());
        families.register("latency", "", proxy.latency.clone());
        families.register("retries", "", proxy.retries.clone());
        families.register("ejections", "", proxy.ejections.clone());
        families.register("open_connections", "", proxy.open_connections.clone());
        History {
            families,
            rings: Mutex::default(),
        }
    }

    /// Every service's cumulative figures now.
    pub fn totals(&self) -> BTreeMap<String, Totals> {
        let mut text = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.families);
        parse_totals(&text)
    }

    /// Takes one sample of every service.
    pub fn tick(&self, at_ms: i64) {
        let totals = self.totals();
        if let Ok(mut rings) = self.rings.lock() {
            rings.record(at_ms, totals);
        }
    }

    /// Samples every `INTERVAL` until `stopping`.
    pub fn spawn(
        self: Arc<Self>,
        clock: Clock,
        mut stopping: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(INTERVAL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => self.tick(clock.now()),
                    _ = stopping.changed() => return,
                }
            }
        })
    }

    /// `GET /api/traffic[?service=NAME]`: each service's latest sample and its series;
    /// for one service, also its totals by endpoint.
    pub fn json(&self, service: Option<&str>) -> Value {
        let service = service.map(str::to_ascii_uppercase);
        let services: Vec<Value> = match self.rings.lock() {
            Ok(rings) => rings
                .rings
                .iter()
                .filter(|(name, _)| {
                    service
                        .as_ref()
                        .is_none_or(|wanted| name.as_str() == wanted.as_str())
                })
                .map(|(name, ring)| series_json(name, ring))
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut body = json!({
            "interval_seconds": INTERVAL.as_secs(),
            "window": WINDOW,
            "services": services,
        });
        if let Some(service) = service {
            let totals = self.totals().remove(&service).unwrap_or_default();
            body["totals"] = totals_json(&totals);
        }
        body
    }
}

fn series_json(service: &str, ring: &VecDeque<Sample>) -> Value {
    let latest = ring.back().map(|sample| {
        json!({
            "at_ms": sample.at_ms,
            "requests": sample.requests,
            "request_rate": sample.request_rate(),
            "success_rate": sample.success_rate(),
            "p50_ms": sample.p50_ms,
            "p99_ms": sample.p99_ms,
        })
    });
    json!({
        "service": service,
        "latest": latest,
        "at_ms": ring.iter().map(|sample| sample.at_ms).collect::<Vec<_>>(),
        "request_rate": ring.iter().map(Sample::request_rate).collect::<Vec<_>>(),
        "success_rate": ring.iter().map(Sample::success_rate).collect::<Vec<_>>(),
        "p50_ms": ring.iter().map(|sample| sample.p50_ms).collect::<Vec<_>>(),
        "p99_ms": ring.iter().map(|sample| sample.p99_ms).collect::<Vec<_>>(),
    })
}

fn totals_json(totals: &Totals) -> Value {
    json!({
        "requests": totals.requests,
        "retries": totals.retries,
        "open_connections": totals.open_connections,
        "proxy_errors": totals.proxy_errors,
        "endpoints": totals.endpoints.iter().map(|(id, (classes, ejections))| json!({
            "id": id,
            "responses": {
                "1xx": classes[0], "2xx": classes[1], "3xx": classes[2],
                "4xx": classes[3], "5xx": classes[4],
            },
            "ejections": ejections,
        })).collect::<Vec<_>>(),
    })
}

/// Reads the private registry's text into totals per service.
fn parse_totals(text: &str) -> BTreeMap<String, Totals> {
    let mut all: BTreeMap<String, Totals> = BTreeMap::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((name, labels, value)) = crate::traffic::sample_line(line) else {
            continue;
        };
        let Some(service) = labels.get("service") else {
            continue;
        };
        let totals = all.entry(service.clone()).or_default();
        let whole = value as u64;
        let endpoint = labels.get("endpoint").cloned().unwrap_or_default();
        match name {
            "requests_total" => totals.requests = whole,
            "retries_total" => totals.retries = whole,
            "open_connections" => totals.open_connections = whole,
            "latency_bucket" => {
                if let Some(bound) = labels.get("le").and_then(|le| le.parse().ok()) {
                    totals.buckets.push((bound, whole));
                }
            }
            "responses_total" => {
                let class = labels.get("class").map(String::as_str).unwrap_or("");
                let slot = ["1xx", "2xx", "3xx", "4xx", "5xx"]
                    .iter()
                    .position(|known| *known == class);
                match slot {
                    Some(slot) => totals.endpoints.entry(endpoint).or_default().0[slot] = whole,
                    None if class == "error" => totals.proxy_errors += whole,
                    None => {}
                }
            }
            "ejections_total" => totals.endpoints.entry(endpoint).or_default().1 = whole,
            _ => {}
        }
    }
    for totals in all.values_mut() {
        totals.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    all
}

#[cfg(test)]
mod tests;
