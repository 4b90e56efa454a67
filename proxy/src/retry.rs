//! The retry budget: retries may add at most `RATIO` of the request rate, plus a floor of
//! `MIN_PER_SECOND`, so a failing service sees a bounded amplification instead of a storm.
//! A token bucket: each request deposits `RATIO` tokens, the floor refills continuously,
//! each retry withdraws one.

use std::time::Instant;

use crate::clock::Ticker;

/// Methods safe to send twice (RFC 9110 §9.2.2). Only their requests are retried after a
/// 502/503/504 or after a failure once the request was sent.
pub fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
    )
}

use parking_lot::Mutex;

const RATIO: f64 = 0.2;
const MIN_PER_SECOND: f64 = 10.0;
/// The bucket holds at most ten seconds of the floor.
const CAPACITY: f64 = MIN_PER_SECOND * 10.0;

#[derive(Debug)]
pub struct RetryBudget {
    bucket: Mutex<(f64, Instant)>,
    ticker: Ticker,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new(Ticker::System)
    }
}

impl RetryBudget {
    /// A budget holding the floor's first second, reading time from `ticker`.
    pub fn new(ticker: Ticker) -> RetryBudget {
        RetryBudget {
            bucket: Mutex::new((MIN_PER_SECOND, ticker.now())),
            ticker,
        }
    }

    pub fn deposit(&self) {
        let mut bucket = self.bucket.lock();
        bucket.0 = (bucket.0 + RATIO).min(CAPACITY);
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn withdraw(&self) -> bool {
        let mut bucket = self.bucket.lock();
        let now = self.ticker.now();
        let refill = now.duration_since(bucket.1).as_secs_f64() * MIN_PER_SECOND;
        *bucket = ((bucket.0 + refill).min(CAPACITY), now);
        if bucket.0 >= 1.0 {
            bucket.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A budget on a stopped clock, emptied of the floor it starts with.
    fn empty_budget() -> (RetryBudget, Ticker) {
        let ticker = Ticker::manual();
        let budget = RetryBudget::new(ticker.clone());
        let floor = (0..100).filter(|_| budget.withdraw()).count();
        assert_eq!(
            floor, MIN_PER_SECOND as usize,
            "it starts with a second of floor"
        );
        (budget, ticker)
    }

    #[test]
    fn retries_are_bounded_by_the_request_rate() {
        let (budget, ticker) = empty_budget();
        for _ in 0..100 {
            budget.deposit();
        }
        // As between real requests, a little time passes: a hundred deposits of 0.2 sum to
        // a hair under 20 in floating point, and the floor's trickle makes up the rest.
        ticker.advance(Duration::from_millis(1));
        let granted = (0..100).filter(|_| budget.withdraw()).count();
        assert!((20..=21).contains(&granted), "{granted}");
        assert_eq!(granted, 20, "a millisecond refills a hundredth of a retry");
    }

    #[test]
    fn the_floor_refills_with_time_up_to_the_capacity() {
        let (budget, ticker) = empty_budget();
        ticker.advance(Duration::from_millis(500));
        let granted = (0..100).filter(|_| budget.withdraw()).count();
        assert_eq!(granted, 5, "half a second of a floor of ten a second");
        ticker.advance(Duration::from_secs(3600));
        let granted = (0..1000).filter(|_| budget.withdraw()).count();
        assert_eq!(
            granted, CAPACITY as usize,
            "an idle hour fills the bucket, no more"
        );
    }
}
