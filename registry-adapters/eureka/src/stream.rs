//! Reads a JSON `applications` document (a full registry or a delta, as a legacy Eureka
//! server answers it) one instance at a time: each instance becomes a small JSON tree,
//! is decoded by `decode` like any other, and is dropped before the next is read. A tree
//! of the whole document would cost several times the document's size at once (10,000
//! instances: about ten times its 10 MB); this costs one instance's.
//!
//! The result is exactly `decode::applications_document_lenient`'s on the same document:
//! the same headers, the same instances, the same refusals.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use ferry_core::model::{Instance, Millis};

use super::decode::{instance, scalar_text, Applications, DecodeError, Origin};

/// Why a document could not be read at all (one bad instance is only refused).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Document(#[from] DecodeError),
}

/// Reads `body`, an `{"applications": {...}}` document; instances that do not decode are
/// left out and returned with the reason.
pub fn applications_json(
    body: &[u8],
    now: Millis,
) -> Result<(Applications, Vec<DecodeError>), StreamError> {
    let mut reader = Reader {
        now,
        applications: None,
        refused: Vec::new(),
    };
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    Root(&mut reader).deserialize(&mut deserializer)?;
    deserializer.end()?;
    let applications = reader
        .applications
        .ok_or(DecodeError::MissingRoot("applications"))?;
    Ok((applications, reader.refused))
}

/// What has been read so far.
struct Reader {
    now: Millis,
    applications: Option<Applications>,
    refused: Vec<DecodeError>,
}

impl Reader {
    /// Decodes one instance's tree and keeps it (or its refusal).
    fn take(&mut self, tree: &Value, into: &mut Vec<Instance>) {
        let decoded = tree
            .as_object()
            .ok_or(DecodeError::WrongType {
                field: "instance",
                expected: "an object",
            })
            .and_then(|entry| instance(entry, Origin::RegistryDocument, self.now));
        match decoded {
            Ok(instance) => into.push(instance),
            Err(error) => self.refused.push(error),
        }
    }
}

/// `{"applications": ...}`: anything else at the root is skipped.
struct Root<'a>(&'a mut Reader);

impl<'de> DeserializeSeed<'de> for Root<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Root<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an object with an `applications` root")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "applications" {
                map.next_value_seed(Apps(&mut *self.0))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// The `applications` object: its two headers and its `application` list.
struct Apps<'a>(&'a mut Reader);

impl<'de> DeserializeSeed<'de> for Apps<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Apps<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("the `applications` object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut applications = Applications {
            versions_delta: String::new(),
            hashcode: String::new(),
            apps: Vec::new(),
        };
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "versions__delta" | "versions_delta" => {
                    applications.versions_delta = scalar_text(&map.next_value::<Value>()?);
                }
                "apps__hashcode" | "apps_hashcode" => {
                    applications.hashcode = scalar_text(&map.next_value::<Value>()?);
                }
                "application" => map.next_value_seed(AppList {
                    reader: &mut *self.0,
                    apps: &mut applications.apps,
                })?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        self.0.applications = Some(applications);
        Ok(())
    }
}

/// `application`: a list of apps, or one app where a writer unwrapped a single element.
struct AppList<'a> {
    reader: &'a mut Reader,
    apps: &'a mut Vec<(String, Vec<Instance>)>,
}

impl<'de> DeserializeSeed<'de> for AppList<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AppList<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a list of applications")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(App {
                reader: &mut *self.reader,
                apps: &mut *self.apps,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        App {
            reader: self.reader,
            apps: self.apps,
        }
        .visit_map(map)
    }
}

/// One application: its name and its instances.
struct App<'a> {
    reader: &'a mut Reader,
    apps: &'a mut Vec<(String, Vec<Instance>)>,
}

impl<'de> DeserializeSeed<'de> for App<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for App<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an application object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut name = String::new();
        let mut instances = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "name" => name = scalar_text(&map.next_value::<Value>()?),
                "instance" => map.next_value_seed(InstanceList {
                    reader: &mut *self.reader,
                    instances: &mut instances,
                })?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        self.apps.push((name, instances));
        Ok(())
    }
}

/// `instance`: a list of instances, or one where a writer unwrapped a single element;
/// each is read as a tree of its own and decoded at once.
struct InstanceList<'a> {
    reader: &'a mut Reader,
    instances: &'a mut Vec<Instance>,
}

impl<'de> DeserializeSeed<'de> for InstanceList<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for InstanceList<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a list of instances")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(tree) = seq.next_element::<Value>()? {
            self.reader.take(&tree, self.instances);
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let tree = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        self.reader.take(&tree, self.instances);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::applications_document_lenient;

    fn both(body: &str) -> (Applications, Vec<DecodeError>) {
        let streamed = applications_json(body.as_bytes(), 7).unwrap();
        let tree: Value = serde_json::from_str(body).unwrap();
        let whole = applications_document_lenient(&tree, 7).unwrap();
        assert_eq!(streamed, whole, "the same as the tree decoder");
        streamed
    }

    const INSTANCE: &str = r#"{"instanceId":"o-1","hostName":"h1","app":"ORDERS",
        "ipAddr":"10.0.0.1","status":"UP","port":{"$":8080,"@enabled":"true"},
        "dataCenterInfo":{"@class":"x","name":"MyOwn"},"metadata":{"zone":"a"},
        "actionType":"ADDED"}"#;

    #[test]
    fn reads_what_the_tree_decoder_reads() {
        let body = format!(
            r#"{{"applications":{{"versions__delta":"3","apps__hashcode":"UP_2_",
            "application":[{{"name":"ORDERS","instance":[{INSTANCE},
              {{"instanceId":"o-2","app":"ORDERS","ipAddr":"10.0.0.2","status":"UP",
                "port":{{"$":8081,"@enabled":"true"}},
                "dataCenterInfo":{{"@class":"x","name":"MyOwn"}}}}]}},
              {{"name":"EMPTY","instance":[]}}]}}}}"#
        );
        let (applications, refused) = both(&body);
        assert_eq!(applications.hashcode, "UP_2_");
        assert_eq!(applications.versions_delta, "3");
        assert_eq!(applications.apps.len(), 2);
        assert_eq!(applications.apps[0].1.len(), 1);
        assert_eq!(refused, [DecodeError::Missing("hostName")]);
    }

    #[test]
    fn single_elements_unwrapped_and_no_applications_read_alike() {
        both(&format!(
            r#"{{"applications":{{"apps__hashcode":"UP_1_","application":{{"name":"ORDERS","instance":{INSTANCE}}}}}}}"#
        ));
        both(r#"{"applications":{"versions__delta":1,"apps__hashcode":"","application":[]}}"#);
        both(r#"{"applications":{"apps__hashcode":"","application":null}}"#);
    }

    #[test]
    fn what_is_not_a_document_is_refused_whole() {
        assert!(applications_json(b"{\"instance\":{}}", 0).is_err());
        assert!(applications_json(b"<applications/>", 0).is_err());
        assert!(applications_json(br#"{"applications":{"application":[3]}}"#, 0).is_err());
        assert!(applications_json(br#"{"applications":{"application":[]}} trailing"#, 0).is_err());
        assert!(applications_json(
            br#"{"applications":{"application":[{"name":"A","instance":[{"#,
            0
        )
        .is_err());
    }
}
