//! What Spring's Java config clients send beyond one name and one label: a comma-separated
//! application (`spring.cloud.config.name=orders,shared`), a comma-separated label list
//! (`send-all-labels`), the default label `main` on a repository that has only `master`,
//! and the profile names Spring's server accepts and refuses.

use std::path::Path;

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::tests::{get, git, router_for, tempdir};

fn write(folder: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        std::fs::write(folder.join(name), text).unwrap();
    }
}

fn source_files(body: &str) -> Vec<String> {
    serde_json::from_str::<Value>(body).unwrap()["propertySources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|source| {
            let name = source["name"].as_str().unwrap();
            name.rsplit('/').next().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_comma_separated_application_reads_every_name_later_names_first() {
    let folder = tempdir();
    write(
        &folder,
        &[
            ("application.yml", "who: application\nbase: 1\n"),
            ("application-dev.yml", "who: application-dev\n"),
            ("orders.yml", "who: orders\nown: orders\n"),
            ("orders-dev.yml", "who: orders-dev\n"),
            ("shared.yml", "who: shared\nown: shared\n"),
            ("shared-dev.properties", "who=shared-dev\n"),
        ],
    );
    let router = router_for(&folder, None);
    let (status, _, body) = get(&router, "/orders,shared/dev", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        source_files(&body),
        [
            "shared-dev.properties",
            "orders-dev.yml",
            "application-dev.yml",
            "shared.yml",
            "orders.yml",
            "application.yml"
        ]
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["name"],
        "orders,shared"
    );
    // The same order decides the merged views; the app's own files are not lost.
    let (status, _, properties) = get(&router, "/orders,shared-dev.properties", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(properties, "who: shared-dev\nbase: 1\nown: shared");
    let (_, _, body) = get(&router, "/shared,orders/default", None).await;
    assert_eq!(
        source_files(&body),
        ["orders.yml", "shared.yml", "application.yml"]
    );
    // `application` named again is read once.
    let (_, _, body) = get(&router, "/application,orders/default", None).await;
    assert_eq!(source_files(&body), ["orders.yml", "application.yml"]);
    std::fs::remove_dir_all(folder).unwrap();
}

/// A git repository with `main` (pool 1), `v2` (pool 2, its own `extra`) and `v3` (pool 3).
fn labelled_repository() -> (std::path::PathBuf, [String; 3]) {
    let repo = tempdir();
    git(&repo, &["init", "-q", "-b", "main"]);
    write(&repo, &[("orders.yml", "pool: 1\nfirst: main\n")]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "main"]);
    let main = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["checkout", "-qb", "v2"]);
    write(&repo, &[("orders.yml", "pool: 2\nextra: v2\n")]);
    git(&repo, &["commit", "-qam", "v2"]);
    let v2 = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["checkout", "-qb", "v3", "main"]);
    write(&repo, &[("orders.yml", "pool: 3\n")]);
    git(&repo, &["commit", "-qam", "v3"]);
    let v3 = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["checkout", "-q", "main"]);
    (repo, [main, v2, v3])
}

#[tokio::test]
async fn a_label_list_is_read_label_by_label_the_last_label_first() {
    let (repo, [main, v2, v3]) = labelled_repository();
    let router = router_for(&repo, None);
    let (status, _, body) = get(&router, "/orders/default/main,v2,v3", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let environment: Value = serde_json::from_str(&body).unwrap();
    let pools: Vec<&Value> = environment["propertySources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|source| &source["source"]["pool"])
        .collect();
    assert_eq!(pools, [&json!(3), &json!(2), &json!(1)]);
    assert_eq!(environment["label"], "main,v2,v3");
    assert_eq!(environment["version"], format!("{main},{v2},{v3}"));
    // Merged, the last label wins and the others fill in.
    let (status, _, properties) = get(&router, "/main,v2/orders-default.properties", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(properties, "pool: 2\nfirst: main\nextra: v2");
    // Empty items are skipped; one unknown label fails the whole list, as Spring's default.
    let (status, _, body) = get(&router, "/orders/default/v3,,", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(source_files(&body).len(), 1);
    for uri in [
        "/orders/default/main,nope",
        "/orders/default/,",
        "/nope,main/orders-default.yml",
    ] {
        let (status, _, _) = get(&router, uri, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
    }
    std::fs::remove_dir_all(repo).unwrap();
}

#[tokio::test]
async fn a_folder_takes_a_list_of_its_label_aliases_once() {
    let folder = tempdir();
    write(&folder, &[("orders.yml", "pool: 1\n")]);
    let router = router_for(&folder, None);
    let (status, _, body) = get(&router, "/orders/default/main,master", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(source_files(&body), ["orders.yml"]);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["version"],
        Value::Null
    );
    let (status, _, _) = get(&router, "/orders/default/main,v9", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    std::fs::remove_dir_all(folder).unwrap();
}

#[tokio::test]
async fn the_label_main_falls_back_to_master_in_every_form() {
    let repo = tempdir();
    git(&repo, &["init", "-q", "-b", "master"]);
    write(
        &repo,
        &[("orders.yml", "pool: 7\n"), ("nginx.conf", "listen 80;\n")],
    );
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "master only"]);
    git(&repo, &["pack-refs", "--all"]);
    let master = git(&repo, &["rev-parse", "HEAD"]);
    let router = router_for(&repo, None);
    for uri in [
        "/orders/default",
        "/orders/default/main",
        "/orders/default/master",
    ] {
        let (status, _, body) = get(&router, uri, None).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        let environment: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(environment["version"], master.as_str(), "{uri}");
        assert_eq!(
            environment["propertySources"][0]["source"]["pool"], 7,
            "{uri}"
        );
    }
    let (_, _, body) = get(&router, "/orders/default/main", None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["label"],
        "main"
    );
    for (uri, expected) in [
        ("/main/orders-default.yml", "pool: 7\n"),
        ("/main/orders-default.properties", "pool: 7"),
        ("/orders/default/main/nginx.conf", "listen 80;\n"),
    ] {
        let (status, _, body) = get(&router, uri, None).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, expected), "{uri}");
    }
    // Only `main` falls back: another missing branch is still 404.
    let (status, _, _) = get(&router, "/orders/default/develop", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    std::fs::remove_dir_all(repo).unwrap();
}

#[tokio::test]
async fn profiles_are_checked_as_springs_server_checks_them_unless_told_not_to() {
    let folder = tempdir();
    write(
        &folder,
        &[
            ("orders-_local.yml", "where: local\n"),
            ("orders-dev:eu.yml", "where: eu\n"),
            ("orders-d\u{e9}v.yml", "where: dev\n"),
        ],
    );
    let router = router_for(&folder, None);
    for (uri, expected) in [
        ("/orders/_local", StatusCode::BAD_REQUEST),
        ("/orders/dev:eu", StatusCode::BAD_REQUEST),
        ("/orders/dev%3Aeu", StatusCode::BAD_REQUEST),
        ("/orders-_local.yml", StatusCode::BAD_REQUEST),
        ("/orders/local_", StatusCode::BAD_REQUEST),
        ("/orders/dev,,x", StatusCode::BAD_REQUEST),
        ("/orders/dev%20", StatusCode::BAD_REQUEST),
        ("/orders/dev%F0%9D%92%9C", StatusCode::BAD_REQUEST),
        ("/orders/d_e.v+1@x", StatusCode::OK),
        ("/orders/d%C3%A9v", StatusCode::OK),
    ] {
        let (status, _, body) = get(&router, uri, None).await;
        assert_eq!(status, expected, "{uri}: {body}");
    }
    let (_, _, body) = get(&router, "/orders/d%C3%A9v", None).await;
    assert_eq!(source_files(&body), ["orders-d\u{e9}v.yml"]);

    // `--config-validate-profiles false`: such names are served, as Spring's
    // `spring.profiles.validate=false` and the servers before 4.3.3 do.
    let repository = crate::Repository::open(folder.to_str().unwrap()).unwrap();
    let lenient = crate::routes(crate::ConfigSources {
        repository: Some(std::sync::Arc::new(repository)),
        validate_profiles: false,
        ..crate::ConfigSources::default()
    });
    for (uri, file) in [
        ("/orders/_local", "orders-_local.yml"),
        ("/orders/dev:eu", "orders-dev:eu.yml"),
    ] {
        let (status, _, body) = get(&lenient, uri, None).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        assert_eq!(source_files(&body), [file], "{uri}");
    }
    let (_, _, yaml) = get(&lenient, "/orders-_local.yml", None).await;
    assert_eq!(yaml, "where: local\n");
    // What could leave the repository stays refused.
    for uri in ["/orders/..", "/orders/dev%23x", "/orders/(_)x"] {
        let (status, _, _) = get(&lenient, uri, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
    }
    std::fs::remove_dir_all(folder).unwrap();
}

#[tokio::test]
async fn kv_contexts_split_a_comma_separated_application_the_same_way() {
    use bytes::Bytes;
    use ferry_core::change_index::ChangeIndex;
    use ferry_core::clock::Clock;
    use ferry_core::kv::KvStore;

    let kv = std::sync::Arc::new(KvStore::in_memory(
        std::sync::Arc::new(ChangeIndex::new(1)),
        Clock::System,
        "n1",
    ));
    for (key, value) in [
        ("config/application/who", "application"),
        ("config/orders/who", "orders"),
        ("config/shared,dev/who", "shared-dev"),
    ] {
        kv.put(key, Bytes::from(value), 0, None, None).unwrap();
    }
    let folder = tempdir();
    let router = router_for(&folder, Some(kv));
    let (_, _, body) = get(&router, "/orders,shared/dev", None).await;
    let names: Vec<String> = serde_json::from_str::<Value>(&body).unwrap()["propertySources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|source| source["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "consul:config/shared,dev/",
            "consul:config/orders/",
            "consul:config/application/"
        ]
    );
    std::fs::remove_dir_all(folder).unwrap();
}
