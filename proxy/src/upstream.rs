//! One upstream service as the outbound listener sees it: its live endpoints (UP instances
//! from the registry), the balancer, the retry budget, the clients, and the request path:
//! trace headers, endpoint choice, timeout, retries, circuit breaking, metrics.
//!
//! The order of the steps matters: the retry budget is filled before the first attempt so
//! a retry can never precede its own deposit; a body is buffered (and so replayable) only
//! when it is small and its size is known; 5xx answers and failures after the request was
//! sent are retried only for idempotent methods, failed connects for any replayable request
//! (it never reached the service).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::registry::Endpoint;
use ferry_core::{Registry, Status};
use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;

use super::balance::{Balancer, EndpointState, Strategy};
use super::error::ProxyError;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::metrics::{EndpointLabels, ProxyMetrics, ResponseLabels, ServiceLabels};
use super::retry::RetryBudget;
use super::{trace, BoxError, RequestBody, ResponseBody};

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

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1). `te` is kept
/// for `trailers`, which gRPC needs end to end.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
];

/// The endpoints as of the app's last seen result index; endpoint state (latency estimate,
/// breaker) survives refreshes.
#[derive(Default)]
struct EndpointCache {
    app_index: u64,
    endpoints: Arc<Vec<Arc<EndpointState>>>,
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
    pub(crate) settings: UpstreamSettings,
    metrics: Arc<ProxyMetrics>,
    /// Metric handles bound to this service's labels, so the request path never builds
    /// label sets.
    pub(crate) requests: Counter,
    pub(crate) latency: Histogram,
    retries: Counter,
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
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector.clone());
        let http2 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .http2_only(true)
            .build(connector);
        let labels = ServiceLabels {
            service: service.to_owned(),
        };
        let requests = metrics.requests.get_or_create(&labels).clone();
        let latency = metrics.latency.get_or_create(&labels).clone();
        let retries = metrics.retries.get_or_create(&labels).clone();
        let errors = metrics
            .responses
            .get_or_create(&ResponseLabels {
                service: service.to_owned(),
                endpoint: String::new(),
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
            settings,
            metrics,
        }
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// UP endpoints, re-read from the registry only when the app's index moved.
    pub fn current_endpoints(&self) -> Arc<Vec<Arc<EndpointState>>> {
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
        let fresh: Vec<Arc<EndpointState>> = listed
            .into_iter()
            .filter(|endpoint| endpoint.status == Status::Up)
            .map(|Endpoint { id, host, port, .. }| {
                let authority = if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                };
                cached
                    .endpoints
                    .iter()
                    .find(|known| known.id == id && known.authority == authority)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(self.endpoint_state(id, authority)))
            })
            .collect();
        *cached = EndpointCache {
            app_index: index,
            endpoints: Arc::new(fresh),
            global_index: global,
        };
        cached.endpoints.clone()
    }

    /// A new endpoint with its response counters bound to its labels.
    fn endpoint_state(&self, id: String, authority: String) -> EndpointState {
        let mut endpoint = EndpointState::new(id, authority);
        for (slot, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].into_iter().enumerate() {
            endpoint.responses[slot] = self
                .metrics
                .responses
                .get_or_create(&ResponseLabels {
                    service: self.service.clone(),
                    endpoint: endpoint.id.clone(),
                    class,
                })
                .clone();
        }
        endpoint
    }

    pub async fn handle(self: Arc<Self>, mut request: Request<Incoming>) -> Response<ResponseBody> {
        let started = Instant::now();
        self.requests.inc();
        let upgrade = is_upgrade(request.headers());
        let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let response = match self.forward(request, upgrade).await {
            Ok((response, endpoint)) => {
                endpoint.count_response(response.status().as_u16());
                response
            }
            Err(error) => {
                tracing::debug!(service = %self.service, %error, "proxy error");
                self.errors.inc();
                return error.into_response();
            }
        };
        self.latency.observe(started.elapsed().as_secs_f64());
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
    ) -> Result<(Response<ResponseBody>, Arc<EndpointState>), ProxyError> {
        let (mut parts, body) = request.into_parts();
        trace::propagate(&mut parts.headers);
        let upgrade_headers = upgrade.then(|| {
            (
                parts.headers.get(header::CONNECTION).cloned(),
                parts.headers.get(header::UPGRADE).cloned(),
            )
        });
        strip_hop_by_hop(&mut parts.headers);
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
        let idempotent = super::retry::is_idempotent(parts.method.as_str());
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
        self.budget.deposit();
        let deadline = tokio::time::Instant::now() + self.settings.request_timeout;
        let http2 = parts.version == Version::HTTP_2;
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let mut tried: Vec<Arc<EndpointState>> = Vec::new();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let endpoint = self
                .balancer
                .pick(&endpoints, &tried)
                .cloned()
                .ok_or_else(|| ProxyError::AllEjected {
                    service: self.service.clone(),
                })?;
            tried.push(endpoint.clone());
            let body = match (&buffered, streaming.take()) {
                (Some(bytes), _) => Full::new(bytes.clone())
                    .map_err(|never| match never {})
                    .boxed_unsync(),
                (None, Some(stream)) => stream,
                (None, None) => unreachable!("a streamed body is sent once"),
            };
            let unreachable = || ProxyError::Unreachable {
                service: self.service.clone(),
                endpoint: endpoint.authority.clone(),
                reason: "invalid address".into(),
            };
            let mut uri = http::uri::Parts::default();
            uri.scheme = Some(http::uri::Scheme::HTTP);
            uri.authority = Some(endpoint.uri_authority.clone().ok_or_else(unreachable)?);
            uri.path_and_query = Some(path.clone());
            let mut upstream_request = Request::new(body);
            *upstream_request.method_mut() = parts.method.clone();
            *upstream_request.uri_mut() = http::Uri::from_parts(uri).map_err(|_| unreachable())?;
            *upstream_request.headers_mut() = parts.headers.clone();
            *upstream_request.version_mut() = if http2 {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            };
            let client = if http2 { &self.http2 } else { &self.http1 };
            let in_flight = endpoint.start();
            let outcome = tokio::time::timeout_at(deadline, client.request(upstream_request)).await;
            let can_retry = buffered.is_some() && attempt < self.settings.max_attempts;
            match outcome {
                Err(_) => {
                    self.fail(&endpoint);
                    return Err(ProxyError::Timeout {
                        service: self.service.clone(),
                        timeout_ms: self.settings.request_timeout.as_millis(),
                    });
                }
                Ok(Err(error)) => {
                    drop(in_flight);
                    let sent = !error.is_connect();
                    if self.failed(&endpoint, sent, idempotent, can_retry) {
                        continue;
                    }
                    return Err(ProxyError::Unreachable {
                        service: self.service.clone(),
                        endpoint: endpoint.authority.clone(),
                        reason: error_chain(&error),
                    });
                }
                Ok(Ok(response)) => {
                    in_flight.finish();
                    let status = response.status().as_u16();
                    if self.answered(&endpoint, status, idempotent, can_retry) {
                        continue;
                    }
                    let (mut head, body) = response.into_parts();
                    if status != 101 {
                        strip_hop_by_hop(&mut head.headers);
                    }
                    // The caller's connection speaks the caller's version, whatever the
                    // endpoint answered with.
                    head.version = parts.version;
                    let body = body
                        .map_err(|error| Box::new(error) as BoxError)
                        .boxed_unsync();
                    return Ok((Response::from_parts(head, body), endpoint));
                }
            }
        }
    }

    pub(crate) fn fail(&self, endpoint: &EndpointState) {
        if endpoint.breaker.failure() {
            tracing::info!(service = %self.service, endpoint = %endpoint.id, "endpoint ejected");
            self.metrics
                .ejections
                .get_or_create(&EndpointLabels {
                    service: self.service.clone(),
                    endpoint: endpoint.id.clone(),
                })
                .inc();
        }
    }

    /// An endpoint answered `status`: its breaker learns of it. True when the request is to
    /// be retried on another endpoint: a 502/503/504 to an idempotent request, with
    /// attempts and budget left.
    pub(crate) fn answered(
        &self,
        endpoint: &EndpointState,
        status: u16,
        idempotent: bool,
        can_retry: bool,
    ) -> bool {
        if status >= 500 {
            self.fail(endpoint);
        } else {
            endpoint.breaker.success();
        }
        let retry = matches!(status, 502..=504) && idempotent && can_retry;
        retry && self.take_retry()
    }

    /// An attempt failed without an answer: the breaker learns of it. True when the request
    /// is to be retried: one that may have reached the endpoint (`sent`) could have been
    /// acted on, so only an idempotent one is.
    pub(crate) fn failed(
        &self,
        endpoint: &EndpointState,
        sent: bool,
        idempotent: bool,
        can_retry: bool,
    ) -> bool {
        self.fail(endpoint);
        (!sent || idempotent) && can_retry && self.take_retry()
    }

    fn take_retry(&self) -> bool {
        let granted = self.budget.withdraw();
        if granted {
            self.retries.inc();
        }
        granted
    }
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

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the `Connection` header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Joins the two halves of an upgraded connection (WebSocket) once both have switched.
fn splice(
    downstream: hyper::upgrade::OnUpgrade,
    mut response: Response<ResponseBody>,
) -> Response<ResponseBody> {
    let upstream = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        match tokio::try_join!(downstream, upstream) {
            Ok((downstream, upstream)) => {
                let mut downstream = TokioIo::new(downstream);
                let mut upstream = TokioIo::new(upstream);
                let _ = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await;
            }
            Err(error) => tracing::debug!(%error, "upgrade failed"),
        }
    });
    response
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
