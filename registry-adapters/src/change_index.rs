//! The single, monotonically increasing change index shared by every view.
//!
//! Every change to the registry bumps it once. Eureka publishes it as `versions__delta`, and
//! the Consul view (blocking queries) waits on it, which is why it is a watch channel and
//! not only a counter: a waiter is woken by the change itself, never by polling.

use tokio::sync::watch;

#[derive(Debug)]
pub struct ChangeIndex {
    sender: watch::Sender<u64>,
}

impl ChangeIndex {
    /// Starts at `start` (at least 1: Consul treats index 0 as "no index").
    pub fn new(start: u64) -> ChangeIndex {
        let (sender, _) = watch::channel(start.max(1));
        ChangeIndex { sender }
    }

    pub fn current(&self) -> u64 {
        *self.sender.borrow()
    }

    /// Bumps the index and wakes every watcher; returns the new value. Callers hold the
    /// registry's write lock, so bumps are ordered the same way as the changes they mark.
    pub fn bump(&self) -> u64 {
        let mut next = 0;
        self.sender.send_modify(|index| {
            *index += 1;
            next = *index;
        });
        next
    }

    /// A receiver that sees every later bump.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sender.subscribe()
    }
}
