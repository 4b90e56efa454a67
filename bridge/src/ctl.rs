//! `ferry ctl --admin HOST:PORT ...`: the command line over the admin API, for operators
//! and scripts. `cutover SERVICE mesh|legacy` is the form scripts rely on; `sync` shows
//! the legacy registries Ferry syncs with; `nodes` the nodes sharing the registry; `allow`
//! sidecar mode's allow rules; `events` what happened (`--output json`: `/api/events` as
//! it is).

use std::process::ExitCode;

use serde_json::Value;

use crate::cli::{CtlAction, CtlCommand, Output};
use crate::traffic::Traffic;

pub fn run(command: &CtlCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ferry ctl: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(command)) {
        Ok(output) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("ferry ctl: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: &CtlCommand) -> anyhow::Result<String> {
    let base = if command.admin.contains("://") {
        command.admin.trim_end_matches('/').to_owned()
    } else {
        format!("http://{}", command.admin.trim_end_matches('/'))
    };
    let client = reqwest::Client::new();
    match &command.action {
        CtlAction::Services => {
            let services: Value = get_json(&client, format!("{base}/api/services")).await?;
            Ok(table(
                services.as_array().map(Vec::as_slice).unwrap_or_default(),
            ))
        }
        CtlAction::Service { name } => {
            let service: Value = get_json(&client, format!("{base}/api/services/{name}")).await?;
            let metrics = client
                .get(format!("{base}/metrics"))
                .send()
                .await?
                .text()
                .await?;
            let traffic = Traffic::parse(&metrics, &name.to_ascii_uppercase());
            Ok(format!(
                "{}\n\n{}",
                table(std::slice::from_ref(&service)),
                traffic.render()
            ))
        }
        CtlAction::Sync => {
            let sources: Value = get_json(&client, format!("{base}/api/sync")).await?;
            Ok(sync_table(
                sources.as_array().map(Vec::as_slice).unwrap_or_default(),
                now_millis(),
            ))
        }
        CtlAction::Nodes => {
            let nodes: Value = get_json(&client, format!("{base}/api/nodes")).await?;
            Ok(nodes_table(
                nodes.as_array().map(Vec::as_slice).unwrap_or_default(),
                now_millis(),
            ))
        }
        CtlAction::Events { limit, service } => {
            let mut query = vec![("limit", limit.to_string())];
            if let Some(service) = service {
                query.push(("service", service.clone()));
            }
            let events: Value = client
                .get(format!("{base}/api/events"))
                .query(&query)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            Ok(match command.output {
                Output::Json => serde_json::to_string_pretty(&events)?,
                Output::Table => events_table(&events),
            })
        }
        CtlAction::Allow {
            service: None,
            callers,
            any,
        } => {
            if !callers.is_empty() || *any {
                anyhow::bail!("name the service the rule is for: `allow SERVICE CALLER...`");
            }
            let rules: Value = get_json(&client, format!("{base}/api/allow")).await?;
            Ok(allow_table(&rules))
        }
        CtlAction::Allow {
            service: Some(service),
            callers,
            any,
        } => {
            if callers.is_empty() && !*any {
                anyhow::bail!(
                    "name the callers (`allow {service} CHECKOUT node:gateway-1`), or \
                     `allow {service} --any` to let every node call it"
                );
            }
            let url = format!("{base}/api/allow/{service}");
            let request = if *any {
                client.delete(url)
            } else {
                client
                    .put(url)
                    .json(&serde_json::json!({ "callers": callers }))
            };
            let rule = write(request, command.token.as_deref()).await?;
            Ok(match rule["callers"].as_array() {
                Some(callers) => format!(
                    "{} may be called by {}",
                    rule["service"].as_str().unwrap_or(service),
                    callers
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => format!(
                    "{} may be called by any node",
                    rule["service"].as_str().unwrap_or(service)
                ),
            })
        }
        CtlAction::Cutover { service, mode } => {
            if !matches!(mode.as_str(), "mesh" | "legacy") {
                anyhow::bail!("the mode must be `mesh` or `legacy`, not `{mode}`");
            }
            let request = client
                .put(format!("{base}/api/services/{service}"))
                .json(&serde_json::json!({ "mode": mode }));
            let service = write(request, command.token.as_deref()).await?;
            Ok(format!(
                "{} is now {} (port {})",
                service["name"]
                    .as_str()
                    .unwrap_or(service.as_str().unwrap_or("")),
                service["mode"].as_str().unwrap_or("?"),
                service["port"]
            ))
        }
    }
}

/// The allow rules, one service per line; services without a rule are open to every node.
fn allow_table(rules: &Value) -> String {
    let Some(rules) = rules.as_object().filter(|rules| !rules.is_empty()) else {
        return "no allow rules: any node of the trust domain may call any service".to_owned();
    };
    let mut out = format!("{:<24} {}\n", "SERVICE", "MAY BE CALLED BY");
    for (service, rule) in rules {
        let callers: Vec<&str> = rule["callers"]
            .as_array()
            .map(|callers| callers.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let callers = if callers.is_empty() {
            "no one".to_owned()
        } else {
            callers.join(", ")
        };
        out.push_str(&format!("{service:<24} {callers}\n"));
    }
    out.trim_end().to_owned()
}

/// An admin write with the token, if given; its JSON answer, an error status an error.
async fn write(mut request: reqwest::RequestBuilder, token: Option<&str>) -> anyhow::Result<Value> {
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        anyhow::bail!("{status}: {}", text.trim());
    }
    Ok(serde_json::from_str(&text)?)
}

/// A JSON read of the admin API; an error status is an error.
async fn get_json(client: &reqwest::Client, url: String) -> anyhow::Result<Value> {
    Ok(client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// One line per legacy source; `now` dates the last successful exchange.
fn sync_table(sources: &[Value], now: i64) -> String {
    if sources.is_empty() {
        return "no legacy registry is synced (--sync-eureka, --sync-consul)".to_owned();
    }
    let mut lines = vec![format!(
        "{:<14} {:<10} {:<9} {:>8} {:>6} {:>8} {:>8} {:>7}  {:<36} LAST ERROR",
        "SOURCE",
        "REACHABLE",
        "LAST OK",
        "IMPORTED",
        "STALE",
        "PENDING",
        "EXPORTED",
        "ERRORS",
        "ENDPOINT"
    )];
    for source in sources {
        let count = |key: &str| source[key].as_u64().unwrap_or(0);
        let last_ok = source["last_success"]
            .as_i64()
            .map(|at| format!("{}s ago", (now - at).max(0) / 1000))
            .unwrap_or_else(|| "never".to_owned());
        lines.push(format!(
            "{:<14} {:<10} {:<9} {:>8} {:>6} {:>8} {:>8} {:>7}  {:<36} {}",
            source["name"].as_str().unwrap_or(""),
            if source["reachable"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            last_ok,
            count("imported"),
            count("stale"),
            count("pending_removals"),
            count("exported"),
            count("errors"),
            source["current_endpoint"].as_str().unwrap_or("-"),
            source["last_error"].as_str().unwrap_or("-"),
        ));
    }
    lines.join("\n")
}

/// One line per event, newest first, its time as UTC `HH:MM:SS`.
fn events_table(page: &Value) -> String {
    let events = page["events"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if events.is_empty() {
        return "no events".to_owned();
    }
    let mut lines = vec![format!(
        "{:<8}  {:<12} {:<24} {:<32} DETAIL",
        "TIME", "KIND", "SERVICE", "INSTANCE"
    )];
    for event in events {
        let time = event["at_ms"]
            .as_i64()
            .map(utc_time_of_day)
            .unwrap_or_else(|| "-".to_owned());
        lines.push(format!(
            "{:<8}  {:<12} {:<24} {:<32} {}",
            time,
            event["kind"].as_str().unwrap_or(""),
            event["service"].as_str().unwrap_or(""),
            event["instance"].as_str().unwrap_or("-"),
            event["detail"].as_str().unwrap_or(""),
        ));
    }
    lines.join("\n")
}

/// `HH:MM:SS` in UTC: the time of day of epoch milliseconds, whatever the local zone.
fn utc_time_of_day(at_ms: i64) -> String {
    let seconds = at_ms.div_euclid(1000).rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// One line per node, `*` before the node that answered; `now` dates starts and refreshes.
fn nodes_table(nodes: &[Value], now: i64) -> String {
    let mut lines = vec![format!(
        "  {:<20} {:<10} {:<24} {:>10} {:>9} {:>9}  {}",
        "NODE", "STARTED", "ENDPOINT", "APPLIED", "INSTANCES", "REFRESHED", "INBOUND"
    )];
    for node in nodes {
        let ago = |key: &str| {
            node[key]
                .as_i64()
                .map(|at| format!("{} ago", elapsed((now - at).max(0) / 1000)))
                .unwrap_or_else(|| "-".to_owned())
        };
        let refreshed = node["refreshed_seconds_ago"]
            .as_u64()
            .map(|seconds| format!("{seconds}s ago"))
            .unwrap_or_else(|| "-".to_owned());
        lines.push(format!(
            "{} {:<20} {:<10} {:<24} {:>10} {:>9} {:>9}  {}",
            if node["self"].as_bool() == Some(true) {
                "*"
            } else {
                " "
            },
            node["node"].as_str().unwrap_or(""),
            ago("started_ms"),
            node["endpoint"].as_str().unwrap_or("-"),
            node["applied_revision"].as_u64().unwrap_or(0),
            node["instances_kept"].as_u64().unwrap_or(0),
            refreshed,
            node["inbound"].as_str().unwrap_or("-"),
        ));
    }
    lines.join("\n")
}

/// `42s`, `17m`, `5h`, `3d`: enough to tell a node that restarted from one that did not.
fn elapsed(seconds: i64) -> String {
    match seconds {
        ..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        3600..86400 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86400),
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

fn table(services: &[Value]) -> String {
    let mut lines = vec![format!(
        "{:<24} {:<7} {:<6} INSTANCES",
        "SERVICE", "MODE", "PORT"
    )];
    for service in services {
        let instances: Vec<String> = service["instances"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|instance| {
                let mut text = format!(
                    "{} {}",
                    instance["address"].as_str().unwrap_or(""),
                    instance["status"].as_str().unwrap_or("")
                );
                if instance["ejected"].as_bool() == Some(true) {
                    text.push_str(" (ejected)");
                }
                text
            })
            .collect();
        lines.push(format!(
            "{:<24} {:<7} {:<6} {}",
            service["name"].as_str().unwrap_or(""),
            service["mode"].as_str().unwrap_or(""),
            service["port"]
                .as_u64()
                .map(|port| port.to_string())
                .unwrap_or_else(|| "-".into()),
            instances.join(", ")
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_listed_newest_first_at_their_utc_time() {
        let table = events_table(&json!({"latest": 2, "events": [
            {"seq": 2, "at": "2025-12-01T05:40:00.123Z", "at_ms": 1_764_567_600_123_i64,
             "kind": "status", "service": "ORDERS", "instance": "orders-1",
             "detail": "UP → OUT_OF_SERVICE"},
            {"seq": 1, "at": "2025-11-30T23:59:59.999Z", "at_ms": 1_764_547_199_999_i64,
             "kind": "cutover", "service": "ORDERS", "instance": null,
             "detail": "legacy → mesh at 127.0.0.1:15001"},
        ]}));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("TIME"), "{table}");
        assert!(lines[1].starts_with("05:40:00  status"), "{table}");
        assert!(lines[1].contains("orders-1") && lines[1].ends_with("UP → OUT_OF_SERVICE"));
        assert!(lines[2].starts_with("23:59:59  cutover"), "{table}");
        assert!(lines[2].contains(" - "), "no instance is a dash: {table}");
        assert_eq!(
            events_table(&json!({"latest": 0, "events": []})),
            "no events"
        );
    }

    #[test]
    fn the_node_answering_is_starred_and_ages_are_relative() {
        let now = 10_000_000;
        let table = nodes_table(
            &[
                json!({"node": "ferry-a", "self": true, "started_ms": now - 3_700_000,
                       "endpoint": "127.0.0.1:23791", "applied_revision": 812,
                       "instances_kept": 40, "refreshed_seconds_ago": 2,
                       "inbound": "198.18.0.1:15006"}),
                json!({"node": "ferry-b", "self": false, "started_ms": now - 90_000,
                       "endpoint": "127.0.0.1:23792", "applied_revision": 811,
                       "instances_kept": 12, "refreshed_seconds_ago": 4}),
            ],
            now,
        );
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[1].starts_with("* ferry-a"), "{table}");
        assert!(
            lines[1].contains("1h ago") && lines[1].contains("812"),
            "{table}"
        );
        assert!(lines[1].ends_with("198.18.0.1:15006"), "{table}");
        assert!(lines[2].starts_with("  ferry-b"), "{table}");
        assert!(lines[2].ends_with('-'), "{table}");
        assert!(
            lines[2].contains("1m ago") && lines[2].contains("4s ago"),
            "{table}"
        );
    }
}
