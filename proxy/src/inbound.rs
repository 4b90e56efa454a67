//! The inbound listener of sidecar mode: where other Ferry nodes deliver calls to the
//! instances this node keeps.
//!
//! It is the only way into an app that listens on its host's loopback, so it must never be
//! an open relay. A connection is served only after a mutual-TLS handshake with a
//! certificate of this trust domain; a request only when the peer is a node identity, it
//! names its target as `ferry-target: APP/INSTANCE-ID`, that instance is kept by this node
//! and was registered with an address of this host. Everything else is refused with its own
//! status and reason (`x-ferry-error`), and the app is never contacted. The target is never
//! another node: nothing here forwards onward.
//!
//! An upgrade (WebSocket) arrives as an HTTP/2 extended CONNECT (RFC 8441) and is asked of
//! the app as the HTTP/1.1 upgrade the caller made; once the app switches, the stream and
//! the app's connection are joined.
//!
//! The caller's sidecar already balanced, retried and timed the call; this side only
//! checks, strips the `ferry-*` headers and relays, so a failure reaches the caller as it
//! happened (502 when the app refuses the connection), for it to retry elsewhere.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_core::Registry;
use ferry_identity::{peer_node, LiveIdentity, NodeName};
use futures_util::FutureExt;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::{hop_by_hop, BoxError, RequestBody, ResponseBody};
use ferry_http::listen::{self, ConnectionLimits};

/// The header a caller's sidecar names the target instance in: `APP/INSTANCE-ID`.
pub const TARGET_HEADER: &str = "ferry-target";
/// Headers starting with this are the mesh's own and never reach an app.
const MESH_HEADER_PREFIX: &str = "ferry-";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// Counters of the inbound side: handshakes, and what was refused and why.
#[derive(Debug, Default)]
pub struct InboundMetrics {
    pub handshakes: Counter,
    pub handshake_failures: Family<ReasonLabels, Counter>,
    pub requests: Counter,
    pub refusals: Family<ReasonLabels, Counter>,
}

impl InboundMetrics {
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "inbound_tls_handshakes",
            "Mutual-TLS handshakes completed on the inbound listener",
            self.handshakes.clone(),
        );
        registry.register(
            "inbound_tls_handshake_failures",
            "Mutual-TLS handshakes refused or failed on the inbound listener, by reason",
            self.handshake_failures.clone(),
        );
        registry.register(
            "inbound_requests",
            "Requests received on the inbound listener",
            self.requests.clone(),
        );
        registry.register(
            "inbound_refusals",
            "Requests the inbound listener refused without contacting an app, by reason",
            self.refusals.clone(),
        );
    }
}

/// Why a request was refused: its status, a metric label and the text the caller reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: &'static str,
    pub detail: String,
}

impl Refusal {
    fn new(status: StatusCode, reason: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            detail: detail.into(),
        }
    }

    fn into_response(self) -> Response<ResponseBody> {
        let mut response = text_response(self.status, format!("{}\n", self.detail));
        response
            .headers_mut()
            .insert("x-ferry-error", HeaderValue::from_static(self.reason));
        response
    }
}

fn text_response(status: StatusCode, text: String) -> Response<ResponseBody> {
    let body = Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// Which services may call which, checked after the target is known. The caller's
/// service is the one its node fronts (a sidecar serves one app).
pub trait AllowRules: Send + Sync + std::fmt::Debug {
    /// `Err(detail)` when `caller` (a node name) may not call `service`.
    fn check(&self, caller: &NodeName, service: &str) -> Result<(), String>;
}

/// The addresses an instance of this host can have been registered with: loopback, and
/// this host's own (a sidecar's app may register its host address).
#[derive(Clone, Debug, Default)]
pub struct LocalAddresses {
    own: HashSet<IpAddr>,
}

impl LocalAddresses {
    pub fn new(own: impl IntoIterator<Item = IpAddr>) -> Self {
        Self {
            own: own.into_iter().collect(),
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.own.contains(&ip)
    }
}

/// What the inbound listener needs to decide and to forward.
pub struct Inbound {
    registry: Arc<Registry>,
    identity: Arc<LiveIdentity>,
    local: LocalAddresses,
    allow: Option<Arc<dyn AllowRules>>,
    http1: Client<HttpConnector, RequestBody>,
    http2: Client<HttpConnector, RequestBody>,
    metrics: Arc<InboundMetrics>,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("node", &self.identity.current().node)
            .finish()
    }
}

impl Inbound {
    pub fn new(
        registry: Arc<Registry>,
        identity: Arc<LiveIdentity>,
        local: LocalAddresses,
        allow: Option<Arc<dyn AllowRules>>,
        connect_timeout: Duration,
        metrics: Arc<InboundMetrics>,
    ) -> Self {
        let (http1, http2) = crate::upstream::app_clients(connect_timeout);
        Self {
            registry,
            identity,
            local,
            allow,
            http1,
            http2,
            metrics,
        }
    }

    /// Decides whether `request` from `peer` may reach an app, and which address.
    pub fn admit(
        &self,
        peer: &Result<NodeName, String>,
        headers: &http::HeaderMap,
    ) -> Result<(String, SocketAddr), Refusal> {
        let caller = peer
            .as_ref()
            .map_err(|reason| Refusal::new(StatusCode::FORBIDDEN, "not-a-node", reason.clone()))?;
        let target = headers
            .get(TARGET_HEADER)
            .ok_or_else(|| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "no-target",
                    format!("no {TARGET_HEADER} header: a request names its instance as APP/ID"),
                )
            })?
            .to_str()
            .map_err(|_| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "bad-target",
                    format!("{TARGET_HEADER} is not text"),
                )
            })?;
        let (app, id) = parse_target(target)?;
        let Some(found) = self.registry.kept_here(&app, id) else {
            let (reason, detail) = if self.registry.instance(&app, id).is_some() {
                (
                    "not-kept-here",
                    format!("{app}/{id} is kept by another node"),
                )
            } else {
                (
                    "unknown-instance",
                    format!("{app}/{id} is not an instance of this node"),
                )
            };
            return Err(Refusal::new(
                StatusCode::MISDIRECTED_REQUEST,
                reason,
                detail,
            ));
        };
        let instance = &found.instance;
        let port = if instance.port.enabled || !instance.secure_port.enabled {
            instance.port.number
        } else {
            instance.secure_port.number
        };
        let address = instance
            .ip_addr
            .parse::<IpAddr>()
            .ok()
            .filter(|ip| self.local.contains(*ip))
            .zip(u16::try_from(port).ok())
            .map(|(ip, port)| SocketAddr::new(ip, port))
            .ok_or_else(|| {
                Refusal::new(
                    StatusCode::MISDIRECTED_REQUEST,
                    "not-local",
                    format!(
                        "{app}/{id} is registered at {}:{port}, not an address of this host",
                        instance.ip_addr
                    ),
                )
            })?;
        if let Some(allow) = &self.allow {
            allow
                .check(caller, &app)
                .map_err(|detail| Refusal::new(StatusCode::FORBIDDEN, "not-allowed", detail))?;
        }
        Ok((app, address))
    }

    /// One request from an authenticated connection.
    pub async fn handle(
        self: Arc<Self>,
        peer: Arc<Result<NodeName, String>>,
        request: Request<Incoming>,
    ) -> Response<ResponseBody> {
        self.metrics.requests.inc();
        let (app, address) = match self.admit(&peer, request.headers()) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                self.metrics
                    .refusals
                    .get_or_create(&ReasonLabels {
                        reason: refusal.reason,
                    })
                    .inc();
                tracing::debug!(reason = refusal.reason, detail = %refusal.detail, "inbound refusal");
                return refusal.into_response();
            }
        };
        if request.method() == http::Method::CONNECT {
            return match request.extensions().get::<hyper::ext::Protocol>().cloned() {
                Some(protocol) => self.tunnel(app, address, protocol, request).await,
                None => Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "connect",
                    "plain CONNECT is not relayed: only an upgrade (extended CONNECT) is",
                )
                .into_response(),
            };
        }
        let (mut parts, body) = request.into_parts();
        let grpc = parts
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));
        let version = parts.version;
        let uri = match for_the_app(&mut parts, address, !grpc) {
            Ok(uri) => uri,
            Err(refusal) => return refusal.into_response(),
        };
        let mut forwarded = Request::new(body.map_err(|e| Box::new(e) as BoxError).boxed_unsync());
        *forwarded.method_mut() = parts.method;
        *forwarded.uri_mut() = uri;
        *forwarded.headers_mut() = parts.headers;
        *forwarded.version_mut() = if grpc {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        let client = if grpc { &self.http2 } else { &self.http1 };
        match client.request(forwarded).await {
            Ok(response) => {
                let (mut head, body) = response.into_parts();
                hop_by_hop::strip(&mut head.headers);
                head.version = version;
                Response::from_parts(
                    head,
                    body.map_err(|e| Box::new(e) as BoxError).boxed_unsync(),
                )
            }
            Err(error) => app_unreachable(&app, address, &error),
        }
    }
}

impl Inbound {
    /// An extended CONNECT (RFC 8441) from the caller's node: the app is asked for the
    /// same upgrade in HTTP/1.1 (as the caller asked its own node), and once it switches,
    /// the HTTP/2 stream and the app's connection are joined.
    async fn tunnel(
        &self,
        app: String,
        address: SocketAddr,
        protocol: hyper::ext::Protocol,
        mut request: Request<Incoming>,
    ) -> Response<ResponseBody> {
        let from_caller = hyper::upgrade::on(&mut request);
        let (mut parts, _) = request.into_parts();
        let uri = match for_the_app(&mut parts, address, true) {
            Ok(uri) => uri,
            Err(refusal) => return refusal.into_response(),
        };
        let Ok(upgrade) = HeaderValue::from_str(protocol.as_str()) else {
            return Refusal::new(StatusCode::BAD_REQUEST, "bad-protocol", "unusable protocol")
                .into_response();
        };
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, upgrade);
        let mut forwarded = Request::new(
            http_body_util::Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *forwarded.method_mut() = http::Method::GET;
        *forwarded.uri_mut() = uri;
        *forwarded.headers_mut() = parts.headers;
        *forwarded.version_mut() = Version::HTTP_11;
        let mut response = match self.http1.request(forwarded).await {
            Ok(response) => response,
            Err(error) => return app_unreachable(&app, address, &error),
        };
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            // The app declined: its answer goes back as it is (a 2xx would read as an open
            // tunnel, so it is not one).
            let (mut head, body) = response.into_parts();
            hop_by_hop::strip(&mut head.headers);
            head.version = Version::HTTP_2;
            if head.status.is_success() {
                head.status = StatusCode::BAD_GATEWAY;
            }
            return Response::from_parts(
                head,
                body.map_err(|e| Box::new(e) as BoxError).boxed_unsync(),
            );
        }
        crate::upstream::join_upgrades(from_caller, hyper::upgrade::on(&mut response));
        // The app's handshake headers (Sec-WebSocket-Accept, -Protocol, -Extensions) go
        // back with a 200, HTTP/2's word for a tunnel that is open.
        let (mut head, _) = response.into_parts();
        hop_by_hop::strip(&mut head.headers);
        head.status = StatusCode::OK;
        head.version = Version::HTTP_2;
        Response::from_parts(
            head,
            http_body_util::Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
    }
}

/// Turns a request from a node into the app's: the mesh's headers and the hop's gone, and
/// the URI at the app's address. `host` puts the name the caller used into Host, where an
/// HTTP/1.1 app reads it (it travelled as the hop's `:authority`).
fn for_the_app(
    parts: &mut http::request::Parts,
    address: SocketAddr,
    host: bool,
) -> Result<http::Uri, Refusal> {
    strip_mesh_headers(&mut parts.headers);
    hop_by_hop::strip(&mut parts.headers);
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .to_owned();
    let uri = http::Uri::try_from(format!("http://{address}{path}"))
        .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, "bad-path", "unusable request path"))?;
    if host && !parts.headers.contains_key(header::HOST) {
        if let Some(authority) = parts.uri.authority() {
            if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
                parts.headers.insert(header::HOST, value);
            }
        }
    }
    Ok(uri)
}

/// 502 when the app kept by this node does not take the connection.
fn app_unreachable(
    app: &str,
    address: SocketAddr,
    error: &hyper_util::client::legacy::Error,
) -> Response<ResponseBody> {
    tracing::debug!(%app, %address, %error, "inbound: the app did not answer");
    let mut response = text_response(
        StatusCode::BAD_GATEWAY,
        format!("cannot reach {app} at {address}: {error}\n"),
    );
    response.headers_mut().insert(
        "x-ferry-error",
        HeaderValue::from_static("connection-failed"),
    );
    response
}

/// `APP/ID` into the upper-case app and the id. An address (`10.0.0.5:8080`, a URL) is
/// refused: the inbound side resolves instances, never addresses.
pub fn parse_target(target: &str) -> Result<(String, &str), Refusal> {
    let bad = |detail: String| Refusal::new(StatusCode::BAD_REQUEST, "not-an-instance", detail);
    if target.contains("://") || target.parse::<SocketAddr>().is_ok() || !target.contains('/') {
        return Err(bad(format!(
            "{TARGET_HEADER} {target:?} is not an instance id (APP/ID); addresses are never targets"
        )));
    }
    let (app, id) = target.split_once('/').unwrap_or_default();
    if app.is_empty() || id.is_empty() || id.contains('/') {
        return Err(bad(format!(
            "{TARGET_HEADER} {target:?} is not an instance id (APP/ID)"
        )));
    }
    Ok((app.to_ascii_uppercase(), id))
}

fn strip_mesh_headers(headers: &mut http::HeaderMap) {
    let mesh: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(MESH_HEADER_PREFIX))
        .cloned()
        .collect();
    for name in mesh {
        headers.remove(name);
    }
}

/// The reason label of a failed handshake, from rustls' error, on either side.
pub(crate) fn handshake_failure_reason(error: &std::io::Error) -> &'static str {
    let text = error.to_string();
    if text.contains("NotValidForName") || text.contains("not valid for name") {
        "wrong-name"
    } else if text.contains("received fatal alert") {
        // The other side refused what this one presented; the alert says why.
        "refused-by-peer"
    } else if text.contains("peer sent no certificates") || text.contains("NoCertificatesPresented")
    {
        "no-client-certificate"
    } else if text.contains("expired") || text.contains("Expired") {
        "expired"
    } else if text.contains("not valid yet") || text.contains("NotValidYet") {
        "not-yet-valid"
    } else if text.contains("UnknownIssuer") || text.contains("unknown issuer") {
        "unknown-issuer"
    } else if text.contains("timed out") {
        "timeout"
    } else {
        "other"
    }
}

/// Accepts nodes' connections until `shutdown`, then drains.
pub async fn serve(
    listener: TcpListener,
    inbound: Arc<Inbound>,
    limits: ConnectionLimits,
    shutdown: watch::Receiver<bool>,
) {
    let mut builder = listen::builder(limits);
    // WebSocket and other upgrades arrive as extended CONNECT (RFC 8441).
    builder.http2().enable_connect_protocol();
    let builder = Arc::new(builder);
    let connection = move |stream, peer_address, shutdown| -> BoxFuture<'static, ()> {
        Box::pin(serve_connection(
            inbound.clone(),
            builder.clone(),
            limits,
            stream,
            peer_address,
            shutdown,
        ))
    };
    listen::accept_and_drain("inbound", listener, limits, shutdown, connection).await;
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// One node's connection: the handshake, who the peer is, then its requests.
async fn serve_connection(
    inbound: Arc<Inbound>,
    builder: Arc<hyper_util::server::conn::auto::Builder<TokioExecutor>>,
    limits: ConnectionLimits,
    stream: tokio::net::TcpStream,
    peer_address: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let credentials = inbound.identity.current();
    let acceptor = TlsAcceptor::from(credentials.server.clone());
    let handshake = tokio::time::timeout(limits.idle_timeout, acceptor.accept(stream));
    let tls = match handshake.await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            let reason = handshake_failure_reason(&error);
            inbound
                .metrics
                .handshake_failures
                .get_or_create(&ReasonLabels { reason })
                .inc();
            tracing::debug!(peer = %peer_address, %error, reason, "inbound handshake failed");
            return;
        }
        Err(_) => {
            inbound
                .metrics
                .handshake_failures
                .get_or_create(&ReasonLabels { reason: "timeout" })
                .inc();
            return;
        }
    };
    inbound.metrics.handshakes.inc();
    let peer: Arc<Result<NodeName, String>> = Arc::new(
        tls.get_ref()
            .1
            .peer_certificates()
            .ok_or_else(|| "the peer presented no certificate".to_owned())
            .and_then(|certs| {
                peer_node(certs, &credentials.trust_domain).map_err(|e| e.to_string())
            }),
    );
    let service = hyper::service::service_fn(move |request| {
        let inbound = inbound.clone();
        let peer = peer.clone();
        async move {
            // A panic is a bug: the caller gets a 500, the listener keeps serving.
            let handled = std::panic::AssertUnwindSafe(inbound.handle(peer, request))
                .catch_unwind()
                .await;
            Ok::<_, std::convert::Infallible>(
                handled.unwrap_or_else(|_| crate::error::internal_error()),
            )
        }
    });
    // listen::until_shutdown's GracefulConnection bound does not prove Send for a TLS
    // stream's connection (a higher-ranked lifetime error in rustc); the same select here,
    // with the connection's own graceful_shutdown.
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(connection);
    let mut shutdown = shutdown;
    let outcome = tokio::select! {
        outcome = connection.as_mut() => outcome,
        _ = shutdown.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = outcome {
        tracing::debug!(peer = %peer_address, %error, "inbound connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_instance_ids_never_addresses() {
        assert_eq!(
            parse_target("orders/host-a:orders:8080").unwrap(),
            ("ORDERS".to_owned(), "host-a:orders:8080")
        );
        for address in [
            "10.0.0.5:8080",
            "[::1]:8080",
            "http://10.0.0.5:8080/x",
            "orders",
            "/x",
            "orders/",
            "a/b/c",
        ] {
            let refusal = parse_target(address).unwrap_err();
            assert_eq!(refusal.status, StatusCode::BAD_REQUEST, "{address}");
            assert_eq!(refusal.reason, "not-an-instance", "{address}");
        }
    }

    #[test]
    fn mesh_headers_are_stripped_and_others_kept() {
        let mut headers = http::HeaderMap::new();
        headers.insert("ferry-target", HeaderValue::from_static("A/1"));
        headers.insert("ferry-hop", HeaderValue::from_static("1"));
        headers.insert("x-request-id", HeaderValue::from_static("r"));
        strip_mesh_headers(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-request-id"));
    }

    #[test]
    fn loopback_and_own_addresses_are_local() {
        let local = LocalAddresses::new(["198.18.0.1".parse().unwrap()]);
        assert!(local.contains("127.0.0.1".parse().unwrap()));
        assert!(local.contains("::1".parse().unwrap()));
        assert!(local.contains("198.18.0.1".parse().unwrap()));
        assert!(!local.contains("198.18.0.2".parse().unwrap()));
    }
}
