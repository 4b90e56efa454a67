//! The data plane's Prometheus families, per service and per endpoint. Registered into the
//! admin listener's registry by the bridge.

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A label value that comes from outside (a service name, an instance id), written with
/// `\`, `"` and line feeds escaped as both exposition formats require: prometheus-client
/// writes a `String` value as it is, and a registration may name its instance anything, so
/// one quote in it would make every scrape of `/metrics` unreadable.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
pub struct LabelText(String);

impl From<&str> for LabelText {
    fn from(text: &str) -> Self {
        LabelText(text.to_owned())
    }
}

impl EncodeLabelValue for LabelText {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                other => encoder.write_char(other)?,
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: LabelText,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    pub service: LabelText,
    pub endpoint: LabelText,
    /// `2xx`..`5xx`, or `error` when no response came back.
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub service: LabelText,
    pub endpoint: LabelText,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What `/metrics` would print for these families, through prometheus-client's encoder.
    fn exposition(metrics: &ProxyMetrics) -> String {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn names_and_ids_from_registrations_are_escaped_in_label_values() {
        let metrics = ProxyMetrics::new();
        metrics
            .ejections
            .get_or_create(&EndpointLabels {
                service: "ORDERS".into(),
                endpoint: "orders \"blue\"\\1\nb".into(),
            })
            .inc();
        let text = exposition(&metrics);
        assert!(
            text.contains(
                r#"proxy_ejections_total{service="ORDERS",endpoint="orders \"blue\"\\1\nb"} 1"#
            ),
            "{text}"
        );
        // Every sample line is one line with balanced quotes once escapes are read.
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let unescaped_quotes = line
                .replace("\\\\", "")
                .replace("\\\"", "")
                .matches('"')
                .count();
            assert_eq!(unescaped_quotes % 2, 0, "{line}");
        }
    }
}
