//! The Consul sync against a real Consul dev agent (HashiCorp's binary, started per test):
//! import with meta, tags and status, export with `ferry-owner: ferry` and no echo,
//! status and deregistration both ways, the route shown to legacy callers, the KV
//! mirror, a killed and restarted agent, and adoption after a Ferry restart.

mod consul_support;

use std::time::Duration;

use serde_json::{json, Value};

use consul_support::{consul_binary, eventually, ConsulAgent, Ferry};
use ferry_core::model::{Instance, Status, OWNER_METADATA_KEY};
use ferry_core::registry::Route;
use ferry_sync::consul::OWNER;

const WITHIN: Duration = Duration::from_secs(15);

/// The status of Ferry's copy of `app`/`id`, if it holds one.
fn copy_status(ferry: &Ferry, app: &str, id: &str) -> Option<Status> {
    ferry
        .registry
        .imported(OWNER)
        .iter()
        .find(|copy| copy.app == app && copy.id == id)
        .map(|copy| copy.status)
}

/// The check ids and states of the one row of `name`, if there is exactly one.
async fn one_row(agent: &ConsulAgent, name: &str) -> Option<Value> {
    let rows = agent.health(name).await;
    (rows.len() == 1).then(|| rows[0].clone())
}

fn check_state(row: &Value, check_id: &str) -> Option<String> {
    row["Checks"]
        .as_array()?
        .iter()
        .find(|check| check["CheckID"] == check_id)
        .and_then(|check| check["Status"].as_str().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_service_is_imported_and_follows_status_and_deregistration() {
    let Some(binary) = consul_binary() else {
        return;
    };
    let agent = ConsulAgent::start(binary).await;
    agent
        .put(
            "/v1/agent/service/register",
            Some(
                json!({"ID": "inv-1", "Name": "Inventory", "Address": "10.1.2.3", "Port": 9090,
                        "Tags": ["blue", "v2"], "Meta": {"team": "stock"},
                        "Check": {"CheckID": "inv-ttl", "TTL": "60s", "Status": "passing"}}),
            ),
        )
        .await;
    let ferry = Ferry::new();
    let handle = ferry.sync(Ferry::settings(&agent));
    assert!(handle.wait_first_import(WITHIN).await);

    let copy = ferry
        .registry
        .instance("INVENTORY", "inv-1")
        .expect("imported by the first import")
        .instance;
    assert_eq!(copy.name.as_deref(), Some("Inventory"));
    assert_eq!(
        (copy.ip_addr.as_str(), copy.port.number),
        ("10.1.2.3", 9090)
    );
    assert_eq!(copy.tags, vec!["blue", "v2"]);
    assert_eq!(copy.metadata.get("team").map(String::as_str), Some("stock"));
    assert_eq!(
        copy.metadata.get(OWNER_METADATA_KEY).map(String::as_str),
        Some(OWNER)
    );
    assert_eq!(copy.status, Status::Up);
    assert!(
        ferry.registry.instance("CONSUL", "consul").is_none(),
        "Consul's own service is not imported"
    );

    // Each change on the legacy side, and the status Ferry's copy takes.
    let steps = [
        (
            vec!["/v1/agent/check/fail/inv-ttl"],
            Status::Down,
            "a critical check is DOWN",
        ),
        (
            vec![
                "/v1/agent/check/pass/inv-ttl",
                "/v1/agent/service/maintenance/inv-1?enable=true&reason=deploy",
            ],
            Status::OutOfService,
            "maintenance is OUT_OF_SERVICE",
        ),
        (
            vec!["/v1/agent/service/maintenance/inv-1?enable=false"],
            Status::Up,
            "out of maintenance and passing is UP",
        ),
    ];
    for (writes, status, reason) in steps {
        for path in writes {
            agent.put(path, None).await;
        }
        let followed = eventually(WITHIN, || async {
            copy_status(&ferry, "INVENTORY", "inv-1") == Some(status)
        })
        .await;
        assert!(followed, "{reason}");
    }

    agent.put("/v1/agent/service/deregister/inv-1", None).await;
    assert!(
        eventually(WITHIN, || async {
            ferry.registry.imported(OWNER).is_empty()
        })
        .await,
        "a deregistration removes the copy"
    );
    let status = handle.status.snapshot();
    assert!(status.reachable && status.initial_import_done);
    assert!(status.full_fetches >= 1);
    assert_eq!(status.errors, 0, "{:?}", status.last_error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ferry_instance_is_exported_with_its_status_and_never_echoed() {
    let Some(binary) = consul_binary() else {
        return;
    };
    let agent = ConsulAgent::start(binary).await;
    let ferry = Ferry::new();
    let mut orders = Instance::new("orders", "orders-1", "10.0.0.5", "10.0.0.5", 8080);
    orders
        .metadata
        .insert("management.port".to_owned(), "8081".to_owned());
    orders.tags = vec!["eu".to_owned()];
    ferry.registry.register(orders, false).unwrap();
    let handle = ferry.sync(Ferry::settings(&agent));

    assert!(
        eventually(WITHIN, || async {
            one_row(&agent, "orders").await.is_some()
        })
        .await,
        "exported"
    );
    let row = one_row(&agent, "orders").await.unwrap();
    assert_eq!(row["Service"]["ID"], "orders-1");
    assert_eq!(row["Service"]["Address"], "10.0.0.5");
    assert_eq!(row["Service"]["Port"], 8080);
    assert_eq!(row["Service"]["Tags"], json!(["eu"]));
    assert_eq!(row["Service"]["Meta"]["ferry-owner"], "ferry");
    assert_eq!(row["Service"]["Meta"]["management_port"], "8081");
    assert_eq!(
        check_state(&row, "ferry:orders-1").as_deref(),
        Some("passing")
    );

    // Several cycles later, still nothing imported back.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(ferry.registry.imported(OWNER).is_empty(), "no echo");
    assert_eq!(handle.status.snapshot().exported, 1);

    // Each status as the legacy agent shows it: (maintenance check, TTL check).
    let steps = [
        (Status::Down, None, "critical", "DOWN fails the TTL check"),
        (
            Status::OutOfService,
            Some("critical"),
            "passing",
            "OUT_OF_SERVICE is maintenance, the TTL kept passing",
        ),
        (Status::Up, None, "passing", "UP again: out of maintenance"),
    ];
    for (status, maintenance, ttl, reason) in steps {
        ferry
            .registry
            .set_override("ORDERS", "orders-1", status, None)
            .unwrap();
        let shown = eventually(WITHIN, || async {
            one_row(&agent, "orders").await.is_some_and(|row| {
                check_state(&row, "_service_maintenance:orders-1").as_deref() == maintenance
                    && check_state(&row, "ferry:orders-1").as_deref() == Some(ttl)
            })
        })
        .await;
        assert!(shown, "{reason}");
    }

    ferry.registry.cancel("ORDERS", "orders-1").unwrap();
    assert!(
        eventually(WITHIN, || async { agent.health("orders").await.is_empty() }).await,
        "leaving Ferry deregisters"
    );
    assert!(ferry.registry.imported(OWNER).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_shown_to_legacy_callers_is_the_published_address() {
    let Some(binary) = consul_binary() else {
        return;
    };
    let agent = ConsulAgent::start(binary).await;
    let ferry = Ferry::new();
    ferry.register("payments", "pay-1", "10.0.0.8", 7000);
    let _handle = ferry.sync(Ferry::settings(&agent));
    let real = ("10.0.0.8", 7000);
    let proxy = ("127.0.0.9", 15001);
    expect_published(&agent, real, "exported at its own address").await;
    let route = |publish_to_legacy| Route {
        host: proxy.0.to_owned(),
        port: proxy.1,
        publish_to_legacy,
    };
    let steps = [
        (Some(route(true)), proxy, "the proxy's address"),
        (
            Some(route(false)),
            real,
            "a route hidden from legacy callers shows the real address",
        ),
        (Some(route(true)), proxy, "the proxy's address again"),
        (None, real, "rollback: the real address again"),
    ];
    for (route, expected, reason) in steps {
        ferry.registry.set_route("PAYMENTS", route).unwrap();
        expect_published(&agent, expected, reason).await;
    }
}

/// Waits until the one row of `payments` shows `expected` (address, port).
async fn expect_published(agent: &ConsulAgent, expected: (&str, u32), reason: &str) {
    let shown = eventually(WITHIN, || async {
        one_row(agent, "payments").await.is_some_and(|row| {
            row["Service"]["Address"] == expected.0 && row["Service"]["Port"] == expected.1
        })
    })
    .await;
    assert!(shown, "{reason}: {:?}", agent.health("payments").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kv_prefix_is_mirrored_one_way() {
    let Some(binary) = consul_binary() else {
        return;
    };
    let agent = ConsulAgent::start(binary).await;
    agent.put_kv("config/orders/data", "a: 1").await;
    agent.put_kv("config/billing/data", "b: 2").await;
    agent.put_kv("secrets/x", "no").await;
    let ferry = Ferry::new();
    let _handle = ferry.sync(ferry_sync::consul::ConsulSyncSettings {
        kv_prefix: Some("config/".to_owned()),
        ..Ferry::settings(&agent)
    });
    let value = |key: &'static str| {
        let kv = ferry.kv.clone();
        async move {
            kv.get(key)
                .1
                .map(|entry| String::from_utf8_lossy(&entry.value).into_owned())
        }
    };
    assert!(
        eventually(WITHIN, || async {
            value("config/orders/data").await.as_deref() == Some("a: 1")
                && value("config/billing/data").await.as_deref() == Some("b: 2")
        })
        .await
    );
    assert!(value("secrets/x").await.is_none(), "only under the prefix");
    agent.put_kv("config/orders/data", "a: 3").await;
    agent.delete_kv("config/billing/data").await;
    assert!(
        eventually(WITHIN, || async {
            value("config/orders/data").await.as_deref() == Some("a: 3")
                && value("config/billing/data").await.is_none()
        })
        .await,
        "puts and deletes follow"
    );
    let index = ferry.kv.store_result_index();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        ferry.kv.store_result_index(),
        index,
        "an unchanged mirror writes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_leaves_stale_copies_and_its_restart_makes_no_duplicates() {
    let Some(binary) = consul_binary() else {
        return;
    };
    let mut agent = ConsulAgent::start(binary).await;
    let legacy_service = json!({"ID": "inv-1", "Name": "inventory", "Address": "10.1.2.3",
                                "Port": 9090, "Check": {"TTL": "60s", "Status": "passing"}});
    agent
        .put("/v1/agent/service/register", Some(legacy_service.clone()))
        .await;
    let ferry = Ferry::new();
    ferry.register("orders", "orders-1", "10.0.0.5", 8080);
    let handle = ferry.sync(Ferry::settings(&agent));
    assert!(handle.wait_first_import(WITHIN).await);
    assert!(
        eventually(WITHIN, || async {
            one_row(&agent, "orders").await.is_some()
        })
        .await
    );
    assert_eq!(ferry.registry.imported(OWNER).len(), 1);

    agent.kill();
    assert!(
        eventually(WITHIN, || async {
            let status = handle.status.snapshot();
            !status.reachable && status.stale == 1
        })
        .await,
        "unreachable: the copy is counted stale"
    );
    // Well past the grace period: still there.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ferry.registry.imported(OWNER).len(), 1, "kept while down");
    assert_eq!(copy_status(&ferry, "INVENTORY", "inv-1"), Some(Status::Up));

    agent.restart().await;
    // The legacy app registers again, as its agent lost it.
    agent
        .put("/v1/agent/service/register", Some(legacy_service))
        .await;
    assert!(
        eventually(WITHIN, || async {
            let status = handle.status.snapshot();
            status.reachable && status.stale == 0
        })
        .await
    );
    assert!(
        eventually(WITHIN, || async {
            one_row(&agent, "orders").await.is_some()
        })
        .await,
        "Ferry's instance is registered again with the empty agent"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(agent.health("orders").await.len(), 1, "no duplicate export");
    let copies = ferry.registry.imported(OWNER);
    assert_eq!(copies.len(), 1, "no duplicate copy: {copies:?}");
    assert_eq!(copies[0].id, "inv-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_ferry_restart_old_exports_are_adopted_then_deregistered_if_unowned() {
    let Some(binary) = consul_binary() else {
        return;
    };
    let agent = ConsulAgent::start(binary).await;
    // What a previous Ferry left: two exports, their TTL checks passing.
    for id in ["orders-1", "orders-2"] {
        agent
            .put(
                "/v1/agent/service/register",
                Some(
                    json!({"ID": id, "Name": "orders", "Address": "10.0.0.5", "Port": 8080,
                            "Meta": {"ferry-owner": "ferry"},
                            "Check": {"CheckID": format!("ferry:{id}"), "TTL": "3s",
                                      "Status": "passing"}}),
                ),
            )
            .await;
    }
    let ferry = Ferry::new();
    // orders-1 registers with the new Ferry; orders-2 never comes back.
    ferry.register("orders", "orders-1", "10.0.0.5", 8080);
    let _handle = ferry.sync(Ferry::settings(&agent));
    // Within the grace (2 s), the unowned one is kept, its TTL (3 s) passing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ids = |rows: Vec<Value>| -> Vec<String> {
        let mut ids: Vec<String> = rows
            .iter()
            .filter_map(|row| row["Service"]["ID"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(agent.health("orders").await),
        vec!["orders-1", "orders-2"]
    );
    assert!(
        eventually(WITHIN, || async {
            ids(agent.health("orders").await) == vec!["orders-1"]
        })
        .await,
        "the unowned export is deregistered after the grace"
    );
    assert!(ferry.registry.imported(OWNER).is_empty(), "no echo");
}
