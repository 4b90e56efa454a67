//! YAML configuration files as Spring Boot reads them: each document flattened to dotted
//! and indexed property names (spec §4), with plain scalars typed by YAML 1.1 rules
//! (SnakeYAML's: `yes`/`on` are booleans, quoted text is always a string).
//!
//! The tree is built from yaml-rust2's event stream rather than its document loader,
//! because only the events say whether a scalar was quoted.

use std::collections::HashMap;

use serde_json::{Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::limits;

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

/// Why a text is not read as YAML configuration.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// The text is not YAML.
    #[error("{0}")]
    Syntax(String),
    /// The text is YAML but exceeds one of the bounds in `limits`.
    #[error("{0}")]
    Limit(String),
}

/// Parses every document of a YAML file; an error says where the text is malformed or which
/// bound it exceeds.
pub fn parse(text: &str) -> Result<Vec<Document>, YamlError> {
    if text.len() > limits::MAX_DOCUMENT_BYTES {
        return Err(YamlError::Limit(format!(
            "the document is larger than {} bytes",
            limits::MAX_DOCUMENT_BYTES
        )));
    }
    let mut builder = Builder::default();
    Parser::new_from_str(text)
        .load(&mut builder, true)
        .map_err(|error| YamlError::Syntax(error.to_string()))?;
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

/// Builds one tree per document from parser events, within the bounds of `limits`: the
/// nesting, the aliases to collections and the scalars an expansion yields are counted as
/// events arrive, so an alias bomb is refused before it is expanded.
#[derive(Default)]
struct Builder {
    documents: Vec<Node>,
    stack: Vec<Frame>,
    /// Anchor id -> the node and how many scalars it holds.
    anchors: HashMap<usize, (Node, usize)>,
    /// Documents begun so far.
    started: usize,
    /// Scalars in the current document, aliases expanded.
    scalars: usize,
    /// Aliases to collections in the current document.
    aliases: usize,
    error: Option<YamlError>,
    /// The key being pushed is a plain `<<`, a merge key; a quoted `"<<"` is a name, as
    /// in SnakeYAML, where only plain scalars resolve to tags.
    merge_key: bool,
}

/// A collection being built.
struct Frame {
    open: Open,
    anchor: usize,
    /// `Builder::scalars` when it opened, so its own count is known when it closes.
    scalars_before: usize,
}

enum Open {
    Seq(Vec<Node>),
    /// Entries in arrival order, marked when they came from a merge key (`<<`); duplicates
    /// are settled once, when the map closes, so a large map is built in linear time.
    Map {
        entries: Vec<(String, Node, Merged)>,
        pending_key: Option<Key>,
    },
}

/// A map key read, waiting for its value.
enum Key {
    Name(String),
    /// `<<`: the value's entries are merged in.
    Merge,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Merged {
    No,
    Yes,
}

impl Builder {
    fn fail(&mut self, error: YamlError) {
        self.error.get_or_insert(error);
    }

    fn open(&mut self, open: Open, anchor: usize, mark: Marker) {
        if self.stack.len() >= limits::MAX_NESTING {
            return self.fail(YamlError::Limit(format!(
                "collections nest deeper than {} levels at line {}",
                limits::MAX_NESTING,
                mark.line()
            )));
        }
        self.stack.push(Frame {
            open,
            anchor,
            scalars_before: self.scalars,
        });
    }

    fn close(&mut self) {
        let Some(frame) = self.stack.pop() else {
            return;
        };
        let node = match frame.open {
            Open::Seq(items) => Node::Seq(items),
            Open::Map { entries, .. } => Node::Map(settle(entries)),
        };
        let scalars = self.scalars - frame.scalars_before;
        self.push_value(node, frame.anchor, scalars);
    }

    fn push_value(&mut self, node: Node, anchor: usize, scalars: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, (node.clone(), scalars));
        }
        let merge_key = std::mem::take(&mut self.merge_key);
        let Some(parent) = self.stack.last_mut() else {
            self.documents.push(node);
            return;
        };
        match &mut parent.open {
            Open::Seq(items) => items.push(node),
            Open::Map {
                entries,
                pending_key,
            } => match pending_key.take() {
                None => {
                    let key = match node {
                        Node::Scalar(Value::String(text)) => text,
                        Node::Scalar(Value::Null) => String::new(),
                        Node::Scalar(other) => other.to_string(),
                        _ => {
                            self.error.get_or_insert(YamlError::Syntax(
                                "complex mapping keys are not supported".to_owned(),
                            ));
                            String::new()
                        }
                    };
                    *pending_key = Some(if merge_key {
                        Key::Merge
                    } else {
                        Key::Name(key)
                    });
                }
                Some(Key::Merge) => merge_into(entries, node),
                Some(Key::Name(key)) => entries.push((key, node, Merged::No)),
            },
        }
    }

    fn alias(&mut self, id: usize, mark: Marker) {
        let Some((node, scalars)) = self.anchors.get(&id) else {
            return self.fail(YamlError::Syntax(format!("unknown alias {id}")));
        };
        let (node, scalars) = (node.clone(), *scalars);
        if !matches!(node, Node::Scalar(_)) {
            self.aliases += 1;
            if self.aliases > limits::MAX_ALIASES {
                return self.fail(YamlError::Limit(format!(
                    "more than {} aliases to collections in one document, at line {}",
                    limits::MAX_ALIASES,
                    mark.line()
                )));
            }
        }
        if !self.count_scalars(scalars, mark) {
            return;
        }
        self.push_value(node, 0, scalars);
    }

    /// Counts scalars the document gains; false (and the error set) past the bound.
    fn count_scalars(&mut self, added: usize, mark: Marker) -> bool {
        self.scalars += added;
        if self.scalars > limits::MAX_SCALARS {
            self.fail(YamlError::Limit(format!(
                "more than {} values in one document, aliases expanded, at line {}",
                limits::MAX_SCALARS,
                mark.line()
            )));
            return false;
        }
        true
    }
}

/// A map's entries with duplicates settled as SnakeYAML settles them: a later key replaces
/// an earlier one and takes its place at the end; a merged key (`<<`) never replaces a key
/// the map already has, whether written or merged before.
fn settle(entries: Vec<(String, Node, Merged)>) -> Vec<(String, Node)> {
    let mut slots: HashMap<String, usize> = HashMap::with_capacity(entries.len());
    let mut settled: Vec<Option<(String, Node)>> = Vec::with_capacity(entries.len());
    for (key, node, merged) in entries {
        if let Some(&slot) = slots.get(&key) {
            if merged == Merged::Yes {
                continue;
            }
            settled[slot] = None;
        }
        slots.insert(key.clone(), settled.len());
        settled.push(Some((key, node)));
    }
    settled.into_iter().flatten().collect()
}

/// YAML merge keys (`<<: *defaults`): the merged map's entries, or those of each map in a
/// merged list, join the map as merged entries.
fn merge_into(entries: &mut Vec<(String, Node, Merged)>, merged: Node) {
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
        entries.extend(
            source
                .into_iter()
                .map(|(key, value)| (key, value, Merged::Yes)),
        );
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.error.is_some() {
            // The answer is the error; building on would only spend time and memory.
            return;
        }
        match event {
            Event::Scalar(text, style, anchor, _) => {
                // Keys are names, never typed; values follow YAML 1.1.
                let is_key = matches!(
                    self.stack.last(),
                    Some(Frame {
                        open: Open::Map {
                            pending_key: None,
                            ..
                        },
                        ..
                    })
                );
                let value = if is_key {
                    self.merge_key = text == "<<" && style == TScalarStyle::Plain;
                    Value::String(text)
                } else {
                    typed(&text, style)
                };
                if self.count_scalars(1, mark) {
                    self.push_value(Node::Scalar(value), anchor, 1);
                }
            }
            Event::SequenceStart(anchor, _) => self.open(Open::Seq(Vec::new()), anchor, mark),
            Event::MappingStart(anchor, _) => self.open(
                Open::Map {
                    entries: Vec::new(),
                    pending_key: None,
                },
                anchor,
                mark,
            ),
            Event::SequenceEnd | Event::MappingEnd => self.close(),
            Event::Alias(id) => self.alias(id, mark),
            Event::DocumentEnd => {
                // An empty document still counts, so document numbers match Spring's.
                if self.documents.len() < self.started {
                    self.documents.push(Node::Scalar(Value::Null));
                }
            }
            Event::DocumentStart => {
                self.started += 1;
                self.scalars = 0;
                self.aliases = 0;
                self.anchors.clear();
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd => {}
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
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
        // Only a plain `<<` merges; quoted, it is a key like any other (SnakeYAML's rule).
        assert_eq!(
            flat("m:\n  \"<<\": {a: 1}\n  '<<': {b: 2}\n"),
            vec![("m.<<.b".to_owned(), json!(2))]
        );
        assert!(parse("a: [unclosed").is_err());
        assert_eq!(
            flat("- a\n- b\n")[0],
            ("document[0]".to_owned(), json!("a"))
        );
    }

    /// `levels` levels of ten aliases each: five make 275 bytes that expand to 100,000
    /// values.
    pub(crate) fn alias_bomb(levels: usize) -> String {
        let mut text = format!("l0: &l0 [{}]\n", ["x"; 10].join(", "));
        for level in 1..levels {
            let previous = vec![format!("*l{}", level - 1); 10].join(", ");
            text.push_str(&format!("l{level}: &l{level} [{previous}]\n"));
        }
        text
    }

    #[test]
    fn alias_expansion_is_bounded() {
        let error = parse(&alias_bomb(5)).unwrap_err();
        assert!(matches!(error, YamlError::Limit(_)), "{error}");
        assert!(error.to_string().contains("100000 values"), "{error}");
        // Four levels (10,000 values) is a large but honest document.
        assert_eq!(flat(&alias_bomb(4)).len(), 11_110);

        let many: String = std::iter::once("base: &b [1]\n".to_owned())
            .chain((0..51).map(|n| format!("k{n}: *b\n")))
            .collect();
        let error = parse(&many).unwrap_err();
        assert!(
            error.to_string().contains("more than 50 aliases"),
            "{error}"
        );
        // Aliases to scalars are not collections and are not counted.
        let scalars: String = std::iter::once("base: &b 1\n".to_owned())
            .chain((0..200).map(|n| format!("k{n}: *b\n")))
            .collect();
        assert_eq!(flat(&scalars).len(), 201);
    }

    #[test]
    fn nesting_and_size_are_bounded() {
        // yaml-rust2 refuses deep flow collections itself; block ones are counted here.
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse(&format!("k: {deep}")).is_err());
        let block: String = (0..60)
            .map(|level| format!("{}k{level}:\n", "  ".repeat(level)))
            .collect();
        let error = parse(&block).unwrap_err();
        assert!(matches!(error, YamlError::Limit(_)), "{error}");
        assert!(error.to_string().contains("nest deeper than 50"), "{error}");
        let ok = format!("k: {}1{}", "[".repeat(40), "]".repeat(40));
        assert_eq!(flat(&ok).len(), 1);

        let large = format!("k: \"{}\"", "x".repeat(limits::MAX_DOCUMENT_BYTES));
        assert!(matches!(parse(&large), Err(YamlError::Limit(_))));
    }

    #[test]
    fn duplicate_keys_take_the_last_value_at_the_last_place_in_linear_time() {
        let text = "a: 1\nb: 2\na: 3\nm:\n  <<: {x: 1, y: 2}\n  x: 9\n  <<: {y: 7, z: 3}\n";
        assert_eq!(
            flat(text),
            vec![
                ("b".to_owned(), json!(2)),
                ("a".to_owned(), json!(3)),
                ("m.y".to_owned(), json!(2)),
                ("m.x".to_owned(), json!(9)),
                ("m.z".to_owned(), json!(3)),
            ]
        );
        let wide: String = (0..50_000).map(|n| format!("k{n}: {n}\n")).collect();
        assert_eq!(flat(&wide).len(), 50_000);
    }
}
