//! Golden tests over `samples/config-repo`, handler tests for path shapes and errors,
//! git-backed labels, the KV source, and live changes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::Router;
use bytes::Bytes;
use ferry_http::test_client::call;
use serde_json::{json, Value};

use super::*;
use ferry_core::change_index::ChangeIndex;
use ferry_core::clock::Clock;

fn sample_repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../samples/config-repo")
        .canonicalize()
        .unwrap()
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/golden")
}

pub(crate) fn router_for(path: &Path, kv: Option<Arc<KvStore>>) -> Router {
    let repository = Repository::open(path.to_str().unwrap()).unwrap();
    routes(ConfigSources {
        repository: Some(Arc::new(repository)),
        kv,
        ..ConfigSources::default()
    })
}

pub(crate) async fn get(
    router: &Router,
    uri: &str,
    accept: Option<&str>,
) -> (StatusCode, String, String) {
    let headers: Vec<(&str, &str)> = accept
        .map(|accept| ("accept", accept))
        .into_iter()
        .collect();
    let reply = call(router, Method::GET, uri, &headers, Body::empty()).await;
    let content_type = reply
        .headers
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (
        reply.status,
        content_type,
        String::from_utf8(reply.body).unwrap(),
    )
}

/// The golden requests: (URI, golden file).
const GOLDEN: [(&str, &str); 8] = [
    ("/orders/dev", "orders-dev.json"),
    ("/orders/dev,prod", "orders-dev,prod.json"),
    ("/application/default", "application-default.json"),
    ("/orders-dev.yml", "orders-dev.yml"),
    ("/orders-dev,prod.properties", "orders-dev,prod.properties"),
    ("/main/orders-dev.json", "orders-dev.rendered.json"),
    ("/master/orders-default.yaml", "orders-default.yml"),
    (
        "/orders-dev.properties?resolvePlaceholders=false",
        "orders-dev.unresolved.properties",
    ),
];

#[tokio::test]
async fn the_sample_repository_matches_its_golden_files() {
    let router = router_for(&sample_repo(), None);
    let root = format!("file:{}", sample_repo().display());
    let bless = std::env::var_os("FERRY_BLESS").is_some();
    for (uri, file) in GOLDEN {
        let (status, _, body) = get(&router, uri, None).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        let actual = if file.ends_with(".json") {
            let value: Value = serde_json::from_str(&body.replace(&root, "file:<repo>")).unwrap();
            serde_json::to_string_pretty(&value).unwrap() + "\n"
        } else {
            body
        };
        let path = golden_dir().join(file);
        if bless {
            std::fs::write(&path, &actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{} is missing", path.display()));
        assert_eq!(actual, expected, "{uri} differs from golden/{file}");
    }
}

#[tokio::test]
async fn the_v2_media_type_is_answered_and_health_is_up() {
    let router = router_for(&sample_repo(), None);
    let (status, content_type, body) = get(
        &router,
        "/orders/dev",
        Some("application/vnd.spring-cloud.config-server.v2+json"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/json");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["name"],
        "orders"
    );
    let (status, _, body) = get(&router, "/actuator/health", None).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"status":"UP"}"#)
    );
    // npm's client encodes the comma between profiles.
    let (status, _, body) = get(&router, "/orders/dev%2Cprod", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["profiles"],
        json!(["dev", "prod"])
    );
}

#[tokio::test]
async fn unknown_apps_labels_and_bad_paths_get_springs_answers() {
    let router = router_for(&sample_repo(), None);
    let (status, _, body) = get(&router, "/nobody/dev", None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an app without files still gets application*"
    );
    let sources = serde_json::from_str::<Value>(&body).unwrap()["propertySources"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(sources, 2);
    for (uri, expected) in [
        ("/orders/dev/no-such-label", StatusCode::NOT_FOUND),
        ("/no-such-label/orders-dev.yml", StatusCode::NOT_FOUND),
        ("/orders/dev/..", StatusCode::BAD_REQUEST),
        ("/..%2F..%2Fetc/dev", StatusCode::BAD_REQUEST),
        ("/orders/dev,,x", StatusCode::BAD_REQUEST),
        ("/orders/-dev", StatusCode::BAD_REQUEST),
        ("/orders/dev%23x", StatusCode::BAD_REQUEST),
        ("/(_)etc/dev", StatusCode::BAD_REQUEST),
        ("/ordersdev.yml", StatusCode::NOT_FOUND),
        ("/a/b/c/../../../etc/passwd", StatusCode::BAD_REQUEST),
    ] {
        let (status, _, body) = get(&router, uri, None).await;
        assert_eq!(status, expected, "{uri}: {body}");
    }
    let reply = call(&router, Method::POST, "/orders/dev", &[], Body::empty()).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_malformed_file_is_a_500_naming_it_and_a_folder_edit_is_live() {
    let folder = tempdir();
    std::fs::write(folder.join("application.yml"), "a: 1\n").unwrap();
    let router = router_for(&folder, None);
    let (_, _, body) = get(&router, "/x-default.properties", None).await;
    assert_eq!(body, "a: 1");
    std::fs::write(folder.join("application.yml"), "a: 2\n").unwrap();
    let (_, _, body) = get(&router, "/x-default.properties", None).await;
    assert_eq!(body, "a: 2", "served on the next request, no restart");
    std::fs::write(folder.join("x.yml"), "a: [unclosed\n").unwrap();
    let (status, _, body) = get(&router, "/x/default", None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("x.yml"), "{body}");
    std::fs::remove_dir_all(folder).unwrap();
}

pub(crate) fn tempdir() -> PathBuf {
    let folder = std::env::temp_dir().join(format!("ferry-config-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&folder).unwrap();
    folder
}

pub(crate) fn git(repo: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args([
            "-c",
            "user.name=ferry",
            "-c",
            "user.email=ferry@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(repo)
        .output()
        .expect("git is installed");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn git_labels_are_branches_tags_and_commits_and_version_is_the_commit() {
    let repo = tempdir();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("orders.yml"), "pool: 1\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "first"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["tag", "v1"]);
    git(&repo, &["checkout", "-qb", "feature/x"]);
    std::fs::write(repo.join("orders.yml"), "pool: 3\n").unwrap();
    git(&repo, &["commit", "-qam", "feature"]);
    git(&repo, &["checkout", "-q", "main"]);
    std::fs::write(repo.join("orders.yml"), "pool: 2\n").unwrap();
    git(&repo, &["commit", "-qam", "second"]);
    let second = git(&repo, &["rev-parse", "HEAD"]);

    let router = router_for(&repo, None);
    let pool = |body: &str| {
        serde_json::from_str::<Value>(body).unwrap()["propertySources"][0]["source"]["pool"].clone()
    };
    let (_, _, body) = get(&router, "/orders/default", None).await;
    assert_eq!(pool(&body), json!(2));
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["version"],
        second.as_str()
    );
    for (label, expected) in [("v1", 1), ("feature(_)x", 3), (&first[..8], 1), ("main", 2)] {
        let (status, _, body) = get(&router, &format!("/orders/default/{label}"), None).await;
        assert_eq!(status, StatusCode::OK, "{label}: {body}");
        assert_eq!(pool(&body), json!(expected), "{label}");
    }
    for label in ["HEAD~1", "nope", "main@{1}"] {
        let (status, _, _) = get(&router, &format!("/orders/default/{label}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{label}");
    }
    // A new commit is served on the next request.
    std::fs::write(repo.join("orders.yml"), "pool: 4\n").unwrap();
    git(&repo, &["commit", "-qam", "third"]);
    let (_, _, body) = get(&router, "/orders/default", None).await;
    assert_eq!(pool(&body), json!(4));
    std::fs::remove_dir_all(repo).unwrap();
}

#[tokio::test]
async fn consul_kv_contexts_rank_above_repository_files() {
    let kv = Arc::new(KvStore::in_memory(
        Arc::new(ChangeIndex::new(1)),
        Clock::System,
        "n1",
    ));
    let put = |key: &str, value: &str| {
        kv.put(key, Bytes::from(value.to_owned()), 0, None, None)
            .unwrap();
    };
    put(
        "config/orders,dev/data",
        "orders:\n  db:\n    pool:\n      max-size: 7\n",
    );
    put("config/orders/greeting/source", "consul");
    put("config/application/data", "common.timeout=99\n");
    let router = router_for(&sample_repo(), Some(kv.clone()));
    let (_, _, body) = get(&router, "/orders/dev", None).await;
    let environment: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = environment["propertySources"]
        .as_array()
        .unwrap()
        .iter()
        .take(3)
        .map(|source| source["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "consul:config/orders,dev/",
            "consul:config/orders/",
            "consul:config/application/"
        ]
    );
    let (_, _, rendered) = get(&router, "/orders-dev.properties", None).await;
    assert!(
        rendered.contains("orders.db.pool.max-size: 7"),
        "{rendered}"
    );
    assert!(rendered.contains("greeting.source: consul"), "{rendered}");
    assert!(rendered.contains("common.timeout: 99"), "{rendered}");
}

#[test]
fn percent_decoding_never_splits_a_character() {
    for segment in ["%a\u{e9}", "%\u{e9}x", "%", "%4", "abc%2Fd"] {
        let _ = super::routes::decode_segment_for_tests(segment);
    }
    assert_eq!(
        super::routes::decode_segment_for_tests("a%2Fb").unwrap(),
        "a/b"
    );
}

/// Issue 10, defects 1 and 2: a KV document anyone can write must not take the process down.
/// Each of these overflowed the stack or expanded without bound before the limits.
#[tokio::test]
async fn hostile_kv_documents_are_refused_with_500_and_change_nothing() {
    let kv = Arc::new(KvStore::in_memory(
        Arc::new(ChangeIndex::new(1)),
        Clock::System,
        "n1",
    ));
    let put = |key: &str, value: String| {
        kv.put(key, Bytes::from(value), 0, None, None).unwrap();
    };
    put(
        "config/dotted/data",
        format!("\"{}a\": 1\n", "a.".repeat(50_000)),
    );
    put(
        "config/indexed/data",
        format!("\"x{}\": 1\n", "[0]".repeat(40_000)),
    );
    put(
        "config/placeholders/data",
        format!(
            "p=${{z:{}end{}\n",
            "${z:".repeat(40_000),
            "}".repeat(40_001)
        ),
    );
    put("config/bomb/data", crate::yaml::tests::alias_bomb(5));
    put("config/fine/data", "fine: yes\n".to_owned());
    let router = router_for(&sample_repo(), Some(kv.clone()));

    for (uri, says) in [
        ("/dotted-default.json", "nests deeper than 100 levels"),
        ("/dotted-default.yml", "nests deeper than 100 levels"),
        ("/indexed-default.json", "nests deeper than 100 levels"),
        ("/placeholders-default.properties", "nest deeper than 32"),
        ("/bomb-default.json", "values in one document"),
        ("/bomb/default", "values in one document"),
    ] {
        let (status, content_type, body) = get(&router, uri, None).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{uri}: {body}");
        assert_eq!(content_type, "application/json", "{uri}");
        assert!(body.contains(says), "{uri}: {body}");
    }
    // The flat Environment of a deep name is still served: nothing is nested there.
    let (status, _, _) = get(&router, "/dotted/default", None).await;
    assert_eq!(status, StatusCode::OK);
    // Other applications are untouched.
    let (status, _, body) = get(&router, "/fine-default.properties", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("fine: true"), "{body}");
}
