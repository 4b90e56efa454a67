//! The probe matrix of the research notes (multihost.md, section 3), as real TLS 1.3
//! handshakes over loopback TCP with tokio-rustls: what a node accepts and what it refuses.

use std::sync::Arc;

use ferry_identity::{
    client_config, peer_node, server_config, server_name, verify_node_cert, IdentityError, Issuer,
    NodeCert, NodeKey, NodeName, Root, TrustDomain, DEFAULT_LIFETIME,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ServerConfig};
use time::{Duration, OffsetDateTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn td() -> TrustDomain {
    TrustDomain::new("ferry.local").unwrap()
}

/// A trust domain's root, its issuer, and the one-root bundle every node trusts.
fn domain() -> (Root, Issuer, Vec<CertificateDer<'static>>) {
    let root = Root::generate(&td()).unwrap();
    let issuer = root.issuer().unwrap();
    let roots = vec![root.cert_der().clone()];
    (root, issuer, roots)
}

struct Node {
    name: NodeName,
    key: NodeKey,
    cert: NodeCert,
}

/// A node as the join flow makes it: key on the node, CSR to the issuer, chain back.
fn node_at(issuer: &Issuer, name: &str, now: OffsetDateTime, lifetime: Duration) -> Node {
    let name = NodeName::new(name).unwrap();
    let key = NodeKey::generate().unwrap();
    let csr = key.csr(&name).unwrap();
    let cert = issuer
        .sign_node(&csr, &name, issuer.trust_domain(), now, lifetime)
        .unwrap();
    Node { name, key, cert }
}

fn node(issuer: &Issuer, name: &str) -> Node {
    node_at(issuer, name, OffsetDateTime::now_utc(), DEFAULT_LIFETIME)
}

fn server(node: &Node, roots: &[CertificateDer<'static>]) -> Arc<ServerConfig> {
    server_config(&node.key, &node.cert, roots).unwrap()
}

fn client(node: &Node, roots: &[CertificateDer<'static>]) -> Arc<ClientConfig> {
    client_config(&node.key, &node.cert, roots).unwrap()
}

fn dial(name: &str) -> ServerName<'static> {
    server_name(&NodeName::new(name).unwrap(), &td()).unwrap()
}

/// What each side saw: the server the client's verified chain, the client the server's
/// reply. Errors as text, as an operator would read them in a log.
struct Outcome {
    server: Result<Vec<CertificateDer<'static>>, String>,
    client: Result<(), String>,
}

async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
        let certs: Vec<_> = conn
            .peer_certificates()
            .unwrap_or_default()
            .iter()
            .map(|c| c.clone().into_owned())
            .collect();
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok(certs)
    });
    let client = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut tls = TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        // Under TLS 1.3 the client finishes first; a refusal of its certificate arrives
        // as an alert on its first read.
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        assert_eq!(&buf, b"pong");
        Ok(())
    }
    .await;
    let server = accept.await.unwrap();
    Outcome { server, client }
}

fn assert_refused(outcome: &Outcome, server_says: &str) {
    let server = outcome.server.as_ref().expect_err("the server accepted");
    assert!(
        server.to_lowercase().contains(&server_says.to_lowercase()),
        "server error {server:?} does not mention {server_says:?}"
    );
    assert!(
        outcome.client.is_err(),
        "the client did not see the refusal"
    );
}

#[tokio::test]
async fn valid_node_cert_is_accepted_and_names_the_client() {
    let (_, issuer, roots) = domain();
    let (a, b) = (node(&issuer, "node-a"), node(&issuer, "node-b"));
    let out = handshake(server(&b, &roots), client(&a, &roots), dial("node-b")).await;
    out.client.unwrap();
    let certs = out.server.unwrap();
    assert_eq!(certs.len(), 2, "leaf and issuer");
    assert_eq!(peer_node(&certs, &td()).unwrap(), a.name);
    // The same chain seen from another trust domain is not a node of it.
    let other = TrustDomain::new("other.local").unwrap();
    assert!(matches!(
        peer_node(&certs, &other),
        Err(IdentityError::NotANode { .. })
    ));
}

#[tokio::test]
async fn no_client_certificate_is_refused() {
    let (root, issuer, roots) = domain();
    let b = node(&issuer, "node-b");
    let mut store = rustls::RootCertStore::empty();
    store.add(root.cert_der().clone()).unwrap();
    let mut anonymous =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth();
    anonymous.alpn_protocols = vec![b"h2".to_vec()];
    let out = handshake(server(&b, &roots), Arc::new(anonymous), dial("node-b")).await;
    assert_refused(&out, "peer sent no certificates");
}

#[tokio::test]
async fn expired_leaf_is_refused() {
    let (_, issuer, roots) = domain();
    let b = node(&issuer, "node-b");
    // Valid from now - 2 days (less the back-dating) to now - 1 day.
    let now = OffsetDateTime::now_utc();
    let a = node_at(
        &issuer,
        "node-a",
        now - Duration::days(2),
        Duration::days(1),
    );
    assert!(a.cert.not_after < now - Duration::hours(23));
    let out = handshake(server(&b, &roots), client(&a, &roots), dial("node-b")).await;
    assert_refused(&out, "expired");
}

#[tokio::test]
async fn leaf_not_yet_valid_is_refused() {
    let (_, issuer, roots) = domain();
    let b = node(&issuer, "node-b");
    // Valid from 10 minutes ahead: a signer whose clock runs fast beyond the back-dating.
    let now = OffsetDateTime::now_utc() + Duration::minutes(15);
    let a = node_at(&issuer, "node-a", now, DEFAULT_LIFETIME);
    let out = handshake(server(&b, &roots), client(&a, &roots), dial("node-b")).await;
    assert_refused(&out, "not valid yet");
}

#[tokio::test]
async fn rogue_ca_is_refused() {
    let (_, issuer, roots) = domain();
    let b = node(&issuer, "node-b");
    // Same trust domain, same node name, another root: the name proves nothing.
    let rogue = Root::generate(&td()).unwrap().issuer().unwrap();
    let a = node(&rogue, "node-a");
    let out = handshake(server(&b, &roots), client(&a, &roots), dial("node-b")).await;
    assert_refused(&out, "UnknownIssuer");
}

#[tokio::test]
async fn valid_chain_with_non_node_uri_handshakes_but_is_not_a_node() {
    let (_, issuer, roots) = domain();
    let b = node(&issuer, "node-b");

    // A leaf signed by the real issuer, but for a workload identity, made with rcgen
    // directly since `sign_node` cannot make one.
    let pem = issuer.to_pem();
    let signer =
        rcgen::Issuer::from_ca_cert_pem(&pem.cert, rcgen::KeyPair::from_pem(&pem.key).unwrap())
            .unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://ferry.local/svc/x".try_into().unwrap(),
    )];
    params.not_before = OffsetDateTime::now_utc() - Duration::minutes(5);
    params.not_after = OffsetDateTime::now_utc() + Duration::hours(1);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = params.signed_by(&key, &signer).unwrap();
    let svc = Node {
        name: NodeName::new("unused").unwrap(),
        key: NodeKey::from_pem(&key.serialize_pem()).unwrap(),
        cert: NodeCert::from_pem(&format!("{}{}", leaf.pem(), pem.cert)).unwrap(),
    };

    let out = handshake(server(&b, &roots), client(&svc, &roots), dial("node-b")).await;
    out.client.unwrap();
    let certs = out.server.unwrap();
    let err = peer_node(&certs, &td()).unwrap_err();
    assert!(matches!(err, IdentityError::NotANode { .. }), "{err}");
    assert!(
        err.to_string().contains("spiffe://ferry.local/svc/x"),
        "{err}"
    );
}

#[tokio::test]
async fn client_expecting_another_node_refuses_the_server() {
    let (_, issuer, roots) = domain();
    let (a, b) = (node(&issuer, "node-a"), node(&issuer, "node-b"));
    let out = handshake(server(&b, &roots), client(&a, &roots), dial("node-c")).await;
    let client = out.client.unwrap_err();
    assert!(client.contains("not valid for name"), "{client}");
    assert!(out.server.is_err());
}

#[tokio::test]
async fn bundle_with_two_roots_accepts_leaves_of_both() {
    let old = Root::generate(&td()).unwrap();
    let new = Root::generate(&td()).unwrap();
    let bundle = [old.cert_der().clone(), new.cert_der().clone()];
    let a = node(&old.issuer().unwrap(), "node-a");
    let b = node(&new.issuer().unwrap(), "node-b");

    for (server_node, client_node, name) in [(&b, &a, "node-b"), (&a, &b, "node-a")] {
        let out = handshake(
            server(server_node, &bundle),
            client(client_node, &bundle),
            dial(name),
        )
        .await;
        out.client.unwrap();
        let certs = out.server.unwrap();
        assert_eq!(peer_node(&certs, &td()).unwrap(), client_node.name);
    }

    // With the old root dropped, a leaf of the old issuer no longer gets in.
    let out = handshake(
        server(&b, &[new.cert_der().clone()]),
        client(&a, &bundle),
        dial("node-b"),
    )
    .await;
    assert_refused(&out, "UnknownIssuer");
}

#[test]
fn an_empty_bundle_is_an_error() {
    let root = Root::generate(&td()).unwrap();
    let a = node(&root.issuer().unwrap(), "node-a");
    assert!(matches!(
        server_config(&a.key, &a.cert, &[]),
        Err(IdentityError::EmptyTrustBundle)
    ));
    assert!(matches!(
        client_config(&a.key, &a.cert, &[]),
        Err(IdentityError::EmptyTrustBundle)
    ));
}

/// What a joining node checks before it takes the certificate the signer put in etcd.
#[test]
fn a_node_checks_its_new_certificate_against_bundle_name_and_key() {
    let (_root, issuer, roots) = domain();
    let joined = node(&issuer, "node-a");
    let now = std::time::SystemTime::now();
    let name = joined.name.clone();
    verify_node_cert(&joined.key, &joined.cert, &name, &td(), &roots, now).unwrap();
    // Another node's name, another key, another root, and an expired certificate: refused.
    let other = NodeName::new("node-b").unwrap();
    assert!(verify_node_cert(&joined.key, &joined.cert, &other, &td(), &roots, now).is_err());
    let stranger = NodeKey::generate().unwrap();
    assert!(verify_node_cert(&stranger, &joined.cert, &name, &td(), &roots, now).is_err());
    let (_, _, rogue_roots) = domain();
    assert!(verify_node_cert(&joined.key, &joined.cert, &name, &td(), &rogue_roots, now).is_err());
    let later = now + std::time::Duration::from_secs(2 * 24 * 3600);
    assert!(verify_node_cert(&joined.key, &joined.cert, &name, &td(), &roots, later).is_err());
    assert_eq!(ferry_identity::trust_domain_of(&roots[0]).unwrap(), td());
}
