//! The accept loop every Ferry listener shares, the APIs' and the proxy's alike: an
//! idle/header timeout, a header size limit (431 beyond it), a connection cap, HTTP/1.1
//! and h2c with upgrades, and graceful shutdown that lets in-flight requests finish.
//!
//! `accept_and_drain` is the loop itself, whatever serves a connection; `serve` runs it
//! with hyper on every connection (the APIs), the proxy runs it with its own HTTP/1.1 path
//! first and hyper after a hand-over. Both end a hyper connection through `until_shutdown`,
//! so shutdown means the same on every listener.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use std::future::Future;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A service hyper can serve a connection with, as every listener's is: its bounds spelled
/// once for `serve` and for the proxy's hand-over to hyper.
pub trait Service:
    hyper::service::Service<
        Request<Incoming>,
        Response = Response<Self::Body>,
        Future: Send + 'static,
        Error: Into<BoxError>,
    > + Clone
    + Send
    + 'static
{
    type Body: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static;
}

impl<S, B> Service for S
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Body = B;
}

#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Time to receive a request's headers; hyper's timer also runs while a keep-alive
    /// connection is idle, so this closes idle connections too.
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Request heads larger than this are answered 431.
    pub max_header_bytes: usize,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
}

/// The next connection, once the connection cap allows one; None at shutdown. The permit
/// is the connection's place under the cap, held until it closes.
pub async fn accept(
    api: &'static str,
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.ok()?,
            _ = shutdown.changed() => return None,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return None,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return Some((stream, peer, permit));
            }
            Err(error) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(api, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// hyper's HTTP/1.1 and HTTP/2 server with the limits applied.
pub fn builder(limits: ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder.http2().timer(TokioTimer::new());
    builder
}

/// Accepts connections until `shutdown` turns true, then drains: the loop every listener
/// runs, the APIs' (`serve`) and the proxy's outbound listeners alike. Each connection is
/// served by the future `connection` makes for it, in its own task, holding its place
/// under the connection cap until it ends; the receiver it is given tells it of shutdown.
/// After shutdown the listener closes at once and open connections get up to the drain
/// timeout to finish.
pub async fn accept_and_drain<F, C>(
    api: &'static str,
    listener: TcpListener,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
    mut connection: F,
) where
    F: FnMut(TcpStream, SocketAddr, watch::Receiver<bool>) -> C,
    C: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    while let Some((stream, peer, permit)) = accept(api, &listener, &permits, &mut shutdown).await {
        let served = connection(stream, peer, shutdown.clone());
        tokio::spawn(async move {
            served.await;
            drop(permit);
        });
    }
    drop(listener);
    // Every permit back means every connection task has ended.
    let everyone = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = permits.acquire_many(everyone) => tracing::debug!(api, "all connections closed"),
        _ = tokio::time::sleep(limits.drain_timeout) => {
            tracing::warn!(api, "shutdown timed out with connections still open");
        }
    }
}

/// Runs one hyper connection to its end; once `shutdown` changes, it finishes the requests
/// in flight and closes.
pub async fn until_shutdown<C>(
    api: &'static str,
    peer: SocketAddr,
    connection: C,
    mut shutdown: watch::Receiver<bool>,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    tokio::pin!(connection);
    let outcome = tokio::select! {
        outcome = connection.as_mut() => outcome,
        _ = shutdown.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = outcome {
        tracing::debug!(api, %peer, %error, "connection ended with an error");
    }
}

/// Serves `service` with hyper on every connection `listener` accepts, until `shutdown`
/// turns true; then drains.
pub async fn serve<S: Service>(
    api: &'static str,
    listener: TcpListener,
    service: S,
    limits: ConnectionLimits,
    shutdown: watch::Receiver<bool>,
) {
    let builder = builder(limits);
    accept_and_drain(api, listener, limits, shutdown, |stream, peer, shutdown| {
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service.clone())
            .into_owned();
        until_shutdown(api, peer, connection, shutdown)
    })
    .await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use super::*;

    fn limits(drain_timeout: Duration) -> ConnectionLimits {
        ConnectionLimits {
            idle_timeout: Duration::from_secs(5),
            max_connections: 4,
            max_header_bytes: 8192,
            drain_timeout,
        }
    }

    /// Runs `accept_and_drain` with connections that end `linger` after shutdown, opens
    /// two, signals shutdown; returns how many had ended when it returned, and how long
    /// the drain took.
    async fn drain(linger: Duration, drain_timeout: Duration) -> (usize, Duration) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, shutdown) = watch::channel(false);
        let opened = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicUsize::new(0));
        let counters = (opened.clone(), ended.clone());
        let connection = move |_stream, _peer, mut shutdown: watch::Receiver<bool>| {
            let (opened, ended) = counters.clone();
            opened.fetch_add(1, Ordering::SeqCst);
            async move {
                let _ = shutdown.changed().await;
                tokio::time::sleep(linger).await;
                ended.fetch_add(1, Ordering::SeqCst);
            }
        };
        let serving = tokio::spawn(accept_and_drain(
            "test",
            listener,
            limits(drain_timeout),
            shutdown,
            connection,
        ));
        let _callers = [
            TcpStream::connect(address).await.unwrap(),
            TcpStream::connect(address).await.unwrap(),
        ];
        while opened.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let signalled = Instant::now();
        stop.send(true).unwrap();
        serving.await.unwrap();
        (ended.load(Ordering::SeqCst), signalled.elapsed())
    }

    #[tokio::test]
    async fn shutdown_waits_for_open_connections_to_finish() {
        let (ended, took) = drain(Duration::from_millis(50), Duration::from_secs(10)).await;
        assert_eq!(
            ended, 2,
            "both connections finished before the loop returned"
        );
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[tokio::test]
    async fn shutdown_gives_up_on_connections_after_the_drain_timeout() {
        let (ended, took) = drain(Duration::from_secs(60), Duration::from_millis(100)).await;
        assert_eq!(ended, 0);
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_secs(30), "{took:?}");
    }
}
