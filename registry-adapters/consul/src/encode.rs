//! Writes Consul's JSON shapes from the model: nodes, services, checks, KV entries and
//! sessions. Lists are never `null`; `Node.TaggedAddresses` values are plain strings.
//!
//! Names: the registry keys apps in upper case (Eureka's spelling). Consul shows every app
//! under its lower-case name, and looks names up case-insensitively, as Consul's own
//! catalog does. A Eureka-registered instance has no Consul checks of its own; it shows a
//! check named "Eureka status" that is passing while Eureka says UP and critical otherwise.

use base64::Engine;
use serde_json::{json, Map, Value};

use super::duration;
use ferry_core::kv::{KvEntry, Session};
use ferry_core::model::{Check, Health, Instance, Probe, Registration, Status};

/// This agent's node as the Consul view presents it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub name: String,
    pub id: String,
    pub address: String,
    pub datacenter: String,
}

/// A service's name as Consul shows it: as registered, when the registration kept its
/// case (a Consul registration), else the app in lower case (a Eureka registration, whose
/// upper case is Eureka's convention, not the service's spelling).
pub fn service_name<'a>(app: &'a str, registered: Option<&'a str>) -> std::borrow::Cow<'a, str> {
    match registered {
        Some(name) => std::borrow::Cow::Borrowed(name),
        None => std::borrow::Cow::Owned(app.to_ascii_lowercase()),
    }
}

/// `service_name` of one instance.
fn instance_service_name(instance: &Instance) -> std::borrow::Cow<'_, str> {
    service_name(&instance.app, instance.name.as_deref())
}

pub fn node(node: &NodeInfo) -> Value {
    json!({
        "ID": node.id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": node.datacenter,
        "TaggedAddresses": node_tagged_addresses(node),
        "Meta": {"consul-network-segment": ""},
        "CreateIndex": 1,
        "ModifyIndex": 1,
    })
}

fn node_tagged_addresses(node: &NodeInfo) -> Value {
    json!({"lan": node.address, "lan_ipv4": node.address, "wan": node.address, "wan_ipv4": node.address})
}

fn tagged_addresses(instance: &Instance) -> Value {
    let map: Map<String, Value> = instance
        .tagged_addresses
        .iter()
        .map(|(network, (address, port))| {
            (network.clone(), json!({"Address": address, "Port": port}))
        })
        .collect();
    Value::Object(map)
}

/// The port Consul shows for an instance: its plain port, or its TLS port when only that
/// one is enabled (a Eureka registration may say so).
pub fn port(instance: &Instance) -> u32 {
    if instance.port.enabled || !instance.secure_port.enabled {
        instance.port.number
    } else {
        instance.secure_port.number
    }
}

/// The agent's own view of a service (`/v1/agent/services`).
pub fn agent_service(instance: &Instance, datacenter: &str) -> Value {
    json!({
        "ID": instance.id,
        "Service": instance_service_name(instance),
        "Tags": instance.tags,
        "Meta": instance.metadata,
        "Port": port(instance),
        "Address": instance.ip_addr,
        "TaggedAddresses": tagged_addresses(instance),
        "Weights": {"Passing": instance.weights.0, "Warning": instance.weights.1},
        "EnableTagOverride": instance.enable_tag_override,
        "Datacenter": datacenter,
    })
}

/// A service inside a health entry.
fn health_service(instance: &Instance) -> Value {
    json!({
        "ID": instance.id,
        "Service": instance_service_name(instance),
        "Tags": instance.tags,
        "Address": instance.ip_addr,
        "Meta": instance.metadata,
        "Port": port(instance),
        "Weights": {"Passing": instance.weights.0, "Warning": instance.weights.1},
        "EnableTagOverride": instance.enable_tag_override,
        "TaggedAddresses": tagged_addresses(instance),
        "CreateIndex": instance.create_index,
        "ModifyIndex": instance.modify_index,
    })
}

/// One row of `/v1/catalog/service/<name>`.
pub fn catalog_service(node: &NodeInfo, instance: &Instance) -> Value {
    json!({
        "ID": node.id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": node.datacenter,
        "TaggedAddresses": node_tagged_addresses(node),
        "NodeMeta": {"consul-network-segment": ""},
        "ServiceKind": "",
        "ServiceID": instance.id,
        "ServiceName": instance_service_name(instance),
        "ServiceTags": instance.tags,
        "ServiceAddress": instance.ip_addr,
        "ServiceMeta": instance.metadata,
        "ServicePort": port(instance),
        "ServiceWeights": {"Passing": instance.weights.0, "Warning": instance.weights.1},
        "ServiceEnableTagOverride": instance.enable_tag_override,
        "ServiceTaggedAddresses": tagged_addresses(instance),
        "CreateIndex": instance.create_index,
        "ModifyIndex": instance.modify_index,
    })
}

/// One row of `/v1/health/service/<name>`.
pub fn health_entry(node_info: &NodeInfo, instance: &Instance) -> Value {
    let mut checks = vec![serf_check(node_info)];
    checks.extend(instance_checks(node_info, instance));
    json!({"Node": node(node_info), "Service": health_service(instance), "Checks": checks})
}

/// Every check of an instance as Consul shows it: its own, or the Eureka status check.
pub fn instance_checks(node: &NodeInfo, instance: &Instance) -> Vec<Value> {
    if instance.registration != Registration::Agent {
        return vec![eureka_status_check(node, instance)];
    }
    instance
        .checks
        .iter()
        .map(|check| check_json(node, instance, check))
        .collect()
}

/// The status every view agrees on for an instance's health: its checks' worst, or what
/// Eureka says for a Eureka registration.
pub fn instance_health(instance: &Instance) -> Health {
    match instance.registration {
        Registration::Lease | Registration::Imported => eureka_health(instance.status),
        Registration::Agent => instance.health(),
    }
}

fn eureka_health(status: Status) -> Health {
    if status == Status::Up {
        Health::Passing
    } else {
        Health::Critical
    }
}

fn eureka_status_check(node: &NodeInfo, instance: &Instance) -> Value {
    json!({
        "Node": node.name,
        "CheckID": format!("service:{}", instance.id),
        "Name": "Eureka status",
        "Status": eureka_health(instance.status).as_str(),
        "Notes": "Mirrors the status the instance has in Ferry's Eureka view",
        "Output": format!("Eureka status {}", instance.status),
        "ServiceID": instance.id,
        "ServiceName": instance_service_name(instance),
        "ServiceTags": instance.tags,
        "Type": "",
        "Interval": "",
        "Timeout": "",
        "ExposedPort": 0,
        "Definition": {},
        "CreateIndex": instance.create_index,
        "ModifyIndex": instance.modify_index,
    })
}

pub fn check_json(node: &NodeInfo, instance: &Instance, check: &Check) -> Value {
    let (interval, timeout, definition) = match &check.probe {
        Probe::Ttl { ttl } => (
            String::new(),
            String::new(),
            json!({"TTL": duration::format(*ttl)}),
        ),
        Probe::Http {
            url,
            method,
            interval,
            timeout,
            ..
        } => (
            duration::format(*interval),
            duration::format(*timeout),
            json!({"HTTP": url, "Method": method, "Interval": duration::format(*interval), "Timeout": duration::format(*timeout)}),
        ),
        Probe::Tcp {
            address,
            interval,
            timeout,
        } => (
            duration::format(*interval),
            duration::format(*timeout),
            json!({"TCP": address, "Interval": duration::format(*interval), "Timeout": duration::format(*timeout)}),
        ),
        Probe::Maintenance => (String::new(), String::new(), json!({})),
    };
    let kind = match check.probe {
        Probe::Maintenance => "",
        ref probe => probe.kind(),
    };
    json!({
        "Node": node.name,
        "CheckID": check.id,
        "Name": check.name,
        "Status": check.status.as_str(),
        "Notes": check.notes,
        "Output": check.output,
        "ServiceID": instance.id,
        "ServiceName": instance_service_name(instance),
        "ServiceTags": instance.tags,
        "Type": kind,
        "Interval": interval,
        "Timeout": timeout,
        "ExposedPort": 0,
        "Definition": definition,
        "CreateIndex": check.create_index,
        "ModifyIndex": check.modify_index,
    })
}

/// The node's own check: the agent is alive (it is answering).
pub fn serf_check(node: &NodeInfo) -> Value {
    json!({
        "Node": node.name,
        "CheckID": "serfHealth",
        "Name": "Serf Health Status",
        "Status": "passing",
        "Notes": "",
        "Output": "Agent alive and reachable",
        "ServiceID": "",
        "ServiceName": "",
        "ServiceTags": [],
        "Type": "",
        "Interval": "",
        "Timeout": "",
        "ExposedPort": 0,
        "Definition": {},
        "CreateIndex": 1,
        "ModifyIndex": 1,
    })
}

pub fn kv_entry(entry: &KvEntry) -> Value {
    let value = if entry.value.is_empty() {
        Value::Null
    } else {
        Value::String(base64::engine::general_purpose::STANDARD.encode(&entry.value))
    };
    let mut object = json!({
        "Key": entry.key,
        "Value": value,
        "Flags": entry.flags,
        "CreateIndex": entry.create_index,
        "ModifyIndex": entry.modify_index,
        "LockIndex": entry.lock_index,
    });
    if let Some(session) = &entry.session {
        object["Session"] = Value::String(session.clone());
    }
    object
}

pub fn session(session: &Session) -> Value {
    json!({
        "ID": session.id,
        "Name": session.name,
        "Node": session.node,
        "LockDelay": session.lock_delay.as_nanos() as u64,
        "Behavior": session.behavior.as_str(),
        "TTL": session.ttl.map(duration::format).unwrap_or_default(),
        "NodeChecks": session.node_checks,
        "ServiceChecks": null,
        "CreateIndex": session.create_index,
        "ModifyIndex": session.modify_index,
    })
}
