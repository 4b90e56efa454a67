//! Spring Cloud Config's encryption, as its server has it with a symmetric `encrypt.key`:
//! `{cipher}` values decrypted before they are served (`CipherEnvironmentEncryptor`), and
//! the `/encrypt`, `/decrypt`, `/encrypt/status` and `/key` endpoints
//! (`EncryptionController`), each failure with the status the server gives it.
//!
//! Without a key Spring's server holds a `FailsafeTextEncryptor` (spring-cloud-context
//! registers it whenever spring-security-crypto is present): every `{cipher}` value is served
//! as `invalid.<name>: <n/a>`, and the endpoints fail with 500. `/key` is 404 "No public key
//! available" for anything but an RSA key, which Ferry does not take.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{json, Value};

use super::cipher::TextEncryptor;
use super::environment::Environment;
use super::error::ConfigError;
use super::ConfigSources;

/// The prefix of an encrypted value in a configuration file.
const CIPHER: &str = "{cipher}";

/// What a decrypted value that failed becomes: `invalid.<name>` with this value.
const NOT_AVAILABLE: &str = "<n/a>";

/// Decrypts every `{cipher}` value in place, as `CipherEnvironmentEncryptor` does: the
/// property moves to the end of its source (Java removes and re-adds it), and a value that
/// cannot be decrypted (no key, wrong key, not hex) becomes `invalid.<name>: <n/a>`.
pub fn decrypt_environment(environment: &mut Environment, encryptor: Option<&TextEncryptor>) {
    for source in &mut environment.sources {
        let is_cipher = |value: &Value| value.as_str().is_some_and(|text| text.starts_with(CIPHER));
        if !source.source.iter().any(|(_, value)| is_cipher(value)) {
            continue;
        }
        let (ciphers, mut kept): (Vec<_>, Vec<_>) = std::mem::take(&mut source.source)
            .into_iter()
            .partition(|(_, value)| is_cipher(value));
        for (name, value) in ciphers {
            let encrypted = value.as_str().unwrap_or_default()[CIPHER.len()..].to_owned();
            // Without a key Spring's failsafe encryptor throws, like a wrong key.
            let decrypted = encryptor.map(|encryptor| encryptor.decrypt(strip_prefix(&encrypted)));
            let (name, value) = match decrypted {
                Some(Ok(plain)) => (name, plain),
                Some(Err(_)) | None => {
                    tracing::warn!(property = %name, "cannot decrypt a {{cipher}} value");
                    (format!("invalid.{name}"), NOT_AVAILABLE.to_owned())
                }
            };
            match kept.iter_mut().find(|(existing, _)| *existing == name) {
                Some(entry) => entry.1 = Value::String(value),
                None => kept.push((name, Value::String(value))),
            }
        }
        source.source = kept;
    }
}

/// An encryption endpoint, with the application and profiles it names.
#[derive(Debug)]
pub struct Endpoint {
    kind: Kind,
    name: String,
    profiles: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Encrypt,
    Decrypt,
    Status,
    Key,
}

/// The endpoint `method` and `path` ask for, or `None` when the path is the Environment's
/// (`GET /encrypt/x/y` is application `encrypt`, profiles `x`, label `y`, as in Spring).
pub fn endpoint(method: &Method, path: &str) -> Option<Result<Endpoint, Response>> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let read = method == Method::GET || method == Method::HEAD;
    let (kind, name, profiles) = match (segments.as_slice(), read) {
        (["encrypt" | "decrypt"], true) => return Some(Err(method_not_allowed("POST"))),
        (["encrypt"], false) => (Kind::Encrypt, "application", "default"),
        (["decrypt"], false) => (Kind::Decrypt, "application", "default"),
        (["encrypt", name, profiles], false) => (Kind::Encrypt, *name, *profiles),
        (["decrypt", name, profiles], false) => (Kind::Decrypt, *name, *profiles),
        (["encrypt", "status"], true) => (Kind::Status, "application", "default"),
        (["key"], true) => (Kind::Key, "application", "default"),
        (["key"], false) => return Some(Err(method_not_allowed("GET, HEAD"))),
        (["key", name, profiles], true) => (Kind::Key, *name, *profiles),
        _ => return None,
    };
    Some(Ok(Endpoint {
        kind,
        name: name.to_owned(),
        profiles: profiles.to_owned(),
    }))
}

/// Answers one encryption request.
pub async fn answer(sources: &ConfigSources, endpoint: Endpoint, request: Request) -> Response {
    match respond(sources, endpoint, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn respond(
    sources: &ConfigSources,
    endpoint: Endpoint,
    request: Request,
) -> Result<Response, EncryptionError> {
    let (parts, body) = request.into_parts();
    let data = match endpoint.kind {
        Kind::Encrypt | Kind::Decrypt => Some(read_body(sources, &parts.headers, body).await?),
        Kind::Status | Kind::Key => None,
    };
    // Spring checks the name and profiles before it looks for a key.
    super::routes::name(&super::routes::decode(&endpoint.name)?)?;
    super::routes::profiles(
        &super::routes::decode(&endpoint.profiles)?,
        sources.validate_profiles,
    )?;
    let encryptor = sources.encryptor.as_deref();
    match (endpoint.kind, data) {
        (Kind::Key, _) => Err(EncryptionError::NoPublicKey),
        (Kind::Status, _) => {
            encryptor.ok_or(EncryptionError::NoKey)?;
            Ok(json_response(StatusCode::OK, json!({"status": "OK"})))
        }
        (Kind::Encrypt, Some((data, media_type))) => {
            let input = strip_form_data(&data, &media_type, false)?;
            let encryptor = encryptor.ok_or(EncryptionError::NoKey)?;
            let keys = encryptor_keys(&endpoint.name, &endpoint.profiles, &input);
            let encrypted = encryptor.encrypt(strip_prefix(&input));
            Ok(text_response(add_prefix(keys, &encrypted)))
        }
        (Kind::Decrypt, Some((data, media_type))) => {
            let encryptor = encryptor.ok_or(EncryptionError::NoKey)?;
            let input = strip_form_data(strip_prefix(&data), &media_type, true)
                .map_err(|_| EncryptionError::InvalidCipher)?;
            match encryptor.decrypt(&input) {
                Ok(plain) => Ok(text_response(plain)),
                Err(error) if error.is_invalid_cipher() => Err(EncryptionError::InvalidCipher),
                Err(error) => Err(EncryptionError::Internal(error.to_string())),
            }
        }
        (Kind::Encrypt | Kind::Decrypt, None) => Err(EncryptionError::MissingBody),
    }
}

/// The body as Spring's `@RequestBody String` sees it, and the request's media type (which
/// Spring requires: no `Content-Type` is 400).
async fn read_body(
    sources: &ConfigSources,
    headers: &HeaderMap,
    body: Body,
) -> Result<(String, String), EncryptionError> {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.trim().to_owned())
        .ok_or(EncryptionError::MissingContentType)?;
    let bytes =
        ferry_http::request_body::read(headers, body, sources.max_body_bytes, sources.body_timeout)
            .await?;
    // Spring Boot reads request text as UTF-8.
    let mut data = String::from_utf8_lossy(&bytes).into_owned();
    if essence(&media_type) == "application/x-www-form-urlencoded" {
        data = servlet_form_body(&data);
    }
    if data.is_empty() {
        return Err(EncryptionError::MissingBody);
    }
    Ok((data, media_type))
}

/// The media type without parameters, lower-cased.
fn essence(media_type: &str) -> String {
    media_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// A form post's body as a servlet container hands it to Spring: the container parses the
/// parameters and Spring writes them back (`name=value&...`, URL-encoded), so `secret`
/// arrives as `secret=` and `a b` (`a+b` on the wire) as `a+b=`.
fn servlet_form_body(raw: &str) -> String {
    let mut parameters: Vec<(String, Vec<String>)> = Vec::new();
    for pair in raw.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (Ok(name), Ok(value)) = (url_decode(name), url_decode(value)) else {
            continue;
        };
        if name.is_empty() {
            continue;
        }
        match parameters
            .iter_mut()
            .find(|(existing, _)| *existing == name)
        {
            Some((_, values)) => values.push(value),
            None => parameters.push((name, vec![value])),
        }
    }
    let mut out = Vec::new();
    for (name, values) in &parameters {
        for value in values {
            out.push(format!("{}={}", url_encode(name), url_encode(value)));
        }
    }
    out.join("&")
}

/// `EncryptionController.stripFormData`: a body that ends in `=` and was not sent as
/// exactly `text/plain` is taken for a form body and URL-decoded; for cipher text a `+`
/// made a space is put back, and the `=` is dropped when what is left is hex or Base64.
fn strip_form_data(data: &str, media_type: &str, cipher: bool) -> Result<String, EncryptionError> {
    let plain_text = media_type.eq_ignore_ascii_case("text/plain");
    if !data.ends_with('=') || plain_text {
        return Ok(data.to_owned());
    }
    let mut data = url_decode(data).map_err(EncryptionError::Internal)?;
    if cipher {
        data = data.replace(' ', "+");
    }
    let candidate = data.strip_suffix('=').map(str::to_owned);
    if !cipher {
        return Ok(candidate.unwrap_or(data));
    }
    let odd = data.encode_utf16().count() % 2 == 1;
    if let (Some(candidate), true) = (candidate, odd) {
        let base64 = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
                .with_decode_allow_trailing_bits(true),
        );
        let is_hex = candidate.len() % 2 == 0 && hex::decode(&candidate).is_ok();
        if is_hex || base64.decode(candidate.as_bytes()).is_ok() {
            return Ok(candidate);
        }
    }
    Ok(data)
}

/// Java's `URLDecoder.decode` with UTF-8: `+` is a space, `%XX` a byte; a broken escape is
/// an error.
fn url_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut position = 0;
    while position < bytes.len() {
        match bytes[position] {
            b'+' => out.push(b' '),
            b'%' => {
                let byte = bytes
                    .get(position + 1..position + 3)
                    .and_then(|pair| std::str::from_utf8(pair).ok())
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .ok_or_else(|| {
                        "URLDecoder: Illegal hex characters in escape (%) pattern".to_owned()
                    })?;
                out.push(byte);
                position += 2;
            }
            byte => out.push(byte),
        }
        position += 1;
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Java's `URLEncoder.encode` with UTF-8: letters, digits and `.-*_` kept, space as `+`.
fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// Java regular expressions' `.` stops at these.
fn is_line_terminator(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// `EnvironmentPrefixHelper.stripPrefix`: the text after `{plain}`, or without its leading
/// `{key:value}` groups (Java's `^(\{.*?:.*?\})+`).
fn strip_prefix(value: &str) -> &str {
    if !value.contains('}') {
        return value;
    }
    if let Some(position) = value.find("{plain}") {
        return &value[position + "{plain}".len()..];
    }
    let mut rest = value;
    while let Some(after) = one_prefix(rest) {
        rest = after;
    }
    rest
}

/// What follows one `{...:...}` group at the start of `text`, matched lazily as Java does.
fn one_prefix(text: &str) -> Option<&str> {
    let inner = text.strip_prefix('{')?;
    let line = inner.split(is_line_terminator).next().unwrap_or_default();
    let colon = line.find(':')?;
    let close = line[colon + 1..].find('}')? + colon + 1;
    Some(&inner[close + 1..])
}

/// `EnvironmentPrefixHelper.getEncryptorKeys`: `name`, `profiles`, then each `{key:value}`
/// group in the text (before any `{plain}`), in order.
fn encryptor_keys(name: &str, profiles: &str, text: &str) -> Vec<(String, String)> {
    let mut keys = vec![
        ("name".to_owned(), name.to_owned()),
        ("profiles".to_owned(), profiles.to_owned()),
    ];
    let without = remove_greedy(&remove_greedy(text, "{name:"), "{profiles:");
    let mut text = without.as_str();
    if let Some(position) = text.find("{plain}") {
        text = &text[..position];
    }
    // Spring's `StringUtils.split(text, "}")`: the parts before and after the first `}`.
    while let Some((token, rest)) = text.split_once('}') {
        let token = token.trim_matches(|c: char| c <= ' ');
        if let Some(inside) = token.strip_prefix('{') {
            let (key, value) = match inside.find(':') {
                Some(colon) if !token.ends_with(':') => (&inside[..colon], &inside[colon + 1..]),
                _ => (inside, ""),
            };
            match keys.iter_mut().find(|(existing, _)| existing == key) {
                Some(entry) => entry.1 = value.to_owned(),
                None => keys.push((key.to_owned(), value.to_owned())),
            }
        }
        text = rest;
    }
    keys
}

/// Java's `replaceFirst("\\{name:.*\\}", "")`: from the first `{name:` that has a `}`
/// after it on its line, to the last `}` on that line.
fn remove_greedy(text: &str, opening: &str) -> String {
    let mut from = 0;
    while let Some(found) = text[from..].find(opening) {
        let start = from + found;
        let line_start = start + opening.len();
        let line = text[line_start..]
            .split(is_line_terminator)
            .next()
            .unwrap_or_default();
        if let Some(close) = line.rfind('}') {
            let end = line_start + close + 1;
            return format!("{}{}", &text[..start], &text[end..]);
        }
        from = start + 1;
    }
    text.to_owned()
}

/// `EnvironmentPrefixHelper.addPrefix`: the keys other than `name` and `profiles` written
/// back before the cipher text, so `{key:k}secret` encrypts to `{key:k}<hex>`.
fn add_prefix(keys: Vec<(String, String)>, encrypted: &str) -> String {
    let mut out = String::new();
    for (key, value) in keys {
        if key != "name" && key != "profiles" {
            out.push_str(&format!("{{{key}:{value}}}"));
        }
    }
    out.push_str(encrypted);
    out
}

/// The encryption endpoints' failures and the answers Spring's server gives them.
#[derive(Debug, thiserror::Error)]
enum EncryptionError {
    #[error(transparent)]
    Request(#[from] ConfigError),
    #[error("the request has no Content-Type")]
    MissingContentType,
    #[error("Required request body is missing")]
    MissingBody,
    #[error("{0}")]
    Body(#[from] ferry_http::request_body::BodyError),
    /// No key is configured: Spring's `FailsafeTextEncryptor` throws, which escapes as 500.
    #[error("No key was installed for the encryption service: start Ferry with --encrypt-key")]
    NoKey,
    #[error("Text not encrypted with this key")]
    InvalidCipher,
    #[error("No public key available")]
    NoPublicKey,
    #[error("{0}")]
    Internal(String),
}

impl IntoResponse for EncryptionError {
    fn into_response(self) -> Response {
        use ferry_http::request_body::BodyError;
        let (status, body) = match &self {
            EncryptionError::Request(error) => {
                return ConfigError::BadRequest(error.to_string()).into_response()
            }
            EncryptionError::InvalidCipher => (
                StatusCode::BAD_REQUEST,
                json!({"status": "INVALID", "description": self.to_string()}),
            ),
            EncryptionError::NoPublicKey => (
                StatusCode::NOT_FOUND,
                json!({"status": "NOT_FOUND", "description": self.to_string()}),
            ),
            EncryptionError::MissingContentType | EncryptionError::MissingBody => (
                StatusCode::BAD_REQUEST,
                error_body(StatusCode::BAD_REQUEST, &self),
            ),
            EncryptionError::Body(BodyError::TooLarge { .. }) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                error_body(StatusCode::PAYLOAD_TOO_LARGE, &self),
            ),
            EncryptionError::Body(BodyError::Timeout) => (
                StatusCode::REQUEST_TIMEOUT,
                error_body(StatusCode::REQUEST_TIMEOUT, &self),
            ),
            EncryptionError::Body(_) => (
                StatusCode::BAD_REQUEST,
                error_body(StatusCode::BAD_REQUEST, &self),
            ),
            EncryptionError::NoKey | EncryptionError::Internal(_) => {
                tracing::warn!(error = %self, "encryption request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    error_body(StatusCode::INTERNAL_SERVER_ERROR, &self),
                )
            }
        };
        json_response(status, body)
    }
}

/// Spring Boot's error document for a failure outside the controller's own handlers.
fn error_body(status: StatusCode, error: &EncryptionError) -> Value {
    json!({
        "status": status.as_u16(),
        "error": status.canonical_reason().unwrap_or(""),
        "message": error.to_string(),
    })
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

fn text_response(text: String) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain;charset=UTF-8"),
        )],
        text,
    )
        .into_response()
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut response = (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n").into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests;
