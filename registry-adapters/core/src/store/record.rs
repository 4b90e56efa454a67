//! The record a durable store keeps for one `Instance`: every field, checks with their
//! status, output and probe included, so a record read back is the instance that was
//! written. The redb file store writes it today; the etcd store will write the same bytes.
//!
//! The encoding is JSON, built by hand from `serde_json::Value` (the model stays free of
//! serde derives, and no view's wire format leaks into it). JSON rather than a packed
//! binary layout because records are keyed by field name: a later version can add a field
//! and still read older records (an absent new field takes its default), and a record can be
//! read with `etcdctl get` or any JSON tool when something needs explaining. Records are
//! small and written once per change, so the size and speed of JSON do not matter here.
//!
//! Every record carries `"v": 1`. A reader refuses a version it does not know rather than
//! guess at it. Durations are whole nanoseconds (`*_ns`), timestamps milliseconds since the
//! epoch, enum values their model spellings (`UP`, `passing`, `ADDED`, `MyOwn`); the origin
//! is `agent` (held until deregistered) or `lease` (kept by heartbeats).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::model::{
    Action, Check, DataCenter, Health, Instance, Lease, Links, Port, Probe, Registration, Status,
};

/// The version this module writes, and the only one it reads.
pub const VERSION: u64 = 1;

/// Why a stored record could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the record is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("record version {0} is not known to this Ferry (it reads version {VERSION})")]
    Version(u64),
    #[error("the record's field {0:?} is missing or malformed")]
    Field(&'static str),
}

pub fn encode(instance: &Instance) -> Vec<u8> {
    serde_json::to_vec(&to_value(instance)).expect("a JSON value always serializes")
}

/// The record as a JSON value, for a store that wraps it in an envelope of its own.
pub fn to_value(instance: &Instance) -> Value {
    json!({
        "v": VERSION,
        "id": instance.id,
        "id_explicit": instance.id_explicit,
        "app": instance.app,
        "name": instance.name,
        "host_name": instance.host_name,
        "ip_addr": instance.ip_addr,
        "sid": instance.sid,
        "status": instance.status.to_string(),
        "overridden_status": instance.overridden_status.to_string(),
        "port": port(instance.port),
        "secure_port": port(instance.secure_port),
        "country_id": instance.country_id,
        "data_center": {
            "name": instance.data_center.name,
            "metadata": instance.data_center.metadata,
        },
        "lease": {
            "renewal_interval_secs": instance.lease.renewal_interval_secs,
            "duration_secs": instance.lease.duration_secs,
            "registration": instance.lease.registration,
            "last_renewal": instance.lease.last_renewal,
            "eviction": instance.lease.eviction,
            "service_up": instance.lease.service_up,
        },
        "metadata": instance.metadata,
        "app_group": instance.app_group,
        "links": {
            "home_page": instance.links.home_page,
            "status_page": instance.links.status_page,
            "health_check": instance.links.health_check,
            "secure_health_check": instance.links.secure_health_check,
        },
        "virtual_address": instance.virtual_address,
        "secure_virtual_address": instance.secure_virtual_address,
        "last_updated": instance.last_updated,
        "last_dirty": instance.last_dirty,
        "action": action_name(instance.action),
        "scaling_group": instance.scaling_group,
        "registration": match instance.registration {
            Registration::Lease => "lease",
            Registration::Agent => "agent",
            Registration::Imported => "imported",
        },
        "tags": instance.tags,
        "checks": instance.checks.iter().map(check).collect::<Vec<_>>(),
        "weights": [instance.weights.0, instance.weights.1],
        "enable_tag_override": instance.enable_tag_override,
        "tagged_addresses": instance
            .tagged_addresses
            .iter()
            .map(|(network, (address, port))| (network.clone(), json!([address, port])))
            .collect::<Map<_, _>>(),
        "create_index": instance.create_index,
        "modify_index": instance.modify_index,
    })
}

/// A status as records spell it: the registry's own name (`Status`'s `Display`).
fn parse_status(text: &str) -> Option<Status> {
    Status::ALL
        .into_iter()
        .find(|status| status.to_string() == text)
}

/// The record's names for the kinds of change; its own, so no view's spelling is stored.
fn action_name(action: Action) -> &'static str {
    match action {
        Action::Added => "added",
        Action::Modified => "modified",
        Action::Deleted => "deleted",
    }
}

fn parse_action(text: &str) -> Option<Action> {
    [Action::Added, Action::Modified, Action::Deleted]
        .into_iter()
        .find(|action| action_name(*action) == text)
}

pub fn decode(bytes: &[u8]) -> Result<Instance, RecordError> {
    let value: Value = serde_json::from_slice(bytes)?;
    from_value(&value)
}

/// Reads a record from a JSON value (see `to_value`).
pub fn from_value(value: &Value) -> Result<Instance, RecordError> {
    let record = Fields::of(value, "record")?;
    let version = record.u64("v")?;
    if version != VERSION {
        return Err(RecordError::Version(version));
    }
    let data_center = record.object("data_center")?;
    let lease = record.object("lease")?;
    let links = record.object("links")?;
    let weights = record.array("weights")?;
    Ok(Instance {
        id: record.string("id")?,
        id_explicit: record.bool("id_explicit")?,
        app: record.string("app")?,
        // Added after version 1's first records, which lack it: absent is `None`.
        name: record.absent_or_string("name")?,
        host_name: record.string("host_name")?,
        ip_addr: record.string("ip_addr")?,
        sid: record.optional_string("sid")?,
        status: record.parsed("status", parse_status)?,
        overridden_status: record.parsed("overridden_status", parse_status)?,
        port: record.port("port")?,
        secure_port: record.port("secure_port")?,
        country_id: record.i64("country_id")?,
        data_center: DataCenter {
            name: data_center.optional_string("name")?,
            metadata: data_center.strings("metadata")?,
        },
        lease: Lease {
            renewal_interval_secs: lease.u32("renewal_interval_secs")?,
            duration_secs: lease.u32("duration_secs")?,
            registration: lease.i64("registration")?,
            last_renewal: lease.i64("last_renewal")?,
            eviction: lease.i64("eviction")?,
            service_up: lease.i64("service_up")?,
        },
        metadata: record.strings("metadata")?,
        app_group: record.optional_string("app_group")?,
        links: Links {
            home_page: links.optional_string("home_page")?,
            status_page: links.optional_string("status_page")?,
            health_check: links.optional_string("health_check")?,
            secure_health_check: links.optional_string("secure_health_check")?,
        },
        virtual_address: record.optional_string("virtual_address")?,
        secure_virtual_address: record.optional_string("secure_virtual_address")?,
        last_updated: record.i64("last_updated")?,
        last_dirty: record.i64("last_dirty")?,
        action: record.parsed("action", parse_action)?,
        scaling_group: record.optional_string("scaling_group")?,
        registration: record.parsed("registration", |registration| match registration {
            "lease" => Some(Registration::Lease),
            "agent" => Some(Registration::Agent),
            "imported" => Some(Registration::Imported),
            _ => None,
        })?,
        tags: record
            .array("tags")?
            .iter()
            .map(|tag| tag.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or(RecordError::Field("tags"))?,
        checks: record
            .array("checks")?
            .iter()
            .map(decode_check)
            .collect::<Result<_, _>>()?,
        weights: match weights.as_slice() {
            [passing, warning] => (number(passing, "weights")?, number(warning, "weights")?),
            _ => return Err(RecordError::Field("weights")),
        },
        enable_tag_override: record.bool("enable_tag_override")?,
        tagged_addresses: record
            .object("tagged_addresses")?
            .map
            .iter()
            .map(
                |(network, address)| match address.as_array().map(Vec::as_slice) {
                    Some([address, port]) => Some((
                        network.clone(),
                        (
                            address.as_str()?.to_owned(),
                            number(port, "tagged_addresses").ok()?,
                        ),
                    )),
                    _ => None,
                },
            )
            .collect::<Option<_>>()
            .ok_or(RecordError::Field("tagged_addresses"))?,
        create_index: record.u64("create_index")?,
        modify_index: record.u64("modify_index")?,
    })
}

fn port(port: Port) -> Value {
    json!({ "number": port.number, "enabled": port.enabled })
}

fn check(check: &Check) -> Value {
    let probe = match &check.probe {
        Probe::Ttl { ttl } => json!({ "kind": "ttl", "ttl_ns": nanos(*ttl) }),
        Probe::Http {
            url,
            method,
            headers,
            body,
            interval,
            timeout,
            tls_skip_verify,
        } => json!({
            "kind": "http",
            "url": url,
            "method": method,
            "headers": headers,
            "body": body,
            "interval_ns": nanos(*interval),
            "timeout_ns": nanos(*timeout),
            "tls_skip_verify": tls_skip_verify,
        }),
        Probe::Tcp {
            address,
            interval,
            timeout,
        } => json!({
            "kind": "tcp",
            "address": address,
            "interval_ns": nanos(*interval),
            "timeout_ns": nanos(*timeout),
        }),
        Probe::Maintenance => json!({ "kind": "maintenance" }),
    };
    json!({
        "id": check.id,
        "name": check.name,
        "status": check.status.as_str(),
        "notes": check.notes,
        "output": check.output,
        "probe": probe,
        "deregister_critical_after_ns": check.deregister_critical_after.map(nanos),
        "successes_before_passing": check.successes_before_passing,
        "failures_before_critical": check.failures_before_critical,
        "create_index": check.create_index,
        "modify_index": check.modify_index,
        "critical_since": check.critical_since,
    })
}

fn decode_check(value: &Value) -> Result<Check, RecordError> {
    let check = Fields::of(value, "checks")?;
    let probe = check.object("probe")?;
    let probe = match probe.string("kind")?.as_str() {
        "ttl" => Probe::Ttl {
            ttl: probe.duration("ttl_ns")?,
        },
        "http" => Probe::Http {
            url: probe.string("url")?,
            method: probe.string("method")?,
            headers: probe
                .object("headers")?
                .map
                .iter()
                .map(|(name, values)| {
                    let values = values.as_array()?.iter();
                    let values = values.map(|value| value.as_str().map(str::to_owned));
                    Some((name.clone(), values.collect::<Option<_>>()?))
                })
                .collect::<Option<_>>()
                .ok_or(RecordError::Field("headers"))?,
            body: probe.optional_string("body")?,
            interval: probe.duration("interval_ns")?,
            timeout: probe.duration("timeout_ns")?,
            tls_skip_verify: probe.bool("tls_skip_verify")?,
        },
        "tcp" => Probe::Tcp {
            address: probe.string("address")?,
            interval: probe.duration("interval_ns")?,
            timeout: probe.duration("timeout_ns")?,
        },
        "maintenance" => Probe::Maintenance,
        _ => return Err(RecordError::Field("kind")),
    };
    Ok(Check {
        id: check.string("id")?,
        name: check.string("name")?,
        status: check.parsed("status", Health::parse)?,
        notes: check.string("notes")?,
        output: check.string("output")?,
        probe,
        deregister_critical_after: match check.get("deregister_critical_after_ns")? {
            Value::Null => None,
            value => Some(Duration::from_nanos(number(
                value,
                "deregister_critical_after_ns",
            )?)),
        },
        successes_before_passing: check.u32("successes_before_passing")?,
        failures_before_critical: check.u32("failures_before_critical")?,
        create_index: check.u64("create_index")?,
        modify_index: check.u64("modify_index")?,
        critical_since: match check.get("critical_since")? {
            Value::Null => None,
            value => Some(number(value, "critical_since")?),
        },
    })
}

/// Whole nanoseconds; a duration past u64 (584 years) is kept as the largest one.
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// A JSON integer as the number type a field has.
fn number<T: TryFrom<u64> + TryFrom<i64>>(
    value: &Value,
    field: &'static str,
) -> Result<T, RecordError> {
    let converted = match (value.as_u64(), value.as_i64()) {
        (Some(unsigned), _) => T::try_from(unsigned).ok(),
        (None, Some(signed)) => T::try_from(signed).ok(),
        _ => None,
    };
    converted.ok_or(RecordError::Field(field))
}

/// The fields of one JSON object, read with the field's name in every error.
struct Fields<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn of(value: &'a Value, name: &'static str) -> Result<Fields<'a>, RecordError> {
        let map = value.as_object().ok_or(RecordError::Field(name))?;
        Ok(Fields { map })
    }

    fn get(&self, field: &'static str) -> Result<&'a Value, RecordError> {
        self.map.get(field).ok_or(RecordError::Field(field))
    }

    fn object(&self, field: &'static str) -> Result<Fields<'a>, RecordError> {
        Fields::of(self.get(field)?, field)
    }

    fn array(&self, field: &'static str) -> Result<&'a Vec<Value>, RecordError> {
        self.get(field)?.as_array().ok_or(RecordError::Field(field))
    }

    fn string(&self, field: &'static str) -> Result<String, RecordError> {
        let text = self.get(field)?.as_str();
        text.map(str::to_owned).ok_or(RecordError::Field(field))
    }

    fn optional_string(&self, field: &'static str) -> Result<Option<String>, RecordError> {
        match self.get(field)? {
            Value::Null => Ok(None),
            Value::String(text) => Ok(Some(text.clone())),
            _ => Err(RecordError::Field(field)),
        }
    }

    /// A field a later Ferry added: absent or null is `None`.
    fn absent_or_string(&self, field: &'static str) -> Result<Option<String>, RecordError> {
        match self.map.get(field) {
            None => Ok(None),
            Some(_) => self.optional_string(field),
        }
    }

    fn bool(&self, field: &'static str) -> Result<bool, RecordError> {
        self.get(field)?.as_bool().ok_or(RecordError::Field(field))
    }

    fn u64(&self, field: &'static str) -> Result<u64, RecordError> {
        number(self.get(field)?, field)
    }

    fn u32(&self, field: &'static str) -> Result<u32, RecordError> {
        number(self.get(field)?, field)
    }

    fn i64(&self, field: &'static str) -> Result<i64, RecordError> {
        number(self.get(field)?, field)
    }

    fn duration(&self, field: &'static str) -> Result<Duration, RecordError> {
        self.u64(field).map(Duration::from_nanos)
    }

    fn parsed<T>(
        &self,
        field: &'static str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, RecordError> {
        let text = self.get(field)?.as_str().ok_or(RecordError::Field(field))?;
        parse(text).ok_or(RecordError::Field(field))
    }

    fn strings(&self, field: &'static str) -> Result<BTreeMap<String, String>, RecordError> {
        let map = self
            .get(field)?
            .as_object()
            .ok_or(RecordError::Field(field))?;
        map.iter()
            .map(|(key, value)| Some((key.clone(), value.as_str()?.to_owned())))
            .collect::<Option<_>>()
            .ok_or(RecordError::Field(field))
    }

    fn port(&self, field: &'static str) -> Result<Port, RecordError> {
        let port = self.object(field)?;
        Ok(Port {
            number: port.u32("number")?,
            enabled: port.bool("enabled")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An instance with every field away from its default, each check kind included.
    fn full_instance() -> Instance {
        let mut instance = Instance::new("orders", "orders-1", "host-a", "10.0.0.7", 8080);
        instance.id_explicit = false;
        instance.name = Some("Orders".to_owned());
        instance.sid = Some("sid-1".to_owned());
        instance.status = Status::Down;
        instance.overridden_status = Status::OutOfService;
        instance.secure_port = Port {
            number: 8443,
            enabled: true,
        };
        instance.country_id = -3;
        instance.data_center = DataCenter {
            name: Some("Amazon".to_owned()),
            metadata: BTreeMap::from([("zone".to_owned(), "eu-1a".to_owned())]),
        };
        instance.lease = Lease {
            renewal_interval_secs: 5,
            duration_secs: 15,
            registration: 1_700_000_000_001,
            last_renewal: 1_700_000_000_002,
            eviction: 1_700_000_000_003,
            service_up: 1_700_000_000_004,
        };
        instance.metadata = BTreeMap::from([
            ("version".to_owned(), "2.1".to_owned()),
            ("ünïcode \"quoted\"".to_owned(), "line\nbreak".to_owned()),
        ]);
        instance.app_group = Some("shop".to_owned());
        instance.links = Links {
            home_page: Some("http://host-a:8080/".to_owned()),
            status_page: None,
            health_check: Some("http://host-a:8080/health".to_owned()),
            secure_health_check: Some("https://host-a:8443/health".to_owned()),
        };
        instance.virtual_address = Some("orders,orders-v2".to_owned());
        instance.secure_virtual_address = Some("orders".to_owned());
        instance.last_updated = 1_700_000_000_005;
        instance.last_dirty = -1;
        instance.action = Action::Modified;
        instance.scaling_group = Some("asg-1".to_owned());
        instance.registration = Registration::Agent;
        instance.tags = vec!["blue".to_owned(), String::new(), "secure=true".to_owned()];
        instance.weights = (10, 2);
        instance.enable_tag_override = true;
        instance.tagged_addresses = BTreeMap::from([
            ("lan".to_owned(), ("10.0.0.7".to_owned(), 8080)),
            ("wan".to_owned(), ("203.0.113.7".to_owned(), 443)),
        ]);
        instance.create_index = 41;
        instance.modify_index = u64::MAX;
        let base = Check {
            id: "service:orders-1".to_owned(),
            name: "Service 'orders' check".to_owned(),
            status: Health::Passing,
            notes: "ready".to_owned(),
            output: "HTTP GET: 200 OK".to_owned(),
            probe: Probe::Ttl {
                ttl: Duration::new(30, 5),
            },
            deregister_critical_after: Some(Duration::from_secs(90)),
            successes_before_passing: 2,
            failures_before_critical: 3,
            create_index: 41,
            modify_index: 42,
            critical_since: None,
        };
        instance.checks = vec![
            base.clone(),
            Check {
                id: "http".to_owned(),
                status: Health::Critical,
                critical_since: Some(1_700_000_000_006),
                deregister_critical_after: None,
                probe: Probe::Http {
                    url: "http://host-a:8080/health?deep=1".to_owned(),
                    method: "POST".to_owned(),
                    headers: BTreeMap::from([(
                        "X-Probe".to_owned(),
                        vec!["a".to_owned(), "b".to_owned()],
                    )]),
                    body: Some("{}".to_owned()),
                    interval: Duration::from_millis(1500),
                    timeout: Duration::from_micros(250),
                    tls_skip_verify: true,
                },
                ..base.clone()
            },
            Check {
                id: "tcp".to_owned(),
                status: Health::Warning,
                probe: Probe::Tcp {
                    address: "host-a:8080".to_owned(),
                    interval: Duration::from_secs(10),
                    timeout: Duration::from_secs(1),
                },
                ..base.clone()
            },
            Check {
                id: "_service_maintenance:orders-1".to_owned(),
                probe: Probe::Maintenance,
                ..base
            },
        ];
        instance
    }

    #[test]
    fn a_full_instance_reads_back_as_it_was_written() {
        let instance = full_instance();
        assert_eq!(decode(&encode(&instance)).unwrap(), instance);
        let plain = Instance::new("web", "web-1", "h", "10.0.0.1", 80);
        assert_eq!(decode(&encode(&plain)).unwrap(), plain);
    }

    #[test]
    fn the_record_names_its_version_and_fields() {
        let value: Value = serde_json::from_slice(&encode(&full_instance())).unwrap();
        assert_eq!(value["v"], 1);
        assert_eq!(value["registration"], "agent");
        assert_eq!(value["checks"][0]["probe"]["ttl_ns"], 30_000_000_005_u64);
        assert_eq!(
            value["tagged_addresses"]["wan"],
            json!(["203.0.113.7", 443])
        );
    }

    #[test]
    fn unknown_versions_and_damaged_records_are_refused() {
        let mut value: Value = serde_json::from_slice(&encode(&full_instance())).unwrap();
        value["v"] = json!(2);
        let newer = serde_json::to_vec(&value).unwrap();
        assert!(matches!(decode(&newer), Err(RecordError::Version(2))));
        value["v"] = json!(1);
        value["checks"][1]["probe"]["interval_ns"] = json!("soon");
        let damaged = serde_json::to_vec(&value).unwrap();
        assert!(matches!(
            decode(&damaged),
            Err(RecordError::Field("interval_ns"))
        ));
        value["checks"][1]["probe"]["interval_ns"] = json!(1);
        value["weights"] = json!([1]);
        let damaged = serde_json::to_vec(&value).unwrap();
        assert!(matches!(
            decode(&damaged),
            Err(RecordError::Field("weights"))
        ));
        assert!(matches!(decode(b"\x00\x01"), Err(RecordError::NotJson(_))));
    }

    #[test]
    fn a_record_written_before_the_registered_name_was_kept_reads_back_without_it() {
        let mut value: Value = serde_json::from_slice(&encode(&full_instance())).unwrap();
        value.as_object_mut().unwrap().remove("name");
        let older = serde_json::to_vec(&value).unwrap();
        let instance = decode(&older).unwrap();
        assert_eq!(instance.name, None);
        assert_eq!(instance.app, "ORDERS");
    }
}
