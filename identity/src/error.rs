//! The one error type of the crate, so that callers (the CLI, the join flow, the inbound
//! listener) can tell a bad name from a bad certificate from a peer that is not a node.

/// Everything that can go wrong making or checking identities.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("invalid trust domain {name:?}: {reason}")]
    InvalidTrustDomain { name: String, reason: &'static str },
    #[error("invalid node name {name:?}: {reason}")]
    InvalidNodeName { name: String, reason: &'static str },
    #[error("certificate or key: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("PEM: {0}")]
    Pem(String),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("the issuer belongs to trust domain {issuer}, not {requested}")]
    TrustDomainMismatch { issuer: String, requested: String },
    #[error("the lifetime must be positive")]
    InvalidLifetime,
    #[error("the system random generator failed")]
    Random,
    #[error("the trust bundle holds no root certificate")]
    EmptyTrustBundle,
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    #[error("the peer is not a node of trust domain {trust_domain}: {reason}")]
    NotANode {
        trust_domain: String,
        reason: String,
    },
}
