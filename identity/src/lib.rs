//! Node identities for mutual TLS between Ferry nodes (issue 15).
//!
//! A trust domain has an offline root ([`Root`]) that makes a one-year [`Issuer`]; each node
//! makes its own key ([`NodeKey`]) and sends only a CSR; the issuer stamps the node's SPIFFE
//! identity on a short-lived certificate ([`NodeCert`]); [`tls`] builds the rustls configs that
//! require and check those certificates on both ends. Nothing here does I/O: moving CSRs and
//! certificates through etcd is the caller's business.

pub mod ca;
pub mod error;
pub mod live;
pub mod node;
pub mod tls;

pub use ca::{
    certs_from_pem, fingerprint_sha256, trust_domain_of, Issuer, PemPair, Root, TrustDomain,
};
pub use error::IdentityError;
pub use live::{Credentials, LiveIdentity};
pub use node::{
    csr_public_key_info, random_jitter, renew_at, NodeCert, NodeKey, NodeName, DEFAULT_LIFETIME,
};
/// Re-exported so that callers (the etcd CA, the bridge) name certificates without a rustls
/// dependency of their own.
pub use rustls::pki_types::CertificateDer;
pub use tls::{client_config, peer_node, server_config, server_name, verify_node_cert};

/// Checks one DNS label as the certificates will carry it. Lowercase only: SPIFFE IDs and
/// the names compared by the peer check are matched byte for byte, so `Node-A` and `node-a`
/// must not both be possible.
pub(crate) fn check_label(label: &str) -> Result<(), &'static str> {
    if label.is_empty() {
        return Err("empty label");
    }
    if label.len() > 63 {
        return Err("label longer than 63 characters");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("only a-z, 0-9 and '-' are allowed");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("a label cannot start or end with '-'");
    }
    Ok(())
}

/// A random serial per certificate: rcgen's default derives it from the public key, so a
/// node renewing with the same key would get the same serial twice.
pub(crate) fn random_serial() -> Result<rcgen::SerialNumber, IdentityError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| IdentityError::Random)?;
    // Positive and without a leading zero byte, as RFC 5280 wants serials.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}
