//! The Config Server's URL shapes (spec §1). They cannot all be axum route patterns (a
//! file name is split at its last hyphen), so one handler takes every path, splits it into
//! percent-decoded segments and dispatches on their shape.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde_json::{json, Map, Value};

use super::error::ConfigError;
use super::{encryption, render};
use super::{environment, ConfigSources};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Yaml,
    Properties,
    Json,
}

enum Shape {
    Health,
    Environment {
        application: String,
        profiles: Vec<String>,
        label: Option<String>,
    },
    Rendered {
        application: String,
        profiles: Vec<String>,
        label: Option<String>,
        format: Format,
    },
    File {
        application: String,
        profiles: Vec<String>,
        label: String,
        path: String,
    },
}

pub fn routes(sources: ConfigSources) -> Router {
    Router::new()
        .route("/", any(handle))
        .route("/{*path}", any(handle))
        .with_state(sources)
}

async fn handle(State(sources): State<ConfigSources>, request: Request) -> Response {
    if let Some(endpoint) = encryption::endpoint(request.method(), request.uri().path()) {
        return match endpoint {
            Ok(endpoint) => encryption::answer(&sources, endpoint, request).await,
            Err(response) => response,
        };
    }
    let shape = match parse(request.uri().path(), sources.validate_profiles) {
        Ok(Some(shape)) => shape,
        Ok(None) => return ConfigError::NotFound.into_response(),
        Err(error) => return error.into_response(),
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n").into_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let resolve = !request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .any(|pair| pair == "resolvePlaceholders=false");
    // Reading files (and git objects) blocks; keep it off the async workers.
    let answer = tokio::task::spawn_blocking(move || answer(&sources, shape, resolve)).await;
    match answer {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => error.into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response(),
    }
}

fn answer(sources: &ConfigSources, shape: Shape, resolve: bool) -> Result<Response, ConfigError> {
    match shape {
        Shape::Health => Ok(json_body(&json!({"status": "UP"}), "application/json")),
        Shape::Environment {
            application,
            profiles,
            label,
        } => {
            let environment = environment(sources, &application, &profiles, label.as_deref())?;
            let property_sources: Vec<Value> = environment
                .sources
                .iter()
                .map(|source| {
                    let map: Map<String, Value> = source.source.iter().cloned().collect();
                    json!({"name": source.name, "source": map})
                })
                .collect();
            let body = json!({
                "name": environment.name,
                "profiles": environment.profiles,
                "label": environment.label,
                "version": environment.version,
                "state": null,
                "propertySources": property_sources,
            });
            Ok(json_body(&body, "application/json"))
        }
        Shape::Rendered {
            application,
            profiles,
            label,
            format,
        } => {
            let environment = environment(sources, &application, &profiles, label.as_deref())?;
            let mut merged = render::merged(&environment);
            if resolve {
                render::resolve_placeholders(&mut merged)?;
            }
            Ok(match format {
                Format::Properties => text_body(render::to_properties(&merged)),
                Format::Json => json_body(&render::to_tree(&merged)?, "application/json"),
                Format::Yaml => text_body(render::to_yaml(&render::to_tree(&merged)?)),
            })
        }
        Shape::File {
            application,
            profiles,
            label,
            path,
        } => {
            // The environment is built first so an unknown label is 404 here too.
            environment(sources, &application, &profiles, Some(&label))?;
            let repository = sources.repository.as_ref().ok_or(ConfigError::NotFound)?;
            let snapshot = repository.snapshot(Some(&label))?;
            let bytes = snapshot.read(&path)?.ok_or(ConfigError::NotFound)?;
            Ok(text_body(String::from_utf8_lossy(&bytes).into_owned()))
        }
    }
}

fn json_body(value: &Value, content_type: &'static str) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        value.to_string(),
    )
        .into_response()
}

fn text_body(text: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
        text,
    )
        .into_response()
}

/// Recognizes a path; `Ok(None)` for a path that is no Config Server resource.
/// `validate` checks profile names as Spring's server does by default.
fn parse(path: &str, validate: bool) -> Result<Option<Shape>, ConfigError> {
    let profiles = |text: &str| profiles(text, validate);
    let raw: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let raw: Vec<&str> = if raw.last() == Some(&"") {
        raw[..raw.len() - 1].to_vec()
    } else {
        raw
    };
    if raw == ["actuator", "health"] {
        return Ok(Some(Shape::Health));
    }
    let segments: Vec<String> = raw
        .iter()
        .map(|segment| decode(segment))
        .collect::<Result<_, _>>()?;
    let shape = match segments.as_slice() {
        [file] => match file_form(file, validate)? {
            Some((application, profiles, format)) => Shape::Rendered {
                application,
                profiles,
                label: None,
                format,
            },
            None => return Ok(None),
        },
        [first, second] => match file_form(second, validate)? {
            Some((application, profiles, format)) => Shape::Rendered {
                application,
                profiles,
                label: Some(label(first)?),
                format,
            },
            None if has_extension(second) => return Ok(None),
            None => Shape::Environment {
                application: name(first)?,
                profiles: profiles(second)?,
                label: None,
            },
        },
        [application, profile_list, label_text] => Shape::Environment {
            application: name(application)?,
            profiles: profiles(profile_list)?,
            label: Some(label(label_text)?),
        },
        [application, profile_list, label_text, rest @ ..] if !rest.is_empty() => {
            for part in rest {
                check_part(part)?;
            }
            Shape::File {
                application: name(application)?,
                profiles: profiles(profile_list)?,
                label: label(label_text)?,
                path: rest.join("/"),
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(shape))
}

pub(super) fn decode(segment: &str) -> Result<String, ConfigError> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut position = 0;
    while position < bytes.len() {
        // Bytes, not `&str` slices: a multi-byte character after `%` must not split.
        let hex = bytes
            .get(position + 1..position + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok());
        if bytes[position] == b'%' && hex.is_some() {
            if let Ok(byte) = u8::from_str_radix(hex.unwrap_or_default(), 16) {
                out.push(byte);
                position += 3;
                continue;
            }
        }
        out.push(bytes[position]);
        position += 1;
    }
    String::from_utf8(out)
        .map_err(|_| ConfigError::BadRequest("the path is not valid UTF-8".into()))
}

fn has_extension(file: &str) -> bool {
    [".yml", ".yaml", ".properties", ".json"]
        .iter()
        .any(|extension| file.ends_with(extension))
}

/// `{application}-{profiles}.{ext}`, split at the last hyphen of the stem.
fn file_form(
    file: &str,
    validate: bool,
) -> Result<Option<(String, Vec<String>, Format)>, ConfigError> {
    let (stem, format) = if let Some(stem) = file
        .strip_suffix(".yml")
        .or_else(|| file.strip_suffix(".yaml"))
    {
        (stem, Format::Yaml)
    } else if let Some(stem) = file.strip_suffix(".properties") {
        (stem, Format::Properties)
    } else if let Some(stem) = file.strip_suffix(".json") {
        (stem, Format::Json)
    } else {
        return Ok(None);
    };
    let Some((application, profile_list)) = stem.rsplit_once('-') else {
        return Ok(None);
    };
    Ok(Some((
        name(application)?,
        profiles(profile_list, validate)?,
        format,
    )))
}

/// Rejects what could name a file outside the repository or confuse the lookup.
fn check_part(text: &str) -> Result<(), ConfigError> {
    if text.contains("..")
        || text.contains('#')
        || text.starts_with("(_)")
        || text.contains('\\')
        || text.contains('\0')
    {
        return Err(ConfigError::BadRequest(format!(
            "invalid path segment {text:?}"
        )));
    }
    Ok(())
}

pub(super) fn name(text: &str) -> Result<String, ConfigError> {
    check_part(text)?;
    if text.is_empty() {
        return Err(ConfigError::BadRequest(
            "the application name is empty".into(),
        ));
    }
    let name = text.replace("(_)", "/");
    if name.starts_with('/') {
        return Err(ConfigError::BadRequest(format!(
            "invalid application name {text:?}"
        )));
    }
    Ok(name)
}

fn label(text: &str) -> Result<String, ConfigError> {
    check_part(text)?;
    Ok(text.replace("(_)", "/"))
}

/// A comma-separated profile list. With `validate`, each profile is checked as Spring's
/// `PathUtils.isInvalidProfiles` does (4.3.3 and later): not blank, only letters, digits and
/// `-_.+@`, starting and ending with a letter or digit. Java walks UTF-16 units, so a
/// character beyond the Basic Multilingual Plane fails on its second surrogate; beyond ASCII
/// "letter or digit" is Rust's Unicode alphabetic or numeric, which also admits the few
/// letter-like numbers and vowel signs Java's `isLetterOrDigit` does not.
pub(super) fn profiles(text: &str, validate: bool) -> Result<Vec<String>, ConfigError> {
    check_part(text)?;
    let letter_or_digit = |c: char| c.is_alphanumeric() && u32::from(c) <= 0xFFFF;
    text.split(',')
        .map(|profile| {
            let valid = !validate
                || (!profile.is_empty()
                    && profile
                        .chars()
                        .all(|c| letter_or_digit(c) || matches!(c, '-' | '.' | '_' | '+' | '@'))
                    && profile.starts_with(letter_or_digit)
                    && profile.ends_with(letter_or_digit));
            if valid {
                Ok(profile.to_owned())
            } else {
                Err(ConfigError::BadRequest(format!(
                    "invalid profile {profile:?}"
                )))
            }
        })
        .collect()
}

#[cfg(test)]
pub(super) fn decode_segment_for_tests(segment: &str) -> Result<String, ConfigError> {
    decode(segment)
}
