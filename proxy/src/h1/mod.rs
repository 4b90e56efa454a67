//! The outbound listeners' own HTTP/1.1 path. A proxy's work on a keep-alive HTTP/1.1
//! request is small: read a head, rewrite a few headers, relay bytes. Doing it in the
//! caller's task over pooled endpoint connections, with buffers reused from request to
//! request while the caller is busy (and given back once it idles), costs far less than
//! hyper's general server and client, which hand every request between tasks and build a
//! header map for each.
//!
//! Whatever this path does not handle itself (HTTP/2 and h2c/gRPC, WebSocket and other
//! upgrades, HTTP/1.0, `Expect: 100-continue`, CONNECT) is handed to hyper on the same
//! connection, with the bytes already read replayed (ferry-http's `rewind`), so no caller
//! sees a difference.
//!
//! - `codec`: heads, framing, the rewritten head; `chunked`: where a chunked body ends;
//!   `body`: relaying bodies; `pool`: idle connections per endpoint; `exchange`: one caller
//!   connection's request loop.

mod body;
pub mod chunked;
pub mod codec;
mod exchange;
pub mod pool;

use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::upstream::Upstream;
use ferry_http::listen::{self, ConnectionLimits};
use ferry_http::rewind::Rewind;

/// Accepts callers of one service until `shutdown`, then waits (up to the drain timeout)
/// for open connections to finish their requests: ferry-http's accept loop, with each
/// connection served here first and by `general` after a hand-over.
pub async fn serve<S: listen::Service>(
    listener: TcpListener,
    upstream: Arc<Upstream>,
    general: S,
    limits: ConnectionLimits,
    shutdown: watch::Receiver<bool>,
    open_connections: prometheus_client::metrics::gauge::Gauge,
) {
    // Shared by the connection tasks: only those handed over build a hyper connection.
    let builder = Arc::new(listen::builder(limits));
    let connection = |stream, peer, shutdown: watch::Receiver<bool>| {
        let upstream = upstream.clone();
        let general = general.clone();
        let builder = builder.clone();
        let gauge = open_connections.clone();
        gauge.inc();
        async move {
            let served = exchange::serve(stream, &upstream, limits, shutdown.clone()).await;
            if let exchange::Served::HandOver(stream, read) = served {
                let io = TokioIo::new(Rewind::new(read.freeze(), stream));
                let connection = builder.serve_connection_with_upgrades(io, general);
                // Boxed: inline, hyper's connection state would make every connection's
                // task as large, and an idle connection costs what its task does.
                Box::pin(listen::until_shutdown(
                    "outbound", peer, connection, shutdown,
                ))
                .await;
            }
            gauge.dec();
        }
    };
    listen::accept_and_drain("outbound", listener, limits, shutdown, connection).await;
}
