//! Circuit breaking per endpoint: after `FAILURE_LIMIT` consecutive failures (connection
//! errors or 5xx answers) the endpoint is ejected for a backoff that doubles on each
//! ejection (1 s up to 60 s); when it runs out one probe request is let through, and a
//! success closes the breaker again.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::clock::Ticker;

pub const FAILURE_LIMIT: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct Breaker {
    state: Mutex<State>,
    ticker: Ticker,
}

#[derive(Debug, Default)]
struct State {
    consecutive_failures: u32,
    /// While set and in the future, the endpoint is ejected.
    ejected_until: Option<Instant>,
    /// The backoff the next ejection will use.
    next_backoff: Option<Duration>,
    /// A probe is out after an ejection ended.
    probing: bool,
}

impl Breaker {
    /// A breaker that reads time from `ticker`.
    pub fn new(ticker: Ticker) -> Breaker {
        Breaker {
            state: Mutex::default(),
            ticker,
        }
    }

    /// Whether a request may go to this endpoint now. After an ejection, exactly one probe
    /// is admitted until its result is known.
    pub fn admits(&self) -> bool {
        let mut state = self.state.lock();
        match state.ejected_until {
            None => true,
            Some(until) if self.ticker.now() < until => false,
            Some(_) if state.probing => false,
            Some(_) => {
                state.probing = true;
                true
            }
        }
    }

    /// Whether `admits` would let a request through now, without claiming a probe.
    pub fn admits_now(&self) -> bool {
        let state = self.state.lock();
        match state.ejected_until {
            None => true,
            Some(until) => self.ticker.now() >= until && !state.probing,
        }
    }

    pub fn is_ejected(&self) -> bool {
        let state = self.state.lock();
        state
            .ejected_until
            .is_some_and(|until| self.ticker.now() < until)
    }

    pub fn success(&self) {
        let mut state = self.state.lock();
        *state = State::default();
    }

    /// Records a failure; returns true when it ejected the endpoint.
    pub fn failure(&self) -> bool {
        let mut state = self.state.lock();
        state.consecutive_failures += 1;
        let probe_failed = state.probing;
        if state.consecutive_failures < FAILURE_LIMIT && !probe_failed {
            return false;
        }
        let backoff = state.next_backoff.unwrap_or(FIRST_BACKOFF);
        state.ejected_until = Some(self.ticker.now() + backoff);
        state.next_backoff = Some((backoff * 2).min(MAX_BACKOFF));
        state.probing = false;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejects_after_consecutive_failures_and_a_success_resets() {
        let breaker = Breaker::default();
        for _ in 0..FAILURE_LIMIT - 1 {
            assert!(!breaker.failure());
        }
        breaker.success();
        for _ in 0..FAILURE_LIMIT - 1 {
            assert!(!breaker.failure());
        }
        assert!(breaker.admits());
        assert!(breaker.failure(), "the fifth failure in a row ejects");
        assert!(!breaker.admits());
        assert!(breaker.is_ejected());
    }

    #[test]
    fn a_failed_probe_ejects_again_for_longer() {
        let ticker = Ticker::manual();
        let breaker = Breaker::new(ticker.clone());
        for _ in 0..FAILURE_LIMIT {
            breaker.failure();
        }
        ticker.advance(FIRST_BACKOFF);
        assert!(breaker.admits(), "one probe after the backoff");
        assert!(!breaker.admits(), "only one");
        assert!(breaker.failure());
        assert_eq!(
            breaker.state.lock().next_backoff,
            Some(Duration::from_secs(4))
        );
        ticker.advance(FIRST_BACKOFF * 2 - Duration::from_millis(1));
        assert!(
            breaker.is_ejected(),
            "the second ejection lasts twice as long"
        );
        ticker.advance(Duration::from_millis(1));
        assert!(breaker.admits(), "then the next probe");
    }

    #[test]
    fn the_backoff_doubles_up_to_its_limit_and_a_success_closes_the_breaker() {
        let ticker = Ticker::manual();
        let breaker = Breaker::new(ticker.clone());
        for _ in 0..FAILURE_LIMIT {
            breaker.failure();
        }
        let mut backoff = FIRST_BACKOFF;
        for _ in 0..8 {
            assert!(!breaker.admits_now());
            ticker.advance(backoff);
            assert!(
                breaker.admits_now() && breaker.admits(),
                "a probe after {backoff:?}"
            );
            assert!(!breaker.admits_now(), "while the probe is out");
            assert!(breaker.failure(), "a failed probe ejects again");
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        assert_eq!(backoff, MAX_BACKOFF);
        ticker.advance(MAX_BACKOFF);
        assert!(breaker.admits());
        breaker.success();
        assert!(!breaker.is_ejected() && breaker.admits_now());
        for _ in 0..FAILURE_LIMIT - 1 {
            assert!(!breaker.failure(), "the count starts again after a success");
        }
    }
}
