use ferry_proxy::metrics::{EndpointLabels, ResponseLabels, ServiceLabels};

use super::*;

const INF: f64 = f64::INFINITY;

#[test]
fn quantiles_come_from_the_bucket_deltas_of_the_interval() {
    // 20 fast requests before the interval; 40 in it, all between 1 and 5 ms.
    let before = [(0.001, 20), (0.005, 20), (INF, 20)];
    let after = [(0.001, 20), (0.005, 60), (INF, 60)];
    let p50 = quantile(&before, &after, 0.5).unwrap();
    assert!((p50 - 0.003).abs() < 1e-12, "{p50}");
    let p99 = quantile(&before, &after, 0.99).unwrap();
    assert!((p99 - 0.00496).abs() < 1e-12, "{p99}");
    // Over the highest bound: reported as that bound, not as infinity.
    let slow = [(0.001, 20), (0.005, 20), (INF, 30)];
    assert_eq!(quantile(&before, &slow, 0.99), Some(0.005));
    // Nothing observed in the interval, or no reading at all.
    assert_eq!(quantile(&after, &after, 0.5), None);
    assert_eq!(quantile(&[], &[], 0.5), None);
    // A first reading counts from zero.
    assert_eq!(quantile(&[], &[(0.001, 4), (INF, 4)], 0.5), Some(0.0005));
}

fn busy(requests: u64) -> Totals {
    let mut totals = Totals {
        requests,
        buckets: vec![(0.001, requests), (INF, requests)],
        ..Totals::default()
    };
    totals
        .endpoints
        .insert("e1".into(), ([0, requests, 0, 0, 0], 0));
    totals
}

#[test]
fn a_ring_keeps_the_last_window_of_samples_and_no_more() {
    let mut rings = Rings::default();
    let mut first_capacity = None;
    for tick in 0..(WINDOW as i64 * 3) {
        let totals = BTreeMap::from([("ORDERS".to_owned(), busy(tick as u64 * 5))]);
        rings.record(tick * 10_000, totals);
        if let Some(ring) = rings.rings.get("ORDERS") {
            first_capacity.get_or_insert(ring.capacity());
        }
    }
    let ring = &rings.rings["ORDERS"];
    assert_eq!(ring.len(), WINDOW);
    assert_eq!(Some(ring.capacity()), first_capacity, "the ring never grew");
    assert_eq!(ring.back().unwrap().at_ms, (WINDOW as i64 * 3 - 1) * 10_000);
    assert_eq!(ring.front().unwrap().at_ms, (WINDOW as i64 * 2) * 10_000);
    let latest = ring.back().unwrap();
    assert_eq!((latest.requests, latest.answered, latest.failed), (5, 5, 0));
    assert_eq!(latest.request_rate(), 0.5);
    assert_eq!(latest.success_rate(), Some(1.0));
}

#[test]
fn failures_are_5xx_and_the_proxys_own_answers() {
    let mut rings = Rings::default();
    rings.record(0, BTreeMap::from([("PAY".to_owned(), Totals::default())]));
    let mut totals = busy(10);
    totals.endpoints.insert("e2".into(), ([0, 0, 0, 1, 2], 1));
    totals.proxy_errors = 2;
    rings.record(10_000, BTreeMap::from([("PAY".to_owned(), totals)]));
    let sample = rings.rings["PAY"][0];
    // 10 2xx, one 4xx, two 5xx, two answers of the proxy's own.
    assert_eq!((sample.answered, sample.failed), (15, 4));
    assert_eq!(sample.success_rate(), Some(11.0 / 15.0));
}

#[test]
fn services_are_capped_and_an_idle_one_gives_its_ring_up() {
    let mut rings = Rings::default();
    let names: Vec<String> = (0..MAX_SERVICES + 10).map(|n| format!("S{n:04}")).collect();
    let reading = |requests: u64| -> BTreeMap<String, Totals> {
        names
            .iter()
            .map(|name| (name.clone(), busy(requests)))
            .collect()
    };
    rings.record(0, reading(0));
    rings.record(10_000, reading(3));
    assert_eq!(rings.rings.len(), MAX_SERVICES);
    // Quiet for a whole window: every ring is idle, so a newly busy service gets one.
    for tick in 2..(WINDOW as i64 + 2) {
        rings.record(tick * 10_000, reading(3));
    }
    assert_eq!(rings.rings.len(), MAX_SERVICES);
    let mut next = reading(3);
    next.insert("NEW".into(), busy(7));
    rings.record((WINDOW as i64 + 2) * 10_000, next);
    assert_eq!(rings.rings.len(), MAX_SERVICES);
    assert_eq!(rings.rings["NEW"][0].requests, 7);
}

#[test]
fn the_sampler_reads_the_proxys_own_families() {
    let proxy = ProxyMetrics::new();
    let history = History::new(&proxy);
    history.tick(1_000);
    let service = ServiceLabels {
        service: "ORDERS".into(),
    };
    for millis in [0.2, 0.7, 3.0, 40.0] {
        proxy.requests.get_or_create(&service).inc();
        proxy
            .latency
            .get_or_create(&service)
            .observe(millis / 1000.0);
    }
    proxy
        .responses
        .get_or_create(&ResponseLabels {
            service: "ORDERS".into(),
            endpoint: "orders, \"1\"".into(),
            class: "2xx",
        })
        .inc_by(3);
    proxy
        .responses
        .get_or_create(&ResponseLabels {
            service: "ORDERS".into(),
            endpoint: Default::default(),
            class: "error",
        })
        .inc();
    proxy
        .ejections
        .get_or_create(&EndpointLabels {
            service: "ORDERS".into(),
            endpoint: "orders-2".into(),
        })
        .inc();
    history.tick(11_000);

    let body = history.json(Some("orders"));
    let series = &body["services"][0];
    assert_eq!(series["service"], "ORDERS");
    assert_eq!(series["at_ms"], json!([11_000]));
    assert_eq!(series["latest"]["requests"], 4);
    assert_eq!(series["latest"]["request_rate"], 0.4);
    assert_eq!(series["latest"]["success_rate"], 0.75);
    let p50 = series["latest"]["p50_ms"].as_f64().unwrap();
    assert!((0.5..=1.0).contains(&p50), "{p50}");
    let p99 = series["latest"]["p99_ms"].as_f64().unwrap();
    assert!((25.0..=50.0).contains(&p99), "{p99}");
    let endpoints = &body["totals"]["endpoints"];
    assert_eq!(endpoints[0]["id"], "orders, \"1\"", "{body}");
    assert_eq!(endpoints[0]["responses"]["2xx"], 3);
    assert_eq!(endpoints[1]["id"], "orders-2");
    assert_eq!(endpoints[1]["ejections"], 1);
    assert_eq!(body["totals"]["proxy_errors"], 1);
    assert_eq!(history.json(None)["services"].as_array().unwrap().len(), 1);
    assert_eq!(
        history.json(Some("OTHER"))["services"],
        json!([]),
        "a service without traffic has no series"
    );
}
