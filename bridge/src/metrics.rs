//! Prometheus metrics: per-API request counts and latencies recorded by a middleware, and
//! registry figures read at scrape time (so they cost nothing between scrapes). The Eureka
//! view's fetch counts are its own atomics (it knows no metrics library); a collector
//! exports them as `ferry_eureka_fetches_total{kind="full"|"delta"}`. Each sync with a
//! legacy registry is read the same way, from its status, as `ferry_sync_*{source}`, and
//! the store this node stands on, from its report, as `ferry_store_*`; this node's
//! certificate and its signer's decisions as `ferry_identity_*` and `ferry_ca_*`.
//!
//! The registry encodes OpenMetrics, where a counter's family is named without `_total`;
//! the Prometheus text format (0.0.4), which `promtool check metrics` and scrapers that do
//! not ask for OpenMetrics read, names it with the suffix. `Exposition` picks one, and
//! `text_format` rewrites the metadata lines; the samples are the same in both.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use ferry_core::Registry;
use ferry_eureka::FetchCounts;
use ferry_proxy::metrics::LabelText;
use ferry_sync::{SourceSnapshot, SourceStatus, SyncHandle};

use crate::store_report::StoreReport;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

/// The two exposition formats `/metrics` speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposition {
    /// OpenMetrics 1.0, for scrapers that ask for it in `Accept`.
    OpenMetrics,
    /// The Prometheus text format 0.0.4, for everything else.
    Text,
}

impl Exposition {
    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Exposition::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

pub struct Metrics {
    registry: prometheus_client::registry::Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<ApiLabels, Histogram>,
    /// Instances by status, every status always present so a stacked panel has no gaps.
    instances: Family<StatusLabels, Gauge>,
    change_index: Gauge,
    renewals_last_minute: Gauge,
    resident_memory: Gauge,
    syncs: Arc<std::sync::Mutex<Vec<Arc<SourceStatus>>>>,
    identity: Arc<std::sync::Mutex<Option<Arc<crate::identity::Figures>>>>,
}

impl Metrics {
    pub fn new(
        proxy: &ferry_proxy::metrics::ProxyMetrics,
        eureka_fetches: Arc<FetchCounts>,
        store: Arc<StoreReport>,
    ) -> Metrics {
        let mut registry = prometheus_client::registry::Registry::with_prefix("ferry");
        proxy.register(&mut registry);
        registry.register_collector(Box::new(StoreFigures(store)));
        registry.register_collector(Box::new(EurekaFetches(eureka_fetches)));
        let syncs = Arc::new(std::sync::Mutex::new(Vec::new()));
        registry.register_collector(Box::new(Syncs(syncs.clone())));
        let identity = Arc::new(std::sync::Mutex::new(None));
        registry.register_collector(Box::new(IdentityFigures(identity.clone())));
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<ApiLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0])
        });
        let instances = Family::<StatusLabels, Gauge>::default();
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
            "Registered instances, by status",
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
            syncs,
            identity,
        }
    }

    /// Exports this node's certificate figures (and its signer's) from now on.
    pub fn watch_identity(&self, figures: Arc<crate::identity::Figures>) {
        if let Ok(mut identity) = self.identity.lock() {
            *identity = Some(figures);
        }
    }

    /// Exports the figures of these syncs from now on, and of no other (with etcd, the
    /// syncs run only while this node leads them).
    pub fn watch_syncs(&self, handles: &[SyncHandle]) {
        if let Ok(mut syncs) = self.syncs.lock() {
            *syncs = handles.iter().map(|handle| handle.status.clone()).collect();
        }
    }

    pub fn render(&self, registry: &Registry, format: Exposition) -> String {
        let counts = registry.status_counts();
        for status in ferry_core::Status::ALL {
            self.instances
                .get_or_create(&StatusLabels {
                    status: status.to_string(),
                })
                .set(counts.0[status.slot()] as i64);
        }
        self.change_index.set(registry.index() as i64);
        self.renewals_last_minute
            .set(registry.renewals_last_minute() as i64);
        if let Some(bytes) = resident_memory_bytes() {
            self.resident_memory.set(bytes as i64);
        }
        let mut text = String::new();
        // Encoding into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        match format {
            Exposition::OpenMetrics => text,
            Exposition::Text => text_format(&text),
        }
    }
}

/// OpenMetrics text as the Prometheus text format 0.0.4: a counter's HELP and TYPE name
/// its samples' `_total` name, and the lines 0.0.4 does not know (`# UNIT`, `# EOF`) go.
/// The registry writes no `_created` samples, exemplars or OpenMetrics-only types, so
/// nothing else differs.
fn text_format(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let metadata = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|keyword| Some((keyword, line.strip_prefix(keyword)?)));
        match metadata {
            Some((keyword, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                text.push_str(keyword);
                text.push_str(name);
                if counters.contains(name) {
                    text.push_str("_total");
                }
                text.push(' ');
                text.push_str(tail);
            }
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
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
            MetricType::Counter,
        )?;
        for (kind, count) in counts {
            ConstCounter::new(count).encode(family.encode_family(&FetchLabels { kind })?)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// `ferry_identity_*` and `ferry_ca_*`: the certificate's expiry, renewals, and what this
/// node signed or refused while it was the signer; read at scrape time, absent without an
/// identity.
#[derive(Debug)]
struct IdentityFigures(Arc<std::sync::Mutex<Option<Arc<crate::identity::Figures>>>>);

impl Collector for IdentityFigures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering;
        let Some(figures) = self.0.lock().ok().and_then(|figures| figures.clone()) else {
            return Ok(());
        };
        let family = encoder.encode_descriptor(
            "identity_cert_not_after_seconds",
            "When this node's certificate expires, in Unix seconds.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(figures.not_after.load(Ordering::Relaxed)).encode(family)?;
        let mut family = encoder.encode_descriptor(
            "identity_renewals",
            "Renewals of this node's certificate, by result (ok, error).",
            None,
            MetricType::Counter,
        )?;
        for (result, count) in [
            ("ok", figures.renewals_ok.load(Ordering::Relaxed)),
            ("error", figures.renewals_error.load(Ordering::Relaxed)),
        ] {
            ConstCounter::new(count).encode(family.encode_family(&ResultLabels { result })?)?;
        }
        let Some(signer) = &figures.signer else {
            return Ok(());
        };
        let family = encoder.encode_descriptor(
            "ca_signed",
            "Node certificates this node signed as the elected signer.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(signer.signed()).encode(family)?;
        let mut family = encoder.encode_descriptor(
            "ca_refused",
            "Certificate requests this node refused as the elected signer, by reason.",
            None,
            MetricType::Counter,
        )?;
        for (reason, count) in signer.refused() {
            ConstCounter::new(count).encode(family.encode_family(&ReasonLabels { reason })?)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: LabelText,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceFetchLabels {
    source: LabelText,
    kind: &'static str,
}

/// `ferry_sync_*{source}`: each legacy source's status, read at scrape time.
#[derive(Debug)]
struct Syncs(Arc<std::sync::Mutex<Vec<Arc<SourceStatus>>>>);

impl Collector for Syncs {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshots: Vec<SourceSnapshot> = match self.0.lock() {
            Ok(syncs) => syncs.iter().map(|status| status.snapshot()).collect(),
            Err(_) => return Ok(()),
        };
        if snapshots.is_empty() {
            return Ok(());
        }
        type Figure = fn(&SourceSnapshot) -> i64;
        let gauges: [(&str, &str, Figure); 6] = [
            ("sync_reachable", "Whether the last exchange with the legacy registry succeeded (1) or not (0).", |s| i64::from(s.reachable)),
            ("sync_imported_instances", "Instances imported from the legacy registry, held now.", |s| s.imported as i64),
            ("sync_stale_instances", "Imported instances kept while the legacy registry cannot be reached.", |s| s.stale as i64),
            ("sync_pending_removals", "Imported instances gone from the legacy registry, kept until its grace period ends.", |s| s.pending_removals as i64),
            ("sync_exported_instances", "Ferry's instances held in the legacy registry.", |s| s.exported as i64),
            ("sync_last_success_timestamp_seconds", "When an exchange with the legacy registry last succeeded (0: never).", |s| s.last_success.unwrap_or(0) / 1000),
        ];
        for (name, help, figure) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for snapshot in &snapshots {
                let labels = SourceLabels {
                    source: snapshot.name.as_str().into(),
                };
                ConstGauge::new(figure(snapshot)).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "sync_errors",
            "Failed exchanges with the legacy registry, and documents or instances refused from it.",
            None,
            MetricType::Counter,
        )?;
        for snapshot in &snapshots {
            let labels = SourceLabels {
                source: snapshot.name.as_str().into(),
            };
            ConstCounter::new(snapshot.errors).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "sync_fetches",
            "Reads of the legacy registry: whole (full) and incremental (delta).",
            None,
            MetricType::Counter,
        )?;
        for snapshot in &snapshots {
            for (kind, count) in [
                ("full", snapshot.full_fetches),
                ("delta", snapshot.delta_fetches),
            ] {
                let labels = SourceFetchLabels {
                    source: snapshot.name.as_str().into(),
                    kind,
                };
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: LabelText,
}

/// `ferry_store_*`: whether this node's copy of the registry is current and how far it has
/// applied the store's changes, read at scrape time. The embedded store is always current
/// and has no endpoints.
struct StoreFigures(Arc<StoreReport>);

impl std::fmt::Debug for StoreFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreFigures")
    }
}

impl Collector for StoreFigures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = self.0.status();
        let current = encoder.encode_descriptor(
            "store_current",
            "Whether this node's copy of the registry is current (1) or stale: the shared store has not answered for 10 s (0).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(status.current)).encode(current)?;
        let last_contact = encoder.encode_descriptor(
            "store_last_contact_seconds",
            "Since the shared store last answered this node's watch (0 for the embedded store).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(status.last_contact.unwrap_or_default().as_secs_f64())
            .encode(last_contact)?;
        let applied = encoder.encode_descriptor(
            "store_applied_revision",
            "The last store revision this node's registry applied (the embedded store: its change index).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(status.applied_revision as i64).encode(applied)?;
        let decode_errors = encoder.encode_descriptor(
            "store_decode_errors",
            "Values under Ferry's etcd prefix that were not registrations, skipped.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(status.decode_errors).encode(decode_errors)?;
        if status.endpoints.is_empty() {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "store_endpoint_healthy",
            "Whether each etcd endpoint answered its last probe with a leader (1) or not (0).",
            None,
            MetricType::Gauge,
        )?;
        for endpoint in &status.endpoints {
            let labels = EndpointLabels {
                endpoint: endpoint.endpoint.as_str().into(),
            };
            ConstGauge::new(i64::from(endpoint.healthy)).encode(family.encode_family(&labels)?)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_names_counter_families_with_their_samples_suffix() {
        let openmetrics = "# HELP ferry_proxy_requests Requests received.\n\
                           # TYPE ferry_proxy_requests counter\n\
                           ferry_proxy_requests_total{service=\"ORDERS\"} 3\n\
                           # HELP ferry_store_current Whether current.\n\
                           # TYPE ferry_store_current gauge\n\
                           # UNIT ferry_store_current ratio\n\
                           ferry_store_current 1\n\
                           # EOF\n";
        assert_eq!(
            text_format(openmetrics),
            "# HELP ferry_proxy_requests_total Requests received.\n\
             # TYPE ferry_proxy_requests_total counter\n\
             ferry_proxy_requests_total{service=\"ORDERS\"} 3\n\
             # HELP ferry_store_current Whether current.\n\
             # TYPE ferry_store_current gauge\n\
             ferry_store_current 1\n"
        );
    }
}
