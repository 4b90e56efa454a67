//! gRPC (HTTP/2 over h2c, trailers and server streaming), plain HTTP/2 callers of an
//! HTTP/1.1-only service, and WebSocket through the real `ferry` binary's outbound
//! listener, with a real tonic client and server (tonic-health's generated
//! `grpc.health.v1` service), hyper's HTTP/2 client and a real WebSocket client and server
//! (tokio-tungstenite).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

mod common;
use common::{
    grpc_health_backend, mesh, start_ferry, websocket_echo_backend, websocket_round_trips,
};

#[tokio::test]
async fn grpc_unary_and_server_streaming_calls_pass_through_with_trailers() {
    let ferry = start_ferry().await;
    let (reporter, backend) = grpc_health_backend().await;
    let outbound = mesh(&ferry, "GRPC-ORDERS", backend.port()).await;

    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{outbound}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let reply = client
        .check(HealthCheckRequest {
            service: "orders.Orders".into(),
        })
        .await
        .unwrap();
    assert_eq!(reply.get_ref().status, ServingStatus::Serving as i32);

    // A gRPC error travels in trailers: an unknown service is NOT_FOUND.
    let unknown = client
        .check(HealthCheckRequest {
            service: "nobody.Nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // Server streaming: the first status, then a change pushed by the server.
    let mut stream = client
        .watch(HealthCheckRequest {
            service: "orders.Orders".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    reporter
        .set_service_status("orders.Orders", tonic_health::ServingStatus::NotServing)
        .await;
    let second = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the streamed update arrives")
        .unwrap()
        .unwrap();
    assert_eq!(second.status, ServingStatus::NotServing as i32);
}

/// A service that speaks only HTTP/1.1, as most do: the HTTP/2 preface gets a 505 and a
/// closed connection. Every answer's body is the request line, the Host header and the
/// body it received, one a line.
async fn http1_only_service() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                loop {
                    let head_end = loop {
                        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
                    buffer.drain(..head_end);
                    if head.starts_with("PRI * HTTP/2.0") {
                        let refusal = "HTTP/1.1 505 HTTP Version Not Supported\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
                        let _ = stream.write_all(refusal.as_bytes()).await;
                        return;
                    }
                    let header = |name: &str| {
                        head.lines().find_map(|line| {
                            let (key, value) = line.split_once(':')?;
                            key.eq_ignore_ascii_case(name)
                                .then(|| value.trim().to_owned())
                        })
                    };
                    let length: usize = header("content-length").map_or(0, |n| n.parse().unwrap());
                    assert!(header("transfer-encoding").is_none(), "{head}");
                    while buffer.len() < length {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                        }
                    }
                    let body: Vec<u8> = buffer.drain(..length).collect();
                    let content = format!(
                        "{}\n{}\n{}",
                        head.lines().next().unwrap(),
                        header("host").unwrap_or_default(),
                        String::from_utf8_lossy(&body)
                    );
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{content}",
                        content.len()
                    );
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn an_http2_caller_reaches_an_http1_only_service_through_translation() {
    let ferry = start_ferry().await;
    let outbound = mesh(&ferry, "PLAIN", http1_only_service().await).await;
    // Prior knowledge: the caller opens with the HTTP/2 preface, no upgrade dance.
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    for (method, path, body) in [("GET", "/hello?x=1", ""), ("POST", "/orders", "{\"id\":7}")] {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:{outbound}{path}"))
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
            .await
            .expect("an answer within 10 s")
            .expect("an answer");
        assert_eq!(response.version(), http::Version::HTTP_2);
        let status = response.status();
        let error = response.headers().get("x-ferry-error").cloned();
        let text = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&text);
        assert_eq!(status, 200, "{error:?}: {text}");
        // The service got HTTP/1.1, with the caller's authority as its Host.
        assert_eq!(
            text,
            format!("{method} {path} HTTP/1.1\n127.0.0.1:{outbound}\n{body}")
        );
    }
    // gRPC cannot be translated: the answer says why.
    let grpc = http::Request::builder()
        .method("POST")
        .uri(format!("http://127.0.0.1:{outbound}/orders.Orders/Get"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let refused = client.request(grpc).await.unwrap();
    assert_eq!(refused.status(), 502);
    assert_eq!(refused.headers()["x-ferry-error"], "connection-failed");
    let text = refused.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("gRPC needs HTTP/2"), "{text}");
}

#[tokio::test]
async fn websocket_upgrades_pass_through_both_ways() {
    let ferry = start_ferry().await;
    let backend = websocket_echo_backend().await;
    let outbound = mesh(&ferry, "SOCKETS", backend.port()).await;
    websocket_round_trips(outbound).await;
}
