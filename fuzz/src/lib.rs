//! What the fuzz targets share: the Eureka registration property (a refused body leaves
//! the registry as it was; an accepted one is stored and its documents read back), and the
//! Config Server pipeline (parse, merge, resolve, nest, render) with the bounds of
//! `ferry_config_server::limits` checked on every result; and how the HTTP/1.1 targets
//! report a rewritten head that does not parse again.

use std::sync::Arc;

use serde_json::Value;

use ferry_config_server::render;
use ferry_config_server::yaml::{self, Document, YamlError};
use ferry_config_server::{limits, Environment, PropertySource};
use ferry_core::model::{Instance, Millis};
use ferry_core::store::MemoryStore;
use ferry_core::{Clock, Registry, RegistrySettings};
use ferry_eureka::decode::{self, Origin};
use ferry_eureka::hashcode::{apps_hashcode, Document as AppsDocument};
use ferry_eureka::{json, register_body, xml, Format};

const NOW: Millis = 1_700_000_000_000;

/// Everything a Eureka client can see of a registry: its index, the full document and the
/// delta, rendered (the clock is manual, so twice the same state renders the same bytes).
fn eureka_view(registry: &Registry) -> (u64, Vec<u8>, Vec<u8>) {
    let render = |listing: ferry_core::registry::Listing| {
        json::applications(&AppsDocument {
            versions_delta: "1",
            hashcode: apps_hashcode(&listing.counts),
            apps: &listing.apps,
        })
    };
    (
        registry.index(),
        render(registry.list_all()),
        render(registry.list_recent_changes()),
    )
}

/// A registry holding one instance, so a body may also re-register over a stored one.
fn seeded_registry() -> Registry {
    let registry = Registry::new(
        RegistrySettings::default(),
        Clock::manual(NOW),
        Arc::new(MemoryStore),
    );
    let mut instance = Instance::new("ORDERS", "orders-1", "10.0.0.1", "10.0.0.1", 8080);
    instance.last_dirty = NOW;
    registry
        .register(instance, false)
        .expect("the memory store accepts a registration");
    registry
}

/// Feeds `body` to the register handler's logic, as a body of `format` posted to the app
/// its own `app` field names (or to `ORDERS` when it names none), and checks what follows.
pub fn eureka_registration(body: &[u8], format: Format) {
    let tree = match format {
        Format::Json => serde_json::from_slice::<Value>(body).ok(),
        Format::Xml => xml::parse(body).ok(),
    };
    if let Some(tree) = &tree {
        // Registry documents take the same fields with other rules; they must not panic.
        let _ = decode::applications_document(tree, NOW);
    }
    let decoded = tree
        .as_ref()
        .and_then(|tree| decode::instance_document(tree, Origin::Registration, NOW).ok());
    let path_app = decoded.as_ref().map_or("orders".to_owned(), |instance| {
        instance.app.to_ascii_lowercase()
    });

    let registry = seeded_registry();
    let before = eureka_view(&registry);
    match register_body(&registry, &path_app, format, body, false, format) {
        Err(_) => assert!(
            eureka_view(&registry) == before,
            "a refused registration changed the registry"
        ),
        Ok(()) => {
            let decoded = decoded.expect("an accepted body decodes");
            let stored = registry
                .instance(&decoded.app, &decoded.id)
                .expect("an accepted instance is stored");
            // What a client fetches back reads as the same instance.
            let json_text = json::instance_document(&stored.instance, stored.last_renewal);
            let json_tree: Value =
                serde_json::from_slice(&json_text).expect("the JSON view is JSON");
            let again = decode::instance_document(&json_tree, Origin::Registration, NOW)
                .expect("the JSON view decodes");
            assert_eq!(again.id, stored.instance.id);
            assert_eq!(again.app, stored.instance.app);
            assert_eq!(again.host_name, stored.instance.host_name);
            assert_eq!(again.ip_addr, stored.instance.ip_addr);
            assert_eq!(again.port, stored.instance.port);
            assert_eq!(again.secure_port, stored.instance.secure_port);
            assert_eq!(again.metadata, stored.instance.metadata);
            // XML has characters it cannot carry: the view writes U+FFFD for them.
            let xml_safe = |text: &str| -> String {
                text.chars()
                    .map(|c| {
                        if xml::allowed_in_xml(c) {
                            c
                        } else {
                            '\u{FFFD}'
                        }
                    })
                    .collect()
            };
            let xml_text = xml::instance_document(&stored.instance, stored.last_renewal);
            let xml_tree = xml::parse(&xml_text).expect("the XML view is XML");
            let again = decode::instance_document(&xml_tree, Origin::Registration, NOW)
                .expect("the XML view decodes");
            assert_eq!(again.id, xml_safe(&stored.instance.id));
            assert_eq!(again.app, xml_safe(&stored.instance.app));
            assert_eq!(again.host_name, xml_safe(&stored.instance.host_name));
        }
    }
}

/// Runs parsed configuration documents through every view the Config Server renders and
/// checks the bounds of `limits` on each step's result. The `.yml` view must read back as
/// YAML (a bound may refuse it, a syntax error may not) holding the same properties.
pub fn config_pipeline(documents: Vec<Document>) {
    for document in &documents {
        assert!(document.properties.len() <= limits::MAX_SCALARS);
    }
    // A later document overrides an earlier one: the highest source comes first.
    let environment = Environment {
        name: "fuzz".to_owned(),
        profiles: Vec::new(),
        label: None,
        version: None,
        state: None,
        sources: documents
            .into_iter()
            .enumerate()
            .rev()
            .map(|(position, document)| PropertySource {
                name: format!("document {position}"),
                source: document.properties,
            })
            .collect(),
    };
    let mut properties = render::merged(&environment);
    let _ = render::to_properties(&properties);
    if render::resolve_placeholders(&mut properties).is_err() {
        return;
    }
    for (_, value) in &properties {
        if let Value::String(text) = value {
            assert!(
                text.len() <= limits::MAX_RESOLVED_BYTES.max(limits::MAX_DOCUMENT_BYTES),
                "a resolved value of {} bytes",
                text.len()
            );
        }
    }
    let _ = render::to_properties(&properties);
    let Ok(tree) = render::to_tree(&properties) else {
        return;
    };
    check_tree_bounds(&tree, 0);
    let rendered = render::to_yaml(&tree);
    match yaml::parse(&rendered) {
        Err(YamlError::Syntax(error)) => {
            panic!("the .yml view is not YAML ({error}):\n{rendered}")
        }
        Err(YamlError::Limit(_)) => {}
        Ok(read_back) => {
            let read_back: Vec<(String, Value)> = read_back
                .into_iter()
                .flat_map(|document| document.properties)
                .collect();
            assert_eq!(
                read_back,
                flatten_view(&tree),
                "the .yml view reads back as other properties:\n{rendered}"
            );
        }
    }
}

/// The nesting `to_tree` builds is bounded by the name and list-index limits.
fn check_tree_bounds(node: &Value, depth: usize) {
    assert!(depth <= limits::MAX_NAME_SEGMENTS, "a tree {depth} deep");
    match node {
        Value::Object(map) => map
            .values()
            .for_each(|child| check_tree_bounds(child, depth + 1)),
        Value::Array(items) => {
            assert!(items.len() <= limits::MAX_LIST_INDEX + 1);
            items
                .iter()
                .for_each(|child| check_tree_bounds(child, depth + 1));
        }
        _ => {}
    }
}

/// The properties a YAML reader finds in `to_yaml(tree)`, named as `yaml::parse` names
/// them; a lone `document` key is the document's root. This restates Spring's naming rule
/// (`a.b[0].c`, `[key]` without a dot) over JSON values on purpose: it is the oracle the
/// reader's own flattening is checked against, so it does not call it.
fn flatten_view(tree: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    match tree {
        Value::Object(map) if map.len() == 1 && map.contains_key("document") => {
            match &map["document"] {
                root @ Value::Object(_) => flatten("", root, &mut out),
                other => flatten("document", other, &mut out),
            }
        }
        other => flatten("", other, &mut out),
    }
    out
}

fn flatten(prefix: &str, node: &Value, out: &mut Vec<(String, Value)>) {
    match node {
        Value::Null => out.push((prefix.to_owned(), Value::String(String::new()))),
        Value::Array(items) if items.is_empty() => {
            out.push((prefix.to_owned(), Value::String(String::new())))
        }
        Value::Array(items) => {
            for (position, item) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{position}]"), item, out);
            }
        }
        Value::Object(map) => {
            for (key, value) in map {
                let name = if prefix.is_empty() {
                    key.clone()
                } else if key.starts_with('[') {
                    format!("{prefix}{key}")
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&name, value, out);
            }
        }
        scalar => out.push((prefix.to_owned(), scalar.clone())),
    }
}

/// Fails a run whose rewritten HTTP/1.1 head `out` was not accepted again.
pub fn not_reparsed(out: &[u8], verdict: &dyn std::fmt::Debug) -> ! {
    panic!(
        "the rewritten head {:?} re-parses as {verdict:?}",
        String::from_utf8_lossy(out)
    )
}
