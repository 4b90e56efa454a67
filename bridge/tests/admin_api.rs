//! The admin API's write rule against the real `ferry` binary: with `--admin-token` set, a
//! cutover without the token is refused and changes nothing; `ferry ctl --token` moves the
//! service.

use std::process::Command;

mod common;
use common::start_ferry_with;

#[tokio::test]
async fn a_cutover_needs_the_admin_token_when_one_is_set() {
    let ferry = start_ferry_with(&["--admin-token", "s3cret"]).await;
    let client = reqwest::Client::new();
    let service = format!("http://127.0.0.1:{}/api/services/ORDERS", ferry.admin);

    let refused = client
        .put(&service)
        .json(&serde_json::json!({"mode": "mesh"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let wrong = client
        .put(&service)
        .bearer_auth("guess")
        .json(&serde_json::json!({"mode": "mesh"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);
    assert_eq!(
        reqwest::get(&service).await.unwrap().status(),
        404,
        "a refused write changed nothing: ORDERS, never registered, is still unknown"
    );

    let admin = format!("127.0.0.1:{}", ferry.admin);
    let ctl = |token: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
        command.args(["ctl", "--admin", &admin]);
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        command
            .args(["cutover", "ORDERS", "mesh"])
            .env_remove("FERRY_ADMIN_TOKEN")
            .output()
            .unwrap()
    };
    let without = ctl(None);
    assert_eq!(without.status.code(), Some(4), "refused");
    assert!(without.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&without.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&without.stderr)
    );
    let with = ctl(Some("s3cret"));
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    assert!(String::from_utf8_lossy(&with.stdout).contains("ORDERS is now mesh"));
    assert_eq!(mode(&service).await, "mesh");
}

/// The mode the admin API shows for a service.
async fn mode(service: &str) -> String {
    let shown: serde_json::Value = reqwest::get(service).await.unwrap().json().await.unwrap();
    shown["mode"].as_str().unwrap_or_default().to_owned()
}
