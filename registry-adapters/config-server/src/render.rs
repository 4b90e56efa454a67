//! The alternative formats (`.properties`, `.json`, `.yml`): the Environment merged into one
//! map (spec §5), placeholders resolved, then written out.
//!
//! Merging follows Spring's `EnvironmentController.convertToProperties`, which decides the
//! order of every rendered document: the sources are walked from the lowest to the highest.
//! A plain key is put into one insertion-ordered map (a later value replaces the earlier one
//! in its first place). Indexed keys (any key holding a `[`) are grouped per source by the
//! name before their first `[`, and a source's group replaces that group from lower sources
//! whole, keeping the place where the group first appeared, so `[x, y]` over `[a, b, c]`
//! yields `[x, y]` and never `[x, y, c]`. The plain keys come first, then every group's
//! keys in the order of the groups. Only `spring.profiles` is dropped; the server keeps
//! `spring.config.activate.on-profile`.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::environment::Environment;
use super::error::ConfigError;
use super::limits;

/// The one key Spring's `postProcessProperties` drops from rendered documents.
const DROPPED_KEY: &str = "spring.profiles";

/// The merged properties in Spring's order (see the module docs). Linear in the number of
/// properties.
pub fn merged(environment: &Environment) -> Vec<(String, Value)> {
    let mut plain = OrderedMap::default();
    let mut groups: OrderedMap<Vec<(String, Value)>> = OrderedMap::default();
    for source in environment.sources.iter().rev() {
        // This source's lists, each complete, so each replaces the lower source's whole.
        let mut source_groups: OrderedMap<OrderedMap> = OrderedMap::default();
        for (key, value) in &source.source {
            match key.find('[') {
                None => plain.put(key, value.clone()),
                Some(at) => source_groups.entry(&key[..at]).put(key, value.clone()),
            }
        }
        for (group, entries) in source_groups.entries {
            groups.put(&group, entries.entries);
        }
    }
    let mut merged = plain.entries;
    merged.extend(groups.entries.into_iter().flat_map(|(_, entries)| entries));
    merged.retain(|(key, _)| key != DROPPED_KEY);
    merged
}

/// An insertion-ordered map as Java's `LinkedHashMap`: putting an existing key replaces its
/// value in its first place.
struct OrderedMap<V = Value> {
    entries: Vec<(String, V)>,
    positions: HashMap<String, usize>,
}

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap {
            entries: Vec::new(),
            positions: HashMap::new(),
        }
    }
}

impl<V> OrderedMap<V> {
    fn put(&mut self, key: &str, value: V) {
        match self.positions.get(key) {
            Some(&position) => self.entries[position].1 = value,
            None => {
                self.positions.insert(key.to_owned(), self.entries.len());
                self.entries.push((key.to_owned(), value));
            }
        }
    }
}

impl<V: Default> OrderedMap<V> {
    /// The value under `key`, a default one put first if there is none.
    fn entry(&mut self, key: &str) -> &mut V {
        if !self.positions.contains_key(key) {
            self.put(key, V::default());
        }
        &mut self.entries[self.positions[key]].1
    }
}

/// Replaces `${name}` and `${name:default}` in string values; unresolvable placeholders stay
/// as written and `\${...}` is a literal `${...}`. Placeholders nested deeper than
/// `MAX_PLACEHOLDER_DEPTH`, or a value that grows past `MAX_RESOLVED_BYTES`, are an error
/// naming the property.
pub fn resolve_placeholders(properties: &mut [(String, Value)]) -> Result<(), ConfigError> {
    let lookup: HashMap<String, String> = properties
        .iter()
        .map(|(key, value)| (key.clone(), plain(value)))
        .collect();
    for (key, value) in properties.iter_mut() {
        if let Value::String(text) = value {
            *text = resolve(text, &lookup, 0).map_err(|reason| ConfigError::Unrenderable {
                property: limits::excerpt(key),
                reason,
            })?;
        }
    }
    Ok(())
}

/// How deep a found value's own placeholders are followed; deeper, the value is taken as it
/// is, which is what ends a cycle (`a: ${b}`, `b: ${a}`).
const FOLLOWED_REFERENCES: usize = 8;

fn resolve(
    text: &str,
    properties: &HashMap<String, String>,
    depth: usize,
) -> Result<String, String> {
    if depth > limits::MAX_PLACEHOLDER_DEPTH {
        return Err(format!(
            "placeholders nest deeper than {} levels",
            limits::MAX_PLACEHOLDER_DEPTH
        ));
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        if out.len() > limits::MAX_RESOLVED_BYTES {
            break;
        }
        if start > 0 && rest.as_bytes()[start - 1] == b'\\' {
            out.push_str(&rest[..start - 1]);
            out.push_str("${");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let Some(length) = closing_brace(&rest[start + 2..]) else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let inner = &rest[start + 2..start + 2 + length];
        let (name, default) = match inner.split_once(':') {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        match (properties.get(name), default) {
            (Some(value), _) if depth < FOLLOWED_REFERENCES => {
                out.push_str(&resolve(value, properties, depth + 1)?)
            }
            (Some(value), _) => out.push_str(value),
            (None, Some(default)) => out.push_str(&resolve(default, properties, depth + 1)?),
            (None, None) => out.push_str(&rest[start..start + 3 + length]),
        }
        rest = &rest[start + 3 + length..];
    }
    out.push_str(rest);
    if out.len() > limits::MAX_RESOLVED_BYTES {
        return Err(format!(
            "the resolved value is larger than {} bytes",
            limits::MAX_RESOLVED_BYTES
        ));
    }
    Ok(out)
}

/// The length up to the brace that closes a placeholder, nested ones included.
fn closing_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (position, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(position),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// A value as `.properties` prints it: strings raw, numbers and booleans as text.
pub fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub fn to_properties(properties: &[(String, Value)]) -> String {
    properties
        .iter()
        .map(|(key, value)| format!("{key}: {}", plain(value)))
        .collect::<Vec<_>>()
        .join("\n")
}

enum Segment {
    Key(String),
    Index(usize),
}

/// `a.b[0].c` -> a, b, 0, c; a bracket that holds no number is part of a key.
fn segments(name: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut current = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                if !current.is_empty() {
                    segments.push(Segment::Key(std::mem::take(&mut current)));
                }
            }
            '[' => {
                let inner: String = chars.by_ref().take_while(|c| *c != ']').collect();
                match inner.parse::<usize>() {
                    Ok(index) => {
                        if !current.is_empty() {
                            segments.push(Segment::Key(std::mem::take(&mut current)));
                        }
                        segments.push(Segment::Index(index));
                    }
                    Err(_) => {
                        current.push('[');
                        current.push_str(&inner);
                        current.push(']');
                    }
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        segments.push(Segment::Key(current));
    }
    segments
}

/// The nested structure of the merged properties (maps and lists). A name with more than
/// `MAX_NAME_SEGMENTS` segments, or a list index above `MAX_LIST_INDEX`, is an error naming
/// the property: the tree is built to the depth and the length the names ask for.
pub fn to_tree(properties: &[(String, Value)]) -> Result<Value, ConfigError> {
    let mut root = Value::Object(Map::new());
    for (name, value) in properties {
        let path = segments(name);
        let unrenderable = |reason: String| ConfigError::Unrenderable {
            property: limits::excerpt(name),
            reason,
        };
        if path.len() > limits::MAX_NAME_SEGMENTS {
            return Err(unrenderable(format!(
                "the name nests deeper than {} levels",
                limits::MAX_NAME_SEGMENTS
            )));
        }
        let too_long = path.iter().any(
            |segment| matches!(segment, Segment::Index(index) if *index > limits::MAX_LIST_INDEX),
        );
        if too_long {
            return Err(unrenderable(format!(
                "a list index is above {}",
                limits::MAX_LIST_INDEX
            )));
        }
        if !insert(&mut root, &path, value.clone()) {
            // A name that is both a value and a parent stays a literal dotted key.
            if let Value::Object(map) = &mut root {
                map.insert(name.clone(), value.clone());
            }
        }
    }
    Ok(root)
}

fn insert(node: &mut Value, path: &[Segment], value: Value) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let slot: &mut Value = match (first, &mut *node) {
        (Segment::Key(key), Value::Object(map)) => {
            if rest.is_empty() {
                if map
                    .get(key)
                    .is_some_and(|existing| existing.is_object() || existing.is_array())
                {
                    return false;
                }
                map.insert(key.clone(), value);
                return true;
            }
            map.entry(key.clone())
                .or_insert_with(|| empty_for(&rest[0]))
        }
        (Segment::Index(index), Value::Array(items)) => {
            while items.len() <= *index {
                items.push(Value::Null);
            }
            if rest.is_empty() {
                items[*index] = value;
                return true;
            }
            if items[*index].is_null() {
                items[*index] = empty_for(&rest[0]);
            }
            &mut items[*index]
        }
        _ => return false,
    };
    if !(slot.is_object() || slot.is_array()) {
        return false;
    }
    insert(slot, rest, value)
}

fn empty_for(next: &Segment) -> Value {
    match next {
        Segment::Key(_) => Value::Object(Map::new()),
        Segment::Index(_) => Value::Array(Vec::new()),
    }
}

/// Block YAML of the nested structure; a lone `document` key prints just its value.
pub fn to_yaml(tree: &Value) -> String {
    let mut out = String::new();
    let root = match tree {
        Value::Object(map) if map.len() == 1 && map.contains_key("document") => &map["document"],
        other => other,
    };
    match root {
        Value::Object(map) if map.is_empty() => out.push_str("{}\n"),
        Value::Object(map) => write_map(&mut out, map, 0),
        Value::Array(items) => write_list(&mut out, items, 0),
        scalar => {
            out.push_str(&yaml_scalar(scalar));
            out.push('\n');
        }
    }
    out
}

fn write_map(out: &mut String, map: &Map<String, Value>, indent: usize) {
    for (key, value) in map {
        out.push_str(&" ".repeat(indent));
        write_key(out, key, indent);
        write_value(out, value, indent);
    }
}

/// Longest key written as a plain `key:`; YAML limits such (implicit) keys to 1024
/// characters, so a longer one is written explicitly, `? key` and `:` on the next line.
const MAX_IMPLICIT_KEY: usize = 1000;

/// A map key and its colon; `indent` is the key's column.
fn write_key(out: &mut String, key: &str, indent: usize) {
    let key = yaml_string(key);
    if key.chars().count() > MAX_IMPLICIT_KEY {
        out.push_str("? ");
        out.push_str(&key);
        out.push('\n');
        out.push_str(&" ".repeat(indent));
    } else {
        out.push_str(&key);
    }
    out.push(':');
}

fn write_list(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match item {
            Value::Object(map) if !map.is_empty() => {
                // The first key goes on the dash's line; the rest align under it.
                let mut first = true;
                for (key, value) in map {
                    if first {
                        out.push(' ');
                        first = false;
                    } else {
                        out.push_str(&" ".repeat(indent + 2));
                    }
                    write_key(out, key, indent + 2);
                    write_value(out, value, indent + 2);
                }
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                write_list(out, inner, indent + 2);
            }
            scalar => {
                out.push(' ');
                out.push_str(&yaml_scalar(scalar));
                out.push('\n');
            }
        }
    }
}

fn write_value(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_map(out, map, indent + 2);
        }
        // As SnakeYAML dumps it (and Spring serves it): a list's dashes at its key's indent.
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_list(out, items, indent);
        }
        scalar => {
            out.push(' ');
            out.push_str(&yaml_scalar(scalar));
            out.push('\n');
        }
    }
}

fn yaml_scalar(value: &Value) -> String {
    match value {
        Value::String(text) => yaml_string(text),
        Value::Null => "''".to_owned(),
        Value::Object(_) => "{}".to_owned(),
        Value::Array(_) => "[]".to_owned(),
        Value::Number(number) if number.is_f64() => yaml_float(&number.to_string()),
        other => other.to_string(),
    }
}

/// A float as YAML 1.1 reads back as a float: with a `.` (`1.0e+20`, not `1e+20`, which
/// SnakeYAML's 1.1 rules and `yaml::parse` read as a string).
fn yaml_float(text: &str) -> String {
    if text.contains('.') {
        return text.to_owned();
    }
    match text.find(['e', 'E']) {
        Some(at) => format!("{}.0{}", &text[..at], &text[at..]),
        None => format!("{text}.0"),
    }
}

/// A string as YAML, quoted whenever a plain scalar would read back as something else.
fn yaml_string(text: &str) -> String {
    let reads_as_other = super::yaml::parse(&format!("k: {text}"))
        .ok()
        .and_then(|documents| documents.into_iter().next())
        .and_then(|document| document.properties.into_iter().next())
        .is_none_or(|(key, value)| key != "k" || value != Value::String(text.to_owned()));
    let risky = text.is_empty()
        || text.trim() != text
        || text.contains(['\n', '\r', '\t', '#', '"', '\''])
        || text.contains(": ")
        || text.ends_with(':')
        // At the start of a line (a root value) it ends the document.
        || text.starts_with("...")
        // As a key, a plain `<<` merges its value into the map.
        || text == "<<"
        || text.starts_with([
            '-', '?', ':', ',', '[', ']', '{', '}', '&', '*', '!', '|', '>', '%', '@', '`',
        ]);
    if !reads_as_other && !risky {
        return text.to_owned();
    }
    serde_json::to_string(text).unwrap_or_else(|_| format!("'{}'", text.replace('\'', "''")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::environment::{Environment, PropertySource};
    use super::*;

    fn environment(sources: Vec<Vec<(&str, Value)>>) -> Environment {
        Environment {
            name: "orders".into(),
            profiles: vec!["dev".into()],
            label: None,
            version: None,
            state: None,
            sources: sources
                .into_iter()
                .enumerate()
                .map(|(n, source)| PropertySource {
                    name: format!("s{n}"),
                    source: source.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_higher_list_replaces_a_lower_list_whole() {
        let env = environment(vec![
            vec![
                ("features[0]", json!("x")),
                ("features[1]", json!("y")),
                ("a", json!(2)),
            ],
            vec![
                ("features[0]", json!("a")),
                ("features[1]", json!("b")),
                ("features[2]", json!("c")),
                ("a", json!(1)),
                ("spring.profiles", json!("dev")),
                ("spring.config.activate.on-profile", json!("dev")),
            ],
        ]);
        let merged = merged(&env);
        // Spring's `convertToProperties`: plain keys first, indexed ones after; only
        // `spring.profiles` is dropped.
        assert_eq!(
            merged,
            vec![
                ("a".to_owned(), json!(2)),
                ("spring.config.activate.on-profile".to_owned(), json!("dev")),
                ("features[0]".to_owned(), json!("x")),
                ("features[1]".to_owned(), json!("y"))
            ]
        );
    }

    #[test]
    fn plain_keys_come_first_then_each_list_where_its_name_first_appeared() {
        // Sources highest first, as in an Environment. The lowest source names `b[…]`
        // before `a[…]`, so `b` stays first even though the highest source replaces it;
        // `z` is plain and comes before every list although it appears last.
        let env = environment(vec![
            vec![("c[0]", json!(5)), ("b[0]", json!(4)), ("y", json!("high"))],
            vec![
                ("x", json!(1)),
                ("b[0]", json!(1)),
                ("b[1]", json!(2)),
                ("a[0]", json!(3)),
                ("y", json!("low")),
                ("z", json!(0)),
            ],
        ]);
        let keys: Vec<(String, Value)> = merged(&env);
        assert_eq!(
            keys,
            vec![
                ("x".to_owned(), json!(1)),
                ("y".to_owned(), json!("high")),
                ("z".to_owned(), json!(0)),
                ("b[0]".to_owned(), json!(4)),
                ("a[0]".to_owned(), json!(3)),
                ("c[0]".to_owned(), json!(5)),
            ]
        );
    }

    #[test]
    fn floats_render_as_floats_the_yaml_reader_reads_back() {
        // Found by fuzzing (config_yaml): `1.0e20` was served as `1e+20`, a string to
        // YAML 1.1 readers.
        let properties = super::super::yaml::parse("a: 1.0e20\nb: 1.5e-9\nc: 2.0\nd: 7\n")
            .unwrap()
            .remove(0)
            .properties;
        let rendered = to_yaml(&to_tree(&properties).unwrap());
        assert_eq!(rendered, "a: 1.0e+20\nb: 1.5e-9\nc: 2.0\nd: 7\n");
        let read_back = super::super::yaml::parse(&rendered).unwrap().remove(0);
        assert_eq!(read_back.properties, properties);
    }

    #[test]
    fn a_document_end_marker_a_merge_key_name_and_a_long_key_read_back() {
        // Found by fuzzing (config_yaml): a root value `...` was written plain at the
        // start of a line, where it ends the document, so it read back as nothing.
        for properties in [
            vec![("document".to_owned(), json!("..."))],
            vec![("document".to_owned(), json!("... x"))],
            vec![("k".to_owned(), json!("..."))],
            // Also found by fuzzing (config_properties): a key `<<` was written plain, and
            // read back as a merge key.
            vec![
                ("x.<<.z".to_owned(), json!("v")),
                ("<<".to_owned(), json!("w")),
            ],
            // And (config_yaml, config_properties): a key longer than YAML's 1024
            // characters for a plain key was written plain; it is now an explicit `? key`.
            vec![
                (format!("a.{}", "k".repeat(1100)), json!("v")),
                (format!("l[0].{}", "k".repeat(1100)), json!("v")),
                (format!("l[0].{}[0]", "m".repeat(1100)), json!(1)),
                (format!("{}.b", "n".repeat(1100)), json!(true)),
            ],
        ] {
            let rendered = to_yaml(&to_tree(&properties).unwrap());
            let read_back = super::super::yaml::parse(&rendered).unwrap();
            assert_eq!(read_back[0].properties, properties, "{rendered}");
        }
    }

    #[test]
    fn placeholders_resolve_with_defaults_and_escapes() {
        let mut properties = vec![
            ("host".to_owned(), json!("db")),
            (
                "url".to_owned(),
                json!("jdbc:${host}:${port:5432}/${missing}"),
            ),
            ("literal".to_owned(), json!("\\${host}")),
            ("chain".to_owned(), json!("${url}")),
        ];
        resolve_placeholders(&mut properties).unwrap();
        assert_eq!(properties[1].1, json!("jdbc:db:5432/${missing}"));
        assert_eq!(properties[2].1, json!("${host}"));
        assert_eq!(properties[3].1, json!("jdbc:db:5432/${missing}"));
    }

    #[test]
    fn the_tree_rebuilds_maps_and_lists_and_keeps_conflicts_literal() {
        let properties: Vec<(String, Value)> = vec![
            ("orders.db.pool.max-size".into(), json!(10)),
            ("orders.endpoints[0].name".into(), json!("primary")),
            ("orders.endpoints[1].name".into(), json!("fallback")),
            ("matrix[0][1]".into(), json!(2)),
            ("a".into(), json!(1)),
            ("a.b".into(), json!(2)),
        ];
        let tree = to_tree(&properties).unwrap();
        assert_eq!(
            tree,
            json!({"orders": {"db": {"pool": {"max-size": 10}}, "endpoints": [{"name": "primary"}, {"name": "fallback"}]},
                   "matrix": [[null, 2]], "a": 1, "a.b": 2})
        );
        let yaml = to_yaml(
            &json!({"orders": {"debug": "yes", "endpoints": [{"name": "p", "url": "http://p"}], "n": 2}, "list": ["a", "b"]}),
        );
        assert_eq!(yaml, "orders:\n  debug: \"yes\"\n  endpoints:\n  - name: p\n    url: http://p\n  n: 2\nlist:\n- a\n- b\n");
    }

    #[test]
    fn names_too_deep_or_lists_too_long_are_refused_naming_the_property() {
        let deep = format!("{}a", "a.".repeat(50_000));
        let error = to_tree(&[(deep, json!(1))]).unwrap_err();
        assert!(
            error.to_string().contains("nests deeper than 100 levels"),
            "{error}"
        );
        assert!(error.to_string().contains("a.a.a."), "{error}");
        assert_eq!(error.status().as_u16(), 500);

        let indexed = format!("x{}", "[0]".repeat(40_000));
        assert!(to_tree(&[(indexed, json!(1))]).is_err());

        let huge_index = vec![("list[999999999]".to_owned(), json!(1))];
        let error = to_tree(&huge_index).unwrap_err();
        assert!(error.to_string().contains("list index"), "{error}");

        // At the bounds a tree is still built.
        let at_bound = format!("{}a", "a.".repeat(limits::MAX_NAME_SEGMENTS - 1));
        assert!(to_tree(&[(at_bound, json!(1))]).is_ok());
        let longest = vec![(format!("list[{}]", limits::MAX_LIST_INDEX), json!(1))];
        assert!(to_tree(&longest).is_ok());
    }

    #[test]
    fn nested_defaults_and_exploding_references_are_refused() {
        let nested = format!("{}end{}", "${z:".repeat(40_000), "}".repeat(40_000));
        let mut properties = vec![("deep".to_owned(), json!(nested))];
        let error = resolve_placeholders(&mut properties).unwrap_err();
        assert!(error.to_string().contains("deep"), "{error}");
        assert!(error.to_string().contains("nest deeper"), "{error}");

        // Within the depth bound, defaults still resolve.
        let mut properties = vec![(
            "ok".to_owned(),
            json!(format!("{}end{}", "${z:".repeat(20), "}".repeat(20))),
        )];
        resolve_placeholders(&mut properties).unwrap();
        assert_eq!(properties[0].1, json!("end"));

        // Eight levels of a value that names the next level 64 times: 64^8 copies.
        let mut properties: Vec<(String, Value)> = (0..8)
            .map(|level| {
                (
                    format!("l{level}"),
                    json!(format!("${{l{}}}", level + 1).repeat(64)),
                )
            })
            .collect();
        properties.push(("l8".to_owned(), json!("x")));
        let error = resolve_placeholders(&mut properties).unwrap_err();
        assert!(error.to_string().contains("larger than"), "{error}");
    }

    #[test]
    fn a_long_list_merges_whole_and_renders() {
        // The higher source's list replaces the lower one whole; how the time grows with
        // the length is measured by `benches/render.rs`.
        let items = |prefix: &str| -> Vec<(String, Value)> {
            (0..32_000)
                .map(|position| {
                    (
                        format!("list[{position}]"),
                        json!(format!("{prefix}{position}")),
                    )
                })
                .collect()
        };
        let environment = Environment {
            name: "orders".to_owned(),
            profiles: vec!["default".to_owned()],
            label: None,
            version: None,
            state: None,
            sources: vec![
                PropertySource {
                    name: "high".to_owned(),
                    source: items("h"),
                },
                PropertySource {
                    name: "low".to_owned(),
                    source: items("l"),
                },
            ],
        };
        let mut merged = merged(&environment);
        assert_eq!(merged.len(), 32_000);
        assert_eq!(merged[31_999].1, json!("h31999"));
        resolve_placeholders(&mut merged).unwrap();
        let tree = to_tree(&merged).unwrap();
        assert_eq!(tree["list"].as_array().map(Vec::len), Some(32_000));
    }
}
