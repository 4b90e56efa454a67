//! The thread every etcd call of a node runs on, with a runtime of its own.
//!
//! The registry calls its store under its write lock, from whatever thread serves the
//! request, and waits for the answer (a write is acknowledged only once etcd has it). With
//! one worker thread (`--worker-threads 1`) that thread is the only one the server's
//! runtime has, so the etcd client cannot be driven by it: its connections, the watch, the
//! lease keep-alives and the endpoint probe all live here instead, and a caller blocks on
//! a channel, never on the server's runtime.

use std::future::Future;
use std::time::Duration;

use tokio::runtime::Handle;

#[derive(Clone, Debug)]
pub struct Worker {
    handle: Handle,
}

/// The worker did not answer in time, or is gone.
#[derive(Debug)]
pub struct NoAnswer;

impl Worker {
    /// Starts the thread; it runs until the process ends.
    pub fn start(name: &str) -> std::io::Result<Worker> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
        Ok(Worker { handle })
    }

    /// Runs `call` on the worker and waits for its answer, blocking this thread (never
    /// called from the worker itself).
    pub fn call<T, F>(&self, timeout: Duration, call: F) -> Result<T, NoAnswer>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = answer.send(call.await);
        });
        answered.recv_timeout(timeout).map_err(|_| NoAnswer)
    }

    /// Starts a long-lived task on the worker.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(task);
    }

    /// Runs `call` on the worker from async code, without blocking.
    pub async fn run<T, F>(&self, call: F) -> Result<T, NoAnswer>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        self.handle.spawn(call).await.map_err(|_| NoAnswer)
    }
}
