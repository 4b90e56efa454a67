//! Eureka's XML: the writer for registry documents and the reader that turns a request body
//! into the tree `decode` reads.
//!
//! py-eureka-client asks for XML (its `Accept` is `*/*`) and reads only some spellings:
//! the lower-case `overriddenstatus` element, the `enabled` attribute on ports and the
//! `class` attribute on `dataCenterInfo` are mandatory for it. Element names follow
//! XStream's name coder (`_` is written `__`, `$` is written `_-`). The reader refuses
//! DTDs outright, so no entity is ever expanded.

use std::collections::BTreeMap;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use serde_json::{Map, Value};

use ferry_core::model::{Instance, Millis};
use ferry_core::registry::RegisteredInstance;

use super::hashcode::Document;
use super::spelling::{action_name, optional_fields, status_name, DataCenterKind};

/// Elements nest no deeper than this in any Eureka document; deeper input is refused
/// rather than recursed into.
const MAX_DEPTH: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XmlError {
    #[error("malformed XML: {0}")]
    Malformed(String),
    #[error("DTDs and entity declarations are not accepted")]
    Doctype,
    #[error("the XML nests deeper than {MAX_DEPTH} elements")]
    TooDeep,
    #[error("the XML has no root element")]
    Empty,
}

pub fn applications(document: &Document<'_>) -> Vec<u8> {
    let total: usize = document
        .apps
        .iter()
        .map(|(_, instances)| instances.len())
        .sum();
    let mut out = String::with_capacity(128 + total * 1400);
    out.push_str("<applications><versions__delta>");
    escaped(&mut out, document.versions_delta);
    out.push_str("</versions__delta><apps__hashcode>");
    escaped(&mut out, &document.hashcode);
    out.push_str("</apps__hashcode>");
    for (name, instances) in document.apps {
        application_body(&mut out, name, instances);
    }
    out.push_str("</applications>");
    out.into_bytes()
}

pub fn application(name: &str, instances: &[RegisteredInstance]) -> Vec<u8> {
    let mut out = String::with_capacity(64 + instances.len() * 1400);
    application_body(&mut out, name, instances);
    out.into_bytes()
}

pub fn instance_document(instance: &Instance, last_renewal: Millis) -> Vec<u8> {
    let mut out = String::with_capacity(1400);
    instance_body(&mut out, instance, last_renewal);
    out.into_bytes()
}

fn application_body(out: &mut String, name: &str, instances: &[RegisteredInstance]) {
    out.push_str("<application>");
    element(out, "name", name);
    for registered in instances {
        instance_body(out, &registered.instance, registered.last_renewal);
    }
    out.push_str("</application>");
}

fn instance_body(out: &mut String, instance: &Instance, last_renewal: Millis) {
    out.push_str("<instance>");
    if instance.id_explicit {
        element(out, "instanceId", &instance.id);
    }
    element(out, "hostName", &instance.host_name);
    element(out, "app", &instance.app);
    element(out, "ipAddr", &instance.ip_addr);
    if let Some(sid) = instance
        .sid
        .as_deref()
        .filter(|sid| !matches!(*sid, "na" | "unknown"))
    {
        element(out, "sid", sid);
    }
    element(out, "status", status_name(instance.status));
    element(
        out,
        "overriddenstatus",
        status_name(instance.overridden_status),
    );
    for (name, port) in [
        ("port", instance.port),
        ("securePort", instance.secure_port),
    ] {
        out.push('<');
        out.push_str(name);
        out.push_str(if port.enabled {
            " enabled=\"true\">"
        } else {
            " enabled=\"false\">"
        });
        out.push_str(itoa::Buffer::new().format(port.number));
        out.push_str("</");
        out.push_str(name);
        out.push('>');
    }
    number_element(out, "countryId", instance.country_id);
    let center = DataCenterKind::of(&instance.data_center);
    out.push_str("<dataCenterInfo class=\"");
    escaped(out, center.class());
    out.push_str("\">");
    element(out, "name", center.as_str());
    if center.has_metadata() {
        map_element(out, &instance.data_center.metadata);
    }
    out.push_str("</dataCenterInfo><leaseInfo>");
    let lease = &instance.lease;
    number_element(
        out,
        "renewalIntervalInSecs",
        i64::from(lease.renewal_interval_secs),
    );
    number_element(out, "durationInSecs", i64::from(lease.duration_secs));
    number_element(out, "registrationTimestamp", lease.registration);
    number_element(out, "lastRenewalTimestamp", last_renewal);
    number_element(out, "evictionTimestamp", lease.eviction);
    number_element(out, "serviceUpTimestamp", lease.service_up);
    out.push_str("</leaseInfo>");
    if instance.metadata.is_empty() {
        out.push_str("<metadata class=\"java.util.Collections$EmptyMap\"/>");
    } else {
        map_element(out, &instance.metadata);
    }
    for (name, value) in optional_fields(instance) {
        if let Some(value) = value {
            element(out, name, value);
        }
    }
    element(out, "isCoordinatingDiscoveryServer", "false");
    number_element(out, "lastUpdatedTimestamp", instance.last_updated);
    number_element(out, "lastDirtyTimestamp", instance.last_dirty);
    element(out, "actionType", action_name(instance.action));
    if let Some(group) = &instance.scaling_group {
        element(out, "asgName", group);
    }
    out.push_str("</instance>");
}

/// `<metadata>` with one element per entry; keys that cannot be XML names are left out
/// because no escaping would make them readable by the clients.
fn map_element(out: &mut String, map: &BTreeMap<String, String>) {
    out.push_str("<metadata>");
    for (key, value) in map {
        if let Some(name) = encode_name(key) {
            element(out, &name, value);
        }
    }
    out.push_str("</metadata>");
}

fn element(out: &mut String, name: &str, text: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    escaped(out, text);
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

fn number_element(out: &mut String, name: &str, value: i64) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    out.push_str(itoa::Buffer::new().format(value));
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// Text as XML 1.0 character data. Markup characters are escaped; characters XML 1.0 does
/// not allow at all (control characters other than tab, CR and LF, U+FFFE, U+FFFF) have no
/// escape, so each is written as U+FFFD. XStream, Netflix's writer, emits `&#x1;` there,
/// which XML 1.0 parsers reject: one registration would break every XML client's fetch.
fn escaped(out: &mut String, text: &str) {
    let escaped = quick_xml::escape::escape(text);
    if escaped.chars().all(allowed_in_xml) {
        out.push_str(&escaped);
    } else {
        out.extend(
            escaped
                .chars()
                .map(|c| if allowed_in_xml(c) { c } else { '\u{FFFD}' }),
        );
    }
}

/// Whether XML 1.0 allows `c` in a document; the XML views write U+FFFD for any other.
pub fn allowed_in_xml(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// XStream's name coder, or `None` for a key that is no XML name even after coding.
pub fn encode_name(key: &str) -> Option<String> {
    let mut chars = key.chars();
    let first = chars.next()?;
    let name_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == '$';
    let name_char = |c: char| name_start(c) || c.is_ascii_digit() || c == '-' || c == '.';
    if !name_start(first) || !chars.all(name_char) {
        return None;
    }
    Some(key.replace('_', "__").replace('$', "_-"))
}

pub fn decode_name(name: &str) -> String {
    if !name.contains('_') {
        return name.to_owned();
    }
    let mut decoded = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('_', Some('_')) => {
                chars.next();
                decoded.push('_');
            }
            ('_', Some('-')) => {
                chars.next();
                decoded.push('$');
            }
            _ => decoded.push(c),
        }
    }
    decoded
}

/// One open element while parsing.
struct Frame {
    name: String,
    fields: Map<String, Value>,
    text: String,
}

/// Parses a document into `{"root": tree}`: attributes become `@name`, text beside
/// attributes or children becomes `$`, a leaf's text is kept exactly, repeated children become arrays, and an element
/// with only text becomes a string.
pub fn parse(body: &[u8]) -> Result<Value, XmlError> {
    let mut reader = Reader::from_reader(body);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    let malformed = |error: &dyn std::fmt::Display| XmlError::Malformed(error.to_string());
    loop {
        match reader.read_event().map_err(|error| malformed(&error))? {
            Event::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                stack.push(open(&start)?);
            }
            Event::Empty(start) => {
                let frame = open(&start)?;
                attach(&mut stack, &mut root, frame)?;
            }
            Event::Text(text) => {
                if let Some(frame) = stack.last_mut() {
                    frame
                        .text
                        .push_str(&text.unescape().map_err(|error| malformed(&error))?);
                }
            }
            Event::CData(data) => {
                if let Some(frame) = stack.last_mut() {
                    let data = data.into_inner();
                    frame
                        .text
                        .push_str(std::str::from_utf8(&data).map_err(|error| malformed(&error))?);
                }
            }
            Event::End(_) => {
                let frame = stack
                    .pop()
                    .ok_or_else(|| XmlError::Malformed("unbalanced end tag".into()))?;
                attach(&mut stack, &mut root, frame)?;
            }
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Malformed(
            "the document ends inside an element".into(),
        ));
    }
    let (name, tree) = root.ok_or(XmlError::Empty)?;
    let mut document = Map::new();
    document.insert(name, tree);
    Ok(Value::Object(document))
}

fn open(start: &BytesStart<'_>) -> Result<Frame, XmlError> {
    let malformed = |error: &dyn std::fmt::Display| XmlError::Malformed(error.to_string());
    let name = std::str::from_utf8(start.name().as_ref())
        .map_err(|error| malformed(&error))?
        .to_owned();
    let mut fields = Map::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|error| malformed(&error))?;
        let key = std::str::from_utf8(attribute.key.as_ref()).map_err(|error| malformed(&error))?;
        let value = attribute
            .unescape_value()
            .map_err(|error| malformed(&error))?;
        fields.insert(format!("@{key}"), Value::String(value.into_owned()));
    }
    Ok(Frame {
        name: decode_name(&name),
        fields,
        text: String::new(),
    })
}

fn attach(
    stack: &mut [Frame],
    root: &mut Option<(String, Value)>,
    frame: Frame,
) -> Result<(), XmlError> {
    let Frame {
        name,
        mut fields,
        text,
    } = frame;
    let value = if fields.is_empty() {
        Value::String(text)
    } else {
        // Whitespace between child elements is layout, not content.
        if !text.trim().is_empty() {
            fields.insert("$".to_owned(), Value::String(text));
        }
        Value::Object(fields)
    };
    let Some(parent) = stack.last_mut() else {
        if root.is_some() {
            return Err(XmlError::Malformed("more than one root element".into()));
        }
        *root = Some((name, value));
        return Ok(());
    };
    match parent.fields.get_mut(&name) {
        None => {
            parent.fields.insert(name, value);
        }
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
    }
    Ok(())
}
