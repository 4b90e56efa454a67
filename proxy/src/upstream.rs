//! One upstream service as the outbound listener sees it: its live endpoints (UP instances
//! from the registry) with the HTTP/1.1 path's connection pools alongside, the balancer,
//! the retry budget, the hyper clients and the metric handles; and the general path's side
//! of a request: trace headers, hop-by-hop headers, bodies, upgrades. The policy over the
//! attempts (endpoint choice, retries, deadline, breaking) is `attempt`'s, shared with the
//! HTTP/1.1 path.
//!
//! A body is buffered (and so replayable) only when it is small and its size is known.

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_core::registry::Endpoint;
use ferry_core::{Registry, Status};
use http::header::{self, HeaderMap};
use http::request::Parts;
use http::{Request, Response, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::attempt::{Delivered, Outcome, Plan, Stop, Transport};
use crate::balance::{Balancer, EndpointState, Strategy};
use crate::error::ProxyError;
use crate::h1::pool::Pools;
use crate::metrics::{ProxyMetrics, ResponseLabels, ServiceLabels};
use crate::peer::Sidecar;
use crate::retry::RetryBudget;
use crate::{hop_by_hop, trace, BoxError, RequestBody, ResponseBody};

/// Per-service settings, as plain values.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_attempts: u32,
    /// Bodies up to this size are buffered so a retry can replay them.
    pub replay_limit: u64,
    pub strategy: Strategy,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
            max_attempts: 3,
            replay_limit: 64 * 1024,
            strategy: Strategy::PeakEwma,
        }
    }
}

/// One service's endpoints as of one registry read, and the HTTP/1.1 path's connection
/// pools for them: kept together so that a request finds an endpoint's pool in the list
/// it picked the endpoint from.
#[derive(Debug, Default)]
pub struct Endpoints {
    list: Vec<Arc<EndpointState>>,
    pub(crate) pools: Pools,
}

impl Deref for Endpoints {
    type Target = [Arc<EndpointState>];

    fn deref(&self) -> &Self::Target {
        &self.list
    }
}

/// The endpoints as of the app's last seen result index; endpoint state (latency estimate,
/// breaker, pool) survives refreshes.
#[derive(Default)]
struct EndpointCache {
    app_index: u64,
    endpoints: Arc<Endpoints>,
    /// The global change index when last checked: while it stands still, nothing changed.
    global_index: u64,
}

pub struct Upstream {
    /// Upper-case app name.
    service: String,
    registry: Arc<Registry>,
    endpoints: Mutex<EndpointCache>,
    pub(crate) balancer: Balancer,
    pub(crate) budget: RetryBudget,
    http1: Client<HttpConnector, RequestBody>,
    http2: Client<HttpConnector, RequestBody>,
    /// Sidecar mode: instances other nodes keep are reached through their inbound
    /// listeners.
    sidecar: Option<Arc<Sidecar>>,
    pub(crate) settings: UpstreamSettings,
    pub(crate) metrics: Arc<ProxyMetrics>,
    /// Metric handles bound to this service's labels, so the request path never builds
    /// label sets.
    pub(crate) requests: Counter,
    pub(crate) latency: Histogram,
    pub(crate) retries: Counter,
    pub(crate) errors: Counter,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("service", &self.service)
            .finish()
    }
}

impl Upstream {
    pub fn new(
        service: &str,
        registry: Arc<Registry>,
        settings: UpstreamSettings,
        metrics: Arc<ProxyMetrics>,
    ) -> Upstream {
        let (http1, http2) = app_clients(settings.connect_timeout);
        let labels = ServiceLabels {
            service: service.into(),
        };
        let requests = metrics.requests.get_or_create(&labels).clone();
        let latency = metrics.latency.get_or_create(&labels).clone();
        let retries = metrics.retries.get_or_create(&labels).clone();
        let errors = metrics
            .responses
            .get_or_create(&ResponseLabels {
                service: service.into(),
                endpoint: Default::default(),
                class: "error",
            })
            .clone();
        Upstream {
            requests,
            latency,
            retries,
            errors,
            service: service.to_owned(),
            registry,
            endpoints: Mutex::new(EndpointCache::default()),
            balancer: Balancer::new(settings.strategy),
            budget: RetryBudget::default(),
            http1,
            http2,
            sidecar: None,
            settings,
            metrics,
        }
    }

    /// Routes calls to instances other nodes keep through those nodes' inbound listeners.
    pub fn with_sidecar(mut self, sidecar: Option<Arc<Sidecar>>) -> Upstream {
        self.sidecar = sidecar;
        self
    }

    /// Whether some current endpoint is reached through a peer node: the HTTP/1.1 path
    /// hands such requests to the general path, which speaks the hop's HTTP/2.
    pub fn routes_through_peers(&self) -> bool {
        self.sidecar.is_some()
            && self
                .current_endpoints()
                .iter()
                .any(|endpoint| endpoint.via.is_some())
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// UP endpoints, re-read from the registry only when the app's index moved.
    pub fn current_endpoints(&self) -> Arc<Endpoints> {
        // Nothing anywhere changed since the last look: skip the registry entirely.
        let global = self.registry.change_index().current();
        {
            let cached = self.endpoints.lock();
            if cached.global_index == global && cached.app_index != 0 {
                return cached.endpoints.clone();
            }
        }
        let index = self.registry.app_result_index(&self.service);
        let mut cached = self.endpoints.lock();
        if cached.app_index == index && index != 0 {
            cached.global_index = global;
            return cached.endpoints.clone();
        }
        let (index, listed) = self.registry.endpoints(&self.service);
        let previous = &cached.endpoints;
        let mut fresh: Vec<Arc<EndpointState>> = Vec::new();
        for Endpoint {
            id,
            host,
            port,
            keeper,
            ..
        } in listed
            .into_iter()
            .filter(|endpoint| endpoint.status == Status::Up)
        {
            let authority = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let via = keeper.filter(|node| {
                self.sidecar
                    .as_ref()
                    .is_some_and(|sidecar| sidecar.routes_through(node))
            });
            let known = previous
                .iter()
                .find(|known| known.id == id && known.authority == authority && known.via == via)
                .cloned();
            let endpoint = known.unwrap_or_else(|| {
                // A slot no endpoint of either list holds: those that stay keep theirs.
                let slot = (0..)
                    .find(|slot| !previous.iter().chain(&fresh).any(|e| e.slot == *slot))
                    .unwrap_or_default();
                let mut state = self.endpoint_state(id, authority, slot);
                state.via = via;
                Arc::new(state)
            });
            fresh.push(endpoint);
        }
        let pools = Pools::follow(&previous.pools, previous, &fresh);
        *cached = EndpointCache {
            app_index: index,
            endpoints: Arc::new(Endpoints { list: fresh, pools }),
            global_index: global,
        };
        cached.endpoints.clone()
    }

    /// A new endpoint with its response counters bound to its labels.
    fn endpoint_state(&self, id: String, authority: String, slot: usize) -> EndpointState {
        let mut endpoint = EndpointState::new(id, authority);
        endpoint.slot = slot;
        for (slot, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].into_iter().enumerate() {
            endpoint.responses[slot] = self
                .metrics
                .responses
                .get_or_create(&ResponseLabels {
                    service: self.service.as_str().into(),
                    endpoint: endpoint.id.as_str().into(),
                    class,
                })
                .clone();
        }
        endpoint
    }

    /// The general path: a request hyper has parsed, and its answer.
    pub async fn handle(self: Arc<Self>, mut request: Request<Incoming>) -> Response<ResponseBody> {
        let started = Instant::now();
        self.requests.inc();
        let upgrade = is_upgrade(request.headers());
        let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let response = match self.forward(request, upgrade, started).await {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(service = %self.service, %error, "proxy error");
                self.errors.inc();
                return error.into_response();
            }
        };
        match downstream_upgrade {
            Some(downstream) if response.status() == http::StatusCode::SWITCHING_PROTOCOLS => {
                splice(downstream, response)
            }
            _ => response,
        }
    }

    async fn forward(
        &self,
        request: Request<Incoming>,
        upgrade: bool,
        started: Instant,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let (mut parts, body) = request.into_parts();
        trace::propagate(&mut parts.headers);
        let upgrade_headers = upgrade.then(|| {
            (
                parts.headers.get(header::CONNECTION).cloned(),
                parts.headers.get(header::UPGRADE).cloned(),
            )
        });
        hop_by_hop::strip(&mut parts.headers);
        if let Some((connection, protocol)) = upgrade_headers {
            if let (Some(connection), Some(protocol)) = (connection, protocol) {
                parts.headers.insert(header::CONNECTION, connection);
                parts.headers.insert(header::UPGRADE, protocol);
            }
        }
        let endpoints = self.current_endpoints();
        if endpoints.is_empty() {
            return Err(ProxyError::NoEndpoints {
                service: self.service.clone(),
            });
        }
        let replayable = !upgrade
            && body
                .size_hint()
                .exact()
                .is_some_and(|size| size <= self.settings.replay_limit);
        let mut streaming = None;
        let buffered = if replayable {
            Some(
                body.collect()
                    .await
                    .map_err(|error| ProxyError::BadRequestBody(error.to_string()))?
                    .to_bytes(),
            )
        } else {
            streaming = Some(
                body.map_err(|error| Box::new(error) as BoxError)
                    .boxed_unsync(),
            );
            None
        };
        let plan = Plan {
            started,
            first_attempt: Instant::now(),
            replayable: buffered.is_some(),
            idempotent: super::retry::is_idempotent(parts.method.as_str()),
        };
        let deadline = tokio::time::sleep(self.settings.request_timeout);
        tokio::pin!(deadline);
        let mut transport = General {
            upstream: self,
            path: parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
            parts: &parts,
            buffered,
            streaming,
        };
        let delivered = self
            .attempts(plan, &endpoints, &mut Vec::new(), deadline, &mut transport)
            .await;
        let Delivered { answer, .. } = delivered.map_err(|stop| match stop {
            Stop::Error(error) => error,
            Stop::CallerGone => unreachable!("a caller's failing body fails hyper's send"),
        })?;
        let (mut head, body) = answer.into_parts();
        if head.status != http::StatusCode::SWITCHING_PROTOCOLS {
            hop_by_hop::strip(&mut head.headers);
        }
        // The caller's connection speaks the caller's version, whatever the endpoint
        // answered with.
        head.version = parts.version;
        let body = body
            .map_err(|error| Box::new(error) as BoxError)
            .boxed_unsync();
        Ok(Response::from_parts(head, body))
    }
}

/// The pooled clients that call apps directly: HTTP/1.1, and h2c for gRPC.
pub(crate) fn app_clients(
    connect_timeout: Duration,
) -> (
    Client<HttpConnector, RequestBody>,
    Client<HttpConnector, RequestBody>,
) {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    let http1 = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector.clone());
    let http2 = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .http2_only(true)
        .build(connector);
    (http1, http2)
}

/// One attempt on the general path: the request rebuilt for the chosen endpoint, sent with
/// hyper's client.
struct General<'a> {
    upstream: &'a Upstream,
    parts: &'a Parts,
    path: http::uri::PathAndQuery,
    /// A replayable body, sent whole on every attempt.
    buffered: Option<Bytes>,
    /// A body streamed once: the request is not replayable.
    streaming: Option<RequestBody>,
}

impl Transport for General<'_> {
    type Answer = Response<Incoming>;

    async fn send(
        &mut self,
        endpoint: &Arc<EndpointState>,
        _at: Instant,
        _fresh: bool,
    ) -> Outcome<Response<Incoming>> {
        let body = match (&self.buffered, self.streaming.take()) {
            (Some(bytes), _) => Full::new(bytes.clone())
                .map_err(|never| match never {})
                .boxed_unsync(),
            (None, Some(stream)) => stream,
            (None, None) => unreachable!("a streamed body is sent once"),
        };
        let unreachable = || {
            Outcome::Stop(Stop::Error(ProxyError::Unreachable {
                service: self.upstream.service.clone(),
                endpoint: endpoint.authority.clone(),
                reason: "invalid address".into(),
            }))
        };
        if let (Some(node), Some(sidecar)) = (&endpoint.via, &self.upstream.sidecar) {
            return send_through_peer(
                self.upstream,
                self.parts,
                &self.path,
                sidecar,
                node,
                endpoint,
                body,
            )
            .await;
        }
        let Some(authority) = endpoint.uri_authority.clone() else {
            return unreachable();
        };
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(http::uri::Scheme::HTTP);
        uri.authority = Some(authority);
        uri.path_and_query = Some(self.path.clone());
        let Ok(uri) = http::Uri::from_parts(uri) else {
            return unreachable();
        };
        let http2 = needs_http2(self.parts);
        let mut request = Request::new(body);
        *request.method_mut() = self.parts.method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = self.parts.headers.clone();
        if http2 {
            *request.version_mut() = Version::HTTP_2;
        } else {
            *request.version_mut() = Version::HTTP_11;
            // An HTTP/2 caller names the service in `:authority`; HTTP/1.1 says it in Host,
            // as an HTTP/1.1 caller's request arrives.
            if let (None, Some(authority)) = (
                request.headers().get(header::HOST),
                self.parts.uri.authority(),
            ) {
                if let Ok(host) = header::HeaderValue::from_str(authority.as_str()) {
                    request.headers_mut().insert(header::HOST, host);
                }
            }
        }
        let client = if http2 {
            &self.upstream.http2
        } else {
            &self.upstream.http1
        };
        match client.request(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                Outcome::Answered(response, status)
            }
            Err(error) if http2 && !error.is_connect() => Outcome::Failed {
                sent: true,
                reason: format!(
                    "gRPC needs HTTP/2 and it failed with this endpoint (one that speaks only \
                     HTTP/1.1 cannot serve gRPC): {}",
                    error_chain(&error)
                ),
            },
            Err(error) => Outcome::Failed {
                sent: !error.is_connect(),
                reason: error_chain(&error),
            },
        }
    }
}

/// Sends the attempt to the node that keeps the instance, naming it in `ferry-target`;
/// that node's inbound listener checks and relays it. The hop is HTTP/2 whatever the
/// caller spoke; the inbound side speaks the app's version again.
async fn send_through_peer(
    upstream: &Upstream,
    parts: &Parts,
    path: &http::uri::PathAndQuery,
    sidecar: &Sidecar,
    node: &str,
    endpoint: &Arc<EndpointState>,
    body: RequestBody,
) -> Outcome<Response<Incoming>> {
    let failed = |reason: String| Outcome::Failed {
        sent: false,
        reason,
    };
    let Some(authority) = sidecar.authority_of(node) else {
        return failed(format!("{node:?} is not a node name"));
    };
    let Ok(target) =
        header::HeaderValue::from_str(&format!("{}/{}", upstream.service, endpoint.id))
    else {
        return failed(format!("instance id {:?} cannot be sent", endpoint.id));
    };
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(http::uri::Scheme::HTTP);
    uri.authority = Some(authority);
    uri.path_and_query = Some(path.clone());
    let Ok(uri) = http::Uri::from_parts(uri) else {
        return failed("invalid request path".into());
    };
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_2;
    let headers = request.headers_mut();
    *headers = parts.headers.clone();
    // An HTTP/2 caller's :authority is the name the app is called by; HTTP/1.1 says it
    // in Host. The hop's :authority names the peer, so the app's goes in Host.
    if !headers.contains_key(header::HOST) {
        if let Some(called) = parts.uri.authority() {
            if let Ok(host) = header::HeaderValue::from_str(called.as_str()) {
                headers.insert(header::HOST, host);
            }
        }
    }
    headers.insert(crate::inbound::TARGET_HEADER, target);
    // An HTTP/1.1 upgrade (WebSocket) crosses the HTTP/2 hop as an extended CONNECT
    // (RFC 8441): HTTP/2 has no Upgrade header, the stream itself becomes the tunnel.
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .map(hyper::ext::Protocol::from)
        .filter(|_| is_upgrade(headers));
    if let Some(protocol) = &upgrade {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
        *request.method_mut() = http::Method::CONNECT;
        request.extensions_mut().insert(protocol.clone());
    }
    match sidecar.client.request(request).await {
        // The tunnel is open: the caller is told in HTTP/1.1's words.
        Ok(mut response) if upgrade.is_some() && response.status().is_success() => {
            let protocol = upgrade.as_ref().map_or("websocket", |p| p.as_str());
            *response.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
            let headers = response.headers_mut();
            headers.insert(
                header::CONNECTION,
                header::HeaderValue::from_static("upgrade"),
            );
            if let Ok(protocol) = header::HeaderValue::from_str(protocol) {
                headers.insert(header::UPGRADE, protocol);
            }
            Outcome::Answered(response, 101)
        }
        // The peer refused before contacting any app (it no longer keeps the instance,
        // or never did): nothing was acted on, another endpoint may take it.
        Ok(response)
            if response.status() == http::StatusCode::MISDIRECTED_REQUEST
                && response.headers().contains_key("x-ferry-error") =>
        {
            failed(format!(
                "node {node} refused: {}",
                response
                    .headers()
                    .get("x-ferry-error")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
            ))
        }
        Ok(response) => {
            let status = response.status().as_u16();
            Outcome::Answered(response, status)
        }
        // The instance's own address means nothing on this host: name the hop that failed.
        Err(error) => Outcome::Failed {
            sent: !error.is_connect(),
            reason: format!(
                "through node {node}'s inbound listener at {}: {}",
                sidecar
                    .inbound_of(node)
                    .as_deref()
                    .unwrap_or("(none on record)"),
                error_chain(&error)
            ),
        },
    }
}

/// Whether a request goes to its endpoint over HTTP/2 (h2c): only gRPC from an HTTP/2
/// caller. The version between the proxy and an endpoint belongs to that hop, not to the
/// caller's (as a mesh proxy, or Envoy with a cluster left at its default, decides it):
/// every HTTP service speaks HTTP/1.1, while many never speak h2c, so any other request an
/// HTTP/2 caller makes is translated to HTTP/1.1. gRPC cannot be: it needs HTTP/2's
/// trailers and full-duplex streams, and its services all speak HTTP/2. gRPC-Web
/// (`application/grpc-web`) is made for HTTP/1.1 and is translated like any request.
fn needs_http2(parts: &Parts) -> bool {
    parts.version == Version::HTTP_2
        && parts
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|value| is_grpc(value.as_bytes()))
}

/// `application/grpc`, alone, with a `+format` or with parameters.
fn is_grpc(content_type: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    content_type
        .get(..GRPC.len())
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(GRPC))
        && matches!(
            content_type.get(GRPC.len()),
            None | Some(b'+' | b';' | b' ')
        )
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|value| {
                value
                    .split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Joins the two halves of an upgraded connection (WebSocket) once both have switched.
fn splice(
    downstream: hyper::upgrade::OnUpgrade,
    mut response: Response<ResponseBody>,
) -> Response<ResponseBody> {
    join_upgrades(downstream, hyper::upgrade::on(&mut response));
    response
}

/// Relays bytes both ways between two connections once both have switched protocols.
pub(crate) fn join_upgrades(one: hyper::upgrade::OnUpgrade, other: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        match tokio::try_join!(one, other) {
            Ok((one, other)) => {
                let mut one = TokioIo::new(one);
                let mut other = TokioIo::new(other);
                let _ = tokio::io::copy_bidirectional(&mut one, &mut other).await;
            }
            Err(error) => tracing::debug!(%error, "upgrade failed"),
        }
    });
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use ferry_core::Instance;

    use super::*;

    #[test]
    fn only_grpc_from_an_http2_caller_goes_upstream_over_http2() {
        let parts = |version: Version, content_type: Option<&str>| {
            let mut request = Request::builder().version(version).uri("http://orders/x");
            if let Some(content_type) = content_type {
                request = request.header(header::CONTENT_TYPE, content_type);
            }
            request.body(()).unwrap().into_parts().0
        };
        for grpc in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC; charset=utf-8",
        ] {
            assert!(needs_http2(&parts(Version::HTTP_2, Some(grpc))), "{grpc}");
            assert!(!needs_http2(&parts(Version::HTTP_11, Some(grpc))), "{grpc}");
        }
        for plain in [
            None,
            Some("application/json"),
            Some("application/grpc-web"),
            Some("application/grpc-web-text+proto"),
            Some("application/grpcx"),
        ] {
            assert!(!needs_http2(&parts(Version::HTTP_2, plain)), "{plain:?}");
        }
    }

    #[test]
    fn endpoints_keep_their_state_and_slots_across_refreshes_and_slots_stay_unique() {
        let registry = Arc::new(Registry::default());
        let register = |id: &str, port: u32| {
            let instance = Instance::new("orders", id, "127.0.0.1", "127.0.0.1", port);
            registry.register(instance, false).unwrap();
        };
        register("a", 8001);
        register("b", 8002);
        let upstream = Upstream::new(
            "ORDERS",
            registry.clone(),
            UpstreamSettings::default(),
            Arc::new(ProxyMetrics::new()),
        );
        let first = upstream.current_endpoints();
        assert_eq!(first.len(), 2);
        let a = first.iter().find(|endpoint| endpoint.id == "a").unwrap();

        registry.cancel("ORDERS", "b").unwrap();
        register("c", 8003);
        register("d", 8004);
        let second = upstream.current_endpoints();
        assert_eq!(second.len(), 3);
        let kept = second.iter().find(|endpoint| endpoint.id == "a").unwrap();
        assert!(Arc::ptr_eq(a, kept), "a stays the same endpoint");
        assert!(Arc::ptr_eq(
            first.pools.of(a).unwrap(),
            second.pools.of(kept).unwrap()
        ));
        let mut slots: Vec<usize> = second.iter().map(|endpoint| endpoint.slot).collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), 3, "no two endpoints share a slot");
        for endpoint in second.iter() {
            assert!(second.pools.of(endpoint).is_some());
        }
    }
}
