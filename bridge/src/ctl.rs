//! `ferry ctl --admin HOST:PORT ...`: the command line over the admin API, for operators
//! and scripts. `cutover SERVICE mesh|legacy` is the form scripts rely on; `sync` shows
//! the legacy registries Ferry syncs with; `nodes` the nodes sharing the registry; `allow`
//! sidecar mode's allow rules; `events` what happened.
//!
//! Scripts get two things from it: `--output json`, which prints one JSON document on
//! stdout (the API's answer as is; `service` adds the traffic figures read from
//! `/metrics`), and exit codes that tell what went wrong without parsing text (`CtlError`:
//! 3 not found, 4 refused, 5 unreachable, 2 usage, 1 anything else). On an error stdout
//! stays empty, so a script that parses it never reads half an answer.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use crate::cli::{CtlAction, CtlCommand, Output};
use crate::traffic::Traffic;

/// How long a connection to the admin API may take to open: a ferry on a reachable host
/// accepts at once, so a script learns of a dead address in seconds, not minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long one request may take in all; a cutover waits for the shared store, which
/// answers within its own timeouts well under this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a `ferry ctl` command failed; each kind has its own exit code (`exit_code`).
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The command line asks for something that cannot be sent (a bad `--admin`, an
    /// `allow` without callers): exit 2, as clap's own usage errors.
    #[error("{0}")]
    Usage(String),
    /// The admin API answered with an error status.
    #[error("{request}: {status}{}", colon_before(.text))]
    Status {
        request: String,
        status: StatusCode,
        text: String,
    },
    /// No connection to the admin API: refused, no such host, or timed out.
    #[error("{request}: the admin API cannot be reached")]
    Unreachable {
        request: String,
        #[source]
        source: reqwest::Error,
    },
    /// The connection broke after it was made.
    #[error("{request}: the exchange with the admin API failed")]
    Broken {
        request: String,
        #[source]
        source: reqwest::Error,
    },
    /// The answer is not what the API sends.
    #[error("{request}: {detail}")]
    BadAnswer { request: String, detail: String },
}

impl CtlError {
    /// The process exit code scripts branch on (README, "Command line").
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => 2,
            CtlError::Status { status, .. } => exit_code_of_status(*status),
            CtlError::Unreachable { .. } => 5,
            CtlError::Broken { .. } | CtlError::BadAnswer { .. } => 1,
        }
    }

    /// A failed exchange, by what failed: opening the connection (or waiting too long) is
    /// "unreachable", anything later a broken exchange.
    fn transport(request: String, source: reqwest::Error) -> CtlError {
        if source.is_connect() || source.is_timeout() {
            CtlError::Unreachable { request, source }
        } else {
            CtlError::Broken { request, source }
        }
    }
}

/// 404 is "not found" (3), 401 and 403 "refused" (4); any other error status is 1.
fn exit_code_of_status(status: StatusCode) -> u8 {
    match status {
        StatusCode::NOT_FOUND => 3,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => 4,
        _ => 1,
    }
}

/// `: TEXT`, or nothing for an empty body.
fn colon_before(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

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
        Ok(output) => match writeln!(std::io::stdout().lock(), "{output}") {
            Ok(()) => ExitCode::SUCCESS,
            // The reader is gone (`| head`): there is no one left to tell.
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::FAILURE,
            Err(error) => {
                eprintln!("ferry ctl: cannot write the answer: {error}");
                ExitCode::FAILURE
            }
        },
        Err(error) => {
            let code = error.exit_code();
            // With its causes (`: tcp connect error: Connection refused`): reqwest's own
            // message names only the URL.
            eprintln!("ferry ctl: {:#}", anyhow::Error::from(error));
            ExitCode::from(code)
        }
    }
}

/// The admin API of one ferry: its base URL, the token for writes, one client.
struct AdminApi {
    base: Url,
    token: Option<String>,
    client: reqwest::Client,
}

impl AdminApi {
    fn new(admin: &str, token: Option<String>) -> Result<AdminApi, CtlError> {
        let text = if admin.contains("://") {
            admin.to_owned()
        } else {
            format!("http://{admin}")
        };
        let base = Url::parse(&text)
            .ok()
            .filter(|base| !base.cannot_be_a_base())
            .ok_or_else(|| {
                CtlError::Usage(format!("--admin `{admin}` is neither HOST:PORT nor a URL"))
            })?;
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|error| CtlError::Usage(format!("cannot make an HTTP client: {error}")))?;
        Ok(AdminApi {
            base,
            token,
            client,
        })
    }

    /// The URL of `segments` under the base, each segment escaped (a service name is one).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends a request; the body of a success, or the error status with the API's text.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
    ) -> Result<String, CtlError> {
        let request = format!("{method} {url}");
        let mut builder = self.client.request(method.clone(), url);
        if method != Method::GET {
            if let Some(token) = &self.token {
                builder = builder.bearer_auth(token);
            }
        }
        if let Some(body) = body {
            builder = builder.json(&body);
        }
        let response = builder
            .send()
            .await
            .map_err(|source| CtlError::transport(request.clone(), source))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|source| CtlError::transport(request.clone(), source))?;
        if !status.is_success() {
            return Err(CtlError::Status {
                request,
                status,
                text: text.trim().to_owned(),
            });
        }
        Ok(text)
    }

    async fn json(&self, method: Method, url: Url, body: Option<Value>) -> Result<Value, CtlError> {
        let request = format!("{method} {url}");
        let text = self.send(method, url, body).await?;
        serde_json::from_str(&text).map_err(|error| CtlError::BadAnswer {
            request,
            detail: format!("the answer is not JSON ({error})"),
        })
    }

    async fn get_json(&self, segments: &[&str]) -> Result<Value, CtlError> {
        self.json(Method::GET, self.url(segments), None).await
    }
}

/// A JSON document as scripts read it: one document, indented for people who look.
fn document(value: &Value) -> String {
    format!("{value:#}")
}

/// A list the API answered: the JSON document itself, or the table `render` makes of it.
fn shown(list: &Value, json: bool, render: impl FnOnce(&[Value]) -> String) -> String {
    if json {
        document(list)
    } else {
        render(list.as_array().map(Vec::as_slice).unwrap_or_default())
    }
}

async fn execute(command: &CtlCommand) -> Result<String, CtlError> {
    let api = AdminApi::new(&command.admin, command.token.clone())?;
    let json = command.output == Output::Json;
    match &command.action {
        CtlAction::Services => Ok(shown(
            &api.get_json(&["api", "services"]).await?,
            json,
            table,
        )),
        CtlAction::Service { name } => {
            let service = api.get_json(&["api", "services", name.as_str()]).await?;
            let metrics = api.send(Method::GET, api.url(&["metrics"]), None).await?;
            let traffic = Traffic::parse(&metrics, &name.to_ascii_uppercase());
            Ok(if json {
                // The service as `GET /api/services/NAME` shows it, and its traffic
                // figures as `/metrics` holds them (README, "Command line").
                document(&serde_json::json!({
                    "service": service,
                    "traffic": traffic.json(),
                }))
            } else {
                format!(
                    "{}\n\n{}",
                    table(std::slice::from_ref(&service)),
                    traffic.render()
                )
            })
        }
        CtlAction::Events { limit, service } => {
            let mut url = api.url(&["api", "events"]);
            url.query_pairs_mut()
                .append_pair("limit", &limit.to_string());
            if let Some(service) = service {
                url.query_pairs_mut().append_pair("service", service);
            }
            let events = api.json(Method::GET, url, None).await?;
            Ok(if json {
                document(&events)
            } else {
                events_table(&events)
            })
        }
        CtlAction::Sync => Ok(shown(
            &api.get_json(&["api", "sync"]).await?,
            json,
            |sources| sync_table(sources, now_millis()),
        )),
        CtlAction::Nodes => Ok(shown(
            &api.get_json(&["api", "nodes"]).await?,
            json,
            |nodes| nodes_table(nodes, now_millis()),
        )),
        CtlAction::Allow {
            service: None,
            callers,
            any,
        } => {
            if !callers.is_empty() || *any {
                return Err(CtlError::Usage(
                    "name the service the rule is for: `allow SERVICE CALLER...`".to_owned(),
                ));
            }
            let rules = api.get_json(&["api", "allow"]).await?;
            Ok(if json {
                document(&rules)
            } else {
                allow_table(&rules)
            })
        }
        CtlAction::Allow {
            service: Some(service),
            callers,
            any,
        } => {
            if callers.is_empty() && !*any {
                return Err(CtlError::Usage(format!(
                    "name the callers (`allow {service} CHECKOUT node:gateway-1`), or \
                     `allow {service} --any` to let every node call it"
                )));
            }
            let url = api.url(&["api", "allow", service.as_str()]);
            let rule = if *any {
                api.json(Method::DELETE, url, None).await?
            } else {
                let body = serde_json::json!({ "callers": callers });
                api.json(Method::PUT, url, Some(body)).await?
            };
            if json {
                return Ok(document(&rule));
            }
            let service = rule["service"].as_str().unwrap_or(service);
            Ok(match rule["callers"].as_array() {
                Some(callers) => format!(
                    "{service} may be called by {}",
                    callers
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => format!("{service} may be called by any node"),
            })
        }
        CtlAction::Cutover { service, mode } => {
            let body = serde_json::json!({ "mode": mode.as_str() });
            let moved = api
                .json(
                    Method::PUT,
                    api.url(&["api", "services", service.as_str()]),
                    Some(body),
                )
                .await?;
            Ok(if json {
                document(&moved)
            } else {
                format!(
                    "{} is now {} (port {})",
                    moved["name"].as_str().unwrap_or(service),
                    moved["mode"].as_str().unwrap_or("?"),
                    moved["port"]
                )
            })
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
    fn statuses_map_to_the_exit_codes_scripts_branch_on() {
        let code = |status: u16| {
            CtlError::Status {
                request: "GET http://127.0.0.1:15000/api/services/NOPE".into(),
                status: StatusCode::from_u16(status).unwrap(),
                text: String::new(),
            }
            .exit_code()
        };
        assert_eq!(code(404), 3, "not found");
        assert_eq!(code(401), 4, "no token");
        assert_eq!(code(403), 4, "a wrong token, or writes off");
        for other in [400, 405, 409, 500, 502, 503] {
            assert_eq!(code(other), 1, "{other}");
        }
        assert_eq!(
            CtlError::Usage("allow without callers".into()).exit_code(),
            2
        );
        let bad = CtlError::BadAnswer {
            request: "GET /api/sync".into(),
            detail: "not JSON".into(),
        };
        assert_eq!(bad.exit_code(), 1);
    }

    #[test]
    fn an_error_names_the_request_the_status_and_the_apis_text() {
        let error = CtlError::Status {
            request: "PUT http://127.0.0.1:15000/api/services/orders".into(),
            status: StatusCode::FORBIDDEN,
            text: "the admin token is not valid".into(),
        };
        assert_eq!(
            error.to_string(),
            "PUT http://127.0.0.1:15000/api/services/orders: 403 Forbidden: the admin token is not valid"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_unreachable() {
        // A port that was just free: nothing listens there, so the connect is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let api = AdminApi::new(&format!("127.0.0.1:{port}"), None).unwrap();
        let error = api.get_json(&["api", "services"]).await.unwrap_err();
        assert!(matches!(error, CtlError::Unreachable { .. }), "{error:?}");
        assert_eq!(error.exit_code(), 5);
        assert!(error.to_string().contains("cannot be reached"), "{error}");
        let shown = format!("{:#}", anyhow::Error::from(error));
        assert!(
            shown.contains("Connection refused"),
            "the cause is shown: {shown}"
        );
    }

    #[test]
    fn an_admin_address_that_is_no_url_is_a_usage_error() {
        let Err(error) = AdminApi::new("mailto:someone", None) else {
            panic!("a URL that cannot be a base was taken");
        };
        assert_eq!(error.exit_code(), 2);
        let api = AdminApi::new("127.0.0.1:15000", None).unwrap();
        assert_eq!(
            api.url(&["api", "services", "a b/c"]).as_str(),
            "http://127.0.0.1:15000/api/services/a%20b%2Fc"
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
