//! The operator's dashboard at `/` on the admin listener: one hand-written page (HTML, JS,
//! CSS under `dashboard/`, no framework, nothing fetched from elsewhere) compiled into the
//! binary, and the read-only JSON it needs beyond the services API: `/api/traffic` (the
//! history `history.rs` keeps), `/api/config` (the Config Server's sources) and `/api/kv`
//! (KV keys by prefix). The assets are static bytes served with an ETag, so a reload costs
//! a 304, and nothing here runs unless someone opens the page.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_config_server::Repository;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::admin::Admin;

/// A static asset: its bytes, its type, and a tag derived from its bytes at compile time.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    tag: u64,
}

/// FNV-1a: a stable content hash computable in a `const`, enough to tell versions apart.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut at = 0;
    while at < bytes.len() {
        hash ^= bytes[at] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        at += 1;
    }
    hash
}

macro_rules! asset {
    ($path:literal, $type:literal) => {{
        const BODY: &[u8] = include_bytes!($path);
        Asset {
            body: BODY,
            content_type: $type,
            tag: fnv1a(BODY),
        }
    }};
}

const INDEX: Asset = asset!("dashboard/index.html", "text/html; charset=utf-8");
const SCRIPT: Asset = asset!("dashboard/app.js", "text/javascript; charset=utf-8");
const STYLE: Asset = asset!("dashboard/app.css", "text/css; charset=utf-8");

/// Only this origin's script and styles run in the page, and no other site may frame it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'none'";

fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", asset.tag);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    // Revalidated on every load: a new binary's page is never mixed with an old script.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
}

pub async fn index(request: HeaderMap) -> Response {
    serve(&INDEX, &request)
}

pub async fn script(request: HeaderMap) -> Response {
    serve(&SCRIPT, &request)
}

pub async fn style(request: HeaderMap) -> Response {
    serve(&STYLE, &request)
}

#[derive(Deserialize)]
pub struct TrafficQuery {
    service: Option<String>,
}

/// `GET /api/traffic[?service=NAME]`.
pub async fn traffic(State(admin): State<Admin>, Query(query): Query<TrafficQuery>) -> Json<Value> {
    Json(admin.history.json(query.service.as_deref()))
}

/// `GET /api/config`: what the Config Server serves from. A git repository is read at its
/// default label (a branch read can block, so on the blocking pool).
pub async fn config(State(admin): State<Admin>) -> Json<Value> {
    let repository = match admin.config_repository.clone() {
        Some(repository) => tokio::task::spawn_blocking(move || repository_json(&repository))
            .await
            .unwrap_or(Value::Null),
        None => Value::Null,
    };
    let (index, keys) = admin.kv.keys("config/", Some("/"));
    Json(json!({
        "repository": repository,
        "kv": {
            "backend": admin.kv.backend_name(),
            "index": index,
            // Spring Cloud Consul Config's default prefix, and the contexts under it.
            "prefix": "config/",
            "contexts": keys,
        },
    }))
}

fn repository_json(repository: &Repository) -> Value {
    let (kind, location) = match repository {
        Repository::Folder { root } => ("folder", root.display().to_string()),
        Repository::Git { location, .. } => ("git", location.clone()),
    };
    match repository.snapshot(None) {
        Ok(snapshot) => {
            let version = snapshot.version();
            // What a request without a label reads: git's `main`, else `master` (the same
            // commit as `master` means `main` is missing or equal); a folder serves any label.
            let label = match repository {
                Repository::Folder { .. } => "any",
                Repository::Git { .. } => {
                    let master = repository
                        .snapshot(Some("master"))
                        .ok()
                        .and_then(|snapshot| snapshot.version());
                    if master.is_some() && master == version {
                        "master"
                    } else {
                        "main"
                    }
                }
            };
            json!({
                "kind": kind,
                "location": location,
                "label": label,
                "version": version,
                "error": null,
            })
        }
        Err(error) => json!({
            "kind": kind,
            "location": location,
            "label": null,
            "version": null,
            "error": error.to_string(),
        }),
    }
}

#[derive(Deserialize)]
pub struct KvQuery {
    #[serde(default)]
    prefix: String,
}

/// `GET /api/kv?prefix=P`: the keys and folders one level under `P` (values are not shown:
/// they are read through the Consul API, under its token), with each key's size and index.
pub async fn kv(State(admin): State<Admin>, Query(query): Query<KvQuery>) -> Json<Value> {
    let (index, names) = admin.kv.keys(&query.prefix, Some("/"));
    let (_, entries) = admin.kv.list(&query.prefix);
    let entries: std::collections::HashMap<&str, &ferry_core::kv::KvEntry> = entries
        .iter()
        .map(|entry| (entry.key.as_str(), entry))
        .collect();
    let keys: Vec<Value> = names
        .iter()
        .map(|name| match entries.get(name.as_str()) {
            Some(entry) if !name.ends_with('/') || !entry.value.is_empty() => json!({
                "key": name,
                "folder": false,
                "bytes": entry.value.len(),
                "modify_index": entry.modify_index,
                "locked": entry.session.is_some(),
            }),
            _ => json!({ "key": name, "folder": true }),
        })
        .collect();
    Json(json!({ "prefix": query.prefix, "index": index, "keys": keys }))
}

#[cfg(test)]
mod tests {
    use axum::http::Method;
    use axum::routing::get;
    use axum::Router;
    use ferry_http::test_client::call;

    use super::*;

    fn assets() -> Router {
        Router::new()
            .route("/", get(index))
            .route("/ui/app.js", get(script))
            .route("/ui/app.css", get(style))
    }

    #[tokio::test]
    async fn the_page_and_its_assets_are_served_with_their_types_and_etags() {
        let router = assets();
        let mut total = 0;
        for (path, content_type) in [
            ("/", "text/html; charset=utf-8"),
            ("/ui/app.js", "text/javascript; charset=utf-8"),
            ("/ui/app.css", "text/css; charset=utf-8"),
        ] {
            let first = call(&router, Method::GET, path, &[], "").await;
            assert_eq!(first.status, StatusCode::OK, "{path}");
            assert_eq!(first.headers["content-type"], content_type, "{path}");
            assert_eq!(first.headers["cache-control"], "no-cache");
            assert!(first.headers.contains_key("content-security-policy"));
            total += first.body.len();
            let etag = first.headers["etag"].to_str().unwrap().to_owned();
            let again = call(&router, Method::GET, path, &[("if-none-match", &etag)], "").await;
            assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{path}");
            assert!(again.body.is_empty());
            assert_eq!(again.headers["etag"], etag.as_str());
            let other = call(
                &router,
                Method::GET,
                path,
                &[("if-none-match", "\"0\"")],
                "",
            )
            .await;
            assert_eq!(other.status, StatusCode::OK, "a stale tag gets the asset");
        }
        assert!(total < 60 * 1024, "the dashboard is {total} bytes");
        let page = String::from_utf8_lossy(&call(&router, Method::GET, "/", &[], "").await.body)
            .into_owned();
        assert!(page.contains("/ui/app.js") && page.contains("/ui/app.css"));
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "nothing from elsewhere"
        );
    }

    #[test]
    fn tags_differ_between_assets_and_follow_their_bytes() {
        assert_ne!(INDEX.tag, SCRIPT.tag);
        assert_ne!(SCRIPT.tag, STYLE.tag);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(SCRIPT.body), SCRIPT.tag);
    }
}
