//! Java `.properties` files as Spring Boot reads them: ISO-8859-1 text, `=`/`:`/whitespace
//! separators, `\` line continuation, `#`/`!` comments, `\uXXXX` escapes, `key[]=a,b` lists,
//! and `#---` document separators. Every value is a string.

use serde_json::Value;

use super::yaml::Document;

pub fn parse(bytes: &[u8]) -> Vec<Document> {
    // ISO-8859-1: every byte is the code point of the same value.
    let text: String = bytes.iter().map(|byte| char::from(*byte)).collect();
    let mut documents = vec![Document {
        properties: Vec::new(),
    }];
    let mut lines = text.lines();
    while let Some(first) = lines.next() {
        let trimmed = first.trim_start();
        if trimmed == "#---" || trimmed == "!---" {
            documents.push(Document {
                properties: Vec::new(),
            });
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
        let properties = &mut documents.last_mut().expect("never empty").properties;
        if let Some(list) = key.strip_suffix("[]") {
            for (position, item) in value.split(',').enumerate() {
                set(
                    properties,
                    format!("{list}[{position}]"),
                    item.trim().to_owned(),
                );
            }
        } else {
            set(properties, key, value);
        }
    }
    documents
}

/// Later duplicates overwrite the value and keep the first position, as `Properties` does.
fn set(properties: &mut Vec<(String, Value)>, key: String, value: String) {
    match properties.iter_mut().find(|(existing, _)| *existing == key) {
        Some((_, slot)) => *slot = Value::String(value),
        None => properties.push((key, Value::String(value))),
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
        let documents = parse(text);
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
