//! The real `ferry` binary for the mesh tests: started on free ports with one outbound
//! port, a service registered through the Eureka API and cut over through the admin API.
#![allow(dead_code)]

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// A loopback port free now and never handed out before by this test process: the kernel
/// may offer a just-closed port again, and two listeners of one ferry must not share one.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if HANDED_OUT.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// The built `ferry` on free ports; killed when dropped.
pub struct Ferry {
    child: Child,
    pub eureka: u16,
    pub admin: u16,
    /// Sidecar mode's inbound listener (open only with an identity).
    pub inbound: u16,
    /// The Consul API's port, when started with it (`start_ferry_with_consul`).
    pub consul: Option<u16>,
    _data: TempDir,
}

impl Ferry {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Ferry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn start_ferry() -> Ferry {
    start_ferry_with(&[]).await
}

/// `start_ferry` with extra command-line arguments. A port handed out as free may be taken
/// by another test before ferry binds it; ferry then exits at once, and is started again on
/// other ports.
pub async fn start_ferry_with(extra: &[&str]) -> Ferry {
    start(extra, false).await
}

/// `start_ferry_with`, the Consul API listening too.
pub async fn start_ferry_with_consul(extra: &[&str]) -> Ferry {
    start(extra, true).await
}

async fn start(extra: &[&str], consul: bool) -> Ferry {
    for _ in 0..5 {
        if let Some(ferry) = try_start(extra, consul).await {
            return ferry;
        }
    }
    panic!("ferry did not start on five sets of free ports");
}

async fn try_start(extra: &[&str], consul: bool) -> Option<Ferry> {
    let (eureka, admin, inbound) = (free_port(), free_port(), free_port());
    let consul = consul.then(free_port);
    let consul_listen = consul.map_or_else(|| "off".to_owned(), |port| format!("127.0.0.1:{port}"));
    let first_outbound = free_port();
    // Named by a counter, never by a port, for the same reason.
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let data = std::env::temp_dir().join(format!(
        "ferry-mesh-test-{}-{}",
        std::process::id(),
        STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["--eureka-listen", &format!("127.0.0.1:{eureka}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args([
            "--consul-listen",
            &consul_listen,
            "--config-listen",
            "off",
            "--log",
            "warn",
        ])
        .args([
            "--outbound-ports",
            &format!("{first_outbound}-{first_outbound}"),
        ])
        .args(["--data-dir", data.to_str().unwrap()])
        .args(["--inbound-listen", &format!("127.0.0.1:{inbound}")])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("the ferry binary starts");
    let mut ferry = Ferry {
        child,
        eureka,
        admin,
        inbound,
        consul,
        _data: TempDir(data),
    };
    let client = reqwest::Client::new();
    // A condition, polled: a loaded CI machine may take seconds to start a debug build.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if let Ok(response) = client
            .get(format!("http://127.0.0.1:{admin}/ready"))
            .send()
            .await
        {
            if response.status().is_success() {
                return Some(ferry);
            }
        }
        if ferry.child.try_wait().ok().flatten().is_some() {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("ferry did not become ready within a minute");
}

/// Waits until something accepts connections on `port` (a server spawned just before).
pub async fn wait_for_port(port: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {port}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Registers `port` as the only instance of `app` and cuts `app` over; returns the
/// outbound port.
pub async fn mesh(ferry: &Ferry, app: &str, port: u16) -> u16 {
    register(ferry.eureka, app, &format!("{app}-1"), port).await;
    cut_over(ferry, app).await
}

/// Runs the built `ferry` with `args` (a subcommand: `ca init`, `ctl ...`) to its end.
pub fn ferry_cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .output()
        .expect("run ferry")
}

/// The standard output of a run that must have succeeded.
pub fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "ferry failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `ferry ca init` for `trust_domain` into `dir`; the root's fingerprint it prints.
pub fn ca_init(dir: &std::path::Path, trust_domain: &str) -> String {
    let printed = succeeded(&ferry_cli(&[
        "ca",
        "init",
        "--trust-domain",
        trust_domain,
        "--dir",
        dir.to_str().unwrap(),
    ]));
    printed
        .lines()
        .find_map(|line| line.strip_prefix("root SHA-256: "))
        .expect("init prints the root's fingerprint")
        .to_owned()
}

/// A real gRPC server on loopback (tonic, tonic-health's `grpc.health.v1`) with
/// `orders.Orders` serving; its reporter and address.
pub async fn grpc_health_backend() -> (tonic_health::server::HealthReporter, std::net::SocketAddr) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("orders.Orders", tonic_health::ServingStatus::Serving)
        .await;
    let backend: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve(backend),
    );
    wait_for_port(backend.port()).await;
    (reporter, backend)
}

/// Registers `port` on loopback as instance `id` of `app` through the Eureka API at
/// `eureka`.
pub async fn register(eureka: u16, app: &str, id: &str, port: u16) {
    let registration = serde_json::json!({"instance": {
        "instanceId": id, "hostName": "127.0.0.1", "app": app, "ipAddr": "127.0.0.1",
        "port": {"$": port, "@enabled": "true"}, "dataCenterInfo": {"name": "MyOwn"}}});
    let registered = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{eureka}/eureka/apps/{app}"))
        .json(&registration)
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 204);
}

/// The admin listener's `/metrics` text.
pub async fn metrics_text(admin: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A WebSocket server on loopback (tokio-tungstenite) answering each text message with
/// `echo: <text>`; its address.
pub async fn websocket_echo_backend() -> std::net::SocketAddr {
    use futures_util::{SinkExt, StreamExt};
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
                        let reply =
                            tokio_tungstenite::tungstenite::Message::text(format!("echo: {text}"));
                        let _ = socket.send(reply).await;
                    }
                }
            });
        }
    });
    backend
}

/// Sends three messages over a WebSocket through `port` and checks each echo.
pub async fn websocket_round_trips(port: u16) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut socket, response) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/chat"))
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

/// What an app served: each request's URI and headers.
pub type AccessLog = std::sync::Arc<std::sync::Mutex<Vec<(String, http::HeaderMap)>>>;

/// An HTTP/1.1 app on loopback answering `body` to everything and logging every request.
pub async fn http_app(body: &'static str, log: AccessLog) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: http::Request<_>| {
                    log.lock()
                        .unwrap()
                        .push((request.uri().to_string(), request.headers().clone()));
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body)),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

/// Cuts `app` over through `node`'s admin API; every node follows. Its outbound port there.
pub async fn cut_over(node: &Ferry, app: &str) -> u16 {
    let answer = reqwest::Client::new()
        .put(format!(
            "http://127.0.0.1:{}/api/services/{app}",
            node.admin
        ))
        .json(&serde_json::json!({"mode": "mesh"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let service: serde_json::Value =
        serde_json::from_str(&answer).unwrap_or_else(|_| panic!("cutover of {app}: {answer}"));
    assert_eq!(service["mode"], "mesh", "{service}");
    service["port"].as_u64().unwrap() as u16
}
