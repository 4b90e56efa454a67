//! Prometheus metrics: per-API request counts and latencies recorded by a middleware, and
//! registry figures read at scrape time (so they cost nothing between scrapes). The Eureka
//! view's fetch counts are its own atomics (it knows no metrics library); a collector
//! exports them as `ferry_eureka_fetches_total{kind="full"|"delta"}`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use ferry_core::Registry;
use ferry_eureka::FetchCounts;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    api: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    api: &'static str,
}

pub struct Metrics {
    registry: prometheus_client::registry::Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<ApiLabels, Histogram>,
    instances: Gauge,
    change_index: Gauge,
    renewals_last_minute: Gauge,
    resident_memory: Gauge,
}

impl Metrics {
    pub fn new(
        proxy: &ferry_proxy::metrics::ProxyMetrics,
        eureka_fetches: Arc<FetchCounts>,
    ) -> Metrics {
        let mut registry = prometheus_client::registry::Registry::with_prefix("ferry");
        proxy.register(&mut registry);
        registry.register_collector(Box::new(EurekaFetches(eureka_fetches)));
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<ApiLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0])
        });
        let instances = Gauge::default();
        let change_index = Gauge::default();
        let renewals_last_minute = Gauge::default();
        let resident_memory = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by API and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by API",
            latency.clone(),
        );
        registry.register(
            "registry_instances",
            "Registered instances",
            instances.clone(),
        );
        registry.register(
            "registry_change_index",
            "The registry's change index",
            change_index.clone(),
        );
        registry.register(
            "registry_renewals_last_minute",
            "Heartbeats received in the last full minute",
            renewals_last_minute.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the ferry process",
            resident_memory.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            instances,
            change_index,
            renewals_last_minute,
            resident_memory,
        }
    }

    pub fn render(&self, registry: &Registry) -> String {
        self.instances.set(registry.instance_count() as i64);
        self.change_index.set(registry.index() as i64);
        self.renewals_last_minute
            .set(registry.renewals_last_minute() as i64);
        if let Some(bytes) = resident_memory_bytes() {
            self.resident_memory.set(bytes as i64);
        }
        let mut text = String::new();
        // Encoding into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    kind: &'static str,
}

/// `ferry_eureka_fetches_total{kind}`: the Eureka view's counts, read at scrape time.
#[derive(Debug)]
struct EurekaFetches(Arc<FetchCounts>);

impl Collector for EurekaFetches {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = [("full", self.0.full()), ("delta", self.0.delta())];
        let mut family = encoder.encode_descriptor(
            "eureka_fetches",
            "Eureka registry fetches answered (GET apps: full, GET apps/delta: delta), any format, cached or not.",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (kind, count) in counts {
            ConstCounter::new(count).encode(family.encode_family(&FetchLabels { kind })?)?;
        }
        Ok(())
    }
}

/// Records one request of `api`; installed per API with `from_fn_with_state`.
pub async fn record(
    State((metrics, api)): State<(Arc<Metrics>, &'static str)>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    // Known methods only, so a client cannot grow the label set.
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        _ => "OTHER",
    };
    let response = next.run(request).await;
    metrics
        .latency
        .get_or_create(&ApiLabels { api })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            api,
            method,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(resident_pages * 4096)
}
