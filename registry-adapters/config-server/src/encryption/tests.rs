//! The prefix and form rules of `EncryptionController` and `EnvironmentPrefixHelper`.

use super::*;

#[test]
fn prefixes_are_read_and_stripped_as_springs_helper_does() {
    assert_eq!(strip_prefix("abc"), "abc");
    assert_eq!(strip_prefix("{key:k}abc"), "abc");
    assert_eq!(strip_prefix("{key:k}{secret:s}abc"), "abc");
    assert_eq!(strip_prefix("{a}{b:c}abc"), "abc");
    assert_eq!(strip_prefix("{plain}{key:k}abc"), "{key:k}abc");
    assert_eq!(strip_prefix("x{key:k}abc"), "x{key:k}abc");
    assert_eq!(strip_prefix("{key\n:k}abc"), "{key\n:k}abc");
    let keys = encryptor_keys("app", "dev", "{key:k}{x}secret");
    assert_eq!(add_prefix(keys, "HEX"), "{key:k}{x:}HEX");
    let keys = encryptor_keys("app", "dev", "{name:a}{key:k}secret");
    assert_eq!(add_prefix(keys, "HEX"), "HEX");
    let keys = encryptor_keys("app", "dev", "{key:}{plain}{b:c}");
    assert_eq!(add_prefix(keys, "HEX"), "{key::}HEX");
}

#[test]
fn form_bodies_are_read_as_a_servlet_container_and_spring_read_them() {
    assert_eq!(servlet_form_body("secret"), "secret=");
    assert_eq!(servlet_form_body("a+b"), "a+b=");
    assert_eq!(servlet_form_body("a=1&b=2&a=3"), "a=1&a=3&b=2");
    assert_eq!(servlet_form_body("=x&&k"), "k=");
    let form = "application/x-www-form-urlencoded";
    assert_eq!(strip_form_data("secret=", form, false).unwrap(), "secret");
    assert_eq!(strip_form_data("a+b=", form, false).unwrap(), "a b");
    assert_eq!(strip_form_data("a=1", form, false).unwrap(), "a=1");
    assert_eq!(
        strip_form_data("secret=", "text/plain", false).unwrap(),
        "secret="
    );
    assert_eq!(
        strip_form_data("secret=", "text/plain;charset=UTF-8", false).unwrap(),
        "secret"
    );
    assert_eq!(strip_form_data("abcd=", form, true).unwrap(), "abcd");
    assert_eq!(strip_form_data("YWJj+Q==", form, true).unwrap(), "YWJj+Q==");
    assert_eq!(strip_form_data("YWI==", form, true).unwrap(), "YWI=");
    assert_eq!(strip_form_data("zz!=", form, true).unwrap(), "zz!=");
    assert!(strip_form_data("%zz=", form, false).is_err());
}

mod over_http {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Method, StatusCode};
    use axum::Router;
    use ferry_http::test_client::call;
    use serde_json::{json, Value};

    use crate::cipher::{TextEncryptor, DEFAULT_SALT};
    use crate::tests::{get, tempdir};
    use crate::{routes, ConfigSources, Repository};

    fn router(folder: &std::path::Path, key: Option<&str>, decrypt: bool) -> Router {
        routes(ConfigSources {
            repository: Some(Arc::new(
                Repository::open(folder.to_str().unwrap()).unwrap(),
            )),
            encryptor: key.map(|key| Arc::new(TextEncryptor::new(key, DEFAULT_SALT).unwrap())),
            decrypt,
            ..ConfigSources::default()
        })
    }

    async fn post(
        router: &Router,
        uri: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> (StatusCode, String) {
        let headers: Vec<(&str, &str)> = content_type
            .map(|value| ("content-type", value))
            .into_iter()
            .collect();
        let reply = call(
            router,
            Method::POST,
            uri,
            &headers,
            Body::from(body.to_owned()),
        )
        .await;
        (reply.status, String::from_utf8(reply.body).unwrap())
    }

    fn source(body: &str, index: usize) -> Value {
        serde_json::from_str::<Value>(body).unwrap()["propertySources"][index]["source"].clone()
    }

    #[tokio::test]
    async fn cipher_values_are_served_decrypted_and_bad_ones_as_invalid() {
        let folder = tempdir();
        let encryptor = TextEncryptor::new("s3cret", DEFAULT_SALT).unwrap();
        let password = encryptor.encrypt("hunter2");
        let token = encryptor.encrypt("t0ken");
        std::fs::write(
            folder.join("orders.yml"),
            format!("password: '{{cipher}}{password}'\nbroken: '{{cipher}}zz'\nplain: x\n"),
        )
        .unwrap();
        std::fs::write(
            folder.join("orders.properties"),
            format!("token={{cipher}}{{key:k}}{token}\n"),
        )
        .unwrap();
        let keyed = router(&folder, Some("s3cret"), true);
        let (status, _, body) = get(&keyed, "/orders/default", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(source(&body, 0), json!({"token": "t0ken"}));
        // Decrypted properties move to the end of their source, as Spring re-adds them.
        let yml = source(&body, 1);
        let names: Vec<&String> = yml.as_object().unwrap().keys().collect();
        assert_eq!(names, ["plain", "password", "invalid.broken"]);
        assert_eq!(yml["password"], "hunter2");
        assert_eq!(yml["invalid.broken"], "<n/a>");
        let (_, _, properties) = get(&keyed, "/orders-default.properties", None).await;
        assert!(properties.contains("password: hunter2"), "{properties}");

        // A wrong key, or none: Spring's server serves every value as invalid.
        for other in [
            router(&folder, Some("wrong"), true),
            router(&folder, None, true),
        ] {
            let (_, _, body) = get(&other, "/orders/default", None).await;
            assert_eq!(source(&body, 1)["invalid.password"], "<n/a>");
            assert_eq!(source(&body, 0), json!({"invalid.token": "<n/a>"}));
        }
        // Decryption off: the values reach clients as written.
        let (_, _, body) = get(
            &router(&folder, Some("s3cret"), false),
            "/orders/default",
            None,
        )
        .await;
        assert_eq!(
            source(&body, 1)["password"],
            format!("{{cipher}}{password}")
        );
        std::fs::remove_dir_all(folder).unwrap();
    }

    #[tokio::test]
    async fn the_endpoints_answer_as_springs_encryption_controller() {
        let folder = tempdir();
        let keyed = router(&folder, Some("s3cret"), true);
        let (status, encrypted) = post(&keyed, "/encrypt", Some("text/plain"), "hunter2").await;
        assert_eq!(status, StatusCode::OK);
        let (status, plain) = post(&keyed, "/decrypt", Some("text/plain"), &encrypted).await;
        assert_eq!((status, plain.as_str()), (StatusCode::OK, "hunter2"));
        // curl -d sends a form: the servlet view of `hunter2` is `hunter2=`, stripped again.
        let form = Some("application/x-www-form-urlencoded");
        let (_, encrypted) = post(&keyed, "/encrypt", form, "hunter2").await;
        let (_, plain) = post(&keyed, "/decrypt", form, &encrypted).await;
        assert_eq!(plain, "hunter2");
        let (status, prefixed) = post(
            &keyed,
            "/encrypt/orders/dev",
            Some("text/plain"),
            "{key:k}pw",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(prefixed.starts_with("{key:k}"), "{prefixed}");
        let (_, plain) = post(&keyed, "/decrypt/orders/dev", Some("text/plain"), &prefixed).await;
        assert_eq!(plain, "pw");
        let (status, _, body) = get(&keyed, "/encrypt/status", None).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, r#"{"status":"OK"}"#)
        );

        for (uri, content_type, body, expected, says) in [
            (
                "/decrypt",
                Some("text/plain"),
                "zz",
                StatusCode::BAD_REQUEST,
                "INVALID",
            ),
            (
                "/decrypt",
                Some("text/plain"),
                "00112233445566778899aabbccddeeff00",
                StatusCode::BAD_REQUEST,
                "INVALID",
            ),
            (
                "/decrypt",
                Some("text/plain"),
                "0011",
                StatusCode::INTERNAL_SERVER_ERROR,
                "shorter",
            ),
            (
                "/encrypt",
                None,
                "x",
                StatusCode::BAD_REQUEST,
                "Content-Type",
            ),
            (
                "/encrypt",
                Some("text/plain"),
                "",
                StatusCode::BAD_REQUEST,
                "body is missing",
            ),
            (
                "/encrypt/orders/_local",
                Some("text/plain"),
                "x",
                StatusCode::BAD_REQUEST,
                "profile",
            ),
            (
                "/encrypt/..%2Fx/dev",
                Some("text/plain"),
                "x",
                StatusCode::BAD_REQUEST,
                "invalid",
            ),
        ] {
            let (status, answer) = post(&keyed, uri, content_type, body).await;
            assert_eq!(status, expected, "{uri} {body:?}: {answer}");
            assert!(answer.contains(says), "{uri} {body:?}: {answer}");
        }
        let (status, _, body) = get(&keyed, "/key", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"status": "NOT_FOUND", "description": "No public key available"})
        );
        let (status, _, _) = get(&keyed, "/encrypt", None).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        // GET /encrypt/x/y is the Environment of an application named `encrypt`.
        let (status, _, _) = get(&keyed, "/encrypt/dev/main", None).await;
        assert_eq!(status, StatusCode::OK);

        // No key: Spring's failsafe encryptor throws, which escapes as 500.
        let keyless = router(&folder, None, true);
        for uri in ["/encrypt", "/decrypt"] {
            let (status, _) = post(&keyless, uri, Some("text/plain"), &encrypted).await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{uri}");
        }
        let (status, _, _) = get(&keyless, "/encrypt/status", None).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let (status, _, _) = get(&keyless, "/key", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        std::fs::remove_dir_all(folder).unwrap();
    }
}
