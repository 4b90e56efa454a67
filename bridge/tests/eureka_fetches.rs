//! `ferry_eureka_fetches_total{kind}` on the real binary's admin `/metrics`: one per GET of
//! the full registry or the delta, in any format and under either prefix, and nothing for
//! other reads. The Java tests read exactly this name and label to prove their clients do
//! not fall back to full fetches in a loop.

mod common;
use common::start_ferry;

async fn fetch_counts(client: &reqwest::Client, admin: u16) -> (u64, u64) {
    let text = client
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |kind: &str| {
        let series = format!("ferry_eureka_fetches_total{{kind=\"{kind}\"}} ");
        let line = text
            .lines()
            .find_map(|line| line.strip_prefix(&series))
            .unwrap_or_else(|| panic!("no `{series}` in:\n{text}"));
        line.trim().parse::<u64>().unwrap()
    };
    assert!(
        text.contains("# TYPE ferry_eureka_fetches_total counter"),
        "{text}"
    );
    (count("full"), count("delta"))
}

#[tokio::test]
async fn full_and_delta_fetches_are_counted_on_the_admin_metrics() {
    let ferry = start_ferry().await;
    let client = reqwest::Client::new();
    let eureka = format!("http://127.0.0.1:{}/eureka", ferry.eureka);
    assert_eq!(fetch_counts(&client, ferry.admin).await, (0, 0));

    let registration = serde_json::json!({"instance": {
        "instanceId": "orders-1", "hostName": "127.0.0.1", "app": "ORDERS", "ipAddr": "127.0.0.1",
        "port": {"$": 8080, "@enabled": "true"}, "dataCenterInfo": {"name": "MyOwn"}}});
    let registered = client
        .post(format!("{eureka}/apps/ORDERS"))
        .json(&registration)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 204);

    for (path, accept) in [
        ("/apps/", "application/json"),
        ("/apps", "application/xml"),
        ("/v2/apps/", "*/*"),
        ("/apps/delta", "application/json"),
        ("/v2/apps/delta", "application/xml"),
        ("/apps/delta", "application/json"),
        // Not registry fetches.
        ("/apps/ORDERS", "application/json"),
        ("/instances/orders-1", "application/json"),
        ("/vips/orders", "application/json"),
    ] {
        let reply = client
            .get(format!("{eureka}{path}"))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert!(reply.status().is_success(), "{path}: {}", reply.status());
    }
    assert_eq!(fetch_counts(&client, ferry.admin).await, (3, 3));
}
