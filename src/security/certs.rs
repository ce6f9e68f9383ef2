//! Certificates for mutual TLS: a cluster CA and node certificates signed by it.
//!
//! A node certificate names the node id as its common name (the identity a
//! peer's gossip must match) and carries the cluster's server name as a DNS
//! SAN, which every peer verifies instead of the dialed address: addresses
//! change (pods, DHCP), the cluster name does not.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A PEM certificate and its PEM private key.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot create the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{what} is not a usable PEM file: {why}")]
    Input { what: String, why: String },
}

/// When a certificate is valid: from `not_before` for `lifetime`.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: SystemTime,
    pub lifetime: Duration,
}

impl Validity {
    /// From an hour ago (clock skew between nodes) for `days`.
    pub fn days(days: u64) -> Validity {
        Validity {
            not_before: SystemTime::now() - Duration::from_secs(3600),
            lifetime: Duration::from_secs(days * 86_400 + 3600),
        }
    }

    fn apply(&self, params: &mut CertificateParams) {
        params.not_before = self.not_before.into();
        params.not_after = (self.not_before + self.lifetime).into();
    }
}

/// A new self-signed cluster CA.
pub fn new_ca(cluster: &str, validity: Validity) -> Result<Pem, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(&format!("{cluster} iarnet cluster CA"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity.apply(&mut params);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A node certificate for `node_id`, signed by the CA, valid as both TLS
/// server and client. `extra_sans` adds DNS names or IPs operators dial.
pub fn node_cert(
    ca: &Pem,
    node_id: &str,
    server_name: &str,
    extra_sans: &[String],
    validity: Validity,
) -> Result<Pem, CertError> {
    let ca_key = KeyPair::from_pem(&ca.key).map_err(|e| CertError::Input {
        what: "the CA key".into(),
        why: e.to_string(),
    })?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, &ca_key).map_err(|e| CertError::Input {
        what: "the CA certificate".into(),
        why: e.to_string(),
    })?;
    let mut params = CertificateParams::new(vec![server_name.to_string()])?;
    for san in extra_sans {
        params.subject_alt_names.push(match san.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(san.clone().try_into()?),
        });
    }
    params.distinguished_name = name(node_id);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    validity.apply(&mut params);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn name(common: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common);
    dn.push(DnType::OrganizationName, "iarnet");
    dn
}

/// The common name of a DER certificate: a peer's node id.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_cert_names_the_node_and_chains_to_the_ca() {
        let ca = new_ca("test", Validity::days(1)).unwrap();
        let node = node_cert(
            &ca,
            "node-7",
            "iarnet",
            &["10.0.0.5".into()],
            Validity::days(1),
        )
        .unwrap();
        let der = pem_der(&node.cert);
        assert_eq!(common_name(&der).as_deref(), Some("node-7"));
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let ca_der = pem_der(&ca.cert);
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert_eq!(cert.issuer(), ca_cert.subject());
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
    }

    #[test]
    fn a_garbage_ca_is_named() {
        let ca = Pem {
            cert: "nope".into(),
            key: "nope".into(),
        };
        let err = node_cert(&ca, "n", "iarnet", &[], Validity::days(1)).unwrap_err();
        assert!(err.to_string().contains("the CA key"), "{err}");
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        p.contents
    }
}
