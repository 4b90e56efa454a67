//! Java `.properties` files as Spring Boot reads them: ISO-8859-1 text, `=`/`:`/whitespace
//! separators, `\` line continuation, `#`/`!` comments, `\uXXXX` escapes, `key[]=a,b` lists,
//! and `#---` document separators. Every value is a string.

use std::collections::HashMap;

use serde_json::Value;

use super::limits;
use super::yaml::Document;

/// The documents of a properties file; an error when it exceeds the document size bound.
pub fn parse(bytes: &[u8]) -> Result<Vec<Document>, String> {
    if bytes.len() > limits::MAX_DOCUMENT_BYTES {
        return Err(format!(
            "the document is larger than {} bytes",
            limits::MAX_DOCUMENT_BYTES
        ));
    }
    // ISO-8859-1: every byte is the code point of the same value.
    let text: String = bytes.iter().map(|byte| char::from(*byte)).collect();
    let mut documents = vec![Properties::default()];
    let mut lines = text.lines();
    while let Some(first) = lines.next() {
        let trimmed = first.trim_start();
        if trimmed == "#---" || trimmed == "!---" {
            documents.push(Properties::default());
            continue;
        }
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
            continue;
        }
        let mut logical = String::from(trimmed);
        while ends_with_continuation(&logical) {
            logical.pop();
            match lines.next() {
                Some(next) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let (key, value) = split(&logical);
        let properties = documents.last_mut().expect("never empty");
        if let Some(list) = key.strip_suffix("[]") {
            for (position, item) in value.split(',').enumerate() {
                properties.set(format!("{list}[{position}]"), item.trim().to_owned());
            }
        } else {
            properties.set(key, value);
        }
    }
    Ok(documents
        .into_iter()
        .map(|document| Document {
            properties: document.properties,
        })
        .collect())
}

/// One document's properties in first-seen order, with the position of each name so a
/// duplicate is found in constant time.
#[derive(Default)]
struct Properties {
    properties: Vec<(String, Value)>,
    positions: HashMap<String, usize>,
}

impl Properties {
    /// Later duplicates overwrite the value and keep the first position, as `Properties`
    /// does.
    fn set(&mut self, key: String, value: String) {
        match self.positions.get(&key) {
            Some(&position) => self.properties[position].1 = Value::String(value),
            None => {
                self.positions.insert(key.clone(), self.properties.len());
                self.properties.push((key, Value::String(value)));
            }
        }
    }
}

fn ends_with_continuation(line: &str) -> bool {
    line.chars().rev().take_while(|c| *c == '\\').count() % 2 == 1
}

/// Splits a logical line at the first unescaped separator and unescapes both halves.
fn split(line: &str) -> (String, String) {
    let mut key = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(escaped) = chars.next() {
                    key.push(unescape(escaped, &mut chars));
                }
            }
            '=' | ':' => break,
            c if c.is_whitespace() => {
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('=') | Some(':')) {
                    chars.next();
                }
                break;
            }
            c => key.push(c),
        }
    }
    while chars.peek().is_some_and(|c| c.is_whitespace()) {
        chars.next();
    }
    let mut value = String::new();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(escaped) = chars.next() {
                value.push(unescape(escaped, &mut chars));
            }
        } else {
            value.push(c);
        }
    }
    (key, value)
}

fn unescape(escaped: char, rest: &mut std::iter::Peekable<std::str::Chars<'_>>) -> char {
    match escaped {
        't' => '\t',
        'n' => '\n',
        'r' => '\r',
        'f' => '\u{c}',
        'u' => {
            let hex: String = (0..4).filter_map(|_| rest.next()).collect();
            u32::from_str_radix(&hex, 16)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{fffd}')
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_java_properties_syntax() {
        let text = b"# comment\n! also\na=1\nb : two words\nc three\nd=multi\\\n    line\ne=\\u00e9t\\u00e9\nf[]=x, y\ng=\\#not-comment\nurl=http://x:8080/\na=again\n\xe9=latin\n#---\nspring.config.activate.on-profile=dev\nh=1\n";
        let documents = parse(text).unwrap();
        assert_eq!(documents.len(), 2);
        let properties: Vec<(String, Value)> = documents[0].properties.clone();
        let expected = [
            ("a", "again"),
            ("b", "two words"),
            ("c", "three"),
            ("d", "multiline"),
            ("e", "\u{e9}t\u{e9}"),
            ("f[0]", "x"),
            ("f[1]", "y"),
            ("g", "#not-comment"),
            ("url", "http://x:8080/"),
            ("\u{e9}", "latin"),
        ];
        let expected: Vec<(String, Value)> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        assert_eq!(properties, expected);
        assert_eq!(documents[1].properties[1], ("h".to_owned(), json!("1")));
    }
}
