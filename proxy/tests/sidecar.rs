//! Sidecar mode's two hops at the library level, over real loopback TCP with real TLS 1.3
//! (tokio-rustls) and real HTTP servers and clients (hyper): the inbound listener's refusal
//! matrix, each refusal leaving the app's access log empty, and an outbound listener that
//! reaches an instance another node keeps only through that node's inbound listener.
//! Certificates come from ferry-identity exactly as the join flow makes them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use bytes::Bytes;
use ferry_core::store::{Change, Store, StoreError, Written};
use ferry_core::{Clock, Instance, Registry, RegistrySettings};
use ferry_identity::{
    Credentials, Issuer, LiveIdentity, NodeCert, NodeKey, NodeName, Root, TrustDomain,
    DEFAULT_LIFETIME,
};
use ferry_proxy::inbound::{self, AllowRules, Inbound, InboundMetrics, LocalAddresses};
use ferry_proxy::peer::{PeerDirectory, PeerMetrics, Sidecar};
use ferry_proxy::upstream::{Upstream, UpstreamSettings};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

fn td() -> TrustDomain {
    TrustDomain::new("mesh.test").unwrap()
}

struct Domain {
    issuer: Issuer,
    roots: Vec<CertificateDer<'static>>,
}

fn domain() -> Domain {
    let root = Root::generate(&td()).unwrap();
    Domain {
        issuer: root.issuer().unwrap(),
        roots: vec![root.cert_der().clone()],
    }
}

/// A node's credentials signed by `issuer`, valid from `now - 5 min` for `lifetime`.
fn credentials(
    issuer: &Issuer,
    roots: &[CertificateDer<'static>],
    name: &str,
    now: OffsetDateTime,
    lifetime: Duration,
) -> Credentials {
    let name = NodeName::new(name).unwrap();
    let key = NodeKey::generate().unwrap();
    let cert = issuer
        .sign_node(&key.csr(&name).unwrap(), &name, &td(), now, lifetime)
        .unwrap();
    Credentials::new(name, td(), &key, &cert, roots).unwrap()
}

fn node(domain: &Domain, name: &str) -> Credentials {
    credentials(
        &domain.issuer,
        &domain.roots,
        name,
        OffsetDateTime::now_utc(),
        DEFAULT_LIFETIME,
    )
}

/// A leaf of the real issuer for a workload, not a node: rcgen directly, since
/// `sign_node` cannot make one.
fn workload(domain: &Domain) -> Arc<rustls::ClientConfig> {
    let pem = domain.issuer.to_pem();
    let signer =
        rcgen::Issuer::from_ca_cert_pem(&pem.cert, rcgen::KeyPair::from_pem(&pem.key).unwrap())
            .unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://mesh.test/svc/payments".try_into().unwrap(),
    )];
    params.not_before = OffsetDateTime::now_utc() - Duration::minutes(5);
    params.not_after = OffsetDateTime::now_utc() + Duration::hours(1);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = params.signed_by(&key, &signer).unwrap();
    let key = NodeKey::from_pem(&key.serialize_pem()).unwrap();
    let cert = NodeCert::from_pem(&format!("{}{}", leaf.pem(), pem.cert)).unwrap();
    ferry_identity::client_config(&key, &cert, &domain.roots).unwrap()
}

/// A client that trusts the domain but presents no certificate.
fn anonymous(domain: &Domain) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for root in &domain.roots {
        roots.add(root.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// The app: answers every request and logs what reached it.
#[derive(Clone, Default)]
struct App {
    log: Arc<Mutex<Vec<(String, http::HeaderMap)>>>,
}

impl App {
    async fn start(&self) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let log = self.log.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<_>| {
                        let log = log.clone();
                        async move {
                            log.lock()
                                .push((request.uri().to_string(), request.headers().clone()));
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                                "hello from orders",
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        address
    }

    fn requests(&self) -> usize {
        self.log.lock().len()
    }
}

fn limits() -> ferry_http::listen::ConnectionLimits {
    ferry_http::listen::ConnectionLimits {
        idle_timeout: StdDuration::from_secs(5),
        max_connections: 100,
        max_header_bytes: 16 * 1024,
        drain_timeout: StdDuration::from_secs(1),
    }
}

fn registry(store: Arc<dyn Store>) -> Arc<Registry> {
    Arc::new(Registry::new(
        RegistrySettings::default(),
        Clock::System,
        store,
    ))
}

fn register(registry: &Registry, id: &str, ip: &str, port: u16) {
    let instance = Instance::new("orders", id, ip, ip, u32::from(port));
    registry.register(instance, false).unwrap();
}

#[derive(Debug)]
struct DenyCaller(&'static str);

impl AllowRules for DenyCaller {
    fn check(&self, caller: &NodeName, service: &str) -> Result<(), String> {
        if caller.as_str() == self.0 {
            Err(format!("{caller} may not call {service}"))
        } else {
            Ok(())
        }
    }
}

/// Node B: its registry (memory, so it keeps every instance it has), an app on loopback,
/// and its inbound listener.
struct NodeB {
    app: App,
    inbound: SocketAddr,
    metrics: Arc<InboundMetrics>,
    _shutdown: watch::Sender<bool>,
}

async fn node_b(domain: &Domain, allow: Option<Arc<dyn AllowRules>>) -> NodeB {
    let app = App::default();
    let app_address = app.start().await;
    let registry = registry(Arc::new(ferry_core::store::MemoryStore));
    register(&registry, "orders-b", "127.0.0.1", app_address.port());
    // Registered with an address of another host: never forwarded to.
    register(&registry, "orders-far", "10.9.9.9", app_address.port());
    let metrics = Arc::new(InboundMetrics::default());
    let inbound = Arc::new(Inbound::new(
        registry,
        Arc::new(LiveIdentity::new(node(domain, "node-b"))),
        LocalAddresses::default(),
        allow,
        StdDuration::from_secs(1),
        metrics.clone(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (shutdown, watching) = watch::channel(false);
    tokio::spawn(inbound::serve(listener, inbound, limits(), watching));
    NodeB {
        app,
        inbound: address,
        metrics,
        _shutdown: shutdown,
    }
}

/// One HTTP/2 request over mutual TLS to an inbound listener, as node B's name is dialled.
async fn call(
    config: Arc<rustls::ClientConfig>,
    inbound: SocketAddr,
    target: Option<&str>,
) -> Result<(StatusCode, String, String), String> {
    let tcp = TcpStream::connect(inbound)
        .await
        .map_err(|e| e.to_string())?;
    let name = ferry_identity::server_name(&NodeName::new("node-b").unwrap(), &td()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(|e| format!("h2: {e}"))?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .uri("http://node-b.node.mesh.test/orders/42")
        .header("host", "orders")
        .header("x-request-id", "r-1");
    if let Some(target) = target {
        request = request
            .header("ferry-target", target)
            .header("ferry-hop", "1");
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let reason = response
        .headers()
        .get("x-ferry-error")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        status,
        reason,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reaches_an_instance_kept_here_and_mesh_headers_never_reach_the_app() {
    let domain = domain();
    let b = node_b(&domain, None).await;
    let a = node(&domain, "node-a");
    let (status, reason, body) = call(a.client.clone(), b.inbound, Some("orders/orders-b"))
        .await
        .unwrap();
    assert_eq!((status, reason.as_str()), (StatusCode::OK, ""), "{body}");
    assert_eq!(body, "hello from orders");
    let log = b.app.log.lock().clone();
    assert_eq!(log.len(), 1);
    let (path, headers) = &log[0];
    assert_eq!(path, "/orders/42");
    assert_eq!(headers.get("host").unwrap(), "orders");
    assert_eq!(headers.get("x-request-id").unwrap(), "r-1");
    assert!(
        !headers
            .keys()
            .any(|name| name.as_str().starts_with("ferry-")),
        "{headers:?}"
    );
    assert_eq!(b.metrics.handshakes.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_of_the_matrix_leaves_the_app_untouched() {
    let domain = domain();
    let b = node_b(&domain, Some(Arc::new(DenyCaller("node-x")))).await;
    let a = node(&domain, "node-a");
    let now = OffsetDateTime::now_utc();

    // Refused in the handshake: the client reads the alert on its first read.
    // Trusts the real roots, so only the server can refuse: the chain is another CA's.
    let other = self::domain();
    let rogue = credentials(
        &other.issuer,
        &domain.roots,
        "node-a",
        now,
        DEFAULT_LIFETIME,
    )
    .client
    .clone();
    let expired = credentials(
        &domain.issuer,
        &domain.roots,
        "node-a",
        now - Duration::days(2),
        Duration::days(1),
    );
    let skewed = credentials(
        &domain.issuer,
        &domain.roots,
        "node-a",
        now + Duration::minutes(10) + Duration::minutes(5),
        DEFAULT_LIFETIME,
    );
    let mut handshake_refusals = HashMap::new();
    for (case, config) in [
        ("no client certificate", anonymous(&domain)),
        ("rogue CA", rogue),
        ("expired", expired.client.clone()),
        ("10 minutes in the future", skewed.client.clone()),
    ] {
        let outcome = call(config, b.inbound, Some("orders/orders-b")).await;
        assert!(outcome.is_err(), "{case}: {outcome:?}");
        handshake_refusals.insert(case, outcome.unwrap_err());
    }
    eprintln!("{handshake_refusals:#?}");

    // Refused after the handshake, each with its status and reason.
    let x = node(&domain, "node-x");
    for (case, config, target, status, reason) in [
        (
            "a workload, not a node",
            workload(&domain),
            Some("orders/orders-b"),
            StatusCode::FORBIDDEN,
            "not-a-node",
        ),
        (
            "no target",
            a.client.clone(),
            None,
            StatusCode::BAD_REQUEST,
            "no-target",
        ),
        (
            "a raw address",
            a.client.clone(),
            Some("127.0.0.1:8080"),
            StatusCode::BAD_REQUEST,
            "not-an-instance",
        ),
        (
            "a URL",
            a.client.clone(),
            Some("http://127.0.0.1:8080/"),
            StatusCode::BAD_REQUEST,
            "not-an-instance",
        ),
        (
            "an instance this node does not have",
            a.client.clone(),
            Some("orders/orders-c"),
            StatusCode::MISDIRECTED_REQUEST,
            "unknown-instance",
        ),
        (
            "an instance registered at another host's address",
            a.client.clone(),
            Some("orders/orders-far"),
            StatusCode::MISDIRECTED_REQUEST,
            "not-local",
        ),
        (
            "a caller the allow rules forbid",
            x.client.clone(),
            Some("orders/orders-b"),
            StatusCode::FORBIDDEN,
            "not-allowed",
        ),
    ] {
        let (got, got_reason, body) = call(config, b.inbound, target).await.unwrap();
        assert_eq!(
            (got, got_reason.as_str()),
            (status, reason),
            "{case}: {body}"
        );
    }
    assert_eq!(b.app.requests(), 0, "a refused request reached the app");

    let failures = |reason: &'static str| {
        b.metrics
            .handshake_failures
            .get_or_create(&inbound::ReasonLabels { reason })
            .get()
    };
    let mut seen = String::new();
    prometheus_client::encoding::text::encode_registry(&mut seen, &{
        let mut registry = prometheus_client::registry::Registry::default();
        b.metrics.register(&mut registry);
        registry
    })
    .unwrap();
    eprintln!("{seen}");
    assert_eq!(failures("no-client-certificate"), 1);
    assert_eq!(failures("unknown-issuer"), 1);
    assert_eq!(failures("expired"), 1);
    assert_eq!(failures("not-yet-valid"), 1);
    let refused = |reason: &'static str| {
        b.metrics
            .refusals
            .get_or_create(&inbound::ReasonLabels { reason })
            .get()
    };
    assert_eq!(refused("not-an-instance"), 2);
    assert_eq!(refused("not-a-node"), 1);
    assert_eq!(refused("not-allowed"), 1);
}

/// A store in which node B keeps every instance: what node A's registry learns from a
/// shared store when B's app registered with B.
#[derive(Debug)]
struct KeptByB;

impl Store for KeptByB {
    fn name(&self) -> &'static str {
        "kept-by-b"
    }
    fn write(&self, _: &Change<'_>) -> Result<Written, StoreError> {
        Ok(Written::Local)
    }
    fn load(&self) -> Result<Vec<Instance>, StoreError> {
        Ok(Vec::new())
    }
    fn owned_here(&self, _: &str, _: &str) -> bool {
        false
    }
    fn keeper(&self, _: &str, _: &str) -> Option<String> {
        Some("node-b".to_owned())
    }
}

#[derive(Debug)]
struct Directory(HashMap<String, String>);

impl PeerDirectory for Directory {
    fn inbound_of(&self, node: &str) -> Option<String> {
        self.0.get(node).cloned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_listener_reaches_a_remote_instance_only_through_its_keepers_inbound() {
    let domain = domain();
    let b = node_b(&domain, None).await;

    let (outbound, peer_metrics, _shutdown) = node_a(node(&domain, "node-a"), &b).await;

    // A plain HTTP/1.1 caller, as a Spring app's RestTemplate is, three keep-alive calls.
    let mut caller = TcpStream::connect(outbound).await.unwrap();
    for i in 0..3 {
        caller
            .write_all(
                format!("GET /orders/{i} HTTP/1.1\r\nHost: orders\r\nx-call: {i}\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let answer = read_response(&mut caller).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("hello from orders"), "{answer}");
    }
    let log = b.app.log.lock().clone();
    assert_eq!(log.len(), 3);
    for (i, (path, headers)) in log.iter().enumerate() {
        assert_eq!(path, &format!("/orders/{i}"));
        assert_eq!(headers.get("host").unwrap(), "orders");
        assert_eq!(headers.get("x-call").unwrap(), &i.to_string());
        assert!(!headers.contains_key("ferry-target"));
    }
    // One pooled connection to B carried all three calls.
    assert_eq!(b.metrics.handshakes.get(), 1);
    assert_eq!(peer_metrics.handshakes.get(), 1);
    assert_eq!(
        peer_metrics
            .handshake_failures
            .get_or_create(&inbound::ReasonLabels { reason: "other" })
            .get(),
        0
    );
}

/// Node A: an outbound listener for ORDERS whose registry lists orders-b, kept by node-b,
/// at an address where nothing listens: only B's inbound listener, which resolves the id
/// against B's own registry, can reach it. Its address, its hop's metrics, and what keeps
/// it open.
async fn node_a(
    identity: Credentials,
    b: &NodeB,
) -> (SocketAddr, Arc<PeerMetrics>, watch::Sender<bool>) {
    let registry = registry(Arc::new(KeptByB));
    register(&registry, "orders-b", "127.0.0.1", 9);
    let peer_metrics = Arc::new(PeerMetrics::default());
    let sidecar = Arc::new(Sidecar::new(
        Arc::new(LiveIdentity::new(identity)),
        Arc::new(Directory(HashMap::from([(
            "node-b".to_owned(),
            b.inbound.to_string(),
        )]))),
        StdDuration::from_secs(1),
        peer_metrics.clone(),
    ));
    let upstream = Arc::new(
        Upstream::new(
            "ORDERS",
            registry,
            UpstreamSettings::default(),
            Arc::new(ferry_proxy::metrics::ProxyMetrics::new()),
        )
        .with_sidecar(Some(sidecar)),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let outbound = listener.local_addr().unwrap();
    let (shutdown, watching) = watch::channel(false);
    let handler = {
        let upstream = upstream.clone();
        hyper::service::service_fn(move |request| {
            let upstream = upstream.clone();
            async move { Ok::<_, Infallible>(upstream.handle(request).await) }
        })
    };
    tokio::spawn(ferry_proxy::h1::serve(
        listener,
        upstream,
        handler,
        limits(),
        watching,
        Default::default(),
    ));
    (outbound, peer_metrics, shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_certificate_the_caller_cannot_verify_is_never_called() {
    let domain = domain();
    let b = node_b(&domain, None).await;
    // Node A of another trust domain's CA: B's certificate does not verify for it.
    let (outbound, peer_metrics, _shutdown) = node_a(node(&self::domain(), "node-a"), &b).await;
    let mut caller = TcpStream::connect(outbound).await.unwrap();
    caller
        .write_all(b"GET /orders/1 HTTP/1.1\r\nHost: orders\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut caller).await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(
        answer.contains("through node node-b's inbound listener at"),
        "{answer}"
    );
    assert!(
        peer_metrics
            .handshake_failures
            .get_or_create(&inbound::ReasonLabels {
                reason: "unknown-issuer"
            })
            .get()
            >= 1
    );
    assert_eq!(peer_metrics.handshakes.get(), 0);
    assert_eq!(b.app.requests(), 0);
}

/// Reads one HTTP/1.1 response with a Content-Length body.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(StdDuration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(read > 0, "closed: {}", String::from_utf8_lossy(&buffer));
        buffer.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&buffer).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                return text;
            }
        }
    }
}
