//! The monotonic time the breaker and the retry budget read, replaceable in tests so that
//! backoffs and refills can be checked by moving time rather than by sleeping or by
//! setting their private state.
//!
//! `Ticker::System` is `Instant::now()` behind one well-predicted branch, and both readers
//! consult it only off the common path (an ejection, a retry), so the real clock costs the
//! request path nothing. Wall-clock time (`ferry_core::Clock`, epoch milliseconds) does not
//! fit: it can step backwards, and the budget refills by fractions of a second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Default)]
pub enum Ticker {
    #[default]
    System,
    /// A hand-moved clock for tests: a start and how far it has been moved since.
    Manual(Arc<(Instant, AtomicU64)>),
}

impl Ticker {
    /// A manual ticker standing at the moment it was made.
    pub fn manual() -> Ticker {
        Ticker::Manual(Arc::new((Instant::now(), AtomicU64::new(0))))
    }

    pub fn now(&self) -> Instant {
        match self {
            Ticker::System => Instant::now(),
            Ticker::Manual(manual) => {
                let (start, moved) = &**manual;
                *start + Duration::from_nanos(moved.load(Ordering::SeqCst))
            }
        }
    }

    /// Moves a manual ticker forward; a no-op on the system clock.
    pub fn advance(&self, by: Duration) {
        if let Ticker::Manual(manual) = self {
            let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
            manual.1.fetch_add(nanos, Ordering::SeqCst);
        }
    }
}
