//! The certificate authority of a trust domain: a ten-year root, kept offline, that signs
//! one-year issuers; the issuers sign node certificates (see [`Issuer::sign_node`]). Two
//! levels so that the root's key is needed once a year, not on every node join.
//!
//! Both CA certificates carry the trust domain as the URI SAN `spiffe://<td>`, so that a
//! CA read back from PEM knows its trust domain without a side channel.

use std::fmt;
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PublicKeyData, SanType,
};
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::error::IdentityError;

const ROOT_LIFETIME: Duration = Duration::days(3650);
const ISSUER_LIFETIME: Duration = Duration::days(365);
/// Back-dating absorbs clock skew between the signer and the nodes.
pub(crate) const BACKDATE: Duration = Duration::minutes(5);

/// A trust domain, e.g. `ferry.local`: a lowercase DNS name. It is the authority part of
/// every SPIFFE ID in the domain and the suffix of every node's DNS SAN.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TrustDomain(String);

impl TrustDomain {
    pub fn new(name: &str) -> Result<Self, IdentityError> {
        let invalid = |reason| IdentityError::InvalidTrustDomain {
            name: name.to_owned(),
            reason,
        };
        if name.len() > 253 {
            return Err(invalid("longer than 253 characters"));
        }
        for label in name.split('.') {
            crate::check_label(label).map_err(invalid)?;
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain's own SPIFFE ID, stamped on its CA certificates.
    pub(crate) fn spiffe_id(&self) -> String {
        format!("spiffe://{}", self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A certificate and its private key, both PEM, as written to files or read from them.
/// The key is secret: it is the caller's job to keep it off etcd and out of logs.
#[derive(Clone, PartialEq, Eq)]
pub struct PemPair {
    pub cert: String,
    pub key: String,
}

impl fmt::Debug for PemPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemPair")
            .field("cert", &self.cert)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A CA certificate with its key; the shared part of [`Root`] and [`Issuer`].
struct Ca {
    trust_domain: TrustDomain,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    key: KeyPair,
}

impl Ca {
    fn params(
        td: &TrustDomain,
        common_name: String,
        path_len: IsCa,
        now: OffsetDateTime,
        lifetime: Duration,
    ) -> Result<CertificateParams, IdentityError> {
        let mut params = CertificateParams::default();
        let serial = crate::random_serial()?;
        // A distinct subject per CA: webpki picks issuers by subject, so two roots (or a
        // rogue one) with the same name would fail as "bad signature", not "unknown issuer".
        let tag: String = serial
            .to_bytes()
            .iter()
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Ferry");
        dn.push(DnType::CommonName, format!("{common_name} {tag}"));
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(td.spiffe_id().try_into()?)];
        params.is_ca = path_len;
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - BACKDATE;
        params.not_after = now + lifetime;
        params.serial_number = Some(serial);
        params.use_authority_key_identifier_extension = true;
        Ok(params)
    }

    fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, IdentityError> {
        // Exactly one certificate: the PEM is kept as given and appended to node chains.
        let cert_der = match certs_from_pem(cert_pem)?.as_slice() {
            [cert] => cert.clone(),
            certs => {
                return Err(IdentityError::Pem(format!(
                    "expected one CA certificate, found {}",
                    certs.len()
                )))
            }
        };
        let key = KeyPair::from_pem(key_pem)?;
        let (_, x509) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        if x509.public_key().raw != key.subject_public_key_info() {
            return Err(IdentityError::Certificate(
                "the key does not match the certificate".into(),
            ));
        }
        if !matches!(x509.basic_constraints(), Ok(Some(bc)) if bc.value.ca) {
            return Err(IdentityError::Certificate("not a CA certificate".into()));
        }
        let trust_domain = trust_domain_of(&cert_der)?;
        Ok(Self {
            trust_domain,
            cert_pem: cert_pem.to_owned(),
            cert_der,
            key,
        })
    }

    fn to_pem(&self) -> PemPair {
        PemPair {
            cert: self.cert_pem.clone(),
            key: self.key.serialize_pem(),
        }
    }

    fn rcgen_issuer(&self) -> Result<rcgen::Issuer<'static, &KeyPair>, IdentityError> {
        Ok(rcgen::Issuer::from_ca_cert_der(&self.cert_der, &self.key)?)
    }
}

/// Parses every certificate of a PEM text, in order (a chain, or a trust bundle).
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| IdentityError::Pem(e.to_string()))
}

/// What [`Root`] and [`Issuer`] share: PEM in and out, the trust domain, the certificate,
/// and a `Debug` that never prints the key.
macro_rules! ca_common {
    ($ty:ident) => {
        impl $ty {
            pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, IdentityError> {
                Ca::from_pem(cert_pem, key_pem).map(Self)
            }

            pub fn to_pem(&self) -> PemPair {
                self.0.to_pem()
            }

            pub fn trust_domain(&self) -> &TrustDomain {
                &self.0.trust_domain
            }

            pub fn cert_der(&self) -> &CertificateDer<'static> {
                &self.0.cert_der
            }

            pub fn cert_pem(&self) -> &str {
                &self.0.cert_pem
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("trust_domain", &self.0.trust_domain)
                    .field("sha256", &fingerprint_sha256(&self.0.cert_der))
                    .finish_non_exhaustive()
            }
        }
    };
}

ca_common!(Root);
ca_common!(Issuer);

/// The trust domain's root CA. Its key should live offline; it is needed only to make an
/// [`Issuer`] once a year and to cross-sign the next root.
pub struct Root(Ca);

impl Root {
    /// A new self-signed root, valid for ten years, with a fresh ECDSA P-256 key.
    pub fn generate(td: &TrustDomain) -> Result<Self, IdentityError> {
        let now = OffsetDateTime::now_utc();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let params = Ca::params(
            td,
            format!("Ferry root CA {td}"),
            IsCa::Ca(BasicConstraints::Unconstrained),
            now,
            ROOT_LIFETIME,
        )?;
        let cert = params.self_signed(&key)?;
        Ok(Self(Ca {
            trust_domain: td.clone(),
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key,
        }))
    }

    /// A new intermediate CA, valid one year, signed by this root. Path length 0: an issuer
    /// signs node certificates only, never another CA.
    pub fn issuer(&self) -> Result<Issuer, IdentityError> {
        let now = OffsetDateTime::now_utc();
        let td = &self.0.trust_domain;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let params = Ca::params(
            td,
            format!("Ferry issuer CA {td}"),
            IsCa::Ca(BasicConstraints::Constrained(0)),
            now,
            ISSUER_LIFETIME,
        )?;
        let cert = params.signed_by(&key, &self.0.rcgen_issuer()?)?;
        Ok(Issuer(Ca {
            trust_domain: td.clone(),
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key,
        }))
    }

    /// SHA-256 of the root certificate's DER, lowercase hex: what a joining node pins with
    /// `--ca-root-sha256` before it trusts a bundle it read from etcd.
    pub fn fingerprint_sha256(&self) -> String {
        fingerprint_sha256(&self.0.cert_der)
    }
}

/// The trust domain a Ferry CA certificate (a root from the bundle) belongs to, from its one
/// URI SAN `spiffe://<td>`: a joining node learns its trust domain from the pinned root.
pub fn trust_domain_of(cert: &CertificateDer<'_>) -> Result<TrustDomain, IdentityError> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| IdentityError::Certificate(e.to_string()))?;
    let uris = crate::tls::uri_sans(&x509)?;
    match uris.as_slice() {
        [uri] => match uri.strip_prefix("spiffe://") {
            Some(td) => TrustDomain::new(td),
            None => Err(IdentityError::Certificate(format!(
                "the CA's URI SAN {uri:?} is not a SPIFFE trust domain"
            ))),
        },
        _ => Err(IdentityError::Certificate(
            "a Ferry CA carries exactly one URI SAN, its trust domain".into(),
        )),
    }
}

/// SHA-256 of a certificate's DER, lowercase hex.
pub fn fingerprint_sha256(cert: &CertificateDer<'_>) -> String {
    use fmt::Write;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    digest
        .as_ref()
        .iter()
        .fold(String::with_capacity(64), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// An intermediate CA that signs node certificates; held by the signer nodes.
pub struct Issuer(Ca);

impl Issuer {
    pub(crate) fn rcgen_issuer(&self) -> Result<rcgen::Issuer<'static, &KeyPair>, IdentityError> {
        self.0.rcgen_issuer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_domain_validation() {
        for ok in ["ferry.local", "a", "ferry-prod.example.com", "x1.y2"] {
            assert!(TrustDomain::new(ok).is_ok(), "{ok}");
        }
        let long = format!("{}.{}", "a".repeat(63), "b".repeat(64));
        for bad in [
            "",
            "Ferry.local",
            "ferry..local",
            ".ferry",
            "ferry.",
            "-ferry.local",
            "ferry_local",
            "ferry.local/x",
            "spiffe://ferry",
            long.as_str(),
        ] {
            assert!(TrustDomain::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn root_and_issuer_pem_round_trip() {
        let td = TrustDomain::new("ferry.local").unwrap();
        let root = Root::generate(&td).unwrap();
        let pem = root.to_pem();
        let back = Root::from_pem(&pem.cert, &pem.key).unwrap();
        assert_eq!(back.trust_domain(), &td);
        assert_eq!(back.fingerprint_sha256(), root.fingerprint_sha256());
        assert_eq!(back.to_pem(), pem);
        assert_eq!(root.fingerprint_sha256().len(), 64);

        let issuer = back.issuer().unwrap();
        let ipem = issuer.to_pem();
        let iback = Issuer::from_pem(&ipem.cert, &ipem.key).unwrap();
        assert_eq!(iback.trust_domain(), &td);
        assert_eq!(iback.cert_der(), issuer.cert_der());

        // Two certificates where one is expected, and a key that is not the certificate's,
        // are refused.
        let two = format!("{}{}", pem.cert, issuer.cert_pem());
        assert!(Root::from_pem(&two, &pem.key).is_err());
        let other = Root::generate(&td).unwrap().to_pem();
        assert!(Root::from_pem(&pem.cert, &other.key).is_err());
    }
}
