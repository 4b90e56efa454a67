//! gRPC (HTTP/2 over h2c, trailers and server streaming) and WebSocket through the real
//! `ferry` binary's outbound listener, with a real tonic client and server (tonic-health's
//! generated `grpc.health.v1` service) and a real WebSocket client and server
//! (tokio-tungstenite).

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

mod common;
use common::{free_port, mesh, start_ferry, wait_for_port};

#[tokio::test]
async fn grpc_unary_and_server_streaming_calls_pass_through_with_trailers() {
    let ferry = start_ferry().await;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("orders.Orders", tonic_health::ServingStatus::Serving)
        .await;
    let backend: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve(backend),
    );
    wait_for_port(backend.port()).await;
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

#[tokio::test]
async fn websocket_upgrades_pass_through_both_ways() {
    let ferry = start_ferry().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_text() {
                        let text = message.into_text().unwrap();
                        let _ = socket.send(Message::text(format!("echo: {text}"))).await;
                    }
                }
            });
        }
    });
    let outbound = mesh(&ferry, "SOCKETS", backend.port()).await;
    let (mut socket, response) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{outbound}/chat"))
            .await
            .expect("the upgrade goes through the proxy");
    assert_eq!(response.status(), 101);
    for round in 0..3 {
        socket
            .send(Message::text(format!("hello {round}")))
            .await
            .unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            reply.into_text().unwrap().as_str(),
            format!("echo: hello {round}")
        );
    }
    socket.close(None).await.unwrap();
}
