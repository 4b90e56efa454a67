//! The accept loop every Ferry listener shares, the APIs' and the proxy's alike: an
//! idle/header timeout, a header size limit (431 beyond it), a connection cap, HTTP/1.1
//! and h2c with upgrades, and graceful shutdown that lets in-flight requests finish.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

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

/// Accepts connections until `shutdown` turns true, then drains. `on_open` and
/// `on_close` let a caller count connections.
pub async fn serve<S, B>(
    api: &'static str,
    listener: TcpListener,
    service: S,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    let builder = builder(limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    while let Some((stream, peer, permit)) = accept(api, &listener, &permits, &mut shutdown).await {
        let service = service.clone();
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(api, %peer, %error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::debug!(api, "all connections closed"),
        _ = tokio::time::sleep(limits.drain_timeout) => {
            tracing::warn!(api, "shutdown timed out with connections still open");
        }
    }
}
