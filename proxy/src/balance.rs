//! Endpoint choice: power of two choices over a peak-EWMA latency estimate, as Linkerd does,
//! with round robin as the alternative. Ejected endpoints are skipped.
//!
//! Peak EWMA: a slower response than the estimate replaces it at once (peak), a faster one
//! pulls it down with exponential decay; the cost of an endpoint is its estimate times its
//! requests in flight plus one, so a slow or busy endpoint is chosen less.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;

use super::breaker::Breaker;

/// How fast the estimate forgets a peak.
const DECAY: Duration = Duration::from_secs(10);
/// The estimate of an endpoint never measured: optimistic, so new endpoints get traffic.
const DEFAULT_RTT: Duration = Duration::from_millis(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Strategy {
    #[default]
    PeakEwma,
    RoundRobin,
}

/// The live state of one endpoint.
#[derive(Debug)]
pub struct EndpointState {
    pub id: String,
    pub authority: String,
    /// `authority` parsed once, for building request URIs without re-parsing.
    pub uri_authority: Option<http::uri::Authority>,
    /// Responses by status class (1xx..5xx), bound to this endpoint's metric labels.
    pub responses: [prometheus_client::metrics::counter::Counter; 5],
    pending: AtomicUsize,
    ewma: Mutex<(f64, Instant)>,
    pub breaker: Breaker,
    /// This endpoint's index in per-endpoint tables kept by the transports (the HTTP/1.1
    /// path's connection pools), unique among the endpoints listed with it: the request
    /// path finds its entry by indexing, not by hashing a name.
    pub slot: usize,
    /// In sidecar mode, the node whose inbound listener this endpoint is reached through
    /// (another node keeps the instance); `None`: called directly.
    pub via: Option<String>,
}

impl EndpointState {
    pub fn new(id: String, authority: String) -> EndpointState {
        EndpointState {
            uri_authority: authority.parse().ok(),
            responses: Default::default(),
            id,
            authority,
            pending: AtomicUsize::new(0),
            ewma: Mutex::new((DEFAULT_RTT.as_nanos() as f64, Instant::now())),
            breaker: Breaker::default(),
            slot: 0,
            via: None,
        }
    }

    fn cost(&self) -> f64 {
        let (estimate, _) = *self.ewma.lock();
        estimate * (self.pending.load(Ordering::Relaxed) + 1) as f64
    }

    /// Marks a request in flight until the guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.start_at(Instant::now())
    }

    /// `start` for a caller that already read the clock.
    pub fn start_at(self: &Arc<Self>, started: Instant) -> InFlight {
        self.pending.fetch_add(1, Ordering::Relaxed);
        InFlight {
            endpoint: self.clone(),
            started,
        }
    }

    fn observe(&self, rtt: Duration, now: Instant) {
        let mut ewma = self.ewma.lock();
        let rtt = rtt.as_nanos() as f64;
        let (estimate, last) = *ewma;
        let updated = if rtt > estimate {
            rtt
        } else {
            let elapsed = now.duration_since(last).as_secs_f64();
            let weight = (-elapsed / DECAY.as_secs_f64()).exp();
            estimate * weight + rtt * (1.0 - weight)
        };
        *ewma = (updated, now);
    }

    /// Counts an answer under its status class.
    pub fn count_response(&self, status: u16) {
        self.responses[usize::from((status / 100).clamp(1, 5)) - 1].inc();
    }

    /// The current latency estimate, for tests and diagnostics.
    pub fn estimate(&self) -> Duration {
        Duration::from_nanos(self.ewma.lock().0 as u64)
    }
}

/// A request in flight to an endpoint; records its latency when finished.
#[derive(Debug)]
pub struct InFlight {
    endpoint: Arc<EndpointState>,
    started: Instant,
}

impl InFlight {
    pub fn finish(self) {
        self.finish_at(Instant::now());
    }

    /// `finish` for a caller that already read the clock.
    pub fn finish_at(self, now: Instant) {
        self.endpoint
            .observe(now.saturating_duration_since(self.started), now);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
pub struct Balancer {
    strategy: Strategy,
    next: AtomicU64,
}

impl Balancer {
    pub fn new(strategy: Strategy) -> Balancer {
        Balancer {
            strategy,
            next: AtomicU64::new(0),
        }
    }

    /// Chooses among endpoints the breaker lets through, avoiding those in `tried` when
    /// another is available. Allocates nothing: this runs on every request.
    pub fn pick<'a>(
        &self,
        endpoints: &'a [Arc<EndpointState>],
        tried: &[Arc<EndpointState>],
    ) -> Option<&'a Arc<EndpointState>> {
        let untried =
            |endpoint: &Arc<EndpointState>| !tried.iter().any(|seen| Arc::ptr_eq(seen, endpoint));
        let fresh = endpoints
            .iter()
            .filter(|endpoint| untried(endpoint) && endpoint.breaker.admits_now())
            .count();
        let avoid_tried = fresh > 0;
        let eligible = |endpoint: &&Arc<EndpointState>| {
            (!avoid_tried || untried(endpoint)) && endpoint.breaker.admits_now()
        };
        let count = if avoid_tried {
            fresh
        } else {
            endpoints.iter().filter(eligible).count()
        };
        let chosen = match count {
            0 => return None,
            1 => endpoints.iter().find(eligible)?,
            count => match self.strategy {
                Strategy::RoundRobin => {
                    let turn = self.next.fetch_add(1, Ordering::Relaxed) as usize % count;
                    endpoints.iter().filter(eligible).nth(turn)?
                }
                Strategy::PeakEwma => {
                    let mut random = rand::thread_rng();
                    let first = random.gen_range(0..count);
                    let mut second = random.gen_range(0..count - 1);
                    if second >= first {
                        second += 1;
                    }
                    let a = endpoints.iter().filter(eligible).nth(first)?;
                    let b = endpoints.iter().filter(eligible).nth(second)?;
                    if a.cost() <= b.cost() {
                        a
                    } else {
                        b
                    }
                }
            },
        };
        // Claims the probe slot when this is an ejected endpoint's probe.
        chosen.breaker.admits().then_some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(id: &str) -> Arc<EndpointState> {
        Arc::new(EndpointState::new(id.into(), format!("{id}:80")))
    }

    #[test]
    fn the_faster_endpoint_gets_most_requests() {
        let fast = endpoint("fast");
        let slow = endpoint("slow");
        fast.observe(Duration::from_millis(1), Instant::now());
        slow.observe(Duration::from_millis(50), Instant::now());
        let endpoints = vec![fast.clone(), slow.clone()];
        let balancer = Balancer::new(Strategy::PeakEwma);
        let fast_picks = (0..1000)
            .filter(|_| balancer.pick(&endpoints, &[]).unwrap().id == "fast")
            .count();
        assert_eq!(
            fast_picks, 1000,
            "with two endpoints P2C always compares both"
        );
    }

    #[test]
    fn requests_in_flight_raise_the_cost() {
        let busy = endpoint("busy");
        let idle = endpoint("idle");
        let _held: Vec<InFlight> = (0..5).map(|_| busy.start()).collect();
        let endpoints = vec![busy, idle];
        assert_eq!(
            Balancer::new(Strategy::PeakEwma)
                .pick(&endpoints, &[])
                .unwrap()
                .id,
            "idle"
        );
    }

    #[test]
    fn round_robin_takes_turns_and_retries_avoid_tried_endpoints() {
        let endpoints = vec![endpoint("a"), endpoint("b"), endpoint("c")];
        let balancer = Balancer::new(Strategy::RoundRobin);
        let picks: Vec<String> = (0..3)
            .map(|_| balancer.pick(&endpoints, &[]).unwrap().id.clone())
            .collect();
        assert_eq!(picks, vec!["a", "b", "c"]);
        let tried = vec![endpoints[0].clone(), endpoints[1].clone()];
        assert_eq!(balancer.pick(&endpoints, &tried).unwrap().id, "c");
    }
}
