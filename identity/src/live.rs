//! A node's identity as it is now: the certificate it holds and the TLS configs built on
//! it, swapped whole when the certificate is renewed or the trust bundle changes.
//!
//! The inbound listener and the outbound connector read [`LiveIdentity::current`] for every
//! new connection, so a renewal takes effect on the next handshake without a restart;
//! connections already open keep the config they were made with (their peer checked the
//! certificate then, and TLS never re-checks it).

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, ServerConfig};
use time::OffsetDateTime;

use crate::ca::{fingerprint_sha256, TrustDomain};
use crate::error::IdentityError;
use crate::node::{NodeCert, NodeKey, NodeName};
use crate::tls::{client_config, server_config};

/// One consistent set: a certificate, its key's configs, the bundle they trust.
#[derive(Debug)]
pub struct Credentials {
    pub node: NodeName,
    pub trust_domain: TrustDomain,
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// SHA-256 fingerprints of the roots trusted, in bundle order.
    pub roots: Vec<String>,
}

impl Credentials {
    /// Builds both configs from the node's key, its certificate chain and the bundle.
    pub fn new(
        node: NodeName,
        trust_domain: TrustDomain,
        key: &NodeKey,
        cert: &NodeCert,
        bundle: &[CertificateDer<'static>],
    ) -> Result<Self, IdentityError> {
        Ok(Self {
            server: server_config(key, cert, bundle)?,
            client: client_config(key, cert, bundle)?,
            not_before: cert.not_before,
            not_after: cert.not_after,
            roots: bundle.iter().map(fingerprint_sha256).collect(),
            node,
            trust_domain,
        })
    }
}

/// The current [`Credentials`], readable without a lock from every connection.
#[derive(Debug)]
pub struct LiveIdentity {
    current: ArcSwap<Credentials>,
}

impl LiveIdentity {
    pub fn new(credentials: Credentials) -> Self {
        Self {
            current: ArcSwap::from_pointee(credentials),
        }
    }

    pub fn current(&self) -> Arc<Credentials> {
        self.current.load_full()
    }

    /// Takes `credentials` for every handshake from now on. The node and trust domain must
    /// stay those the identity started with: a node never becomes another.
    pub fn replace(&self, credentials: Credentials) -> Result<(), IdentityError> {
        let now = self.current.load();
        if credentials.node != now.node || credentials.trust_domain != now.trust_domain {
            return Err(IdentityError::Certificate(format!(
                "renewed credentials are for {} in {}, not {} in {}",
                credentials.node, credentials.trust_domain, now.node, now.trust_domain
            )));
        }
        self.current.store(Arc::new(credentials));
        Ok(())
    }
}
