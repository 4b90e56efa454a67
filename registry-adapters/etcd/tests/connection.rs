//! The connection's failover against a real 3-member etcd cluster on loopback: member killed,
//! member hung (SIGSTOP, as in a partition), quorum lost and regained.

use std::process::Command;
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};
use ferry_etcd::{ConnectOptions, Connection, EtcdError};

mod common;
use common::{serial, Cluster};

async fn put(connection: &Connection, key: String) -> Result<(), EtcdError> {
    connection
        .run(true, |client| {
            let key = key.clone();
            async move { client.kv_client().put(key, "v", None).await.map(|_| ()) }
        })
        .await
}

async fn count_prefix(client: Client, prefix: &str) -> Result<Vec<String>, etcd_client::Error> {
    let response = client
        .kv_client()
        .get(
            prefix,
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await?;
    Ok(response
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_and_gets_go_through_run_and_all_endpoints_are_healthy() {
    let _turn = serial().await;
    let cluster = Cluster::start("basic").await;
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let connection = Connection::connect(&cluster.endpoints(), ConnectOptions::default())
        .await
        .expect("connect");

    let tasks_connected = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    assert!(tasks_connected > tasks_before, "no probe task");
    put(&connection, "basic/a".to_owned()).await.expect("put");
    let value = connection
        .run(true, |client| async move {
            let response = client.kv_client().get("basic/a", None).await?;
            Ok(response.kvs().first().map(|kv| kv.value().to_vec()))
        })
        .await
        .expect("get");
    assert_eq!(value.as_deref(), Some(&b"v"[..]));

    let states = connection.endpoints();
    assert_eq!(states.len(), 3);
    for state in &states {
        assert!(state.healthy && state.has_leader, "{state}");
        assert!(state.revision.is_some(), "{state}");
    }
    assert_eq!(states.iter().filter(|s| s.pinned).count(), 1);
    assert!(connection.healthy());
    let (pinned, _) = connection.pinned();
    assert!(states.iter().any(|s| s.pinned && s.endpoint == pinned));

    // The probe task (and the clients' channel tasks) end with the last clone.
    let clone = connection.clone();
    drop(connection);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(clone.healthy(), "a clone keeps probing");
    drop(clone);
    let metrics = tokio::runtime::Handle::current().metrics();
    let deadline = Instant::now() + Duration::from_secs(3);
    while metrics.num_alive_tasks() > tasks_before {
        assert!(
            Instant::now() < deadline,
            "{} tasks alive after the last clone was dropped, {tasks_before} before connect",
            metrics.num_alive_tasks()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_pinned_member_loses_no_idempotent_put() {
    let _turn = serial().await;
    let mut cluster = Cluster::start("kill").await;
    let connection = Connection::connect(&cluster.endpoints(), ConnectOptions::default())
        .await
        .expect("connect");

    let mut victim = None;
    let (mut acknowledged, mut failed) = (0, 0);
    for i in 0..300 {
        if i == 100 {
            let (pinned, _) = connection.pinned();
            let index = cluster.index_of(&pinned);
            let pid = cluster.pid(index);
            // From another thread, so that the kill lands while puts are in flight.
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(5));
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            });
            victim = Some(index);
        }
        match put(&connection, format!("kill/{i:03}")).await {
            Ok(()) => acknowledged += 1,
            Err(error) => {
                failed += 1;
                eprintln!("put {i} failed: {error}");
            }
        }
    }
    let victim = victim.expect("a member was killed");
    cluster.kill(victim);
    eprintln!(
        "killed {}: {acknowledged} acknowledged, {failed} failed",
        cluster.endpoint(victim)
    );
    assert_eq!((acknowledged, failed), (300, 0));
    assert_ne!(connection.pinned().0, cluster.endpoint(victim));

    for survivor in (0..3).filter(|&i| i != victim) {
        let client = Client::connect([cluster.endpoint(survivor)], None)
            .await
            .expect("client");
        let keys = count_prefix(client, "kill/").await.expect("read back");
        let expected: Vec<String> = (0..300).map(|i| format!("kill/{i:03}")).collect();
        assert_eq!(keys, expected, "keys on {}", cluster.endpoint(survivor));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_pinned_member_is_left_within_the_request_timeout() {
    let _turn = serial().await;
    let cluster = Cluster::start("stop").await;
    let options = ConnectOptions::default();
    let request_timeout = options.request_timeout;
    let connection = Connection::connect(&cluster.endpoints(), options)
        .await
        .expect("connect");

    let (pinned, _) = connection.pinned();
    let stopped = cluster.index_of(&pinned);
    cluster.signal(stopped, "STOP");
    let since_stop = Instant::now();

    let mut slowest = Duration::ZERO;
    let mut repinned_after = None;
    let mut results = Vec::new();
    // Bounded by count and by time: puts keep going past the failover for a while.
    for i in 0..200 {
        if since_stop.elapsed() > Duration::from_secs(6) {
            break;
        }
        let started = Instant::now();
        let result = put(&connection, format!("stop/{i:03}")).await;
        slowest = slowest.max(started.elapsed());
        results.push(result.map_err(|e| e.to_string()));
        if repinned_after.is_none() && connection.pinned().0 != pinned {
            repinned_after = Some(since_stop.elapsed());
        }
    }
    cluster.signal(stopped, "CONT");
    eprintln!(
        "stopped {pinned}: {} puts, re-pinned after {repinned_after:?}, slowest {slowest:?}",
        results.len()
    );

    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failures.is_empty(), "failed puts: {failures:?}");
    let repinned_after = repinned_after.expect("re-pinned off the stopped member");
    assert!(
        repinned_after <= request_timeout + Duration::from_millis(1500),
        "re-pinned only after {repinned_after:?}"
    );
    assert!(
        slowest <= request_timeout * 2 + Duration::from_millis(500),
        "a call took {slowest:?}"
    );
    let states = connection.endpoints();
    let stopped_state = &states[stopped];
    assert!(!stopped_state.pinned, "{stopped_state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_quorum_fails_fast_and_regaining_it_recovers() {
    let _turn = serial().await;
    let mut cluster = Cluster::start("quorum").await;
    let options = ConnectOptions::default();
    let request_timeout = options.request_timeout;
    let connection = Connection::connect(&cluster.endpoints(), options)
        .await
        .expect("connect");
    put(&connection, "quorum/before".to_owned())
        .await
        .expect("put with quorum");

    let (pinned, _) = connection.pinned();
    let first = cluster.index_of(&pinned);
    let second = (first + 1) % 3;
    cluster.kill(first);
    cluster.kill(second);

    let started = Instant::now();
    let result = put(&connection, "quorum/lost".to_owned()).await;
    let took = started.elapsed();
    eprintln!("without quorum: {result:?} after {took:?}");
    assert!(
        matches!(
            result,
            Err(EtcdError::Unavailable { .. } | EtcdError::Timeout { .. })
        ),
        "{result:?}"
    );
    assert!(took <= request_timeout * 3, "failing took {took:?}");

    let deadline = Instant::now() + Duration::from_secs(6);
    while connection.healthy() {
        assert!(Instant::now() < deadline, "still healthy without quorum");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let states = connection.endpoints();
    assert!(states.iter().all(|s| !s.healthy), "{states:?}");

    cluster.spawn(first);
    cluster.spawn(second);
    cluster.wait_for_leader(&[0, 1, 2]).await;

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match put(&connection, "quorum/regained".to_owned()).await {
            Ok(()) => break,
            Err(error) => assert!(Instant::now() < deadline, "no recovery: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !connection.healthy() {
        assert!(Instant::now() < deadline, "not healthy after recovery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// etcd booting beside Ferry (one compose file, one host boot): `connect` keeps probing
/// until a member knows a leader, and gives up only after `startup_wait`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_waits_for_a_cluster_still_starting_and_gives_up_after_startup_wait() {
    let _turn = serial().await;
    let mut cluster = Cluster::start("startup").await;
    for i in 0..3 {
        cluster.kill(i);
    }

    let short = ConnectOptions {
        startup_wait: Duration::from_secs(2),
        ..ConnectOptions::default()
    };
    let started = Instant::now();
    let result = Connection::connect(&cluster.endpoints(), short).await;
    let took = started.elapsed();
    assert!(
        matches!(result, Err(EtcdError::Unavailable { .. })),
        "{:?}",
        result.map(|c| c.pinned().0)
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "gave up after {took:?}"
    );

    let endpoints = cluster.endpoints();
    let connecting = tokio::spawn(async move {
        let options = ConnectOptions {
            startup_wait: Duration::from_secs(20),
            ..ConnectOptions::default()
        };
        let started = Instant::now();
        let connection = Connection::connect(&endpoints, options).await;
        (connection, started.elapsed())
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !connecting.is_finished(),
        "connect returned with no member up"
    );
    for i in 0..3 {
        cluster.spawn(i);
    }
    let (connection, took) = connecting.await.expect("connect task");
    let connection = connection.expect("connect once the cluster is up");
    assert!(took >= Duration::from_secs(3), "connected after {took:?}");
    assert!(connection.healthy(), "pinned {}", connection.pinned().0);
    put(&connection, "startup/after".to_owned())
        .await
        .expect("put once connected");
}
