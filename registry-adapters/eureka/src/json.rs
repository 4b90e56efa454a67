//! Writes Eureka's JSON: exactly the keys of the spec (§6.2), in its order, with its types.
//!
//! Spring Cloud's non-Jersey clients bind these documents with Jackson set to fail on
//! unknown properties, so an extra key, a renamed key or a number where a string belongs
//! breaks their registry fetch. A hand-written writer makes the key list visible in one
//! place and avoids building an intermediate tree for 10,000 instances.

use ferry_core::model::{Instance, Millis};
use ferry_core::registry::RegisteredInstance;

use super::hashcode::Document;
use super::spelling::{action_name, optional_fields, status_name, DataCenterKind};

pub fn applications(document: &Document<'_>) -> Vec<u8> {
    let per_instance = 1100;
    let total: usize = document
        .apps
        .iter()
        .map(|(_, instances)| instances.len())
        .sum();
    let mut out = String::with_capacity(128 + total * per_instance);
    out.push_str("{\"applications\":{\"versions__delta\":");
    string(&mut out, document.versions_delta);
    out.push_str(",\"apps__hashcode\":");
    string(&mut out, &document.hashcode);
    out.push_str(",\"application\":[");
    for (position, (name, instances)) in document.apps.iter().enumerate() {
        if position > 0 {
            out.push(',');
        }
        application_body(&mut out, name, instances);
    }
    out.push_str("]}}");
    out.into_bytes()
}

pub fn application(name: &str, instances: &[RegisteredInstance]) -> Vec<u8> {
    let mut out = String::with_capacity(64 + instances.len() * 1100);
    out.push_str("{\"application\":");
    application_body(&mut out, name, instances);
    out.push('}');
    out.into_bytes()
}

pub fn instance_document(instance: &Instance, last_renewal: Millis) -> Vec<u8> {
    let mut out = String::with_capacity(1200);
    out.push_str("{\"instance\":");
    instance_body(&mut out, instance, last_renewal);
    out.push('}');
    out.into_bytes()
}

fn application_body(out: &mut String, name: &str, instances: &[RegisteredInstance]) {
    out.push_str("{\"name\":");
    string(out, name);
    out.push_str(",\"instance\":[");
    for (position, registered) in instances.iter().enumerate() {
        if position > 0 {
            out.push(',');
        }
        instance_body(out, &registered.instance, registered.last_renewal);
    }
    out.push_str("]}");
}

fn instance_body(out: &mut String, instance: &Instance, last_renewal: Millis) {
    out.push('{');
    if instance.id_explicit {
        key_string(out, "instanceId", &instance.id);
        out.push(',');
    }
    key_string(out, "hostName", &instance.host_name);
    out.push(',');
    key_string(out, "app", &instance.app);
    out.push(',');
    key_string(out, "ipAddr", &instance.ip_addr);
    if let Some(sid) = instance
        .sid
        .as_deref()
        .filter(|sid| !matches!(*sid, "na" | "unknown"))
    {
        out.push(',');
        key_string(out, "sid", sid);
    }
    out.push(',');
    key_string(out, "status", status_name(instance.status));
    out.push(',');
    key_string(
        out,
        "overriddenStatus",
        status_name(instance.overridden_status),
    );
    for (key, port) in [
        ("port", instance.port),
        ("securePort", instance.secure_port),
    ] {
        out.push_str(",\"");
        out.push_str(key);
        out.push_str("\":{\"$\":");
        number(out, i64::from(port.number));
        out.push_str(",\"@enabled\":");
        out.push_str(if port.enabled {
            "\"true\"}"
        } else {
            "\"false\"}"
        });
    }
    out.push_str(",\"countryId\":");
    number(out, instance.country_id);
    let center = DataCenterKind::of(&instance.data_center);
    out.push_str(",\"dataCenterInfo\":{\"@class\":");
    string(out, center.class());
    out.push(',');
    key_string(out, "name", center.as_str());
    if center.has_metadata() {
        out.push_str(",\"metadata\":");
        string_map(out, &instance.data_center.metadata);
    }
    out.push('}');
    let lease = &instance.lease;
    out.push_str(",\"leaseInfo\":{\"renewalIntervalInSecs\":");
    number(out, i64::from(lease.renewal_interval_secs));
    out.push_str(",\"durationInSecs\":");
    number(out, i64::from(lease.duration_secs));
    out.push_str(",\"registrationTimestamp\":");
    number(out, lease.registration);
    out.push_str(",\"lastRenewalTimestamp\":");
    number(out, last_renewal);
    out.push_str(",\"evictionTimestamp\":");
    number(out, lease.eviction);
    out.push_str(",\"serviceUpTimestamp\":");
    number(out, lease.service_up);
    out.push_str("},\"metadata\":");
    if instance.metadata.is_empty() {
        out.push_str("{\"@class\":\"java.util.Collections$EmptyMap\"}");
    } else {
        string_map(out, &instance.metadata);
    }
    for (key, value) in optional_fields(instance) {
        if let Some(value) = value {
            out.push(',');
            key_string(out, key, value);
        }
    }
    out.push_str(",\"isCoordinatingDiscoveryServer\":\"false\",\"lastUpdatedTimestamp\":\"");
    number(out, instance.last_updated);
    out.push_str("\",\"lastDirtyTimestamp\":\"");
    number(out, instance.last_dirty);
    out.push_str("\",");
    key_string(out, "actionType", action_name(instance.action));
    if let Some(group) = &instance.scaling_group {
        out.push(',');
        key_string(out, "asgName", group);
    }
    out.push('}');
}

fn string_map(out: &mut String, map: &std::collections::BTreeMap<String, String>) {
    out.push('{');
    for (position, (key, value)) in map.iter().enumerate() {
        if position > 0 {
            out.push(',');
        }
        key_string(out, key, value);
    }
    out.push('}');
}

fn key_string(out: &mut String, key: &str, value: &str) {
    string(out, key);
    out.push(':');
    string(out, value);
}

fn number(out: &mut String, value: i64) {
    out.push_str(itoa::Buffer::new().format(value));
}

/// A JSON string literal with the escapes RFC 8259 requires.
fn string(out: &mut String, value: &str) {
    out.push('"');
    let mut plain_from = 0;
    for (position, byte) in value.bytes().enumerate() {
        let escape: Option<&str> = match byte {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&value[plain_from..position]);
        match escape {
            Some(text) => out.push_str(text),
            None => {
                out.push_str("\\u00");
                out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
                out.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
            }
        }
        plain_from = position + 1;
    }
    out.push_str(&value[plain_from..]);
    out.push('"');
}
