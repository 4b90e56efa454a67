//! Sidecar mode's outbound hop: a call for an instance another node keeps goes to that
//! node's inbound listener, over one pooled HTTP/2 connection per node with mutual TLS.
//!
//! The connection is dialled by the peer's node name, never by an address the caller
//! chose: the URI's host is the peer's DNS identity (`<node>.node.<td>`), the address comes
//! from the peer's own node record (`PeerDirectory`), and the handshake checks the peer's
//! certificate against that name, so a record pointing elsewhere fails the handshake
//! instead of reaching another node. Each new connection takes the identity's current
//! certificate, so renewals need no restart.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ferry_identity::{server_name, LiveIdentity, NodeName};
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::inbound::ReasonLabels;
use crate::{BoxError, RequestBody};

/// The outbound side's handshakes with peers' inbound listeners, and why some failed.
#[derive(Debug, Default)]
pub struct PeerMetrics {
    pub handshakes: prometheus_client::metrics::counter::Counter,
    pub handshake_failures: prometheus_client::metrics::family::Family<
        ReasonLabels,
        prometheus_client::metrics::counter::Counter,
    >,
}

impl PeerMetrics {
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "peer_tls_handshakes",
            "Mutual-TLS handshakes completed with other nodes' inbound listeners",
            self.handshakes.clone(),
        );
        registry.register(
            "peer_tls_handshake_failures",
            "Mutual-TLS handshakes with other nodes' inbound listeners that failed, by reason",
            self.handshake_failures.clone(),
        );
    }
}

/// Where each node's inbound listener is, as the shared store says.
pub trait PeerDirectory: Send + Sync + std::fmt::Debug {
    /// `host:port` of `node`'s inbound listener; `None` if it has none (it is not a sidecar,
    /// or it is gone).
    fn inbound_of(&self, node: &str) -> Option<String>;
}

/// The hop's shared parts: this node's identity, the directory, and the pooled client.
pub struct Sidecar {
    identity: Arc<LiveIdentity>,
    peers: Arc<dyn PeerDirectory>,
    pub(crate) client: Client<PeerConnector, RequestBody>,
}

impl std::fmt::Debug for Sidecar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sidecar")
            .field("peers", &self.peers)
            .finish()
    }
}

impl Sidecar {
    pub fn new(
        identity: Arc<LiveIdentity>,
        peers: Arc<dyn PeerDirectory>,
        connect_timeout: Duration,
        metrics: Arc<PeerMetrics>,
    ) -> Self {
        let connector = PeerConnector {
            identity: identity.clone(),
            peers: peers.clone(),
            connect_timeout,
            metrics,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .http2_only(true)
            // One connection per peer carries every call to it: keep it known alive.
            .http2_keep_alive_interval(Duration::from_secs(20))
            .http2_keep_alive_timeout(Duration::from_secs(10))
            .timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        Self {
            identity,
            peers,
            client,
        }
    }

    /// Whether calls to instances kept by `node` go through its inbound listener: it has
    /// one, and it is not this node.
    pub fn routes_through(&self, node: &str) -> bool {
        node != self.identity.current().node.as_str() && self.peers.inbound_of(node).is_some()
    }

    /// Where `node`'s inbound listener is on record, for error messages.
    pub fn inbound_of(&self, node: &str) -> Option<String> {
        self.peers.inbound_of(node)
    }

    /// The authority a request to `node` carries: its DNS identity, which the connector
    /// resolves through the directory and checks in the handshake.
    pub fn authority_of(&self, node: &str) -> Option<http::uri::Authority> {
        let credentials = self.identity.current();
        let name = NodeName::new(node).ok()?;
        name.dns_name(&credentials.trust_domain).parse().ok()
    }
}

/// Dials a peer's inbound listener: TCP to its recorded address, then TLS 1.3 with this
/// node's current certificate, checking the peer's name.
#[derive(Clone)]
pub struct PeerConnector {
    identity: Arc<LiveIdentity>,
    peers: Arc<dyn PeerDirectory>,
    connect_timeout: Duration,
    metrics: Arc<PeerMetrics>,
}

/// A TLS connection to a peer, as hyper's client pools it.
pub struct PeerStream(TokioIo<TlsStream<TcpStream>>);

impl Connection for PeerStream {
    fn connected(&self) -> Connected {
        Connected::new().negotiated_h2()
    }
}

impl hyper::rt::Read for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Why a peer could not be dialled.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{0:?} is not a node's name")]
    NotANode(String),
    #[error("node {0} has no inbound listener on record")]
    NoInbound(String),
    #[error("cannot connect to node {node} at {address}: {source}")]
    Connect {
        node: String,
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to node {node} at {address} timed out")]
    Timeout { node: String, address: String },
    #[error("TLS with node {node} at {address}: {source}")]
    Tls {
        node: String,
        address: String,
        #[source]
        source: std::io::Error,
    },
}

impl tower_service::Service<Uri> for PeerConnector {
    type Response = PeerStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<PeerStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.dial(&uri).await.map_err(|e| Box::new(e) as BoxError) })
    }
}

impl PeerConnector {
    async fn dial(&self, uri: &Uri) -> Result<PeerStream, PeerError> {
        let credentials = self.identity.current();
        let host = uri.host().unwrap_or_default();
        let suffix = format!(".node.{}", credentials.trust_domain);
        let node = host
            .strip_suffix(&suffix)
            .and_then(|name| NodeName::new(name).ok())
            .ok_or_else(|| PeerError::NotANode(host.to_owned()))?;
        let address = self
            .peers
            .inbound_of(node.as_str())
            .ok_or_else(|| PeerError::NoInbound(node.to_string()))?;
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&address))
            .await
            .map_err(|_| PeerError::Timeout {
                node: node.to_string(),
                address: address.clone(),
            })?
            .map_err(|source| PeerError::Connect {
                node: node.to_string(),
                address: address.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let name = server_name(&node, &credentials.trust_domain).map_err(|e| PeerError::Tls {
            node: node.to_string(),
            address: address.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let connector = TlsConnector::from(credentials.client.clone());
        let failed = |reason: &'static str| {
            self.metrics
                .handshake_failures
                .get_or_create(&ReasonLabels { reason })
                .inc();
        };
        let tls = tokio::time::timeout(self.connect_timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| {
                failed("timeout");
                PeerError::Timeout {
                    node: node.to_string(),
                    address: address.clone(),
                }
            })?
            .map_err(|source| {
                failed(crate::inbound::handshake_failure_reason(&source));
                PeerError::Tls {
                    node: node.to_string(),
                    address,
                    source,
                }
            })?;
        self.metrics.handshakes.inc();
        Ok(PeerStream(TokioIo::new(tls)))
    }
}
