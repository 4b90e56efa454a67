//! Builds the Environment for (application, profiles, label): the property sources in
//! precedence order, highest first, from the KV store (Spring Cloud Consul Config's layout)
//! and from the repository (Spring Cloud Config's file layout).
//!
//! Repository order (spec §3): profile files, later profile first, `A-P` above
//! `application-P`; then `A`, then `application`; per base name `.properties` above `.yml`
//! above `.yaml`. In a multi-document file, later active documents rank first, and a
//! document for a profile that is not requested is left out.
//!
//! The server reads a repository as a Spring Boot app started with
//! `spring.config.name=application,A` would, so a comma-separated application
//! (`orders,shared`) is several config names: `application,orders,shared`, a later name
//! above an earlier one. For each profile, `shared-P` ranks above `orders-P` above
//! `application-P`, and the plain files follow in the same order.
//!
//! Several labels (`/orders/dev/v1,v2`, the client's `send-all-labels`) are read one at a
//! time as Spring's git backend does: the labels in reverse, each label's sources appended,
//! so the last label ranks first; the versions are joined with `,` in request order.
//!
//! KV order (Spring Cloud Consul Config): `config/A,Pn/` ... `config/A,P1/`, `config/A/`,
//! then the same for `application` (and for each name of a comma-separated application,
//! later first). A context's `data` key holds a YAML (or properties) document; every other
//! key under it is one property (`/` becomes `.`). KV sources rank above repository files,
//! so a value changed in Consul's KV wins for both kinds of client. They do not depend on
//! the label, so they are listed once.

use serde_json::Value;

use super::error::ConfigError;
use super::repository::Snapshot;
use super::yaml::YamlError;
use super::{properties, yaml};
use ferry_core::kv::KvStore;

#[derive(Clone, Debug, PartialEq)]
pub struct PropertySource {
    pub name: String,
    pub source: Vec<(String, Value)>,
}

#[derive(Clone, Debug)]
pub struct Environment {
    pub name: String,
    pub profiles: Vec<String>,
    pub label: Option<String>,
    pub version: Option<String>,
    pub sources: Vec<PropertySource>,
}

const EXTENSIONS: [&str; 3] = ["properties", "yml", "yaml"];

/// The Environment of `application` (one name or a comma-separated list) for `profiles`,
/// from `snapshots`: one per requested label, in request order.
pub fn build(
    snapshots: &[Snapshot<'_>],
    kv: Option<&KvStore>,
    application: &str,
    profiles: &[String],
    label: Option<&str>,
) -> Result<Environment, ConfigError> {
    let names = config_names(application);
    let mut sources = Vec::new();
    if let Some(kv) = kv {
        sources.extend(kv_sources(kv, &names, profiles)?);
    }
    for snapshot in snapshots.iter().rev() {
        for base in base_names(&names, profiles) {
            for extension in EXTENSIONS {
                let relative = format!("{base}.{extension}");
                if let Some(bytes) = snapshot.read(&relative)? {
                    let documents = parse_file(&relative, extension, &bytes)?;
                    sources.extend(active_sources(
                        &snapshot.source_name(&relative),
                        documents,
                        profiles,
                    ));
                }
            }
        }
    }
    let versions: Vec<String> = snapshots.iter().filter_map(Snapshot::version).collect();
    Ok(Environment {
        name: application.to_owned(),
        profiles: profiles.to_vec(),
        label: label.map(str::to_owned),
        version: (!versions.is_empty()).then(|| versions.join(",")),
        sources,
    })
}

/// The config names Spring's server reads for `application`: `application` and then each
/// comma-separated name, lowest priority first, each once.
fn config_names(application: &str) -> Vec<&str> {
    let mut names = vec!["application"];
    for name in application.split(',') {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// File base names, highest priority first, each once.
fn base_names(names: &[&str], profiles: &[String]) -> Vec<String> {
    let mut bases: Vec<String> = Vec::new();
    let mut add = |base: String| {
        if !bases.contains(&base) {
            bases.push(base);
        }
    };
    for profile in profiles.iter().rev() {
        for name in names.iter().rev() {
            add(format!("{name}-{profile}"));
        }
    }
    for name in names.iter().rev() {
        add((*name).to_owned());
    }
    bases
}

fn parse_file(
    relative: &str,
    extension: &str,
    bytes: &[u8],
) -> Result<Vec<yaml::Document>, ConfigError> {
    let malformed = |reason: String| ConfigError::Malformed {
        file: relative.to_owned(),
        reason,
    };
    if extension == "properties" {
        return properties::parse(bytes).map_err(malformed);
    }
    let text = std::str::from_utf8(bytes).map_err(|error| malformed(error.to_string()))?;
    yaml::parse(text).map_err(|error| malformed(error.to_string()))
}

/// The documents that apply to `profiles`, later ones first, named as Spring names them.
fn active_sources(
    name: &str,
    documents: Vec<yaml::Document>,
    profiles: &[String],
) -> Vec<PropertySource> {
    let several = documents.len() > 1;
    let mut sources: Vec<PropertySource> = documents
        .into_iter()
        .enumerate()
        .filter(|(_, document)| applies(document, profiles))
        .filter(|(_, document)| !document.properties.is_empty())
        .map(|(position, document)| PropertySource {
            name: if several {
                format!("{name} (document #{position})")
            } else {
                name.to_owned()
            },
            source: document.properties,
        })
        .collect();
    sources.reverse();
    sources
}

/// Whether a document's profile condition (`spring.config.activate.on-profile`, or the old
/// `spring.profiles`) holds: any listed profile (`,` or `|`) requested, `!p` meaning not `p`.
pub fn applies(document: &yaml::Document, profiles: &[String]) -> bool {
    let condition = document
        .properties
        .iter()
        .find(|(key, _)| key == "spring.config.activate.on-profile" || key == "spring.profiles")
        .map(|(_, value)| match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        });
    let Some(condition) = condition else {
        return true;
    };
    condition
        .split([',', '|'])
        .map(str::trim)
        .filter(|term| !term.is_empty())
        .any(|term| match term.strip_prefix('!') {
            Some(negated) => !profiles.iter().any(|profile| profile == negated.trim()),
            None => profiles.iter().any(|profile| profile == term),
        })
}

fn kv_sources(
    kv: &KvStore,
    names: &[&str],
    profiles: &[String],
) -> Result<Vec<PropertySource>, ConfigError> {
    let mut contexts: Vec<String> = Vec::new();
    for name in names.iter().rev() {
        for profile in profiles.iter().rev() {
            contexts.push(format!("config/{name},{profile}/"));
        }
        contexts.push(format!("config/{name}/"));
    }
    contexts.dedup();
    let mut sources = Vec::new();
    for context in contexts {
        let (_, entries) = kv.list(&context);
        let mut source: Vec<(String, Value)> = Vec::new();
        for entry in &entries {
            let rest = &entry.key[context.len()..];
            if rest.is_empty() || rest.ends_with('/') {
                continue;
            }
            if rest == "data" {
                let file = entry.key.as_str();
                let malformed = |reason: String| ConfigError::Malformed {
                    file: file.to_owned(),
                    reason,
                };
                let documents = match yaml::parse(&String::from_utf8_lossy(&entry.value)) {
                    Ok(documents)
                        if documents.iter().any(|document| !document_is_text(document)) =>
                    {
                        documents
                    }
                    Ok(_) => properties::parse(&entry.value).map_err(malformed)?,
                    // YAML past a bound is refused, never read again as properties.
                    Err(YamlError::Limit(reason)) => return Err(malformed(reason)),
                    Err(YamlError::Syntax(reason)) => {
                        // Not YAML: a properties document is the other format Spring reads.
                        let parsed = properties::parse(&entry.value).map_err(malformed)?;
                        if parsed.iter().all(|document| document.properties.is_empty()) {
                            return Err(malformed(reason));
                        }
                        parsed
                    }
                };
                for document in documents
                    .into_iter()
                    .filter(|document| applies(document, profiles))
                {
                    source.extend(document.properties);
                }
            } else {
                source.push((
                    rest.replace('/', "."),
                    Value::String(String::from_utf8_lossy(&entry.value).into_owned()),
                ));
            }
        }
        if !source.is_empty() {
            sources.push(PropertySource {
                name: format!("consul:{context}"),
                source,
            });
        }
    }
    Ok(sources)
}

/// A YAML reading of a properties text is one plain string (`document`); that means the
/// value is not YAML.
fn document_is_text(document: &yaml::Document) -> bool {
    document.properties.len() <= 1 && document.properties.iter().all(|(key, _)| key == "document")
}
