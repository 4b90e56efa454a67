//! Who may change the mesh through the admin API. A cutover redirects a service's traffic,
//! so a write needs the admin token (`Authorization: Bearer TOKEN`) when one is set; with
//! none set, writes are accepted only on an admin listener bound to loopback, so nothing
//! beyond this host changes the mesh without authentication. Reads (`/metrics`, `/ready`,
//! `GET /api/...`) stay open for probes and Prometheus.
//!
//! A browser adds one more rule: a write whose `Origin` is not the admin listener's own
//! (the `Host` it was sent to) is refused whatever the policy, so a page from elsewhere
//! that the operator has open cannot cut a service over through the loopback listener
//! (a cross-site form POST needs no preflight). `ferry ctl` and scripts send no `Origin`;
//! the dashboard's own requests carry its origin. Without a token, a write must also name a
//! loopback address in `Host`, which a page using DNS rebinding cannot.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The rule for admin writes, fixed at start.
#[derive(Clone, Debug)]
pub enum WritePolicy {
    /// Writes carry this bearer token.
    Token(String),
    /// No token is set and the listener is on loopback: local processes may write.
    LoopbackOnly,
    /// No token is set and the listener faces the network: no one may write.
    Refused,
}

impl WritePolicy {
    pub fn new(token: Option<&str>, listener_is_loopback: bool) -> WritePolicy {
        match token.filter(|token| !token.is_empty()) {
            Some(token) => WritePolicy::Token(token.to_owned()),
            None if listener_is_loopback => WritePolicy::LoopbackOnly,
            None => WritePolicy::Refused,
        }
    }
}

/// Lets reads through and holds writes to the policy.
pub async fn guard(State(policy): State<WritePolicy>, request: Request, next: Next) -> Response {
    let read = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if read {
        return next.run(request).await;
    }
    if !same_origin(&request) {
        return (
            StatusCode::FORBIDDEN,
            "admin writes from another site's page are refused\n",
        )
            .into_response();
    }
    match &policy {
        // A page on another site whose name it rebinds to 127.0.0.1 sends its own name as
        // `Host` and `Origin` alike, so the origin check alone passes it: without a token,
        // a write must be addressed to the loopback listener by a loopback name.
        WritePolicy::LoopbackOnly if !addressed_to_loopback(&request) => (
            StatusCode::FORBIDDEN,
            "admin writes without a token must be sent to a loopback address (Host: 127.0.0.1, [::1] or localhost)\n",
        )
            .into_response(),
        WritePolicy::LoopbackOnly => next.run(request).await,
        WritePolicy::Refused => (
            StatusCode::FORBIDDEN,
            "admin writes are off: this listener is not on loopback and no --admin-token is set\n",
        )
            .into_response(),
        WritePolicy::Token(expected) => {
            let presented = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "));
            match presented {
                Some(token) if same_secret(token.trim().as_bytes(), expected.as_bytes()) => {
                    next.run(request).await
                }
                Some(_) => {
                    (StatusCode::FORBIDDEN, "the admin token is not valid\n").into_response()
                }
                None => {
                    let mut response =
                        (StatusCode::UNAUTHORIZED, "an admin token is required\n").into_response();
                    response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"ferry-admin\""),
                    );
                    response
                }
            }
        }
    }
}

/// Whether the request carries no `Origin`, or one whose host and port are the `Host` it was
/// sent to (`http://127.0.0.1:15000` for `127.0.0.1:15000`; through `ssh -L`, the forwarded
/// address on both).
fn same_origin(request: &Request) -> bool {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return true;
    };
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok());
    let origin_host = origin.to_str().ok().and_then(|origin| {
        origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
    });
    matches!((origin_host, host), (Some(origin), Some(host)) if origin.eq_ignore_ascii_case(host))
}

/// Whether the request's `Host` (if any: HTTP/1.0 and raw clients may send none) names
/// loopback: `127.x.x.x`, `[::1]` or `localhost`, with any port.
fn addressed_to_loopback(request: &Request) -> bool {
    let Some(host) = request.headers().get(header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// Compares without stopping at the first difference, so the time taken says nothing of
/// how much of a guess was right.
fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    presented.len() == expected.len()
        && presented
            .iter()
            .zip(expected)
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use axum::Router;
    use ferry_http::test_client::call;

    use super::*;

    fn guarded(policy: WritePolicy) -> Router {
        Router::new()
            .route(
                "/api/services/{name}",
                get(|| async { "read" }).put(|| async { "moved" }),
            )
            .layer(axum::middleware::from_fn_with_state(policy, guard))
    }

    #[tokio::test]
    async fn writes_need_the_token_or_loopback_and_reads_never_do() {
        let uri = "/api/services/orders";
        let token = guarded(WritePolicy::new(Some("s3cret"), false));
        let put = |headers: &'static [(&'static str, &'static str)]| {
            let token = token.clone();
            async move { call(&token, Method::PUT, uri, headers, "").await }
        };
        let missing = put(&[]).await;
        assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
        assert!(missing.headers.contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(
            put(&[("authorization", "Bearer guess")]).await.status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            put(&[("authorization", "s3cret")]).await.status,
            StatusCode::UNAUTHORIZED
        );
        let allowed = put(&[("authorization", "Bearer s3cret")]).await;
        assert_eq!(
            (allowed.status, allowed.text().as_str()),
            (StatusCode::OK, "moved")
        );
        assert_eq!(
            call(&token, Method::GET, uri, &[], "").await.status,
            StatusCode::OK
        );

        let open_network = guarded(WritePolicy::new(None, false));
        let refused = call(&open_network, Method::PUT, uri, &[], "").await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(
            refused.text().contains("--admin-token"),
            "{}",
            refused.text()
        );
        assert_eq!(
            call(&open_network, Method::GET, uri, &[], "").await.status,
            StatusCode::OK
        );

        let loopback = guarded(WritePolicy::new(None, true));
        assert_eq!(
            call(&loopback, Method::PUT, uri, &[], "").await.status,
            StatusCode::OK
        );

        // A browser's write: the dashboard's own origin passes, another site's never does,
        // even with the token; reads from anywhere stay open.
        let own = [
            ("host", "127.0.0.1:15000"),
            ("origin", "http://127.0.0.1:15000"),
        ];
        assert_eq!(
            call(&loopback, Method::PUT, uri, &own, "").await.status,
            StatusCode::OK
        );
        let elsewhere = [
            ("host", "127.0.0.1:15000"),
            ("origin", "https://evil.example"),
        ];
        let refused = call(&loopback, Method::POST, uri, &elsewhere, "").await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(
            refused.text().contains("another site"),
            "{}",
            refused.text()
        );
        let with_token = [
            ("host", "127.0.0.1:15000"),
            ("origin", "http://localhost:8080"),
            ("authorization", "Bearer s3cret"),
        ];
        assert_eq!(
            call(&token, Method::PUT, uri, &with_token, "").await.status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            call(&loopback, Method::GET, uri, &elsewhere, "")
                .await
                .status,
            StatusCode::OK
        );

        // DNS rebinding: a page of rebound.example, its name now resolving to 127.0.0.1,
        // sends matching Host and Origin; without a token the write needs a loopback name.
        let rebound = [
            ("host", "rebound.example:15000"),
            ("origin", "http://rebound.example:15000"),
        ];
        let refused = call(&loopback, Method::PUT, uri, &rebound, "").await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(refused.text().contains("loopback"), "{}", refused.text());
        for host in [
            "localhost:15000",
            "127.0.0.2:15000",
            "[::1]:15000",
            "LOCALHOST",
        ] {
            assert_eq!(
                call(&loopback, Method::PUT, uri, &[("host", host)], "")
                    .await
                    .status,
                StatusCode::OK,
                "{host}"
            );
        }
        assert_eq!(
            call(&loopback, Method::GET, uri, &rebound, "").await.status,
            StatusCode::OK
        );
    }

    #[test]
    fn the_policy_follows_the_token_and_the_listener() {
        assert!(matches!(
            WritePolicy::new(Some("s3"), false),
            WritePolicy::Token(_)
        ));
        assert!(matches!(
            WritePolicy::new(Some(""), true),
            WritePolicy::LoopbackOnly
        ));
        assert!(matches!(
            WritePolicy::new(None, true),
            WritePolicy::LoopbackOnly
        ));
        assert!(matches!(
            WritePolicy::new(None, false),
            WritePolicy::Refused
        ));
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abd", b"abc"));
        assert!(!same_secret(b"ab", b"abc"));
    }
}
