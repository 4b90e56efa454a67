//! Counts heartbeats per wall-clock minute, for self-preservation: eviction is allowed only
//! while the last full minute saw more renewals than the threshold.
//!
//! The hot path is one atomic add; the lock is taken only when a minute rolls over.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::model::Millis;

#[derive(Debug, Default)]
pub struct RenewalMeter {
    minute: AtomicI64,
    current: AtomicU64,
    /// Renewals counted during the last full minute.
    last_minute: AtomicU64,
    rollover: Mutex<()>,
}

impl RenewalMeter {
    pub fn record(&self, now: Millis) {
        self.roll(now);
        self.current.fetch_add(1, Ordering::Relaxed);
    }

    /// Renewals in the last full minute before `now`.
    pub fn last_minute(&self, now: Millis) -> u64 {
        self.roll(now);
        self.last_minute.load(Ordering::Relaxed)
    }

    fn roll(&self, now: Millis) {
        let minute = now.div_euclid(60_000);
        if self.minute.load(Ordering::Acquire) == minute {
            return;
        }
        let _guard = self.rollover.lock();
        let seen = self.minute.load(Ordering::Acquire);
        if seen == minute {
            return;
        }
        let finished = self.current.swap(0, Ordering::AcqRel);
        // A gap of more than one minute means the last full minute had no renewals.
        let last = if minute == seen + 1 { finished } else { 0 };
        self.last_minute.store(last, Ordering::Relaxed);
        self.minute.store(minute, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_the_previous_full_minute_only() {
        let meter = RenewalMeter::default();
        meter.record(60_000);
        meter.record(61_000);
        assert_eq!(meter.last_minute(62_000), 0, "minute still running");
        assert_eq!(meter.last_minute(120_500), 2);
        assert_eq!(meter.last_minute(300_000), 0, "minutes without renewals");
    }
}
