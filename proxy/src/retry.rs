//! The retry budget: retries may add at most `RATIO` of the request rate, plus a floor of
//! `MIN_PER_SECOND`, so a failing service sees a bounded amplification instead of a storm.
//! A token bucket: each request deposits `RATIO` tokens, the floor refills continuously,
//! each retry withdraws one.

use std::time::Instant;

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
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            bucket: Mutex::new((MIN_PER_SECOND, Instant::now())),
        }
    }
}

impl RetryBudget {
    pub fn deposit(&self) {
        let mut bucket = self.bucket.lock();
        bucket.0 = (bucket.0 + RATIO).min(CAPACITY);
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn withdraw(&self) -> bool {
        let mut bucket = self.bucket.lock();
        let now = Instant::now();
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
    use super::*;

    #[test]
    fn retries_are_bounded_by_the_request_rate() {
        let budget = RetryBudget::default();
        *budget.bucket.lock() = (0.0, Instant::now());
        for _ in 0..100 {
            budget.deposit();
        }
        let granted = (0..100).filter(|_| budget.withdraw()).count();
        assert!((20..=21).contains(&granted), "{granted}");
    }
}
