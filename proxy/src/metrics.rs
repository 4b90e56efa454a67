//! The data plane's Prometheus families, per service and per endpoint. Registered into the
//! admin listener's registry by the bridge.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    pub service: String,
    pub endpoint: String,
    /// `2xx`..`5xx`, or `error` when no response came back.
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub service: String,
    pub endpoint: String,
}

#[derive(Debug)]
pub struct ProxyMetrics {
    pub requests: Family<ServiceLabels, Counter>,
    pub responses: Family<ResponseLabels, Counter>,
    pub latency: Family<ServiceLabels, Histogram, fn() -> Histogram>,
    pub retries: Family<ServiceLabels, Counter>,
    pub ejections: Family<EndpointLabels, Counter>,
    pub open_connections: Family<ServiceLabels, Gauge>,
    /// Sidecar mode's inbound listener (zero while it is off).
    pub inbound: std::sync::Arc<crate::inbound::InboundMetrics>,
    /// Sidecar mode's hop to other nodes (zero while it is off).
    pub peer: std::sync::Arc<crate::peer::PeerMetrics>,
}

fn latency_buckets() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        ProxyMetrics::new()
    }
}

impl ProxyMetrics {
    pub fn new() -> ProxyMetrics {
        ProxyMetrics {
            requests: Family::default(),
            responses: Family::default(),
            latency: Family::new_with_constructor(latency_buckets as fn() -> Histogram),
            retries: Family::default(),
            ejections: Family::default(),
            open_connections: Family::default(),
            inbound: Default::default(),
            peer: Default::default(),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "proxy_requests",
            "Requests received by outbound listeners",
            self.requests.clone(),
        );
        registry.register(
            "proxy_responses",
            "Responses sent, by endpoint and status class",
            self.responses.clone(),
        );
        registry.register(
            "proxy_request_duration_seconds",
            "Time from receiving a request to the response head",
            self.latency.clone(),
        );
        registry.register(
            "proxy_retries",
            "Requests retried on another endpoint",
            self.retries.clone(),
        );
        registry.register(
            "proxy_ejections",
            "Endpoints ejected by the circuit breaker",
            self.ejections.clone(),
        );
        registry.register(
            "proxy_open_connections",
            "Client connections open on outbound listeners",
            self.open_connections.clone(),
        );
        self.inbound.register(registry);
        self.peer.register(registry);
    }
}
