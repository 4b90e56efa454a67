//! `/v1/kv/<key>`: reads (single key, `recurse`, `keys`, `raw`, blocking), writes with
//! `flags`, `cas`, `acquire` and `release`, and deletes. Keys are taken from the path after
//! percent-decoding (`%2F` included) and never normalized.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::Value;

use super::acl::Access;
use super::blocking::wait_for;
use super::encode;
use super::error::ConsulError;
use super::query::Params;
use super::{add_index_headers, indexed, ConsulView};
use ferry_core::kv::{KvEntry, LockOp, MAX_VALUE_BYTES};
use ferry_http::request_body;

pub(super) fn routes() -> Router<ConsulView> {
    let handlers = || get(read).put(write).delete(remove);
    Router::new()
        .route("/v1/kv", handlers())
        .route("/v1/kv/", handlers())
        .route("/v1/kv/{*key}", handlers())
}

/// The key from the path; empty for `/v1/kv/`.
fn key_of(path: Option<Path<String>>) -> String {
    path.map(|Path(key)| key).unwrap_or_default()
}

enum Read {
    One(Option<KvEntry>),
    Many(Vec<KvEntry>),
    Keys(Vec<String>),
}

async fn read(
    State(view): State<ConsulView>,
    access: Access,
    path: Option<Path<String>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ConsulError> {
    let params = Params(params);
    let key = key_of(path);
    let recurse = params.flag("recurse");
    let keys = params.flag("keys");
    if key.is_empty() && !recurse && !keys {
        return Err(ConsulError::BadRequest("Missing key name".into()));
    }
    if !recurse && !keys {
        // `key:read` on one key; listings are filtered instead.
        access.may_read_one()?;
    }
    let separator = params.get("separator").map(str::to_owned);
    let blocking = params.blocking()?;
    let (index, result) = wait_for(view.kv.watch(), blocking, || {
        if keys {
            let (index, mut names) = view.kv.keys(&key, separator.as_deref());
            if !access.sees_all() {
                names.clear();
            }
            (index, Read::Keys(names))
        } else if recurse {
            let (index, mut entries) = view.kv.list(&key);
            if !access.sees_all() {
                entries.clear();
            }
            (index, Read::Many(entries))
        } else {
            let (index, entry) = view.kv.get(&key);
            (index, Read::One(entry))
        }
    })
    .await;
    Ok(match result {
        Read::One(None) => indexed(StatusCode::NOT_FOUND, index, None),
        Read::One(Some(entry)) if params.flag("raw") => {
            let mut response = (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, HeaderValue::from_static("text/plain")),
                    (
                        header::X_CONTENT_TYPE_OPTIONS,
                        HeaderValue::from_static("nosniff"),
                    ),
                ],
                entry.value,
            )
                .into_response();
            add_index_headers(response.headers_mut(), index);
            response
        }
        Read::One(Some(entry)) => indexed(
            StatusCode::OK,
            index,
            Some(&Value::Array(vec![encode::kv_entry(&entry)])),
        ),
        Read::Many(entries) if entries.is_empty() => indexed(StatusCode::NOT_FOUND, index, None),
        Read::Many(entries) => indexed(
            StatusCode::OK,
            index,
            Some(&Value::Array(
                entries.iter().map(encode::kv_entry).collect(),
            )),
        ),
        Read::Keys(names) if names.is_empty() && !key.is_empty() => {
            indexed(StatusCode::NOT_FOUND, index, None)
        }
        Read::Keys(names) => indexed(StatusCode::OK, index, Some(&serde_json::json!(names))),
    })
}

fn answer(done: bool) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        if done { "true" } else { "false" },
    )
        .into_response()
}

fn check_key(key: &str) -> Result<(), ConsulError> {
    if key.is_empty() {
        return Err(ConsulError::BadRequest("Missing key name".into()));
    }
    if key.starts_with('/') {
        return Err(ConsulError::BadRequest(
            "Invalid key name, starts with '/'".into(),
        ));
    }
    Ok(())
}

async fn write(
    State(view): State<ConsulView>,
    path: Option<Path<String>>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ConsulError> {
    let params = Params(params);
    let key = key_of(path);
    // Read (or drain) the body before refusing anything, so the client gets the answer.
    let value =
        request_body::read(&headers, body, MAX_VALUE_BYTES, view.settings.body_timeout).await?;
    check_key(&key)?;
    let flags = params.number("flags")?.unwrap_or(0);
    let cas = params.number("cas")?;
    let acquire = params.get("acquire").filter(|session| !session.is_empty());
    let release = params.get("release").filter(|session| !session.is_empty());
    let lock = match (acquire, release) {
        (Some(_), Some(_)) => {
            return Err(ConsulError::BadRequest(
                "Conflicting flags: acquire, release".into(),
            ));
        }
        (Some(session), None) => Some(LockOp::Acquire(session.to_owned())),
        (None, Some(session)) => Some(LockOp::Release(session.to_owned())),
        (None, None) => None,
    };
    if cas.is_some() && lock.is_some() {
        let other = if acquire.is_some() {
            "acquire"
        } else {
            "release"
        };
        return Err(ConsulError::BadRequest(format!(
            "Conflicting flags: cas, {other}"
        )));
    }
    let done = view.kv.put(&key, value, flags, cas, lock)?;
    Ok(answer(done))
}

async fn remove(
    State(view): State<ConsulView>,
    path: Option<Path<String>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ConsulError> {
    let params = Params(params);
    let key = key_of(path);
    let recurse = params.flag("recurse");
    let cas = params.number("cas")?;
    if recurse && cas.is_some() {
        return Err(ConsulError::BadRequest(
            "Conflicting flags: cas, recurse".into(),
        ));
    }
    if !recurse {
        check_key(&key)?;
    }
    let done = view.kv.delete(&key, recurse, cas)?;
    Ok(answer(done))
}
