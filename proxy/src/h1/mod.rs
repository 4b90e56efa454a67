//! The outbound listeners' own HTTP/1.1 path. A proxy's work on a keep-alive HTTP/1.1
//! request is small: read a head, rewrite a few headers, relay bytes. Doing it in the
//! caller's task over pooled endpoint connections, with buffers reused from request to
//! request, costs far less than hyper's general server and client, which hand every request
//! between tasks and build a header map for each.
//!
//! Whatever this path does not handle itself (HTTP/2 and h2c/gRPC, WebSocket and other
//! upgrades, HTTP/1.0, `Expect: 100-continue`, CONNECT) is handed to hyper on the same
//! connection, with the bytes already read replayed (`rewind`), so no caller sees a
//! difference.
//!
//! - `codec`: heads, framing, the rewritten head; `chunked`: where a chunked body ends;
//!   `body`: relaying bodies; `pool`: idle connections per endpoint; `exchange`: one caller
//!   connection's request loop.

mod body;
mod chunked;
mod codec;
mod exchange;
pub mod pool;
mod rewind;

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::upstream::Upstream;
use ferry_http::listen::{self, ConnectionLimits};

/// Accepts callers of one service until `shutdown`, then waits (up to the drain timeout)
/// for open connections to finish their requests. `general` serves what is handed over.
pub async fn serve<S, B>(
    listener: TcpListener,
    upstream: Arc<Upstream>,
    general: S,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
    open_connections: prometheus_client::metrics::gauge::Gauge,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = Arc::new(listen::builder(limits));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    while let Some((stream, peer, permit)) =
        listen::accept("outbound", &listener, &permits, &mut shutdown).await
    {
        let upstream = upstream.clone();
        let general = general.clone();
        let builder = builder.clone();
        let mut shutdown = shutdown.clone();
        let gauge = open_connections.clone();
        gauge.inc();
        tokio::spawn(async move {
            let served = exchange::serve(stream, &upstream, limits, shutdown.clone()).await;
            if let exchange::Served::HandOver(stream, read) = served {
                let io = TokioIo::new(rewind::Rewind::new(read.freeze(), stream));
                let connection = builder.serve_connection_with_upgrades(io, general);
                tokio::pin!(connection);
                let outcome = tokio::select! {
                    outcome = connection.as_mut() => outcome,
                    _ = shutdown.changed() => {
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                };
                if let Err(error) = outcome {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
            }
            gauge.dec();
            drop(permit);
        });
    }
    drop(listener);
    let everyone = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = permits.acquire_many(everyone) => tracing::debug!("all outbound connections closed"),
        _ = tokio::time::sleep(limits.drain_timeout) => {
            tracing::warn!("shutdown timed out with outbound connections still open");
        }
    }
}
