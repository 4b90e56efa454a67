//! YAML configuration files as Spring Boot reads them: each document flattened to dotted
//! and indexed property names (spec §4), with plain scalars typed by YAML 1.1 rules
//! (SnakeYAML's: `yes`/`on` are booleans, quoted text is always a string).
//!
//! The tree is built from yaml-rust2's event stream rather than its document loader,
//! because only the events say whether a scalar was quoted.

use serde_json::{Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// One document of a file, flattened in file order.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub properties: Vec<(String, Value)>,
}

#[derive(Clone, Debug)]
enum Node {
    Scalar(Value),
    Map(Vec<(String, Node)>),
    Seq(Vec<Node>),
}

/// Parses every document of a YAML file; an error says where the text is malformed.
pub fn parse(text: &str) -> Result<Vec<Document>, String> {
    let mut builder = Builder::default();
    Parser::new_from_str(text)
        .load(&mut builder, true)
        .map_err(|error| error.to_string())?;
    if let Some(error) = builder.error {
        return Err(error);
    }
    Ok(builder
        .documents
        .into_iter()
        .map(|root| {
            let mut properties = Vec::new();
            match root {
                Node::Map(_) => flatten("", &root, &mut properties),
                Node::Scalar(Value::Null) => {}
                // A root that is not a map is exposed under `document`, as Spring does.
                other => flatten("document", &other, &mut properties),
            }
            Document { properties }
        })
        .collect())
}

fn flatten(prefix: &str, node: &Node, out: &mut Vec<(String, Value)>) {
    match node {
        Node::Scalar(Value::Null) => out.push((prefix.to_owned(), Value::String(String::new()))),
        Node::Scalar(value) => out.push((prefix.to_owned(), value.clone())),
        Node::Seq(items) if items.is_empty() => {
            out.push((prefix.to_owned(), Value::String(String::new())))
        }
        Node::Seq(items) => {
            for (position, item) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{position}]"), item, out);
            }
        }
        Node::Map(entries) => {
            for (key, value) in entries {
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
    }
}

/// A plain scalar typed as SnakeYAML (YAML 1.1) types it; everything else is a string.
fn typed(text: &str, style: TScalarStyle) -> Value {
    if style != TScalarStyle::Plain {
        return Value::String(text.to_owned());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Value::Bool(true)
        }
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Value::Bool(false)
        }
        _ => {}
    }
    let plain: String = text.chars().filter(|c| *c != '_').collect();
    let looks_decimal =
        |digits: &str| !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit());
    let unsigned = plain.strip_prefix(['-', '+']).unwrap_or(&plain);
    if looks_decimal(unsigned) && !(unsigned.len() > 1 && unsigned.starts_with('0')) {
        if let Ok(number) = plain.parse::<i64>() {
            return Value::Number(number.into());
        }
    }
    if let Some(hex) = unsigned.strip_prefix("0x") {
        if let Ok(number) = i64::from_str_radix(hex, 16) {
            let number = if plain.starts_with('-') {
                -number
            } else {
                number
            };
            return Value::Number(number.into());
        }
    }
    let float_shape = unsigned.contains('.')
        && unsigned
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
        && unsigned.chars().filter(|c| *c == '.').count() == 1
        && unsigned.chars().any(|c| c.is_ascii_digit());
    if float_shape {
        if let Some(number) = plain.parse::<f64>().ok().and_then(Number::from_f64) {
            return Value::Number(number);
        }
    }
    Value::String(text.to_owned())
}

/// Builds one tree per document from parser events.
#[derive(Default)]
struct Builder {
    documents: Vec<Node>,
    /// Open collections; a map holds its pending key until the value arrives.
    stack: Vec<(Node, Option<String>, usize)>,
    anchors: Vec<(usize, Node)>,
    /// Documents begun so far.
    started: usize,
    error: Option<String>,
}

impl Builder {
    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.push((anchor, node.clone()));
        }
        let Some((parent, pending_key, _)) = self.stack.last_mut() else {
            self.documents.push(node);
            return;
        };
        match parent {
            Node::Seq(items) => items.push(node),
            Node::Map(entries) => match pending_key.take() {
                None => {
                    let key = match node {
                        Node::Scalar(Value::String(text)) => text,
                        Node::Scalar(Value::Null) => String::new(),
                        Node::Scalar(other) => other.to_string(),
                        _ => {
                            self.error.get_or_insert_with(|| {
                                "complex mapping keys are not supported".to_owned()
                            });
                            String::new()
                        }
                    };
                    *pending_key = Some(key);
                }
                Some(key) if key == "<<" => merge_into(entries, node),
                Some(key) => {
                    entries.retain(|(existing, _)| *existing != key);
                    entries.push((key, node));
                }
            },
            Node::Scalar(_) => unreachable!("scalars are never on the stack"),
        }
    }
}

/// YAML merge keys (`<<: *defaults`): entries the map does not have yet are added.
fn merge_into(entries: &mut Vec<(String, Node)>, merged: Node) {
    let sources = match merged {
        Node::Map(map) => vec![map],
        Node::Seq(items) => items
            .into_iter()
            .filter_map(|item| match item {
                Node::Map(map) => Some(map),
                _ => None,
            })
            .collect(),
        Node::Scalar(_) => Vec::new(),
    };
    for source in sources {
        for (key, value) in source {
            if !entries.iter().any(|(existing, _)| *existing == key) {
                entries.push((key, value));
            }
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, _mark: Marker) {
        match event {
            Event::Scalar(text, style, anchor, _) => {
                // Keys are names, never typed; values follow YAML 1.1.
                let is_key = matches!(self.stack.last(), Some((Node::Map(_), None, _)));
                let value = if is_key {
                    Value::String(text)
                } else {
                    typed(&text, style)
                };
                self.push_value(Node::Scalar(value), anchor);
            }
            Event::SequenceStart(anchor, _) => {
                self.stack.push((Node::Seq(Vec::new()), None, anchor))
            }
            Event::MappingStart(anchor, _) => {
                self.stack.push((Node::Map(Vec::new()), None, anchor))
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((node, _, anchor)) = self.stack.pop() {
                    self.push_value(node, anchor);
                }
            }
            Event::Alias(id) => {
                let node = self
                    .anchors
                    .iter()
                    .rev()
                    .find(|(anchor, _)| *anchor == id)
                    .map(|(_, node)| node.clone());
                match node {
                    Some(node) => self.push_value(node, 0),
                    None => {
                        self.error
                            .get_or_insert_with(|| format!("unknown alias {id}"));
                    }
                }
            }
            Event::DocumentEnd => {
                // An empty document still counts, so document numbers match Spring's.
                if self.documents.len() < self.started {
                    self.documents.push(Node::Scalar(Value::Null));
                }
            }
            Event::DocumentStart => self.started += 1,
            Event::Nothing | Event::StreamStart | Event::StreamEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn flat(text: &str) -> Vec<(String, Value)> {
        parse(text).unwrap().remove(0).properties
    }

    #[test]
    fn nested_maps_and_lists_flatten_like_spring() {
        let text = r#"
orders:
  db: {url: "jdbc:x", pool: {max-size: 10}}
  endpoints:
    - {name: primary, url: "http://p"}
    - {name: fallback, url: "http://f"}
features: [a, b]
matrix: [[1, 2], [3]]
"[weird.key]": 1
logging.level.root: INFO
empty-list: []
empty-map: {}
nothing: ~
"#;
        let names: Vec<String> = flat(text).into_iter().map(|(name, _)| name).collect();
        assert_eq!(
            names,
            vec![
                "orders.db.url",
                "orders.db.pool.max-size",
                "orders.endpoints[0].name",
                "orders.endpoints[0].url",
                "orders.endpoints[1].name",
                "orders.endpoints[1].url",
                "features[0]",
                "features[1]",
                "matrix[0][0]",
                "matrix[0][1]",
                "matrix[1][0]",
                "[weird.key]",
                "logging.level.root",
                "empty-list",
                "nothing",
            ]
        );
    }

    #[test]
    fn plain_scalars_are_typed_by_yaml_1_1_and_quoted_ones_are_strings() {
        let values: Vec<Value> = flat("a: yes\nb: 'yes'\nc: off\nd: 2\ne: 0.5\nf: 2024-01-02\ng: \"2\"\nh: 0x1F\ni: 007\nj:\n")
            .into_iter()
            .map(|(_, value)| value)
            .collect();
        assert_eq!(
            values,
            vec![
                json!(true),
                json!("yes"),
                json!(false),
                json!(2),
                json!(0.5),
                json!("2024-01-02"),
                json!("2"),
                json!(31),
                json!("007"),
                json!("")
            ]
        );
    }

    #[test]
    fn documents_anchors_and_merge_keys() {
        let text = "defaults: &d {pool: 5, timeout: 3}\nprod:\n  <<: *d\n  pool: 9\n---\nspring.config.activate.on-profile: dev\nx: 1\n";
        let documents = parse(text).unwrap();
        assert_eq!(documents.len(), 2);
        let first: Vec<(String, Value)> = documents[0].properties.clone();
        assert!(first.contains(&("prod.pool".to_owned(), json!(9))));
        assert!(first.contains(&("prod.timeout".to_owned(), json!(3))));
        assert_eq!(
            documents[1].properties[0].0,
            "spring.config.activate.on-profile"
        );
        assert!(parse("a: [unclosed").is_err());
        assert_eq!(
            flat("- a\n- b\n")[0],
            ("document[0]".to_owned(), json!("a"))
        );
    }
}
