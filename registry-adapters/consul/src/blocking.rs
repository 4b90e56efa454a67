//! Blocking queries: hold a read until its own result index rises above the client's
//! `index`, or until `wait` (plus Consul's jitter of up to wait/16) runs out.
//!
//! Waiters sleep on the change index's watch channel and re-evaluate their read on each
//! publication; a change elsewhere re-evaluates to the same result index and the request
//! keeps waiting. When the client disconnects, hyper drops this future and the wait ends.

use rand::Rng;
use tokio::sync::watch;

use super::query::Blocking;

/// Runs `read` (which returns its result index and data) until the index exceeds
/// `blocking.index` or the wait expires; returns the last result.
pub async fn wait_for<T>(
    mut changes: watch::Receiver<u64>,
    blocking: Blocking,
    read: impl Fn() -> (u64, T),
) -> (u64, T) {
    // Mark the current value seen before reading, so no publication between the read and
    // the wait is missed.
    changes.borrow_and_update();
    let mut result = read();
    if blocking.index == 0 || result.0 > blocking.index {
        return result;
    }
    let jitter = blocking.wait / 16;
    let jitter = if jitter.is_zero() {
        jitter
    } else {
        rand::thread_rng().gen_range(std::time::Duration::ZERO..jitter)
    };
    let deadline = tokio::time::Instant::now() + blocking.wait + jitter;
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return result;
                }
                result = read();
                if result.0 > blocking.index {
                    return result;
                }
            }
            _ = tokio::time::sleep_until(deadline) => return read(),
        }
    }
}
