//! The Eureka REST API (spec §3) as an axum `Router`, served under `/eureka/` and
//! `/eureka/v2/`. Each handler decodes its input, calls the `Registry`, and encodes the
//! result; nothing here keeps state apart from the response cache.

use std::io::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use bytes::Bytes;
use serde_json::Value;

use ferry_core::model::{Millis, Status};
use ferry_core::registry::{Listing, Registry, RenewRequest};

use super::cache::{Doc, DocKey, ResponseCache};
use super::decode::{self, Origin};
use super::error::EurekaError;
use super::fetches::FetchCounts;
use super::hashcode::{apps_hashcode, Document};
use super::negotiate::{accepts_gzip, body_format, Format};
use super::{json, spelling, xml, EurekaSettings};
use ferry_http::request_body;

const REPLICATION_HEADER: &str = "x-netflix-discovery-replication";

#[derive(Clone)]
struct EurekaView {
    registry: Arc<Registry>,
    cache: Arc<ResponseCache>,
    settings: Arc<EurekaSettings>,
    fetches: Arc<FetchCounts>,
}

/// The Eureka API over `registry`, with both URL prefixes; every registry fetch it answers
/// is counted in `fetches`.
pub fn routes(
    registry: Arc<Registry>,
    settings: EurekaSettings,
    fetches: Arc<FetchCounts>,
) -> Router {
    let view = EurekaView {
        cache: Arc::new(ResponseCache::new(
            settings.cache_max_bytes,
            settings.cache_time_to_live,
        )),
        registry,
        settings: Arc::new(settings),
        fetches,
    };
    let api = Router::new()
        .route("/apps", get(all_apps))
        .route("/apps/", get(all_apps))
        .route("/apps/delta", get(delta))
        .route("/apps/{app}", post(register).get(one_app))
        .route(
            "/apps/{app}/{id}",
            put(renew).get(one_instance).delete(cancel),
        )
        .route(
            "/apps/{app}/{id}/status",
            put(set_override).delete(remove_override),
        )
        .route("/apps/{app}/{id}/metadata", put(update_metadata))
        .route("/instances/{id}", get(instance_anywhere))
        .route("/vips/{address}", get(by_address))
        .route("/svips/{address}", get(by_secure_address))
        .with_state(view);
    Router::new()
        .nest("/eureka", api.clone())
        .nest("/eureka/v2", api)
}

async fn register(
    State(view): State<EurekaView>,
    Path(app): Path<String>,
    headers: HeaderMap,
    request_body: Body,
) -> Result<StatusCode, EurekaError> {
    let settings = &view.settings;
    let bytes = request_body::read(
        &headers,
        request_body,
        settings.max_body_bytes,
        settings.body_timeout,
    )
    .await?;
    let format = body_format(&headers).ok_or(EurekaError::UnsupportedMediaType)?;
    register_body(
        &view.registry,
        &app,
        format,
        &bytes,
        is_replication(&headers),
        Format::from_accept(&headers),
    )?;
    Ok(StatusCode::NO_CONTENT)
}

/// What registering does once the body has arrived: decode `body` (in `format`), check
/// that it names the path's `app`, register it. Refused at any step, it changes nothing.
/// `answer` is the format an error is answered in. Public for the fuzz targets.
pub fn register_body(
    registry: &Registry,
    app: &str,
    format: Format,
    body: &[u8],
    replication: bool,
    answer: Format,
) -> Result<(), EurekaError> {
    let tree: Value = match format {
        Format::Json => serde_json::from_slice(body)
            .map_err(|error| EurekaError::BadRequest(format!("malformed JSON: {error}")))?,
        Format::Xml => {
            xml::parse(body).map_err(|error| EurekaError::BadRequest(error.to_string()))?
        }
    };
    let instance = decode::instance_document(&tree, Origin::Registration, registry.now())
        .map_err(|error| EurekaError::BadRequest(format!("invalid instance: {error}")))?;
    if instance.app != app.to_ascii_uppercase() {
        return Err(EurekaError::BadRequest(format!(
            "the instance's app {} does not match the path's {}",
            instance.app,
            app.to_ascii_uppercase()
        )));
    }
    tracing::debug!(app = %instance.app, id = %instance.id, status = %instance.status, "register");
    registry
        .register(instance, replication)
        .map_err(|error| EurekaError::from_registry(error, answer))
}

async fn renew(
    State(view): State<EurekaView>,
    Path((app, id)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<StatusCode, EurekaError> {
    let request = RenewRequest {
        last_dirty: last_dirty(&query)?,
        overridden_status: first(&query, "overriddenstatus").and_then(spelling::parse_status),
        replication: is_replication(&headers),
    };
    view.registry
        .renew(&app.to_ascii_uppercase(), &id, request)
        .map_err(|error| EurekaError::from_registry(error, Format::from_accept(&headers)))?;
    Ok(StatusCode::OK)
}

async fn cancel(
    State(view): State<EurekaView>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, EurekaError> {
    view.registry
        .cancel(&app.to_ascii_uppercase(), &id)
        .map_err(|error| EurekaError::from_registry(error, Format::from_accept(&headers)))?;
    Ok(StatusCode::OK)
}

async fn set_override(
    State(view): State<EurekaView>,
    Path((app, id)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<StatusCode, EurekaError> {
    let value = first(&query, "value")
        .ok_or_else(|| EurekaError::BadRequest("`value` is required".into()))?;
    let status = parse_status(value)?;
    let last_dirty = last_dirty(&query)?;
    view.registry
        .set_override(&app.to_ascii_uppercase(), &id, status, last_dirty)
        .map_err(|error| EurekaError::from_registry(error, Format::from_accept(&headers)))?;
    Ok(StatusCode::OK)
}

async fn remove_override(
    State(view): State<EurekaView>,
    Path((app, id)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<StatusCode, EurekaError> {
    let status = match first(&query, "value") {
        Some(value) => parse_status(value)?,
        None => Status::Unknown,
    };
    last_dirty(&query)?;
    view.registry
        .remove_override(&app.to_ascii_uppercase(), &id, status)
        .map_err(|error| EurekaError::from_registry(error, Format::from_accept(&headers)))?;
    Ok(StatusCode::OK)
}

async fn update_metadata(
    State(view): State<EurekaView>,
    Path((app, id)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<StatusCode, EurekaError> {
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(query.len());
    for (key, value) in query {
        if !pairs.iter().any(|(seen, _)| *seen == key) {
            pairs.push((key, value));
        }
    }
    view.registry
        .update_metadata(&app.to_ascii_uppercase(), &id, pairs)
        .map_err(|error| EurekaError::from_registry(error, Format::from_accept(&headers)))?;
    Ok(StatusCode::OK)
}

async fn all_apps(State(view): State<EurekaView>, method: Method, headers: HeaderMap) -> Response {
    view.registry_document(Doc::Full, &method, &headers)
}

async fn delta(State(view): State<EurekaView>, method: Method, headers: HeaderMap) -> Response {
    view.registry_document(Doc::Delta, &method, &headers)
}

async fn one_app(
    State(view): State<EurekaView>,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> Result<Response, EurekaError> {
    let app = app.to_ascii_uppercase();
    let instances = view
        .registry
        .app(&app)
        .ok_or_else(|| EurekaError::NotFound(format!("no instances of {app}")))?;
    let format = Format::from_accept(&headers);
    let body = match format {
        Format::Json => json::application(&app, &instances),
        Format::Xml => xml::application(&app, &instances),
    };
    Ok(encoded(format, body, false))
}

async fn one_instance(
    State(view): State<EurekaView>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, EurekaError> {
    let app = app.to_ascii_uppercase();
    let found = view.registry.instance(&app, &id).ok_or_else(|| {
        EurekaError::NotFound(format!("instance {id} of {app} is not registered"))
    })?;
    Ok(instance_response(&headers, &found))
}

async fn instance_anywhere(
    State(view): State<EurekaView>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, EurekaError> {
    let found = view
        .registry
        .instance_anywhere(&id)
        .ok_or_else(|| EurekaError::NotFound(format!("instance {id} is not registered")))?;
    Ok(instance_response(&headers, &found))
}

async fn by_address(
    State(view): State<EurekaView>,
    Path(address): Path<String>,
    headers: HeaderMap,
) -> Response {
    address_document(&view.registry.list_by_address(&address, false), &headers)
}

async fn by_secure_address(
    State(view): State<EurekaView>,
    Path(address): Path<String>,
    headers: HeaderMap,
) -> Response {
    address_document(&view.registry.list_by_address(&address, true), &headers)
}

impl EurekaView {
    /// The full registry or the delta, from the cache when this index was rendered before.
    fn registry_document(&self, doc: Doc, method: &Method, headers: &HeaderMap) -> Response {
        // axum answers HEAD with the GET handler; a HEAD fetches nothing, so only a GET
        // counts.
        if method == Method::GET {
            self.fetches.count(doc);
        }
        let format = Format::from_accept(headers);
        let gzip = accepts_gzip(headers);
        let key = DocKey {
            generation: self.registry.generation(),
            doc,
            format,
            gzip,
        };
        let body = self.cache.get_or_render(key, || {
            let listing = match doc {
                Doc::Full => self.registry.list_all(),
                Doc::Delta => self.registry.list_recent_changes(),
            };
            let versions_delta = match doc {
                Doc::Full => "1".to_owned(),
                Doc::Delta => listing.index.to_string(),
            };
            let bytes = render(&listing, &versions_delta, format);
            if gzip {
                gzip_bytes(&bytes)
            } else {
                Bytes::from(bytes)
            }
        });
        encoded(format, body, gzip)
    }
}

fn address_document(listing: &Listing, headers: &HeaderMap) -> Response {
    let format = Format::from_accept(headers);
    encoded(format, render(listing, "-1", format), false)
}

fn render(listing: &Listing, versions_delta: &str, format: Format) -> Vec<u8> {
    let document = Document {
        versions_delta,
        hashcode: apps_hashcode(&listing.counts),
        apps: &listing.apps,
    };
    match format {
        Format::Json => json::applications(&document),
        Format::Xml => xml::applications(&document),
    }
}

fn instance_response(
    headers: &HeaderMap,
    found: &ferry_core::registry::RegisteredInstance,
) -> Response {
    let format = Format::from_accept(headers);
    let body = match format {
        Format::Json => json::instance_document(&found.instance, found.last_renewal),
        Format::Xml => xml::instance_document(&found.instance, found.last_renewal),
    };
    encoded(format, body, false)
}

fn encoded(format: Format, body: impl Into<Bytes>, gzip: bool) -> Response {
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, format.content_type())],
        body.into(),
    )
        .into_response();
    if gzip {
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

fn gzip_bytes(bytes: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 8),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    Bytes::from(encoder.finish().unwrap_or_default())
}

fn is_replication(headers: &HeaderMap) -> bool {
    headers
        .get(REPLICATION_HEADER)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
}

fn first<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.as_str())
}

fn last_dirty(query: &[(String, String)]) -> Result<Option<Millis>, EurekaError> {
    match first(query, "lastDirtyTimestamp").filter(|text| !text.is_empty()) {
        None => Ok(None),
        Some(text) => text.trim().parse().map(Some).map_err(|_| {
            EurekaError::BadRequest(format!("lastDirtyTimestamp `{text}` is not a number"))
        }),
    }
}

fn parse_status(value: &str) -> Result<Status, EurekaError> {
    spelling::parse_status(value)
        .ok_or_else(|| EurekaError::BadRequest(format!("`{value}` is not an instance status")))
}
