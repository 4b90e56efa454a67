//! The KV mirror: keys under one prefix copied from the legacy Consul into Ferry's KV
//! store, one way. A blocking `GET /v1/kv/<prefix>?recurse` brings each change within one
//! wait; every answer is applied by difference (a put where the value or flags differ, a
//! delete for a key Ferry holds under the prefix that the legacy side no longer has), so
//! an unchanged key takes no index in Ferry. An answer Ferry cannot read changes nothing;
//! an unreachable source leaves the keys as they are.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::watch;

use ferry_core::kv::KvStore;

use super::client::ConsulSyncError;
use super::{Shared, OWNER};

/// One legacy key's value and flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct LegacyValue {
    pub value: Bytes,
    pub flags: u64,
}

/// The entries of a recurse read (`None`, a 404: nothing under the prefix).
pub(super) fn parse_entries(body: Option<&Value>) -> Result<BTreeMap<String, LegacyValue>, String> {
    let Some(body) = body else {
        return Ok(BTreeMap::new());
    };
    let entries = body.as_array().ok_or("not a list of entries")?;
    let mut parsed = BTreeMap::new();
    for entry in entries {
        let key = entry
            .get("Key")
            .and_then(Value::as_str)
            .filter(|key| !key.is_empty())
            .ok_or("an entry without a key")?;
        let value = match entry.get("Value") {
            None | Some(Value::Null) => Bytes::new(),
            Some(Value::String(encoded)) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map(Bytes::from)
                .map_err(|_| format!("the value of {key:?} is not base64"))?,
            Some(_) => return Err(format!("the value of {key:?} is not a string")),
        };
        let flags = entry.get("Flags").and_then(Value::as_u64).unwrap_or(0);
        parsed.insert(key.to_owned(), LegacyValue { value, flags });
    }
    Ok(parsed)
}

/// Makes Ferry's keys under `prefix` what the legacy side holds; how many keys changed.
pub(super) fn apply(
    kv: &KvStore,
    prefix: &str,
    legacy: &BTreeMap<String, LegacyValue>,
) -> Result<usize, ferry_core::kv::KvError> {
    let (_, held) = kv.list(prefix);
    let mut changed = 0;
    for (key, wanted) in legacy.iter().filter(|(key, _)| key.starts_with(prefix)) {
        let same = held
            .iter()
            .find(|entry| &entry.key == key)
            .is_some_and(|entry| entry.value == wanted.value && entry.flags == wanted.flags);
        if !same {
            kv.put(key, wanted.value.clone(), wanted.flags, None, None)?;
            changed += 1;
        }
    }
    for entry in held.iter().filter(|entry| !legacy.contains_key(&entry.key)) {
        kv.delete(&entry.key, false, None)?;
        changed += 1;
    }
    Ok(changed)
}

/// Follows the prefix until shutdown.
pub(super) async fn run(
    shared: Arc<Shared>,
    kv: Arc<KvStore>,
    prefix: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut index = 0u64;
    // Segment by segment, so the prefix's slashes stay slashes in the path.
    let mut segments = vec!["v1", "kv"];
    segments.extend(prefix.trim_start_matches('/').split('/'));
    let query = [("recurse", String::new())];
    loop {
        let read = shared
            .client
            .get(&segments, &query, Some((index, shared.settings.interval)));
        let answer = tokio::select! {
            answer = read => answer,
            _ = super::stopped(&mut shutdown) => return,
        };
        let now = shared.registry.now();
        let failure = match answer {
            Ok(answer) => match parse_entries(answer.body.as_ref()) {
                Ok(entries) => {
                    if let Err(error) = apply(&kv, &prefix, &entries) {
                        tracing::warn!(source = OWNER, %error, "KV mirror write failed");
                        shared.handle.status.failed(&error.to_string(), false, now);
                    }
                    index = if answer.index < index {
                        0
                    } else {
                        answer.index
                    };
                    None
                }
                Err(reason) => Some(ConsulSyncError::Malformed {
                    request: format!("GET /v1/kv/{prefix}?recurse"),
                    reason,
                }),
            },
            Err(error) => Some(error),
        };
        // Without an index (or after a failure) a read would not block: pace it.
        if failure.is_some() || index == 0 {
            if let Some(error) = failure {
                tracing::warn!(source = OWNER, %error, "KV mirror read failed");
                shared
                    .handle
                    .status
                    .failed(&error.to_string(), error.unreachable(), now);
                index = 0;
            }
            tokio::select! {
                _ = tokio::time::sleep(shared.settings.interval) => {}
                _ = super::stopped(&mut shutdown) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use ferry_core::change_index::ChangeIndex;
    use ferry_core::clock::Clock;

    use super::*;

    #[test]
    fn entries_decode_and_bad_ones_refuse_the_answer() {
        let body = json!([
            {"Key": "config/a", "Value": "aGVsbG8=", "Flags": 3},
            {"Key": "config/b", "Value": null},
        ]);
        let entries = parse_entries(Some(&body)).unwrap();
        assert_eq!(entries["config/a"].value, Bytes::from_static(b"hello"));
        assert_eq!(entries["config/a"].flags, 3);
        assert!(entries["config/b"].value.is_empty());
        assert!(parse_entries(None).unwrap().is_empty());
        assert!(parse_entries(Some(&json!({"Key": "x"}))).is_err());
        assert!(parse_entries(Some(&json!([{"Value": "aGk="}]))).is_err());
        assert!(parse_entries(Some(&json!([{"Key": "k", "Value": "%%"}]))).is_err());
    }

    #[test]
    fn apply_puts_changes_deletes_leftovers_and_rewrites_nothing_unchanged() {
        let kv = KvStore::in_memory(Arc::new(ChangeIndex::new(1)), Clock::System, "n1");
        kv.put("config/old", Bytes::from_static(b"x"), 0, None, None)
            .unwrap();
        kv.put("other/keep", Bytes::from_static(b"y"), 0, None, None)
            .unwrap();
        let legacy: BTreeMap<String, LegacyValue> = [(
            "config/a".to_owned(),
            LegacyValue {
                value: Bytes::from_static(b"1"),
                flags: 0,
            },
        )]
        .into_iter()
        .collect();
        assert_eq!(apply(&kv, "config/", &legacy).unwrap(), 2);
        assert_eq!(apply(&kv, "config/", &legacy).unwrap(), 0);
        let (_, keys) = kv.keys("", None);
        assert_eq!(keys, vec!["config/a", "other/keep"]);
    }
}
