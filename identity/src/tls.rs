//! rustls configurations for node-to-node mutual TLS, and the check that turns a verified
//! peer certificate into a [`NodeName`].
//!
//! Both ends verify the chain against the trust bundle with webpki; the client also checks
//! the server's DNS SAN (`<node>.node.<td>`, see [`server_name`]), and the server learns who
//! called from the URI SAN through [`peer_node`]. TLS 1.3 only: both ends are Ferry, so
//! there is no older peer to accommodate. Providers are ring, never aws-lc or OpenSSL.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::ca::TrustDomain;
use crate::error::IdentityError;
use crate::node::{NodeCert, NodeKey, NodeName};

/// HTTP/2 only between nodes: one pooled connection carries every call to a peer.
const ALPN_H2: &[u8] = b"h2";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A trust bundle may hold two roots while one is rotated; leaves from either verify.
fn root_store(
    trust_roots: &[CertificateDer<'static>],
) -> Result<Arc<RootCertStore>, IdentityError> {
    if trust_roots.is_empty() {
        return Err(IdentityError::EmptyTrustBundle);
    }
    let mut store = RootCertStore::empty();
    for root in trust_roots {
        store.add(root.clone())?;
    }
    Ok(Arc::new(store))
}

/// The inbound side: client certificates are required and must chain to `trust_roots`.
/// Whether the client is a node is then [`peer_node`]'s decision, after the handshake.
pub fn server_config(
    node_key: &NodeKey,
    node_cert: &NodeCert,
    trust_roots: &[CertificateDer<'static>],
) -> Result<Arc<ServerConfig>, IdentityError> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(root_store(trust_roots)?, provider.clone())
            .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(node_cert.chain_der()?, node_key.private_key_der())?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The outbound side: presents the node's chain and verifies the server's against
/// `trust_roots` and the name given to the connector (see [`server_name`]).
pub fn client_config(
    node_key: &NodeKey,
    node_cert: &NodeCert,
    trust_roots: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, IdentityError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(root_store(trust_roots)?)
        .with_client_auth_cert(node_cert.chain_der()?, node_key.private_key_der())?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The TLS server name to dial `node` by: its DNS SAN `<node>.node.<td>`.
pub fn server_name(
    node: &NodeName,
    td: &TrustDomain,
) -> Result<ServerName<'static>, IdentityError> {
    ServerName::try_from(node.dns_name(td))
        .map_err(|e| IdentityError::Certificate(format!("invalid server name: {e}")))
}

/// Checks a node certificate as its peers will, before the node takes it: the chain verifies
/// against `trust_roots` at `now`, it is valid for the DNS name of `node`, its URI SAN is
/// `node`'s, and its leaf carries `key`'s public key (a certificate for another key would
/// be useless, and one for another node would be a signer's bug).
pub fn verify_node_cert(
    key: &NodeKey,
    cert: &NodeCert,
    node: &NodeName,
    td: &TrustDomain,
    trust_roots: &[CertificateDer<'static>],
    now: std::time::SystemTime,
) -> Result<(), IdentityError> {
    use rustls::client::danger::ServerCertVerifier;
    let chain = cert.chain_der()?;
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| IdentityError::Pem("no certificate in the chain".into()))?;
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        root_store(trust_roots)?,
        provider(),
    )
    .build()
    .map_err(|e| IdentityError::Certificate(format!("verifier: {e}")))?;
    let since_epoch = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| IdentityError::Certificate("the clock is before 1970".into()))?;
    verifier.verify_server_cert(
        leaf,
        intermediates,
        &server_name(node, td)?,
        &[],
        rustls::pki_types::UnixTime::since_unix_epoch(since_epoch),
    )?;
    let named = peer_node(&chain, td)?;
    if &named != node {
        return Err(IdentityError::Certificate(format!(
            "the certificate is for node {named}, not {node}"
        )));
    }
    if cert.public_key_info()? != key.public_key_info() {
        return Err(IdentityError::Certificate(
            "the certificate is not for this node's key".into(),
        ));
    }
    Ok(())
}

/// Who the peer is, from its leaf's URI SAN. `certs` must come from a connection whose
/// handshake verified them (rustls' `peer_certificates()`): this reads, it does not verify.
/// Only `spiffe://<td>/node/<name>` is accepted, and only as the leaf's one URI SAN (as
/// SPIFFE requires), so a workload certificate of the same domain is not a node.
pub fn peer_node(
    certs: &[CertificateDer<'_>],
    td: &TrustDomain,
) -> Result<NodeName, IdentityError> {
    let not_a_node = |reason: String| IdentityError::NotANode {
        trust_domain: td.to_string(),
        reason,
    };
    let leaf = certs.first().ok_or(IdentityError::NoPeerCertificate)?;
    let (_, x509) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| not_a_node(format!("unreadable certificate: {e}")))?;
    let uris = uri_sans(&x509)?;
    let uri = match uris.as_slice() {
        [uri] => *uri,
        [] => return Err(not_a_node("the certificate has no URI SAN".into())),
        _ => return Err(not_a_node("the certificate has several URI SANs".into())),
    };
    let prefix = format!("spiffe://{td}/node/");
    let name = uri
        .strip_prefix(&prefix)
        .ok_or_else(|| not_a_node(format!("{uri:?} is not under {prefix:?}")))?;
    NodeName::new(name).map_err(|e| not_a_node(format!("{uri:?}: {e}")))
}

/// The URI SANs of a certificate, in order.
pub(crate) fn uri_sans<'a>(x509: &'a X509Certificate<'_>) -> Result<Vec<&'a str>, IdentityError> {
    let san = x509
        .subject_alternative_name()
        .map_err(|e| IdentityError::Certificate(format!("subject alternative name: {e}")))?;
    Ok(san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}
