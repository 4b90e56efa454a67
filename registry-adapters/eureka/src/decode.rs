//! Reads Eureka documents into the model, leniently where the clients differ and strictly
//! where a wrong value would corrupt the registry.
//!
//! Both formats arrive here as one tree: JSON as parsed, XML as converted by `xml::parse`
//! into the shape Jackson and XStream give it (`@name` for attributes, `$` for text). So the
//! field rules of the spec (§6.3) are written once: numbers may be numeric strings,
//! booleans may be strings, unknown keys are ignored, `@class` is skipped in metadata.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use ferry_core::model::{DataCenter, Instance, Millis, Port, Status};
use ferry_core::registry::lease_or_default;

use super::spelling::{parse_action, parse_status, DataCenterKind};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("the document has no `{0}` root")]
    MissingRoot(&'static str),
    #[error("`{field}` must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("`{0}` is required")]
    Missing(&'static str),
    #[error("unknown data center `{0}`")]
    UnknownDataCenter(String),
}

/// Which fields a document may set: a client's registration leaves the registry-owned ones
/// (lease timestamps, action, last update) to the server; a registry document carries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Registration,
    RegistryDocument,
}

/// A decoded `applications` document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applications {
    pub versions_delta: String,
    pub hashcode: String,
    pub apps: Vec<(String, Vec<Instance>)>,
}

/// Reads an `{"instance": {...}}` document. `now` is the default `lastDirtyTimestamp`.
pub fn instance_document(
    document: &Value,
    origin: Origin,
    now: Millis,
) -> Result<Instance, DecodeError> {
    let body = document
        .get("instance")
        .and_then(Value::as_object)
        .ok_or(DecodeError::MissingRoot("instance"))?;
    instance(body, origin, now)
}

/// Reads an `{"applications": {...}}` document; the first instance that does not decode
/// refuses the whole document.
pub fn applications_document(document: &Value, now: Millis) -> Result<Applications, DecodeError> {
    let (applications, refused) = applications_document_lenient(document, now)?;
    match refused.into_iter().next() {
        Some(first) => Err(first),
        None => Ok(applications),
    }
}

/// Reads an `{"applications": {...}}` document, leaving out each instance that does not
/// decode and returning its error beside the rest, in document order: a reader of another
/// server's registry (the sync adapter) skips one bad instance, not the whole registry. A
/// document whose shape is wrong (no root, an application that is not an object) is still
/// refused whole.
pub fn applications_document_lenient(
    document: &Value,
    now: Millis,
) -> Result<(Applications, Vec<DecodeError>), DecodeError> {
    let body = document
        .get("applications")
        .and_then(Value::as_object)
        .ok_or(DecodeError::MissingRoot("applications"))?;
    let header = |json_key: &str, xml_key: &str| {
        body.get(json_key)
            .or_else(|| body.get(xml_key))
            .map(scalar_text)
            .unwrap_or_default()
    };
    let mut apps = Vec::new();
    let mut refused = Vec::new();
    for app in list(body.get("application")) {
        let app = app.as_object().ok_or(DecodeError::WrongType {
            field: "application",
            expected: "an object",
        })?;
        let name = text(app, "name", "name")?.unwrap_or_default();
        let mut instances = Vec::new();
        for entry in list(app.get("instance")) {
            let decoded = entry
                .as_object()
                .ok_or(DecodeError::WrongType {
                    field: "instance",
                    expected: "an object",
                })
                .and_then(|entry| instance(entry, Origin::RegistryDocument, now));
            match decoded {
                Ok(instance) => instances.push(instance),
                Err(error) => refused.push(error),
            }
        }
        apps.push((name, instances));
    }
    let applications = Applications {
        versions_delta: header("versions__delta", "versions_delta"),
        hashcode: header("apps__hashcode", "apps_hashcode"),
        apps,
    };
    Ok((applications, refused))
}

/// The port a registration that gives none listens on (Eureka's default).
const DEFAULT_PORT: u32 = 7001;

/// Starts from `Instance::new`'s defaults and sets what the document carries.
pub(crate) fn instance(
    body: &Map<String, Value>,
    origin: Origin,
    now: Millis,
) -> Result<Instance, DecodeError> {
    let data_center = data_center(body)?;
    let explicit_id = text(body, "instanceId", "instanceId")?.filter(|id| !id.is_empty());
    let host_name = text(body, "hostName", "hostName")?.unwrap_or_default();
    let amazon_id = data_center
        .as_ref()
        .filter(|center| DataCenterKind::of(center) == DataCenterKind::Amazon)
        .and_then(|center| center.metadata.get("instance-id").cloned())
        .filter(|id| !id.is_empty());
    let id_explicit = explicit_id.is_some();
    let id = explicit_id
        .or(amazon_id)
        .or_else(|| Some(host_name.clone()).filter(|host| !host.is_empty()))
        .ok_or(DecodeError::Missing("instanceId"))?;
    if host_name.is_empty() {
        return Err(DecodeError::Missing("hostName"));
    }
    let ip_addr = text(body, "ipAddr", "ipAddr")?.unwrap_or_default();
    if ip_addr.is_empty() {
        return Err(DecodeError::Missing("ipAddr"));
    }
    let app = text(body, "app", "app")?.unwrap_or_default();
    if app.is_empty() {
        return Err(DecodeError::Missing("app"));
    }
    // `Instance::new`'s defaults, with the strings decoded so far moved in, not copied.
    let mut instance = Instance {
        id,
        id_explicit,
        host_name,
        ip_addr,
        data_center: data_center.ok_or(DecodeError::Missing("dataCenterInfo"))?,
        ..Instance::new(&app, "", "", "", DEFAULT_PORT)
    };

    if let Some(status) = text(body, "status", "status")? {
        instance.status = parse_status(&status).unwrap_or(Status::Unknown);
    }
    if let Some(status) = text(body, "overriddenStatus", "overriddenstatus")?.or(text(
        body,
        "overriddenstatus",
        "overriddenStatus",
    )?) {
        instance.overridden_status = parse_status(&status).unwrap_or(Status::Unknown);
    }

    let lease_body = body.get("leaseInfo").and_then(Value::as_object);
    let lease_number = |field: &'static str| -> Result<i64, DecodeError> {
        Ok(match lease_body {
            Some(lease) => number(lease.get(field), field)?.unwrap_or(0),
            None => 0,
        })
    };
    instance.lease = lease_or_default(
        clamp_u32(lease_number("renewalIntervalInSecs")?),
        clamp_u32(lease_number("durationInSecs")?),
    );
    if origin == Origin::RegistryDocument {
        let lease = &mut instance.lease;
        lease.registration = lease_number("registrationTimestamp")?;
        lease.last_renewal = lease_number("lastRenewalTimestamp")?;
        lease.eviction = lease_number("evictionTimestamp")?;
        lease.service_up = lease_number("serviceUpTimestamp")?;
        if let Some(action) =
            text(body, "actionType", "actionType")?.and_then(|action| parse_action(&action))
        {
            instance.action = action;
        }
        if let Some(updated) = number(body.get("lastUpdatedTimestamp"), "lastUpdatedTimestamp")? {
            instance.last_updated = updated;
        }
    }

    instance.sid = text(body, "sid", "sid")?;
    // A server writes every instance's port; a registry document without one is damaged,
    // whereas a client's registration may leave it to Eureka's default.
    if origin == Origin::RegistryDocument && body.get("port").is_none_or(Value::is_null) {
        return Err(DecodeError::Missing("port"));
    }
    instance.port = port(body.get("port"), "port", instance.port)?;
    instance.secure_port = port(body.get("securePort"), "securePort", instance.secure_port)?;
    if let Some(country) = number(body.get("countryId"), "countryId")? {
        instance.country_id = country;
    }
    instance.metadata = string_map(body.get("metadata"), "metadata")?;
    instance.app_group = text(body, "appGroupName", "appGroupName")?;
    let links = &mut instance.links;
    links.home_page = text(body, "homePageUrl", "homePageUrl")?;
    links.status_page = text(body, "statusPageUrl", "statusPageUrl")?;
    links.health_check = text(body, "healthCheckUrl", "healthCheckUrl")?;
    links.secure_health_check = text(body, "secureHealthCheckUrl", "secureHealthCheckUrl")?;
    instance.virtual_address = text(body, "vipAddress", "vipAddress")?;
    instance.secure_virtual_address = text(body, "secureVipAddress", "secureVipAddress")?;
    instance.last_dirty =
        number(body.get("lastDirtyTimestamp"), "lastDirtyTimestamp")?.unwrap_or(now);
    instance.scaling_group = text(body, "asgName", "asgName")?;
    Ok(instance)
}

fn data_center(body: &Map<String, Value>) -> Result<Option<DataCenter>, DecodeError> {
    let Some(center) = body.get("dataCenterInfo").filter(|value| !value.is_null()) else {
        return Ok(None);
    };
    let center = center.as_object().ok_or(DecodeError::WrongType {
        field: "dataCenterInfo",
        expected: "an object",
    })?;
    let name = text(center, "name", "name")?.ok_or(DecodeError::Missing("dataCenterInfo.name"))?;
    let kind = DataCenterKind::parse(&name).ok_or(DecodeError::UnknownDataCenter(name))?;
    Ok(Some(DataCenter {
        name: kind.model_name(),
        metadata: string_map(center.get("metadata"), "dataCenterInfo.metadata")?,
    }))
}

/// `{"$": 8080, "@enabled": "true"}`, or a bare number.
fn port(value: Option<&Value>, field: &'static str, default: Port) -> Result<Port, DecodeError> {
    match value {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Object(port)) => {
            let number = number(port.get("$"), field)?.unwrap_or(i64::from(default.number));
            let enabled = match port.get("@enabled") {
                None | Some(Value::Null) => default.enabled,
                Some(flag) => boolean(flag, field)?,
            };
            Ok(Port {
                number: u32::try_from(number).map_err(|_| DecodeError::WrongType {
                    field,
                    expected: "a port number",
                })?,
                enabled,
            })
        }
        Some(other) => {
            let number = number(Some(other), field)?.unwrap_or(i64::from(default.number));
            Ok(Port {
                number: u32::try_from(number).map_err(|_| DecodeError::WrongType {
                    field,
                    expected: "a port number",
                })?,
                enabled: default.enabled,
            })
        }
    }
}

fn string_map(
    value: Option<&Value>,
    field: &'static str,
) -> Result<BTreeMap<String, String>, DecodeError> {
    match value {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        // An empty XML element (`<metadata/>`) arrives as an empty string.
        Some(Value::String(text)) if text.trim().is_empty() => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .filter(|(key, _)| !key.starts_with('@'))
            .map(|(key, value)| match value {
                Value::Object(_) | Value::Array(_) => Err(DecodeError::WrongType {
                    field,
                    expected: "a map of strings",
                }),
                scalar => Ok((key.clone(), scalar_text(scalar))),
            })
            .collect(),
        Some(_) => Err(DecodeError::WrongType {
            field,
            expected: "a map of strings",
        }),
    }
}

/// A string field; scalars of another type are taken as their text (Jackson does the same),
/// objects and arrays are refused. `alias` covers spelling variants between clients.
fn text(
    body: &Map<String, Value>,
    key: &'static str,
    alias: &'static str,
) -> Result<Option<String>, DecodeError> {
    match body.get(key).or_else(|| body.get(alias)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(_) | Value::Array(_)) => Err(DecodeError::WrongType {
            field: key,
            expected: "a string",
        }),
        Some(scalar) => Ok(Some(scalar_text(scalar))),
    }
}

pub(crate) fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A number, or a string holding one; empty strings count as absent.
fn number(value: Option<&Value>, field: &'static str) -> Result<Option<i64>, DecodeError> {
    let wrong = || DecodeError::WrongType {
        field,
        expected: "a whole number",
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(number)) => number.as_i64().map(Some).ok_or_else(wrong),
        Some(Value::String(text)) if text.trim().is_empty() => Ok(None),
        Some(Value::String(text)) => text.trim().parse().map(Some).map_err(|_| wrong()),
        Some(_) => Err(wrong()),
    }
}

fn boolean(value: &Value, field: &'static str) -> Result<bool, DecodeError> {
    match value {
        Value::Bool(flag) => Ok(*flag),
        Value::String(text) if text.trim().eq_ignore_ascii_case("true") => Ok(true),
        Value::String(text) if text.trim().eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(DecodeError::WrongType {
            field,
            expected: "true or false",
        }),
    }
}

/// A list that a server may have written as a bare object when it had one element.
fn list(value: Option<&Value>) -> Vec<&Value> {
    match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(Value::String(text)) if text.trim().is_empty() => Vec::new(),
        Some(single) => vec![single],
    }
}

fn clamp_u32(value: i64) -> u32 {
    value.clamp(0, i64::from(u32::MAX)) as u32
}
