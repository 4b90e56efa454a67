//! A node's side of its identity: its name, the key it makes and keeps, the CSR it sends,
//! and the certificate the issuer sends back. The issuer decides what the certificate says
//! ([`Issuer::sign_node`]); the CSR only proves possession of the key.

use std::fmt;
use std::str::FromStr;

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use crate::ca::{certs_from_pem, Issuer, TrustDomain, BACKDATE};
use crate::error::IdentityError;

/// Node certificates live a day, as Linkerd's do: short enough that there is no revocation
/// list to run, long enough to ride out an etcd outage of hours.
pub const DEFAULT_LIFETIME: Duration = Duration::hours(24);

/// A node's name: one lowercase DNS label, the `<name>` of `spiffe://<td>/node/<name>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

impl NodeName {
    pub fn new(name: &str) -> Result<Self, IdentityError> {
        crate::check_label(name).map_err(|reason| IdentityError::InvalidNodeName {
            name: name.to_owned(),
            reason,
        })?;
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `spiffe://<td>/node/<name>`: the identity the inbound side authorizes on.
    pub fn spiffe_id(&self, td: &TrustDomain) -> String {
        format!("spiffe://{td}/node/{}", self.0)
    }

    /// `<name>.node.<td>`: the name a client checks the server's certificate against.
    pub fn dns_name(&self, td: &TrustDomain) -> String {
        format!("{}.node.{td}", self.0)
    }
}

impl FromStr for NodeName {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A node's private key (ECDSA P-256), made on the node. Only CSRs leave it; the key itself
/// is exported only as PEM for the node's own disk.
pub struct NodeKey(KeyPair);

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeKey(<redacted>)")
    }
}

impl NodeKey {
    pub fn generate() -> Result<Self, IdentityError> {
        Ok(Self(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?))
    }

    /// A PEM CSR for `node`. Its subject and SAN are informative only: the issuer stamps the
    /// identity itself, so a node cannot ask for another's.
    pub fn csr(&self, node: &NodeName) -> Result<String, IdentityError> {
        let mut params = CertificateParams::new(vec![node.as_str().to_owned()])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node.as_str());
        params.distinguished_name = dn;
        Ok(params.serialize_request(&self.0)?.pem()?)
    }

    pub fn to_pem(&self) -> String {
        self.0.serialize_pem()
    }

    pub fn from_pem(pem: &str) -> Result<Self, IdentityError> {
        Ok(Self(KeyPair::from_pem(pem)?))
    }

    /// The public key as a SubjectPublicKeyInfo (DER): what a certificate or a CSR carries,
    /// so that "is this certificate for my key" is a byte comparison.
    pub fn public_key_info(&self) -> Vec<u8> {
        use rcgen::PublicKeyData;
        self.0.subject_public_key_info()
    }

    pub(crate) fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.0.serialize_der()))
    }
}

/// A signed node certificate: the leaf then the issuer, PEM, as a TLS peer must present
/// them (the roots are in every node's bundle, the issuer is not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCert {
    pub chain_pem: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl NodeCert {
    /// Reads a chain back (e.g. from `ca/certs/<node>`), taking the validity from the leaf.
    pub fn from_pem(chain_pem: &str) -> Result<Self, IdentityError> {
        let chain = certs_from_pem(chain_pem)?;
        let leaf = chain
            .first()
            .ok_or_else(|| IdentityError::Pem("no certificate in the chain".into()))?;
        let (_, x509) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        let validity = x509.validity();
        Ok(Self {
            chain_pem: chain_pem.to_owned(),
            not_before: validity.not_before.to_datetime(),
            not_after: validity.not_after.to_datetime(),
        })
    }

    pub fn chain_der(&self) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
        certs_from_pem(&self.chain_pem)
    }

    /// The leaf's public key as a SubjectPublicKeyInfo (DER), to compare with a CSR's or a
    /// [`NodeKey`]'s.
    pub fn public_key_info(&self) -> Result<Vec<u8>, IdentityError> {
        let chain = self.chain_der()?;
        let leaf = chain
            .first()
            .ok_or_else(|| IdentityError::Pem("no certificate in the chain".into()))?;
        let (_, x509) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        Ok(x509.public_key().raw.to_vec())
    }

    /// When to renew, given a jitter drawn with [`random_jitter`]. Counted from when the
    /// certificate was issued, not from `not_before`: the five minutes it is back-dated by
    /// allow for clock skew and are no part of its life (with a lifetime of seconds, as in
    /// tests, counting them would renew at once, again and again).
    pub fn renew_at(&self, jitter: f64) -> OffsetDateTime {
        let issued = (self.not_before + BACKDATE).min(self.not_after);
        renew_at(issued, self.not_after, jitter)
    }
}

/// The moment to renew a certificate valid from `not_before` to `not_after`: at `jitter`
/// (clamped to 50–70%) of its lifetime. A random point, not a fixed one, so that nodes
/// started together do not all knock on the signer at the same second; 70% at the latest
/// leaves a third of the lifetime for retries.
pub fn renew_at(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    jitter: f64,
) -> OffsetDateTime {
    let jitter = if jitter.is_nan() {
        0.5
    } else {
        jitter.clamp(0.5, 0.7)
    };
    not_before + (not_after - not_before) * jitter
}

/// A uniform jitter in [0.5, 0.7] for [`renew_at`].
pub fn random_jitter() -> Result<f64, IdentityError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 4];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| IdentityError::Random)?;
    Ok(0.5 + 0.2 * f64::from(u32::from_be_bytes(bytes)) / f64::from(u32::MAX))
}

/// The public key (SubjectPublicKeyInfo, DER) a PEM CSR asks a certificate for, once its
/// signature is checked: a renewal is granted only when this is the key of the node's
/// current certificate, so the node proves it holds the key it was issued for.
pub fn csr_public_key_info(csr_pem: &str) -> Result<Vec<u8>, IdentityError> {
    use rcgen::PublicKeyData;
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
    Ok(csr.public_key.subject_public_key_info())
}

impl Issuer {
    /// Signs a node's CSR. The CSR's signature is checked (proof that the node holds the
    /// key), then everything else in it is ignored: the certificate carries exactly the URI
    /// SAN `spiffe://<td>/node/<node>` and the DNS SAN `<node>.node.<td>`, for `node` as the
    /// caller authenticated it (by its join token), never as the CSR claims.
    pub fn sign_node(
        &self,
        csr_pem: &str,
        node: &NodeName,
        td: &TrustDomain,
        now: OffsetDateTime,
        lifetime: Duration,
    ) -> Result<NodeCert, IdentityError> {
        if td != self.trust_domain() {
            return Err(IdentityError::TrustDomainMismatch {
                issuer: self.trust_domain().to_string(),
                requested: td.to_string(),
            });
        }
        if !lifetime.is_positive() {
            return Err(IdentityError::InvalidLifetime);
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)?;

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Ferry");
        dn.push(DnType::CommonName, node.as_str());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![
            SanType::URI(node.spiffe_id(td).try_into()?),
            SanType::DnsName(node.dns_name(td).try_into()?),
        ];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = now - BACKDATE;
        params.not_after = now + lifetime;
        params.serial_number = Some(crate::random_serial()?);
        params.use_authority_key_identifier_extension = true;

        let leaf = params.signed_by(&csr.public_key, &self.rcgen_issuer()?)?;
        Ok(NodeCert {
            chain_pem: format!("{}{}", leaf.pem(), self.cert_pem()),
            not_before: params.not_before,
            not_after: params.not_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::Root;

    #[test]
    fn node_name_validation() {
        for ok in ["node-a", "a", "n1", &"x".repeat(63)] {
            assert!(NodeName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Node-a",
            "node.a",
            "-a",
            "a-",
            "a_b",
            "a/b",
            &"x".repeat(64),
        ] {
            assert!(NodeName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn signer_ignores_requested_sans() {
        let td = TrustDomain::new("ferry.local").unwrap();
        let issuer = Root::generate(&td).unwrap().issuer().unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        // A CSR asking for another node's identity, a wildcard and an IP.
        let mut params = CertificateParams::new(vec![
            "node-admin.node.ferry.local".to_owned(),
            "*.ferry.local".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .unwrap();
        params.subject_alt_names.push(SanType::URI(
            "spiffe://ferry.local/node/node-admin".try_into().unwrap(),
        ));
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();

        let node = NodeName::new("node-a").unwrap();
        let now = OffsetDateTime::now_utc();
        let cert = issuer
            .sign_node(&csr, &node, &td, now, DEFAULT_LIFETIME)
            .unwrap();
        let chain = cert.chain_der().unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(&chain[1], issuer.cert_der());
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        let sans: Vec<String> = leaf
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            sans,
            [
                "URI(spiffe://ferry.local/node/node-a)",
                "DNSName(node-a.node.ferry.local)"
            ]
        );
        assert!(!leaf.is_ca());
        assert_eq!(
            cert.not_after - cert.not_before,
            DEFAULT_LIFETIME + BACKDATE
        );
        assert_eq!(NodeCert::from_pem(&cert.chain_pem).unwrap(), {
            // The PEM keeps whole seconds only.
            let mut c = cert.clone();
            c.not_before = c.not_before.replace_nanosecond(0).unwrap();
            c.not_after = c.not_after.replace_nanosecond(0).unwrap();
            c
        });
    }

    #[test]
    fn sign_node_refuses_other_trust_domain_and_bad_csr() {
        let td = TrustDomain::new("ferry.local").unwrap();
        let issuer = Root::generate(&td).unwrap().issuer().unwrap();
        let node = NodeName::new("node-a").unwrap();
        let csr = NodeKey::generate().unwrap().csr(&node).unwrap();
        let now = OffsetDateTime::now_utc();
        let other = TrustDomain::new("other.local").unwrap();
        assert!(matches!(
            issuer.sign_node(&csr, &node, &other, now, DEFAULT_LIFETIME),
            Err(IdentityError::TrustDomainMismatch { .. })
        ));
        assert!(issuer
            .sign_node("not a csr", &node, &td, now, DEFAULT_LIFETIME)
            .is_err());
        assert!(matches!(
            issuer.sign_node(&csr, &node, &td, now, Duration::ZERO),
            Err(IdentityError::InvalidLifetime)
        ));
    }

    #[test]
    fn renew_at_falls_between_half_and_seventy_percent() {
        let start = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let end = start + DEFAULT_LIFETIME;
        let at = |j| renew_at(start, end, j);
        assert_eq!(at(0.5), start + Duration::hours(12));
        assert_eq!(at(0.7), start + Duration::minutes(24 * 60 * 7 / 10));
        // Out-of-range jitters are clamped, never renew early or late.
        assert_eq!(at(0.0), at(0.5));
        assert_eq!(at(1.0), at(0.7));
        assert_eq!(at(f64::NAN), at(0.5));
        for _ in 0..1000 {
            let j = random_jitter().unwrap();
            assert!((0.5..=0.7).contains(&j), "{j}");
            let t = at(j);
            assert!(t >= start + Duration::hours(12) && t <= start + Duration::minutes(1008));
        }
    }

    #[test]
    fn a_short_lived_certificate_renews_after_its_issue_not_before() {
        // Back-dated by five minutes, a 10 s certificate would otherwise be "due" at once.
        let issued = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let cert = NodeCert {
            chain_pem: String::new(),
            not_before: issued - BACKDATE,
            not_after: issued + Duration::seconds(10),
        };
        assert_eq!(cert.renew_at(0.5), issued + Duration::seconds(5));
        assert_eq!(cert.renew_at(0.7), issued + Duration::seconds(7));
    }

    #[test]
    fn node_key_pem_round_trip() {
        let key = NodeKey::generate().unwrap();
        let back = NodeKey::from_pem(&key.to_pem()).unwrap();
        assert_eq!(back.to_pem(), key.to_pem());
        assert!(format!("{key:?}").contains("redacted"));
    }
}
