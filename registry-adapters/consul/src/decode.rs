//! Reads Consul request bodies into the model. Consul decodes with Go's rules, so field
//! names match case-insensitively, snake_case spellings are accepted (`service_id`), and a
//! JSON `null` means the field is absent (new Spring Cloud Consul sends every unset field
//! as `null`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};

use super::duration;
use super::error::ConsulError;
use ferry_core::kv::{Behavior, SessionRequest};
use ferry_core::model::{Check, Health, Instance, Probe, Registration, Status};

/// A field by any spelling: case and underscores do not matter.
pub fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let wanted = normalize(name);
    object
        .iter()
        .find(|(key, _)| normalize(key) == wanted)
        .map(|(_, value)| value)
        .filter(|value| !value.is_null())
}

fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn bad(reason: impl Into<String>) -> ConsulError {
    ConsulError::BadRequest(reason.into())
}

pub fn parse_body(body: &[u8]) -> Result<Value, ConsulError> {
    serde_json::from_slice(body).map_err(|error| bad(format!("Request decode failed: {error}")))
}

fn string(object: &Map<String, Value>, name: &str) -> Result<Option<String>, ConsulError> {
    match field(object, name) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(bad(format!(
            "Request decode failed: {name} must be a string"
        ))),
    }
}

fn number(object: &Map<String, Value>, name: &str) -> Result<Option<u64>, ConsulError> {
    match field(object, name) {
        None => Ok(None),
        Some(Value::Number(number)) => number.as_u64().map(Some).ok_or_else(|| {
            bad(format!(
                "Request decode failed: {name} must be a non-negative integer"
            ))
        }),
        Some(_) => Err(bad(format!(
            "Request decode failed: {name} must be a number"
        ))),
    }
}

fn boolean(object: &Map<String, Value>, name: &str) -> Result<bool, ConsulError> {
    match field(object, name) {
        None => Ok(false),
        Some(Value::Bool(flag)) => Ok(*flag),
        Some(_) => Err(bad(format!(
            "Request decode failed: {name} must be true or false"
        ))),
    }
}

fn go_duration(object: &Map<String, Value>, name: &str) -> Result<Option<Duration>, ConsulError> {
    match field(object, name) {
        None => Ok(None),
        Some(Value::String(text)) if text.trim().is_empty() => Ok(None),
        Some(Value::String(text)) => duration::parse(text).map(Some).ok_or_else(|| {
            bad(format!(
                "Request decode failed: {name}: invalid duration {text:?}"
            ))
        }),
        // Go's encoding of a time.Duration as a number: nanoseconds.
        Some(Value::Number(nanos)) => Ok(nanos.as_u64().map(Duration::from_nanos)),
        Some(_) => Err(bad(format!(
            "Request decode failed: {name} must be a duration"
        ))),
    }
}

fn string_map(
    object: &Map<String, Value>,
    name: &str,
) -> Result<BTreeMap<String, String>, ConsulError> {
    match field(object, name) {
        None => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .filter(|(_, value)| !value.is_null())
            .map(|(key, value)| match value {
                Value::String(text) => Ok((key.clone(), text.clone())),
                _ => Err(bad(format!(
                    "Request decode failed: {name} values must be strings"
                ))),
            })
            .collect(),
        Some(_) => Err(bad(format!(
            "Request decode failed: {name} must be an object"
        ))),
    }
}

/// `Meta` limits of Consul (spec §4).
fn validate_meta(meta: &BTreeMap<String, String>) -> Result<(), ConsulError> {
    let invalid = |reason: String| bad(format!("Invalid Service Meta: {reason}"));
    if meta.len() > 64 {
        return Err(invalid(
            "Node metadata cannot contain more than 64 key/value pairs".into(),
        ));
    }
    for (key, value) in meta {
        if key.is_empty()
            || key.len() > 128
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(format!("Key {key:?} is invalid")));
        }
        if key.starts_with("consul-") {
            return Err(invalid(format!(
                "Key {key:?} uses the reserved prefix \"consul-\""
            )));
        }
        if value.len() > 512 {
            return Err(invalid(format!(
                "Value for key {key:?} is too long (limit: 512 characters)"
            )));
        }
    }
    Ok(())
}

/// A `PUT /v1/agent/service/register` body as an agent instance. `node_address` stands in
/// for an empty `Address`, so every view has an address to hand out.
pub fn service_registration(body: &Value, node_address: &str) -> Result<Instance, ConsulError> {
    let object = body
        .as_object()
        .ok_or_else(|| bad("Request decode failed: the body must be a JSON object"))?;
    let name = string(object, "Name")?
        .filter(|name| !name.trim().is_empty())
        .ok_or_else(|| bad("Missing service name"))?;
    let id = string(object, "ID")?
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| name.clone());
    let address = string(object, "Address")?.unwrap_or_default();
    if matches!(address.trim(), "0.0.0.0" | "::" | "[::]") {
        return Err(bad("Invalid service address"));
    }
    let port = number(object, "Port")?.unwrap_or(0);
    let port =
        u32::try_from(port).map_err(|_| bad("Request decode failed: Port is out of range"))?;
    let host = if address.is_empty() {
        node_address.to_owned()
    } else {
        address
    };
    let mut instance = Instance::new(&name, &id, &host, &host, port);
    // Consul keeps the name's case (it only matches it without case).
    instance.name = Some(name.clone());
    instance.registration = Registration::Agent;
    instance.metadata = string_map(object, "Meta")?;
    validate_meta(&instance.metadata)?;
    instance.tags = tags(object)?;
    instance.enable_tag_override = boolean(object, "EnableTagOverride")?;
    if let Some(Value::Object(weights)) = field(object, "Weights") {
        let passing = number(weights, "Passing")?.unwrap_or(1);
        let warning = number(weights, "Warning")?.unwrap_or(1);
        instance.weights = (
            passing.min(u32::MAX as u64) as u32,
            warning.min(u32::MAX as u64) as u32,
        );
    }
    if let Some(Value::Object(tagged)) = field(object, "TaggedAddresses") {
        for (network, entry) in tagged {
            if let Value::Object(entry) = entry {
                let address = string(entry, "Address")?.unwrap_or_default();
                let port = number(entry, "Port")?.unwrap_or(0).min(u32::MAX as u64) as u32;
                instance
                    .tagged_addresses
                    .insert(network.clone(), (address, port));
            }
        }
    }
    instance.virtual_address = Some(name.to_ascii_lowercase());
    instance.secure_virtual_address = Some(name.to_ascii_lowercase());

    let mut definitions: Vec<&Map<String, Value>> = Vec::new();
    if let Some(check) = field(object, "Check") {
        let check = check
            .as_object()
            .ok_or_else(|| bad("Request decode failed: Check must be an object"))?;
        if has_probe(check) {
            definitions.push(check);
        }
    }
    match field(object, "Checks") {
        None => {}
        Some(Value::Array(checks)) => {
            for check in checks.iter().filter(|check| !check.is_null()) {
                let check = check
                    .as_object()
                    .ok_or_else(|| bad("Request decode failed: Checks must hold objects"))?;
                if has_probe(check) {
                    definitions.push(check);
                }
            }
        }
        Some(_) => return Err(bad("Request decode failed: Checks must be a list")),
    }
    let total = definitions.len();
    for (position, definition) in definitions.into_iter().enumerate() {
        let default_id = if total == 1 {
            format!("service:{id}")
        } else {
            format!("service:{id}:{}", position + 1)
        };
        instance.checks.push(check(
            definition,
            &default_id,
            &format!("Service '{name}' check"),
        )?);
    }
    Ok(instance)
}

fn tags(object: &Map<String, Value>) -> Result<Vec<String>, ConsulError> {
    match field(object, "Tags") {
        None => Ok(Vec::new()),
        Some(Value::Array(tags)) => tags
            .iter()
            .filter(|tag| !tag.is_null())
            .map(|tag| {
                tag.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad("Request decode failed: Tags must be strings"))
            })
            .collect(),
        Some(_) => Err(bad("Request decode failed: Tags must be a list")),
    }
}

/// The check id Consul gives a service's maintenance mode, before the service id.
pub const SERVICE_MAINTENANCE_PREFIX: &str = "_service_maintenance:";
/// The check id of the node's maintenance mode.
pub const NODE_MAINTENANCE: &str = "_node_maintenance";

/// The status an instance publishes from its checks (id and state), the rule
/// `Instance::status_from_checks` applies to Ferry's own agent instances: maintenance (of
/// the service or its node) is out of service, any critical check is down, warning still
/// serves.
pub fn status_from_check_states<'a>(checks: impl IntoIterator<Item = (&'a str, Health)>) -> Status {
    let mut worst = Health::Passing;
    for (id, health) in checks {
        if id.starts_with(SERVICE_MAINTENANCE_PREFIX) || id == NODE_MAINTENANCE {
            return Status::OutOfService;
        }
        worst = worst.max(health);
    }
    if worst == Health::Critical {
        Status::Down
    } else {
        Status::Up
    }
}

/// One row of a Consul server's `/v1/health/service/<name>` (`Node`, `Service`, `Checks`)
/// as an instance: the app is the name in upper case, `name` keeps its spelling, the
/// address is the service's or else its node's, and the status comes from every check of
/// the row, the node's included (`status_from_check_states`). A row without a service
/// name or id, or without a port, is refused.
pub fn health_entry(entry: &Value) -> Result<Instance, ConsulError> {
    let object = entry
        .as_object()
        .ok_or_else(|| bad("health entry: not a JSON object"))?;
    let service = match field(object, "Service") {
        Some(Value::Object(service)) => service,
        _ => return Err(bad("health entry: no Service object")),
    };
    let name = string(service, "Service")?
        .filter(|name| !name.trim().is_empty())
        .ok_or_else(|| bad("health entry: the service has no name"))?;
    let id = string(service, "ID")?
        .filter(|id| !id.is_empty())
        .ok_or_else(|| bad(format!("health entry of {name}: the service has no ID")))?;
    let port = number(service, "Port")?
        .filter(|port| (1..=65535).contains(port))
        .ok_or_else(|| bad(format!("health entry {name}/{id}: no usable port")))?;
    let node_address = match field(object, "Node") {
        Some(Value::Object(node)) => string(node, "Address")?.unwrap_or_default(),
        _ => String::new(),
    };
    let address = string(service, "Address")?
        .filter(|address| !address.is_empty())
        .unwrap_or(node_address);
    if address.is_empty() {
        return Err(bad(format!("health entry {name}/{id}: no address")));
    }
    let mut states = Vec::new();
    match field(object, "Checks") {
        None => {}
        Some(Value::Array(checks)) => {
            for check in checks {
                let check = check.as_object().ok_or_else(|| {
                    bad(format!(
                        "health entry {name}/{id}: a check is not an object"
                    ))
                })?;
                let check_id = string(check, "CheckID")?.unwrap_or_default();
                let status = string(check, "Status")?.unwrap_or_default();
                let health = Health::parse(&status).ok_or_else(|| {
                    bad(format!("health entry {name}/{id}: check status {status:?}"))
                })?;
                states.push((check_id, health));
            }
        }
        Some(_) => {
            return Err(bad(format!(
                "health entry {name}/{id}: Checks is not a list"
            )))
        }
    }
    let mut instance = Instance::new(&name, &id, &address, &address, port as u32);
    instance.virtual_address = Some(name.to_ascii_lowercase());
    instance.secure_virtual_address = Some(name.to_ascii_lowercase());
    instance.name = Some(name);
    instance.tags = tags(service)?;
    instance.metadata = string_map(service, "Meta")?;
    instance.status =
        status_from_check_states(states.iter().map(|(id, health)| (id.as_str(), *health)));
    Ok(instance)
}

/// Whether a check object names any probe at all; one with none is ignored (Spring sends a
/// `Check` of nulls when it registers no health check).
fn has_probe(check: &Map<String, Value>) -> bool {
    [
        "TTL",
        "HTTP",
        "TCP",
        "Args",
        "ScriptArgs",
        "DockerContainerID",
        "GRPC",
        "H2PING",
        "UDP",
        "OSService",
        "AliasService",
    ]
    .iter()
    .any(|name| field(check, name).is_some_and(|value| value.as_str() != Some("")))
}

/// One check definition.
pub fn check(
    definition: &Map<String, Value>,
    default_id: &str,
    default_name: &str,
) -> Result<Check, ConsulError> {
    let invalid = |reason: &str| bad(format!("Invalid check: {reason}"));
    for (name, kind) in [
        ("Args", "script"),
        ("ScriptArgs", "script"),
        ("DockerContainerID", "docker"),
        ("GRPC", "grpc"),
        ("H2PING", "h2ping"),
        ("UDP", "udp"),
        ("OSService", "os_service"),
        ("AliasService", "alias"),
    ] {
        if field(definition, name).is_some() {
            return Err(invalid(&format!("{kind} checks are not supported")));
        }
    }
    let interval = go_duration(definition, "Interval")?;
    let timeout = go_duration(definition, "Timeout")?.unwrap_or(Duration::from_secs(10));
    let probe = if let Some(ttl) = go_duration(definition, "TTL")? {
        if ttl.is_zero() {
            return Err(invalid("TTL must be > 0"));
        }
        Probe::Ttl { ttl }
    } else if let Some(url) = string(definition, "HTTP")?.filter(|url| !url.is_empty()) {
        let interval = interval
            .filter(|interval| !interval.is_zero())
            .ok_or_else(|| invalid("Interval must be > 0 for HTTP checks"))?;
        let headers = match field(definition, "Header") {
            None => BTreeMap::new(),
            Some(Value::Object(headers)) => headers
                .iter()
                .map(|(name, values)| {
                    let values = match values {
                        Value::Array(values) => values
                            .iter()
                            .filter_map(|value| value.as_str().map(str::to_owned))
                            .collect(),
                        Value::String(value) => vec![value.clone()],
                        _ => Vec::new(),
                    };
                    (name.clone(), values)
                })
                .collect(),
            Some(_) => return Err(invalid("Header must be an object of lists")),
        };
        Probe::Http {
            url,
            method: string(definition, "Method")?
                .filter(|method| !method.is_empty())
                .unwrap_or_else(|| "GET".to_owned()),
            headers,
            body: string(definition, "Body")?,
            interval,
            timeout,
            tls_skip_verify: boolean(definition, "TLSSkipVerify")?,
        }
    } else if let Some(address) = string(definition, "TCP")?.filter(|address| !address.is_empty()) {
        let interval = interval
            .filter(|interval| !interval.is_zero())
            .ok_or_else(|| invalid("Interval must be > 0 for TCP checks"))?;
        Probe::Tcp {
            address,
            interval,
            timeout,
        }
    } else {
        return Err(invalid("TTL or HTTP/TCP with an Interval is required"));
    };
    let status = match string(definition, "Status")? {
        None => Health::Critical,
        Some(text) if text.is_empty() => Health::Critical,
        Some(text) => {
            Health::parse(&text).ok_or_else(|| bad(format!("Invalid check status: {text:?}")))?
        }
    };
    let id = string(definition, "CheckID")?
        .or(string(definition, "ID")?)
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| default_id.to_owned());
    Ok(Check {
        id,
        name: string(definition, "Name")?
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| default_name.to_owned()),
        status,
        notes: string(definition, "Notes")?.unwrap_or_default(),
        output: String::new(),
        probe,
        deregister_critical_after: go_duration(definition, "DeregisterCriticalServiceAfter")?,
        successes_before_passing: number(definition, "SuccessBeforePassing")?
            .unwrap_or(0)
            .clamp(1, 1000) as u32,
        failures_before_critical: number(definition, "FailuresBeforeCritical")?
            .unwrap_or(0)
            .clamp(1, 1000) as u32,
        create_index: 0,
        modify_index: 0,
        critical_since: None,
    })
}

/// A `PUT /v1/session/create` body (optional).
pub fn session_request(body: &[u8]) -> Result<SessionRequest, ConsulError> {
    let mut request = SessionRequest {
        name: String::new(),
        ttl: None,
        behavior: Behavior::Release,
        lock_delay: Duration::from_secs(15),
        node_checks: vec!["serfHealth".to_owned()],
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(request);
    }
    let value = parse_body(body)?;
    let object = value
        .as_object()
        .ok_or_else(|| bad("Request decode failed: the body must be a JSON object"))?;
    request.name = string(object, "Name")?.unwrap_or_default();
    if let Some(ttl) = go_duration(object, "TTL")? {
        if !ttl.is_zero() && !(Duration::from_secs(10)..=Duration::from_secs(86400)).contains(&ttl)
        {
            return Err(bad(format!(
                "Invalid Session TTL '{}', must be between [10s=24h0m0s]",
                duration::format(ttl)
            )));
        }
        request.ttl = (!ttl.is_zero()).then_some(ttl);
    }
    request.behavior = match string(object, "Behavior")?.as_deref() {
        None | Some("") | Some("release") => Behavior::Release,
        Some("delete") => Behavior::Delete,
        Some(other) => return Err(bad(format!("Invalid Behavior setting '{other}'"))),
    };
    if let Some(delay) = go_duration(object, "LockDelay")? {
        request.lock_delay = delay;
    }
    for name in ["Checks", "NodeChecks"] {
        if let Some(Value::Array(checks)) = field(object, name) {
            request.node_checks = checks
                .iter()
                .filter_map(|check| check.as_str().map(str::to_owned))
                .collect();
        }
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn fields_match_in_any_case_and_nulls_are_absent() {
        let spring = json!({"ID":"orders-8080","Name":"orders","Tags":[],"Address":"10.0.0.5","Meta":{"secure":"false"},
            "Port":8080,"EnableTagOverride":null,
            "Check":{"Interval":"10s","HTTP":"http://10.0.0.5:8080/actuator/health","Header":{},
                     "Timeout":null,"TTL":null,"DeregisterCriticalServiceAfter":null,"TLSSkipVerify":null},
            "Checks":null});
        let instance = service_registration(&spring, "127.0.0.1").unwrap();
        assert_eq!(
            (
                instance.app.as_str(),
                instance.id.as_str(),
                instance.port.number
            ),
            ("ORDERS", "orders-8080", 8080)
        );
        assert_eq!(instance.checks.len(), 1);
        assert_eq!(instance.checks[0].id, "service:orders-8080");
        assert_eq!(instance.checks[0].status, Health::Critical);

        let python = json!({"name":"billing","id":"b1","port":9000,"checks":[{"ttl":"10s"},{"http":"http://x/","interval":"5s"}]});
        let instance = service_registration(&python, "127.0.0.1").unwrap();
        let ids: Vec<&str> = instance
            .checks
            .iter()
            .map(|check| check.id.as_str())
            .collect();
        assert_eq!(ids, vec!["service:b1:1", "service:b1:2"]);
        assert_eq!(
            instance.ip_addr, "127.0.0.1",
            "an empty address falls back to the node's"
        );
    }

    #[test]
    fn a_health_row_is_an_instance_with_its_checks_status() {
        let row = json!({
            "Node": {"Node": "n1", "Address": "10.0.0.9"},
            "Service": {"ID": "inv-1", "Service": "Inventory", "Tags": ["v2"], "Address": "",
                        "Meta": {"zone": "a"}, "Port": 9090},
            "Checks": [{"CheckID": "serfHealth", "Status": "passing"},
                       {"CheckID": "service:inv-1", "Status": "warning"}]
        });
        let instance = health_entry(&row).unwrap();
        assert_eq!(
            (
                instance.app.as_str(),
                instance.name.as_deref(),
                instance.id.as_str()
            ),
            ("INVENTORY", Some("Inventory"), "inv-1")
        );
        assert_eq!(
            (instance.ip_addr.as_str(), instance.port.number),
            ("10.0.0.9", 9090)
        );
        assert_eq!(instance.tags, vec!["v2"]);
        assert_eq!(instance.metadata.get("zone").map(String::as_str), Some("a"));
        assert_eq!(instance.status, Status::Up, "warning still serves");

        let states =
            |checks: &[(&'static str, Health)]| status_from_check_states(checks.iter().copied());
        assert_eq!(states(&[("c", Health::Critical)]), Status::Down);
        assert_eq!(
            states(&[
                ("c", Health::Passing),
                ("_service_maintenance:inv-1", Health::Critical)
            ]),
            Status::OutOfService
        );
        assert_eq!(
            states(&[("_node_maintenance", Health::Critical)]),
            Status::OutOfService
        );
        assert_eq!(states(&[]), Status::Up);
    }

    #[test]
    fn bad_health_rows_are_refused() {
        let rows = [
            json!([]),
            json!({"Service": {"ID": "x", "Port": 80, "Address": "h"}}),
            json!({"Service": {"Service": "x", "Port": 80, "Address": "h"}}),
            json!({"Service": {"Service": "x", "ID": "x", "Address": "h"}}),
            json!({"Service": {"Service": "x", "ID": "x", "Port": 0, "Address": "h"}}),
            json!({"Service": {"Service": "x", "ID": "x", "Port": 80}}),
            json!({"Service": {"Service": "x", "ID": "x", "Port": 80, "Address": "h"},
                   "Checks": [{"CheckID": "c", "Status": "great"}]}),
        ];
        for row in rows {
            assert!(health_entry(&row).is_err(), "{row}");
        }
    }

    #[test]
    fn bad_registrations_are_refused_with_consul_reasons() {
        let cases = [
            (json!({"ID":"x"}), "Missing service name"),
            (
                json!({"Name":"x","Address":"0.0.0.0"}),
                "Invalid service address",
            ),
            (
                json!({"Name":"x","Meta":{"consul-x":"1"}}),
                "Invalid Service Meta",
            ),
            (
                json!({"Name":"x","Check":{"HTTP":"http://x/"}}),
                "Invalid check",
            ),
            (
                json!({"Name":"x","Check":{"Args":["/bin/true"],"Interval":"1s"}}),
                "script checks are not supported",
            ),
            (
                json!({"Name":"x","Check":{"TTL":"5s","Status":"great"}}),
                "Invalid check status",
            ),
            (json!({"Name":"x","Port":"80"}), "Port must be a number"),
        ];
        for (body, reason) in cases {
            let error = service_registration(&body, "127.0.0.1")
                .unwrap_err()
                .to_string();
            assert!(error.contains(reason), "{body}: {error}");
        }
    }
}
