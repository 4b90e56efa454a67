//! One service's traffic figures for `ferry ctl service NAME`, read from the admin
//! listener's Prometheus text: the exposition format is the proxy's public record of its
//! traffic, so the command line reads the same numbers a dashboard would.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// Totals since the proxy started.
#[derive(Debug, Default, PartialEq)]
pub struct Traffic {
    pub requests: u64,
    pub retries: u64,
    /// Answers the proxy gave itself (503, 504, 502).
    pub proxy_errors: u64,
    pub open_connections: u64,
    /// Upper bounds of the latency buckets holding the median and the 99th percentile.
    pub p50_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
    /// Responses by status class (1xx..5xx) and ejections, by endpoint id.
    pub endpoints: BTreeMap<String, ([u64; 5], u64)>,
}

impl Traffic {
    /// The figures of `service` (upper case, as the metrics label it).
    pub fn parse(metrics: &str, service: &str) -> Traffic {
        let mut traffic = Traffic::default();
        let mut buckets: Vec<(f64, u64)> = Vec::new();
        let mut count = 0;
        for line in metrics.lines().filter(|line| !line.starts_with('#')) {
            let Some((name, labels, value)) = sample_line(line) else {
                continue;
            };
            if labels.get("service").map(String::as_str) != Some(service) {
                continue;
            }
            let whole = value as u64;
            match name {
                "ferry_proxy_requests_total" => traffic.requests = whole,
                "ferry_proxy_retries_total" => traffic.retries = whole,
                "ferry_proxy_open_connections" => traffic.open_connections = whole,
                "ferry_proxy_request_duration_seconds_count" => count = whole,
                "ferry_proxy_request_duration_seconds_bucket" => {
                    if let Some(bound) = labels.get("le").and_then(|le| le.parse().ok()) {
                        buckets.push((bound, whole));
                    }
                }
                "ferry_proxy_responses_total" => {
                    let endpoint = labels.get("endpoint").map_or("", String::as_str);
                    let class = labels.get("class").map_or("", String::as_str);
                    if endpoint.is_empty() && class == "error" {
                        traffic.proxy_errors += whole;
                    } else if let Some(slot) = ["1xx", "2xx", "3xx", "4xx", "5xx"]
                        .iter()
                        .position(|known| *known == class)
                    {
                        traffic.endpoints.entry(endpoint.to_owned()).or_default().0[slot] = whole;
                    }
                }
                "ferry_proxy_ejections_total" => {
                    let endpoint = labels.get("endpoint").map_or("", String::as_str);
                    traffic.endpoints.entry(endpoint.to_owned()).or_default().1 = whole;
                }
                _ => {}
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let quantile = |q: f64| {
            let rank = (q * count as f64).ceil() as u64;
            buckets
                .iter()
                .find(|(_, cumulative)| count > 0 && *cumulative >= rank)
                .map(|(bound, _)| *bound)
        };
        traffic.p50_seconds = quantile(0.5);
        traffic.p99_seconds = quantile(0.99);
        traffic
    }

    /// The figures as `ferry ctl --output json service NAME` prints them under `traffic`.
    /// A latency is the upper bound (`le`) of the bucket holding it, in seconds: a number,
    /// `"+Inf"` above the largest bucket (as Prometheus writes that bound), `null` without
    /// requests.
    pub fn json(&self) -> Value {
        let bound = |seconds: Option<f64>| match seconds {
            Some(seconds) if seconds.is_finite() => json!(seconds),
            Some(_) => json!("+Inf"),
            None => Value::Null,
        };
        let endpoints: serde_json::Map<String, Value> = self
            .endpoints
            .iter()
            .map(|(endpoint, (classes, ejections))| {
                let responses: serde_json::Map<String, Value> = ["1xx", "2xx", "3xx", "4xx", "5xx"]
                    .iter()
                    .zip(classes)
                    .map(|(class, count)| ((*class).to_owned(), json!(count)))
                    .collect();
                (
                    endpoint.clone(),
                    json!({"responses": responses, "ejections": ejections}),
                )
            })
            .collect();
        json!({
            "requests": self.requests,
            "retries": self.retries,
            "proxy_errors": self.proxy_errors,
            "open_connections": self.open_connections,
            "latency_seconds": {
                "p50": bound(self.p50_seconds),
                "p99": bound(self.p99_seconds),
            },
            "endpoints": endpoints,
        })
    }

    pub fn render(&self) -> String {
        let bound = |seconds: Option<f64>| match seconds {
            Some(seconds) if seconds.is_finite() => format!("≤ {}", milliseconds(seconds)),
            Some(_) => "over 10 s".to_owned(),
            None => "-".to_owned(),
        };
        let mut lines = vec![
            format!(
                "requests {}, retries {}, proxy errors {}, open connections {}",
                self.requests, self.retries, self.proxy_errors, self.open_connections
            ),
            format!(
                "latency to the response head: p50 {}, p99 {}",
                bound(self.p50_seconds),
                bound(self.p99_seconds)
            ),
            format!(
                "{:<24} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
                "ENDPOINT", "1xx", "2xx", "3xx", "4xx", "5xx", "EJECTED"
            ),
        ];
        for (endpoint, (classes, ejections)) in &self.endpoints {
            lines.push(format!(
                "{:<24} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
                endpoint, classes[0], classes[1], classes[2], classes[3], classes[4], ejections
            ));
        }
        lines.join("\n")
    }
}

fn milliseconds(seconds: f64) -> String {
    let ms = seconds * 1000.0;
    if ms < 1.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// A sample line of the Prometheus text: its name, its labels (unescaped) and its value.
/// The history reads the proxy's families with it too.
pub(crate) fn sample_line(line: &str) -> Option<(&str, BTreeMap<String, String>, f64)> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let Some((name, rest)) = series.split_once('{') else {
        return Some((series, BTreeMap::new(), value));
    };
    let mut labels = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim_start_matches(',')
            .to_owned();
        if key.is_empty() || key == "}" || chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                // Every value is escaped (`ferry_proxy::metrics::LabelText`), so an
                // unescaped quote ends it.
                '"' => break,
                other => value.push(other),
            }
        }
        labels.insert(key, value);
    }
    Some((name, labels, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = r#"# HELP ferry_proxy_requests_total Requests received by outbound listeners.
# TYPE ferry_proxy_requests_total counter
ferry_proxy_requests_total{service="STOCK"} 60
ferry_proxy_requests_total{service="OTHER"} 5
ferry_proxy_responses_total{service="STOCK",endpoint="stock-1",class="2xx"} 58
ferry_proxy_responses_total{service="STOCK",endpoint="stock-2",class="5xx"} 2
ferry_proxy_responses_total{service="STOCK",endpoint="",class="error"} 1
ferry_proxy_request_duration_seconds_sum{service="STOCK"} 0.3
ferry_proxy_request_duration_seconds_count{service="STOCK"} 60
ferry_proxy_request_duration_seconds_bucket{le="0.0005",service="STOCK"} 10
ferry_proxy_request_duration_seconds_bucket{le="0.001",service="STOCK"} 40
ferry_proxy_request_duration_seconds_bucket{le="0.005",service="STOCK"} 59
ferry_proxy_request_duration_seconds_bucket{le="+Inf",service="STOCK"} 60
ferry_proxy_retries_total{service="STOCK"} 7
ferry_proxy_ejections_total{service="STOCK",endpoint="stock-dead"} 1
ferry_proxy_open_connections{service="STOCK"} 3
"#;

    #[test]
    fn reads_one_services_figures() {
        let traffic = Traffic::parse(METRICS, "STOCK");
        assert_eq!(traffic.requests, 60);
        assert_eq!(traffic.retries, 7);
        assert_eq!(traffic.proxy_errors, 1);
        assert_eq!(traffic.open_connections, 3);
        assert_eq!(traffic.p50_seconds, Some(0.001));
        assert_eq!(traffic.p99_seconds, Some(f64::INFINITY));
        assert_eq!(traffic.endpoints["stock-1"], ([0, 58, 0, 0, 0], 0));
        assert_eq!(traffic.endpoints["stock-dead"], ([0; 5], 1));
        let text = traffic.render();
        assert!(text.contains("p50 ≤ 1 ms, p99 over 10 s"), "{text}");
        assert!(
            text.lines()
                .any(|line| line.starts_with("stock-2")
                    && line.split_whitespace().nth(5) == Some("2"))
        );
    }

    #[test]
    fn a_service_without_traffic_has_zeros() {
        let traffic = Traffic::parse(METRICS, "NONE");
        assert_eq!(traffic, Traffic::default());
        assert!(traffic.render().contains("p50 -, p99 -"));
        let shown = traffic.json();
        assert_eq!(shown["latency_seconds"], json!({"p50": null, "p99": null}));
        assert_eq!(shown["endpoints"], json!({}));
    }

    #[test]
    fn the_json_form_holds_the_same_figures() {
        let shown = Traffic::parse(METRICS, "STOCK").json();
        assert_eq!(shown["requests"], 60);
        assert_eq!(shown["retries"], 7);
        assert_eq!(shown["proxy_errors"], 1);
        assert_eq!(shown["open_connections"], 3);
        assert_eq!(
            shown["latency_seconds"],
            json!({"p50": 0.001, "p99": "+Inf"})
        );
        assert_eq!(shown["endpoints"]["stock-2"]["responses"]["5xx"], 2);
        assert_eq!(shown["endpoints"]["stock-1"]["responses"]["2xx"], 58);
        assert_eq!(shown["endpoints"]["stock-dead"]["ejections"], 1);
    }
}
